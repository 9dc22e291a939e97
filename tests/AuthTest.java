package arp.tests;

import arp.tests.support.Args;
import arp.tests.support.Auth;
import arp.tests.support.FakeClient;
import arp.tests.support.FakeRelay;
import arp.tests.support.NamedOrigin;
import arp.tests.support.Proc;
import arp.tests.support.RawHttp;
import arp.tests.support.RecordingProxy;
import arp.tests.support.TestEnv;
import arp.tests.support.Visit;
import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermission;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Client authentication (arps {@code --secret}, {@code --secret-file}, {@code ARPS_SECRET},
 * {@code --client-secrets}; arpc {@code --secret}, {@code --secret-file}, {@code ARP_SECRET}): who may
 * register which id, what an eavesdropper's recording is worth, and that data connections of an
 * authenticated client cannot be guessed or forged. Where the wire matters the test speaks it with
 * {@link Auth}, an implementation of the specified HMACs that shares no code with arps.
 */
class AuthTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final Duration WAIT = Duration.ofSeconds(10);
    private static final String SECRET = "correct-horse-battery-staple";

    private TestEnv.Relay relayWithSecret(String... overrides) {
        return env.arps(env.arpsArgs().set("--secret", SECRET).merge(overrides));
    }

    private NamedOrigin origin(String name) { return env.own(NamedOrigin.start(name)); }

    /** GET {@code /p?token=<token>} on the public port; the body of the service that answered, or the arp error. */
    private static String visit(TestEnv.Relay relay, String token) throws Exception {
        return Visit.firstLine(relay.publicPort(), "/p?token=" + token);
    }

    private static int status(TestEnv.Relay relay, String token) throws Exception {
        return Visit.get(relay.publicPort(), "/p?token=" + token).status();
    }

    private static String lower(String s) { return s.toLowerCase(Locale.ROOT); }

    /** arpc exits with {@code code} without claiming to be registered; returns its stderr. */
    private static String assertExit(int code, Proc arpc) {
        int got = arpc.awaitExit(TestEnv.START);
        String err = arpc.stderrText();
        assertEquals(code, got, () -> "arpc's exit code; stderr:\n" + err);
        assertEquals(0, arpc.countEvents("registered"), () -> "arpc printed a registered line: " + arpc.stdoutText());
        return err;
    }

    private static void assertNoSecretIn(Proc p, String secret) {
        assertFalse(p.stderrText().contains(secret), () -> p.name + " logged the secret:\n" + p.stderrText());
        assertFalse(p.stdoutText().contains(secret), () -> p.name + " printed the secret:\n" + p.stdoutText());
    }

    // ---- the right secret, from each source ----

    @Test
    void theRightSecretFromAnOptionTheEnvironmentOrAFileRegistersAndServes() throws Exception {
        NamedOrigin o = origin("O");
        Path files = env.dir("secrets");
        // Written on Windows: CRLF line ends are no part of the secret.
        Path relayFile = Files.writeString(files.resolve("arps-secret"), "from-a-file-number-3\r\nthe second line is not part of it\r\n");
        Path clientFile = Files.writeString(files.resolve("arpc-secret"), "from-a-file-number-3\n");

        TestEnv.Relay byOption = env.arps(env.arpsArgs().set("--secret", "from-an-option-1"));
        TestEnv.Relay byEnv = TestEnv.ready(env.startArps(env.arpsArgs(), Map.of("ARPS_SECRET", "from-the-environment-2")));
        TestEnv.Relay byFile = env.arps(env.arpsArgs().set("--secret-file", relayFile));

        // Each relay uses exactly that secret: the specified handshake with it succeeds, relay proof included.
        for (var e : Map.of(byOption, "from-an-option-1", byEnv, "from-the-environment-2", byFile, "from-a-file-number-3").entrySet()) {
            Auth.Session s = Auth.register(e.getKey().controlPort(), TestEnv.randomId("probe"), e.getValue(), Auth.owner());
            s.client().close();
        }

        Proc a = env.startArpc(env.arpcArgs(byOption, o.port()).set("--secret", "from-an-option-1"));
        Proc b = env.startArpc(env.arpcArgs(byEnv, o.port()), Map.of("ARP_SECRET", "from-the-environment-2"));
        Proc c = env.startArpc(env.arpcArgs(byFile, o.port()).set("--secret-file", clientFile));
        // ...and without it nobody registers there (so the source really was read).
        Proc none = env.startArpc(env.arpcArgs(byEnv, o.port()).set("--secret", "from-an-option-1"));
        for (var e : Map.of(a, byOption, b, byEnv, c, byFile).entrySet()) {
            TestEnv.Client client = TestEnv.registered(e.getKey(), 1);
            assertEquals("origin=O", visit(e.getValue(), client.clientId()), "a visitor through " + e.getKey().name);
        }
        assertExit(3, none);

        for (Proc p : List.of(byOption.proc(), a)) assertNoSecretIn(p, "from-an-option-1");
        for (Proc p : List.of(byEnv.proc(), b)) assertNoSecretIn(p, "from-the-environment-2");
        for (Proc p : List.of(byFile.proc(), c)) assertNoSecretIn(p, "from-a-file-number-3");
    }

    @Test
    void anEmptySecretIsAnInvalidOption() throws Exception {
        // E.g. --secret "$ARPS_SECRET" with the variable unset: a relay keyed with "" is open to anyone who reads the code.
        Proc arps = env.startArps(env.arpsArgs().set("--secret", ""));
        TestEnv.Relay nowhere = new TestEnv.Relay(null, RawHttp.closedPort(), RawHttp.closedPort(), 0);
        Proc arpc = env.startArpc(env.arpcArgs(nowhere, 1).set("--secret", ""));
        List<String> problems = new ArrayList<>();
        for (Proc p : List.of(arps, arpc)) {
            long deadline = System.nanoTime() + TestEnv.START.toNanos();
            while (p.isAlive() && p.countEvents("ready") == 0 && p.stderr().stream().noneMatch(l -> l.contains("reconnecting"))
                    && System.nanoTime() < deadline) {
                TimeUnit.MILLISECONDS.sleep(50);
            }
            String out = p.stdoutText() + "\n" + p.stderrText();
            if (p.isAlive()) {
                problems.add(p.name + " runs with --secret \"\": " + out.lines().limit(3).toList());
                continue;
            }
            int code = p.awaitExit(WAIT);
            if (code != 2 || !out.contains("--secret")) problems.add(p.name + ": exit " + code + " without naming --secret: " + out);
        }
        assertEquals(List.of(), problems);
    }

    @Test
    void secretsShorterThan16CharactersAreRefusedAtStart() throws Exception {
        // The relay proves the secret first: one recorded Challenge is an offline test for guesses at a short one.
        Path dir = env.dir("short-secrets");
        Path shortLine = Files.writeString(dir.resolve("client-secrets"),
                "# tenants\ntenant-a secret-of-tenant-a\n\ntenant-b fifteen-chars-b\n");
        Path shortFile = Files.writeString(dir.resolve("arps-secret"), "fifteen-chars-f\n");
        Proc byOption = env.startArps(env.arpsArgs().set("--secret", "fifteen-chars-o"));
        Proc byEnv = env.startArps(env.arpsArgs(), Map.of("ARPS_SECRET", "fifteen-chars-e"));
        Proc byFile = env.startArps(env.arpsArgs().set("--secret-file", shortFile));
        Proc byLine = env.startArps(env.arpsArgs().set("--client-secrets", shortLine).set("--secret", "a-good-shared-secret"));
        // Exactly 16 characters, shared and per client: accepted.
        Path sixteenLine = Files.writeString(dir.resolve("client-secrets-16"), "tenant-c sixteen-chars-cc\n");
        TestEnv.Relay sixteen = TestEnv.ready(env.startArps(env.arpsArgs().set("--secret", "sixteen-chars-ok")
                .set("--client-secrets", sixteenLine)));

        List<String> problems = new ArrayList<>();
        for (Proc p : List.of(byOption, byEnv, byFile, byLine)) {
            int code = p.awaitExit(TestEnv.START);
            String err = p.stderrText();
            if (code != 2) problems.add(p.name + " " + p.pid() + ": exit " + code + " instead of 2; stderr: " + err);
            if (!err.contains("16")) problems.add(p.name + " " + p.pid() + ": the message does not name the minimum of 16: " + err);
            if (p.countEvents("ready") != 0) problems.add(p.name + " " + p.pid() + ": printed ready: " + p.stdoutText());
        }
        assertEquals(List.of(), problems);
        for (Proc p : List.of(byOption, byEnv, byFile)) {
            assertTrue(lower(p.stderrText()).contains("secret has 15 characters"), () -> "the message names the problem: " + p.stderrText());
        }
        String lineErr = byLine.stderrText();
        assertTrue(lineErr.contains(shortLine + " line 4") && lineErr.contains("tenant-b"), () -> "the message names the file, line and id: " + lineErr);
        for (Proc p : List.of(byOption, byEnv, byFile, byLine, sixteen.proc())) {
            for (String secret : List.of("fifteen-chars-o", "fifteen-chars-e", "fifteen-chars-f", "fifteen-chars-b", "sixteen-chars-ok", "sixteen-chars-cc")) {
                assertNoSecretIn(p, secret);
            }
        }

        Auth.register(sixteen.controlPort(), TestEnv.randomId("sixteen"), "sixteen-chars-ok", Auth.owner()).client().close();
        Auth.register(sixteen.controlPort(), "tenant-c", "sixteen-chars-cc", Auth.owner()).client().close();
    }

    // ---- refusals ----

    @Test
    void aWrongSecretExits3AndArpsLogsTheFailureWithTheSourceAddress() throws Exception {
        TestEnv.Relay relay = relayWithSecret();
        Args args = env.arpcArgs(relay, origin("O").port()).set("--secret", "not-the-secret");
        String err = assertExit(3, env.startArpc(args));
        assertTrue(lower(err).contains("authentication failed"), "arpc's stderr should say authentication failed:\n" + err);
        relay.proc().awaitStderr("arps logging the failed authentication with the address",
                l -> lower(l).contains("authentication failed") && l.contains("127.0.0.1"), WAIT);
        assertFalse(relay.proc().stderrText().contains(args.get("--client-id")), "arps must mask the id:\n" + relay.proc().stderrText());
        assertEquals(404, status(relay, args.get("--client-id")));
    }

    @Test
    void noSecretExits3SayingTheRelayRequiresOne() throws Exception {
        TestEnv.Relay relay = relayWithSecret();
        String err = assertExit(3, env.startArpc(env.arpcArgs(relay, origin("O").port())));
        assertTrue(lower(err).contains("secret"), "arpc's stderr should say that the relay requires a secret:\n" + err);
    }

    @Test
    void registrationsWithoutTheHandshakeAreRefused() throws Exception {
        TestEnv.Relay relay = relayWithSecret("--head-timeout", "3");

        // The original arpc: Register only.
        String legacyId = TestEnv.randomId("legacy");
        try (FakeClient legacy = FakeClient.register(relay.controlPort(), legacyId, false)) {
            JsonNode r = legacy.registerResult().path("RegisterResult");
            assertFalse(r.path("success").asBoolean(true), () -> "the original protocol was accepted: " + legacy.registerResult());
        }
        // Our Hello without a nonce (an older arp): refused, not challenged.
        String oldId = TestEnv.randomId("older");
        try (FakeClient older = env.own(FakeClient.connect(relay.controlPort(), oldId))) {
            older.send(FakeClient.Frames.register(oldId));
            older.send(FakeClient.Frames.hello());
            JsonNode r = older.next(WAIT);
            assertTrue(r.has("RegisterResult"), () -> "expected RegisterResult, got " + r);
            assertFalse(r.path("RegisterResult").path("success").asBoolean(true), r::toString);
        }
        // Challenged, then a Ping instead of Auth; then a wrong proof.
        for (String answer : List.of(FakeClient.Frames.ping(), Auth.authFrame("00".repeat(32)))) {
            String id = TestEnv.randomId("noauth");
            try (FakeClient c = env.own(FakeClient.connect(relay.controlPort(), id))) {
                c.send(FakeClient.Frames.register(id));
                c.send(Auth.hello(Auth.nonce(), Auth.owner()));
                JsonNode ch = c.next(WAIT);
                assertTrue(ch.has("Challenge"), () -> "expected Challenge, got " + ch);
                c.send(answer);
                JsonNode r = c.poll(WAIT);
                assertTrue(r != null, "arps neither answered nor closed after " + answer);
                if (!FakeClient.isEof(r)) {
                    assertFalse(r.path("RegisterResult").path("success").asBoolean(false), () -> answer + " was accepted: " + r);
                }
                assertEquals(404, status(relay, id), "visitors reach " + id);
            }
        }
        // Challenged, then silence: closed by the --head-timeout deadline (3 s), not left open.
        String stalledId = TestEnv.randomId("stalled");
        try (FakeClient c = env.own(FakeClient.connect(relay.controlPort(), stalledId))) {
            c.send(FakeClient.Frames.register(stalledId));
            c.send(Auth.hello(Auth.nonce(), Auth.owner()));
            long t0 = System.nanoTime();
            JsonNode ch = c.next(WAIT);
            assertTrue(ch.has("Challenge"), () -> "expected Challenge, got " + ch);
            JsonNode end = c.poll(Duration.ofSeconds(3 + 7));
            long ms = (System.nanoTime() - t0) / 1_000_000;
            assertTrue(end != null && (FakeClient.isEof(end) || !end.path("RegisterResult").path("success").asBoolean(true)),
                    () -> "a client silent after the Challenge: " + (end == null ? "still open after " + ms + " ms" : end.toString()));
        }
        assertEquals(404, status(relay, legacyId));
        assertEquals(404, status(relay, oldId));
        assertTrue(relay.proc().isAlive());
    }

    @Test
    void failedAuthenticationsFromOneAddressAreAnsweredEverMoreSlowly() throws Exception {
        TestEnv.Relay relay = relayWithSecret();
        List<Long> delays = new ArrayList<>();
        for (int i = 0; i < 4; i++) {
            String id = TestEnv.randomId("guess");
            try (FakeClient c = env.own(FakeClient.connect(relay.controlPort(), id))) {
                c.send(FakeClient.Frames.register(id));
                c.send(Auth.hello(Auth.nonce(), Auth.owner()));
                JsonNode ch = c.next(WAIT);
                assertTrue(ch.has("Challenge"), ch::toString);
                long t0 = System.nanoTime();
                c.send(Auth.authFrame(Auth.clientProof("guess-" + i, id, ch.path("Challenge").path("nonce").asText(), "x")));
                JsonNode r = c.poll(Duration.ofSeconds(20));
                delays.add((System.nanoTime() - t0) / 1_000_000);
                assertTrue(r != null && !r.path("RegisterResult").path("success").asBoolean(false), () -> "guess answered with " + r);
            }
        }
        assertTrue(delays.get(3) >= 1000 && delays.get(3) > delays.get(0), "answer delays of 4 failures in a row (ms): " + delays);
        // The right secret from the same address is not held up.
        long t0 = System.nanoTime();
        Auth.register(relay.controlPort(), TestEnv.randomId("right"), SECRET, Auth.owner()).client().close();
        long ms = (System.nanoTime() - t0) / 1_000_000;
        assertTrue(ms < 1000, "a correct registration after the failures took " + ms + " ms; delays were " + delays);
    }

    @Test
    void arpcDoesNotTrustARelayThatCannotProveTheSecret() throws Exception {
        FakeRelay fake = env.own(FakeRelay.start());
        Args args = env.arpcArgs(fake.asRelay(), origin("O").port()).set("--secret", SECRET);
        Proc arpc = env.startArpc(args);
        FakeRelay.ControlConn cc = fake.nextControl(TestEnv.START, arpc);
        assertEquals(FakeRelay.register(args.get("--client-id")), cc.nextFrame(WAIT), "arpc's first frame");
        JsonNode hello = FakeRelay.parse(cc.nextFrame(WAIT)).path("Hello");
        assertTrue(hello.path("nonce").asText("").matches("[0-9a-f]{64}"), () -> "Hello.nonce is not 32 bytes of lower-case hex: " + hello);
        assertFalse(hello.path("owner").asText("").isEmpty(), () -> "Hello without an owner tag: " + hello);

        // A relay that does not know the secret cannot compute the proof: it sends anything.
        cc.send("{\"Challenge\":{\"nonce\":\"" + Auth.nonce() + "\",\"proof\":\"" + Auth.nonce() + "\"}}");
        try {
            cc.send(FakeRelay.REGISTER_OK);
            cc.send(FakeRelay.hello(17003));
        } catch (IOException e) {
            // arpc already hung up: fine
        }
        int code = arpc.awaitExit(TestEnv.START);
        assertEquals(0, arpc.countEvents("registered"), () -> "arpc registered with a relay that proved nothing: " + arpc.stdoutText()
                + "\narpc sent: " + cc.received());
        assertEquals(3, code, () -> "arpc's exit code; stderr:\n" + arpc.stderrText());
        // It checks the relay's proof before proving anything itself: an impostor gets nothing to test guesses against.
        assertTrue(cc.received().stream().noneMatch(f -> f.contains("\"Auth\"")), () -> "arpc answered an impostor's Challenge: " + cc.received());
    }

    // ---- replay ----

    /** Splits a recorded byte stream into the JSON of its frames (4-byte big-endian length + UTF-8). */
    static List<byte[]> frames(byte[] recorded) {
        List<byte[]> out = new ArrayList<>();
        ByteBuffer b = ByteBuffer.wrap(recorded);
        while (b.remaining() >= 4) {
            int len = b.getInt();
            if (len < 0 || len > b.remaining()) break;
            byte[] f = new byte[len];
            b.get(f);
            out.add(f);
        }
        return out;
    }

    private static String text(byte[] frame) { return new String(frame, StandardCharsets.UTF_8); }

    private static byte[] encode(byte[] json) { return ByteBuffer.allocate(4 + json.length).putInt(json.length).put(json).array(); }

    /**
     * Replays the recorded Register and Hello, then (after arps's Challenge) the recorded Auth, byte for
     * byte. Returns arps's answer to the Auth: a RegisterResult, or the EOF marker.
     */
    private static JsonNode replay(int controlPort, String clientId, List<byte[]> recorded, String recordedSnonce) throws IOException {
        try (FakeClient c = FakeClient.connect(controlPort, clientId)) {
            c.send(text(recorded.get(0))); // Register, then Hello with the recorded nonce, byte for byte
            c.send(text(recorded.get(1)));
            JsonNode ch = c.next(WAIT);
            assertTrue(ch.has("Challenge"), () -> "expected Challenge to the replayed Hello, got " + ch);
            assertNotEquals(recordedSnonce, ch.path("Challenge").path("nonce").asText(), "arps reused its nonce");
            c.send(text(recorded.get(2)));
            JsonNode r = c.poll(WAIT);
            if (r == null) throw new AssertionError("arps neither answered nor closed after the replayed Auth");
            return r;
        }
    }

    @Test
    void aRecordedHandshakeAndDataConnectionReplayedAreRefused() throws Exception {
        TestEnv.Relay relay = relayWithSecret();
        RecordingProxy control = env.own(RecordingProxy.start(relay.controlPort()));
        RecordingProxy data = env.own(RecordingProxy.start(relay.proxyPort()));
        NamedOrigin o = origin("O");
        TestEnv.Client client = env.arpc(env.arpcArgs(relay, o.port()).set("--secret", SECRET)
                .set("--control-port", control.port()).set("--proxy-port", data.port()));
        String id = client.clientId();
        assertEquals("origin=O", visit(relay, id));

        List<byte[]> up = frames(control.recording(0, WAIT).clientToServer());
        List<byte[]> down = frames(control.recording(0, WAIT).serverToClient());
        assertTrue(up.size() >= 3, () -> "recorded client frames: " + up.stream().map(AuthTest::text).toList());
        assertTrue(text(up.get(0)).contains("\"Register\""), text(up.get(0)));
        assertTrue(text(up.get(1)).contains("\"Hello\"") && text(up.get(1)).contains("\"nonce\""), text(up.get(1)));
        assertTrue(text(up.get(2)).contains("\"Auth\""), text(up.get(2)));
        JsonNode recordedChallenge = FakeRelay.parse(text(down.get(0)));
        assertTrue(recordedChallenge.has("Challenge"), recordedChallenge::toString);
        String snonce = recordedChallenge.path("Challenge").path("nonce").asText();

        // While the client is connected...
        JsonNode r1 = replay(relay.controlPort(), id, up, snonce);
        assertFalse(r1.path("RegisterResult").path("success").asBoolean(false), () -> "the replay registered: " + r1);
        relay.proc().awaitStderr("arps logging the failed replay", l -> lower(l).contains("authentication failed") && l.contains("127.0.0.1"), WAIT);
        assertEquals("origin=O", visit(relay, id), "the real client after the replay");
        assertEquals(1, client.proc().countEvents("registered"), "the real client had to register again");

        // A recorded data connection's first frame, replayed: its id was for one use only.
        List<byte[]> dataFrames = frames(data.recording(0, WAIT).clientToServer());
        String npc = text(dataFrames.get(0));
        assertTrue(npc.contains("\"NewProxyConn\"") && npc.contains("\"proof\""), npc);
        try (RawHttp.Conn c = RawHttp.connect(relay.proxyPort())) {
            c.send(encode(dataFrames.get(0)));
            c.assertClosedByPeer(WAIT, "a replayed NewProxyConn");
        }
        relay.proc().awaitStderr("arps logging the replayed data connection", l -> l.contains("refused data connection"), WAIT);

        // ...and after it left (nothing live to take over, only the proof stands in the way).
        client.proc().sigterm();
        client.proc().awaitExit(WAIT);
        relay.proc().awaitStderr("arps logging that the client left", l -> l.contains("unregistered"), WAIT);
        JsonNode r2 = replay(relay.controlPort(), id, up, snonce);
        assertFalse(r2.path("RegisterResult").path("success").asBoolean(false), () -> "the replay registered: " + r2);
        assertEquals(404, status(relay, id), "visitors reach the replayed id");
    }

    // ---- who may take a live id ----

    @Test
    void anotherInstallCannotTakeALiveIdButARestartOfTheSameInstallCan() throws Exception {
        TestEnv.Relay relay = relayWithSecret();
        NamedOrigin a = origin("A"), b = origin("B"), a2 = origin("A2");
        String id = TestEnv.randomId("owned");
        Path installA = env.dir("install-a"), installB = env.dir("install-b");
        Args argsA = env.arpcArgs(relay, a.port()).set("--client-id", id).set("--config-dir", installA).set("--secret", SECRET);
        TestEnv.Client first = env.arpc(argsA);

        Path config = installA.resolve("config");
        List<String> lines = Files.readAllLines(config);
        assertTrue(lines.stream().anyMatch(l -> l.matches("install-key=[0-9a-fA-F]{32,}")), "config: " + lines);
        Set<PosixFilePermission> perms = Files.getPosixFilePermissions(config);
        assertTrue(perms.stream().allMatch(p -> p.name().startsWith("OWNER_")), "the config holds a key; permissions " + perms);

        // Another install with the shared secret: "in use", a retryable failure, so --max-retries 0 → exit 1.
        Proc other = env.startArpc(env.arpcArgs(relay, b.port()).set("--client-id", id).set("--config-dir", installB)
                .set("--secret", SECRET).set("--max-retries", 0));
        String err = assertExit(1, other);
        assertTrue(lower(err).contains("in use"), "arpc's stderr should say the id is in use:\n" + err);
        assertEquals("origin=A", visit(relay, id), "the first client after the attempt");
        assertEquals(1, first.proc().countEvents("registered"), "the first client had to register again");

        // The same install, while the old process still holds its connection (frozen): newest wins.
        first.proc().signal("STOP");
        TestEnv.Client restarted = env.arpc(env.arpcArgs(relay, a2.port()).set("--client-id", id).set("--config-dir", installA)
                .set("--secret", SECRET));
        assertEquals("origin=A2", visit(relay, id), "after the same install registered again");
        first.proc().sigkill();
        first.proc().awaitExit(WAIT);
        assertEquals("origin=A2", visit(relay, id), "after the replaced process died");

        // Killed outright and started again from the same config dir: accepted.
        restarted.proc().sigkill();
        restarted.proc().awaitExit(WAIT);
        env.arpc(env.arpcArgs(relay, a.port()).set("--client-id", id).set("--config-dir", installA).set("--secret", SECRET));
        assertEquals("origin=A", visit(relay, id), "after a restart following SIGKILL");
        assertEquals(0, b.seen().size(), () -> "the other install's service saw: " + b.seen());
    }

    @Test
    void aRefusalForAnIdInUseDoesNotRevealWhereItsHolderIs() throws Exception {
        // On an open relay anyone may try any id, and ids are the visitors' tokens: the answer must not tell
        // a visitor the address of the machine behind the tunnel.
        TestEnv.Relay relay = env.arps();
        String id = env.arpc(relay, origin("O").port()).clientId();
        try (FakeClient c = env.own(FakeClient.connect(relay.controlPort(), id))) {
            c.send(FakeClient.Frames.register(id));
            c.send(Auth.hello(Auth.nonce(), Auth.owner()));
            JsonNode r = c.next(WAIT);
            assertFalse(r.path("RegisterResult").path("success").asBoolean(true), () -> "another install took a live id: " + r);
            String error = r.path("RegisterResult").path("error").asText("");
            assertTrue(lower(error).contains("in use"), r::toString);
            assertFalse(error.contains("127.0.0.1"), () -> "the refusal reveals the holder's address: " + error);
        }
        assertEquals("origin=O", visit(relay, id));
    }

    @Test
    void perClientSecretsKeepTenantsApart() throws Exception {
        Path secrets = Files.writeString(env.dir("tenants").resolve("client-secrets"),
                "# tenants of this relay\n\ntenant-a secret-of-tenant-a\n   \ntenant-b secret-of-tenant-b\n");
        TestEnv.Relay relay = env.arps(env.arpsArgs().set("--client-secrets", secrets).set("--secret", "shared-secret-one"));
        TestEnv.Relay listedOnly = env.arps(env.arpsArgs().set("--client-secrets", secrets));
        NamedOrigin a = origin("A"), b = origin("B"), c = origin("C"), a2 = origin("A2");

        TestEnv.Client tenantA = env.arpc(env.arpcArgs(relay, a.port()).set("--client-id", "tenant-a").set("--secret", "secret-of-tenant-a"));
        // B's own secret, the shared secret: neither opens A's id. An unlisted id on a relay without a shared secret: refused.
        Proc bAsA = env.startArpc(env.arpcArgs(relay, b.port()).set("--client-id", "tenant-a").set("--secret", "secret-of-tenant-b"));
        Proc sharedAsA = env.startArpc(env.arpcArgs(relay, b.port()).set("--client-id", "tenant-a").set("--secret", "shared-secret-one"));
        Proc unlisted = env.startArpc(env.arpcArgs(listedOnly, c.port()).set("--secret", "shared-secret-one"));
        Proc tenantB = env.startArpc(env.arpcArgs(relay, b.port()).set("--client-id", "tenant-b").set("--secret", "secret-of-tenant-b"));
        Proc anyone = env.startArpc(env.arpcArgs(relay, c.port()).set("--secret", "shared-secret-one"));

        assertExit(3, bAsA);
        assertExit(3, sharedAsA);
        assertExit(3, unlisted);
        TestEnv.registered(tenantB, 1);
        String anyoneId = TestEnv.registered(anyone, 1).clientId();
        assertEquals("origin=A", visit(relay, "tenant-a"));
        assertEquals("origin=B", visit(relay, "tenant-b"));
        assertEquals("origin=C", visit(relay, anyoneId));
        assertEquals(1, tenantA.proc().countEvents("registered"), "tenant A had to register again");
        relay.proc().awaitStderr("arps logging the failed attempts on tenant A", l -> lower(l).contains("authentication failed"), WAIT);

        // With its own secret, tenant A's id may be taken over from another install (newest wins).
        tenantA.proc().signal("STOP");
        env.arpc(env.arpcArgs(relay, a2.port()).set("--client-id", "tenant-a").set("--secret", "secret-of-tenant-a"));
        assertEquals("origin=A2", visit(relay, "tenant-a"));
        tenantA.proc().sigkill();
    }

    // ---- data connections ----

    @Test
    void guessedOrUnprovenDataConnectionsAreRefusedAndTheProvenOneServes() throws Exception {
        TestEnv.Relay relay = relayWithSecret("--pool-size", "1");
        String id = TestEnv.randomId("authd");
        Auth.Session s = Auth.register(relay.controlPort(), id, SECRET, Auth.owner());
        env.own(s.client());
        assertTrue(s.registerResult().path("RegisterResult").path("success").asBoolean(false));
        String requested = s.client().nextProxyRequest(WAIT);
        assertTrue(requested.length() >= 22, "a requested id of 128 random bits is at least 22 characters: " + requested);

        byte[] wrongKey = Auth.sessionKey("not-the-secret", s.snonce(), s.cnonce());
        Map<String, String> attacks = new java.util.LinkedHashMap<>();
        attacks.put("a guessed id", Auth.newProxyConn(Auth.nonce().substring(0, 32), id, Auth.connProof(s.sessionKey(), "guess")));
        attacks.put("the requested id without a proof", Auth.newProxyConn(requested, id, null));
        attacks.put("the requested id with a wrong proof", Auth.newProxyConn(requested, id, Auth.connProof(wrongKey, requested)));
        attacks.put("the requested id in the original protocol's form", FakeClient.Frames.newProxyConn(requested, id, false));
        // arps logs refusals at most once a second (an attacker must not flood the log): one attempt a second.
        int n = 0;
        for (var a : attacks.entrySet()) {
            if (n > 0) TimeUnit.MILLISECONDS.sleep(1100);
            try (RawHttp.Conn c = RawHttp.connect(relay.proxyPort())) {
                c.send(FakeClient.Frames.encode(a.getValue()));
                c.assertClosedByPeer(WAIT, a.getKey());
            }
            awaitLines(relay.proc(), "refused data connection", "127.0.0.1", ++n);
        }

        // The client's own connection, for the same id with the right proof, is taken and serves a visitor.
        FakeClient.DataConn d = env.own(s.dial(relay.proxyPort(), requested));
        CompletableFuture<RawHttp.Response> visitor = CompletableFuture.supplyAsync(() -> {
            try {
                return RawHttp.exchange(relay.publicPort(), "GET /through?token=" + id + " HTTP/1.1\r\nHost: t\r\n\r\n");
            } catch (IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        });
        String head;
        try {
            head = d.serveReusable("HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nproven", WAIT);
        } catch (IOException | AssertionError e) {
            throw new AssertionError("the data connection with the right proof for " + requested
                    + " did not get the visitor (did the refused attempts with that id use it up?)\narps: " + relay.proc().stderrText(), e);
        }
        assertTrue(head.startsWith("GET /through HTTP/1.1\r\n"), head);
        RawHttp.Response r = visitor.get(20, TimeUnit.SECONDS);
        assertEquals(200, r.status(), r::toString);
        assertEquals("proven", r.bodyText());
    }

    /** Waits until {@code p}'s stderr has {@code n} lines containing both strings. */
    static void awaitLines(Proc p, String a, String b, int n) {
        long deadline = System.nanoTime() + WAIT.toNanos();
        long count = 0;
        while (System.nanoTime() < deadline) {
            count = p.stderr().stream().filter(l -> l.contains(a) && l.contains(b)).count();
            if (count >= n) return;
            try {
                TimeUnit.MILLISECONDS.sleep(50);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        throw new AssertionError(p.name + ": " + count + " of " + n + " lines with \"" + a + "\" and \"" + b + "\":\n" + p.stderrText());
    }
}
