package arp.tests.support;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;

/**
 * The client authentication of issue 4, written from its specification and independently of
 * {@code Protocol.java}, so that a test that authenticates with it checks arps against the specification
 * rather than against arps's own code:
 * <pre>
 * key         = UTF-8 bytes of the secret
 * relayProof  = hex(HMAC-SHA256(key, "arp-relay-v1\n" + clientId + "\n" + cnonce + "\n" + snonce))
 * clientProof = hex(HMAC-SHA256(key, "arp-client-v1\n" + clientId + "\n" + snonce + "\n" + cnonce))
 * sessionKey  = HMAC-SHA256(key, "arp-session-v1\n" + snonce + "\n" + cnonce)        (raw 32 bytes)
 * connProof   = hex(HMAC-SHA256(sessionKey, "arp-conn-v1\n" + proxyConnId))
 * </pre>
 * Handshake: Register, Hello{nonce, owner} → Challenge{nonce, proof} → Auth{proof} → RegisterResult, Hello.
 */
public final class Auth {
    private Auth() {}

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final SecureRandom RANDOM = new SecureRandom();
    public static final List<String> FEATURES = List.of("heartbeat", "handover", "reuse");

    public static byte[] hmac(byte[] key, String message) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(key, "HmacSHA256"));
            return mac.doFinal(message.getBytes(StandardCharsets.UTF_8));
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException(e);
        }
    }

    public static byte[] key(String secret) { return secret.getBytes(StandardCharsets.UTF_8); }

    public static String hex(byte[] b) { return HexFormat.of().formatHex(b); }

    /** 32 random bytes as 64 lower-case hex digits, as a nonce is sent. */
    public static String nonce() {
        byte[] b = new byte[32];
        RANDOM.nextBytes(b);
        return hex(b);
    }

    public static String relayProof(String secret, String clientId, String cnonce, String snonce) {
        return hex(hmac(key(secret), "arp-relay-v1\n" + clientId + "\n" + cnonce + "\n" + snonce));
    }

    public static String clientProof(String secret, String clientId, String snonce, String cnonce) {
        return hex(hmac(key(secret), "arp-client-v1\n" + clientId + "\n" + snonce + "\n" + cnonce));
    }

    public static byte[] sessionKey(String secret, String snonce, String cnonce) {
        return hmac(key(secret), "arp-session-v1\n" + snonce + "\n" + cnonce);
    }

    public static String connProof(byte[] sessionKey, String proxyConnId) {
        return hex(hmac(sessionKey, "arp-conn-v1\n" + proxyConnId));
    }

    // ---- frames ----

    public static String hello(String cnonce, String owner) {
        ObjectNode h = JSON.createObjectNode();
        ObjectNode body = h.putObject("Hello");
        body.put("version", 1);
        FEATURES.forEach(body.putArray("features")::add);
        if (cnonce != null) body.put("nonce", cnonce);
        if (owner != null) body.put("owner", owner);
        return h.toString();
    }

    public static String authFrame(String proof) {
        ObjectNode a = JSON.createObjectNode();
        a.putObject("Auth").put("proof", proof);
        return a.toString();
    }

    /** NewProxyConn of a reusable data connection, with {@code proof} unless it is null. */
    public static String newProxyConn(String proxyConnId, String clientId, String proof) {
        ObjectNode n = JSON.createObjectNode();
        ObjectNode body = n.putObject("NewProxyConn");
        body.put("proxy_conn_id", proxyConnId).put("client_id", clientId).put("handover", true).put("reuse", true);
        if (proof != null) body.put("proof", proof);
        return n.toString();
    }

    // ---- an authenticated fake client ----

    /** What one successful handshake established. */
    public record Session(FakeClient client, String secret, String cnonce, String snonce, byte[] sessionKey,
                          JsonNode challenge, JsonNode registerResult, JsonNode serverHello) {
        public String connProof(String proxyConnId) { return Auth.connProof(sessionKey, proxyConnId); }

        /**
         * Opens a reusable data connection for {@code proxyConnId} with its proof (or with {@code proof}
         * as given, null for none). Close it with the test (env.own).
         */
        public FakeClient.DataConn dial(int proxyPort, String proxyConnId, String proof) throws IOException {
            Socket s = new Socket();
            s.connect(new InetSocketAddress("127.0.0.1", proxyPort), 5_000);
            s.setTcpNoDelay(true);
            FakeClient.DataConn d = new FakeClient.DataConn(s, proxyConnId);
            d.writeFrame(newProxyConn(proxyConnId, client.clientId, proof));
            return d;
        }

        public FakeClient.DataConn dial(int proxyPort, String proxyConnId) throws IOException {
            return dial(proxyPort, proxyConnId, connProof(proxyConnId));
        }
    }

    /**
     * Registers {@code clientId} with {@code secret} the way the specification says, checking the relay's
     * proof on the way. Fails (AssertionError) if arps answers anything but the expected frames. The
     * caller owns the returned session's client.
     */
    public static Session register(int controlPort, String clientId, String secret, String owner) throws IOException {
        FakeClient c = FakeClient.connect(controlPort, clientId);
        try {
            String cnonce = nonce();
            c.send(FakeClient.Frames.register(clientId));
            c.send(hello(cnonce, owner));
            Duration wait = Duration.ofSeconds(10);
            JsonNode challenge = c.next(wait);
            if (!challenge.has("Challenge")) throw new AssertionError("expected Challenge after Register and Hello, got " + challenge);
            String snonce = challenge.path("Challenge").path("nonce").asText("");
            if (!snonce.matches("[0-9a-f]{64}")) throw new AssertionError("Challenge.nonce is not 32 bytes of lower-case hex: " + challenge);
            String expected = relayProof(secret, clientId, cnonce, snonce);
            String got = challenge.path("Challenge").path("proof").asText("");
            if (!expected.equals(got)) {
                throw new AssertionError("the relay's proof differs from the specification's: expected " + expected + ", got " + challenge);
            }
            c.send(authFrame(clientProof(secret, clientId, snonce, cnonce)));
            JsonNode result = c.next(wait);
            if (!result.path("RegisterResult").path("success").asBoolean(false)) {
                throw new AssertionError("expected RegisterResult success after a correct Auth, got " + result);
            }
            JsonNode serverHello = null;
            // arps's Hello follows; RequestNewProxyConn frames may come before it: keep them queued.
            java.util.ArrayDeque<JsonNode> before = new java.util.ArrayDeque<>();
            while (serverHello == null) {
                JsonNode f = c.next(wait);
                if (f.has("Hello")) serverHello = f;
                else before.add(f);
            }
            c.requeue(before);
            return new Session(c, secret, cnonce, snonce, sessionKey(secret, snonce, cnonce), challenge, result, serverHello);
        } catch (IOException | RuntimeException | Error e) {
            c.close();
            throw e;
        }
    }

    /** A random owner tag (the per-install value arpc derives from its install key). */
    public static String owner() {
        byte[] b = new byte[16];
        RANDOM.nextBytes(b);
        return hex(b);
    }
}
