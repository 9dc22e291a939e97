package arp;

import arp.Protocol.Frames;
import arp.Protocol.Hello;
import arp.Protocol.MachineId;
import arp.Protocol.Message;
import arp.Protocol.NewProxyConn;
import arp.Protocol.Ping;
import arp.Protocol.ProtocolException;
import arp.Protocol.Register;
import arp.Protocol.RegisterResult;
import arp.Protocol.RequestNewProxyConn;
import org.junit.jupiter.api.Test;

import java.io.ByteArrayInputStream;
import java.io.EOFException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The wire format, the machine id and the request-head rewrite, checked against the original's bytes. */
class ProtocolTest {

    @Test
    void originalCommandsAreEncodedExactlyAsTheRustArp() {
        assertEquals("{\"Register\":{\"client_id\":\"6D13F98FCCCD5F089AD96C3C7C13A81C\"}}",
                Frames.toJson(new Register("6D13F98FCCCD5F089AD96C3C7C13A81C")));
        assertEquals("{\"RegisterResult\":{\"success\":true,\"error\":null}}",
                Frames.toJson(new RegisterResult(true, null)));
        assertEquals("{\"RequestNewProxyConn\":{\"proxy_conn_id\":\"1f\"}}",
                Frames.toJson(new RequestNewProxyConn("1f")));
        assertEquals("{\"NewProxyConn\":{\"proxy_conn_id\":\"1f\",\"client_id\":\"6D13F98FCCCD5F089AD96C3C7C13A81C\"}}",
                Frames.toJson(new NewProxyConn("1f", "6D13F98FCCCD5F089AD96C3C7C13A81C", null)));
    }

    @Test
    void additionsLeaveTheOriginalFramesAsTheyWere() {
        assertEquals("{\"RegisterResult\":{\"success\":false,\"error\":\"x\"}}", Frames.toJson(new RegisterResult(false, "x", null)));
        assertEquals("{\"RegisterResult\":{\"success\":false,\"error\":\"x\",\"retry\":true}}", Frames.toJson(new RegisterResult(false, "x", true)));
        assertEquals("{\"NewProxyConn\":{\"proxy_conn_id\":\"1f\",\"client_id\":\"c\",\"handover\":true,\"reuse\":true,\"proof\":\"p\"}}",
                Frames.toJson(new NewProxyConn("1f", "c", true, true, "p")));
    }

    @Test
    void hostAndCookieCarryTheTokenAndOurCookieIsTakenOut() throws Exception {
        Arps.RequestHead head = parse("GET /a?x=1 HTTP/1.1\r\nHost: Alice.T.example.com:17003\r\n"
                + "Cookie: a=1; arp_token=bob; c=3\r\nAccept: text/html\r\n\r\n", "t.example.com");
        assertEquals("Alice", head.token());
        assertEquals(Arps.RequestHead.TokenSource.HOST, head.source());
        String forwarded = new String(head.bytes(), StandardCharsets.ISO_8859_1);
        assertEquals("GET /a?x=1 HTTP/1.1\r\nHost: Alice.T.example.com:17003\r\nCookie: a=1; c=3\r\nAccept: text/html\r\n\r\n", forwarded);

        head = parse("GET / HTTP/1.1\r\nHost: other.example.com\r\nCookie: arp_token=bob\r\n\r\n", "t.example.com");
        assertEquals("bob", head.token());
        assertEquals(Arps.RequestHead.TokenSource.COOKIE, head.source());
        assertEquals("GET / HTTP/1.1\r\nHost: other.example.com\r\n\r\n", new String(head.bytes(), StandardCharsets.ISO_8859_1));

        head = parse("GET /p?token=q&y=2 HTTP/1.1\r\nSec-Fetch-Mode: navigate\r\nCookie: arp_token=bob\r\n\r\n", null);
        assertEquals("q", head.token());
        assertTrue(head.isBrowserNavigationWithQueryToken());
        assertEquals("/p?y=2", head.target());
        assertTrue(!parse("POST /p?token=q HTTP/1.1\r\nAccept: text/html\r\n\r\n", null).isBrowserNavigationWithQueryToken());
        assertTrue(!parse("GET /p?token=q HTTP/1.1\r\nAccept: */*\r\n\r\n", null).isBrowserNavigationWithQueryToken());
        assertTrue(!parse("GET /p HTTP/1.1\r\nX-Arp-Token: h\r\nAccept: text/html\r\n\r\n", null).isBrowserNavigationWithQueryToken());
    }

    private static Arps.RequestHead parse(String head, String domain) throws Exception {
        byte[] b = head.getBytes(StandardCharsets.ISO_8859_1);
        return Arps.RequestHead.parse(b, Arps.RequestHead.findEnd(b, b.length), domain);
    }

    @Test
    void pinsAreNormalisedAndMalformedOnesRejected() {
        String hex = "ab".repeat(32);
        assertEquals("sha256:" + hex, Protocol.Tls.normalizePin("SHA256:" + hex.toUpperCase()));
        assertEquals("sha256:" + hex, Protocol.Tls.normalizePin(hex.replaceAll("(..)(?!$)", "$1:")));
        assertNull(Protocol.Tls.normalizePin("sha256:abc"));
        assertNull(Protocol.Tls.normalizePin("sha1:" + hex));
    }

    /** openssl writes RSA keys as PKCS#8 by default and as PKCS#1 with -traditional: both load. */
    @Test
    void pemKeysInBothRsaFormsLoad(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
        for (String form : List.of("pkcs8", "pkcs1")) {
            java.nio.file.Path key = dir.resolve(form + ".pem");
            List<String> command = new java.util.ArrayList<>(List.of("openssl", "genrsa", "-out", key.toString(), "2048"));
            if (form.equals("pkcs1")) command.add(2, "-traditional");
            Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
            assertEquals(0, p.waitFor(), new String(p.getInputStream().readAllBytes()));
            String text = java.nio.file.Files.readString(key);
            assertTrue(text.contains(form.equals("pkcs1") ? "BEGIN RSA PRIVATE KEY" : "BEGIN PRIVATE KEY"), text);
            assertEquals("RSA", Protocol.Tls.readPrivateKey(key).getAlgorithm());
        }
    }

    @Test
    void originalFramesDecode() throws Exception {
        String json = "{\"RegisterResult\":{\"success\":false,\"error\":\"nope\"}}";
        assertEquals(new RegisterResult(false, "nope"), decode(json));
        assertEquals(new NewProxyConn("a", "b", null),
                decode("{\"NewProxyConn\":{\"proxy_conn_id\":\"a\",\"client_id\":\"b\"}}"));
    }

    @Test
    void additionsRoundTrip() throws Exception {
        for (Message m : List.of(new Hello(1, List.of("heartbeat", "handover"), 17003), new Ping(),
                new NewProxyConn("x", "y", true), new Protocol.StartProxy("1.2.3.4:5"),
                new Protocol.ProxyStarted(), new Protocol.ProxyFailed("down"),
                new Hello(1, List.of("tokens"), null, "ab", "cd", true, "t.example.com"),
                new NewProxyConn("x", "y", true, true, "proof"), new RegisterResult(false, "in use", true),
                new Protocol.Challenge("n", "p"), new Protocol.Auth("p"), new Protocol.AddTokens(List.of("alice", "bob")),
                new Protocol.AddTokensResult(false, "taken"))) {
            byte[] frame = Frames.encode(m);
            assertEquals(frame.length - 4, ByteBuffer.wrap(frame).getInt());
            assertEquals(m, Frames.read(new ByteArrayInputStream(frame)));
        }
    }

    @Test
    void badFramesAreProtocolErrorsNotCrashes() {
        assertThrows(ProtocolException.class, () -> decode("not json"));
        assertThrows(ProtocolException.class, () -> decode("{\"Bogus\":{}}"));
        assertThrows(ProtocolException.class, () -> decode("{\"Register\":{}}"));
        assertThrows(ProtocolException.class, () -> decode("{\"Register\":{\"client_id\":\"a\"},\"Ping\":{}}"));
        assertThrows(ProtocolException.class, () -> decode("[1,2]"));
        assertThrows(ProtocolException.class, () -> decode("{\"RegisterResult\":{\"success\":\"maybe\"}}"));
        // a 100 MB length prefix is refused before anything is allocated
        byte[] huge = ByteBuffer.allocate(8).putInt(100_000_000).putInt(0).array();
        assertThrows(ProtocolException.class, () -> Frames.read(new ByteArrayInputStream(huge)));
        byte[] cut = ByteBuffer.allocate(6).putInt(10).put((byte) '{').put((byte) '"').array();
        assertThrows(EOFException.class, () -> Frames.read(new ByteArrayInputStream(cut)));
    }

    @Test
    void machineIdMatchesTheOriginalsTestVectors() {
        assertEquals("1212590BE0A85E7B978553A57DCB156E", MachineId.uuidV5(
                "host:devbox|machine_id:0123456789abcdef0123456789abcdef|user:alice|os:linux|arch:x86_64|distro:Ubuntu 24.04.1 LTS"));
        assertEquals("72EE4C77DC595E56AC9B296722544DC6", MachineId.uuidV5("host:macbook|user:bob|os:macos|arch:aarch64"));
        String traits = MachineId.traits();
        assertTrue(traits.startsWith("host:"), traits);
        assertTrue(traits.contains("|os:linux|arch:"), traits);
        assertEquals("x86_64", MachineId.rustArch("amd64"));
    }

    @Test
    void tokenParameterIsRemovedAndEverythingElseKept() throws Exception {
        assertRewrite("GET /p?a=1&token=ID&b=2 HTTP/1.1\r\nHost: x\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n",
                "GET /p?a=1&b=2 HTTP/1.1\r\nHost: x\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n", "ID");
        assertRewrite("GET /p?token=ID HTTP/1.1\r\n\r\n", "GET /p HTTP/1.1\r\n\r\n", "ID");
        assertRewrite("GET /?token=a%2Bb&q=x+y HTTP/1.0\n\n", "GET /?q=x+y HTTP/1.0\n\n", "a+b");
        assertRewrite("POST /api HTTP/1.1\r\nX-Arp-Token:  tok \r\nContent-Length: 0\r\n\r\n",
                "POST /api HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "tok");
        assertRewrite("GET /plain HTTP/1.1\r\nA: b\r\n\r\n", "GET /plain HTTP/1.1\r\nA: b\r\n\r\n", null);
        // a parameter that merely contains "token" is not ours
        assertRewrite("GET /?mytoken=1&token_x=2 HTTP/1.1\r\n\r\n", "GET /?mytoken=1&token_x=2 HTTP/1.1\r\n\r\n", null);
    }

    @Test
    void nonHttpHeadsAreRejected() {
        for (String head : List.of("\r\n\r\n", "GET /\r\n\r\n", "HELLO WORLD FOO BAR\r\n\r\n", "GET / SMTP/1.0\r\n\r\n")) {
            byte[] b = head.getBytes(StandardCharsets.ISO_8859_1);
            assertThrows(Arps.RequestHead.BadRequest.class, () -> Arps.RequestHead.parse(b, b.length, null), head);
        }
    }

    @Test
    void headEndIsFoundWithCrlfOrLf() {
        byte[] b = "GET / HTTP/1.1\r\nA: b\r\n\r\nBODY".getBytes(StandardCharsets.ISO_8859_1);
        assertEquals(b.length - 4, Arps.RequestHead.findEnd(b, b.length));
        byte[] partial = "GET / HTTP/1.1\r\nA: b\r\n".getBytes(StandardCharsets.ISO_8859_1);
        assertEquals(-1, Arps.RequestHead.findEnd(partial, partial.length));
    }

    private static void assertRewrite(String in, String expected, String token) throws Exception {
        byte[] b = in.getBytes(StandardCharsets.ISO_8859_1);
        Arps.RequestHead head = Arps.RequestHead.parse(b, Arps.RequestHead.findEnd(b, b.length), null);
        assertArrayEquals(expected.getBytes(StandardCharsets.ISO_8859_1), head.bytes(), new String(head.bytes(), StandardCharsets.ISO_8859_1));
        if (token == null) assertNull(head.token()); else assertEquals(token, head.token());
    }

    private static Message decode(String json) throws ProtocolException {
        byte[] b = json.getBytes(StandardCharsets.UTF_8);
        return Frames.decode(b, 0, b.length);
    }
}
