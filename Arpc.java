///usr/bin/env jbang "$0" "$@" ; exit $?
//JAVA 21+
//JAVA_OPTIONS -XX:+UseG1GC -Xms32m -Xmx512m -XX:MaxNewSize=32m -XX:MaxDirectMemorySize=1g
//DEPS info.picocli:picocli:4.7.7
//SOURCES Protocol.java
package arp;

import arp.Protocol.EventLoop;
import arp.Protocol.EventLoopGroup;
import arp.Protocol.FrameReader;
import arp.Protocol.Frames;
import arp.Protocol.Hello;
import arp.Protocol.IoHandler;
import arp.Protocol.Log;
import arp.Protocol.MachineId;
import arp.Protocol.Message;
import arp.Protocol.NewProxyConn;
import arp.Protocol.Ping;
import arp.Protocol.Pong;
import arp.Protocol.ProtocolException;
import arp.Protocol.ProxyFailed;
import arp.Protocol.ProxyStarted;
import arp.Protocol.Register;
import arp.Protocol.RegisterResult;
import arp.Protocol.RequestNewProxyConn;
import arp.Protocol.Sockets;
import arp.Protocol.Splice;
import arp.Protocol.StartProxy;
import arp.Protocol.TcpPort;
import arp.Protocol.TcpPortResult;
import arp.Protocol.Timer;
import arp.Protocol.Tls;
import arp.Protocol.Proofs;
import arp.Protocol.Challenge;
import arp.Protocol.Auth;
import arp.Protocol.AddTokens;
import arp.Protocol.AddTokensResult;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.BufferedInputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.OutputStream;
import java.net.ConnectException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.net.UnknownHostException;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.ThreadLocalRandom;

/**
 * arpc, the client on the private machine. It registers with arps and, in tunnel mode, splices every
 * data connection that gets a visitor to the local service.
 */
@Command(name = "arpc", mixinStandardHelpOptions = true, version = "arpc " + Protocol.VERSION,
        sortOptions = false, usageHelpAutoWidth = true,
        description = "The arp client: exposes a local TCP service through an arps relay.")
public final class Arpc implements Callable<Integer> {

    @Option(names = {"-c", "--client-id"}, paramLabel = "ID", description = "Client id, also the visitors' token (default: this machine's id, as the original arpc computes it).")
    String clientId;

    @Option(names = {"-s", "--server-addr"}, defaultValue = "127.0.0.1", paramLabel = "HOST", description = "The relay's host (default: ${DEFAULT-VALUE}).")
    String serverAddr;

    @Option(names = "--control-port", defaultValue = "17001", description = "The relay's control port (default: ${DEFAULT-VALUE}).")
    int controlPort;

    @Option(names = "--proxy-port", defaultValue = "17002", description = "The relay's proxy port (default: ${DEFAULT-VALUE}).")
    int proxyPort;

    @Option(names = "--local-addr", defaultValue = "127.0.0.1", paramLabel = "HOST", description = "Host of the local service (default: ${DEFAULT-VALUE}).")
    String localAddr;

    @Option(names = "--local-port", paramLabel = "PORT", description = "Port of the local service (required).")
    Integer localPort;

    @Option(names = "--remote-port", paramLabel = "PORT", description = "Also ask the relay for a dedicated public port for raw TCP (0 = any free one in its --tcp-ports range); visitors there need no token.")
    Integer remotePort;

    @Option(names = "--token", paramLabel = "TOKEN", description = "An extra token that also reaches this client (repeat for several, up to 16): one per person sharing the tunnel.")
    List<String> tokens = new ArrayList<>();

    @Option(names = "--secret", paramLabel = "SECRET", description = "The relay's secret (default: $ARP_SECRET). Prefer --secret-file or the variable: arguments show in ps.")
    String secret;

    @Option(names = "--secret-file", paramLabel = "FILE", description = "File whose first line is the relay's secret.")
    Path secretFile;

    @Option(names = "--tls", description = "Connect to the relay with TLS, trusting the JVM's CA certificates and checking the host name.")
    boolean tls;

    @Option(names = "--tls-ca", paramLabel = "PEM", description = "Trust the relay by these CA certificates instead (implies --tls).")
    Path tlsCa;

    @Option(names = "--tls-pin", paramLabel = "sha256:HEX", description = "Trust exactly the relay certificate with this fingerprint, as arps prints it (implies --tls).")
    String tlsPin;

    @Option(names = "--heartbeat", defaultValue = "20", paramLabel = "SECONDS", description = "Interval of heartbeats to the relay; 3 missed answers mean the relay is gone (default: ${DEFAULT-VALUE}).")
    int heartbeat;

    @Option(names = "--max-retries", defaultValue = "-1", paramLabel = "N", description = "Give up (exit 1) after N failed connection attempts in a row (default: never).")
    int maxRetries;

    @Option(names = "--config-dir", paramLabel = "DIR", description = "Where arpc keeps its config (default: $ARP_CONFIG_DIR, else ~/.arp-client).")
    Path configDir;

    @Option(names = "--io-threads", paramLabel = "N", description = "Event-loop threads that carry the traffic (default: one per core).")
    Integer ioThreads;

    @Option(names = "--log-level", paramLabel = "LEVEL", description = "error, warn, info, debug or trace (default: $ARP_LOG, else info).")
    String logLevel;

    @Option(names = "--json", description = "Print one JSON line on stdout each time the client registers.")
    boolean json;

    public static void main(String[] args) {
        System.exit(new CommandLine(new Arpc()).execute(args));
    }

    @Override
    public Integer call() throws Exception {
        try {
            Log.configure("arpc", logLevel);
        } catch (IllegalArgumentException e) {
            System.err.println("arpc: " + e.getMessage());
            return 2;
        }
        String problem = checkOptions();
        if (problem != null) {
            System.err.println("arpc: " + problem);
            return 2;
        }
        String id = clientId != null ? clientId : MachineId.generate();
        Path dir = configDir != null ? configDir
                : System.getenv("ARP_CONFIG_DIR") != null ? Path.of(System.getenv("ARP_CONFIG_DIR"))
                : Path.of(System.getProperty("user.home"), ".arp-client");
        InetSocketAddress local;
        try {
            local = new InetSocketAddress(InetAddress.getByName(localAddr), localPort);
        } catch (UnknownHostException e) {
            System.err.println("arpc: --local-addr " + localAddr + " cannot be resolved");
            return 2;
        }
        byte[] installKey;
        byte[] secretBytes;
        javax.net.ssl.SSLContext tlsContext = null;
        try {
            installKey = ClientConfig.installKey(dir, id);
            String s = Protocol.resolveSecret(secret, secretFile, "ARP_SECRET");
            secretBytes = s == null ? null : s.getBytes(StandardCharsets.UTF_8);
            if (tls || tlsCa != null || tlsPin != null) {
                tlsContext = Tls.clientContext(tlsCa, tlsPin == null ? null : Tls.normalizePin(tlsPin));
            }
        } catch (IOException | java.security.GeneralSecurityException e) {
            System.err.println("arpc: " + e.getMessage());
            return 2;
        }
        Tunnel tunnel = new Tunnel(this, id, local, secretBytes, Proofs.ownerTag(installKey, id), tlsContext);
        Runtime.getRuntime().addShutdownHook(new Thread(tunnel::stop, "arpc-shutdown"));
        return tunnel.run();
    }

    private String checkOptions() {
        if (localPort == null) return "--local-port is required: the port of the local service to expose";
        for (var p : List.of(java.util.Map.entry("--control-port", controlPort), java.util.Map.entry("--proxy-port", proxyPort))) {
            if (p.getValue() < 1 || p.getValue() > 65535) return p.getKey() + " must be 1..65535, not " + p.getValue();
        }
        if (localPort < 1 || localPort > 65535) return "--local-port must be 1..65535, not " + localPort;
        if (clientId != null && !Protocol.validClientId(clientId)) {
            return "--client-id must be 1-128 characters from A-Z a-z 0-9 . _ ~ -";
        }
        if (ioThreads != null && (ioThreads < 1 || ioThreads > 256)) return "--io-threads must be 1..256, not " + ioThreads;
        if (heartbeat < 1 || heartbeat > 3600) return "--heartbeat must be 1..3600 seconds";
        if (remotePort != null && (remotePort < 0 || remotePort > 65535)) return "--remote-port must be 0..65535, not " + remotePort;
        if (tokens.size() > Protocol.MAX_TOKENS) return "at most " + Protocol.MAX_TOKENS + " --token options";
        for (String t : tokens) {
            if (!Protocol.validClientId(t)) return "--token must be 1-128 characters from A-Z a-z 0-9 . _ ~ -, not '" + t + "'";
        }
        if (secret != null && secretFile != null) return "--secret and --secret-file exclude each other";
        if (secret != null && secret.isBlank()) return "--secret is empty (an unset variable?): give the relay's secret";
        if (tlsPin != null && Tls.normalizePin(tlsPin) == null) {
            return "--tls-pin must be sha256: followed by 64 hex digits (as arps prints it), not '" + tlsPin + "'";
        }
        if (tlsPin != null && tlsCa != null) return "--tls-pin and --tls-ca exclude each other";
        return null;
    }

    // ------------------------------------------------------------------------------------------------

    /** ~/.arp-client/config: {@code key=value} lines, owner-only; other lines are kept as they are. */
    static final class ClientConfig {
        private ClientConfig() {}

        /**
         * Records the client id and returns this install's key, made on first use. The key never leaves
         * the machine; the relay sees only a tag derived from it, which lets a restarted arpc take over
         * its own registration while another install with the same id is refused.
         */
        static byte[] installKey(Path dir, String id) throws IOException {
            Map<String, String> values = read(dir);
            String key = values.get("install-key");
            if (key == null || !key.matches("[0-9a-f]{64}")) key = HexFormat.of().formatHex(Proofs.randomBytes(32));
            values.put("client-id", id);
            values.put("install-key", key);
            try {
                write(dir, values);
            } catch (IOException e) {
                Log.warn("cannot write " + dir.resolve("config") + " (" + e + "); a restarted arpc will not be recognised as this one");
            }
            return HexFormat.of().parseHex(key);
        }

        static Map<String, String> read(Path dir) throws IOException {
            Map<String, String> values = new LinkedHashMap<>();
            Path file = dir.resolve("config");
            if (!Files.exists(file)) return values;
            for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
                int eq = line.indexOf('=');
                if (eq > 0) values.put(line.substring(0, eq).strip(), line.substring(eq + 1).strip());
            }
            return values;
        }

        /** Replaces the file atomically, readable by its owner only (it holds keys). */
        static void write(Path dir, Map<String, String> values) throws IOException {
            Files.createDirectories(dir);
            trySetPermissions(dir, "rwx------");
            List<String> lines = new ArrayList<>();
            values.forEach((k, v) -> lines.add(k + "=" + v));
            // a file of our own to write, so that two arpc starting at once do not trip over each other
            Path tmp;
            try {
                tmp = Files.createTempFile(dir, "config", ".tmp", PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
            } catch (UnsupportedOperationException e) {
                tmp = Files.createTempFile(dir, "config", ".tmp"); // not POSIX: the platform's defaults apply
            }
            try {
                Files.write(tmp, lines, StandardCharsets.UTF_8);
                Files.move(tmp, dir.resolve("config"), java.nio.file.StandardCopyOption.REPLACE_EXISTING, java.nio.file.StandardCopyOption.ATOMIC_MOVE);
            } finally {
                Files.deleteIfExists(tmp);
            }
        }

        private static void trySetPermissions(Path p, String perms) {
            try {
                Files.setPosixFilePermissions(p, PosixFilePermissions.fromString(perms));
            } catch (UnsupportedOperationException | IOException e) {
                // not a POSIX file system: the platform's defaults apply
            }
        }
    }

    // ------------------------------------------------------------------------------------------------

    /** The control connection, kept up with heartbeats and re-established with back-off. */
    static final class Tunnel {
        private static final long MAX_BACKOFF_MILLIS = 30_000;

        private final Arpc options;
        private final String id;
        private final InetSocketAddress local;
        private final EventLoopGroup loops;
        private final byte[] secret;
        private final String ownerTag;
        private final javax.net.ssl.SSLContext tls;
        /** With TLS, data connections go through this loopback bridge; the event loops stay plain. */
        private final Tls.Dialer dialer;
        /** Keys the proofs of data connections requested on the current control connection (null: open relay). */
        private volatile byte[] sessionKey;
        private volatile boolean stopping;
        private volatile Socket current;
        private volatile Thread runner;
        private boolean registered; // the current attempt got as far as a successful RegisterResult

        Tunnel(Arpc options, String id, InetSocketAddress local, byte[] secret, String ownerTag,
               javax.net.ssl.SSLContext tls) throws IOException {
            this.options = options;
            this.id = id;
            this.local = local;
            this.secret = secret;
            this.ownerTag = ownerTag;
            this.tls = tls;
            this.dialer = tls == null ? null : new Tls.Dialer(tls, options.serverAddr, options.proxyPort, checkHost());
            this.loops = new EventLoopGroup("arpc-io", options.ioThreads == null ? EventLoopGroup.defaultSize() : options.ioThreads);
        }

        /** A pinned certificate is trusted as it is; one vouched for by a CA must also name the host. */
        private boolean checkHost() { return options.tlsPin == null; }

        /** Where data connections connect: the relay's proxy port, or the TLS bridge to it. */
        InetSocketAddress proxyTarget() {
            return dialer != null ? dialer.address() : new InetSocketAddress(options.serverAddr, options.proxyPort);
        }

        int run() {
            runner = Thread.currentThread();
            int failures = 0; // attempts in a row that did not get registered
            while (!stopping) {
                String reason;
                registered = false;
                try {
                    session();
                    if (stopping) break;
                    reason = "connection to the relay lost";
                } catch (Refused e) {
                    Log.error("cannot register: " + e.getMessage());
                    return 3;
                } catch (SocketTimeoutException e) {
                    reason = "the relay stopped answering";
                } catch (ConnectException e) {
                    reason = e.getMessage();
                } catch (ProtocolException e) {
                    reason = "protocol error: " + e.getMessage() + tlsHint();
                } catch (IOException e) {
                    reason = e instanceof EOFException ? "the relay closed the connection" + tlsHint() : e.getMessage();
                }
                if (stopping) break;
                if (registered) {
                    failures = 0; // it worked until now: reconnect quickly, and this was no failed attempt
                } else if (++failures > options.maxRetries && options.maxRetries >= 0) {
                    Log.error(reason + "; giving up after " + failures + " failed attempt" + (failures == 1 ? "" : "s"));
                    return 1;
                }
                long ceiling = Math.min(MAX_BACKOFF_MILLIS, 500L << Math.min(failures, 10));
                long delay = ceiling / 2 + ThreadLocalRandom.current().nextLong(ceiling / 2 + 1); // jitter
                Log.warn(reason + "; reconnecting in " + String.format("%.1f", delay / 1000.0) + " s");
                try {
                    Thread.sleep(delay);
                } catch (InterruptedException e) {
                    break;
                }
            }
            return 0;
        }

        static final class Refused extends IOException {
            Refused(String message) { super(message); }
        }

        /** A relay that speaks TLS closes on a plain client before registering: say what may be wrong. */
        private String tlsHint() {
            return registered || tls != null ? "" : " (if the relay uses TLS, add --tls-pin or --tls-ca)";
        }

        /** The control connection, plain or TLS. A certificate that is not trusted is a refusal, not a hiccup. */
        private Socket openControl() throws IOException {
            if (tls == null) {
                Socket socket = new Socket();
                current = socket;
                try {
                    socket.connect(new InetSocketAddress(options.serverAddr, options.controlPort), 10_000);
                } catch (ConnectException e) {
                    throw new ConnectException("cannot connect to " + options.serverAddr + ":" + options.controlPort + " (" + e.getMessage() + ")");
                } catch (SocketTimeoutException e) {
                    throw new IOException("cannot connect to " + options.serverAddr + ":" + options.controlPort + " (timed out)");
                }
                Sockets.tune(socket);
                return socket;
            }
            try {
                Socket socket = Tls.connect(tls, options.serverAddr, options.controlPort, checkHost(), 10_000);
                current = socket;
                return socket;
            } catch (javax.net.ssl.SSLHandshakeException e) {
                Tls.Untrusted pinMismatch = Tls.untrusted(e);
                if (pinMismatch != null) throw new Refused(pinMismatch.getMessage() + " (--tls-pin)");
                for (Throwable t = e; t != null; t = t.getCause()) {
                    if (t instanceof java.security.cert.CertificateException) {
                        throw new Refused("the relay's certificate is not trusted: " + t.getMessage() + " (see --tls-ca, --tls-pin)");
                    }
                }
                throw new IOException("TLS handshake with " + options.serverAddr + ":" + options.controlPort + " failed: "
                        + e.getMessage() + " (does the relay use TLS?)");
            } catch (ConnectException e) {
                throw new ConnectException("cannot connect to " + options.serverAddr + ":" + options.controlPort + " (" + e.getMessage() + ")");
            }
        }

        /** One registration, served until the connection ends; sets {@link #registered} once registered. */
        private void session() throws IOException {
            Thread heartbeats = null;
            if (stopping) return;
            try (Socket socket = openControl()) {
                socket.setSoTimeout(10_000);
                DataInputStream in = new DataInputStream(new BufferedInputStream(socket.getInputStream(), 8192));
                OutputStream out = socket.getOutputStream();
                String nonce = Proofs.nonce();
                Frames.write(out, new Register(id),
                        new Hello(Protocol.PROTOCOL_VERSION, Protocol.OUR_FEATURES, null, nonce, ownerTag, null, null));
                Message first = Frames.read(in);
                byte[] key = null;
                if (first instanceof Challenge challenge) {
                    key = answer(challenge, nonce, out);
                    first = Frames.read(in);
                } else if (secret != null) {
                    // Without TLS, an impostor in between could simply not ask: a secret means "authenticate or nothing".
                    throw new Refused("the relay did not ask for the secret: it runs open, or it is not your relay; drop --secret to use an open relay");
                }
                if (!(first instanceof RegisterResult result)) {
                    throw new ProtocolException("expected RegisterResult, got " + first.getClass().getSimpleName());
                }
                if (!result.success()) {
                    String why = result.error() == null ? "no reason given" : result.error();
                    if (result.retryable()) throw new IOException("registration refused for now: " + why);
                    throw new Refused(why);
                }
                sessionKey = key;
                registered = true;

                // Our arps answers Hello right after RegisterResult; the original never does.
                Message next = readWithin(in, socket, 1000);
                Hello serverHello = next instanceof Hello h ? h : null;
                if (serverHello != null) next = null;
                DataMode mode = DataMode.of(serverHello);
                if (next != null) handle(next, mode);
                Integer tcpPort = options.remotePort == null ? null : claimTcpPort(serverHello, in, out, mode);
                if (!options.tokens.isEmpty()) addTokens(serverHello, in, out, mode);
                announce(serverHello, tcpPort);

                heartbeats = Thread.ofVirtual().name("arpc-heartbeat").start(() -> sendHeartbeats(socket, out));
                // Only our arps answers pings, so only there is silence a reason to reconnect.
                socket.setSoTimeout(serverHello != null ? options.heartbeat * 3 * 1000 : 0);
                while (!stopping) handle(Frames.read(in), mode);
            } finally {
                if (heartbeats != null) heartbeats.interrupt();
                current = null;
            }
        }

        /**
         * Checks the relay's proof first (an impostor learns nothing it could test guesses against),
         * then proves the secret. Returns the session key that data connections prove.
         */
        private byte[] answer(Challenge challenge, String nonce, OutputStream out) throws IOException {
            if (secret == null) {
                throw new Refused("the relay requires a secret: pass --secret-file or --secret, or set ARP_SECRET");
            }
            if (!Proofs.validNonce(challenge.nonce()) || !Proofs.same(Proofs.relay(secret, id, nonce, challenge.nonce()), challenge.proof())) {
                throw new Refused("authentication failed: the relay does not know this secret for client id " + id
                        + " (a wrong --secret, an id the relay has no secret for, or not your relay)");
            }
            Frames.write(out, new Auth(Proofs.client(secret, id, challenge.nonce(), nonce)));
            return Proofs.sessionKey(secret, challenge.nonce(), nonce);
        }

        /** Registers the extra tokens: all of them or, if the relay refuses one, none and exit. */
        private void addTokens(Hello serverHello, DataInputStream in, OutputStream out, DataMode mode) throws IOException {
            if (serverHello == null || !serverHello.has(Protocol.FEATURE_TOKENS)) {
                throw new Refused("this relay takes no extra tokens (it is the original arps or an older arp); drop --token");
            }
            Frames.write(out, new AddTokens(options.tokens));
            while (true) {
                Message m = Frames.read(in);
                if (m instanceof AddTokensResult r) {
                    if (!r.success()) throw new Refused(r.error() == null ? "extra tokens refused" : r.error());
                    return;
                }
                handle(m, mode);
            }
        }

        /** Asks for the dedicated TCP port; pool requests that arrive meanwhile are served. */
        private Integer claimTcpPort(Hello serverHello, DataInputStream in, OutputStream out, DataMode mode) throws IOException {
            if (serverHello == null || !serverHello.has(Protocol.FEATURE_TCP_PORTS)) {
                throw new Refused("this relay has no dedicated TCP ports (it is the original arps or an older arp); drop --remote-port");
            }
            Frames.write(out, new TcpPort(options.remotePort));
            while (true) {
                Message m = Frames.read(in);
                if (m instanceof TcpPortResult r) {
                    if (!r.success() || r.port() == null) throw new Refused(r.error() == null ? "no TCP port given" : r.error());
                    return r.port();
                }
                handle(m, mode);
            }
        }

        /** A frame if one arrives within the time, else null with the stream left intact. */
        private static Message readWithin(DataInputStream in, Socket socket, int millis) throws IOException {
            int before = socket.getSoTimeout();
            socket.setSoTimeout(millis);
            in.mark(Protocol.MAX_FRAME + 4);
            try {
                return Frames.read(in);
            } catch (SocketTimeoutException e) {
                in.reset();
                return null;
            } finally {
                socket.setSoTimeout(before);
            }
        }

        private void sendHeartbeats(Socket socket, OutputStream out) {
            try {
                while (!Thread.currentThread().isInterrupted()) {
                    Thread.sleep(options.heartbeat * 1000L);
                    synchronized (out) {
                        Frames.write(out, new Ping());
                    }
                }
            } catch (InterruptedException e) {
                // the session ended
            } catch (IOException e) {
                Sockets.closeQuietly(socket); // the reader notices and reconnects
            }
        }

        private void handle(Message m, DataMode mode) throws ProtocolException {
            switch (m) {
                case RequestNewProxyConn r -> openDataConnection(r.proxyConnId(), mode);
                case Pong p -> { /* the read itself reset the silence timer */ }
                case Hello h -> { /* a late Hello changes nothing for connections already open */ }
                default -> throw new ProtocolException("unexpected " + m.getClass().getSimpleName() + " on the control connection");
            }
        }

        private void announce(Hello serverHello, Integer tcpPort) {
            int publicPort = serverHello != null && serverHello.publicPort() != null ? serverHello.publicPort() : 17003;
            boolean https = serverHello != null && Boolean.TRUE.equals(serverHello.publicTls());
            String host = options.serverAddr.contains(":") ? "[" + options.serverAddr + "]" : options.serverAddr;
            String base = (https ? "https://" : "http://") + host + ":" + publicPort + "/?token=";
            String url = base + id;
            List<String> tokenUrls = options.tokens.stream().map(t -> base + t).toList();
            String hostUrl = serverHello == null || serverHello.domain() == null ? null
                    : (https ? "https://" : "http://") + id + "." + serverHello.domain() + ":" + publicPort + "/";
            String tcpUrl = tcpPort == null ? null : "tcp://" + host + ":" + tcpPort;
            String kind = serverHello != null ? "arp" : "legacy";
            Log.info("registered as " + id + " with " + options.serverAddr + ":" + options.controlPort
                    + (serverHello == null ? " (original arps)" : "") + (tls != null ? " over TLS" : "")
                    + (sessionKey != null ? ", authenticated" : "") + "; visitors: " + url
                    + (hostUrl == null ? "" : " or " + hostUrl)
                    + (tokenUrls.isEmpty() ? "" : " (also " + String.join(", ", tokenUrls) + ")")
                    + (tcpUrl == null ? "" : " and " + tcpUrl)
                    + " → " + local.getHostString() + ":" + local.getPort());
            if (options.json) {
                var line = Frames.JSON.createObjectNode()
                        .put("event", "registered").put("client_id", id).put("public_url", url).put("server", kind);
                if (hostUrl != null) line.put("host_url", hostUrl);
                if (!tokenUrls.isEmpty()) line.putPOJO("token_urls", tokenUrls);
                if (tcpPort != null) line.put("remote_port", tcpPort).put("tcp_url", tcpUrl);
                line.put("tls", tls != null).put("authenticated", sessionKey != null);
                System.out.println(line);
                System.out.flush();
            }
        }

        private void openDataConnection(String connId, DataMode mode) {
            if (connId.length() > 128) {
                Log.warn("ignoring a connection request with an over-long id");
                return;
            }
            EventLoop loop = loops.next();
            byte[] key = sessionKey;
            String proof = key == null ? null : Proofs.conn(key, connId);
            loop.execute(() -> new DataConnection(this, loop, connId, proof, mode).connect());
        }

        void stop() {
            stopping = true;
            Sockets.closeQuietly(current);
            Thread r = runner;
            if (r != null) r.interrupt();
            if (dialer != null) dialer.close();
            loops.close();
        }
    }

    // ------------------------------------------------------------------------------------------------

    /** How data connections work with the relay at hand. */
    enum DataMode {
        /** The original arps: it writes the visitor's bytes at once; one visitor per connection. */
        LEGACY,
        /** StartProxy, then ProxyStarted or ProxyFailed; one visitor per connection. */
        HANDOVER,
        /** As HANDOVER, with chunked streams, so one connection serves visitor after visitor. */
        REUSE;

        static DataMode of(Hello serverHello) {
            if (serverHello == null || !serverHello.has(Protocol.FEATURE_HANDOVER)) return LEGACY;
            return serverHello.has(Protocol.FEATURE_REUSE) ? REUSE : HANDOVER;
        }
    }

    /**
     * One data connection: dial the relay's proxy port, announce it, wait in the pool, and when a
     * visitor arrives connect to the local service and splice. With handover, the visitor's arrival is
     * a StartProxy frame; behind the original arps it is the first bytes of the visitor's request.
     */
    static final class DataConnection implements IoHandler {
        private static final int CONNECT_TIMEOUT_MILLIS = 10_000;
        private static final int LOCAL_CONNECT_TIMEOUT_MILLIS = 5_000;
        /** What the original arps's visitor gets when the local service is down (it only speaks HTTP). */
        private static final byte[] BAD_GATEWAY = httpError("502 Bad Gateway", "arp: local service is unreachable\r\n");

        private static byte[] httpError(String status, String body) {
            return ("HTTP/1.1 " + status + "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " + body.length()
                    + "\r\nConnection: close\r\n\r\n" + body).getBytes(StandardCharsets.ISO_8859_1);
        }

        /** The same bytes for every visitor, encoded once. */
        private static final byte[] PROXY_STARTED = Frames.encode(new ProxyStarted());

        private enum State { CONNECTING, POOLED, CONNECTING_LOCAL, SPLICED, DONE }

        private final Tunnel tunnel;
        private final EventLoop loop;
        private final String connId;
        private final String proof;
        private final DataMode mode;
        private final boolean handover;
        private FrameReader reader = new FrameReader();
        private SocketChannel relay;
        private SelectionKey relayKey;
        private SocketChannel local;
        private SelectionKey localKey;
        private Timer timer;
        private State state = State.CONNECTING;
        private ByteBuffer toLocal;

        DataConnection(Tunnel tunnel, EventLoop loop, String connId, String proof, DataMode mode) {
            this.tunnel = tunnel;
            this.loop = loop;
            this.connId = connId;
            this.proof = proof;
            this.mode = mode;
            this.handover = mode != DataMode.LEGACY;
        }

        void connect() {
            try {
                relay = SocketChannel.open();
                relay.configureBlocking(false);
                Sockets.tune(relay);
                boolean now = relay.connect(tunnel.proxyTarget());
                relayKey = loop.register(relay, now ? 0 : SelectionKey.OP_CONNECT, this);
                timer = loop.schedule(CONNECT_TIMEOUT_MILLIS, () -> abort("timed out connecting to the relay's proxy port"));
                if (now) relayConnected();
            } catch (IOException e) {
                abort("cannot connect to the relay's proxy port: " + e.getMessage());
            }
        }

        @Override
        public void onReady(SelectionKey key) throws IOException {
            switch (state) {
                case CONNECTING -> {
                    if (relay.finishConnect()) relayConnected();
                }
                case POOLED -> visitorArriving();
                default -> { }
            }
        }

        private void relayConnected() throws IOException {
            timer.cancel();
            ByteBuffer hello = ByteBuffer.wrap(Frames.encode(new NewProxyConn(connId, tunnel.id,
                    handover ? Boolean.TRUE : null, mode == DataMode.REUSE ? Boolean.TRUE : null, proof)));
            relay.write(hello); // ~100 bytes into an empty send buffer
            if (hello.hasRemaining()) throw new IOException("could not send NewProxyConn");
            state = State.POOLED;
            relayKey.interestOps(SelectionKey.OP_READ);
        }

        private void visitorArriving() throws IOException {
            if (handover) {
                Message m = reader.read(relay);
                if (m == null) return;
                if (!(m instanceof StartProxy)) throw new ProtocolException("expected StartProxy, got " + m.getClass().getSimpleName());
                toLocal = reader.leftover();
            } else {
                ByteBuffer first = ByteBuffer.allocate(16 * 1024);
                int n = relay.read(first);
                if (n < 0) throw new EOFException("relay closed the pooled connection");
                if (n == 0) return;
                toLocal = first.flip();
            }
            relayKey.interestOps(0); // the visitor's further bytes wait until the local side is up
            connectLocal();
        }

        private void connectLocal() throws IOException {
            state = State.CONNECTING_LOCAL;
            local = SocketChannel.open();
            local.configureBlocking(false);
            Sockets.tuneLocal(local);
            IoHandler onConnect = new IoHandler() {
                @Override
                public void onReady(SelectionKey key) throws IOException {
                    if (local.finishConnect()) localConnected();
                }

                @Override
                public void onFailure(Throwable error) { localFailed(error.getMessage()); }
            };
            boolean now;
            try {
                now = local.connect(tunnel.local);
            } catch (IOException e) {
                localFailed(e.getMessage());
                return;
            }
            localKey = loop.register(local, now ? 0 : SelectionKey.OP_CONNECT, onConnect);
            timer = loop.schedule(LOCAL_CONNECT_TIMEOUT_MILLIS, () -> localFailed("timed out"));
            if (now) localConnected();
        }

        private void localConnected() {
            timer.cancel();
            state = State.SPLICED;
            Log.debug("data connection " + connId + ": visitor spliced to the local service");
            Splice splice = Splice.between(loop, local, relay);
            if (handover) splice.toSecond(ByteBuffer.wrap(PROXY_STARTED));
            if (mode == DataMode.REUSE) {
                splice.secondFramed(toLocal, this::reused); // what followed StartProxy is chunks
            } else {
                splice.toFirst(toLocal);
            }
            toLocal = null;
            splice.start();
        }

        /** The visitor's stream ended cleanly: wait in the pool for the next one. */
        private void reused(ByteBuffer leftover) {
            state = State.POOLED;
            local = null;
            localKey = null;
            reader = new FrameReader(leftover);
            try {
                relayKey = loop.register(relay, SelectionKey.OP_READ, this);
                visitorArriving(); // the next StartProxy may have come with the last bytes
            } catch (IOException e) {
                onFailure(e);
            }
        }

        private void localFailed(String why) {
            if (state == State.DONE) return;
            state = State.DONE;
            if (timer != null) timer.cancel();
            Log.warn("cannot reach the local service " + tunnel.local.getHostString() + ":" + tunnel.local.getPort() + ": " + why);
            if (localKey != null) localKey.cancel();
            Sockets.closeQuietly(local);
            // Tell the visitor, in the way the relay understands: a frame for ours, HTTP for the original.
            byte[] answer = handover
                    ? Frames.encode(new ProxyFailed("local service unreachable"))
                    : BAD_GATEWAY;
            try {
                relay.write(ByteBuffer.wrap(answer));
                relay.shutdownOutput();
            } catch (IOException e) {
                // the relay side is gone too
            }
            relayKey.cancel();
            Sockets.closeQuietly(relay);
        }

        private void abort(String why) {
            if (state == State.DONE) return;
            Log.debug("data connection " + connId + ": " + why);
            state = State.DONE;
            if (timer != null) timer.cancel();
            if (relayKey != null) relayKey.cancel();
            if (localKey != null) localKey.cancel();
            Sockets.closeQuietly(relay);
            Sockets.closeQuietly(local);
        }

        @Override
        public void onFailure(Throwable error) {
            if (error instanceof ProtocolException) Log.warn("data connection " + connId + ": " + error.getMessage());
            abort(error instanceof EOFException ? "closed by the relay" : String.valueOf(error.getMessage()));
        }
    }
}
