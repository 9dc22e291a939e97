package arp.tests;

import arp.tests.support.Args;
import arp.tests.support.Origin;
import arp.tests.support.TestEnv;
import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.time.Duration;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** arpc survives a relay restart: it reconnects and registers again on its own. */
class ReconnectTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    @Test
    void arpcReRegistersAfterArpsRestartsOnTheSamePorts() throws Exception {
        Origin origin = env.origin();
        TestEnv.Relay first = env.arps();
        TestEnv.Client client = env.arpc(first, origin.port());
        assertEquals("hello world", env.get("http://127.0.0.1:" + first.publicPort() + "/hello?token=" + client.clientId()).body());

        first.proc().close(); // SIGTERM, then wait

        Args same = env.arpsArgs().set("--control-port", first.controlPort()).set("--proxy-port", first.proxyPort())
                .set("--public-port", first.publicPort());
        TestEnv.Relay second = null;
        for (int attempt = 1; second == null; attempt++) {
            try {
                second = env.arps(same);
            } catch (AssertionError e) { // a port not yet free: try again a few times
                if (attempt == 5) throw e;
                Thread.sleep(1000);
            }
        }
        assertEquals(first.publicPort(), second.publicPort());

        JsonNode again = client.proc().awaitEvent("registered", 2, Duration.ofSeconds(60));
        assertEquals(client.clientId(), again.path("client_id").asText());
        assertEquals("hello world", env.get("http://127.0.0.1:" + second.publicPort() + "/hello?token=" + client.clientId()).body());
    }
}
