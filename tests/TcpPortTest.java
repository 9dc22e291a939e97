package arp.tests;

import arp.tests.support.Args;
import arp.tests.support.Bytes;
import arp.tests.support.FakeClient;
import arp.tests.support.FakeRelay;
import arp.tests.support.Origin;
import arp.tests.support.Proc;
import arp.tests.support.RawHttp;
import arp.tests.support.TcpServers;
import arp.tests.support.TestEnv;
import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketException;
import java.net.SocketTimeoutException;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Dedicated raw TCP ports: arps {@code --tcp-ports LOW-HIGH} gives a client that asks with arpc
 * {@code --remote-port N} (0 = any free one) a public port of its own, on which every byte goes to that
 * client untouched, with no token and no HTTP. Refusals make arpc exit 3 with the relay's reason; a
 * port stays with its client id for 60 s after the client leaves, so a reconnect gets it back.
 */
class TcpPortTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final Duration WAIT = Duration.ofSeconds(10);
    private static final String BANNER = "220 arp-test ESMTP ready\r\n";

    // ---- helpers ----

    /** A run of ports that were free on 127.0.0.1 a moment ago, for {@code arps --tcp-ports}. */
    record Range(int low, int high) {
        String spec() { return low + "-" + high; }

        boolean contains(int port) { return port >= low && port <= high; }
    }

    /**
     * {@code n} consecutive free ports, outside the kernel's ephemeral range (so that no outgoing
     * connection made meanwhile by any process, the tests' own included, can take one) and away from the
     * 20000-32000 window the benchmarks pick their ranges from. Each candidate run is bind-tested on
     * 127.0.0.1; a run with a busy port is skipped and another random base is tried.
     */
    static Range freeRange(int n) {
        int[] eph = ephemeralRange();
        int lo, hi; // the window bases are drawn from
        if (65535 - eph[1] >= 1000) {
            lo = eph[1] + 1;
            hi = 65535 - n;
        } else {
            lo = 10000;
            hi = Math.min(eph[0], 20000) - n;
        }
        for (int attempt = 0; attempt < 200; attempt++) {
            int base = ThreadLocalRandom.current().nextInt(lo, hi + 1);
            boolean free = true;
            for (int p = base; p < base + n && free; p++) free = bindable(p);
            if (free) return new Range(base, base + n - 1);
        }
        throw new AssertionError("no " + n + " consecutive free ports found in " + lo + "-" + (hi + n));
    }

    private static int[] ephemeralRange() {
        try {
            String[] f = Files.readString(Path.of("/proc/sys/net/ipv4/ip_local_port_range")).trim().split("\\s+");
            return new int[] {Integer.parseInt(f[0]), Integer.parseInt(f[1])};
        } catch (IOException | RuntimeException e) {
            return new int[] {32768, 60999}; // Linux's default
        }
    }

    private static boolean bindable(int port) {
        try (ServerSocket s = new ServerSocket()) {
            s.setReuseAddress(true); // as arps binds its dedicated ports
            s.bind(new InetSocketAddress(InetAddress.getByName("127.0.0.1"), port), 1);
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    /** arps with {@code --tcp-ports range}. */
    private TestEnv.Relay relayWithPorts(Range range, String... overrides) {
        return env.arps(env.arpsArgs().set("--tcp-ports", range.spec()).merge(overrides));
    }

    private Args arpcArgs(TestEnv.Relay relay, int localPort, int remotePort) {
        return env.arpcArgs(relay, localPort).set("--remote-port", remotePort);
    }

    /** The dedicated port of a registered line, checked against the documented fields. */
    private static int remotePort(TestEnv.Client client) {
        JsonNode r = client.registered();
        assertTrue(r.path("remote_port").isInt(), () -> "registered line without a numeric remote_port: " + r);
        int port = r.path("remote_port").asInt();
        assertEquals("tcp://127.0.0.1:" + port, r.path("tcp_url").asText(null), () -> "registered.tcp_url in " + r);
        assertEquals("arp", r.path("server").asText(), () -> "registered.server in " + r);
        return port;
    }

    /** A raw TCP connection to 127.0.0.1:{@code port}, closed after the test. */
    private Socket raw(int port) throws IOException {
        Socket s = env.own(new Socket());
        s.connect(new InetSocketAddress("127.0.0.1", port), 5_000);
        s.setSoTimeout((int) WAIT.toMillis());
        s.setTcpNoDelay(true);
        return s;
    }

    private static byte[] readExactly(Socket s, int n, String what) throws IOException {
        byte[] b = s.getInputStream().readNBytes(n);
        if (b.length < n) throw new EOFException(what + ": connection closed after " + b.length + " of " + n + " bytes");
        return b;
    }

    /** The next read sees a clean end of stream (FIN, not a reset), with no byte before it. */
    private static void assertCleanEof(Socket s, String what) throws IOException {
        int c;
        try {
            c = s.getInputStream().read();
        } catch (SocketTimeoutException e) {
            throw new AssertionError(what + ": no end of stream within " + s.getSoTimeout() + " ms");
        } catch (SocketException e) {
            throw new AssertionError(what + ": connection reset instead of a clean end of stream: " + e.getMessage());
        }
        assertEquals(-1, c, what + ": expected end of stream, got a byte");
    }

    /** arpc exits 3 without registering; returns its stderr. */
    private static String assertRefused(Proc arpc) {
        int code = arpc.awaitExit(TestEnv.START);
        String err = arpc.stderrText();
        assertEquals(3, code, () -> "arpc's exit code; stderr:\n" + err);
        assertEquals(0, arpc.countEvents("registered"), () -> "arpc printed a registered line: " + arpc.stdoutText());
        return err;
    }

    private static List<String> features(JsonNode hello) {
        List<String> f = new ArrayList<>();
        hello.path("features").forEach(n -> f.add(n.asText()));
        return f;
    }

    // ---- tests ----

    @Test
    void anyFreePortCarriesTheBannerThenEchoesAMebibyteAndPassesHalfClose() throws Exception {
        Range range = freeRange(5);
        TcpServers.Echo banner = env.own(TcpServers.banner(BANNER));
        TestEnv.Relay relay = relayWithPorts(range);
        TestEnv.Client client = env.arpc(arpcArgs(relay, banner.port(), 0));
        int port = remotePort(client);
        assertTrue(range.contains(port), "remote_port " + port + " is outside --tcp-ports " + range.spec());
        assertEquals("http://127.0.0.1:" + relay.publicPort() + "/?token=" + client.clientId(), client.publicUrl());

        Socket s = raw(port);
        // The server speaks first: the banner arrives although the visitor has sent nothing.
        assertEquals(BANNER, Bytes.ascii(readExactly(s, BANNER.length(), "banner")));

        byte[] data = new byte[1 << 20];
        ThreadLocalRandom.current().nextBytes(data);
        int tail = 128 * 1024; // echo still unread when the visitor half-closes
        OutputStream out = s.getOutputStream();
        ExecutorService writer = Executors.newVirtualThreadPerTaskExecutor();
        try {
            Future<?> written = writer.submit(() -> {
                for (int off = 0; off < data.length; off += 16 * 1024) out.write(data, off, 16 * 1024);
                out.flush();
                s.shutdownOutput();
                return null;
            });
            InputStream in = s.getInputStream();
            byte[] head = readExactly(s, data.length - tail, "echo before the half-close");
            // Everything written and the write side shut: the rest of the echo must still come back.
            written.get(30, TimeUnit.SECONDS);
            assertTrue(s.isOutputShutdown());
            byte[] rest = readExactly(s, tail, "echo after the visitor's half-close");
            assertCleanEof(s, "after the whole echo (the local service closed once it saw the half-close)");
            byte[] got = new byte[data.length];
            System.arraycopy(head, 0, got, 0, head.length);
            System.arraycopy(rest, 0, got, head.length, rest.length);
            assertEquals(Bytes.sha256(data), Bytes.sha256(got), "the echo differs from what was sent");
            assertEquals(-1, in.read(), "a byte after the end of stream");
        } finally {
            s.close(); // first: a writer blocked on a dead tunnel ends with the socket
            writer.close();
        }
        assertEquals(1, banner.accepted(), "the local service should have seen exactly one connection");
        relay.proc().awaitStderr("arps logging the port it gave", l -> l.contains("has TCP port " + port), WAIT);
        client.proc().awaitStderr("arpc's registered log line with both addresses",
                l -> l.contains("visitors: " + client.publicUrl() + " and tcp://127.0.0.1:" + port + " "), WAIT);
    }

    @Test
    void aSpecificPortIsGivenExactlyAndItsBytesArriveUntouched() throws Exception {
        Range range = freeRange(5);
        int wanted = range.low() + 2;
        TcpServers.Capture capture = env.own(TcpServers.capture("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"));
        TestEnv.Relay relay = relayWithPorts(range);
        TestEnv.Client client = env.arpc(arpcArgs(relay, capture.port(), wanted));
        assertEquals(wanted, remotePort(client), "arpc asked for --remote-port " + wanted);

        // What the public port would rewrite (token in the query, X-Arp-Token), plus bytes that are no
        // HTTP at all: on the dedicated port everything must reach the service exactly as sent.
        String head = "GET /x?token=" + client.clientId() + "&a=1 HTTP/1.1\r\nHost: h\r\nX-Arp-Token: " + client.clientId()
                + "\r\nContent-Length: 0\r\n\r\n";
        byte[] binary = new byte[256];
        for (int i = 0; i < binary.length; i++) binary[i] = (byte) i;
        String sent = head + Bytes.ascii(binary);
        Socket s = raw(wanted);
        s.getOutputStream().write(Bytes.ascii(sent));
        s.getOutputStream().flush();
        s.shutdownOutput();
        assertEquals(sent, capture.next(WAIT), "bytes the local service received from the dedicated port");
    }

    @Test
    void aPortOutsideTheRangeIsRefused() throws Exception {
        Range range = freeRange(5);
        TcpServers.Echo echo = env.own(TcpServers.echo());
        TestEnv.Relay relay = relayWithPorts(range);
        Proc arpc = env.startArpc(arpcArgs(relay, echo.port(), range.high() + 1));
        String err = assertRefused(arpc);
        assertTrue(err.contains(range.spec()), "arpc's stderr should name the relay's range " + range.spec() + ":\n" + err);
        assertTrue(err.contains(String.valueOf(range.high() + 1)), "arpc's stderr should name the port asked for:\n" + err);
        relay.proc().awaitStderr("arps logging the refusal", l -> l.contains("asked for TCP port " + (range.high() + 1)), WAIT);
        assertFalse(relay.proc().stderrText().contains("has TCP port"), relay.proc()::stderrText);
    }

    @Test
    void aRelayWithoutTcpPortsRefusesAndSaysHowToAllowThem() throws Exception {
        TcpServers.Echo echo = env.own(TcpServers.echo());
        TestEnv.Relay relay = env.arps();
        Proc arpc = env.startArpc(arpcArgs(relay, echo.port(), 0));
        String err = assertRefused(arpc);
        assertTrue(err.contains("--tcp-ports"), "arpc's stderr should mention --tcp-ports:\n" + err);
        relay.proc().awaitStderr("arps logging the refused port", l -> l.contains("asked for TCP port 0"), WAIT);
    }

    @Test
    void aPortHeldByAnotherClientIsRefusedAndItsHolderKeepsIt() throws Exception {
        Range range = freeRange(5);
        TcpServers.Echo banner = env.own(TcpServers.banner(BANNER));
        TestEnv.Relay relay = relayWithPorts(range);
        int held = range.low() + 1;
        TestEnv.Client a = env.arpc(arpcArgs(relay, banner.port(), held));
        assertEquals(held, remotePort(a));

        Proc b = env.startArpc(arpcArgs(relay, banner.port(), held));
        String err = assertRefused(b);
        assertTrue(err.contains("held by another client"), "client B's stderr:\n" + err);
        assertTrue(err.contains(String.valueOf(held)), "client B's stderr should name the port:\n" + err);

        // A still serves its port.
        Socket s = raw(held);
        assertEquals(BANNER, Bytes.ascii(readExactly(s, BANNER.length(), "banner of A's service")));
        s.getOutputStream().write(Bytes.ascii("still A\n"));
        assertEquals("still A\n", Bytes.ascii(readExactly(s, 8, "echo through A")));
        assertTrue(a.proc().isAlive(), "client A");
        assertEquals(1, a.proc().countEvents("registered"), a.proc()::stdoutText);
    }

    @Test
    void aReconnectingClientGetsItsPortBackAndVisitorsInTheGapAreClosedAtOnce() throws Exception {
        Range range = freeRange(5);
        TcpServers.Echo banner = env.own(TcpServers.banner(BANNER));
        TestEnv.Relay relay = relayWithPorts(range);
        // A port that "any free port" would not pick by itself (LOW is free): only the grace period
        // can give it back to a reconnect asking for 0.
        int port = range.low() + 3;
        Args args = arpcArgs(relay, banner.port(), port);
        String id = args.get("--client-id");
        TestEnv.Client first = env.arpc(args);
        assertEquals(port, remotePort(first));
        try (Socket s = raw(port)) {
            assertEquals(BANNER, Bytes.ascii(readExactly(s, BANNER.length(), "banner before the client left")));
        }

        ProcessHandle.of(first.proc().pid()).ifPresent(ProcessHandle::destroyForcibly); // SIGKILL: no goodbye
        first.proc().awaitExit(WAIT);
        String masked = id.substring(0, 4) + "****";
        relay.proc().awaitStderr("arps noticing that client " + masked + " left",
                l -> l.contains("client " + masked + " unregistered"), WAIT);
        long left = System.nanoTime();
        // arps expires ports on its 2 s maintenance tick: let at least one pass, so that a port released
        // without its grace period would be gone by now.
        Thread.sleep(2500);

        // The port is kept for the client: still listening, but a visitor has nobody to reach.
        int acceptedBefore = banner.accepted();
        Socket gap;
        try {
            gap = raw(port);
        } catch (IOException e) {
            throw new AssertionError("port " + port + " no longer accepts connections "
                    + (System.nanoTime() - left) / 1_000_000 + " ms after its client left (grace period: 60 s)", e);
        }
        long t0 = System.nanoTime();
        assertCleanEof(gap, "a visitor while the port's client is away");
        long ms = (System.nanoTime() - t0) / 1_000_000;
        assertTrue(ms < 2000, "the visitor in the gap was closed only after " + ms + " ms, not at once");
        assertEquals(acceptedBefore, banner.accepted(), "the local service saw a connection while its client was away");

        // Nor can another client take it during the grace period.
        Proc other = env.startArpc(arpcArgs(relay, banner.port(), port));
        String err = assertRefused(other);
        assertTrue(err.contains("held by another client"), "another client asking for the port in the grace period:\n" + err);

        TestEnv.Client second = env.arpc(arpcArgs(relay, banner.port(), 0).set("--client-id", id));
        assertEquals(port, remotePort(second), "the reconnected client asked for any port and should get its own back");
        long gapMs = (System.nanoTime() - left) / 1_000_000;
        assertTrue(gapMs < 60_000, "the reconnect came " + gapMs + " ms after the client left, beyond the 60 s grace period");
        try (Socket s = raw(port)) {
            assertEquals(BANNER, Bytes.ascii(readExactly(s, BANNER.length(), "banner after the reconnect")));
            s.getOutputStream().write(Bytes.ascii("back\n"));
            assertEquals("back\n", Bytes.ascii(readExactly(s, 5, "echo after the reconnect")));
        }
    }

    @Test
    void aHundredConcurrentConnectionsEachEchoTheirOwnData() throws Exception {
        Range range = freeRange(5);
        TcpServers.Echo echo = env.own(TcpServers.echo());
        TestEnv.Relay relay = relayWithPorts(range, "--pending-timeout", "30");
        int port = remotePort(env.arpc(arpcArgs(relay, echo.port(), 0)));
        int n = 100, size = 64 * 1024;

        List<String> failures = new ArrayList<>();
        try (ExecutorService pool = Executors.newVirtualThreadPerTaskExecutor()) {
            List<Future<String>> results = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                int seed = 1000 + i;
                results.add(pool.submit(() -> oneEcho(port, seed, size)));
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            for (int i = 0; i < n; i++) {
                String r;
                try {
                    r = results.get(i).get(Math.max(1, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
                } catch (TimeoutException e) {
                    r = "no result within 60 s";
                    results.get(i).cancel(true);
                } catch (Exception e) {
                    r = String.valueOf(e.getCause() != null ? e.getCause() : e);
                }
                if (r != null) failures.add("connection " + i + ": " + r);
            }
        }
        assertEquals(List.of(), failures, failures.size() + " of " + n + " connections failed");
        assertEquals(n, echo.accepted(), "connections the local service accepted");
    }

    /** One visitor: sends its own {@code size} bytes, half-closes, expects them back and a clean end. Null = fine. */
    private static String oneEcho(int port, long seed, int size) throws IOException, InterruptedException {
        byte[] data = Bytes.bytes(seed, size);
        try (Socket s = new Socket()) {
            s.connect(new InetSocketAddress("127.0.0.1", port), 10_000);
            s.setSoTimeout(30_000);
            s.setTcpNoDelay(true);
            Thread writer = Thread.ofVirtual().start(() -> {
                try {
                    s.getOutputStream().write(data);
                    s.shutdownOutput();
                } catch (IOException e) {
                    // the read side reports what went wrong
                }
            });
            byte[] got;
            int eof;
            try {
                got = s.getInputStream().readNBytes(size);
                eof = got.length == size ? s.getInputStream().read() : -1;
            } finally {
                writer.join(10_000);
            }
            if (got.length < size) return "connection closed after " + got.length + " of " + size + " bytes";
            if (!Arrays.equals(data, got)) return "the echo differs from what was sent";
            if (eof != -1) return "a byte after the echo";
            return null;
        }
    }

    @Test
    void errorsOnTheDedicatedPortAreAClosedConnectionWithoutHttp() throws Exception {
        Range range = freeRange(5);
        TestEnv.Relay relay = relayWithPorts(range, "--pending-timeout", "1", "--pool-size", "0");

        // A real arpc whose local service is down: it answers ProxyFailed (a 502 on the public port).
        int closed = RawHttp.closedPort();
        TestEnv.Client down = env.arpc(arpcArgs(relay, closed, 0));
        Socket v1 = raw(remotePort(down));
        assertClosedWithoutBytes(v1, "a visitor whose client cannot reach its local service");
        down.proc().awaitStderr("arpc logging the unreachable service", l -> l.contains("cannot reach the local service"), WAIT);

        // A client that never opens the data connection it is asked for (a 504 on the public port).
        FakeClient fc = env.own(FakeClient.register(relay.controlPort(), TestEnv.randomId("mute"), true));
        fc.send("{\"TcpPort\":{\"port\":0}}");
        int port = nextTcpPortResult(fc).path("port").asInt();
        Socket v2 = raw(port);
        long t0 = System.nanoTime();
        assertClosedWithoutBytes(v2, "a visitor whose client provides no data connection");
        long ms = (System.nanoTime() - t0) / 1_000_000;
        assertTrue(ms >= 500, "closed after " + ms + " ms, before --pending-timeout 1 expired");

        // A client that answers ProxyFailed itself, on the wire.
        Socket v3 = raw(port);
        String id = fc.nextProxyRequest(WAIT);
        FakeClient.DataConn data = env.own(fc.dial(relay.proxyPort(), id, true));
        assertTrue(data.readFrame(WAIT).has("StartProxy"));
        data.writeFrame(FakeClient.Frames.proxyFailed("local service unreachable"));
        assertClosedWithoutBytes(v3, "a visitor whose client answered ProxyFailed");
    }

    /** The relay closes the visitor's connection (EOF or reset) without sending a single byte (no HTTP error). */
    private static void assertClosedWithoutBytes(Socket s, String what) throws IOException {
        s.setSoTimeout((int) WAIT.toMillis());
        byte[] got;
        try {
            got = s.getInputStream().readAllBytes();
        } catch (SocketTimeoutException e) {
            throw new AssertionError(what + ": connection still open after " + WAIT.toMillis() + " ms");
        } catch (SocketException e) {
            return; // reset: closed, and nothing was read before it
        }
        assertEquals("", Bytes.ascii(got), what + ": expected a closed connection and no bytes");
    }

    @Test
    void busyPortsAreSkippedOrRefusedAndASinglePortRangeWorks() throws Exception {
        Range range = freeRange(5);
        TcpServers.Echo echo = env.own(TcpServers.echo());
        // Another program has LOW: "any free port" must pass over it; asking for it by number is refused.
        ServerSocket busy = env.own(new ServerSocket());
        busy.setReuseAddress(true);
        busy.bind(new InetSocketAddress(InetAddress.getByName("127.0.0.1"), range.low()), 1);
        TestEnv.Relay relay = relayWithPorts(range);
        Proc refused = env.startArpc(arpcArgs(relay, echo.port(), range.low()));
        TestEnv.Client any = env.arpc(arpcArgs(relay, echo.port(), 0));
        assertEquals(range.low() + 1, remotePort(any), "the first free port of " + range.spec() + " (" + range.low() + " is busy)");
        String err = assertRefused(refused);
        assertTrue(err.contains(String.valueOf(range.low())), "the refusal should name the busy port:\n" + err);

        // --tcp-ports with a single port.
        int single = range.high();
        TestEnv.Relay one = env.arps(env.arpsArgs().set("--tcp-ports", String.valueOf(single)));
        TestEnv.Client only = env.arpc(arpcArgs(one, echo.port(), 0));
        assertEquals(single, remotePort(only), "the one port of --tcp-ports " + single);
        Socket s = raw(single);
        s.getOutputStream().write(Bytes.ascii("single\n"));
        assertEquals("single\n", Bytes.ascii(readExactly(s, 7, "echo through the single port")));
        // ...and a second client finds none left.
        String full = assertRefused(env.startArpc(arpcArgs(one, echo.port(), 0)));
        assertTrue(full.contains(String.valueOf(single)), "the refusal should name the range:\n" + full);
    }

    @Test
    void invalidTcpPortsAndRemotePortAreRejectedNamingTheOption() throws Exception {
        List<Proc> arpses = new ArrayList<>();
        for (String bad : List.of("20010-20000", "0-10", "1-65536", "20000-", "x")) {
            arpses.add(env.startArps(env.arpsArgs().set("--tcp-ports", bad)));
        }
        TestEnv.Relay nowhere = new TestEnv.Relay(null, RawHttp.closedPort(), RawHttp.closedPort(), 0);
        List<Proc> arpcs = new ArrayList<>();
        for (int bad : List.of(-1, 65536)) arpcs.add(env.startArpc(arpcArgs(nowhere, 1, bad)));
        for (Proc p : arpses) assertExit2Naming(p, "--tcp-ports");
        for (Proc p : arpcs) assertExit2Naming(p, "--remote-port");
    }

    private static void assertExit2Naming(Proc p, String option) {
        int code = p.awaitExit(TestEnv.START);
        String output = p.stdoutText() + "\n" + p.stderrText();
        assertEquals(2, code, () -> p.name + " exit code; output:\n" + output);
        assertTrue(output.contains(option), () -> p.name + ": the error should name " + option + ":\n" + output);
        assertFalse(output.contains("\tat "), () -> p.name + ": a one-line error, not a stack trace:\n" + output);
        assertEquals(0, p.countEvents("ready"), () -> p.name + " claims to be ready:\n" + output);
    }

    @Test
    void behindRelaysWithoutTheFeatureArpcExits3WithoutAskingForAPort() throws Exception {
        TcpServers.Echo echo = env.own(TcpServers.echo());
        // The original arps: RegisterResult and nothing else. An older arp: Hello without "tcp-ports".
        FakeRelay original = env.own(FakeRelay.start());
        FakeRelay older = env.own(FakeRelay.start());
        Args origArgs = env.arpcArgs(original.asRelay(), echo.port()).set("--remote-port", 0);
        Args olderArgs = env.arpcArgs(older.asRelay(), echo.port()).set("--remote-port", 0);
        Proc toOriginal = env.startArpc(origArgs);
        Proc toOlder = env.startArpc(olderArgs);

        FakeRelay.ControlConn oc = original.nextControl(TestEnv.START, toOriginal);
        assertEquals(FakeRelay.register(origArgs.get("--client-id")), oc.nextFrame(WAIT), "arpc's first frame, byte for byte");
        oc.send(FakeRelay.REGISTER_OK);
        FakeRelay.ControlConn ac = older.nextControl(TestEnv.START, toOlder);
        assertEquals(FakeRelay.register(olderArgs.get("--client-id")), ac.nextFrame(WAIT));
        ac.send(FakeRelay.REGISTER_OK);
        ac.send(FakeRelay.hello(14567)); // features: heartbeat, handover

        for (Proc p : List.of(toOriginal, toOlder)) {
            String err = assertRefused(p);
            assertTrue(err.contains("no dedicated TCP ports"), p.name + "'s stderr should say the relay has no dedicated TCP ports:\n" + err);
        }
        for (FakeRelay.ControlConn c : List.of(oc, ac)) {
            c.awaitEnd(WAIT, "arpc should close its control connection when it gives up");
            assertEquals(List.of(), c.problems(), "malformed frames on the control connection");
            for (String f : c.received()) {
                assertFalse(FakeRelay.parse(f).has("TcpPort"), () -> "arpc asked a relay without the feature for a port: " + c.received());
            }
        }
        assertEquals(1, original.controlConnections(), "arpc must not retry after the refusal");
        assertEquals(1, older.controlConnections(), "arpc must not retry after the refusal");
    }

    @Test
    void bothRoutesServeTheSameClientAtOnce() throws Exception {
        Range range = freeRange(5);
        Origin origin = env.origin();
        TestEnv.Relay relay = relayWithPorts(range);
        TestEnv.Client client = env.arpc(arpcArgs(relay, origin.port(), 0));
        int port = remotePort(client);

        // Keep one connection open on each route while the other is used.
        try (RawHttp.Conn viaPort = RawHttp.connect(port); RawHttp.Conn viaToken = RawHttp.connect(relay.publicPort())) {
            viaPort.timeout(WAIT);
            viaToken.timeout(WAIT);
            viaToken.send("GET /hello?token=" + client.clientId() + " HTTP/1.1\r\nHost: origin\r\n\r\n");
            viaPort.send("GET /hello HTTP/1.1\r\nHost: origin\r\n\r\n");
            RawHttp.Response a = viaToken.readFinal();
            RawHttp.Response b = viaPort.readFinal();
            assertEquals(200, a.status(), a::toString);
            assertEquals("hello world", a.bodyText());
            assertEquals(200, b.status(), b::toString);
            assertEquals("hello world", b.bodyText());
            // Both stay usable (keep-alive on each spliced connection).
            viaPort.send("GET /hello HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n");
            assertEquals("hello world", viaPort.readFinal().bodyText());
        }
        HttpResponse<String> r = env.get("http://127.0.0.1:" + relay.publicPort() + "/hello?token=" + client.clientId());
        assertEquals(200, r.statusCode());
        assertEquals("hello world", r.body());
    }

    // ---- the wire ----

    @Test
    void arpsAnnouncesTheFeatureAndAnswersTcpPortOnTheWire() throws Exception {
        Range range = freeRange(5);
        TestEnv.Relay relay = relayWithPorts(range);
        FakeClient fc = env.own(FakeClient.register(relay.controlPort(), TestEnv.randomId("wire"), true));
        assertTrue(features(fc.serverHello().path("Hello")).contains("tcp-ports"), () -> "arps's Hello: " + fc.serverHello());
        String pooled = fc.nextProxyRequest(WAIT); // the pool's first request comes right after Hello

        fc.send("{\"TcpPort\":{\"port\":" + (range.low() - 1) + "}}");
        JsonNode no = nextTcpPortResult(fc);
        assertEquals(List.of("success", "error"), fieldNames(no), no::toString);
        assertFalse(no.path("success").asBoolean(true), no::toString);
        assertTrue(no.path("error").asText().contains(range.spec()), no::toString);

        fc.send("{\"TcpPort\":{\"port\":0}}");
        JsonNode yes = nextTcpPortResult(fc);
        assertEquals(List.of("success", "port"), fieldNames(yes), yes::toString);
        assertTrue(yes.path("success").asBoolean(false), yes::toString);
        int port = yes.path("port").asInt();
        assertTrue(range.contains(port), yes::toString);

        // A visitor on it takes the pooled connection: StartProxy, then the visitor's bytes as they are.
        FakeClient.DataConn data = env.own(fc.dial(relay.proxyPort(), pooled, true));
        Socket visitor = raw(port);
        JsonNode start = data.readFrame(WAIT);
        assertTrue(start.has("StartProxy"), start::toString);
        data.writeFrame(FakeClient.Frames.proxyStarted());
        data.writeRaw(BANNER);
        assertEquals(BANNER, Bytes.ascii(readExactly(visitor, BANNER.length(), "bytes from the client's side")));
        visitor.getOutputStream().write(Bytes.ascii("EHLO x\r\n"));
        assertEquals("EHLO x\r\n", data.readExactly(8, WAIT));
    }

    private static JsonNode nextTcpPortResult(FakeClient fc) {
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (true) {
            JsonNode f = fc.next(Duration.ofMillis(Math.max(1, (deadline - System.nanoTime()) / 1_000_000)));
            if (f.has("TcpPortResult")) return f.get("TcpPortResult");
            assertTrue(f.has("RequestNewProxyConn") || f.has("Pong"), () -> "unexpected frame while waiting for TcpPortResult: " + f);
        }
    }

    private static List<String> fieldNames(JsonNode n) {
        List<String> names = new ArrayList<>();
        n.fieldNames().forEachRemaining(names::add);
        return names;
    }

    @Test
    void arpcAsksForItsPortOnTheWireAndReportsTheAnswer() throws Exception {
        TcpServers.Echo echo = env.own(TcpServers.echo());
        FakeRelay given = env.own(FakeRelay.start());
        FakeRelay refusing = env.own(FakeRelay.start());
        Args gArgs = env.arpcArgs(given.asRelay(), echo.port()).set("--remote-port", 0);
        Args rArgs = env.arpcArgs(refusing.asRelay(), echo.port()).set("--remote-port", 23456);
        Proc gArpc = env.startArpc(gArgs);
        Proc rArpc = env.startArpc(rArgs);
        String helloWithPorts = "{\"Hello\":{\"version\":1,\"features\":[\"heartbeat\",\"handover\",\"tcp-ports\"],\"public_port\":14567}}";

        FakeRelay.ControlConn g = given.nextControl(TestEnv.START, gArpc);
        assertEquals(FakeRelay.register(gArgs.get("--client-id")), g.nextFrame(WAIT), "arpc's first frame, byte for byte");
        JsonNode hello = FakeRelay.parse(g.nextFrame(WAIT)).path("Hello");
        assertTrue(features(hello).contains("tcp-ports"), () -> "arpc's Hello: " + hello);
        g.send(FakeRelay.REGISTER_OK);
        g.send(helloWithPorts);
        assertEquals("{\"TcpPort\":{\"port\":0}}", g.nextFrame(WAIT), "arpc's request, byte for byte");
        g.send("{\"TcpPortResult\":{\"success\":true,\"port\":23456}}");
        TestEnv.Client client = TestEnv.registered(gArpc, 1);
        assertEquals(23456, client.registered().path("remote_port").asInt(-1), client.registered()::toString);
        assertEquals("tcp://127.0.0.1:23456", client.registered().path("tcp_url").asText(null), client.registered()::toString);
        assertEquals("http://127.0.0.1:14567/?token=" + client.clientId(), client.publicUrl());

        FakeRelay.ControlConn r = refusing.nextControl(TestEnv.START, rArpc);
        assertEquals(FakeRelay.register(rArgs.get("--client-id")), r.nextFrame(WAIT));
        r.nextFrame(WAIT); // Hello
        r.send(FakeRelay.REGISTER_OK);
        r.send(helloWithPorts);
        assertEquals("{\"TcpPort\":{\"port\":23456}}", r.nextFrame(WAIT), "arpc's request, byte for byte");
        String reason = "port 23456 is held by another client";
        r.send("{\"TcpPortResult\":{\"success\":false,\"error\":\"" + reason + "\"}}");
        String err = assertRefused(rArpc);
        assertTrue(err.contains(reason), "arpc's stderr should carry the relay's reason:\n" + err);
        assertEquals(1, refusing.controlConnections(), "arpc must not retry after the refusal");
        assertTrue(gArpc.isAlive(), "the arpc that got its port");
    }
}
