package arp.tests;

import arp.tests.support.Args;
import arp.tests.support.FakeRelay;
import arp.tests.support.Origin;
import arp.tests.support.Proc;
import arp.tests.support.RawHttp;
import arp.tests.support.TestEnv;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.time.Duration;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * arpc behind the original Rust arps, played by the test as the reference describes it: it reads
 * Register, answers RegisterResult, reads and ignores every further control byte (never answering a
 * Ping), asks for data connections with RequestNewProxyConn, and writes the visitor's re-serialised
 * request as raw bytes right after the data connection's NewProxyConn.
 */
class LegacyRelayTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final Duration WAIT = Duration.ofSeconds(10);
    /** As the original re-serialises a request: lower-case header names. */
    private static final String REQUEST = "GET /hello HTTP/1.1\r\nhost: x\r\n\r\n";

    record Started(FakeRelay relay, Proc arpc, String id, FakeRelay.ControlConn control) {}

    /** arpc in front of {@code localPort}, registered with a fake original relay. */
    private Started registerBehindTheOriginal(int localPort, String... arpcOverrides) throws Exception {
        FakeRelay relay = env.own(FakeRelay.start());
        Args args = env.arpcArgs(relay.asRelay(), localPort).merge(arpcOverrides);
        String id = args.get("--client-id");
        Proc arpc = env.startArpc(args);
        FakeRelay.ControlConn control = relay.nextControl(TestEnv.START, arpc);
        assertEquals(FakeRelay.register(id), control.nextFrame(WAIT), "arpc's first frame, byte for byte");
        control.send(FakeRelay.REGISTER_OK);
        return new Started(relay, arpc, id, control);
    }

    @Test
    void arpcServesAVisitorBehindTheOriginalRelayAndDoesNotReconnectForSilence() throws Exception {
        Origin origin = env.origin();
        Started s = registerBehindTheOriginal(origin.port(), "--heartbeat", "1");

        TestEnv.Client client = TestEnv.registered(s.arpc(), 1);
        assertEquals("legacy", client.registered().path("server").asText(), client.registered()::toString);

        s.control().send(FakeRelay.requestNewProxyConn("0"));
        FakeRelay.DataConn data = s.relay().nextData(WAIT);
        assertEquals(FakeRelay.legacyNewProxyConn("0", s.id()), data.readFrame(WAIT), "NewProxyConn, byte for byte");
        data.writeRaw(REQUEST);
        RawHttp.Response r = data.readResponse(WAIT);
        assertEquals(200, r.status(), r::toString);
        assertEquals("hello world", r.bodyText());

        // The original never answers pings: arpc must not take its silence for a dead relay. With
        // --heartbeat 1, a relay that said Hello would be given up 3 s after its last frame (then 0.25-0.5 s
        // of back-off): watch for 4 s after the last frame.
        long left = 4000 - (System.nanoTime() - s.control().lastSent()) / 1_000_000;
        s.relay().assertNoControlConnection(Duration.ofMillis(left), "the original relay never answers pings");
        assertFalse(s.control().ended(), "arpc closed its control connection to the silent original relay");
        assertEquals(1, s.relay().controlConnections());
        assertFalse(s.arpc().stderrText().contains("reconnecting"), s.arpc()::stderrText);

        // What arpc wrote after Register, all read and ignored by the original: its Hello, then pings.
        assertEquals(List.of(), s.control().problems(), "malformed frames on the control connection");
        List<String> after = s.control().received();
        after = after.subList(1, after.size()); // [0] is Register
        assertFalse(after.isEmpty(), "arpc sent nothing after Register");
        assertTrue(FakeRelay.parse(after.getFirst()).has("Hello"), () -> "expected Hello after Register: " + s.control().received());
        List<String> rest = after.subList(1, after.size());
        assertTrue(rest.size() >= 2, "with --heartbeat 1, expected at least 2 pings in 4 s: " + after);
        for (String f : rest) assertEquals("{\"Ping\":{}}", f, () -> "frames after Hello: " + rest);
    }

    @Test
    void localServiceDownGivesTheOriginalRelayA502WithoutTheAddress() throws Exception {
        int closed = RawHttp.closedPort();
        Started s = registerBehindTheOriginal(closed);
        // The original asks for its pool at once: here before arpc's wait for a Hello has ended.
        Thread.sleep(200);
        s.control().send(FakeRelay.requestNewProxyConn("0"));
        TestEnv.Client client = TestEnv.registered(s.arpc(), 1);
        assertEquals("legacy", client.registered().path("server").asText(), client.registered()::toString);

        FakeRelay.DataConn data = s.relay().nextData(WAIT);
        assertEquals(FakeRelay.legacyNewProxyConn("0", s.id()), data.readFrame(WAIT), "NewProxyConn, byte for byte");
        data.writeRaw(REQUEST);
        RawHttp.Response r = data.readResponse(WAIT);
        assertEquals(502, r.status(), r::toString);
        assertTrue(r.head().startsWith("HTTP/1.1 502"), r::toString);
        assertFalse(r.bodyText().contains(String.valueOf(closed)), r::toString);
        assertFalse(r.bodyText().contains("127.0.0.1"), r::toString);
        data.awaitClosedByPeer(WAIT, "after the 502");
    }
}
