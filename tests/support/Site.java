package arp.tests.support;

import io.undertow.Handlers;
import io.undertow.Undertow;
import io.undertow.server.HttpHandler;
import io.undertow.server.HttpServerExchange;
import io.undertow.server.ServerConnection;
import io.undertow.server.handlers.PathHandler;
import io.undertow.util.AttachmentKey;
import io.undertow.util.HeaderValues;
import io.undertow.util.Headers;

import javax.imageio.ImageIO;
import java.awt.Color;
import java.awt.Graphics2D;
import java.awt.image.BufferedImage;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Queue;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * A small web site with several assets, for a real browser (Undertow on 127.0.0.1:0). Every link in it
 * is root-relative and carries no token, as in any site that knows nothing about arp. It records each
 * request: which connection it came on (and whether it was that connection's first), its query and its
 * Cookie header.
 * <ul>
 * <li>{@code /index.html}: a stylesheet, a deferred script, a PNG image and a link to {@code /page2.html};
 *     the script checks the stylesheet applied and the image decoded, calls {@code /api/data.json} with
 *     fetch() and {@code /api/xhr.json} with XMLHttpRequest, and leaves the results in
 *     {@code window.arpResults} and the page ({@code #status} becomes {@value #DONE})</li>
 * <li>everything else: 404</li>
 * </ul>
 */
public final class Site implements AutoCloseable {
    public static final String TITLE = "arp shared page";
    public static final String HEADING = "Served through arp";
    public static final String DONE = "all loaded";
    public static final String PAGE2_TITLE = "arp second page";
    public static final String PAGE2_HEADING = "Second page";
    /** The h1 colour style.css sets, as getComputedStyle reports it. */
    public static final String HEADING_COLOR = "rgb(0, 102, 51)";
    public static final int IMAGE_SIZE = 96;
    public static final List<String> PATHS = List.of("/index.html", "/static/style.css", "/static/app.js",
            "/static/logo.png", "/api/data.json", "/api/xhr.json", "/page2.html");

    // Keep references: JUL loggers are weakly held, and XNIO/Undertow print version banners at INFO.
    private static final Logger[] QUIET = {Logger.getLogger("org.xnio"), Logger.getLogger("io.undertow"), Logger.getLogger("org.jboss")};

    static {
        for (Logger l : QUIET) l.setLevel(Level.WARNING);
    }

    /** One request as it reached the site. {@code nth}: 1 for the first request on its connection. */
    public record Request(int connection, int nth, String method, String path, String query, String cookie) {
        @Override public String toString() {
            return "#" + connection + "." + nth + " " + method + " " + path + (query.isEmpty() ? "" : "?" + query)
                    + (cookie == null ? "" : " [Cookie: " + cookie + "]");
        }
    }

    private static final String INDEX = """
            <!doctype html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <title>%s</title>
            <link rel="stylesheet" href="/static/style.css">
            <script src="/static/app.js" defer></script>
            </head>
            <body>
            <h1 id="title">%s</h1>
            <p><img id="logo" src="/static/logo.png" width="%d" height="%d" alt="logo"></p>
            <p id="status">loading</p>
            <pre id="results"></pre>
            <p><a id="next" href="/page2.html">On to the second page</a></p>
            </body>
            </html>
            """.formatted(TITLE, HEADING, IMAGE_SIZE, IMAGE_SIZE);

    private static final String PAGE2 = """
            <!doctype html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <title>%s</title>
            <link rel="stylesheet" href="/static/style.css">
            </head>
            <body>
            <h1 id="title">%s</h1>
            <p>Reached by following a link that has no token in it.</p>
            </body>
            </html>
            """.formatted(PAGE2_TITLE, PAGE2_HEADING);

    private static final String STYLE = """
            body { font-family: sans-serif; background: #eef6ff; margin: 2em; }
            h1 { color: %s; }
            #status { font-weight: bold; }
            """.formatted(HEADING_COLOR);

    private static final String APP = """
            (async () => {
              const results = {};
              results.css = getComputedStyle(document.getElementById('title')).color;
              const img = document.getElementById('logo');
              if (!img.complete) await new Promise(done => { img.onload = done; img.onerror = done; });
              results.image = img.naturalWidth + 'x' + img.naturalHeight;
              try {
                const r = await fetch('/api/data.json');
                results.fetch = r.status + ' ' + (await r.json()).source;
              } catch (e) {
                results.fetch = 'error: ' + e;
              }
              results.xhr = await new Promise(done => {
                const x = new XMLHttpRequest();
                x.open('GET', '/api/xhr.json');
                x.onload = () => {
                  try { done(x.status + ' ' + JSON.parse(x.responseText).source); }
                  catch (e) { done(x.status + ' error: ' + e); }
                };
                x.onerror = () => done('error');
                x.send();
              });
              window.arpResults = results;
              document.getElementById('results').textContent = JSON.stringify(results, null, 1);
              document.getElementById('status').textContent = '%s';
            })();
            """.formatted(DONE);

    private static final byte[] PNG = png();

    private static final AttachmentKey<Integer> CONN_ID = AttachmentKey.create(Integer.class);
    private static final AttachmentKey<AtomicInteger> CONN_REQUESTS = AttachmentKey.create(AtomicInteger.class);

    private final Undertow server;
    private final int port;
    private final AtomicInteger connections = new AtomicInteger();
    private final Queue<Request> requests = new ConcurrentLinkedQueue<>();

    private Site() {
        PathHandler paths = Handlers.path(ex -> send(ex, 404, "text/plain", "not found"))
                .addExactPath("/index.html", ex -> send(ex, 200, "text/html; charset=utf-8", INDEX))
                .addExactPath("/page2.html", ex -> send(ex, 200, "text/html; charset=utf-8", PAGE2))
                .addExactPath("/static/style.css", ex -> send(ex, 200, "text/css", STYLE))
                .addExactPath("/static/app.js", ex -> send(ex, 200, "text/javascript", APP))
                .addExactPath("/static/logo.png", ex -> {
                    ex.getResponseHeaders().put(Headers.CONTENT_TYPE, "image/png");
                    ex.getResponseSender().send(ByteBuffer.wrap(PNG));
                })
                .addExactPath("/api/data.json", ex -> send(ex, 200, "application/json", "{\"source\":\"fetch\",\"n\":42}"))
                .addExactPath("/api/xhr.json", ex -> send(ex, 200, "application/json", "{\"source\":\"xhr\",\"n\":7}"));
        HttpHandler root = ex -> {
            ServerConnection c = ex.getConnection();
            if (c.getAttachment(CONN_ID) == null) {
                c.putAttachment(CONN_ID, connections.incrementAndGet());
                c.putAttachment(CONN_REQUESTS, new AtomicInteger());
            }
            HeaderValues cookies = ex.getRequestHeaders().get(Headers.COOKIE);
            requests.add(new Request(c.getAttachment(CONN_ID), c.getAttachment(CONN_REQUESTS).incrementAndGet(),
                    ex.getRequestMethod().toString(), ex.getRequestPath(), ex.getQueryString(),
                    cookies == null ? null : String.join("; ", cookies)));
            paths.handleRequest(ex);
        };
        server = Undertow.builder().addHttpListener(0, "127.0.0.1").setIoThreads(2).setWorkerThreads(8).setHandler(root).build();
        server.start();
        port = ((InetSocketAddress) server.getListenerInfo().get(0).getAddress()).getPort();
    }

    public static Site start() { return new Site(); }

    public int port() { return port; }

    /** Every request so far, in arrival order. */
    public List<Request> requests() { return List.copyOf(requests); }

    private static void send(HttpServerExchange ex, int status, String type, String body) {
        ex.setStatusCode(status);
        ex.getResponseHeaders().put(Headers.CONTENT_TYPE, type);
        ex.getResponseHeaders().put(Headers.CACHE_CONTROL, "no-store");
        ex.getResponseSender().send(body);
    }

    /** A real PNG (encoded by ImageIO): a blue square with a green disc. */
    private static byte[] png() {
        BufferedImage img = new BufferedImage(IMAGE_SIZE, IMAGE_SIZE, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = img.createGraphics();
        g.setColor(new Color(0x1f4e8c));
        g.fillRect(0, 0, IMAGE_SIZE, IMAGE_SIZE);
        g.setColor(new Color(0x3cb371));
        g.fillOval(IMAGE_SIZE / 6, IMAGE_SIZE / 6, IMAGE_SIZE * 2 / 3, IMAGE_SIZE * 2 / 3);
        g.dispose();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try {
            if (!ImageIO.write(img, "png", out)) throw new IllegalStateException("no PNG writer");
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out.toByteArray();
    }

    @Override public void close() { server.stop(); }
}
