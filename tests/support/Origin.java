package arp.tests.support;

import io.undertow.Handlers;
import io.undertow.Undertow;
import io.undertow.UndertowOptions;
import io.undertow.server.HttpHandler;
import io.undertow.server.HttpServerExchange;
import io.undertow.server.ServerConnection;
import io.undertow.server.handlers.BlockingHandler;
import io.undertow.server.handlers.HttpContinueReadHandler;
import io.undertow.server.handlers.PathHandler;
import io.undertow.util.AttachmentKey;
import io.undertow.util.HeaderValues;
import io.undertow.util.Headers;
import io.undertow.websockets.core.AbstractReceiveListener;
import io.undertow.websockets.core.BufferedTextMessage;
import io.undertow.websockets.core.WebSocketChannel;
import io.undertow.websockets.core.WebSockets;

import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.util.Deque;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * The local HTTP service behind the tunnel, in the test JVM (Undertow on 127.0.0.1:0).
 * <ul>
 * <li>{@code GET /hello} → {@code hello world}</li>
 * <li>{@code GET /download?size=N} → N bytes of {@code Bytes.stream(SEED, N)}, streamed, with Content-Length</li>
 * <li>{@code POST /upload} → {@code <sha256 hex> <byte count>} of the body (streamed; chunked and
 *     {@code Expect: 100-continue} handled, the 100 is sent when the handler starts reading)</li>
 * <li>{@code GET /echo-target} → {@code target <path?query>} then one {@code Name: value} line per header
 *     (Undertow normalises header-name case; byte-exact checks use {@link TcpServers.Capture})</li>
 * <li>{@code /ws} → WebSocket text echo</li>
 * </ul>
 */
public final class Origin implements AutoCloseable {
    public static final long SEED = 0x5EED_A4B5L;

    // Keep references: JUL loggers are weakly held, and XNIO/Undertow print version banners at INFO.
    private static final Logger[] QUIET = {Logger.getLogger("org.xnio"), Logger.getLogger("io.undertow"), Logger.getLogger("org.jboss")};

    static {
        for (Logger l : QUIET) l.setLevel(Level.WARNING);
    }

    private static final AttachmentKey<Boolean> SEEN = AttachmentKey.create(Boolean.class);

    private final Undertow server;
    private final int port;
    private final AtomicInteger connections = new AtomicInteger();
    private final AtomicInteger requests = new AtomicInteger();

    private Origin() {
        PathHandler paths = Handlers.path()
                .addExactPath("/hello", Origin::hello)
                .addExactPath("/download", new BlockingHandler(Origin::download))
                .addExactPath("/upload", new HttpContinueReadHandler(new BlockingHandler(Origin::upload)))
                .addExactPath("/echo-target", Origin::echoTarget)
                .addExactPath("/ws", Handlers.websocket((exchange, channel) -> {
                    channel.getReceiveSetter().set(new AbstractReceiveListener() {
                        @Override
                        protected void onFullTextMessage(WebSocketChannel ch, BufferedTextMessage message) {
                            WebSockets.sendText(message.getData(), ch, null);
                        }
                    });
                    channel.resumeReceives();
                }));
        HttpHandler root = ex -> {
            // Counts connections that carried at least one request: lets keep-alive tests check reuse.
            ServerConnection c = ex.getConnection();
            if (c.getAttachment(SEEN) == null) {
                c.putAttachment(SEEN, Boolean.TRUE);
                connections.incrementAndGet();
            }
            requests.incrementAndGet();
            paths.handleRequest(ex);
        };
        server = Undertow.builder()
                .addHttpListener(0, "127.0.0.1")
                .setIoThreads(2)
                .setWorkerThreads(64)
                .setServerOption(UndertowOptions.MAX_ENTITY_SIZE, 1L << 40) // default 10 MiB would reject the 50 MiB upload
                .setHandler(root)
                .build();
        server.start();
        port = ((InetSocketAddress) server.getListenerInfo().get(0).getAddress()).getPort();
    }

    public static Origin start() { return new Origin(); }

    public int port() { return port; }

    /** Connections that carried at least one request. */
    public int connections() { return connections.get(); }

    public int requests() { return requests.get(); }

    private static void hello(HttpServerExchange ex) {
        ex.getResponseHeaders().put(Headers.CONTENT_TYPE, "text/plain");
        ex.getResponseSender().send("hello world");
    }

    private static void download(HttpServerExchange ex) throws Exception {
        Deque<String> q = ex.getQueryParameters().get("size");
        long size = q == null ? 0 : Long.parseLong(q.getFirst());
        ex.getResponseHeaders().put(Headers.CONTENT_TYPE, "application/octet-stream");
        ex.setResponseContentLength(size);
        byte[] buf = new byte[1 << 16];
        try (InputStream in = Bytes.stream(SEED, size); OutputStream out = ex.getOutputStream()) {
            for (int n; (n = in.read(buf)) > 0; ) out.write(buf, 0, n);
        }
    }

    private static void upload(HttpServerExchange ex) throws Exception {
        Bytes.Digest d;
        try (InputStream in = ex.getInputStream()) {
            d = Bytes.sha256(in);
        }
        ex.getResponseHeaders().put(Headers.CONTENT_TYPE, "text/plain");
        ex.getResponseSender().send(d.hex() + " " + d.count());
    }

    private static void echoTarget(HttpServerExchange ex) {
        StringBuilder sb = new StringBuilder("target ").append(ex.getRequestURI());
        if (!ex.getQueryString().isEmpty()) sb.append('?').append(ex.getQueryString());
        sb.append('\n');
        for (HeaderValues hv : ex.getRequestHeaders()) {
            for (String v : hv) sb.append(hv.getHeaderName()).append(": ").append(v).append('\n');
        }
        ex.getResponseHeaders().put(Headers.CONTENT_TYPE, "text/plain");
        ex.getResponseSender().send(sb.toString());
    }

    @Override public void close() { server.stop(); }
}
