package arp.tests;

import arp.tests.support.Bytes;
import arp.tests.support.FakeClient.Frames;
import arp.tests.support.Origin;
import arp.tests.support.RawHttp;
import arp.tests.support.TestEnv;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Bad input on the control and proxy ports closes that one connection; the arps process survives and
 * an established tunnel keeps serving (the original allocated any declared length and aborted).
 */
class MalformedFramesTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    static Map<String, byte[]> payloads() {
        Map<String, byte[]> p = new LinkedHashMap<>();
        p.put("an HTTP request (length prefix ~1.2 GB)", Bytes.ascii("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        p.put("random bytes", Bytes.bytes(1234, 64));
        p.put("a 100 MB length prefix", Frames.lengthPrefixed(100_000_000, Bytes.ascii("{\"Register\":")));
        p.put("a 64 KiB + 1 length prefix", Frames.lengthPrefixed(64 * 1024 + 1, Bytes.ascii("{\"Register\":{")));
        p.put("a negative length prefix", Frames.lengthPrefixed(-5, Bytes.ascii("{}")));
        p.put("an empty frame", Frames.encode(""));
        p.put("invalid JSON", Frames.encode("{\"Register\":{\"client_id\":"));
        p.put("invalid UTF-8", Frames.lengthPrefixed(4, new byte[]{(byte) 0xff, (byte) 0xfe, (byte) 0xfd, (byte) 0xfc}));
        p.put("a JSON array", Frames.encode("[1,2,3]"));
        p.put("an unknown command", Frames.encode("{\"Bogus\":{\"x\":1}}"));
        return p;
    }

    @Test
    void badFramesCloseOnlyThatConnection() throws Exception {
        Origin origin = env.origin();
        TestEnv.Tunnel t = env.tunnel(origin.port());
        assertEquals("hello world", env.get(t.url("/hello")).body());

        List<String> stillOpen = new ArrayList<>();
        for (var port : Map.of("control", t.relay().controlPort(), "proxy", t.relay().proxyPort()).entrySet()) {
            for (var p : payloads().entrySet()) {
                String what = p.getKey() + " on the " + port.getKey() + " port";
                try (RawHttp.Conn c = RawHttp.connect(port.getValue())) {
                    c.send(p.getValue());
                    c.assertClosedByPeer(Duration.ofSeconds(5), what);
                } catch (AssertionError e) {
                    stillOpen.add(what);
                } catch (java.io.IOException e) {
                    // closed while we were still sending: that is a close too
                }
                assertTrue(t.relay().proc().isAlive(), "arps died after " + what);
            }
        }
        assertEquals(List.of(), stillOpen, "connections arps left open");

        // The existing tunnel was not disturbed: same registration, still serving.
        assertEquals("hello world", env.get(t.url("/hello")).body());
        assertEquals(1, t.client().proc().countEvents("registered"), "arpc had to re-register");
    }
}
