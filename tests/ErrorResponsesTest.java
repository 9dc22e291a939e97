package arp.tests;

import arp.tests.support.FakeClient;
import arp.tests.support.RawHttp;
import arp.tests.support.TestEnv;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.net.SocketTimeoutException;
import java.time.Duration;
import java.util.Locale;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The short {@code text/plain} error responses arps gives visitors instead of silence or a hang. */
class ErrorResponsesTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final Duration WAIT = Duration.ofSeconds(10);

    /** Status, {@code Connection: close}, {@code text/plain}, body starting {@code arp: }. */
    static void assertArpError(int status, RawHttp.Response r) {
        assertEquals(status, r.status(), r::toString);
        assertTrue(r.head().startsWith("HTTP/1.1 "), r::toString);
        String connection = r.header("Connection");
        assertNotNull(connection, () -> "no Connection header: " + r);
        assertEquals("close", connection.toLowerCase(Locale.ROOT), r::toString);
        String type = r.header("Content-Type");
        assertTrue(type != null && type.toLowerCase(Locale.ROOT).startsWith("text/plain"), r::toString);
        assertTrue(r.bodyText().startsWith("arp: "), r::toString);
    }

    static RawHttp.Response get(int port, String target) throws Exception {
        return RawHttp.exchange(port, "GET " + target + " HTTP/1.1\r\nHost: t\r\n\r\n");
    }

    @Test
    void localServiceDownGives502WithoutRevealingTheAddress() throws Exception {
        int closed = RawHttp.closedPort();
        TestEnv.Tunnel t = env.tunnel(closed);

        RawHttp.Response r = get(t.publicPort(), "/?token=" + t.token());
        assertArpError(502, r);
        assertFalse(r.bodyText().contains(String.valueOf(closed)), r::toString);
        assertFalse(r.bodyText().contains("127.0.0.1"), r::toString);
    }

    @Test
    void unknownTokenGives404WithAUniformBodyAndMissingTokenGives400() throws Exception {
        TestEnv.Relay relay = env.arps();
        String a = "nobody-AAAA1111", b = "someone-else-ZZZZ9";

        // Before any client registered, and after: the same answer (no hint whether anyone is online).
        RawHttp.Response none = get(relay.publicPort(), "/x?token=" + a);
        env.arpc(relay, env.origin().port());
        RawHttp.Response ra = get(relay.publicPort(), "/x?token=" + a);
        RawHttp.Response rb = RawHttp.exchange(relay.publicPort(), "GET /y HTTP/1.1\r\nHost: t\r\nX-Arp-Token: " + b + "\r\n\r\n");

        assertArpError(404, none);
        assertArpError(404, ra);
        assertArpError(404, rb);
        assertEquals(ra.bodyText(), rb.bodyText(), "unknown tokens must get identical bodies");
        assertEquals(none.bodyText(), ra.bodyText(), "same body with and without registered clients");
        assertFalse(ra.bodyText().contains(a), ra::toString);
        assertFalse(rb.bodyText().contains(b), rb::toString);

        assertArpError(400, get(relay.publicPort(), "/hello"));
        assertArpError(400, get(relay.publicPort(), "/hello?a=1&b=2"));
    }

    @Test
    void noDataConnectionWithinPendingTimeoutGives504() throws Exception {
        TestEnv.Relay relay = env.arps("--pool-size", "1", "--pending-timeout", "1");
        // Registered, but never dials anything.
        FakeClient fc = env.own(FakeClient.register(relay.controlPort(), TestEnv.randomId("mute"), true));

        long t0 = System.nanoTime();
        RawHttp.Response r = get(relay.publicPort(), "/x?token=" + fc.clientId);
        long ms = (System.nanoTime() - t0) / 1_000_000;
        assertArpError(504, r);
        assertTrue(ms >= 800 && ms < 8000, "504 after " + ms + " ms with --pending-timeout 1");
    }

    @Test
    void visitorBeyondMaxPendingGets503AtOnce() throws Exception {
        TestEnv.Relay relay = env.arps("--pool-size", "1", "--max-pending", "1", "--pending-timeout", "30");
        // Registered, but never dials anything.
        FakeClient fc = env.own(FakeClient.register(relay.controlPort(), TestEnv.randomId("full"), true));
        fc.nextProxyRequest(WAIT); // the pool's request

        try (RawHttp.Conn first = RawHttp.connect(relay.publicPort())) {
            first.send("GET /1?token=" + fc.clientId + " HTTP/1.1\r\nHost: t\r\n\r\n");
            fc.nextProxyRequest(WAIT); // asked for on behalf of the first visitor: it is now waiting

            long t0 = System.nanoTime();
            RawHttp.Response r = get(relay.publicPort(), "/2?token=" + fc.clientId);
            long ms = (System.nanoTime() - t0) / 1_000_000;
            assertArpError(503, r);
            assertTrue(ms < 3000, "503 after " + ms + " ms: it should not wait for a data connection");

            // The first visitor is still waiting, neither answered nor closed.
            first.timeout(Duration.ofMillis(300));
            assertThrows(SocketTimeoutException.class, () -> first.in().read(), "the first visitor got an answer");
        }
    }

    @Test
    void tunnelClientLeavingWhileTheVisitorWaitsGives502() throws Exception {
        TestEnv.Relay relay = env.arps("--pool-size", "1", "--pending-timeout", "30");
        FakeClient fc = env.own(FakeClient.register(relay.controlPort(), TestEnv.randomId("leaver"), true));

        try (RawHttp.Conn visitor = RawHttp.connect(relay.publicPort())) {
            visitor.send("GET /x?token=" + fc.clientId + " HTTP/1.1\r\nHost: t\r\n\r\n");
            Thread.sleep(500); // the visitor is now waiting for a data connection that never comes
            fc.closeControl();
            visitor.timeout(WAIT);
            assertArpError(502, visitor.read());
        }
    }

    @Test
    void oversizedHeadGives431() throws Exception {
        TestEnv.Relay relay = env.arps();
        try (RawHttp.Conn c = RawHttp.connect(relay.publicPort())) {
            // 34 KiB of header lines and no blank line: arps can tell it is too large without the end.
            StringBuilder head = new StringBuilder("GET /?token=whoever HTTP/1.1\r\nHost: t\r\n");
            for (int i = 0; i < 34; i++) head.append("X-Fill-").append(i).append(": ").append("f".repeat(1000)).append("\r\n");
            c.send(head.toString());
            c.timeout(WAIT);
            assertArpError(431, c.read());
        }
    }

    @Test
    void incompleteHeadGives408OrIsClosedAfterHeadTimeout() throws Exception {
        TestEnv.Relay relay = env.arps("--head-timeout", "1");
        try (RawHttp.Conn c = RawHttp.connect(relay.publicPort())) {
            long t0 = System.nanoTime();
            c.send("GET /?token=whoever HTTP/1.1\r\nHost: t\r\n"); // never finished
            String got = c.assertClosedByPeer(Duration.ofSeconds(8), "visitor with an incomplete head");
            long ms = (System.nanoTime() - t0) / 1_000_000;
            assertTrue(ms >= 800, "closed after " + ms + " ms, before --head-timeout 1 expired");
            if (!got.isEmpty()) {
                assertTrue(got.startsWith("HTTP/1.1 408 "), () -> "expected 408 or a silent close, got " + got);
                assertTrue(got.contains("arp: "), got);
            }
        }
    }
}
