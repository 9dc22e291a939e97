package arp.tests;

import arp.tests.support.Bytes;
import arp.tests.support.Origin;
import arp.tests.support.Proc;
import arp.tests.support.RawHttp;
import arp.tests.support.TestEnv;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.WebSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Ordinary HTTP/1.1 through a real arps + arpc in front of the Undertow origin. */
class HttpTunnelTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    @Test
    void getReturnsOriginBodyAndRegisteredLineDescribesTheTunnel() throws Exception {
        Origin origin = env.origin();
        TestEnv.Tunnel t = env.tunnel(origin.port());

        assertEquals("arp", t.client().registered().path("server").asText(), "registered.server");
        assertEquals("http://127.0.0.1:" + t.publicPort() + "/?token=" + t.token(), t.client().publicUrl(), "registered.public_url");

        HttpResponse<String> r = env.get(t.url("/hello"));
        assertEquals(200, r.statusCode());
        assertEquals("hello world", r.body());
    }

    @Test
    void postBodyRoundTrip() throws Exception {
        Origin origin = env.origin();
        TestEnv.Tunnel t = env.tunnel(origin.port());
        byte[] body = Bytes.bytes(7, 300_000);

        HttpResponse<String> r = env.http().send(HttpRequest.newBuilder(URI.create(t.url("/upload")))
                .timeout(Duration.ofSeconds(30)).POST(HttpRequest.BodyPublishers.ofByteArray(body)).build(),
                HttpResponse.BodyHandlers.ofString());
        assertEquals(200, r.statusCode());
        assertEquals(Bytes.sha256(body).toString(), r.body());
    }

    @Test
    void chunkedRequestBodyArrivesIntact() throws Exception {
        Origin origin = env.origin();
        TestEnv.Tunnel t = env.tunnel(origin.port());
        byte[] data = Bytes.bytes(11, 200_000);

        try (RawHttp.Conn c = RawHttp.connect(t.publicPort())) {
            c.send("POST /upload?token=" + t.token() + " HTTP/1.1\r\nHost: origin\r\nTransfer-Encoding: chunked\r\n"
                    + "Connection: close\r\n\r\n");
            // Uneven chunk sizes, flushed one by one, so they cross the tunnel in separate segments.
            int[] sizes = {1, 15, 4096, 65_536, 100_000}; // the rest goes in a last chunk
            int off = 0;
            for (int size : sizes) {
                int n = Math.min(size, data.length - off);
                c.send(Integer.toHexString(n) + ";ext=1\r\n");
                c.out().write(data, off, n);
                c.send("\r\n");
                off += n;
            }
            if (off < data.length) {
                c.send(Integer.toHexString(data.length - off) + "\r\n");
                c.out().write(data, off, data.length - off);
                c.send("\r\n");
            }
            c.send("0\r\n\r\n");
            RawHttp.Response r = c.readFinal();
            assertEquals(200, r.status(), r::toString);
            assertEquals(Bytes.sha256(data).toString(), r.bodyText());
        }
    }

    @Test
    void keepAliveServesSeveralRequestsOnOneConnection() throws Exception {
        Origin origin = env.origin();
        TestEnv.Tunnel t = env.tunnel(origin.port());
        byte[] body = Bytes.bytes(3, 5000);

        try (RawHttp.Conn c = RawHttp.connect(t.publicPort())) {
            // The token routes the connection; later requests ride the same spliced connection.
            c.send("GET /hello?token=" + t.token() + " HTTP/1.1\r\nHost: origin\r\n\r\n");
            assertEquals("hello world", c.readFinal().bodyText());
            for (int i = 0; i < 3; i++) {
                c.send("GET /hello HTTP/1.1\r\nHost: origin\r\n\r\n");
                RawHttp.Response r = c.readFinal();
                assertEquals(200, r.status(), "request " + (i + 2));
                assertEquals("hello world", r.bodyText());
            }
            c.send("POST /upload HTTP/1.1\r\nHost: origin\r\nContent-Length: " + body.length + "\r\n\r\n");
            c.send(body);
            assertEquals(Bytes.sha256(body).toString(), c.readFinal().bodyText());
            c.send("GET /download?size=777 HTTP/1.1\r\nHost: origin\r\n\r\n");
            assertEquals(Bytes.sha256(Bytes.bytes(Origin.SEED, 777)), Bytes.sha256(c.readFinal().body()));
        }
        assertEquals(1, origin.connections(), "the origin should have seen one connection for 6 requests");
    }

    @Test
    void pipelinedRequestsAreAnsweredInOrder() throws Exception {
        Origin origin = env.origin();
        TestEnv.Tunnel t = env.tunnel(origin.port());

        try (RawHttp.Conn c = RawHttp.connect(t.publicPort())) {
            c.send("GET /hello?token=" + t.token() + " HTTP/1.1\r\nHost: origin\r\n\r\n"
                    + "GET /echo-target?n=2 HTTP/1.1\r\nHost: origin\r\nX-Second: yes\r\n\r\n"
                    + "GET /download?size=1000 HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n");
            RawHttp.Response first = c.readFinal();
            RawHttp.Response second = c.readFinal();
            RawHttp.Response third = c.readFinal();
            assertEquals("hello world", first.bodyText(), first::toString);
            assertTrue(second.bodyText().startsWith("target /echo-target?n=2\n"), second::toString);
            assertTrue(second.bodyText().contains("X-Second: yes"), second::toString);
            assertEquals(Bytes.sha256(Bytes.bytes(Origin.SEED, 1000)), Bytes.sha256(third.body()));
        }
    }

    @Test
    void expectContinueWithCurlDoesNotStall() throws Exception {
        Origin origin = env.origin();
        TestEnv.Tunnel t = env.tunnel(origin.port());
        Path file = env.dir("upload").resolve("body.bin");
        byte[] data = Bytes.bytes(21, 2 * 1024 * 1024);
        Files.write(file, data);

        // --expect100-timeout 10: if nobody answers 100 Continue, curl would stall 10 s, not its default 1 s.
        Proc curl = env.start("curl", List.of("curl", "-sS", "--max-time", "60", "--expect100-timeout", "10",
                "-H", "Expect: 100-continue", "--data-binary", "@" + file, "-w", "\n%{http_code} %{time_total}",
                t.url("/upload")), null);
        assertEquals(0, curl.awaitExit(Duration.ofSeconds(60)), curl::stderrText);
        List<String> out = curl.stdout();
        assertEquals(2, out.size(), () -> "curl output: " + out);
        assertEquals(Bytes.sha256(data).toString(), out.get(0));
        String[] status = out.get(1).split(" ");
        assertEquals("200", status[0]);
        double seconds = Double.parseDouble(status[1]);
        assertTrue(seconds < 5, "curl took " + seconds + " s: 100 Continue not relayed promptly");
    }

    @Test
    void expectContinueInterimResponseArrivesBeforeTheBodyIsSent() throws Exception {
        Origin origin = env.origin();
        TestEnv.Tunnel t = env.tunnel(origin.port());
        byte[] data = Bytes.bytes(22, 100_000);

        try (RawHttp.Conn c = RawHttp.connect(t.publicPort())) {
            c.send("POST /upload?token=" + t.token() + " HTTP/1.1\r\nHost: origin\r\nContent-Length: " + data.length
                    + "\r\nExpect: 100-continue\r\n\r\n");
            c.timeout(Duration.ofSeconds(10));
            RawHttp.Response interim = c.read();
            assertEquals(100, interim.status(), interim::toString);
            c.timeout(RawHttp.DEFAULT_TIMEOUT);
            c.send(data);
            RawHttp.Response r = c.readFinal();
            assertEquals(200, r.status(), r::toString);
            assertEquals(Bytes.sha256(data).toString(), r.bodyText());
        }
    }

    @Test
    void webSocketEchoRoundTrip() throws Exception {
        Origin origin = env.origin();
        TestEnv.Tunnel t = env.tunnel(origin.port());
        BlockingQueue<String> received = new LinkedBlockingQueue<>();

        WebSocket.Listener listener = new WebSocket.Listener() {
            private final StringBuilder partial = new StringBuilder();

            @Override public CompletionStage<?> onText(WebSocket ws, CharSequence data, boolean last) {
                partial.append(data);
                if (last) {
                    received.add(partial.toString());
                    partial.setLength(0);
                }
                ws.request(1);
                return null;
            }
        };
        WebSocket ws = env.http().newWebSocketBuilder().connectTimeout(Duration.ofSeconds(10))
                .buildAsync(URI.create("ws://127.0.0.1:" + t.publicPort() + "/ws?token=" + t.token()), listener)
                .get(20, TimeUnit.SECONDS);
        try {
            ws.sendText("hello over arp", true).get(10, TimeUnit.SECONDS);
            assertEquals("hello over arp", received.poll(10, TimeUnit.SECONDS));
            String big = "0123456789abcdef".repeat(4096); // 64 KiB: several TCP segments
            ws.sendText(big, true).get(10, TimeUnit.SECONDS);
            assertEquals(big, received.poll(10, TimeUnit.SECONDS));
        } finally {
            ws.abort();
        }
    }
}
