package arp.tests;

import arp.tests.support.Args;
import arp.tests.support.FakeRelay;
import arp.tests.support.Origin;
import arp.tests.support.Proc;
import arp.tests.support.RawHttp;
import arp.tests.support.TestEnv;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Starting, failing to start, identity, and stopping. */
class LifecycleTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    @Test
    void portAlreadyInUseFailsFastWithOneLineNamingThePort() throws Exception {
        try (ServerSocket busy = new ServerSocket(0, 1, InetAddress.getByName("127.0.0.1"))) {
            int port = busy.getLocalPort();
            for (String option : List.of("--control-port", "--proxy-port", "--public-port")) {
                long t0 = System.nanoTime();
                Proc arps = env.startArps(env.arpsArgs().set(option, port));
                int code = arps.awaitExit(Duration.ofSeconds(20));
                long ms = (System.nanoTime() - t0) / 1_000_000;
                String output = arps.stdoutText() + "\n" + arps.stderrText();
                assertNotEquals(0, code, option + ": exit code");
                assertTrue(ms < 10_000, option + ": took " + ms + " ms to give up");
                assertTrue(output.contains(String.valueOf(port)), option + ": the error should name port " + port + ":\n" + output);
                assertFalse(output.contains("\tat "), option + ": a one-line error, not a stack trace:\n" + output);
                assertEquals(0, arps.countEvents("ready"), option + ": must not claim to be ready");
            }
        }
    }

    @Test
    void arpcWithoutLocalPortFailsNamingTheOption() throws Exception {
        // The control port points at nothing: if arpc did not validate first, it would hang retrying.
        TestEnv.Relay nowhere = new TestEnv.Relay(null, RawHttp.closedPort(), RawHttp.closedPort(), 0);
        Proc arpc = env.startArpc(env.arpcArgs(nowhere, 1).remove("--local-port"));
        int code = arpc.awaitExit(Duration.ofSeconds(20));
        assertNotEquals(0, code);
        String output = arpc.stdoutText() + "\n" + arpc.stderrText();
        assertTrue(output.contains("--local-port"), "the error should name --local-port:\n" + output);
    }

    @Test
    void arpcGivesUpAfterMaxRetries() throws Exception {
        TestEnv.Relay nowhere = new TestEnv.Relay(null, RawHttp.closedPort(), RawHttp.closedPort(), 0);
        Proc arpc = env.startArpc(env.arpcArgs(nowhere, 1).set("--max-retries", 2));
        assertEquals(1, arpc.awaitExit(Duration.ofSeconds(60)), "exit code after --max-retries 2 against a closed port");
    }

    @Test
    void arpcExitsWith3WhenTheRelayRefusesTheRegistration() throws Exception {
        FakeRelay relay = env.own(FakeRelay.start());
        Args args = env.arpcArgs(relay.asRelay(), RawHttp.closedPort());
        Proc arpc = env.startArpc(args);
        FakeRelay.ControlConn control = relay.nextControl(TestEnv.START, arpc);
        assertEquals(FakeRelay.register(args.get("--client-id")), control.nextFrame(Duration.ofSeconds(10)));

        long t0 = System.nanoTime();
        control.send(FakeRelay.registerResult(false, "nope"));
        int code = arpc.awaitExit(Duration.ofSeconds(5));
        long ms = (System.nanoTime() - t0) / 1_000_000;
        assertEquals(3, code, "exit code after a refused registration");
        assertTrue(ms < 5000, "took " + ms + " ms to exit");
        assertTrue(arpc.stderrText().contains("nope"), "stderr should give the relay's reason:\n" + arpc.stderrText());
        assertEquals(0, arpc.countEvents("registered"), "must not claim to be registered");
        assertEquals(1, relay.controlConnections(), "a refused registration must not be retried");
    }

    /**
     * --max-retries counts failed attempts in a row: a connection that registered and was later lost is
     * not a failed attempt, so arpc behind a relay that keeps dropping it after each successful
     * registration must keep coming back.
     */
    @Test
    void maxRetriesCountsOnlyFailuresInARow() throws Exception {
        FakeRelay relay = env.own(FakeRelay.start());
        Args args = env.arpcArgs(relay.asRelay(), RawHttp.closedPort()).set("--max-retries", 1);
        Proc arpc = env.startArpc(args);
        for (int n = 1; n <= 3; n++) {
            FakeRelay.ControlConn control = relay.nextControl(n == 1 ? TestEnv.START : Duration.ofSeconds(10), arpc);
            assertEquals(FakeRelay.register(args.get("--client-id")), control.nextFrame(Duration.ofSeconds(10)));
            control.send(FakeRelay.REGISTER_OK);
            control.send(FakeRelay.hello(17003));
            TestEnv.registered(arpc, n);
            control.close(); // the relay drops it; each reconnect succeeds, so no failures in a row
        }
        assertTrue(arpc.isAlive(), "arpc exited after 3 successful registrations with --max-retries 1");
    }

    @Test
    void defaultClientIdIsStable32HexAndWrittenToTheConfig() throws Exception {
        TestEnv.Relay relay = env.arps();
        Path configDir = env.dir("id-config");
        Args args = env.arpcArgs(relay, env.origin().port()).remove("--client-id").set("--config-dir", configDir);

        TestEnv.Client first = env.arpc(args);
        String id = first.clientId();
        assertTrue(id.matches("[0-9A-F]{32}"), "client_id " + id);
        List<String> config = Files.readAllLines(configDir.resolve("config"));
        assertTrue(config.contains("client-id=" + id), "config file: " + config);
        first.proc().close();

        TestEnv.Client second = env.arpc(args);
        assertEquals(id, second.clientId(), "a second run must reuse the id");
    }

    @Test
    void sigtermStopsBothProgramsWithinASecondOrSo() throws Exception {
        Origin origin = env.origin();
        TestEnv.Tunnel t = env.tunnel(origin.port());
        // An idle keep-alive visitor connection is open through the tunnel while they stop.
        try (RawHttp.Conn idle = RawHttp.connect(t.publicPort())) {
            idle.send("GET /hello?token=" + t.token() + " HTTP/1.1\r\nHost: t\r\n\r\n");
            assertEquals("hello world", idle.readFinal().bodyText());

            for (Proc p : List.of(t.client().proc(), t.relay().proc())) {
                long t0 = System.nanoTime();
                p.sigterm();
                p.awaitExit(Duration.ofSeconds(10));
                long ms = (System.nanoTime() - t0) / 1_000_000;
                assertTrue(ms < 2000, p.name + " took " + ms + " ms to exit after SIGTERM");
            }
        }
    }

    @Test
    void arpsNeverLogsTheFullClientId() throws Exception {
        Origin origin = env.origin();
        TestEnv.Relay relay = env.arps("--log-level", "debug");
        String id = "Zq7xKpSecretClient0123456789";
        env.arpc(relay, origin.port(), "--client-id", id);

        assertEquals("hello world", env.get("http://127.0.0.1:" + relay.publicPort() + "/hello?token=" + id).body());
        RawHttp.exchange(relay.publicPort(), "GET / HTTP/1.1\r\nHost: t\r\nX-Arp-Token: " + id + "\r\n\r\n");
        String wrong = "Wq9yUnknownToken987654321";
        RawHttp.exchange(relay.publicPort(), "GET /?token=" + wrong + " HTTP/1.1\r\nHost: t\r\n\r\n");
        Thread.sleep(300); // let the last log lines arrive

        String logs = relay.proc().stderrText();
        assertFalse(logs.isBlank(), "expected some logging from arps at --log-level debug");
        // Only a prefix of at most 4 characters may appear, so no 5-character prefix of either token.
        assertFalse(logs.contains(id.substring(0, 5)), "arps's stderr contains the client id (or more than 4 chars of it)");
        assertFalse(logs.contains(wrong.substring(0, 5)), "arps's stderr contains an unknown token (or more than 4 chars of it)");
        assertFalse(relay.proc().stdoutText().contains(id), "arps's stdout contains the client id");
    }
}
