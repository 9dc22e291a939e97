package arp.tests;

import arp.tests.support.FakeClient;
import arp.tests.support.FakeClient.DataConn;
import arp.tests.support.FakeClient.Frames;
import arp.tests.support.RawHttp;
import arp.tests.support.TestEnv;
import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.io.IOException;
import java.time.Duration;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BooleanSupplier;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The pool of pre-dialled data connections, driven by a fake arpc that speaks the wire protocol itself,
 * so each test decides when connections are dialled, answered or dropped.
 */
class PoolTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final Duration WAIT = Duration.ofSeconds(10);
    /** arps has no acknowledgement for a pooled connection: give it a moment to read NewProxyConn. */
    private static final Duration SETTLE = Duration.ofMillis(500);

    static String response(String body) {
        return "HTTP/1.1 200 OK\r\nContent-Length: " + body.length() + "\r\nConnection: close\r\n\r\n" + body;
    }

    @Test
    void pooledConnectionServesTheVisitorAndIsReplaced() throws Exception {
        TestEnv.Relay relay = env.arps("--pool-size", "1");
        FakeClient fc = env.own(FakeClient.register(relay.controlPort(), TestEnv.randomId("fast"), true));

        assertTrue(fc.registerResult().path("RegisterResult").path("success").asBoolean(), fc.registerResult()::toString);
        JsonNode hello = fc.serverHello().path("Hello");
        assertEquals(1, hello.path("version").asInt(), fc.serverHello()::toString);
        assertEquals(relay.publicPort(), hello.path("public_port").asInt(), fc.serverHello()::toString);

        String id = fc.nextProxyRequest(WAIT);
        DataConn pooled = fc.dial(relay.proxyPort(), id, true);
        fc.assertNoProxyRequest(Duration.ofMillis(1500), "pool size 1 is full: exactly one RequestNewProxyConn expected");

        try (RawHttp.Conn visitor = RawHttp.connect(relay.publicPort())) {
            visitor.send("GET /fast?token=" + fc.clientId + " HTTP/1.1\r\nHost: t\r\n\r\n");

            // Served on the connection already in the pool: StartProxy arrives there, no new dial needed.
            JsonNode start = pooled.readFrame(WAIT);
            assertTrue(start.has("StartProxy"), start::toString);
            assertEquals("127.0.0.1:" + visitor.localPort(), start.path("StartProxy").path("visitor").asText());
            pooled.writeFrame(Frames.proxyStarted());
            assertEquals("GET /fast HTTP/1.1\r\nHost: t\r\n\r\n", pooled.readHead(WAIT));
            pooled.writeRaw(response("pong"));

            RawHttp.Response r = visitor.readFinal();
            assertEquals(200, r.status(), r::toString);
            assertEquals("pong", r.bodyText());
        }
        String replacement = fc.nextProxyRequest(WAIT);
        assertNotEquals(id, replacement, "the replacement needs a fresh proxy_conn_id");
    }

    @Test
    void pooledConnectionClosedByTheClientIsNotUsedForAVisitor() throws Exception {
        TestEnv.Relay relay = env.arps("--pool-size", "1");
        FakeClient fc = env.own(FakeClient.register(relay.controlPort(), TestEnv.randomId("dead"), true));

        DataConn pooled = fc.dial(relay.proxyPort(), fc.nextProxyRequest(WAIT), true);
        Thread.sleep(SETTLE.toMillis());
        pooled.close();
        Thread.sleep(SETTLE.toMillis());

        // From here on, every connection arps asks for is dialled and serves a good response.
        fc.answerRequests(relay.proxyPort(), true, conn -> conn.serve(response("fresh"), Duration.ofSeconds(60)));
        RawHttp.Response r = RawHttp.exchange(relay.publicPort(), "GET /x?token=" + fc.clientId + " HTTP/1.1\r\nHost: t\r\n\r\n");
        assertEquals(200, r.status(), r::toString);
        assertEquals("fresh", r.bodyText());
        assertEquals(0, fc.handlerErrors().size(), () -> fc.handlerErrors().toString());
    }

    @Test
    void visitorIsRetriedWhenThePooledConnectionDiesBeforeAnswering() throws Exception {
        TestEnv.Relay relay = env.arps("--pool-size", "1");
        FakeClient fc = env.own(FakeClient.register(relay.controlPort(), TestEnv.randomId("retry"), true));

        AtomicInteger dialled = new AtomicInteger();
        AtomicBoolean firstGotStart = new AtomicBoolean();
        fc.answerRequests(relay.proxyPort(), true, conn -> {
            if (dialled.incrementAndGet() == 1) {
                // The first pooled connection takes the visitor, then dies without ProxyStarted.
                JsonNode f = conn.readFrame(Duration.ofSeconds(60));
                firstGotStart.set(f.has("StartProxy"));
                conn.close();
            } else {
                conn.serve(response("second"), Duration.ofSeconds(60));
            }
        });
        waitFor(() -> dialled.get() >= 1, "the first pooled connection to be dialled");
        Thread.sleep(SETTLE.toMillis());

        RawHttp.Response r = RawHttp.exchange(relay.publicPort(), "GET /x?token=" + fc.clientId + " HTTP/1.1\r\nHost: t\r\n\r\n");
        assertTrue(firstGotStart.get(), "the visitor should first have been handed to the pooled connection");
        assertEquals(200, r.status(), r::toString);
        assertEquals("second", r.bodyText());
    }

    @Test
    void dataConnectionWithAnUnrequestedIdIsClosed() throws Exception {
        TestEnv.Relay relay = env.arps("--pool-size", "1");
        FakeClient fc = env.own(FakeClient.register(relay.controlPort(), TestEnv.randomId("unreq"), true));
        String requested = fc.nextProxyRequest(WAIT);

        DataConn bogus = fc.dial(relay.proxyPort(), requested + "-never-requested", true);
        try (RawHttp.Conn c = asConn(bogus)) {
            c.assertClosedByPeer(WAIT, "NewProxyConn with an id arps never requested");
        }
    }

    @Test
    void legacyClientGetsRawVisitorBytesOnItsPooledConnection() throws Exception {
        TestEnv.Relay relay = env.arps("--pool-size", "1");
        FakeClient fc = env.own(FakeClient.register(relay.controlPort(), TestEnv.randomId("legacy"), false));
        assertTrue(fc.registerResult().path("RegisterResult").path("success").asBoolean(), fc.registerResult()::toString);
        assertNull(fc.serverHello());

        // No Hello to a client that sent none: the next frame is the pool request.
        String id = fc.nextProxyRequest(WAIT);
        DataConn pooled = fc.dial(relay.proxyPort(), id, false);
        Thread.sleep(SETTLE.toMillis());

        try (RawHttp.Conn visitor = RawHttp.connect(relay.publicPort())) {
            visitor.send("GET /legacy?x=1&token=" + fc.clientId + " HTTP/1.1\r\nHost: t\r\nAccept: */*\r\n\r\n");
            // Straight HTTP bytes, no StartProxy frame in front.
            assertEquals("GET /legacy?x=1 HTTP/1.1\r\nHost: t\r\nAccept: */*\r\n\r\n", pooled.readHead(WAIT));
            pooled.writeRaw(response("legacy ok"));
            RawHttp.Response r = visitor.readFinal();
            assertEquals("legacy ok", r.bodyText(), r::toString);
        }
    }

    /**
     * A legacy client never writes after Register (no heartbeat). The original arps dropped it after 90 s
     * idle; arp must keep it however long it is quiet, even with a 1 s --client-timeout (which applies only
     * to clients that announced heartbeats).
     */
    @Test
    void quietLegacyClientIsNotDropped() throws Exception {
        TestEnv.Relay relay = env.arps("--pool-size", "1", "--client-timeout", "1");
        FakeClient fc = env.own(FakeClient.register(relay.controlPort(), TestEnv.randomId("quiet"), false));
        DataConn pooled = fc.dial(relay.proxyPort(), fc.nextProxyRequest(WAIT), false);

        long until = System.nanoTime() + Duration.ofSeconds(4).toNanos();
        long left;
        while ((left = (until - System.nanoTime()) / 1_000_000) > 0) {
            JsonNode f = fc.poll(Duration.ofMillis(left));
            assertFalse(f != null && FakeClient.isEof(f), "arps closed the quiet legacy client's control connection");
        }
        assertFalse(relay.proc().stderrText().contains("unregistered"), relay.proc()::stderrText);
        try (RawHttp.Conn visitor = RawHttp.connect(relay.publicPort())) {
            visitor.send("GET /late?token=" + fc.clientId + " HTTP/1.1\r\nHost: t\r\n\r\n");
            assertEquals("GET /late HTTP/1.1\r\nHost: t\r\n\r\n", pooled.readHead(WAIT));
            pooled.writeRaw(response("still here"));
            assertEquals("still here", visitor.readFinal().bodyText());
        }
    }

    static RawHttp.Conn asConn(DataConn d) throws IOException {
        return RawHttp.wrap(d.socket);
    }

    static void waitFor(BooleanSupplier condition, String what) throws InterruptedException {
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (!condition.getAsBoolean()) {
            assertTrue(System.nanoTime() < deadline, "timed out waiting for " + what);
            Thread.sleep(20);
        }
    }
}
