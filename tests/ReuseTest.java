package arp.tests;

import arp.tests.support.Args;
import arp.tests.support.Bytes;
import arp.tests.support.Chunks;
import arp.tests.support.FakeClient;
import arp.tests.support.FakeClient.DataConn;
import arp.tests.support.FakeClient.Frames;
import arp.tests.support.FakeRelay;
import arp.tests.support.Origin;
import arp.tests.support.Proc;
import arp.tests.support.RawHttp;
import arp.tests.support.TestEnv;
import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketException;
import java.net.SocketTimeoutException;
import java.net.URI;
import java.net.http.WebSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Reusable data connections (feature "reuse"): between our arps and our arpc a visitor's bytes travel in
 * chunks (4-byte big-endian length, 1..65532 bytes; length 0 ends a direction), and once both directions
 * have ended the data connection goes back to the pool for the next visitor.
 * <p>
 * The protocol-level tests play arpc with {@link FakeClient} (or arps with {@link FakeRelay} in front of
 * a real arpc) to control every byte and every TCP write; the end-to-end ones run real arps and arpc and
 * count arps's {@code new data connection} log lines to see reuse happen.
 */
class ReuseTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final Duration WAIT = Duration.ofSeconds(10);
    /** How long a visitor may take to see its connection closed after its data connection broke. */
    private static final Duration PROMPTLY = Duration.ofSeconds(5);
    private static final String NEW_CONN = "new data connection for client ";
    /** arps's trace line for a data connection back in service ("data connection of client xxxx**** reused"). */
    private static final String REUSED = "**** reused";

    // ---- helpers ----

    /** arps with one pooled connection that never grows, at trace level (which logs each reuse). */
    private TestEnv.Relay relay(String... overrides) {
        return env.arps(env.arpsArgs().set("--pool-size", 1).set("--pool-max", 1).set("--log-level", "trace").merge(overrides));
    }

    /** A fake arpc announcing heartbeat, handover and reuse; checks that arps announced reuse too. */
    private FakeClient client(TestEnv.Relay relay) throws IOException {
        FakeClient fc = env.own(FakeClient.registerWithFeatures(relay.controlPort(), TestEnv.randomId("reuse"),
                "heartbeat", "handover", "reuse"));
        assertTrue(fc.registerResult().path("RegisterResult").path("success").asBoolean(), fc.registerResult()::toString);
        assertTrue(features(fc.serverHello().path("Hello")).contains("reuse"), () -> "arps's Hello: " + fc.serverHello());
        return fc;
    }

    /** Dials the connection arps asks for next, reusable, and waits until arps logged it as the nth new one. */
    private static DataConn pooled(TestEnv.Relay relay, FakeClient fc, int nth) throws IOException, InterruptedException {
        DataConn d = fc.dialReusable(relay.proxyPort(), fc.nextProxyRequest(WAIT));
        awaitLines(relay.proc(), NEW_CONN + mask(fc.clientId) + " (reusable)", nth, WAIT);
        return d;
    }

    static String mask(String id) { return id.substring(0, 4) + "****"; }

    static List<String> features(JsonNode hello) {
        List<String> f = new ArrayList<>();
        hello.path("features").forEach(n -> f.add(n.asText()));
        return f;
    }

    static long countLines(Proc p, String fragment) {
        return p.stderr().stream().filter(l -> l.contains(fragment)).count();
    }

    /** Waits until at least {@code n} stderr lines of {@code p} contain {@code fragment}. */
    static void awaitLines(Proc p, String fragment, long n, Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        long seen;
        while ((seen = countLines(p, fragment)) < n) {
            if (System.nanoTime() > deadline) {
                fail(p.name + ": " + seen + " stderr lines containing [" + fragment + "] after " + timeout.toMillis()
                        + " ms, expected " + n);
            }
            Thread.sleep(20);
        }
    }

    /** A data connection back in the pool: arps's trace line, the nth one. */
    static void awaitReused(TestEnv.Relay relay, int nth) throws InterruptedException {
        awaitLines(relay.proc(), REUSED, nth, WAIT);
    }

    static String request(String pathAndQuery, String token) {
        return "GET " + pathAndQuery + (pathAndQuery.contains("?") ? "&" : "?") + "token=" + token
                + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    }

    /** What the client must receive for {@link #request}: the same bytes without the token. */
    static String forwarded(String pathAndQuery) {
        return "GET " + pathAndQuery + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    }

    static byte[] proxyStarted() { return Frames.encode(Frames.proxyStarted()); }

    static void pause() throws InterruptedException { Thread.sleep(60); }

    static byte[] slice(byte[] b, int from, int to) { return Arrays.copyOfRange(b, from, to); }

    /** The next chunk on {@code conn} is the end chunk, with no data before it. */
    static void expectEnd(DataConn conn, String what) throws IOException {
        byte[] c;
        try {
            c = conn.readChunk(WAIT);
        } catch (SocketTimeoutException e) {
            throw new AssertionError(what + ": no end chunk within " + WAIT.toMillis() + " ms");
        }
        if (c.length != 0) fail(what + ": expected the end chunk, got a chunk of " + c.length + " bytes: " + Bytes.ascii(c));
    }

    /** The visitor's next read is a clean end of stream (FIN, not reset), with no byte before it. */
    static void assertEof(RawHttp.Conn c, String what) throws IOException {
        c.timeout(WAIT);
        int b;
        try {
            b = c.in().read();
        } catch (SocketTimeoutException e) {
            throw new AssertionError(what + ": no end of stream within " + WAIT.toMillis() + " ms");
        } catch (SocketException e) {
            throw new AssertionError(what + ": connection reset instead of a clean end of stream: " + e.getMessage());
        }
        assertEquals(-1, b, what + ": expected the end of stream, got more bytes");
    }

    /**
     * Passes if arps closes (or resets) the data connection within {@link #PROMPTLY}; bytes before the
     * close are skipped (the test's own output may already be shut down).
     */
    static void assertClosedByArps(DataConn conn, String what) throws IOException {
        Socket s = conn.socket;
        InputStream in = s.getInputStream();
        long deadline = System.nanoTime() + PROMPTLY.toNanos();
        byte[] buf = new byte[8192];
        while (true) {
            long left = (deadline - System.nanoTime()) / 1_000_000;
            if (left <= 0) fail(what + ": data connection still open after " + PROMPTLY.toMillis() + " ms");
            s.setSoTimeout((int) Math.max(1, left));
            try {
                if (in.read(buf) < 0) return;
            } catch (SocketTimeoutException e) {
                // re-check the deadline
            } catch (SocketException e) {
                return; // reset counts as closed
            }
        }
    }

    /** Runs {@code task} on a virtual thread (the fake client's side while the test plays the visitor). */
    static <T> CompletableFuture<T> async(Callable<T> task) {
        CompletableFuture<T> f = new CompletableFuture<>();
        Thread.ofVirtual().name("reuse-test-side").start(() -> {
            try {
                f.complete(task.call());
            } catch (Throwable t) {
                f.completeExceptionally(t);
            }
        });
        return f;
    }

    static <T> T await(CompletableFuture<T> f, Duration timeout) throws Exception {
        try {
            return f.get(timeout.toMillis(), TimeUnit.MILLISECONDS);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof Exception x) throw x;
            if (e.getCause() instanceof Error x) throw x;
            throw e;
        } catch (TimeoutException e) {
            throw new AssertionError("the fake client's side did not finish within " + timeout.toMillis() + " ms");
        }
    }

    /**
     * A visitor served on {@code conn} the usual way ({@link DataConn#serveReusable}), with a
     * Connection: close request; checks both sides and returns nothing.
     */
    static void serveOneVisitor(TestEnv.Relay relay, FakeClient fc, DataConn conn, String path) throws Exception {
        String body = "served " + path;
        CompletableFuture<String> side = async(() -> conn.serveReusable(PoolTest.response(body), WAIT));
        try (RawHttp.Conn v = RawHttp.connect(relay.publicPort()).timeout(WAIT)) {
            v.send(request(path, fc.clientId));
            RawHttp.Response r = v.read();
            assertEquals(200, r.status(), r::toString);
            assertEquals(body, r.bodyText());
            assertEof(v, "visitor of " + path + " after its response");
        }
        assertEquals(forwarded(path), await(side, WAIT), "the request head as the fake client received it");
    }

    // ---- arps, with a fake arpc: one data connection serves visitor after visitor ----

    @Test
    void oneDataConnectionServesTwoVisitorsInTurn() throws Exception {
        TestEnv.Relay relay = relay();
        FakeClient fc = client(relay);
        DataConn conn = pooled(relay, fc, 1);

        // Visitor 1 reads the whole answer and the end of it, then half-closes.
        String response1 = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nfirst visitor";
        try (RawHttp.Conn v1 = RawHttp.connect(relay.publicPort()).timeout(WAIT)) {
            v1.send(request("/one?a=1", fc.clientId));
            assertEquals("127.0.0.1:" + v1.localPort(), conn.expectStartProxy(WAIT), "StartProxy's visitor");
            conn.expectChunkedData(forwarded("/one?a=1"), WAIT);

            // ProxyStarted with the first chunk in one write; the second chunk's header split across two
            // writes, its data across two more; the end chunk on its own.
            byte[] second = Chunks.chunk(response1.substring(30));
            conn.writeBytes(Chunks.concat(proxyStarted(), Chunks.chunk(response1.substring(0, 30)), slice(second, 0, 2)));
            pause();
            conn.writeBytes(slice(second, 2, 4));
            pause();
            conn.writeBytes(slice(second, 4, 9));
            pause();
            conn.writeBytes(slice(second, 9, second.length));
            pause();
            conn.writeEnd();

            assertEquals(response1, Bytes.ascii(v1.readExactly(response1.length())));
            assertEof(v1, "visitor 1 after the client's end chunk");
            v1.socket.shutdownOutput();
            expectEnd(conn, "visitor 1 half-closed");
        }
        awaitReused(relay, 1);

        // Visitor 2 comes on the same data connection; it closes outright after reading.
        String response2 = "HTTP/1.1 200 OK\r\nContent-Length: 14\r\nConnection: close\r\n\r\nsecond visitor";
        try (RawHttp.Conn v2 = RawHttp.connect(relay.publicPort()).timeout(WAIT)) {
            v2.send(request("/two", fc.clientId));
            assertEquals("127.0.0.1:" + v2.localPort(), conn.expectStartProxy(WAIT),
                    "visitor 2's StartProxy on the data connection that served visitor 1");
            conn.expectChunkedData(forwarded("/two"), WAIT);
            conn.writeBytes(proxyStarted());
            pause();
            conn.writeBytes(Chunks.concat(Chunks.split(Bytes.ascii(response2), 7), Chunks.end()));
            assertEquals(response2, Bytes.ascii(v2.readExactly(response2.length())));
            assertEof(v2, "visitor 2 after the client's end chunk");
        }
        expectEnd(conn, "visitor 2 closed");
        awaitReused(relay, 2);

        // The pool asked for one connection when visitor 1 took the only one (never dialled here); that
        // request is still outstanding, so serving visitor 2 on the reused connection needs no other.
        List<String> asked = fc.proxyRequestsWithin(Duration.ofMillis(300));
        assertTrue(asked.size() <= 1, "arps asked for " + asked.size() + " more data connections " + asked
                + "; with --pool-size 1 --pool-max 1 only the top-up when visitor 1 took the pooled one is expected");
        assertEquals(1, countLines(relay.proc(), NEW_CONN), relay.proc()::stderrText);
    }

    // ---- the client's direction ends first ----

    @Test
    void clientEndsItsDirectionFirstAndTheVisitorKeepsSending() throws Exception {
        TestEnv.Relay relay = relay();
        FakeClient fc = client(relay);
        DataConn conn = pooled(relay, fc, 1);

        String answer = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nearly";
        String head = "POST /late?token=" + fc.clientId + " HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
        try (RawHttp.Conn v = RawHttp.connect(relay.publicPort()).timeout(WAIT)) {
            v.send(head);
            conn.expectStartProxy(WAIT);
            conn.expectChunkedData("POST /late HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n", WAIT);
            // The whole answer and the end of the client's direction, before the request body.
            conn.writeBytes(Chunks.concat(proxyStarted(), Chunks.chunk(answer), Chunks.end()));
            assertEquals(answer, Bytes.ascii(v.readExactly(answer.length())));
            assertEof(v, "visitor after the client's end chunk");

            // The visitor's direction is still open: what it sends now reaches the client as chunks.
            v.send("5\r\nhello\r\n");
            conn.expectChunkedData("5\r\nhello\r\n", WAIT);
            pause();
            v.send("0\r\n\r\n");
            conn.expectChunkedData("0\r\n\r\n", WAIT);
            v.socket.shutdownOutput();
            expectEnd(conn, "the visitor's FIN");
        }
        awaitReused(relay, 1);
        serveOneVisitor(relay, fc, conn, "/after-half-close");
        awaitReused(relay, 2);
        assertEquals(1, countLines(relay.proc(), NEW_CONN), relay.proc()::stderrText);
    }

    /**
     * On a dedicated TCP port the visitor sends nothing first: StartProxy comes without a chunk (an empty
     * one would be the end chunk), and a server-first client writes its banner and ends before any
     * visitor byte.
     */
    @Test
    void serverFirstOnADedicatedPortWithNoVisitorBytesBeforeStartProxy() throws Exception {
        TcpPortTest.Range range = TcpPortTest.freeRange(3);
        TestEnv.Relay relay = relay("--tcp-ports", range.spec());
        FakeClient fc = client(relay);
        String firstId = fc.nextProxyRequest(WAIT);
        fc.send("{\"TcpPort\":{\"port\":0}}");
        int port = -1;
        List<String> otherRequests = new ArrayList<>();
        while (port < 0) {
            JsonNode f = fc.next(WAIT);
            if (f.has("TcpPortResult")) {
                assertTrue(f.path("TcpPortResult").path("success").asBoolean(), f::toString);
                port = f.path("TcpPortResult").path("port").asInt();
            } else if (f.has("RequestNewProxyConn")) {
                otherRequests.add(f.path("RequestNewProxyConn").path("proxy_conn_id").asText());
            } else {
                assertTrue(f.has("Pong"), () -> "unexpected frame while waiting for TcpPortResult: " + f);
            }
        }
        assertEquals(List.of(), otherRequests, "pool size 1: one request only");
        DataConn conn = fc.dialReusable(relay.proxyPort(), firstId);
        awaitLines(relay.proc(), NEW_CONN, 1, WAIT);

        for (int i = 1; i <= 2; i++) {
            String banner = "220 banner " + i + "\r\n";
            try (RawHttp.Conn v = RawHttp.wrap(connect(port))) {
                v.timeout(WAIT);
                assertEquals("127.0.0.1:" + v.localPort(), conn.expectStartProxy(WAIT), "visitor " + i);
                conn.writeBytes(Chunks.concat(proxyStarted(), Chunks.chunk(banner), Chunks.end()));
                assertEquals(banner, Bytes.ascii(v.readExactly(banner.length())));
                assertEof(v, "TCP visitor " + i + " after the banner and the end chunk");
                v.send("QUIT " + i + "\r\n");
                conn.expectChunkedData("QUIT " + i + "\r\n", WAIT); // not an end chunk first
                v.socket.shutdownOutput();
                expectEnd(conn, "TCP visitor " + i + "'s FIN");
            }
            awaitReused(relay, i);
        }
        assertEquals(1, countLines(relay.proc(), NEW_CONN), relay.proc()::stderrText);
    }

    private Socket connect(int port) throws IOException {
        Socket s = env.own(new Socket());
        s.connect(new InetSocketAddress("127.0.0.1", port), 5_000);
        s.setTcpNoDelay(true);
        return s;
    }

    // ---- streams that end without an end chunk ----

    enum Cut { INSIDE_CHUNK_DATA, INSIDE_CHUNK_HEADER, AT_A_CHUNK_BOUNDARY }

    @Test
    void dataConnectionClosedMidStreamAbortsTheVisitorAndIsNotReused() throws Exception {
        TestEnv.Relay relay = relay();
        FakeClient fc = client(relay);
        String partial = "HTTP/1.1 200 OK\r\n";
        int n = 0;
        for (Cut cut : Cut.values()) {
            DataConn conn = pooled(relay, fc, ++n);
            try (RawHttp.Conn v = RawHttp.connect(relay.publicPort()).timeout(WAIT)) {
                String path = "/cut-" + cut.name().toLowerCase(Locale.ROOT);
                v.send(request(path, fc.clientId));
                conn.expectStartProxy(WAIT);
                conn.expectChunkedData(forwarded(path), WAIT);
                byte[] stream = switch (cut) {
                    case INSIDE_CHUNK_DATA -> Chunks.concat(proxyStarted(), Chunks.header(100), Bytes.ascii(partial));
                    case INSIDE_CHUNK_HEADER -> Chunks.concat(proxyStarted(), Chunks.chunk(partial), slice(Chunks.header(100), 0, 2));
                    case AT_A_CHUNK_BOUNDARY -> Chunks.concat(proxyStarted(), Chunks.chunk(partial));
                };
                conn.writeBytes(stream);
                pause();
                conn.close(); // no end chunk

                long t0 = System.nanoTime();
                String got = v.assertClosedByPeer(PROMPTLY, cut + ": visitor whose data connection closed mid-stream");
                long ms = (System.nanoTime() - t0) / 1_000_000;
                assertTrue(partial.startsWith(got), cut + ": the visitor got bytes that were never sent: [" + got + "]");
                assertTrue(ms < PROMPTLY.toMillis(), cut + ": closed after " + ms + " ms");
            }
        }
        assertEquals(0, countLines(relay.proc(), REUSED), () -> "an aborted data connection went back to the pool:\n"
                + relay.proc().stderrText());
        // The next visitor is served through a new connection.
        DataConn fresh = pooled(relay, fc, ++n);
        serveOneVisitor(relay, fc, fresh, "/after-the-aborts");
        awaitReused(relay, 1);
    }

    /**
     * A visitor that resets its connection takes its data connection down, without an end chunk. Several
     * rounds on two event loops, so that visitor and data connection are on different loops in some.
     */
    @Test
    void visitorResetTakesTheDataConnectionDown() throws Exception {
        TestEnv.Relay relay = relay("--io-threads", "2");
        FakeClient fc = client(relay);
        int rounds = 6;
        for (int i = 1; i <= rounds; i++) {
            DataConn conn = pooled(relay, fc, i);
            try (RawHttp.Conn v = RawHttp.connect(relay.publicPort()).timeout(WAIT)) {
                v.send(request("/reset-" + i, fc.clientId));
                conn.expectStartProxy(WAIT);
                conn.expectChunkedData(forwarded("/reset-" + i), WAIT);
                conn.writeBytes(Chunks.concat(proxyStarted(), Chunks.chunk("HTTP/1.1 200 OK\r\n")));
                assertEquals("HTTP/1.1 200 OK\r\n", Bytes.ascii(v.readExactly(17)));
                v.socket.setSoLinger(true, 0); // closing sends RST
            }
            assertEndsWithoutEndChunk(conn, "round " + i + " of " + rounds + ": the data connection of a visitor that reset");
        }
        assertEquals(0, countLines(relay.proc(), REUSED), relay.proc()::stderrText);
        DataConn fresh = pooled(relay, fc, rounds + 1);
        serveOneVisitor(relay, fc, fresh, "/after-the-resets");
    }

    /** The data connection ends (EOF or reset) within {@link #PROMPTLY}, with no end chunk and no data. */
    static void assertEndsWithoutEndChunk(DataConn conn, String what) throws IOException {
        long t0 = System.nanoTime();
        long deadline = t0 + PROMPTLY.toNanos();
        while (true) {
            byte[] c;
            try {
                c = conn.readChunk(Duration.ofMillis(Math.max(1, (deadline - System.nanoTime()) / 1_000_000)));
            } catch (EOFException | SocketException e) {
                return; // closed or reset: as it should be
            } catch (SocketTimeoutException e) {
                throw new AssertionError(what + ": still open after " + (System.nanoTime() - t0) / 1_000_000 + " ms");
            }
            if (c.length == 0) fail(what + ": got an end chunk (a reset is not a clean end)");
            fail(what + ": got " + c.length + " bytes the visitor never sent: " + Bytes.ascii(c));
        }
    }

    // ---- protocol errors on the chunk stream ----

    @Test
    void badChunkLengthClosesTheVisitorAndTheDataConnection() throws Exception {
        TestEnv.Relay relay = relay("--io-threads", "2"); // as in visitorResetTakesTheDataConnectionDown
        FakeClient fc = client(relay);
        int[] lengths = {Chunks.MAX + 1, 0x7fffffff, -5, Chunks.MAX + 1, 0x7fffffff, -5};
        int n = 0;
        for (int length : lengths) {
            DataConn conn = pooled(relay, fc, ++n);
            try (RawHttp.Conn v = RawHttp.connect(relay.publicPort()).timeout(WAIT)) {
                String path = "/bad-" + n + "-" + Integer.toUnsignedString(length, 16);
                v.send(request(path, fc.clientId));
                conn.expectStartProxy(WAIT);
                conn.expectChunkedData(forwarded(path), WAIT);
                conn.writeBytes(Chunks.concat(proxyStarted(), Chunks.header(length), Bytes.ascii("HTTP/1.1 200 OK\r\n\r\n")));
                String got = v.assertClosedByPeer(PROMPTLY, "visitor behind a chunk length of " + length);
                assertEquals("", got, "chunk length " + length + ": bytes after a bad chunk header reached the visitor");
                assertClosedByArps(conn, "round " + n + ": data connection that sent chunk length " + length);
            }
        }
        assertTrue(relay.proc().isAlive(), "arps exited");
        assertEquals(0, countLines(relay.proc(), REUSED), relay.proc()::stderrText);
        DataConn fresh = pooled(relay, fc, ++n);
        serveOneVisitor(relay, fc, fresh, "/after-bad-chunks");
        awaitReused(relay, 1);
    }

    /** Bytes after the end chunk, before any StartProxy, belong to no visitor: the connection is not reused. */
    @Test
    void bytesAfterTheEndChunkAreNotTakenForTheNextVisitor() throws Exception {
        TestEnv.Relay relay = relay();
        FakeClient fc = client(relay);
        DataConn conn = pooled(relay, fc, 1);
        String answer = PoolTest.response("then garbage");
        try (RawHttp.Conn v = RawHttp.connect(relay.publicPort()).timeout(WAIT)) {
            v.send(request("/garbage", fc.clientId));
            conn.expectStartProxy(WAIT);
            conn.expectChunkedData(forwarded("/garbage"), WAIT);
            conn.writeBytes(Chunks.concat(proxyStarted(), Chunks.chunk(answer), Chunks.end(), Bytes.ascii("GARBAGE")));
            assertEquals(answer, Bytes.ascii(v.readExactly(answer.length())));
            assertEof(v, "visitor whose answer ended cleanly");
        }
        expectEnd(conn, "visitor closed");
        assertClosedByArps(conn, "a data connection that sent bytes after its end chunk");
        assertEquals(0, countLines(relay.proc(), REUSED), relay.proc()::stderrText);
        DataConn fresh = pooled(relay, fc, 2);
        serveOneVisitor(relay, fc, fresh, "/after-garbage");
    }

    // ---- a visitor waiting for a connection while the only one is busy ----

    /**
     * The pool is empty (its only connection serves visitor 1; the top-up arps asks for is never dialled)
     * when visitor 2 arrives, so visitor 2 waits. When visitor 1's stream ends cleanly the connection goes
     * back to the pool: visitor 2 should get it then, not wait out --pending-timeout for a new one.
     */
    @Test
    void waitingVisitorGetsTheConnectionWhenItComesBack() throws Exception {
        TestEnv.Relay relay = relay("--pending-timeout", "8");
        FakeClient fc = client(relay);
        DataConn conn = pooled(relay, fc, 1);

        try (RawHttp.Conn v1 = RawHttp.connect(relay.publicPort()).timeout(WAIT);
             RawHttp.Conn v2 = RawHttp.connect(relay.publicPort()).timeout(WAIT)) {
            v1.send(request("/busy", fc.clientId));
            conn.expectStartProxy(WAIT);
            conn.expectChunkedData(forwarded("/busy"), WAIT);
            v2.send(request("/waiting", fc.clientId));
            awaitLines(relay.proc(), "GET /waiting", 1, WAIT); // arps has routed visitor 2: it waits now

            String answer = PoolTest.response("one");
            conn.writeBytes(Chunks.concat(proxyStarted(), Chunks.chunk(answer), Chunks.end()));
            assertEquals(answer, Bytes.ascii(v1.readExactly(answer.length())));
            assertEof(v1, "visitor 1");
            v1.socket.shutdownOutput();
            expectEnd(conn, "visitor 1 half-closed"); // both directions over: the connection is free again
            long t0 = System.nanoTime();

            CompletableFuture<String> side = async(() -> {
                conn.expectStartProxy(Duration.ofSeconds(4));
                conn.expectChunkedData(forwarded("/waiting"), WAIT);
                conn.writeBytes(Chunks.concat(proxyStarted(), Chunks.chunk(PoolTest.response("two")), Chunks.end()));
                return "served";
            });
            try {
                await(side, Duration.ofSeconds(5));
            } catch (SocketTimeoutException e) {
                fail("visitor 2 was still waiting " + (System.nanoTime() - t0) / 1_000_000 + " ms after the only data "
                        + "connection had finished visitor 1's stream (arps's reuse log lines: "
                        + countLines(relay.proc(), REUSED) + "); arps asked for new ones instead: "
                        + fc.proxyRequestsWithin(Duration.ofMillis(100)));
            }
            RawHttp.Response r = v2.read();
            assertEquals("two", r.bodyText(), r::toString);
        }
    }

    // ---- bulk through reused connections ----

    private static final int BULK = 20 * 1024 * 1024;

    /**
     * Over one reusable connection of the fake client: a 20 MiB download (sent as full 65,532-byte chunks,
     * to a visitor that starts reading late, so arps has to hold back), then a 20 MiB upload on the next
     * visitor (read by the fake client with a pause, so the visitor's side backs up).
     */
    @Test
    void bulkBothWaysThroughOneReusedConnectionOfTheFakeClient() throws Exception {
        TestEnv.Relay relay = relay();
        FakeClient fc = client(relay);
        DataConn conn = pooled(relay, fc, 1);
        long seed = 7;

        CompletableFuture<Void> down = async(() -> {
            conn.expectStartProxy(WAIT);
            conn.expectChunkedData(forwarded("/download"), WAIT);
            conn.writeBytes(Chunks.concat(proxyStarted(),
                    Chunks.chunk("HTTP/1.1 200 OK\r\nContent-Length: " + BULK + "\r\nConnection: close\r\n\r\n")));
            try (InputStream data = Bytes.stream(seed, BULK)) {
                byte[] buf = new byte[Chunks.MAX];
                for (int n; (n = data.readNBytes(buf, 0, buf.length)) > 0; ) {
                    conn.writeBytes(Chunks.chunk(n == buf.length ? buf : Arrays.copyOf(buf, n)));
                }
            }
            conn.writeEnd();
            expectEnd(conn, "the download visitor half-closed");
            return null;
        });
        try (RawHttp.Conn v = RawHttp.connect(relay.publicPort()).timeout(WAIT)) {
            v.send(request("/download", fc.clientId));
            Thread.sleep(500); // let the chunks back up behind a visitor that does not read yet
            String head = Bytes.ascii(RawHttp.readHead(v.in()));
            assertTrue(head.startsWith("HTTP/1.1 200 OK\r\nContent-Length: " + BULK + "\r\n"), head);
            assertEquals(Bytes.expected(seed, BULK), digest(v.in(), BULK));
            assertEof(v, "the download visitor after " + BULK + " bytes");
            v.socket.shutdownOutput();
            await(down, Duration.ofSeconds(30));
        }
        awaitReused(relay, 1);

        long seed2 = 8;
        String uploadHead = "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: " + BULK + "\r\nConnection: close\r\n\r\n";
        Chunks.Stats stats = new Chunks.Stats();
        CompletableFuture<Bytes.Digest> up = async(() -> {
            conn.expectStartProxy(WAIT);
            // The head, and maybe the start of the body, come before ProxyStarted; the rest after it.
            ByteArrayOutputStream first = new ByteArrayOutputStream();
            int end;
            while (true) {
                first.writeBytes(conn.readChunk(WAIT));
                byte[] b = first.toByteArray();
                if ((end = Bytes.headEnd(b, b.length)) > 0) break;
                assertTrue(b.length < 64 * 1024, "no end of head in " + b.length + " bytes");
            }
            byte[] b = first.toByteArray();
            assertEquals(uploadHead, Bytes.ascii(Arrays.copyOf(b, end)), "the upload head as forwarded");
            conn.writeBytes(proxyStarted());
            Thread.sleep(500); // the visitor's bytes back up meanwhile
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            md.update(b, end, b.length - end);
            long count = b.length - end;
            while (count < BULK) {
                byte[] c = conn.readChunk(WAIT);
                if (c.length == 0) fail("end chunk after " + count + " of " + BULK + " body bytes");
                stats.add(c.length);
                md.update(c);
                count += c.length;
            }
            assertEquals(BULK, count, "body bytes");
            Bytes.Digest d = new Bytes.Digest(HexFormat.of().formatHex(md.digest()), count);
            conn.writeBytes(Chunks.concat(Chunks.chunk(PoolTest.response(d.toString())), Chunks.end()));
            expectEnd(conn, "the upload visitor closed");
            return d;
        });
        try (RawHttp.Conn v = RawHttp.connect(relay.publicPort()).timeout(Duration.ofSeconds(30))) {
            v.send(uploadHead.replace("POST /upload HTTP", "POST /upload?token=" + fc.clientId + " HTTP"));
            CompletableFuture<Void> sent = sendBody(v, seed2, BULK);
            RawHttp.Response r = v.read();
            await(sent, WAIT);
            assertEquals(Bytes.expected(seed2, BULK).toString(), r.bodyText(), r::toString);
            assertEof(v, "the upload visitor after its response");
        }
        assertEquals(Bytes.expected(seed2, BULK), await(up, Duration.ofSeconds(30)), () -> "chunks: " + stats);
        assertTrue(stats.largest <= Chunks.MAX, stats::toString);
        awaitReused(relay, 2);
        assertEquals(1, countLines(relay.proc(), NEW_CONN), relay.proc()::stderrText);
    }

    /** Writes {@code size} bytes of {@code Bytes.stream(seed, size)} to the visitor, off the test's thread. */
    static CompletableFuture<Void> sendBody(RawHttp.Conn v, long seed, long size) {
        return async(() -> {
            try (InputStream body = Bytes.stream(seed, size)) {
                body.transferTo(v.out());
            }
            v.out().flush();
            return null;
        });
    }

    /** SHA-256 of exactly {@code n} bytes of {@code in}; fails on an early end. */
    static Bytes.Digest digest(InputStream in, long n) throws IOException {
        MessageDigest md;
        try {
            md = MessageDigest.getInstance("SHA-256");
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
        byte[] buf = new byte[1 << 16];
        long left = n;
        while (left > 0) {
            int r = in.read(buf, 0, (int) Math.min(buf.length, left));
            if (r < 0) throw new EOFException("stream ended after " + (n - left) + " of " + n + " bytes");
            md.update(buf, 0, r);
            left -= r;
        }
        return new Bytes.Digest(HexFormat.of().formatHex(md.digest()), n);
    }

    /** The same with real arps and arpc in front of the origin: each visitor's connection goes back to the pool. */
    @Test
    void bulkDownloadThenUploadThroughRealArpsAndArpc() throws Exception {
        Origin origin = env.origin();
        TestEnv.Relay relay = relay();
        TestEnv.Client client = env.arpc(relay, origin.port());

        try (RawHttp.Conn v = RawHttp.connect(relay.publicPort()).timeout(Duration.ofSeconds(30))) {
            v.send(request("/download?size=" + BULK, client.clientId()));
            String head = Bytes.ascii(RawHttp.readHead(v.in()));
            assertTrue(head.startsWith("HTTP/1.1 200 "), head);
            assertTrue(head.toLowerCase(Locale.ROOT).contains("content-length: " + BULK + "\r\n"), head);
            assertEquals(Bytes.expected(Origin.SEED, BULK), digest(v.in(), BULK));
            assertEof(v, "the download visitor");
        }
        awaitReused(relay, 1);

        long seed = 9;
        try (RawHttp.Conn v = RawHttp.connect(relay.publicPort()).timeout(Duration.ofSeconds(30))) {
            v.send("POST /upload?token=" + client.clientId() + " HTTP/1.1\r\nHost: t\r\nContent-Length: " + BULK
                    + "\r\nConnection: close\r\n\r\n");
            CompletableFuture<Void> sent = sendBody(v, seed, BULK);
            RawHttp.Response r = v.read();
            await(sent, WAIT);
            assertEquals(200, r.status(), r::toString);
            assertEquals(Bytes.expected(seed, BULK).toString(), r.bodyText());
            assertEof(v, "the upload visitor");
        }
        awaitReused(relay, 2);
        long created = countLines(relay.proc(), NEW_CONN);
        assertTrue(created <= 3, created + " data connections for 2 visitors in turn (one at registration, at most one"
                + " top-up per visitor expected):\n" + relay.proc().stderrText());
    }

    // ---- end to end: many short connections ----

    /** One Connection: close request on a new connection; checks that the response is followed by EOF. */
    static RawHttp.Response getAndClose(int port, String pathAndQuery) throws IOException {
        try (RawHttp.Conn c = RawHttp.connect(port).timeout(WAIT)) {
            c.send("GET " + pathAndQuery + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            RawHttp.Response r = c.read();
            assertEof(c, "after the response to " + pathAndQuery);
            return r;
        }
    }

    static void assertEchoTarget(RawHttp.Response r, String pathAndQuery) {
        assertEquals(200, r.status(), r::toString);
        assertTrue(r.bodyText().startsWith("target " + pathAndQuery + "\n"), () -> "expected the answer to " + pathAndQuery + ", got " + r);
    }

    @Test
    void threeHundredShortConnectionsShareAFewDataConnections() throws Exception {
        Origin origin = env.origin();
        TestEnv.Relay relay = env.arps("--pool-size", "1", "--log-level", "debug");
        TestEnv.Client client = env.arpc(relay, origin.port());
        int n = 300;
        for (int i = 0; i < n; i++) {
            String target = "/echo-target?i=" + i;
            assertEchoTarget(getAndClose(relay.publicPort(), target + "&token=" + client.clientId()), target);
        }
        long created = countLines(relay.proc(), NEW_CONN);
        assertTrue(created < 30, created + " new data connections for " + n + " sequential visitors: not reused");
        assertEquals(n, origin.connections(), "one local connection per visitor");
    }

    @Test
    void keepAliveAndWebSocketVisitorsThenShortOnes() throws Exception {
        Origin origin = env.origin();
        TestEnv.Relay relay = env.arps("--pool-size", "1", "--log-level", "trace");
        TestEnv.Client client = env.arpc(relay, origin.port());
        String token = client.clientId();

        // Keep-alive: three requests on one visitor connection, then the visitor closes.
        try (RawHttp.Conn c = RawHttp.connect(relay.publicPort()).timeout(WAIT)) {
            for (int i = 0; i < 3; i++) {
                c.send("GET /echo-target?k=" + i + (i == 0 ? "&token=" + token : "") + " HTTP/1.1\r\nHost: t\r\n\r\n");
                assertEchoTarget(c.read(), "/echo-target?k=" + i);
            }
        }
        awaitReused(relay, 1); // a keep-alive visitor that closes cleanly gives its data connection back too

        // A WebSocket, closed with the close handshake.
        BlockingQueue<String> received = new LinkedBlockingQueue<>();
        CompletableFuture<Integer> closed = new CompletableFuture<>();
        WebSocket.Listener listener = new WebSocket.Listener() {
            @Override public CompletionStage<?> onText(WebSocket ws, CharSequence data, boolean last) {
                received.add(data.toString());
                ws.request(1);
                return null;
            }

            @Override public CompletionStage<?> onClose(WebSocket ws, int status, String reason) {
                closed.complete(status);
                return null;
            }
        };
        WebSocket ws = env.http().newWebSocketBuilder().connectTimeout(WAIT)
                .buildAsync(URI.create("ws://127.0.0.1:" + relay.publicPort() + "/ws?token=" + token), listener)
                .get(20, TimeUnit.SECONDS);
        try {
            ws.sendText("over a reusable tunnel", true).get(10, TimeUnit.SECONDS);
            assertEquals("over a reusable tunnel", received.poll(10, TimeUnit.SECONDS));
            ws.sendClose(WebSocket.NORMAL_CLOSURE, "done").get(10, TimeUnit.SECONDS);
            assertEquals(WebSocket.NORMAL_CLOSURE, closed.get(10, TimeUnit.SECONDS));
        } finally {
            ws.abort();
        }

        // Then short connections, as many as it takes to go round the pool a few times.
        for (int i = 0; i < 30; i++) {
            String target = "/echo-target?after=" + i;
            assertEchoTarget(getAndClose(relay.publicPort(), target + "&token=" + token), target);
        }
        long created = countLines(relay.proc(), NEW_CONN);
        assertTrue(created < 15, created + " new data connections for 32 visitors in turn:\n" + relay.proc().stderrText());
    }

    // ---- end to end: concurrent visitors, then calm ----

    @Test
    void fiftyConcurrentVisitorsThenThePoolShrinks() throws Exception {
        Origin origin = env.origin();
        TestEnv.Relay relay = env.arps("--pool-size", "1", "--log-level", "debug", "--pending-timeout", "30");
        TestEnv.Client client = env.arpc(relay, origin.port());
        String token = client.clientId();
        int visitors = 50, each = 5, poolMax = 64;

        // The data connections open on arps's side, sampled while the visitors run.
        java.util.concurrent.atomic.AtomicInteger peak = new java.util.concurrent.atomic.AtomicInteger();
        java.util.concurrent.atomic.AtomicBoolean sampling = new java.util.concurrent.atomic.AtomicBoolean(true);
        CompletableFuture<Void> sampler = new CompletableFuture<>();
        Thread.ofPlatform().daemon().name("reuse-test-sampler").start(() -> { // not starved by the visitors' virtual threads
            try {
                while (sampling.get()) {
                    peak.accumulateAndGet(established(relay.proxyPort()), Math::max);
                    Thread.sleep(20);
                }
                sampler.complete(null);
            } catch (Throwable t) {
                sampler.completeExceptionally(t);
            }
        });
        List<CompletableFuture<String>> results = new ArrayList<>(); // null = fine, else what went wrong
        for (int v = 0; v < visitors; v++) {
            int visitor = v;
            results.add(async(() -> {
                for (int j = 0; j < each; j++) {
                    String target = "/echo-target?v=" + visitor + "&j=" + j;
                    try {
                        assertEchoTarget(getAndClose(relay.publicPort(), target + "&token=" + token), target);
                    } catch (Throwable t) {
                        return target + ": " + t;
                    }
                }
                return null;
            }));
        }
        try {
            CompletableFuture.allOf(results.toArray(CompletableFuture[]::new)).get(60, TimeUnit.SECONDS);
        } finally {
            sampling.set(false);
            await(sampler, WAIT);
        }
        List<String> problems = results.stream().map(CompletableFuture::join).filter(p -> p != null).toList();
        assertTrue(problems.isEmpty(), () -> problems.size() + " of " + visitors + " visitors failed, e.g. "
                + problems.subList(0, Math.min(5, problems.size())));
        assertEquals(visitors * each, origin.connections(), "one local connection per visitor connection");
        long created = countLines(relay.proc(), NEW_CONN);
        int openAfterBurst = established(relay.proxyPort());
        peak.accumulateAndGet(openAfterBurst, Math::max);

        Thread.sleep(5000); // calm: the pool's growth halves every 2 s
        long createdAfterCalm = countLines(relay.proc(), NEW_CONN);
        int openAfterCalm = established(relay.proxyPort());
        String numbers = created + " data connections created for " + visitors * each + " visitor connections ("
                + visitors + " at a time); open: at most " + peak.get() + " during the burst, " + openAfterBurst
                + " right after, " + openAfterCalm + " after 5 s calm";
        // A visitor that finds the pool empty waits for a connection of its own and grows the pool by one
        // (up to --pool-max): at any time at most one connection per visitor plus the grown pool.
        assertTrue(peak.get() <= visitors + poolMax + 4, numbers);
        assertTrue(created < visitors * each, "fewer data connections than visitor connections expected: " + numbers);
        assertEquals(created, createdAfterCalm, "new data connections while nothing happened: " + numbers);
        // In 5 s calm the growth has been halved at least once (the first tick may still see the burst's
        // misses) and the surplus closed: at most --pool-size + 63/2 connections remain.
        assertTrue(openAfterCalm <= 1 + (poolMax - 1) / 2 + 1, numbers);

        String target = "/echo-target?final";
        assertEchoTarget(getAndClose(relay.publicPort(), target + "&token=" + token), target);
    }

    /**
     * Established TCP connections whose local port is {@code port} (Linux /proc/net/tcp and tcp6), each
     * counted once by its address pair (the kernel's listing may repeat a line while connections churn).
     */
    static int established(int port) throws IOException {
        java.util.Set<String> seen = new java.util.HashSet<>();
        for (String file : List.of("/proc/net/tcp", "/proc/net/tcp6")) {
            Path p = Path.of(file);
            if (!Files.exists(p)) continue;
            for (String line : Files.readAllLines(p)) {
                String[] f = line.trim().split("\\s+");
                if (f.length < 4 || !f[1].contains(":") || f[0].equals("sl")) continue;
                int local = Integer.parseInt(f[1].substring(f[1].lastIndexOf(':') + 1), 16);
                if (local == port && f[3].equals("01")) seen.add(f[1] + " " + f[2]);
            }
        }
        return seen.size();
    }

    // ---- peers without reuse still get raw bytes; arpc's side of the wire ----

    @Test
    void connectionsWithoutReuseCarryRawBytes() throws Exception {
        TestEnv.Relay relay = env.arps("--pool-size", "1", "--log-level", "debug");

        // Handover without reuse, from a client whose Hello does announce reuse.
        FakeClient handover = client(relay);
        DataConn h = handover.dial(relay.proxyPort(), handover.nextProxyRequest(WAIT), true);
        awaitLines(relay.proc(), NEW_CONN + mask(handover.clientId) + " (handover)", 1, WAIT);
        try (RawHttp.Conn v = RawHttp.connect(relay.publicPort()).timeout(WAIT)) {
            v.send(request("/raw", handover.clientId));
            h.expectStartProxy(WAIT);
            h.writeFrame(Frames.proxyStarted());
            assertEquals(forwarded("/raw"), h.readHead(WAIT), "raw bytes after StartProxy, no chunk header");
            String answer = PoolTest.response("raw handover");
            h.writeRaw(answer);
            h.socket.shutdownOutput();
            assertEquals(answer, Bytes.ascii(v.readExactly(answer.length())));
            assertEof(v, "visitor of a handover connection");
        }
        assertClosedByArps(h, "a handover connection without reuse serves one visitor");

        // The original protocol: no Hello, no handover.
        FakeClient legacy = env.own(FakeClient.register(relay.controlPort(), TestEnv.randomId("orig"), false));
        DataConn l = legacy.dial(relay.proxyPort(), legacy.nextProxyRequest(WAIT), false);
        awaitLines(relay.proc(), NEW_CONN + mask(legacy.clientId) + " (original protocol)", 1, WAIT);
        try (RawHttp.Conn v = RawHttp.connect(relay.publicPort()).timeout(WAIT)) {
            v.send(request("/legacy", legacy.clientId));
            assertEquals(forwarded("/legacy"), l.readHead(WAIT), "raw bytes, no frame, no chunk header");
            String answer = PoolTest.response("raw legacy");
            l.writeRaw(answer);
            l.socket.shutdownOutput();
            assertEquals(answer, Bytes.ascii(v.readExactly(answer.length())));
            assertEof(v, "visitor of an original-protocol connection");
        }
        assertClosedByArps(l, "an original-protocol connection serves one visitor");
    }

    /** arpc behind a relay that does not announce reuse: NewProxyConn without the field, raw bytes after. */
    @Test
    void arpcBehindARelayWithoutReuseDialsWithoutIt() throws Exception {
        Origin origin = env.origin();
        FakeRelay relay = env.own(FakeRelay.start());
        Args args = env.arpcArgs(relay.asRelay(), origin.port());
        String id = args.get("--client-id");
        Proc arpc = env.startArpc(args);
        FakeRelay.ControlConn control = relay.nextControl(TestEnv.START, arpc);
        assertEquals(FakeRelay.register(id), control.nextFrame(WAIT));
        JsonNode hello = FakeRelay.parse(control.nextFrame(WAIT)).path("Hello");
        assertTrue(features(hello).contains("reuse"), () -> "arpc's Hello: " + hello);
        control.send(FakeRelay.REGISTER_OK);
        control.send(FakeRelay.hello(14567)); // heartbeat and handover only
        TestEnv.registered(arpc, 1);

        control.send(FakeRelay.requestNewProxyConn("h1"));
        FakeRelay.DataConn data = relay.nextData(WAIT);
        assertEquals("{\"NewProxyConn\":{\"proxy_conn_id\":\"h1\",\"client_id\":\"" + id + "\",\"handover\":true}}",
                data.readFrame(WAIT), "NewProxyConn byte for byte: handover, no reuse");
        data.writeBytes(Chunks.concat(FakeRelay.encode("{\"StartProxy\":{\"visitor\":\"127.0.0.1:9\"}}"),
                Bytes.ascii("GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")));
        assertEquals("{\"ProxyStarted\":{}}", data.readFrame(WAIT));
        RawHttp.Response r = data.readResponse(WAIT); // raw HTTP right after the frame
        assertEquals(200, r.status(), r::toString);
        assertEquals("hello world", r.bodyText());
    }

    /**
     * arpc behind a relay that announces reuse: NewProxyConn with reuse, byte for byte; two visitors in
     * turn on one connection (the second StartProxy in the same write as the first visitor's end chunk);
     * a bad chunk length closes the connection and arpc stays registered.
     */
    @Test
    void arpcServesVisitorsInTurnOnOneReusableConnection() throws Exception {
        Origin origin = env.origin();
        FakeRelay relay = env.own(FakeRelay.start());
        Args args = env.arpcArgs(relay.asRelay(), origin.port());
        String id = args.get("--client-id");
        Proc arpc = env.startArpc(args);
        FakeRelay.ControlConn control = relay.nextControl(TestEnv.START, arpc);
        assertEquals(FakeRelay.register(id), control.nextFrame(WAIT));
        control.nextFrame(WAIT); // Hello
        control.send(FakeRelay.REGISTER_OK);
        control.send(FakeRelay.hello(14567, "heartbeat", "handover", "tcp-ports", "reuse"));
        TestEnv.registered(arpc, 1);

        control.send(FakeRelay.requestNewProxyConn("r1"));
        FakeRelay.DataConn data = relay.nextData(WAIT);
        assertEquals("{\"NewProxyConn\":{\"proxy_conn_id\":\"r1\",\"client_id\":\"" + id + "\",\"handover\":true,\"reuse\":true}}",
                data.readFrame(WAIT), "NewProxyConn byte for byte");

        // Visitor 1: the head in two chunks, one header split across writes.
        byte[] head1 = Bytes.ascii("GET /echo-target?v=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        byte[] c2 = Chunks.chunk(slice(head1, 10, head1.length));
        data.writeBytes(Chunks.concat(FakeRelay.encode("{\"StartProxy\":{\"visitor\":\"127.0.0.1:1001\"}}"),
                Chunks.chunk(slice(head1, 0, 10)), slice(c2, 0, 3)));
        pause();
        data.writeBytes(slice(c2, 3, c2.length));
        assertEquals("{\"ProxyStarted\":{}}", data.readFrame(WAIT));
        String answer1 = Bytes.ascii(data.readUntilEnd(WAIT)); // the origin closes after Connection: close
        assertTrue(answer1.startsWith("HTTP/1.1 200 "), answer1);
        assertTrue(answer1.contains("\r\n\r\ntarget /echo-target?v=1\n"), answer1);

        // The relay ends visitor 1's direction and starts visitor 2 in the same write.
        byte[] head2 = Bytes.ascii("GET /echo-target?v=2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        data.writeBytes(Chunks.concat(Chunks.end(), FakeRelay.encode("{\"StartProxy\":{\"visitor\":\"127.0.0.1:1002\"}}"),
                Chunks.chunk(head2)));
        assertEquals("{\"ProxyStarted\":{}}", data.readFrame(WAIT), "visitor 2 on the same data connection");
        String answer2 = Bytes.ascii(data.readUntilEnd(WAIT));
        assertTrue(answer2.contains("\r\n\r\ntarget /echo-target?v=2\n"), answer2);
        data.writeBytes(Chunks.end());
        waitFor(() -> origin.connections() == 2, "the origin to count 2 connections, one per visitor");

        // Visitor 3 with a bad chunk length: arpc closes this data connection, and stays registered.
        data.writeBytes(Chunks.concat(FakeRelay.encode("{\"StartProxy\":{\"visitor\":\"127.0.0.1:1003\"}}"),
                Chunks.header(-5), Bytes.ascii("GET / HTTP/1.1\r\n\r\n")));
        data.awaitClosedByPeer(PROMPTLY, "arpc after a chunk length of -5");
        assertEquals(2, origin.requests(), "no request may reach the origin from behind a bad chunk header");
        assertFalse(control.ended(), "arpc dropped its control connection over a bad chunk on a data connection");
        control.send(FakeRelay.requestNewProxyConn("r2"));
        assertEquals("{\"NewProxyConn\":{\"proxy_conn_id\":\"r2\",\"client_id\":\"" + id + "\",\"handover\":true,\"reuse\":true}}",
                relay.nextData(WAIT).readFrame(WAIT));
        assertEquals(1, relay.controlConnections());
    }

    static void waitFor(java.util.function.BooleanSupplier condition, String what) throws InterruptedException {
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (!condition.getAsBoolean()) {
            assertTrue(System.nanoTime() < deadline, "timed out waiting for " + what);
            Thread.sleep(20);
        }
    }
}
