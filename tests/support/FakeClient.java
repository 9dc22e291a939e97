package arp.tests.support;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Deque;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * A minimal arpc speaking the wire protocol directly (frames: 4-byte big-endian length + UTF-8 JSON), so
 * pool and protocol tests control exactly when data connections are dialled, answered or dropped.
 * A reader thread queues the control frames arps sends; tests take them with timeouts.
 */
public final class FakeClient implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final JsonNode EOF = JSON.createObjectNode().put("_eof", true);

    public final String clientId;
    private final Socket control;
    private final OutputStream out;
    private final BlockingQueue<JsonNode> inbox = new LinkedBlockingQueue<>();
    private final Deque<JsonNode> requeued = new ArrayDeque<>();
    private final List<DataConn> dialled = new CopyOnWriteArrayList<>();
    private final List<Throwable> handlerErrors = new CopyOnWriteArrayList<>();
    private JsonNode registerResult, serverHello;
    private volatile boolean closed;

    private FakeClient(int controlPort, String clientId) throws IOException {
        this.clientId = clientId;
        this.control = open(controlPort);
        this.out = control.getOutputStream();
        DataInputStream in = new DataInputStream(control.getInputStream());
        control.setSoTimeout(0); // the reader thread blocks; waits are bounded by the inbox polls
        Thread.ofPlatform().daemon().name("fake-arpc-control").start(() -> {
            try {
                while (true) inbox.add(Frames.read(in));
            } catch (IOException e) {
                inbox.add(EOF);
            }
        });
    }

    /**
     * Connects to the control port and sends nothing: the test drives the registration itself with
     * {@link #send} and {@link #next} (e.g. an authenticated one, see {@link Auth}).
     */
    public static FakeClient connect(int controlPort, String clientId) throws IOException {
        return new FakeClient(controlPort, clientId);
    }

    /**
     * Connects to the control port, sends Register (and Hello when {@code hello}), and waits for
     * RegisterResult (and the server's Hello). Frames that arrive in between (RequestNewProxyConn) are kept
     * for {@link #nextProxyRequest}.
     */
    public static FakeClient register(int controlPort, String clientId, boolean hello) throws IOException {
        return register(controlPort, clientId, hello ? Frames.hello() : null);
    }

    /**
     * As {@link #register(int, String, boolean)} with a Hello announcing these features (e.g. heartbeat,
     * handover, reuse): a client that will dial reusable data connections.
     */
    public static FakeClient registerWithFeatures(int controlPort, String clientId, String... features) throws IOException {
        return register(controlPort, clientId, Frames.hello(List.of(features)));
    }

    private static FakeClient register(int controlPort, String clientId, String helloFrame) throws IOException {
        boolean hello = helloFrame != null;
        FakeClient c = new FakeClient(controlPort, clientId);
        try {
            c.send(Frames.register(clientId));
            if (hello) c.send(helloFrame);
            c.registerResult = c.next(Duration.ofSeconds(10));
            if (!c.registerResult.has("RegisterResult")) throw new AssertionError("expected RegisterResult first, got " + c.registerResult);
            if (hello) {
                List<JsonNode> before = new ArrayList<>();
                JsonNode f;
                while (true) {
                    f = c.poll(Duration.ofSeconds(10));
                    if (f == null || f == EOF) throw new AssertionError("fake arpc sent Hello but got no Hello back; frames so far: " + before);
                    if (f.has("Hello")) break;
                    before.add(f);
                }
                c.serverHello = f;
                Collections.reverse(before);
                before.forEach(c.requeued::addFirst);
            }
            return c;
        } catch (IOException | RuntimeException | Error e) {
            c.close();
            throw e;
        }
    }

    public JsonNode registerResult() { return registerResult; }

    /** The server's Hello frame, or null when this client did not send Hello. */
    public JsonNode serverHello() { return serverHello; }

    public void send(String json) throws IOException {
        synchronized (out) {
            out.write(Frames.encode(json));
            out.flush();
        }
    }

    /** The next control frame; fails on timeout or when arps closed the control connection. */
    public JsonNode next(Duration timeout) {
        JsonNode f = poll(timeout);
        if (f == null) throw new AssertionError("fake arpc: no control frame within " + timeout.toMillis() + " ms");
        if (f == EOF) throw new AssertionError("fake arpc: arps closed the control connection");
        return f;
    }

    /** The next control frame, {@link #isEof EOF marker} on close, or null on timeout. */
    public JsonNode poll(Duration timeout) {
        synchronized (requeued) {
            if (!requeued.isEmpty()) return requeued.pollFirst();
        }
        try {
            JsonNode f = inbox.poll(timeout.toMillis(), TimeUnit.MILLISECONDS);
            if (f == EOF) inbox.add(EOF); // stays visible to later polls
            return f;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted");
        }
    }

    public static boolean isEof(JsonNode f) { return f == EOF; }

    /** Puts frames taken early back in front of the inbox, in their order. */
    void requeue(java.util.Collection<JsonNode> frames) {
        synchronized (requeued) {
            requeued.addAll(frames);
        }
    }

    /** The proxy_conn_id of the next RequestNewProxyConn; answers server Pings, skips Pongs. */
    public String nextProxyRequest(Duration timeout) throws IOException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (true) {
            long left = Math.max(1, (deadline - System.nanoTime()) / 1_000_000);
            JsonNode f = next(Duration.ofMillis(left));
            if (f.has("RequestNewProxyConn")) return f.get("RequestNewProxyConn").get("proxy_conn_id").asText();
            if (f.has("Ping")) send(Frames.pong());
            else if (!f.has("Pong")) throw new AssertionError("fake arpc: expected RequestNewProxyConn, got " + f);
        }
    }

    /** Fails if a RequestNewProxyConn arrives within {@code window}. */
    public void assertNoProxyRequest(Duration window, String why) throws IOException {
        long deadline = System.nanoTime() + window.toNanos();
        long left;
        while ((left = (deadline - System.nanoTime()) / 1_000_000) > 0) {
            JsonNode f = poll(Duration.ofMillis(left));
            if (f == null || f == EOF) return;
            if (f.has("RequestNewProxyConn")) throw new AssertionError(why + ": unexpected " + f);
            if (f.has("Ping")) send(Frames.pong());
        }
    }

    /** Opens a data connection to the proxy port and sends NewProxyConn. */
    public DataConn dial(int proxyPort, String proxyConnId, boolean handover) throws IOException {
        DataConn d = new DataConn(open(proxyPort), proxyConnId);
        dialled.add(d);
        d.writeFrame(Frames.newProxyConn(proxyConnId, clientId, handover));
        return d;
    }

    /**
     * Opens a reusable data connection: NewProxyConn with {@code "handover":true,"reuse":true}. Per visitor
     * it gets StartProxy and the visitor's bytes as chunks, answers ProxyStarted and chunks, and ends each
     * direction with the end chunk; then the next StartProxy may come on it.
     */
    public DataConn dialReusable(int proxyPort, String proxyConnId) throws IOException {
        DataConn d = new DataConn(open(proxyPort), proxyConnId);
        dialled.add(d);
        d.writeFrame(Frames.newProxyConn(proxyConnId, clientId, true, true));
        return d;
    }

    /**
     * Every RequestNewProxyConn id arriving within {@code window} (answering Pings meanwhile). For tests
     * that count how many connections arps asked for.
     */
    public List<String> proxyRequestsWithin(Duration window) throws IOException {
        List<String> ids = new ArrayList<>();
        long deadline = System.nanoTime() + window.toNanos();
        long left;
        while ((left = (deadline - System.nanoTime()) / 1_000_000) > 0) {
            JsonNode f = poll(Duration.ofMillis(left));
            if (f == null || f == EOF) break;
            if (f.has("RequestNewProxyConn")) ids.add(f.get("RequestNewProxyConn").get("proxy_conn_id").asText());
            else if (f.has("Ping")) send(Frames.pong());
        }
        return ids;
    }

    /** What to do with each data connection dialled by {@link #answerRequests}. */
    public interface Handler {
        void handle(DataConn conn) throws Exception;
    }

    /**
     * From now on, dial every RequestNewProxyConn arps sends and run {@code handler} on the new data
     * connection in its own thread. The test must not read control frames itself after this.
     */
    public void answerRequests(int proxyPort, boolean handover, Handler handler) {
        Thread.ofPlatform().daemon().name("fake-arpc-answer").start(() -> {
            while (!closed) {
                JsonNode f = poll(Duration.ofMillis(200));
                if (f == null) continue;
                if (f == EOF) return;
                try {
                    if (f.has("Ping")) send(Frames.pong());
                    if (!f.has("RequestNewProxyConn")) continue;
                    DataConn d = dial(proxyPort, f.get("RequestNewProxyConn").get("proxy_conn_id").asText(), handover);
                    Thread.ofVirtual().start(() -> {
                        try {
                            handler.handle(d);
                        } catch (Throwable t) {
                            if (!closed) handlerErrors.add(t);
                        }
                    });
                } catch (IOException e) {
                    if (!closed) handlerErrors.add(e);
                }
            }
        });
    }

    public List<Throwable> handlerErrors() { return List.copyOf(handlerErrors); }

    /** Drops the control connection (arps should treat the client as gone). */
    public void closeControl() throws IOException { control.close(); }

    private static Socket open(int port) throws IOException {
        Socket s = new Socket();
        s.connect(new InetSocketAddress("127.0.0.1", port), 5_000);
        s.setTcpNoDelay(true);
        return s;
    }

    @Override public void close() {
        closed = true;
        try {
            control.close();
        } catch (IOException ignored) {
        }
        for (DataConn d : dialled) d.close();
    }

    /**
     * A data connection: frames first, raw bytes after StartProxy/ProxyStarted (or right away, legacy);
     * on a reusable one, chunks after StartProxy/ProxyStarted, and StartProxy again for the next visitor.
     */
    public static final class DataConn implements AutoCloseable {
        public final String proxyConnId;
        public final Socket socket;
        private final DataInputStream in; // unbuffered: frame reads never swallow the raw bytes behind them
        private final OutputStream out;

        DataConn(Socket socket, String proxyConnId) throws IOException {
            this.socket = socket;
            this.proxyConnId = proxyConnId;
            this.in = new DataInputStream(socket.getInputStream());
            this.out = socket.getOutputStream();
        }

        public JsonNode readFrame(Duration timeout) throws IOException {
            socket.setSoTimeout((int) timeout.toMillis());
            return Frames.read(in);
        }

        public void writeFrame(String json) throws IOException {
            out.write(Frames.encode(json));
            out.flush();
        }

        /** Raw bytes up to and including the blank line ending an HTTP head. */
        public String readHead(Duration timeout) throws IOException {
            socket.setSoTimeout((int) timeout.toMillis());
            return Bytes.ascii(RawHttp.readHead(in));
        }

        public String readExactly(int n, Duration timeout) throws IOException {
            socket.setSoTimeout((int) timeout.toMillis());
            byte[] b = in.readNBytes(n);
            if (b.length < n) throw new EOFException("data connection closed after " + b.length + " of " + n + " bytes");
            return Bytes.ascii(b);
        }

        public void writeRaw(String ascii) throws IOException {
            out.write(Bytes.ascii(ascii));
            out.flush();
        }

        /** Any bytes in one write (frames, chunks, or parts of them). */
        public void writeBytes(byte[] b) throws IOException {
            out.write(b);
            out.flush();
        }

        // ---- reusable connections: chunks ----

        /** One chunk with {@code ascii} as its data. */
        public void writeChunk(String ascii) throws IOException { writeBytes(Chunks.chunk(ascii)); }

        /** The end chunk: this direction of the current visitor's stream is over. */
        public void writeEnd() throws IOException { writeBytes(Chunks.end()); }

        /** The next chunk's data; empty for the end chunk. A length outside 0..65532 fails. */
        public byte[] readChunk(Duration timeout) throws IOException {
            socket.setSoTimeout((int) timeout.toMillis());
            return Chunks.read(in);
        }

        /** The data of all chunks up to and including the end chunk. */
        public byte[] readUntilEnd(Duration timeout) throws IOException { return readUntilEnd(timeout, 1 << 20, null); }

        public byte[] readUntilEnd(Duration timeout, int limit, Chunks.Stats stats) throws IOException {
            socket.setSoTimeout((int) timeout.toMillis());
            return Chunks.readUntilEnd(in, limit, stats);
        }

        /**
         * Chunks until {@code ascii} has arrived, exactly and with nothing more (chunk boundaries may fall
         * anywhere in it); fails if the end chunk or other bytes come instead.
         */
        public void expectChunkedData(String ascii, Duration timeout) throws IOException {
            byte[] want = Bytes.ascii(ascii);
            java.io.ByteArrayOutputStream got = new java.io.ByteArrayOutputStream();
            while (got.size() < want.length) {
                byte[] c = readChunk(timeout);
                if (c.length == 0) {
                    throw new AssertionError("end chunk after " + got.size() + " of " + want.length + " expected bytes: got "
                            + Bytes.ascii(got.toByteArray()) + ", expected " + ascii);
                }
                got.writeBytes(c);
            }
            if (!java.util.Arrays.equals(want, got.toByteArray())) {
                throw new AssertionError("chunked data differs: expected [" + ascii + "] got [" + Bytes.ascii(got.toByteArray()) + "]");
            }
        }

        /** Expects StartProxy; returns its {@code visitor} field. */
        public String expectStartProxy(Duration timeout) throws IOException {
            JsonNode start = readFrame(timeout);
            if (!start.has("StartProxy")) throw new AssertionError("expected StartProxy, got " + start);
            return start.path("StartProxy").path("visitor").asText(null);
        }

        /**
         * One visitor on a reusable connection, the usual way round: StartProxy, the request head in chunks,
         * then ProxyStarted, {@code response} as one chunk and the end chunk; then chunks until the visitor's
         * end chunk. Returns the request head.
         */
        public String serveReusable(String response, Duration timeout) throws IOException {
            expectStartProxy(timeout);
            String head = readChunkedHead(timeout);
            writeBytes(Chunks.concat(Frames.encode(Frames.proxyStarted()), Chunks.chunk(response), Chunks.end()));
            byte[] rest = readUntilEnd(timeout);
            if (rest.length > 0) throw new AssertionError("unexpected bytes after the request head: " + Bytes.ascii(rest));
            return head;
        }

        /** Chunk data up to the blank line of an HTTP head; fails if a chunk carries bytes past it. */
        public String readChunkedHead(Duration timeout) throws IOException {
            java.io.ByteArrayOutputStream got = new java.io.ByteArrayOutputStream();
            while (true) {
                byte[] c = readChunk(timeout);
                if (c.length == 0) throw new AssertionError("end chunk inside a request head: " + Bytes.ascii(got.toByteArray()));
                got.writeBytes(c);
                byte[] b = got.toByteArray();
                int end = Bytes.headEnd(b, b.length);
                if (end == b.length) return Bytes.ascii(b);
                if (end > 0) throw new AssertionError("bytes after the head in the same chunk: " + Bytes.ascii(b));
            }
        }

        /** Handover server side: expects StartProxy, answers ProxyStarted, reads the head, writes {@code response}. */
        public JsonNode serve(String response, Duration timeout) throws IOException {
            JsonNode start = readFrame(timeout);
            if (!start.has("StartProxy")) throw new AssertionError("expected StartProxy, got " + start);
            writeFrame(Frames.proxyStarted());
            readHead(timeout);
            writeRaw(response);
            return start;
        }

        @Override public void close() {
            try {
                socket.close();
            } catch (IOException ignored) {
            }
        }
    }

    /** Frame encoding and the messages a client sends. */
    public static final class Frames {
        private Frames() {}

        public static byte[] encode(String json) {
            byte[] body = json.getBytes(StandardCharsets.UTF_8);
            return ByteBuffer.allocate(4 + body.length).putInt(body.length).put(body).array();
        }

        /** A frame with an arbitrary declared length followed by {@code payload} (for malformed-input tests). */
        public static byte[] lengthPrefixed(int declaredLength, byte[] payload) {
            return ByteBuffer.allocate(4 + payload.length).putInt(declaredLength).put(payload).array();
        }

        public static JsonNode read(DataInputStream in) throws IOException {
            int len = in.readInt();
            if (len < 0 || len > 1 << 20) throw new IOException("implausible frame length from arps: " + len);
            byte[] b = new byte[len];
            in.readFully(b);
            return JSON.readTree(b);
        }

        private static String msg(String command, Object... kv) {
            Map<String, Object> body = new LinkedHashMap<>();
            for (int i = 0; i < kv.length; i += 2) body.put((String) kv[i], kv[i + 1]);
            try {
                return JSON.writeValueAsString(Map.of(command, body));
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }

        public static String register(String clientId) { return msg("Register", "client_id", clientId); }

        public static String hello() { return hello(List.of("heartbeat", "handover")); }

        public static String hello(List<String> features) { return msg("Hello", "version", 1, "features", features); }

        public static String newProxyConn(String proxyConnId, String clientId, boolean handover) {
            return handover ? msg("NewProxyConn", "proxy_conn_id", proxyConnId, "client_id", clientId, "handover", true)
                    : msg("NewProxyConn", "proxy_conn_id", proxyConnId, "client_id", clientId);
        }

        /** As arpc writes it: {@code reuse} only with {@code handover}, each field only when true. */
        public static String newProxyConn(String proxyConnId, String clientId, boolean handover, boolean reuse) {
            if (!reuse) return newProxyConn(proxyConnId, clientId, handover);
            return msg("NewProxyConn", "proxy_conn_id", proxyConnId, "client_id", clientId, "handover", handover, "reuse", true);
        }

        public static String proxyStarted() { return msg("ProxyStarted"); }

        public static String proxyFailed(String error) { return msg("ProxyFailed", "error", error); }

        public static String ping() { return msg("Ping"); }

        public static String pong() { return msg("Pong"); }
    }
}
