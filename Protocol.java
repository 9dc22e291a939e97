//DEPS com.fasterxml.jackson.core:jackson-databind:2.23.0
package arp;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.annotation.JsonPropertyOrder;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.SocketOption;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.channels.CancelledKeyException;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.NetworkChannel;
import java.nio.channels.SelectableChannel;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Instant;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.PriorityQueue;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.Executor;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * What arps and arpc share: the wire messages and their framing, the event loops, and the byte pump
 * that splices two sockets together.
 *
 * <h2>Wire protocol</h2>
 * Every frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON; a message is
 * externally tagged ({@code {"Register":{"client_id":"x"}}}). The first four messages are the Rust
 * original's, byte for byte. Everything else is an addition that is only ever sent to a peer that
 * announced it understands it, so an original arps or arpc keeps working with ours:
 * <ul>
 *   <li>{@code Hello}: arpc sends it right after {@code Register}; the original arps ignores every byte
 *       after {@code Register}. Our arps answers with its own {@code Hello}; an arpc that never gets one
 *       knows it talks to the original.</li>
 *   <li>{@code Ping}/{@code Pong}: heartbeats on the control connection (the original arps ignores the
 *       pings, which also keep its 90 s idle timer from firing).</li>
 *   <li>{@code NewProxyConn.handover=true} marks a data connection on which arps announces a visitor with
 *       {@code StartProxy} and arpc answers {@code ProxyStarted} or {@code ProxyFailed} before raw bytes
 *       flow. That lets arpc connect to the local service when a visitor arrives (even for protocols where
 *       the server speaks first) and lets arps retry a visitor on another connection if a pooled one died.
 *       Without the flag arps writes the visitor's bytes straight away, as the original does.</li>
 *   <li>{@code Challenge}/{@code Auth}: when arps requires a secret it answers Register with a Challenge
 *       instead of RegisterResult (see {@link Proofs}); data connections then carry a proof too.</li>
 *   <li>{@code TcpPort}, {@code AddTokens}: a dedicated raw TCP port and extra visitor tokens.</li>
 * </ul>
 */
public final class Protocol {
    private Protocol() {}

    public static final String VERSION = "0.1.0";
    /** Version of our protocol additions, sent in Hello. */
    public static final int PROTOCOL_VERSION = 1;
    /** Largest frame either side accepts; a bigger length prefix closes the connection. */
    public static final int MAX_FRAME = 64 * 1024;
    public static final int SOCKET_BUFFER = 256 * 1024;
    public static final String FEATURE_HEARTBEAT = "heartbeat";
    public static final String FEATURE_HANDOVER = "handover";
    public static final String FEATURE_TCP_PORTS = "tcp-ports";
    public static final String FEATURE_REUSE = "reuse";
    public static final String FEATURE_TOKENS = "tokens";
    /** Extra tokens a client may register besides its id. */
    public static final int MAX_TOKENS = 16;

    // ------------------------------------------------------------------------------------------------
    // Messages

    public sealed interface Message
            permits Register, RegisterResult, RequestNewProxyConn, NewProxyConn,
                    Hello, Ping, Pong, StartProxy, ProxyStarted, ProxyFailed, TcpPort, TcpPortResult,
                    Challenge, Auth, AddTokens, AddTokensResult {}

    /** arpc → arps, first frame on the control connection. */
    public record Register(@JsonProperty("client_id") String clientId) implements Message {}

    /**
     * arps → arpc, the answer to Register. {@code error} is always written, as null when absent.
     * {@code retry} is ours, only on refusals that may pass later (relay full, id in use), and omitted
     * otherwise, so the original's frame stays the same.
     */
    @JsonPropertyOrder({"success", "error", "retry"})
    public record RegisterResult(boolean success, String error,
                                 @JsonInclude(JsonInclude.Include.NON_NULL) Boolean retry) implements Message {
        public RegisterResult(boolean success, String error) { this(success, error, null); }

        public boolean retryable() { return Boolean.TRUE.equals(retry); }
    }

    /** arps → arpc on control: open a data connection carrying this id. */
    public record RequestNewProxyConn(@JsonProperty("proxy_conn_id") String proxyConnId) implements Message {}

    /**
     * arpc → arps, first frame on a data connection. {@code handover} and {@code reuse} are ours and
     * omitted when null: the original's frame stays byte for byte the same.
     */
    @JsonPropertyOrder({"proxy_conn_id", "client_id", "handover", "reuse", "proof"})
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record NewProxyConn(@JsonProperty("proxy_conn_id") String proxyConnId,
                               @JsonProperty("client_id") String clientId,
                               Boolean handover, Boolean reuse,
                               /** {@link Proofs#conn}: binds the connection to an authenticated session. */
                               String proof) implements Message {
        public NewProxyConn(String proxyConnId, String clientId, Boolean handover) {
            this(proxyConnId, clientId, handover, null, null);
        }

        public NewProxyConn(String proxyConnId, String clientId, Boolean handover, Boolean reuse) {
            this(proxyConnId, clientId, handover, reuse, null);
        }

        public boolean wantsHandover() { return Boolean.TRUE.equals(handover); }

        /** Chunked streams, so the connection can serve one visitor after another. */
        public boolean wantsReuse() { return wantsHandover() && Boolean.TRUE.equals(reuse); }
    }

    /**
     * Both directions on control: which additions the sender understands. From arpc also its
     * authentication nonce and its install's owner tag ({@link Proofs#ownerTag}); from arps how visitors
     * reach it (public port, whether it speaks HTTPS there, the --domain for host routing).
     */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record Hello(int version, List<String> features, @JsonProperty("public_port") Integer publicPort,
                        String nonce, String owner, @JsonProperty("public_tls") Boolean publicTls, String domain)
            implements Message {
        public Hello(int version, List<String> features, Integer publicPort) {
            this(version, features, publicPort, null, null, null, null);
        }

        public boolean has(String feature) { return features != null && features.contains(feature); }
    }

    public record Ping() implements Message {}

    public record Pong() implements Message {}

    /** arps → arpc on a handover data connection: a visitor is attached; its bytes follow. */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record StartProxy(String visitor) implements Message {}

    /** arpc → arps: the local service is connected; raw bytes follow. */
    public record ProxyStarted() implements Message {}

    /** arpc → arps: the local service could not be reached; the connection closes. */
    public record ProxyFailed(String error) implements Message {}

    /** arpc → arps on control: give me a dedicated public port for raw TCP (0 = any free one). */
    public record TcpPort(int port) implements Message {}

    /** arps → arpc: the dedicated port, or why there is none. */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record TcpPortResult(boolean success, Integer port, String error) implements Message {}

    /**
     * arps → arpc instead of RegisterResult when the relay requires a secret: its fresh nonce, and its
     * own proof that it knows the client's secret ({@link Proofs#relay}).
     */
    public record Challenge(String nonce, String proof) implements Message {}

    /** arpc → arps: the answer to Challenge ({@link Proofs#client}); RegisterResult follows. */
    public record Auth(String proof) implements Message {}

    /** arpc → arps on control: route visitors with these tokens to me too. */
    public record AddTokens(List<String> tokens) implements Message {}

    /** arps → arpc: all tokens were added, or none and why. */
    @JsonPropertyOrder({"success", "error"})
    public record AddTokensResult(boolean success, String error) implements Message {}

    /** A frame that cannot be accepted: too large, not JSON, or not a message we know. */
    public static final class ProtocolException extends IOException {
        public ProtocolException(String message) { super(message); }
    }

    // ------------------------------------------------------------------------------------------------
    // Framing

    public static final class Frames {
        private Frames() {}

        static final ObjectMapper JSON = new ObjectMapper()
                .configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, false)
                .configure(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES, true)
                .configure(SerializationFeature.FAIL_ON_EMPTY_BEANS, false);

        /** Every message by its wire name: the permitted subtypes of the sealed interface. */
        @SuppressWarnings("unchecked")
        private static final Map<String, Class<? extends Message>> TYPES = java.util.Arrays.stream(Message.class.getPermittedSubclasses())
                .collect(java.util.stream.Collectors.toUnmodifiableMap(Class::getSimpleName, c -> (Class<? extends Message>) c));

        /** The JSON text of a message, without the length prefix. */
        public static String toJson(Message message) {
            ObjectNode root = JSON.createObjectNode();
            root.set(message.getClass().getSimpleName(), JSON.valueToTree(message));
            try {
                return JSON.writeValueAsString(root);
            } catch (JsonProcessingException e) {
                throw new IllegalStateException(e);
            }
        }

        /** A complete frame: length prefix and JSON. */
        public static byte[] encode(Message message) {
            byte[] json = toJson(message).getBytes(StandardCharsets.UTF_8);
            byte[] frame = new byte[4 + json.length];
            ByteBuffer.wrap(frame).putInt(json.length).put(json);
            return frame;
        }

        public static Message decode(byte[] json, int offset, int length) throws ProtocolException {
            JsonNode root;
            try {
                root = JSON.readTree(json, offset, length);
            } catch (IOException e) {
                throw new ProtocolException("invalid JSON in frame");
            }
            if (root == null || !root.isObject() || root.size() != 1) {
                throw new ProtocolException("frame is not a single tagged message");
            }
            String name = root.fieldNames().next();
            Class<? extends Message> type = TYPES.get(name);
            if (type == null) throw new ProtocolException("unknown command " + printable(name));
            JsonNode body = root.get(name);
            if (!body.isObject()) throw new ProtocolException("command " + name + " has no object body");
            Message message;
            try {
                message = JSON.treeToValue(body, type);
            } catch (IOException | IllegalArgumentException e) {
                throw new ProtocolException("malformed " + name);
            }
            checkRequired(message);
            return message;
        }

        private static void checkRequired(Message m) throws ProtocolException {
            String missing = switch (m) {
                case Register r when r.clientId() == null -> "client_id";
                case RequestNewProxyConn r when r.proxyConnId() == null -> "proxy_conn_id";
                case NewProxyConn n when n.proxyConnId() == null -> "proxy_conn_id";
                case NewProxyConn n when n.clientId() == null -> "client_id";
                case Challenge c when c.nonce() == null || c.proof() == null -> "nonce or proof";
                case Auth a when a.proof() == null -> "proof";
                case AddTokens t when t.tokens() == null -> "tokens";
                default -> null;
            };
            if (missing != null) {
                throw new ProtocolException("malformed " + m.getClass().getSimpleName() + ": no " + missing);
            }
        }

        /** Reads one frame from a blocking stream; EOF before the first byte is {@link EOFException}. */
        public static Message read(InputStream in) throws IOException {
            DataInputStream data = in instanceof DataInputStream d ? d : new DataInputStream(in);
            int length = data.readInt();
            checkLength(length);
            byte[] json = data.readNBytes(length);
            if (json.length < length) throw new EOFException("connection closed inside a frame");
            return decode(json, 0, length);
        }

        public static void write(OutputStream out, Message... messages) throws IOException {
            if (messages.length == 1) {
                out.write(encode(messages[0]));
            } else {
                java.io.ByteArrayOutputStream all = new java.io.ByteArrayOutputStream();
                for (Message m : messages) all.write(encode(m));
                out.write(all.toByteArray()); // one write, so the frames usually travel in one segment
            }
            out.flush();
        }

        static void checkLength(int length) throws ProtocolException {
            if (length <= 0 || length > MAX_FRAME) {
                throw new ProtocolException("frame length " + Integer.toUnsignedString(length)
                        + " outside 1.." + MAX_FRAME);
            }
        }

        private static String printable(String s) {
            String cut = s.length() > 40 ? s.substring(0, 40) + "…" : s;
            return cut.replaceAll("[^\\x20-\\x7e]", "?");
        }
    }

    /**
     * Reads one frame from a non-blocking channel across several readiness events. Bytes that arrive
     * after the frame are kept: on a data connection they belong to the spliced stream.
     */
    public static final class FrameReader {
        private ByteBuffer buffer = ByteBuffer.allocate(512);

        public FrameReader() {}

        /** A reader that first parses bytes already read from the channel. */
        public FrameReader(ByteBuffer alreadyRead) {
            if (alreadyRead.remaining() > buffer.capacity()) grow(alreadyRead.remaining());
            buffer.put(alreadyRead);
        }

        /** The next message, or null if more bytes are needed. Throws EOFException on end of stream. */
        public Message read(SocketChannel channel) throws IOException {
            while (true) {
                Message m = parse();
                if (m != null) return m;
                if (!buffer.hasRemaining()) grow();
                int n = channel.read(buffer);
                if (n < 0) throw new EOFException("connection closed before a complete frame");
                if (n == 0) return null;
            }
        }

        private Message parse() throws ProtocolException {
            if (buffer.position() < 4) return null;
            int length = buffer.getInt(0);
            Frames.checkLength(length);
            if (buffer.position() < 4 + length) {
                if (buffer.capacity() < 4 + length) grow(4 + length);
                return null;
            }
            Message m = Frames.decode(buffer.array(), 4, length);
            buffer.flip().position(4 + length);
            buffer.compact();
            return m;
        }

        private void grow() { grow(buffer.capacity() * 2); }

        private void grow(int capacity) {
            ByteBuffer bigger = ByteBuffer.allocate(Math.min(Math.max(capacity, 512), 4 + MAX_FRAME));
            buffer.flip();
            bigger.put(buffer);
            buffer = bigger;
        }

        public boolean hasLeftover() { return buffer.position() > 0; }

        /** Bytes received after the last frame, ready to read (may be empty). */
        public ByteBuffer leftover() {
            ByteBuffer copy = buffer.duplicate().flip();
            return ByteBuffer.allocate(copy.remaining()).put(copy).flip();
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Logging: one line per event on stderr, stdout stays free for machine-readable output.

    public enum Level { ERROR, WARN, INFO, DEBUG, TRACE }

    public static final class Log {
        private Log() {}

        private static volatile Level threshold = Level.INFO;
        private static volatile String program = "arp";

        /** Sets the level from an option value, else from ARP_LOG, else INFO. */
        public static void configure(String programName, String option) {
            program = programName;
            String value = option != null ? option : System.getenv("ARP_LOG");
            if (value == null || value.isBlank()) value = "info";
            threshold = parseLevel(value);
        }

        public static Level parseLevel(String value) {
            try {
                return Level.valueOf(value.trim().toUpperCase(Locale.ROOT));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("unknown log level '" + value
                        + "' (use error, warn, info, debug or trace)");
            }
        }

        public static boolean enabled(Level level) { return level.ordinal() <= threshold.ordinal(); }

        public static void error(String msg) { log(Level.ERROR, msg); }
        public static void warn(String msg) { log(Level.WARN, msg); }
        public static void info(String msg) { log(Level.INFO, msg); }
        public static void debug(String msg) { log(Level.DEBUG, msg); }

        public static void log(Level level, String msg) {
            if (!enabled(level)) return;
            String line = Instant.now() + " " + String.format("%-5s", level) + " " + program + ": " + msg;
            System.err.println(line);
        }

        /** A token as it may appear in a log: its first four characters at most. */
        public static String mask(String token) {
            if (token == null) return "-";
            return (token.length() <= 4 ? "" : token.substring(0, 4)) + "****";
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Sockets

    public static final class Sockets {
        private Sockets() {}

        /** Keep-alive probes that find a dead peer in about 90 s rather than the kernel's two hours. */
        private static final Map<SocketOption<Integer>, Integer> KEEP_ALIVE_TIMING = Map.of(
                jdk.net.ExtendedSocketOptions.TCP_KEEPIDLE, 60,
                jdk.net.ExtendedSocketOptions.TCP_KEEPINTERVAL, 10,
                jdk.net.ExtendedSocketOptions.TCP_KEEPCOUNT, 3);

        /** TCP_NODELAY, keep-alive with short probes, and 256 KiB buffers: every tunnel socket gets these. */
        public static void tune(NetworkChannel channel) throws IOException {
            tuneLocal(channel);
            keepAliveTiming(channel);
        }

        /**
         * For a listening socket: what accepted sockets inherit from it (receive buffer, keep-alive
         * timing), so that only what Linux does not copy is set on each accepted one.
         */
        public static void tuneListener(java.nio.channels.ServerSocketChannel server) throws IOException {
            server.setOption(StandardSocketOptions.SO_REUSEADDR, true);
            server.setOption(StandardSocketOptions.SO_RCVBUF, SOCKET_BUFFER); // before bind: sets the window scale
            keepAliveTiming(server);
        }

        /** For a socket accepted from a {@link #tuneListener tuned} listener. */
        public static void tuneAccepted(NetworkChannel channel) throws IOException {
            channel.setOption(StandardSocketOptions.TCP_NODELAY, true);
            channel.setOption(StandardSocketOptions.SO_KEEPALIVE, true);
            channel.setOption(StandardSocketOptions.SO_SNDBUF, SOCKET_BUFFER);
        }

        /**
         * For a connection to the local service (a new one per visitor, usually on this host): as
         * {@link #tune}, less the keep-alive timing, which only matters across networks.
         */
        public static void tuneLocal(NetworkChannel channel) throws IOException {
            tuneAccepted(channel);
            channel.setOption(StandardSocketOptions.SO_RCVBUF, SOCKET_BUFFER);
        }

        /** Same as {@link #tune(NetworkChannel)} for a blocking control socket. */
        public static void tune(java.net.Socket socket) throws IOException {
            socket.setTcpNoDelay(true);
            socket.setKeepAlive(true);
            socket.setSendBufferSize(SOCKET_BUFFER);
            socket.setReceiveBufferSize(SOCKET_BUFFER);
            for (var e : KEEP_ALIVE_TIMING.entrySet()) {
                if (socket.supportedOptions().contains(e.getKey())) socket.setOption(e.getKey(), e.getValue());
            }
        }

        private static void keepAliveTiming(NetworkChannel ch) throws IOException {
            for (var e : KEEP_ALIVE_TIMING.entrySet()) {
                if (ch.supportedOptions().contains(e.getKey())) ch.setOption(e.getKey(), e.getValue());
            }
        }

        public static void closeQuietly(AutoCloseable c) {
            if (c == null) return;
            try {
                c.close();
            } catch (Exception ignored) {
                // closing is best effort
            }
        }

        /** Closes with an RST rather than a FIN, for connections that broke mid-stream. */
        public static void abort(SocketChannel ch) {
            if (ch == null) return;
            try {
                if (ch.isOpen()) ch.setOption(StandardSocketOptions.SO_LINGER, 0);
            } catch (IOException ignored) {
                // the channel is going away anyway
            }
            closeQuietly(ch);
        }

        /** The peer's address and port (for a connection bridged from TLS, the real peer's). */
        public static String describe(SocketChannel ch) { return describe(Tls.peerOf(ch)); }

        public static String describe(InetSocketAddress a) {
            return a == null ? "?" : a.getAddress().getHostAddress() + ":" + a.getPort();
        }

        /**
         * Accepts connections on a blocking listener until it is closed, handing each to {@code handler}.
         * An accept error (e.g. out of file descriptors) must not end the server: it is logged and
         * accepting resumes after 100 ms.
         */
        public static void acceptEach(java.net.ServerSocket server, String name, java.util.function.Consumer<java.net.Socket> handler) {
            while (!server.isClosed()) {
                java.net.Socket socket;
                try {
                    socket = server.accept();
                } catch (IOException e) {
                    if (server.isClosed()) return;
                    Log.error(name + " port: accept failed: " + e.getMessage() + "; pausing it for 100 ms");
                    try {
                        Thread.sleep(100);
                    } catch (InterruptedException ie) {
                        return;
                    }
                    continue;
                }
                handler.accept(socket);
            }
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Event loops: one thread and one selector each; every channel is served by one loop only.

    /** Receives readiness events for one registered channel. Runs on its loop's thread. */
    public interface IoHandler {
        void onReady(SelectionKey key) throws IOException;

        /** An exception escaped {@link #onReady}; release everything. */
        void onFailure(Throwable error);
    }

    public static final class Timer implements Comparable<Timer> {
        final long deadline;
        final long order;
        final Runnable task;
        boolean cancelled;

        Timer(long deadline, long order, Runnable task) {
            this.deadline = deadline;
            this.order = order;
            this.task = task;
        }

        public void cancel() { cancelled = true; }

        @Override
        public int compareTo(Timer o) {
            int c = Long.compare(deadline, o.deadline);
            return c != 0 ? c : Long.compare(order, o.order);
        }
    }

    public static final class EventLoop implements Executor, Runnable {
        private final Selector selector;
        private final Thread thread;
        private final ConcurrentLinkedQueue<Runnable> tasks = new ConcurrentLinkedQueue<>();
        private final AtomicBoolean wakeupPending = new AtomicBoolean();
        private final PriorityQueue<Timer> timers = new PriorityQueue<>();
        private long timerOrder;
        private volatile boolean running = true;
        final BufferPool buffers = new BufferPool();

        EventLoop(String name) throws IOException {
            selector = Selector.open();
            thread = new Thread(this, name);
            thread.setDaemon(true);
        }

        void start() { thread.start(); }

        public boolean inLoop() { return Thread.currentThread() == thread; }

        @Override
        public void execute(Runnable task) {
            tasks.add(task);
            if (!inLoop() && wakeupPending.compareAndSet(false, true)) selector.wakeup();
        }

        /** Runs the task on this loop after the delay. Call on the loop thread. */
        public Timer schedule(long delayMillis, Runnable task) {
            Timer t = new Timer(System.nanoTime() + delayMillis * 1_000_000L, timerOrder++, task);
            timers.add(t);
            return t;
        }

        /**
         * Registers a channel with this loop (or re-targets its existing key here). Call on the loop
         * thread. A channel moved from another loop must have had its key there cancelled first.
         */
        public SelectionKey register(SelectableChannel channel, int ops, IoHandler handler) throws ClosedChannelException {
            SelectionKey key = channel.keyFor(selector);
            if (key != null && key.isValid()) {
                key.attach(handler);
                key.interestOps(ops);
                return key;
            }
            return channel.register(selector, ops, handler);
        }

        @Override
        public void run() {
            while (running) {
                try {
                    long timeout = runTimers();
                    if (!tasks.isEmpty()) {
                        selector.selectNow(EventLoop::dispatch);
                    } else {
                        selector.select(EventLoop::dispatch, timeout);
                    }
                    wakeupPending.set(false);
                    Runnable task;
                    while ((task = tasks.poll()) != null) {
                        try {
                            task.run();
                        } catch (Throwable t) {
                            Log.error("internal error in " + thread.getName() + ": " + t);
                        }
                    }
                } catch (Throwable t) {
                    Log.error("event loop " + thread.getName() + " failed: " + t);
                }
            }
            for (SelectionKey key : selector.keys()) {
                if (key.attachment() instanceof IoHandler h) h.onFailure(new ClosedChannelException());
                Sockets.closeQuietly(key.channel());
            }
            Sockets.closeQuietly(selector);
        }

        private static void dispatch(SelectionKey key) {
            IoHandler handler = (IoHandler) key.attachment();
            if (handler == null || !key.isValid()) return;
            try {
                handler.onReady(key);
            } catch (CancelledKeyException e) {
                // the handler closed its channel earlier in this round
            } catch (Throwable t) {
                handler.onFailure(t);
            }
        }

        /** Runs due timers; returns how long select may block (0 = forever). */
        private long runTimers() {
            while (true) {
                Timer t = timers.peek();
                if (t == null) return 0;
                if (t.cancelled) {
                    timers.poll();
                    continue;
                }
                long wait = t.deadline - System.nanoTime();
                if (wait > 0) return Math.max(1, wait / 1_000_000L);
                timers.poll();
                try {
                    t.task.run();
                } catch (Throwable e) {
                    Log.error("internal error in timer: " + e);
                }
            }
        }

        /**
         * Makes the selector finish deregistering cancelled keys now. A closed channel whose key was
         * cancelled on a loop that sleeps in select() keeps its socket open until that loop wakes up.
         */
        public void wakeup() { selector.wakeup(); }

        void shutdown() {
            running = false;
            selector.wakeup();
        }

        void join(long millis) throws InterruptedException { thread.join(millis); }
    }

    /** A few event loops, used round-robin. */
    public static final class EventLoopGroup implements AutoCloseable {
        private final EventLoop[] loops;
        private final AtomicInteger next = new AtomicInteger();

        public EventLoopGroup(String name, int count) throws IOException {
            loops = new EventLoop[count];
            for (int i = 0; i < count; i++) {
                loops[i] = new EventLoop(name + "-" + i);
                loops[i].start();
            }
        }

        public static int defaultSize() { return Math.max(1, Runtime.getRuntime().availableProcessors()); }

        public EventLoop next() { return loops[Math.floorMod(next.getAndIncrement(), loops.length)]; }

        public List<EventLoop> all() { return List.of(loops); }

        public int size() { return loops.length; }

        /** See {@link EventLoop#wakeup()}: after closing a channel that every loop watched. */
        public void wakeupAll() {
            for (EventLoop l : loops) l.wakeup();
        }

        @Override
        public void close() {
            for (EventLoop l : loops) l.shutdown();
            for (EventLoop l : loops) {
                try {
                    l.join(500);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
        }
    }

    /**
     * Accepts connections on a listening socket from every loop of a group: each loop's selector
     * watches the socket, and the loop that accepts a connection serves it, so no connection is handed
     * from thread to thread.
     */
    public static final class Acceptor implements IoHandler {
        public interface Starter { void start(EventLoop loop, SocketChannel channel) throws IOException; }

        private static final int ACCEPTS_PER_EVENT = 64;
        private final java.nio.channels.ServerSocketChannel server;
        private final EventLoop loop;
        private final String name;
        private final Starter starter;
        private SelectionKey key;

        private Acceptor(java.nio.channels.ServerSocketChannel server, EventLoop loop, String name, Starter starter) {
            this.server = server;
            this.loop = loop;
            this.name = name;
            this.starter = starter;
        }

        /**
         * Starts accepting; closing the server sockets stops it. With one socket per loop (bound with
         * SO_REUSEPORT) each loop accepts on its own, and the kernel spreads connections over them;
         * with a single socket, every loop watches it and the first to wake takes the connection.
         */
        public static void listen(EventLoopGroup loops, List<java.nio.channels.ServerSocketChannel> servers, String name,
                                  Starter starter) throws IOException {
            List<EventLoop> all = loops.all();
            for (int i = 0; i < all.size(); i++) {
                EventLoop loop = all.get(i);
                var server = servers.size() == all.size() ? servers.get(i) : servers.get(0);
                server.configureBlocking(false);
                Acceptor acceptor = new Acceptor(server, loop, name, starter);
                loop.execute(() -> {
                    try {
                        acceptor.key = loop.register(server, SelectionKey.OP_ACCEPT, acceptor);
                    } catch (IOException e) {
                        // closed before this loop got to it
                    }
                });
            }
        }

        @Override
        public void onReady(SelectionKey k) throws IOException {
            for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
                SocketChannel ch = server.accept();
                if (ch == null) return; // another loop was quicker, or nothing left
                try {
                    ch.configureBlocking(false);
                    Sockets.tuneAccepted(ch);
                    starter.start(loop, ch);
                } catch (IOException e) {
                    Sockets.closeQuietly(ch); // this connection only; the listener is fine
                }
            }
        }

        /** An accept error (e.g. out of file descriptors) must not end the server: pause, then go on. */
        @Override
        public void onFailure(Throwable error) {
            if (!server.isOpen() || key == null || !key.isValid()) return;
            Log.error(name + " port: accept failed: " + error.getMessage() + "; pausing it for 100 ms");
            key.interestOps(0);
            loop.schedule(100, () -> {
                if (key.isValid()) key.interestOps(SelectionKey.OP_ACCEPT);
            });
        }
    }

    /** Direct buffers of one size, kept per loop so taking and giving back needs no locking. */
    public static final class BufferPool {
        public static final int SIZE = 64 * 1024;
        private static final int MAX_CACHED = 64;
        private final ArrayDeque<ByteBuffer> free = new ArrayDeque<>();

        public ByteBuffer take() {
            ByteBuffer b = free.pollLast();
            return b != null ? b : ByteBuffer.allocateDirect(SIZE);
        }

        public void give(ByteBuffer b) {
            if (b == null || !b.isDirect() || b.capacity() != SIZE) return;
            b.clear();
            if (free.size() < MAX_CACHED) free.addLast(b);
        }
    }

    // ------------------------------------------------------------------------------------------------
    // The byte pump

    /**
     * Copies bytes both ways between two non-blocking sockets on one event loop. A side holds a buffer
     * only while its peer cannot take the bytes yet; while it does, that side is not read
     * (back-pressure). End of stream on one side becomes a half-close on the other; the pair closes
     * when both directions have ended, or at once on an error.
     *
     * <p>The second socket may be a <em>reusable data connection</em>: then the bytes on it travel in
     * chunks (a 4-byte big-endian length, then that many bytes; length 0 ends that direction) instead of
     * relying on the socket's own half-close. When both directions have ended cleanly the first socket
     * is closed and the data connection is handed back for the next visitor, which saves a TCP
     * handshake per visitor. Any error, or the data connection closing mid-stream, aborts both.
     */
    public static final class Splice {
        private static final int READS_PER_EVENT = 4;
        /** Largest chunk on a reusable data connection: what one pooled buffer holds after its header. */
        public static final int MAX_CHUNK = BufferPool.SIZE - 4;

        /** Receives a reusable data connection whose stream ended cleanly, and any bytes read past the end. */
        public interface Reuse { void reuse(ByteBuffer leftover); }

        private final EventLoop loop;
        private final Side a;
        private final Side b;
        private Reuse reuse;
        private boolean closed;

        /** A splice of {@code first} (always a plain socket) and {@code second}; configure, then {@link #start()}. */
        public static Splice between(EventLoop loop, SocketChannel first, SocketChannel second) {
            return new Splice(loop, first, second);
        }

        private Splice(EventLoop loop, SocketChannel chA, SocketChannel chB) {
            this.loop = loop;
            this.a = new Side(chA);
            this.b = new Side(chB);
            a.peer = b;
            b.peer = a;
        }

        /** Bytes to write to the first socket before anything read from the second. */
        public Splice toFirst(ByteBuffer bytes) {
            if (bytes != null && bytes.hasRemaining()) b.pending = bytes; // "pending" of a side: read from it, waiting for its peer
            return this;
        }

        /** Bytes to write to the second socket before anything read from the first (already framed if it is). */
        public Splice toSecond(ByteBuffer bytes) {
            if (bytes != null && bytes.hasRemaining()) a.pending = bytes;
            return this;
        }

        /**
         * The second socket is a reusable data connection speaking chunks; {@code unparsed} are bytes
         * already read from it, and {@code reuse} gets it back when the stream ends cleanly.
         */
        public Splice secondFramed(ByteBuffer unparsed, Reuse reuse) {
            b.framed = true;
            if (unparsed != null && unparsed.hasRemaining()) b.rbuf = unparsed;
            this.reuse = reuse;
            return this;
        }

        public void start() {
            try {
                a.key = loop.register(a.ch, 0, a);
                b.key = loop.register(b.ch, 0, b);
                a.start();
                b.start();
            } catch (IOException e) {
                Log.debug("splice failed to start: " + e.getMessage());
                close(true);
            }
        }

        private void close(boolean abort) {
            if (closed) return;
            closed = true;
            for (Side s : new Side[] {a, b}) {
                s.release();
                if (s.key != null) s.key.cancel();
                if (abort) Sockets.abort(s.ch); else Sockets.closeQuietly(s.ch);
            }
        }

        /** Both directions ended: close, or hand the reusable data connection back. */
        private void checkDone() {
            if (closed || !(a.inputEnded && b.inputEnded && a.outputShut && b.outputShut)) return;
            if (!b.framed || reuse == null) {
                close(false);
                return;
            }
            closed = true;
            a.release();
            a.key.cancel();
            Sockets.closeQuietly(a.ch);
            ByteBuffer leftover = b.rbuf == null ? ByteBuffer.allocate(0)
                    : ByteBuffer.allocate(b.rbuf.remaining()).put(b.rbuf).flip();
            b.release();
            b.key.interestOps(0);
            reuse.reuse(leftover);
        }

        private final class Side implements IoHandler {
            final SocketChannel ch;
            Side peer;
            SelectionKey key;
            boolean framed;         // this socket carries chunks (a reusable data connection)
            ByteBuffer pending;     // read from this side, not yet written to peer
            boolean pendingPooled;  // pending is a pooled buffer (not a slice or a heap buffer)
            boolean pendingIsEnd;   // pending is the end-of-stream chunk header for a framed peer
            boolean inputEnded;     // this side ended its direction (FIN, or an end chunk)
            boolean outputShut;     // we ended the direction towards this side
            ByteBuffer rbuf;        // framed only: bytes read and not yet parsed
            boolean rbufPooled;
            int chunkLeft;          // framed only: data bytes of the current chunk still to come
            final ByteBuffer header = ByteBuffer.allocate(4);
            boolean parsing;        // framed only: inside readChunks(), so flushTo() must not re-enter it

            Side(SocketChannel ch) { this.ch = ch; }

            void start() throws IOException {
                if (pending != null) {
                    flushTo();
                } else if (framed && rbuf != null) {
                    readChunks();
                } else {
                    setInterest(SelectionKey.OP_READ, true);
                }
            }

            @Override
            public void onReady(SelectionKey k) throws IOException {
                if (closed) return;
                int ready = k.readyOps();
                if ((ready & SelectionKey.OP_WRITE) != 0) peer.flushTo();
                if (!closed && (ready & SelectionKey.OP_READ) != 0 && k.isValid()) {
                    if (framed) readChunks(); else readFrom();
                }
            }

            /**
             * Reads what this (plain) side sent and passes it on. While buffers come back full and the
             * peer takes everything, it reads again (a few times) before returning to the selector.
             */
            private void readFrom() throws IOException {
                int headerRoom = peer.framed ? 4 : 0;
                for (int round = 0; round < READS_PER_EVENT && pending == null && !inputEnded && !closed; round++) {
                    ByteBuffer buf = loop.buffers.take();
                    buf.position(headerRoom);
                    int n = readPooled(buf);
                    if (n <= 0) {
                        loop.buffers.give(buf);
                        if (n < 0) endInput();
                        return;
                    }
                    boolean full = !buf.hasRemaining();
                    if (headerRoom > 0) buf.putInt(0, n);
                    buf.flip();
                    setPending(buf, true);
                    flushTo();
                    if (!full) return; // the socket is most likely drained
                }
            }

            /** Reads chunks from this framed side and passes their data on, without copying it. */
            private void readChunks() throws IOException {
                if (parsing) return; // called back from flushTo() inside the loop below: the loop goes on
                parsing = true;
                try {
                    parseChunks();
                } finally {
                    parsing = false;
                }
            }

            private void parseChunks() throws IOException {
                int reads = 0;
                boolean drained = false; // the last read did not fill its buffer: the socket is most likely empty
                while (pending == null && !inputEnded && !closed) {
                    if (rbuf == null || !rbuf.hasRemaining()) {
                        if (drained || reads++ == READS_PER_EVENT) { // no pointless read; fair to other sockets
                            releaseReadBuffer();
                            setInterest(SelectionKey.OP_READ, true);
                            return;
                        }
                        releaseReadBuffer();
                        ByteBuffer buf = loop.buffers.take();
                        int n = readPooled(buf);
                        if (n < 0) {
                            loop.buffers.give(buf);
                            throw new EOFException("data connection closed in the middle of a stream");
                        }
                        if (n == 0) {
                            loop.buffers.give(buf);
                            setInterest(SelectionKey.OP_READ, true);
                            return;
                        }
                        drained = buf.hasRemaining();
                        rbuf = buf.flip();
                        rbufPooled = true;
                    }
                    if (chunkLeft == 0) {
                        while (header.hasRemaining() && rbuf.hasRemaining()) header.put(rbuf.get());
                        if (header.hasRemaining()) continue; // the header is split across reads (rbuf is empty)
                        int length = header.flip().getInt();
                        header.clear();
                        if (!rbuf.hasRemaining()) releaseReadBuffer();
                        if (length == 0) {
                            endInput(); // what follows in rbuf belongs to the connection's next use
                            return;
                        }
                        if (length < 0 || length > MAX_CHUNK) throw new ProtocolException("bad chunk length " + length);
                        chunkLeft = length;
                        if (rbuf == null) continue;
                    }
                    int take = Math.min(chunkLeft, rbuf.remaining());
                    ByteBuffer slice = rbuf.slice(rbuf.position(), take);
                    rbuf.position(rbuf.position() + take);
                    chunkLeft -= take;
                    setPending(slice, false);
                    flushTo();
                }
            }

            /** Reads into a buffer taken from the pool, giving it back if the read fails. */
            private int readPooled(ByteBuffer buf) throws IOException {
                try {
                    return ch.read(buf);
                } catch (IOException e) {
                    loop.buffers.give(buf);
                    throw e;
                }
            }

            private void endInput() throws IOException {
                inputEnded = true;
                setInterest(SelectionKey.OP_READ, false);
                peer.shutdownOutput();
            }

            private void setPending(ByteBuffer buf, boolean pooled) {
                pending = buf;
                pendingPooled = pooled;
            }

            /** Writes this side's pending bytes to the peer; stops reading this side while they wait. */
            void flushTo() throws IOException {
                ByteBuffer buf = pending;
                if (buf == null) return;
                peer.ch.write(buf);
                if (buf.hasRemaining()) {
                    setInterest(SelectionKey.OP_READ, false);
                    peer.setInterest(SelectionKey.OP_WRITE, true);
                    return;
                }
                pending = null;
                if (pendingPooled) loop.buffers.give(buf);
                if (framed && rbuf != null && !rbuf.hasRemaining()) releaseReadBuffer(); // idle sides hold no buffer
                peer.setInterest(SelectionKey.OP_WRITE, false);
                if (pendingIsEnd) { // the end chunk is out: that direction is over
                    pendingIsEnd = false;
                    peer.outputShut = true;
                    checkDone();
                } else if (inputEnded) {
                    peer.shutdownOutput();
                } else if (framed && rbuf != null && rbuf.hasRemaining()) {
                    readChunks(); // parsed bytes are waiting; no read event would come for them
                } else {
                    setInterest(SelectionKey.OP_READ, true);
                }
            }

            /** Ends the direction towards this side: FIN on a plain socket, an end chunk on a framed one. */
            void shutdownOutput() throws IOException {
                if (peer.pending != null || outputShut) return; // flushTo() calls again once drained
                if (framed) {
                    peer.pendingIsEnd = true;
                    peer.setPending(ByteBuffer.allocate(4), false); // length 0
                    peer.flushTo();
                    return;
                }
                outputShut = true;
                try {
                    ch.shutdownOutput();
                } catch (IOException e) {
                    // the peer is gone; nothing more to send it
                }
                checkDone();
            }

            void setInterest(int op, boolean on) {
                if (closed || key == null || !key.isValid()) return;
                int ops = key.interestOps();
                int next = on ? ops | op : ops & ~op;
                if (next != ops) key.interestOps(next);
            }

            private void releaseReadBuffer() {
                if (rbuf != null && rbufPooled) loop.buffers.give(rbuf);
                rbuf = null;
                rbufPooled = false;
            }

            void release() {
                if (pending != null && pendingPooled) loop.buffers.give(pending);
                pending = null;
                releaseReadBuffer();
            }

            @Override
            public void onFailure(Throwable error) {
                if (!(error instanceof IOException)) Log.error("splice failed: " + error);
                else Log.debug("connection ended: " + error.getMessage());
                close(true);
            }
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Client identity

    /** The original's machine code: a name-based UUID v5 over the machine's traits. */
    public static final class MachineId {
        private MachineId() {}

        static final byte[] OID_NAMESPACE = HexFormat.of().parseHex("6ba7b8129dad11d180b400c04fd430c8");

        /** UUID v5 (SHA-1) of the name in the OID namespace: 32 upper-case hex digits, no dashes. */
        public static String uuidV5(String name) {
            MessageDigest sha1;
            try {
                sha1 = MessageDigest.getInstance("SHA-1");
            } catch (NoSuchAlgorithmException e) {
                throw new IllegalStateException(e);
            }
            sha1.update(OID_NAMESPACE);
            sha1.update(name.getBytes(StandardCharsets.UTF_8));
            byte[] h = sha1.digest();
            h[6] = (byte) ((h[6] & 0x0f) | 0x50);
            h[8] = (byte) ((h[8] & 0x3f) | 0x80);
            return HexFormat.of().withUpperCase().formatHex(h, 0, 16);
        }

        /** The traits joined as the original does: host, machine id, user, os, arch, computer, distro. */
        public static String traits() {
            String os = osName();
            List<String> parts = new ArrayList<>();
            String host = hostName();
            if (host != null) parts.add("host:" + host);
            String machine = switch (os) {
                case "linux" -> firstFile("/etc/machine-id", "/var/lib/dbus/machine-id");
                case "macos" -> firstFile("/etc/hostid");
                default -> null;
            };
            if (machine != null) parts.add("machine_id:" + machine);
            String user = System.getenv("USER");
            if (user == null) user = System.getenv("USERNAME");
            if (user != null && !user.isEmpty()) parts.add("user:" + user);
            parts.add("os:" + os);
            parts.add("arch:" + rustArch(System.getProperty("os.arch", "")));
            if (os.equals("windows") && System.getenv("COMPUTERNAME") != null) {
                parts.add("computer:" + System.getenv("COMPUTERNAME"));
            }
            if (os.equals("linux")) {
                String distro = prettyName();
                if (distro != null) parts.add("distro:" + distro);
            }
            return String.join("|", parts);
        }

        public static String generate() { return uuidV5(traits()); }

        static String osName() {
            String os = System.getProperty("os.name", "").toLowerCase(Locale.ROOT);
            if (os.contains("mac") || os.contains("darwin")) return "macos";
            if (os.contains("win")) return "windows";
            return os.contains("linux") ? "linux" : os;
        }

        static String rustArch(String javaArch) {
            return switch (javaArch) {
                case "amd64", "x86_64" -> "x86_64";
                case "x86", "i386", "i486", "i586", "i686" -> "x86";
                case "arm64", "aarch64" -> "aarch64";
                default -> javaArch;
            };
        }

        /** gethostname(), not a resolved name: the kernel's own value where we can read it. */
        private static String hostName() {
            String h = firstFile("/proc/sys/kernel/hostname");
            if (h != null) return h;
            String env = System.getenv(osName().equals("windows") ? "COMPUTERNAME" : "HOSTNAME");
            if (env != null && !env.isBlank()) return env.trim();
            try {
                return java.net.InetAddress.getLocalHost().getHostName();
            } catch (IOException e) {
                return null;
            }
        }

        private static String prettyName() {
            try {
                for (String line : Files.readAllLines(Path.of("/etc/os-release"))) {
                    if (line.startsWith("PRETTY_NAME=")) {
                        return line.substring("PRETTY_NAME=".length()).trim().replaceAll("^[\"']+|[\"']+$", "");
                    }
                }
            } catch (IOException e) {
                // no os-release: the part is skipped, as the original does
            }
            return null;
        }

        private static String firstFile(String... paths) {
            for (String p : paths) {
                try {
                    String s = Files.readString(Path.of(p)).trim();
                    if (!s.isEmpty()) return s;
                } catch (IOException e) {
                    // try the next one
                }
            }
            return null;
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Authentication: challenge-response with HMAC-SHA256, so the secret never crosses the wire

    /**
     * The proofs of the authenticated handshake. Each side contributes a fresh 32-byte nonce, so a
     * recorded handshake proves nothing on a new connection; each proof has its own label, so one can
     * never stand in for another; and each side proves itself (the relay first, so a client does not
     * answer an impostor). Data connections carry {@link #conn}, keyed by a session key that exists only
     * on the two ends of one control connection: a requested connection id seen on the wire is useless
     * without it.
     */
    public static final class Proofs {
        private Proofs() {}

        private static final java.security.SecureRandom RANDOM = new java.security.SecureRandom();

        /** 32 random bytes as 64 lowercase hex digits. */
        public static String nonce() { return HexFormat.of().formatHex(randomBytes(32)); }

        public static byte[] randomBytes(int n) {
            byte[] b = new byte[n];
            RANDOM.nextBytes(b);
            return b;
        }

        public static boolean validNonce(String s) { return s != null && s.matches("[0-9a-f]{64}"); }

        public static String relay(byte[] key, String clientId, String clientNonce, String relayNonce) {
            return hex(key, "arp-relay-v1\n" + clientId + "\n" + clientNonce + "\n" + relayNonce);
        }

        public static String client(byte[] key, String clientId, String relayNonce, String clientNonce) {
            return hex(key, "arp-client-v1\n" + clientId + "\n" + relayNonce + "\n" + clientNonce);
        }

        public static byte[] sessionKey(byte[] key, String relayNonce, String clientNonce) {
            return hmac(key, "arp-session-v1\n" + relayNonce + "\n" + clientNonce);
        }

        public static String conn(byte[] sessionKey, String proxyConnId) {
            return hex(sessionKey, "arp-conn-v1\n" + proxyConnId);
        }

        /**
         * What identifies one arpc install to the relay: derived from a key kept in its config
         * directory, so a restarted arpc may replace its own live registration and nobody else's.
         */
        public static String ownerTag(byte[] installKey, String clientId) {
            return hex(installKey, "arp-owner-v1\n" + clientId);
        }

        /** Constant-time, so the time of a refusal tells nothing about how much of a proof was right. */
        public static boolean same(String expected, String given) {
            if (expected == null || given == null) return false;
            return MessageDigest.isEqual(expected.getBytes(StandardCharsets.UTF_8), given.getBytes(StandardCharsets.UTF_8));
        }

        private static String hex(byte[] key, String message) { return HexFormat.of().formatHex(hmac(key, message)); }

        private static byte[] hmac(byte[] key, String message) {
            try {
                javax.crypto.Mac mac = javax.crypto.Mac.getInstance("HmacSHA256");
                mac.init(new javax.crypto.spec.SecretKeySpec(key, "HmacSHA256"));
                return mac.doFinal(message.getBytes(StandardCharsets.UTF_8));
            } catch (java.security.GeneralSecurityException e) {
                throw new IllegalStateException("HmacSHA256 is part of every JDK", e);
            }
        }
    }

    // ------------------------------------------------------------------------------------------------
    // TLS with the JDK alone

    /**
     * TLS for the relay's ports. The event loops speak plain TCP, so TLS is terminated next to them: a
     * {@link Front} accepts TLS connections on the public address and bridges each one, on two virtual
     * threads, to the plain listener on loopback; a {@link Dialer} does the mirror image for arpc's data
     * connections. This keeps one byte pump for every mode, at the cost of a loopback hop when TLS is on.
     */
    public static final class Tls {
        private Tls() {}

        private static final String SELF_SIGNED_FILE = "tls-self-signed.p12";
        /** The store is protected by its owner-only file mode; PKCS#12 just needs some password. */
        private static final char[] SELF_SIGNED_PASSWORD = "arps-self-signed".toCharArray();
        private static final Map<Integer, InetSocketAddress> BRIDGED = new java.util.concurrent.ConcurrentHashMap<>();
        private static final java.util.concurrent.ScheduledExecutorService DEADLINES =
                java.util.concurrent.Executors.newSingleThreadScheduledExecutor(r -> Thread.ofPlatform().daemon().name("arp-tls-deadline").unstarted(r));

        /** What a TLS server presents: its context and its leaf certificate. */
        public record Identity(javax.net.ssl.SSLContext context, java.security.cert.X509Certificate certificate) {
            public String fingerprint() { return Tls.fingerprint(certificate); }
        }

        /** A certificate the client was told not to trust: a pin or CA mismatch is no reason to retry. */
        public static final class Untrusted extends java.security.cert.CertificateException {
            public Untrusted(String message) { super(message); }
        }

        /** "sha256:" and the SHA-256 of the certificate's DER form, as lowercase hex. */
        public static String fingerprint(java.security.cert.Certificate certificate) {
            try {
                return "sha256:" + HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(certificate.getEncoded()));
            } catch (NoSuchAlgorithmException | java.security.cert.CertificateEncodingException e) {
                throw new IllegalStateException(e);
            }
        }

        /** A pin as given by a user ("sha256:AB:CD…", any case) in {@link #fingerprint} form, or null if malformed. */
        public static String normalizePin(String pin) {
            String hex = pin.trim().toLowerCase(Locale.ROOT);
            if (hex.startsWith("sha256:")) hex = hex.substring(7);
            hex = hex.replace(":", "");
            return hex.matches("[0-9a-f]{64}") ? "sha256:" + hex : null;
        }

        /** A server identity from PEM files: a certificate chain and an unencrypted private key. */
        public static Identity fromPem(Path certPem, Path keyPem) throws IOException, java.security.GeneralSecurityException {
            List<java.security.cert.X509Certificate> chain = readCertificates(certPem);
            if (chain.isEmpty()) throw new IOException(certPem + " holds no PEM certificate");
            java.security.PrivateKey key = readPrivateKey(keyPem);
            java.security.KeyStore store = java.security.KeyStore.getInstance("PKCS12");
            store.load(null, null);
            store.setKeyEntry("arps", key, SELF_SIGNED_PASSWORD, chain.toArray(java.security.cert.Certificate[]::new));
            return new Identity(serverContext(store), chain.get(0));
        }

        /**
         * A self-signed identity kept in {@code dir}, made on first use with the JDK's keytool: the same
         * certificate on every start, so the fingerprint clients pinned stays valid.
         */
        public static Identity selfSigned(Path dir) throws IOException, java.security.GeneralSecurityException {
            Path file = dir.resolve(SELF_SIGNED_FILE);
            if (!Files.exists(file)) makeSelfSigned(dir, file);
            java.security.KeyStore store = java.security.KeyStore.getInstance("PKCS12");
            try (InputStream in = Files.newInputStream(file)) {
                store.load(in, SELF_SIGNED_PASSWORD);
            }
            var certificate = (java.security.cert.X509Certificate) store.getCertificate("arps");
            if (certificate == null) throw new IOException(file + " holds no certificate named arps; delete it to make a new one");
            return new Identity(serverContext(store), certificate);
        }

        private static void makeSelfSigned(Path dir, Path file) throws IOException {
            Files.createDirectories(dir);
            ownerOnly(dir, "rwx------");
            Path tmp = dir.resolve(SELF_SIGNED_FILE + ".tmp");
            Files.deleteIfExists(tmp);
            Path keytool = Path.of(System.getProperty("java.home"), "bin", "keytool");
            List<String> command = List.of(keytool.toString(), "-genkeypair", "-alias", "arps", "-keyalg", "EC",
                    "-groupname", "secp256r1", "-sigalg", "SHA256withECDSA", "-dname", "CN=arps", "-validity", "3650",
                    "-ext", "SAN=dns:localhost,ip:127.0.0.1", "-storetype", "PKCS12", "-keystore", tmp.toString(),
                    "-storepass", new String(SELF_SIGNED_PASSWORD), "-keypass", new String(SELF_SIGNED_PASSWORD), "-noprompt");
            Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
            p.getOutputStream().close();
            String output = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            try {
                if (!p.waitFor(60, java.util.concurrent.TimeUnit.SECONDS) || p.exitValue() != 0) {
                    p.destroyForcibly();
                    throw new IOException("keytool could not make a self-signed certificate: " + output.strip());
                }
            } catch (InterruptedException e) {
                p.destroyForcibly();
                throw new IOException("interrupted while making a self-signed certificate");
            }
            ownerOnly(tmp, "rw-------");
            Files.move(tmp, file, java.nio.file.StandardCopyOption.ATOMIC_MOVE);
        }

        private static javax.net.ssl.SSLContext serverContext(java.security.KeyStore store) throws java.security.GeneralSecurityException {
            var keys = javax.net.ssl.KeyManagerFactory.getInstance(javax.net.ssl.KeyManagerFactory.getDefaultAlgorithm());
            keys.init(store, SELF_SIGNED_PASSWORD);
            var context = javax.net.ssl.SSLContext.getInstance("TLS");
            context.init(keys.getKeyManagers(), null, null);
            return context;
        }

        /**
         * A client context that trusts the relay by a pinned fingerprint (no CA or host name involved), or
         * by the certificates in a PEM file, or by the JVM's CA store.
         */
        public static javax.net.ssl.SSLContext clientContext(Path caPem, String pin) throws IOException, java.security.GeneralSecurityException {
            javax.net.ssl.TrustManager[] trust;
            if (pin != null) {
                trust = new javax.net.ssl.TrustManager[] {new Pinned(pin)};
            } else {
                var factory = javax.net.ssl.TrustManagerFactory.getInstance(javax.net.ssl.TrustManagerFactory.getDefaultAlgorithm());
                java.security.KeyStore store = null;
                if (caPem != null) {
                    store = java.security.KeyStore.getInstance("PKCS12");
                    store.load(null, null);
                    int i = 0;
                    for (var c : readCertificates(caPem)) store.setCertificateEntry("ca" + i++, c);
                    if (i == 0) throw new IOException(caPem + " holds no PEM certificate");
                }
                factory.init(store);
                trust = factory.getTrustManagers();
            }
            var context = javax.net.ssl.SSLContext.getInstance("TLS");
            context.init(null, trust, null);
            return context;
        }

        /** Connects and completes the handshake within the timeout; checks the host name unless pinned. */
        public static javax.net.ssl.SSLSocket connect(javax.net.ssl.SSLContext context, String host, int port, boolean checkHost,
                                                      int timeoutMillis) throws IOException {
            java.net.Socket raw = new java.net.Socket();
            try {
                raw.connect(new InetSocketAddress(host, port), timeoutMillis);
                Sockets.tune(raw);
                var tls = (javax.net.ssl.SSLSocket) context.getSocketFactory().createSocket(raw, host, port, true);
                if (checkHost) {
                    var params = tls.getSSLParameters();
                    params.setEndpointIdentificationAlgorithm("HTTPS");
                    tls.setSSLParameters(params);
                }
                tls.setSoTimeout(timeoutMillis);
                tls.startHandshake();
                tls.setSoTimeout(0);
                return tls;
            } catch (IOException | RuntimeException e) {
                Sockets.closeQuietly(raw);
                throw e;
            }
        }

        /** The certificate behind a failed handshake, if the failure was that it is not trusted. */
        public static Untrusted untrusted(Throwable e) {
            for (Throwable t = e; t != null; t = t.getCause()) if (t instanceof Untrusted u) return u;
            return null;
        }

        /** Trusts exactly one certificate, by fingerprint. */
        private static final class Pinned extends javax.net.ssl.X509ExtendedTrustManager {
            private final String pin;

            Pinned(String pin) { this.pin = pin; }

            private void check(java.security.cert.X509Certificate[] chain) throws java.security.cert.CertificateException {
                if (chain == null || chain.length == 0) throw new Untrusted("the relay presented no certificate");
                String actual = fingerprint(chain[0]);
                if (!MessageDigest.isEqual(actual.getBytes(StandardCharsets.US_ASCII), pin.getBytes(StandardCharsets.US_ASCII))) {
                    throw new Untrusted("the relay's certificate " + actual + " does not match the pinned " + pin);
                }
            }

            @Override public void checkServerTrusted(java.security.cert.X509Certificate[] chain, String authType) throws java.security.cert.CertificateException { check(chain); }
            @Override public void checkServerTrusted(java.security.cert.X509Certificate[] chain, String authType, java.net.Socket socket) throws java.security.cert.CertificateException { check(chain); }
            @Override public void checkServerTrusted(java.security.cert.X509Certificate[] chain, String authType, javax.net.ssl.SSLEngine engine) throws java.security.cert.CertificateException { check(chain); }
            @Override public void checkClientTrusted(java.security.cert.X509Certificate[] chain, String authType) throws java.security.cert.CertificateException { throw new java.security.cert.CertificateException("not a server"); }
            @Override public void checkClientTrusted(java.security.cert.X509Certificate[] chain, String authType, java.net.Socket socket) throws java.security.cert.CertificateException { throw new java.security.cert.CertificateException("not a server"); }
            @Override public void checkClientTrusted(java.security.cert.X509Certificate[] chain, String authType, javax.net.ssl.SSLEngine engine) throws java.security.cert.CertificateException { throw new java.security.cert.CertificateException("not a server"); }
            @Override public java.security.cert.X509Certificate[] getAcceptedIssuers() { return new java.security.cert.X509Certificate[0]; }
        }

        // --- PEM

        static List<java.security.cert.X509Certificate> readCertificates(Path pem) throws IOException, java.security.GeneralSecurityException {
            var factory = java.security.cert.CertificateFactory.getInstance("X.509");
            try (InputStream in = Files.newInputStream(pem)) {
                List<java.security.cert.X509Certificate> out = new ArrayList<>();
                for (var c : factory.generateCertificates(in)) out.add((java.security.cert.X509Certificate) c);
                return out;
            } catch (java.security.cert.CertificateException e) {
                throw new IOException(pem + " is not a PEM certificate file: " + e.getMessage());
            }
        }

        /** PKCS#8 ("PRIVATE KEY", RSA, EC or Ed25519) or PKCS#1 ("RSA PRIVATE KEY"); not encrypted. */
        static java.security.PrivateKey readPrivateKey(Path pem) throws IOException {
            String text = Files.readString(pem, StandardCharsets.US_ASCII);
            var m = java.util.regex.Pattern.compile("-----BEGIN ([A-Z ]+)-----([A-Za-z0-9+/=\\s]+)-----END \\1-----").matcher(text);
            if (!m.find()) throw new IOException(pem + " holds no PEM private key");
            String type = m.group(1);
            byte[] der = java.util.Base64.getMimeDecoder().decode(m.group(2));
            byte[] pkcs8 = switch (type) {
                case "PRIVATE KEY" -> der;
                case "RSA PRIVATE KEY" -> pkcs1ToPkcs8(der);
                default -> throw new IOException(pem + " holds a \"" + type + "\" key; convert it to an unencrypted PKCS#8 key with: "
                        + "openssl pkcs8 -topk8 -nocrypt -in " + pem + " -out key.pk8.pem");
            };
            var spec = new java.security.spec.PKCS8EncodedKeySpec(pkcs8);
            for (String algorithm : List.of("RSA", "EC", "Ed25519", "Ed448", "RSASSA-PSS")) {
                try {
                    return java.security.KeyFactory.getInstance(algorithm).generatePrivate(spec);
                } catch (java.security.GeneralSecurityException e) {
                    // try the next algorithm
                }
            }
            throw new IOException(pem + ": not an RSA, EC or EdDSA private key");
        }

        /** Wraps a PKCS#1 RSA key in a PKCS#8 PrivateKeyInfo (version 0, rsaEncryption, the key). */
        private static byte[] pkcs1ToPkcs8(byte[] pkcs1) {
            byte[] head = HexFormat.of().parseHex("020100300d06092a864886f70d0101010500");
            byte[] octets = der(0x04, pkcs1);
            byte[] body = new byte[head.length + octets.length];
            System.arraycopy(head, 0, body, 0, head.length);
            System.arraycopy(octets, 0, body, head.length, octets.length);
            return der(0x30, body);
        }

        private static byte[] der(int tag, byte[] content) {
            int n = content.length;
            byte[] length = n < 0x80 ? new byte[] {(byte) n}
                    : n < 0x100 ? new byte[] {(byte) 0x81, (byte) n}
                    : n < 0x10000 ? new byte[] {(byte) 0x82, (byte) (n >> 8), (byte) n}
                    : new byte[] {(byte) 0x83, (byte) (n >> 16), (byte) (n >> 8), (byte) n};
            byte[] out = new byte[1 + length.length + n];
            out[0] = (byte) tag;
            System.arraycopy(length, 0, out, 1, length.length);
            System.arraycopy(content, 0, out, 1 + length.length, n);
            return out;
        }

        // --- bridges between TLS sockets and the plain event loops

        /** The visitor's or client's own address for a loopback connection a {@link Front} made, else the peer's. */
        public static InetSocketAddress peerOf(SocketChannel ch) {
            try {
                if (ch.getRemoteAddress() instanceof InetSocketAddress remote) {
                    if (remote.getAddress().isLoopbackAddress()) {
                        InetSocketAddress real = BRIDGED.get(remote.getPort());
                        if (real != null) return real;
                    }
                    return remote;
                }
            } catch (IOException e) {
                // closed: no address
            }
            return null;
        }

        /** Admission of connections that have not identified themselves yet (see arps's handshake limits). */
        public interface Gate {
            boolean enter(java.net.InetAddress address, String port);

            void leave(java.net.InetAddress address);
        }

        /**
         * Accepts TLS on {@code server}, completes each handshake within the deadline, then connects to
         * the plain listener at {@code inner} and copies bytes both ways until both directions end.
         */
        public static final class Front implements AutoCloseable {
            private final javax.net.ssl.SSLContext context;
            private final java.net.ServerSocket server;
            private final InetSocketAddress inner;
            private final int handshakeMillis;
            private final Gate gate;
            private final String name;

            public Front(javax.net.ssl.SSLContext context, java.net.ServerSocket server, InetSocketAddress inner,
                         int handshakeMillis, Gate gate, String name) {
                this.context = context;
                this.server = server;
                this.inner = inner;
                this.handshakeMillis = handshakeMillis;
                this.gate = gate;
                this.name = name;
                Thread.ofPlatform().daemon().name("arp-tls-accept-" + name).start(this::acceptLoop);
            }

            private void acceptLoop() {
                Sockets.acceptEach(server, name, socket -> {
                    if (gate.enter(socket.getInetAddress(), name)) {
                        Thread.ofVirtual().name("arp-tls-" + name).start(() -> bridge(socket));
                    } else {
                        Sockets.closeQuietly(socket);
                    }
                });
            }

            private void bridge(java.net.Socket socket) {
                var peer = (InetSocketAddress) socket.getRemoteSocketAddress();
                java.net.Socket plain = null;
                var deadline = DEADLINES.schedule(() -> Sockets.closeQuietly(socket), handshakeMillis, java.util.concurrent.TimeUnit.MILLISECONDS);
                try {
                    Sockets.tune(socket);
                    var tls = (javax.net.ssl.SSLSocket) context.getSocketFactory().createSocket(socket, null, socket.getPort(), true);
                    tls.setUseClientMode(false);
                    tls.startHandshake();
                    deadline.cancel(false);
                    plain = new java.net.Socket();
                    plain.bind(new InetSocketAddress(inner.getAddress(), 0));
                    int port = plain.getLocalPort();
                    BRIDGED.put(port, peer);
                    try {
                        plain.connect(inner, 5000);
                        plain.setTcpNoDelay(true);
                    } catch (IOException e) {
                        BRIDGED.remove(port);
                        throw e;
                    }
                    gate.leave(peer.getAddress());
                    pump(tls, plain, () -> BRIDGED.remove(port));
                    return;
                } catch (IOException | RuntimeException e) {
                    Log.debug(name + " port: TLS from " + peer.getAddress().getHostAddress() + " failed: " + e.getMessage());
                    deadline.cancel(false);
                    Sockets.closeQuietly(socket);
                    Sockets.closeQuietly(plain);
                }
                gate.leave(peer.getAddress());
            }

            @Override
            public void close() { Sockets.closeQuietly(server); }
        }

        /** Loopback listener for arpc: every connection to it continues to the relay over TLS. */
        public static final class Dialer implements AutoCloseable {
            private final java.net.ServerSocket local;
            private final javax.net.ssl.SSLContext context;
            private final String host;
            private final int port;
            private final boolean checkHost;

            public Dialer(javax.net.ssl.SSLContext context, String host, int port, boolean checkHost) throws IOException {
                this.context = context;
                this.host = host;
                this.port = port;
                this.checkHost = checkHost;
                this.local = new java.net.ServerSocket(0, 1024, java.net.InetAddress.getLoopbackAddress());
                Thread.ofPlatform().daemon().name("arpc-tls-dialer").start(this::acceptLoop);
            }

            public InetSocketAddress address() { return (InetSocketAddress) local.getLocalSocketAddress(); }

            private void acceptLoop() {
                Sockets.acceptEach(local, "TLS bridge", plain -> Thread.ofVirtual().name("arpc-tls-data").start(() -> {
                    try {
                        plain.setTcpNoDelay(true);
                        pump(connect(context, host, port, checkHost, 10_000), plain, () -> {});
                    } catch (IOException | RuntimeException e) {
                        Log.debug("TLS data connection to " + host + ":" + port + " failed: " + e.getMessage());
                        Sockets.closeQuietly(plain);
                    }
                }));
            }

            @Override
            public void close() { Sockets.closeQuietly(local); }
        }

        /** Copies both ways on two virtual threads; half-closes pass through; all is closed when both end. */
        static void pump(java.net.Socket a, java.net.Socket b, Runnable whenClosed) {
            AtomicInteger running = new AtomicInteger(2);
            Runnable ended = () -> {
                if (running.decrementAndGet() == 0) {
                    Sockets.closeQuietly(a);
                    Sockets.closeQuietly(b);
                    whenClosed.run();
                }
            };
            Thread.ofVirtual().name("arp-tls-pump").start(() -> copy(a, b, ended));
            Thread.ofVirtual().name("arp-tls-pump").start(() -> copy(b, a, ended));
        }

        private static void copy(java.net.Socket from, java.net.Socket to, Runnable ended) {
            byte[] buffer = new byte[16 * 1024];
            try {
                InputStream in = from.getInputStream();
                OutputStream out = to.getOutputStream();
                int n;
                while ((n = in.read(buffer)) >= 0) out.write(buffer, 0, n);
                try {
                    to.shutdownOutput();
                } catch (IOException | UnsupportedOperationException e) {
                    Sockets.closeQuietly(to); // TLS 1.2 has no half-close
                }
            } catch (IOException e) {
                Sockets.closeQuietly(from); // broken: end the other direction too
                Sockets.closeQuietly(to);
            } finally {
                ended.run();
            }
        }
    }

    /** Sets POSIX permissions such as "rw-------" where the file system has them. */
    public static void ownerOnly(Path p, String perms) {
        try {
            Files.setPosixFilePermissions(p, java.nio.file.attribute.PosixFilePermissions.fromString(perms));
        } catch (UnsupportedOperationException | IOException e) {
            // not a POSIX file system: the platform's defaults apply
        }
    }

    /** A secret given as an option, else in a file (first line), else in an environment variable. */
    public static String resolveSecret(String option, Path file, String envName) throws IOException {
        if (option != null) return option;
        if (file != null) {
            String first = Files.readAllLines(file, StandardCharsets.UTF_8).stream().findFirst().orElse("").strip();
            if (first.isEmpty()) throw new IOException(file + " is empty: its first line must be the secret");
            return first;
        }
        String env = System.getenv(envName);
        return env == null || env.isEmpty() ? null : env;
    }

    /** Client ids travel in URLs and logs: keep them to a safe, bounded alphabet. */
    public static boolean validClientId(String id) {
        if (id == null || id.isEmpty() || id.length() > 128) return false;
        for (int i = 0; i < id.length(); i++) {
            char c = id.charAt(i);
            boolean ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
                    || c == '.' || c == '_' || c == '~' || c == '-';
            if (!ok) return false;
        }
        return true;
    }

    /** The additions this version speaks, in a fixed order so Hello is the same bytes every run. */
    static final List<String> OUR_FEATURES = List.of(FEATURE_HEARTBEAT, FEATURE_HANDOVER, FEATURE_TCP_PORTS, FEATURE_REUSE,
            FEATURE_TOKENS);
}
