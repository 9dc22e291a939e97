package arp.tests.support;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.BufferedInputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A relay played by the test, in front of a real arpc: a control and a proxy {@link ServerSocket} on
 * 127.0.0.1:0. Nothing is sent unless the test sends it, so a test can play our arps (RegisterResult
 * then Hello) or the original Rust arps (RegisterResult only, then RequestNewProxyConn; it reads and
 * ignores every further byte on the control connection and never answers a Ping).
 * <p>
 * Every accepted control connection gets a reader thread that keeps reading, as the original does, and
 * records the exact JSON text of each frame, so tests can check arpc's bytes. A frame that is not a
 * well-formed frame (bad length, invalid UTF-8, not a single tagged JSON object) is recorded as a problem.
 * Register with {@code env.own(FakeRelay.start())}: closing it closes both listeners and every accepted
 * socket, which ends all its threads.
 */
public final class FakeRelay implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Object EOF = new Object();
    private static final int MAX_FRAME = 64 * 1024;

    private final ServerSocket control;
    private final ServerSocket proxy;
    private final BlockingQueue<ControlConn> controls = new LinkedBlockingQueue<>();
    private final BlockingQueue<DataConn> datas = new LinkedBlockingQueue<>();
    private final Set<Socket> open = ConcurrentHashMap.newKeySet();
    private final AtomicInteger controlCount = new AtomicInteger();
    private volatile boolean closed;

    private FakeRelay() throws IOException {
        InetAddress lo = InetAddress.getByName("127.0.0.1");
        control = new ServerSocket(0, 50, lo);
        try {
            proxy = new ServerSocket(0, 50, lo);
        } catch (IOException e) {
            control.close();
            throw e;
        }
        Thread.ofPlatform().daemon().name("fake-arps-control-accept").start(() -> acceptLoop(control, true));
        Thread.ofPlatform().daemon().name("fake-arps-proxy-accept").start(() -> acceptLoop(proxy, false));
    }

    public static FakeRelay start() {
        try {
            return new FakeRelay();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private void acceptLoop(ServerSocket server, boolean isControl) {
        while (!closed) {
            Socket s;
            try {
                s = server.accept();
            } catch (IOException e) {
                return; // closed
            }
            open.add(s);
            if (closed) { // raced with close(): do not leave it open
                closeQuietly(s);
                return;
            }
            try {
                s.setTcpNoDelay(true);
                if (isControl) {
                    controlCount.incrementAndGet();
                    controls.add(new ControlConn(s));
                } else {
                    datas.add(new DataConn(s));
                }
            } catch (IOException e) {
                closeQuietly(s);
            }
        }
    }

    public int controlPort() { return control.getLocalPort(); }

    public int proxyPort() { return proxy.getLocalPort(); }

    /** For {@link TestEnv#arpcArgs}: this relay's ports (it has no process and no public port). */
    public TestEnv.Relay asRelay() { return new TestEnv.Relay(null, controlPort(), proxyPort(), 0); }

    /** Control connections accepted so far. */
    public int controlConnections() { return controlCount.get(); }

    /** The next control connection arpc opens; fails on timeout. */
    public ControlConn nextControl(Duration timeout) throws InterruptedException {
        ControlConn c = controls.poll(timeout.toMillis(), TimeUnit.MILLISECONDS);
        if (c == null) throw new AssertionError("fake arps: no control connection within " + timeout.toMillis() + " ms");
        return c;
    }

    /**
     * The next control connection from {@code arpc}; fails at once, with arpc's exit code and last log
     * lines, if arpc exits instead of connecting.
     */
    public ControlConn nextControl(Duration timeout, Proc arpc) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (true) {
            ControlConn c = controls.poll(100, TimeUnit.MILLISECONDS);
            if (c != null) return c;
            if (!arpc.isAlive()) {
                int code = arpc.awaitExit(Duration.ofSeconds(2));
                List<String> err = arpc.stderr();
                throw new AssertionError(arpc.name + " exited with " + code + " instead of opening control connection #"
                        + (controlConnections() + 1) + "; last stderr lines: "
                        + String.join(" | ", err.subList(Math.max(0, err.size() - 3), err.size())));
            }
            if (System.nanoTime() > deadline) {
                throw new AssertionError("fake arps: no control connection within " + timeout.toMillis() + " ms");
            }
        }
    }

    /** Fails if arpc opens another control connection within {@code window}. */
    public void assertNoControlConnection(Duration window, String why) throws InterruptedException {
        ControlConn c = controls.poll(Math.max(0, window.toMillis()), TimeUnit.MILLISECONDS);
        if (c != null) throw new AssertionError(why + ": arpc opened another control connection (#" + controlConnections() + ")");
    }

    /** The next data connection arpc opens on the proxy port; fails on timeout. */
    public DataConn nextData(Duration timeout) throws InterruptedException {
        DataConn d = datas.poll(timeout.toMillis(), TimeUnit.MILLISECONDS);
        if (d == null) throw new AssertionError("fake arps: no data connection within " + timeout.toMillis() + " ms");
        return d;
    }

    @Override public void close() {
        closed = true;
        closeQuietly(control);
        closeQuietly(proxy);
        for (Socket s : open) closeQuietly(s);
    }

    private static void closeQuietly(AutoCloseable c) {
        try {
            c.close();
        } catch (Exception ignored) {
        }
    }

    // ---- what a relay sends, byte for byte as the original writes it (and our arps's Hello) ----

    public static String registerResult(boolean success, String error) {
        try {
            return "{\"RegisterResult\":{\"success\":" + success + ",\"error\":" + JSON.writeValueAsString(error) + "}}";
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    public static final String REGISTER_OK = "{\"RegisterResult\":{\"success\":true,\"error\":null}}";

    public static String requestNewProxyConn(String proxyConnId) {
        return "{\"RequestNewProxyConn\":{\"proxy_conn_id\":\"" + proxyConnId + "\"}}";
    }

    /** Our arps's Hello, announcing heartbeats and handover. */
    public static String hello(int publicPort) {
        return "{\"Hello\":{\"version\":1,\"features\":[\"heartbeat\",\"handover\"],\"public_port\":" + publicPort + "}}";
    }

    /** A Hello announcing exactly these features (e.g. heartbeat, handover, reuse). */
    public static String hello(int publicPort, String... features) {
        StringBuilder f = new StringBuilder();
        for (String x : features) f.append(f.isEmpty() ? "" : ",").append('"').append(x).append('"');
        return "{\"Hello\":{\"version\":1,\"features\":[" + f + "],\"public_port\":" + publicPort + "}}";
    }

    /** A frame (length prefix and JSON) as bytes, to combine with chunks in one write. */
    public static byte[] encode(String json) { return frame(json); }

    /** What arpc must send first: the original's Register, byte for byte. */
    public static String register(String clientId) { return "{\"Register\":{\"client_id\":\"" + clientId + "\"}}"; }

    /** What arpc must send first on a data connection to the original relay (no handover field). */
    public static String legacyNewProxyConn(String proxyConnId, String clientId) {
        return "{\"NewProxyConn\":{\"proxy_conn_id\":\"" + proxyConnId + "\",\"client_id\":\"" + clientId + "\"}}";
    }

    public static JsonNode parse(String json) {
        try {
            return JSON.readTree(json);
        } catch (IOException e) {
            throw new AssertionError("not JSON: " + json, e);
        }
    }

    private static byte[] frame(String json) {
        byte[] body = json.getBytes(StandardCharsets.UTF_8);
        return ByteBuffer.allocate(4 + body.length).putInt(body.length).put(body).array();
    }

    /**
     * One frame's JSON text, checked as the wire format requires: length 1..64 KiB, strict UTF-8, one
     * JSON object with a single key whose value is an object. Throws {@link MalformedFrame} otherwise.
     */
    static String readFrame(DataInputStream in) throws IOException {
        int len = in.readInt();
        if (len <= 0 || len > MAX_FRAME) throw new MalformedFrame("frame length " + Integer.toUnsignedString(len) + " outside 1.." + MAX_FRAME);
        byte[] b = in.readNBytes(len);
        if (b.length < len) throw new EOFException("connection closed inside a frame (" + b.length + " of " + len + " bytes)");
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(b)).toString();
        } catch (CharacterCodingException e) {
            throw new MalformedFrame("frame is not UTF-8: " + Bytes.ascii(b));
        }
        JsonNode n;
        try {
            n = JSON.readTree(text);
        } catch (IOException e) {
            throw new MalformedFrame("frame is not JSON: " + text);
        }
        if (n == null || !n.isObject() || n.size() != 1 || !n.elements().next().isObject()) {
            throw new MalformedFrame("frame is not a single tagged message: " + text);
        }
        return text;
    }

    static final class MalformedFrame extends IOException {
        MalformedFrame(String message) { super(message); }
    }

    /** A control connection from arpc. */
    public static final class ControlConn {
        public final Socket socket;
        private final OutputStream out;
        private final BlockingQueue<Object> inbox = new LinkedBlockingQueue<>();
        private final List<String> received = new CopyOnWriteArrayList<>();
        private final List<String> problems = new CopyOnWriteArrayList<>();
        private volatile boolean eof;
        private volatile long lastSent = System.nanoTime();

        ControlConn(Socket socket) throws IOException {
            this.socket = socket;
            this.out = socket.getOutputStream();
            DataInputStream in = new DataInputStream(new BufferedInputStream(socket.getInputStream()));
            Thread.ofPlatform().daemon().name("fake-arps-control-read").start(() -> {
                try {
                    while (true) {
                        String f = readFrame(in);
                        received.add(f);
                        inbox.add(f);
                    }
                } catch (MalformedFrame e) {
                    problems.add(e.getMessage());
                } catch (IOException e) {
                    // EOF, reset, or closed by the test
                } finally {
                    eof = true;
                    inbox.add(EOF);
                }
            });
        }

        /** Writes one frame (and flushes), as the relay would. */
        public void send(String json) throws IOException {
            synchronized (out) {
                out.write(frame(json));
                out.flush();
                lastSent = System.nanoTime();
            }
        }

        /** {@link System#nanoTime} of the last frame the test sent here (arpc's silence clock starts there). */
        public long lastSent() { return lastSent; }

        /** The exact JSON text of the next frame arpc sent; fails on timeout, EOF or a malformed frame. */
        public String nextFrame(Duration timeout) throws InterruptedException {
            Object f = inbox.poll(timeout.toMillis(), TimeUnit.MILLISECONDS);
            if (f == EOF) {
                inbox.add(EOF);
                throw new AssertionError("fake arps: control connection ended" + (problems.isEmpty() ? "" : ": " + problems));
            }
            if (f == null) throw new AssertionError("fake arps: no control frame within " + timeout.toMillis() + " ms");
            return (String) f;
        }

        /** Every frame arpc sent on this connection so far, in order (whether or not taken by {@link #nextFrame}). */
        public List<String> received() { return new ArrayList<>(received); }

        /** Descriptions of malformed frames (the reader stops at the first one). */
        public List<String> problems() { return List.copyOf(problems); }

        /** Whether arpc closed (or reset) this connection, or the reader stopped. */
        public boolean ended() { return eof; }

        /** Closes the connection from the relay's side (a relay that went away). */
        public void close() { closeQuietly(socket); }

        /** Passes once the connection ended within {@code timeout}. */
        public void awaitEnd(Duration timeout, String what) throws InterruptedException {
            long deadline = System.nanoTime() + timeout.toNanos();
            while (!eof) {
                if (System.nanoTime() > deadline) throw new AssertionError(what + ": control connection still open after " + timeout.toMillis() + " ms");
                Thread.sleep(20);
            }
        }
    }

    /** A data connection from arpc on the proxy port: a NewProxyConn frame, then raw bytes. */
    public static final class DataConn {
        public final Socket socket;
        private final DataInputStream in; // one buffered stream for the frame and the raw bytes behind it
        private final OutputStream out;

        DataConn(Socket socket) throws IOException {
            this.socket = socket;
            this.in = new DataInputStream(new BufferedInputStream(socket.getInputStream()));
            this.out = socket.getOutputStream();
        }

        /** The exact JSON text of the next frame. */
        public String readFrame(Duration timeout) throws IOException {
            socket.setSoTimeout((int) timeout.toMillis());
            return FakeRelay.readFrame(in);
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

        /** On a reusable connection: the next chunk's data, empty for the end chunk. */
        public byte[] readChunk(Duration timeout) throws IOException {
            socket.setSoTimeout((int) timeout.toMillis());
            return Chunks.read(in);
        }

        /** On a reusable connection: all chunk data up to and including the end chunk. */
        public byte[] readUntilEnd(Duration timeout) throws IOException {
            socket.setSoTimeout((int) timeout.toMillis());
            return Chunks.readUntilEnd(in, 1 << 20, null);
        }

        /** One HTTP response from arpc's side. */
        public RawHttp.Response readResponse(Duration timeout) throws IOException {
            socket.setSoTimeout((int) timeout.toMillis());
            return RawHttp.readResponse(in);
        }

        /** Passes if arpc closes the connection within {@code timeout} (bytes before the close are skipped). */
        public void awaitClosedByPeer(Duration timeout, String what) throws IOException {
            long deadline = System.nanoTime() + timeout.toNanos();
            byte[] buf = new byte[8192];
            while (true) {
                long left = (deadline - System.nanoTime()) / 1_000_000;
                if (left <= 0) throw new AssertionError(what + ": data connection still open after " + timeout.toMillis() + " ms");
                socket.setSoTimeout((int) Math.max(1, left));
                try {
                    if (in.read(buf) < 0) return;
                } catch (SocketTimeoutException e) {
                    // re-check the deadline
                } catch (IOException e) {
                    return; // reset counts as closed
                }
            }
        }
    }
}
