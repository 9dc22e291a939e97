package arp.tests;

import arp.tests.support.Curl;
import arp.tests.support.NamedOrigin;
import arp.tests.support.Proc;
import arp.tests.support.RawHttp;
import arp.tests.support.TestEnv;
import arp.tests.support.Tls;
import arp.tests.support.Visit;
import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Locale;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * TLS on the control and proxy ports (arps {@code --tls-self-signed} or {@code --tls-cert/--tls-key};
 * arpc {@code --tls-pin}, {@code --tls-ca}, {@code --tls}) and HTTPS on the public port
 * ({@code --tls-public}). Certificates are made with the real openssl; what a port presents is looked at
 * with a plain JSSE socket, and visitors are curl.
 */
class TlsTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final Duration WAIT = Duration.ofSeconds(10);

    private NamedOrigin origin(String name) { return env.own(NamedOrigin.start(name)); }

    /** The {@code tls_fingerprint} of the ready line, checked against the specified form. */
    private static String readyFingerprint(TestEnv.Relay relay) {
        JsonNode ready = relay.proc().awaitEvent("ready", 1, TestEnv.START);
        String fp = ready.path("tls_fingerprint").asText("");
        assertTrue(fp.matches("sha256:[0-9a-f]{64}"), () -> "ready line without a sha256:<64 hex> tls_fingerprint: " + ready);
        return fp;
    }

    private TestEnv.Relay selfSignedRelay(Path stateDir, String... overrides) {
        return env.arps(env.arpsArgs().flag("--tls-self-signed").set("--state-dir", stateDir).merge(overrides));
    }

    private static String visit(TestEnv.Relay relay, String token) throws Exception {
        return Visit.firstLine(relay.publicPort(), "/v?token=" + token);
    }

    private static String lower(String s) { return s.toLowerCase(Locale.ROOT); }

    private static void assertNotRegistered(Proc arpc, int expectedExit) {
        int code = arpc.awaitExit(TestEnv.START);
        String err = arpc.stderrText();
        assertEquals(expectedExit, code, () -> "arpc's exit code; stderr:\n" + err);
        assertEquals(0, arpc.countEvents("registered"), () -> "arpc printed a registered line: " + arpc.stdoutText());
    }

    @Test
    void aSelfSignedRelayIsPinnedByItsFingerprintWhichSurvivesARestart() throws Exception {
        Path state = env.dir("arps-state");
        TestEnv.Relay relay = selfSignedRelay(state);
        String fp = readyFingerprint(relay);
        // What the ports really present, looked at independently.
        assertEquals(fp, Tls.fingerprint(Tls.peerCertificate(relay.controlPort())), "the control port's certificate");
        assertEquals(fp, Tls.fingerprint(Tls.peerCertificate(relay.proxyPort())), "the proxy port's certificate");
        String hex = fp.substring("sha256:".length());
        relay.proc().awaitStderr("arps logging the fingerprint", l -> lower(l.replace(":", "")).contains(hex), WAIT);
        // Without --tls-public the public port stays plain HTTP.
        assertEquals(404, RawHttp.exchange(relay.publicPort(), "GET /?token=nobody-1 HTTP/1.1\r\nHost: t\r\n\r\n").status());

        NamedOrigin o = origin("O");
        TestEnv.Client pinned = env.arpc(env.arpcArgs(relay, o.port()).set("--tls-pin", fp));
        assertEquals("origin=O", visit(relay, pinned.clientId()));
        // Colons and case do not matter in the pin.
        StringBuilder colons = new StringBuilder("sha256:");
        for (int i = 0; i < hex.length(); i += 2) colons.append(i == 0 ? "" : ":").append(hex, i, i + 2);
        TestEnv.Client pinned2 = env.arpc(env.arpcArgs(relay, o.port()).set("--tls-pin", colons.toString().toUpperCase(Locale.ROOT).replace("SHA256:", "sha256:")));
        assertEquals("origin=O", visit(relay, pinned2.clientId()));

        // A restart with the same state dir presents the same certificate.
        try (Stream<Path> files = Files.list(state)) {
            assertFalse(files.toList().isEmpty(), "arps kept nothing in its --state-dir");
        }
        relay.proc().close();
        TestEnv.Relay again = selfSignedRelay(state);
        assertEquals(fp, readyFingerprint(again), "the fingerprint after a restart with the same --state-dir");
        assertEquals(fp, Tls.fingerprint(Tls.peerCertificate(again.controlPort())));
        TestEnv.Client afterRestart = env.arpc(env.arpcArgs(again, o.port()).set("--tls-pin", fp));
        assertEquals("origin=O", visit(again, afterRestart.clientId()));
        // Another state dir: another certificate.
        TestEnv.Relay other = selfSignedRelay(env.dir("other-state"));
        assertNotEquals(fp, readyFingerprint(other), "two state dirs, one certificate");
    }

    @Test
    void aWrongPinAnUntrustedCertificateOrAPlainClientDoNotRegister() throws Exception {
        TestEnv.Relay relay = selfSignedRelay(env.dir("arps-state"), "--head-timeout", "2");
        String fp = readyFingerprint(relay);
        int port = origin("O").port();
        // Connections that never start the TLS handshake are closed by the deadline, as on plain ports.
        RawHttp.Conn silentControl = env.own(RawHttp.connect(relay.controlPort()));
        RawHttp.Conn silentProxy = env.own(RawHttp.connect(relay.proxyPort()));

        Proc wrongPin = env.startArpc(env.arpcArgs(relay, port).set("--tls-pin", "sha256:" + "0".repeat(64)));
        Proc byCaStore = env.startArpc(env.arpcArgs(relay, port).flag("--tls"));
        Proc plain = env.startArpc(env.arpcArgs(relay, port).set("--max-retries", 0));

        assertNotRegistered(wrongPin, 3);
        String err = lower(wrongPin.stderrText());
        assertTrue(err.contains("fingerprint") || err.contains("pin"), "arpc should say the fingerprint does not match its pin:\n" + err);
        // The JVM's CA store does not trust a self-signed certificate: refused for good.
        assertNotRegistered(byCaStore, 3);
        // No TLS against TLS ports: the relay does not understand it; with --max-retries 0 arpc gives up.
        int code = plain.awaitExit(TestEnv.START);
        assertNotEquals(0, code, () -> "plain arpc against TLS ports; stderr:\n" + plain.stderrText());
        assertEquals(0, plain.countEvents("registered"), plain::stdoutText);

        silentControl.assertClosedByPeer(Duration.ofSeconds(2 + 8), "a silent connection on the TLS control port");
        silentProxy.assertClosedByPeer(Duration.ofSeconds(2 + 8), "a silent connection on the TLS proxy port");

        // The relay is unharmed.
        assertTrue(relay.proc().isAlive());
        TestEnv.Client ok = env.arpc(env.arpcArgs(relay, port).set("--tls-pin", fp));
        assertEquals("origin=O", visit(relay, ok.clientId()));
    }

    @Test
    void dataConnectionsAreVerifiedLikeTheControlConnection() throws Exception {
        // The control port is the real relay; the proxy port arpc is given belongs to another TLS server
        // (an impostor on the data path): arpc must not open data connections to it.
        TestEnv.Relay relay = selfSignedRelay(env.dir("real-state"), "--pending-timeout", "2");
        TestEnv.Relay impostor = selfSignedRelay(env.dir("impostor-state"));
        String fp = readyFingerprint(relay);
        assertNotEquals(fp, readyFingerprint(impostor));
        NamedOrigin o = origin("O");
        TestEnv.Client c = env.arpc(env.arpcArgs(relay, o.port()).set("--tls-pin", fp).set("--proxy-port", impostor.proxyPort()));

        String got = visit(relay, c.clientId());
        assertNotEquals("origin=O", got, "a visitor was served over a data connection to the impostor");
        assertEquals(0, o.seen().size(), () -> "the service saw: " + o.seen());
        // Had arpc finished a TLS handshake with the impostor, its NewProxyConn would be refused there, and logged.
        assertFalse(impostor.proc().stderrText().contains("refused data connection"),
                () -> "arpc sent a NewProxyConn to a proxy port with another certificate:\n" + impostor.proc().stderrText());
        assertTrue(c.proc().isAlive(), "arpc");
    }

    @Test
    void aCertificateAndKeyFromPemFilesAreVerifiedWithTlsCa() throws Exception {
        Tls.Pem pem = Tls.selfSigned(env, "relay");
        Tls.Pem stranger = Tls.selfSigned(env, "stranger");
        Tls.Pem elsewhere = Tls.selfSigned(env, "elsewhere", "elsewhere.example", "DNS:elsewhere.example");
        NamedOrigin o = origin("O");

        TestEnv.Relay pkcs8 = env.arps(env.arpsArgs().set("--tls-cert", pem.cert()).set("--tls-key", pem.key()));
        TestEnv.Relay pkcs1 = env.arps(env.arpsArgs().set("--tls-cert", pem.cert()).set("--tls-key", pem.rsaKey()));
        TestEnv.Relay misnamed = env.arps(env.arpsArgs().set("--tls-cert", elsewhere.cert()).set("--tls-key", elsewhere.key()));
        String fp = Tls.fingerprint(pem.cert());
        assertEquals(fp, readyFingerprint(pkcs8), "the ready line's fingerprint of the PKCS#8 relay");
        assertEquals(fp, readyFingerprint(pkcs1), "the ready line's fingerprint of the PKCS#1 relay");
        assertEquals(fp, Tls.fingerprint(Tls.peerCertificate(pkcs8.proxyPort())));

        Proc viaCa8 = env.startArpc(env.arpcArgs(pkcs8, o.port()).set("--tls-ca", pem.cert()));
        Proc viaCa1 = env.startArpc(env.arpcArgs(pkcs1, o.port()).set("--tls-ca", pem.cert()));
        Proc wrongCa = env.startArpc(env.arpcArgs(pkcs8, o.port()).set("--tls-ca", stranger.cert()));
        // Trusted, but issued for another name than the one arpc dialled (127.0.0.1): the host name check refuses it.
        Proc wrongName = env.startArpc(env.arpcArgs(misnamed, o.port()).set("--tls-ca", elsewhere.cert()));

        assertEquals("origin=O", visit(pkcs8, TestEnv.registered(viaCa8, 1).clientId()));
        assertEquals("origin=O", visit(pkcs1, TestEnv.registered(viaCa1, 1).clientId()));
        assertNotRegistered(wrongCa, 3);
        assertNotRegistered(wrongName, 3);
    }

    @Test
    void tlsPublicServesHttpsAndTheCookieIsSecure() throws Exception {
        Tls.Pem pem = Tls.selfSigned(env, "relay");
        TestEnv.Relay relay = env.arps(env.arpsArgs().set("--tls-cert", pem.cert()).set("--tls-key", pem.key())
                .flag("--tls-public").set("--domain", "tunnel.test"));
        NamedOrigin o = origin("O");
        String id = env.arpc(env.arpcArgs(relay, o.port()).set("--tls-ca", pem.cert())).clientId();
        assertEquals(Tls.fingerprint(pem.cert()), Tls.fingerprint(Tls.peerCertificate(relay.publicPort())), "the public port's certificate");
        String https = "https://127.0.0.1:" + relay.publicPort();

        Curl.Result insecure = Curl.run(env, "-k", https + "/k?token=" + id);
        assertEquals(200, insecure.status(), insecure::toString);
        assertTrue(insecure.body().startsWith("origin=O\ntarget /k\n"), insecure::toString);
        Curl.Result verified = Curl.run(env, "--cacert", pem.cert().toString(), https + "/verified?token=" + id);
        assertEquals(200, verified.status(), verified::toString);
        assertTrue(verified.body().startsWith("origin=O\ntarget /verified\n"), verified::toString);
        // Host routing over HTTPS.
        String host = id + ".tunnel.test:" + relay.publicPort();
        Curl.Result byHost = Curl.run(env, "-k", "--resolve", host + ":127.0.0.1", "https://" + host + "/by-host");
        assertEquals(200, byHost.status(), byHost::toString);
        assertTrue(byHost.body().startsWith("origin=O\ntarget /by-host\n"), byHost::toString);

        // The browser redirect's cookie is Secure on HTTPS.
        Curl.Result nav = Curl.run(env, "--cacert", pem.cert().toString(), "-H", "Accept: text/html", https + "/page?token=" + id);
        assertEquals(302, nav.status(), nav::toString);
        assertEquals("/page", nav.header("Location"), nav::toString);
        RoutingTest.assertArpCookie(id, nav.header("Set-Cookie"), true, nav.toString());
        Path jar = env.dir("jar").resolve("cookies.txt");
        Curl.Result followed = Curl.run(env, "--cacert", pem.cert().toString(), "-L", "-c", jar.toString(), "-b", jar.toString(),
                "-H", "Accept: text/html", https + "/app?token=" + id);
        assertEquals(200, followed.status(), followed::toString);
        assertTrue(followed.body().startsWith("origin=O\ntarget /app\n"), followed::toString);
        assertFalse(followed.body().contains("arp_token"), followed::toString);

        // Plain HTTP on the HTTPS port reaches nobody.
        Curl.Result plain = Curl.run(env, "http://127.0.0.1:" + relay.publicPort() + "/plain?token=" + id);
        assertNotEquals(200, plain.status(), plain::toString);
        assertEquals(4, o.seen().size(), () -> "the service saw: " + o.seen());
    }
}
