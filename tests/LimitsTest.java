package arp.tests;

import arp.tests.support.Bytes;
import arp.tests.support.FakeClient;
import arp.tests.support.Origin;
import arp.tests.support.Proc;
import arp.tests.support.RawHttp;
import arp.tests.support.TestEnv;
import arp.tests.support.Visit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The relay's limits ({@code --max-clients}, {@code --max-pending}, {@code --max-head},
 * {@code --max-handshakes[-per-ip]}, {@code --head-timeout}) under abuse: each abuse is followed by a check
 * that arps still serves. Abusers connect from other loopback addresses (127.0.0.2 and up: all of 127/8
 * is loopback on Linux) so that per-address limits can be seen to spare the well-behaved 127.0.0.1.
 */
class LimitsTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final Duration WAIT = Duration.ofSeconds(10);

    private static String lower(String s) { return s.toLowerCase(Locale.ROOT); }

    /** A TCP connection from {@code source} (a loopback address) to 127.0.0.1:{@code port}, closed with the test. */
    private Socket from(String source, int port) throws IOException {
        Socket s = env.own(new Socket());
        s.bind(new InetSocketAddress(source, 0));
        s.connect(new InetSocketAddress("127.0.0.1", port), 5_000);
        s.setTcpNoDelay(true);
        return s;
    }

    /** A GET on a fresh connection (a pooled one might be spliced to a client that has gone) is served. */
    private static void assertServes(TestEnv.Tunnel t, String when) throws Exception {
        RawHttp.Response r = Visit.get(t.publicPort(), "/hello?token=" + t.token());
        assertEquals(200, r.status(), () -> when + ": " + r);
        assertEquals("hello world", r.bodyText(), when);
    }

    /**
     * Reads {@code s} until the peer closes it (EOF or reset), at most until {@code deadline} (nanoTime).
     * Returns what arrived, or null if it was still open at the deadline.
     */
    private static String readUntilClosed(Socket s, long deadline) {
        ByteArrayOutputStream got = new ByteArrayOutputStream();
        byte[] buf = new byte[4096];
        try {
            InputStream in = s.getInputStream();
            while (true) {
                long left = (deadline - System.nanoTime()) / 1_000_000;
                if (left <= 0) return null;
                s.setSoTimeout((int) Math.max(1, left));
                try {
                    int n = in.read(buf);
                    if (n < 0) return Bytes.ascii(got.toByteArray());
                    if (got.size() < 65536) got.write(buf, 0, n);
                } catch (SocketTimeoutException e) {
                    // re-check the deadline
                }
            }
        } catch (IOException e) {
            return Bytes.ascii(got.toByteArray()); // reset, or closed: closed either way
        }
    }

    // ---- --max-clients ----

    @Test
    void beyondMaxClientsARegistrationIsRefusedAndTheFirstKeepsServing() throws Exception {
        Origin o = env.origin();
        TestEnv.Relay relay = env.arps("--max-clients", "1");
        java.nio.file.Path install = env.dir("first-install");
        String id = TestEnv.randomId("first");
        TestEnv.Client first = env.arpc(env.arpcArgs(relay, o.port()).set("--client-id", id).set("--config-dir", install));
        TestEnv.Tunnel t = new TestEnv.Tunnel(relay, first);

        Proc second = env.startArpc(env.arpcArgs(relay, o.port()).set("--max-retries", 0));
        int code = second.awaitExit(TestEnv.START);
        String err = second.stderrText();
        assertTrue(code == 1 || code == 3, "exit code " + code + " of the client beyond --max-clients; stderr:\n" + err);
        assertEquals(0, second.countEvents("registered"), second::stdoutText);
        assertTrue(lower(err).contains("full"), "arpc should give the relay's reason (full):\n" + err);
        relay.proc().awaitStderr("arps logging the refusal",
                l -> l.contains("refused") && (lower(l).contains("full") || l.contains("max-clients")), WAIT);
        assertServes(t, "the first client after the refusal");

        // A restart of the first (same install) while its old connection is still open replaces it: no new client.
        first.proc().signal("STOP");
        TestEnv.Client restarted = env.arpc(env.arpcArgs(relay, o.port()).set("--client-id", id).set("--config-dir", install));
        first.proc().sigkill();
        assertServes(t, "the restarted first client on a full relay");

        // Once it leaves there is room again.
        restarted.proc().sigterm();
        restarted.proc().awaitExit(WAIT);
        relay.proc().awaitStderr("arps logging that the first client left", l -> l.contains("unregistered") && !l.contains("replaced"), WAIT);
        assertServes(new TestEnv.Tunnel(relay, env.arpc(relay, o.port())), "a client registered after the first left");
    }

    @Test
    void theGlobalHandshakeCapHoldsAcrossAddresses() throws Exception {
        TestEnv.Tunnel t = env.tunnel(env.origin().port(), "--max-handshakes", "10", "--max-handshakes-per-ip", "64", "--head-timeout", "2");
        assertServes(t, "before");
        int n = 30;
        ExecutorService pool = env.own(Executors.newVirtualThreadPerTaskExecutor());
        List<CompletableFuture<Long>> ends = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            Socket s = from("127.0.1." + (i + 1), t.publicPort()); // one silent connection from each of 30 addresses
            long t0 = System.nanoTime();
            ends.add(CompletableFuture.supplyAsync(() -> {
                String got = readUntilClosed(s, t0 + TimeUnit.SECONDS.toNanos(12));
                return got == null ? -1L : (System.nanoTime() - t0) / 1_000_000;
            }, pool));
        }
        t.relay().proc().awaitStderr("arps logging refused connections", l -> l.contains("refused") && l.contains("127.0.1."), WAIT);
        int early = 0, open = 0;
        for (CompletableFuture<Long> f : ends) {
            long ms = f.get(30, TimeUnit.SECONDS);
            if (ms < 0) open++;
            else if (ms < 1500) early++;
        }
        assertEquals(0, open, "silent connections still open 12 s after they started (--head-timeout 2)");
        assertTrue(early >= n - 10, early + " of " + n + " closed before the deadline; at least " + (n - 10) + " are beyond --max-handshakes 10");
        assertServes(t, "after the silent connections");
    }

    // ---- --max-pending ----

    @Test
    void beyondMaxPendingAVisitorGets503AndTheTunnelServesAfterwards() throws Exception {
        TestEnv.Relay relay = env.arps("--pool-size", "1", "--max-pending", "1", "--pending-timeout", "30");
        String id = TestEnv.randomId("pending");
        FakeClient fc = env.own(FakeClient.registerWithFeatures(relay.controlPort(), id, "heartbeat", "handover"));
        String pooled = fc.nextProxyRequest(WAIT); // the pool's request: not answered yet
        String answer = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nfine\n";

        RawHttp.Conn waiting = env.own(RawHttp.connect(relay.publicPort()));
        waiting.send("GET /1?token=" + id + " HTTP/1.1\r\nHost: t\r\n\r\n");
        String forWaiting = fc.nextProxyRequest(WAIT); // asked for on its behalf: it is waiting now

        RawHttp.Response refused = RawHttp.exchange(relay.publicPort(), "GET /2?token=" + id + " HTTP/1.1\r\nHost: t\r\n\r\n");
        ErrorResponsesTest.assertArpError(503, refused);

        // The client catches up: the waiting visitor is served, and so is everyone after.
        for (String cid : List.of(pooled, forWaiting)) {
            FakeClient.DataConn d = fc.dial(relay.proxyPort(), cid, true);
            Thread.ofVirtual().start(() -> {
                try {
                    d.serve(answer, Duration.ofSeconds(30));
                } catch (IOException ignored) {
                    // an idle spare that no visitor took
                }
            });
        }
        fc.answerRequests(relay.proxyPort(), true, d -> d.serve(answer, Duration.ofSeconds(30)));
        waiting.timeout(WAIT);
        RawHttp.Response first = waiting.readFinal();
        assertEquals(200, first.status(), first::toString);
        assertEquals("fine\n", first.bodyText());
        for (int i = 0; i < 3; i++) {
            RawHttp.Response r = RawHttp.exchange(relay.publicPort(), "GET /after" + i + "?token=" + id + " HTTP/1.1\r\nHost: t\r\n\r\n");
            assertEquals(200, r.status(), r::toString);
        }
    }

    // ---- --max-head ----

    /** A complete GET head of exactly {@code size} bytes, padded with one header. */
    private static String headOfSize(String token, int size) {
        String start = "GET /hello?token=" + token + " HTTP/1.1\r\nHost: t\r\nX-Fill: ";
        String end = "\r\n\r\n";
        return start + "f".repeat(size - start.length() - end.length()) + end;
    }

    @Test
    void aHeadBeyondMaxHeadGets431AndOneBelowPasses() throws Exception {
        TestEnv.Tunnel t = env.tunnel(env.origin().port(), "--max-head", "4096");
        RawHttp.Response big = RawHttp.exchange(t.publicPort(), headOfSize(t.token(), 5000));
        ErrorResponsesTest.assertArpError(431, big);
        for (int size : List.of(300, 3000, 4000)) {
            RawHttp.Response ok = RawHttp.exchange(t.publicPort(), headOfSize(t.token(), size));
            assertEquals(200, ok.status(), () -> "a " + size + "-byte head: " + ok);
            assertEquals("hello world", ok.bodyText());
        }
        // A head that grows past the limit without ever ending is refused too, without waiting for its end.
        try (RawHttp.Conn c = RawHttp.connect(t.publicPort())) {
            c.send("GET /hello?token=" + t.token() + " HTTP/1.1\r\nHost: t\r\n");
            for (int i = 0; i < 6; i++) c.send("X-Fill-" + i + ": " + "f".repeat(1000) + "\r\n");
            c.timeout(WAIT);
            ErrorResponsesTest.assertArpError(431, c.read());
        }
        assertServes(t, "after the 431s");
    }

    // ---- slowloris ----

    @Test
    void slowHeadsFromOneAddressDoNotStarveOtherVisitors() throws Exception {
        TestEnv.Tunnel t = env.tunnel(env.origin().port(), "--max-handshakes-per-ip", "16", "--head-timeout", "3");
        assertServes(t, "before the slow visitors");
        int n = 40;
        String partial = "GET /hello?token=" + t.token() + " HTTP/1.1\r\nHost: t\r\nX-Slow: " + "s".repeat(200);
        AtomicBoolean stop = new AtomicBoolean();
        env.own(() -> stop.set(true));
        List<CompletableFuture<Long>> slow = new ArrayList<>(); // ms from connect to close, -1 if still open
        ConcurrentLinkedQueue<String> odd = new ConcurrentLinkedQueue<>();
        for (int i = 0; i < n; i++) {
            Socket s = from("127.0.0.2", t.publicPort());
            long t0 = System.nanoTime();
            CompletableFuture<Long> f = new CompletableFuture<>();
            slow.add(f);
            Thread.ofVirtual().start(() -> { // one byte every 100 ms: never a complete head
                try {
                    OutputStream out = s.getOutputStream();
                    for (int k = 0; k < partial.length() && !stop.get(); k++) {
                        out.write(partial.charAt(k));
                        out.flush();
                        Thread.sleep(100);
                    }
                } catch (IOException | InterruptedException ignored) {
                    // closed by arps: the reader reports it
                }
            });
            Thread.ofVirtual().start(() -> {
                String got = readUntilClosed(s, t0 + TimeUnit.SECONDS.toNanos(15));
                if (got != null && !got.isEmpty() && !got.startsWith("HTTP/1.1 408 ")) odd.add(got);
                f.complete(got == null ? -1 : (System.nanoTime() - t0) / 1_000_000);
            });
        }
        t.relay().proc().awaitStderr("arps logging refused connections from 127.0.0.2",
                l -> l.contains("refused") && l.contains("127.0.0.2"), WAIT);

        // A visitor from another address is served at once.
        long t0 = System.nanoTime();
        RawHttp.Response r = RawHttp.exchange(t.publicPort(), "GET /hello?token=" + t.token() + " HTTP/1.1\r\nHost: t\r\n\r\n");
        long ms = (System.nanoTime() - t0) / 1_000_000;
        assertEquals(200, r.status(), r::toString);
        assertTrue(ms < 2000, "the visitor from 127.0.0.1 took " + ms + " ms next to " + n + " slow ones from 127.0.0.2");

        // Every slow connection is closed: beyond the cap at once, the others by the --head-timeout deadline.
        int early = 0;
        List<String> open = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            long closedAfter = slow.get(i).get(30, TimeUnit.SECONDS);
            if (closedAfter < 0) open.add("slow connection " + i);
            else if (closedAfter < 2500) early++;
        }
        assertEquals(List.of(), open, "slow connections still open 15 s after they started (--head-timeout 3)");
        assertEquals(List.of(), List.copyOf(odd), "slow connections got something other than a 408");
        assertTrue(early >= n - 16, early + " of " + n + " slow connections closed before the deadline; at least "
                + (n - 16) + " are beyond --max-handshakes-per-ip 16");

        // The address is welcome again once its connections are gone.
        Socket again = from("127.0.0.2", t.publicPort());
        again.setSoTimeout((int) WAIT.toMillis());
        again.getOutputStream().write(Bytes.ascii("GET /hello?token=" + t.token() + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"));
        RawHttp.Response back = RawHttp.readResponse(again.getInputStream());
        assertEquals(200, back.status(), back::toString);
        assertServes(t, "after the slow visitors");
    }

    // ---- floods ----

    @Test
    void aFloodOfHalfOpenRegistrationsDoesNotKeepARealClientOut() throws Exception {
        Origin o = env.origin();
        TestEnv.Tunnel t = env.tunnel(o.port(), "--head-timeout", "3");
        int n = 300;
        byte[] half = FakeClient.Frames.encode("{\"Register\":{\"client_id\":\"flood-0123456789\"}}");
        List<Socket> flood = new ArrayList<>();
        AtomicInteger connectFailures = new AtomicInteger();
        long start = System.nanoTime();
        for (int i = 0; i < n && System.nanoTime() - start < TimeUnit.SECONDS.toNanos(20); i++) {
            try {
                Socket s = from("127.0.0.3", t.relay().controlPort());
                if (i % 2 == 1) s.getOutputStream().write(half, 0, half.length / 2); // half a frame, the rest never comes
                flood.add(s);
            } catch (IOException e) {
                connectFailures.incrementAndGet(); // refused or reset at once: that is a refusal too
            }
        }
        t.relay().proc().awaitStderr("arps logging refused connections from 127.0.0.3",
                l -> l.contains("refused") && l.contains("127.0.0.3"), WAIT);

        // Meanwhile: the existing tunnel serves, and a new client registers and serves.
        assertServes(t, "the existing tunnel during the flood");
        TestEnv.Client newcomer = env.arpc(t.relay(), o.port());
        assertServes(new TestEnv.Tunnel(t.relay(), newcomer), "a client that registered during the flood");

        // Every half-open connection is gone by the deadline.
        long deadline = start + TimeUnit.SECONDS.toNanos(3 + 12);
        List<Future<String>> ends = new ArrayList<>();
        try (ExecutorService pool = Executors.newVirtualThreadPerTaskExecutor()) {
            for (Socket s : flood) ends.add(pool.submit(() -> readUntilClosed(s, deadline)));
            int open = 0;
            for (Future<String> f : ends) if (f.get(30, TimeUnit.SECONDS) == null) open++;
            assertEquals(0, open, open + " of " + flood.size() + " half-open registrations still open 15 s after the flood began (--head-timeout 3)");
        }
        assertServes(t, "after the flood");
        assertTrue(t.relay().proc().isAlive());
    }

    @Test
    void garbageOnTheProxyPortIsDroppedWhileTrafficFlows() throws Exception {
        TestEnv.Tunnel t = env.tunnel(env.origin().port(), "--head-timeout", "3");
        AtomicBoolean done = new AtomicBoolean();
        ConcurrentLinkedQueue<String> trafficFailures = new ConcurrentLinkedQueue<>();
        AtomicInteger served = new AtomicInteger();
        Thread traffic = Thread.ofVirtual().start(() -> {
            while (!done.get()) {
                try { // a new visitor connection each time: each is routed and dispatched anew
                    RawHttp.Response r = Visit.get(t.publicPort(), "/hello?token=" + t.token());
                    if (r.status() == 200 && r.bodyText().equals("hello world")) served.incrementAndGet();
                    else trafficFailures.add(r.toString());
                } catch (Exception e) {
                    trafficFailures.add(String.valueOf(e));
                }
            }
        });
        env.own(() -> done.set(true));

        int n = 100;
        List<String> open = new ArrayList<>();
        try (ExecutorService pool = Executors.newVirtualThreadPerTaskExecutor()) {
            List<Future<String>> results = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                int seed = i;
                results.add(pool.submit(() -> {
                    int size = 1 + ThreadLocalRandom.current().nextInt(4096);
                    try (Socket s = new Socket()) {
                        s.bind(new InetSocketAddress("127.0.0.4", 0));
                        s.connect(new InetSocketAddress("127.0.0.1", t.relay().proxyPort()), 5_000);
                        long t0 = System.nanoTime();
                        try {
                            s.getOutputStream().write(Bytes.bytes(9000 + seed, size));
                        } catch (IOException e) {
                            return null; // closed while we wrote: closed
                        }
                        return readUntilClosed(s, t0 + TimeUnit.SECONDS.toNanos(3 + 8)) == null ? "garbage connection " + seed + " still open" : null;
                    } catch (IOException e) {
                        return null; // refused at once
                    }
                }));
            }
            for (Future<String> f : results) {
                String r = f.get(60, TimeUnit.SECONDS);
                if (r != null) open.add(r);
            }
        }
        done.set(true);
        traffic.join(30_000);
        assertEquals(List.of(), open, "garbage connections arps left open");
        assertEquals(List.of(), List.copyOf(trafficFailures), "visitors that failed during the garbage");
        assertTrue(served.get() >= 1, "no visitor was served during the garbage");
        assertTrue(t.relay().proc().isAlive());
        assertServes(t, "after the garbage");
        assertEquals(1, t.client().proc().countEvents("registered"), "arpc had to register again");
    }
}
