package arp.tests;

import arp.tests.support.RawHttp;
import arp.tests.support.TcpServers;
import arp.tests.support.TestEnv;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import static java.nio.charset.StandardCharsets.ISO_8859_1;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * arps forwards the visitor's bytes unchanged except for the token: the {@code token} query parameter is
 * cut from the request target and the {@code X-Arp-Token} header line is dropped. The local service is a
 * raw capture server, so header case, order, repeats and body are compared byte for byte.
 */
class ExactForwardingTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final String CANNED = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    private static final Duration WAIT = Duration.ofSeconds(15);

    @Test
    void tokenInQueryIsCutAndEverythingElseIsByteIdentical() throws Exception {
        TcpServers.Capture capture = env.own(TcpServers.capture(CANNED));
        TestEnv.Tunnel t = env.tunnel(capture.port());
        String T = t.token();

        String headers = "Host: example.test\r\nX-Mixed-CASE: Value  with  spaces\r\nx-repeat: one\r\n"
                + "X-Repeat: two\r\nUser-Agent: raw/1.0\r\n";
        List<String[]> cases = List.of(
                // {name, sent, expected at the local service}
                new String[]{"token in the middle, header present",
                        "POST /p?a=1&token=" + T + "&b=2 HTTP/1.1\r\n" + headers + "X-Arp-Token: " + T + "\r\ncontent-length: 5\r\n\r\nhello",
                        "POST /p?a=1&b=2 HTTP/1.1\r\n" + headers + "content-length: 5\r\n\r\nhello"},
                new String[]{"only parameter",
                        "GET /p?token=" + T + " HTTP/1.1\r\n" + headers + "\r\n",
                        "GET /p HTTP/1.1\r\n" + headers + "\r\n"},
                new String[]{"root path (the printed public URL)",
                        "GET /?token=" + T + " HTTP/1.1\r\nHost: h\r\n\r\n",
                        "GET / HTTP/1.1\r\nHost: h\r\n\r\n"},
                new String[]{"first parameter",
                        "GET /p?token=" + T + "&b=2 HTTP/1.1\r\nHost: h\r\n\r\n",
                        "GET /p?b=2 HTTP/1.1\r\nHost: h\r\n\r\n"},
                new String[]{"last parameter",
                        "GET /p?a=1&token=" + T + " HTTP/1.1\r\nHost: h\r\n\r\n",
                        "GET /p?a=1 HTTP/1.1\r\nHost: h\r\n\r\n"},
                new String[]{"header between other headers, token also in the query",
                        "GET /x?token=" + T + " HTTP/1.1\r\nHost: h\r\nX-Arp-Token: " + T + "\r\nAccept: */*\r\n\r\n",
                        "GET /x HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n"},
                new String[]{"pipelined second request passes untouched",
                        "GET /one?token=" + T + " HTTP/1.1\r\nHost: h\r\n\r\nGET /two?q=%20x HTTP/1.1\r\nHost: h\r\nx-arp-other: 1\r\n\r\n",
                        "GET /one HTTP/1.1\r\nHost: h\r\n\r\nGET /two?q=%20x HTTP/1.1\r\nHost: h\r\nx-arp-other: 1\r\n\r\n"});

        List<String> failures = new ArrayList<>();
        for (String[] c : cases) {
            String got = forward(t, capture, c[1]);
            if (!c[2].equals(got)) failures.add(c[0] + ":\n  expected " + show(c[2]) + "\n  got      " + show(got));
        }
        assertEquals(List.of(), failures);
    }

    @Test
    void tokenInHeaderOnlyIsDroppedAndTargetKept() throws Exception {
        TcpServers.Capture capture = env.own(TcpServers.capture(CANNED));
        TestEnv.Tunnel t = env.tunnel(capture.port());

        String sent = "GET /q?z=9&tok=1 HTTP/1.1\r\nHost: h\r\nX-Arp-Token: " + t.token() + "\r\nUser-Agent: raw\r\nCookie: a=b\r\n\r\n";
        String expected = "GET /q?z=9&tok=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: raw\r\nCookie: a=b\r\n\r\n";
        assertEquals(show(expected), show(forward(t, capture, sent)));
    }

    @Test
    void serverSpeaksFirstBannerReachesTheVisitorBeforeTheEcho() throws Exception {
        // Proves arpc connects to the local service when the visitor is handed over, and relays what the
        // service says before the visitor's own bytes come back.
        TcpServers.Echo banner = env.own(TcpServers.banner("220 hello\r\n"));
        TestEnv.Tunnel t = env.tunnel(banner.port());

        try (RawHttp.Conn c = RawHttp.connect(t.publicPort())) {
            c.send("GET /smtp?token=" + t.token() + " HTTP/1.1\r\nHost: h\r\n\r\n");
            String expected = "220 hello\r\n" + "GET /smtp HTTP/1.1\r\nHost: h\r\n\r\n";
            assertEquals(show(expected), show(new String(c.readExactly(expected.length()), ISO_8859_1)));
            c.send("QUIT\r\n"); // and the connection keeps echoing afterwards
            assertEquals("QUIT\r\n", new String(c.readExactly(6), ISO_8859_1));
        }
    }

    /** Sends {@code request} as one visitor connection; returns what the capture server received. */
    private static String forward(TestEnv.Tunnel t, TcpServers.Capture capture, String request) throws Exception {
        try (RawHttp.Conn c = RawHttp.connect(t.publicPort())) {
            c.send(request);
            RawHttp.Response r = c.readFinal();
            assertEquals("ok", r.bodyText(), () -> "response to " + show(request) + ": " + r);
        }
        return capture.next(WAIT);
    }

    private static String show(String s) {
        return s.replace("\r", "\\r").replace("\n", "\\n");
    }
}
