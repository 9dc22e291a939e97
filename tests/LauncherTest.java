package arp.tests;

import arp.tests.support.Deps;
import arp.tests.support.Proc;
import arp.tests.support.RawHttp;
import arp.tests.support.TestEnv;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.condition.DisabledIfEnvironmentVariable;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Both programs started the way a user starts them, {@code ./jbang Arps.java ...} from the repository
 * root, in front of {@code python3 -m http.server}, fetched with curl. First runs compile the scripts, so
 * the timeouts are long. Skip with ARP_SKIP_LAUNCHER_TEST=1 (CI runs it).
 */
@Tag("launcher")
class LauncherTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final Duration COMPILE_AND_START = Duration.ofSeconds(240);

    @Test
    @Timeout(600)
    @DisabledIfEnvironmentVariable(named = "ARP_SKIP_LAUNCHER_TEST", matches = "1")
    void jbangLauncherServesAPythonHttpServerThroughTheTunnel() throws Exception {
        Path repo = Deps.repoRoot();
        Path launcher = repo.resolve("jbang");
        assertTrue(Files.isExecutable(launcher), "no executable launcher at " + launcher);

        Path site = env.dir("site");
        Files.writeString(site.resolve("arp-launcher-probe.txt"), "probe\n");
        int webPort = RawHttp.closedPort();
        env.start("python-http", List.of("python3", "-m", "http.server", String.valueOf(webPort), "--bind", "127.0.0.1",
                "--directory", site.toString()), site);
        long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
        while (!RawHttp.isListening(webPort)) {
            assertTrue(System.nanoTime() < deadline, "python3 -m http.server did not start");
            Thread.sleep(100);
        }

        Proc arps = env.start("arps(jbang)", List.of("./jbang", "Arps.java", "--bind", "127.0.0.1", "--control-port", "0",
                "--proxy-port", "0", "--public-port", "0", "--json"), repo);
        var ready = arps.awaitEvent("ready", 1, COMPILE_AND_START);
        int control = ready.path("control_port").asInt(), proxy = ready.path("proxy_port").asInt(), pub = ready.path("public_port").asInt();

        String id = TestEnv.randomId("launch");
        Proc arpc = env.start("arpc(jbang)", List.of("./jbang", "Arpc.java", "--client-id", id, "--server-addr", "127.0.0.1",
                "--control-port", String.valueOf(control), "--proxy-port", String.valueOf(proxy),
                "--local-port", String.valueOf(webPort), "--config-dir", env.dir("launcher-config").toString(), "--json"), repo);
        var registered = arpc.awaitEvent("registered", 1, COMPILE_AND_START);
        assertEquals(id, registered.path("client_id").asText());

        Proc curl = env.start("curl", List.of("curl", "-sS", "--max-time", "30", "http://127.0.0.1:" + pub + "/?token=" + id), null);
        assertEquals(0, curl.awaitExit(Duration.ofSeconds(40)), curl::stderrText);
        assertTrue(curl.stdoutText().contains("arp-launcher-probe.txt"), () -> "directory listing:\n" + curl.stdoutText());
    }
}
