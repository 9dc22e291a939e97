package arp.tests;

import arp.tests.support.Args;
import arp.tests.support.FakeClient;
import arp.tests.support.FakeClient.DataConn;
import arp.tests.support.FakeClient.Frames;
import arp.tests.support.FakeRelay;
import arp.tests.support.Proc;
import arp.tests.support.RawHttp;
import arp.tests.support.TestEnv;
import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Heartbeats in both directions: arps drops a client that announced heartbeats (Hello) and then fell
 * silent ({@code --client-timeout}), keeps one that pings; arpc gives up on a relay that announced
 * heartbeats and stopped answering (three {@code --heartbeat} intervals) and registers again.
 */
class HeartbeatTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final Duration WAIT = Duration.ofSeconds(10);

    static long millisSince(long t0) { return (System.nanoTime() - t0) / 1_000_000; }

    @Test
    void silentModernClientIsDropped() throws Exception {
        TestEnv.Relay relay = env.arps("--client-timeout", "1");
        FakeClient fc = env.own(FakeClient.register(relay.controlPort(), TestEnv.randomId("silent"), true));
        long t0 = System.nanoTime();

        // It announced heartbeats, then sends nothing: arps must close the control connection.
        List<JsonNode> frames = new ArrayList<>();
        JsonNode f;
        while (true) {
            long left = 3000 - millisSince(t0);
            f = left > 0 ? fc.poll(Duration.ofMillis(left)) : null;
            if (f == null || FakeClient.isEof(f)) break;
            frames.add(f); // pool requests are fine; they are not answered
        }
        long ms = millisSince(t0);
        assertTrue(f != null && FakeClient.isEof(f),
                "arps kept a silent heartbeat client for 3 s with --client-timeout 1; frames it sent: " + frames);
        assertTrue(ms >= 500, "dropped after " + ms + " ms, well before --client-timeout 1 expired");
        for (JsonNode x : frames) assertTrue(x.has("RequestNewProxyConn"), () -> "unexpected frame " + x);

        RawHttp.Response r = ErrorResponsesTest.get(relay.publicPort(), "/x?token=" + fc.clientId);
        ErrorResponsesTest.assertArpError(404, r);
        relay.proc().awaitStderr("a log line saying the client was dropped for silence",
                l -> l.contains("unregistered") && l.contains("silent"), WAIT);
    }

    @Test
    void pingingModernClientIsKept() throws Exception {
        TestEnv.Relay relay = env.arps("--client-timeout", "1", "--pool-size", "1");
        FakeClient fc = env.own(FakeClient.register(relay.controlPort(), TestEnv.randomId("pinger"), true));
        DataConn pooled = fc.dial(relay.proxyPort(), fc.nextProxyRequest(WAIT), true);

        // 4 s, four times the client timeout, with a Ping every 300 ms.
        long t0 = System.nanoTime();
        int pings = 0, pongs = 0;
        while (millisSince(t0) < 4000) {
            fc.send(Frames.ping());
            pings++;
            long tick = System.nanoTime() + Duration.ofMillis(300).toNanos();
            long left;
            while ((left = (tick - System.nanoTime()) / 1_000_000) > 0) {
                JsonNode f = fc.poll(Duration.ofMillis(left));
                if (f == null) break;
                assertFalse(FakeClient.isEof(f), "arps closed the control connection of a client that pings every 300 ms");
                if (f.has("Pong")) pongs++;
                else assertTrue(f.has("RequestNewProxyConn"), () -> "unexpected frame " + f);
            }
        }
        assertTrue(pongs >= pings - 1, pings + " pings but only " + pongs + " pongs");
        assertFalse(relay.proc().stderrText().contains("unregistered"), relay.proc()::stderrText);

        try (RawHttp.Conn visitor = RawHttp.connect(relay.publicPort())) {
            visitor.send("GET /alive?token=" + fc.clientId + " HTTP/1.1\r\nHost: t\r\n\r\n");
            pooled.serve(PoolTest.response("still registered"), WAIT);
            visitor.timeout(WAIT);
            RawHttp.Response r = visitor.readFinal();
            assertEquals(200, r.status(), r::toString);
            assertEquals("still registered", r.bodyText());
        }
    }

    @Test
    void arpcReconnectsWhenARelayThatSaidHelloFallsSilent() throws Exception {
        FakeRelay relay = env.own(FakeRelay.start());
        Args args = env.arpcArgs(relay.asRelay(), RawHttp.closedPort()).set("--heartbeat", 1);
        String id = args.get("--client-id");
        Proc arpc = env.startArpc(args);

        FakeRelay.ControlConn first = relay.nextControl(TestEnv.START, arpc);
        assertEquals(FakeRelay.register(id), first.nextFrame(WAIT), "arpc's first frame, byte for byte");
        first.send(FakeRelay.REGISTER_OK);
        first.send(FakeRelay.hello(14567));
        TestEnv.Client client = TestEnv.registered(arpc, 1);
        assertEquals("arp", client.registered().path("server").asText(), client.registered()::toString);
        assertEquals("http://127.0.0.1:14567/?token=" + id, client.publicUrl());

        // arpc announces itself, then pings every second; the relay never answers anything.
        JsonNode hello = FakeRelay.parse(first.nextFrame(WAIT)).path("Hello");
        assertEquals(1, hello.path("version").asInt(), hello::toString);
        List<String> features = new ArrayList<>();
        hello.path("features").forEach(n -> features.add(n.asText()));
        assertTrue(features.contains("heartbeat") && features.contains("handover"), hello::toString);
        assertEquals("{\"Ping\":{}}", first.nextFrame(Duration.ofSeconds(3)));

        // Three silent intervals after the relay's last frame (its Hello), plus 0.25-0.5 s of back-off.
        FakeRelay.ControlConn second = relay.nextControl(Duration.ofSeconds(6), arpc);
        long ms = millisSince(first.lastSent());
        assertTrue(ms >= 2500 && ms < 6000, "reconnected " + ms + " ms after the relay's last frame, with --heartbeat 1");
        assertEquals(FakeRelay.register(id), second.nextFrame(WAIT), "the new connection registers again");
        first.awaitEnd(WAIT, "arpc should close the connection it gave up on");
        assertEquals(List.of(), first.problems());
        arpc.awaitStderr("a log line saying the relay stopped answering", l -> l.contains("stopped answering"), WAIT);
    }
}
