///usr/bin/env jbang "$0" "$@" ; exit $?
//JAVA 21+
//JAVA_OPTIONS -XX:+UseG1GC -Xms32m -Xmx512m -XX:MaxNewSize=32m -XX:MaxDirectMemorySize=1g
//DEPS info.picocli:picocli:4.7.7
//DEPS io.undertow:undertow-core:2.4.4.Final
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
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.time.Instant;
import com.fasterxml.jackson.databind.node.ObjectNode;
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

    @Option(names = "--command-mode", description = "Instead of a local service, expose arpc's own HTTP API that runs coding agents (Claude Code, Codex, Gemini) on this machine.")
    boolean commandMode;

    @Option(names = "--api-port", paramLabel = "PORT", description = "Command mode: also the local port of the API on 127.0.0.1 (default: any free port).")
    Integer apiPort;

    @Option(names = "--api-key", paramLabel = "KEY", description = "Command mode: the API key callers send as 'Authorization: Bearer KEY' (default: $ARP_API_KEY, else the one in the config, made on first start).")
    String apiKey;

    @Option(names = "--cors-origins", split = ",", paramLabel = "ORIGIN", description = "Command mode: browser origins allowed to call the API (comma-separated, e.g. https://app.example.com; default: none).")
    List<String> corsOrigins = new ArrayList<>();

    @Option(names = "--max-sessions", defaultValue = "4", paramLabel = "N", description = "Command mode: agent runs at once; more get 429 (default: ${DEFAULT-VALUE}).")
    int maxSessions;

    @Option(names = "--max-run-time", defaultValue = "0", paramLabel = "SECONDS", description = "Command mode: stop a run that takes longer (default: no limit).")
    long maxRunTime;

    @Option(names = "--proxy-ports", split = ",", paramLabel = "PORT", description = "Command mode: local ports that /proxy/{port}/... may reach (comma-separated; default: none).")
    List<Integer> proxyPorts = new ArrayList<>();

    @Option(names = "--enable-mcp", description = "Command mode: also serve the Model Context Protocol at /mcp (Streamable HTTP), on --mcp-port and through the relay.")
    boolean enableMcp;

    @Option(names = "--mcp-port", defaultValue = "9021", paramLabel = "PORT", description = "Command mode: the MCP server's port on 127.0.0.1 (default: ${DEFAULT-VALUE}; 0 = any free port).")
    int mcpPort;

    @Option(names = "--approval-timeout", defaultValue = "300", paramLabel = "SECONDS", description = "Command mode: a permission request nobody answers is denied after this long (default: ${DEFAULT-VALUE}).")
    int approvalTimeout;
    @Option(names = "--enable-fs", description = "Command mode: serve /api/fs (list directories, read files) inside the --fs-root directories (default: off).")
    boolean enableFs;

    @Option(names = "--fs-root", paramLabel = "DIR", description = "Command mode, with --enable-fs: a directory the file routes may show (repeat for several; default: the home directory).")
    List<Path> fsRoots = new ArrayList<>();

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
        CommandMode command = null;
        InetSocketAddress local;
        if (commandMode) {
            try {
                command = CommandMode.start(this, dir);
            } catch (IOException | RuntimeException e) {
                System.err.println("arpc: cannot start command mode: " + e.getMessage());
                return 1;
            }
            local = command.address();
        } else {
            try {
                local = new InetSocketAddress(InetAddress.getByName(localAddr), localPort);
            } catch (UnknownHostException e) {
                System.err.println("arpc: --local-addr " + localAddr + " cannot be resolved");
                return 2;
            }
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
            if (command != null) command.stop();
            return 2;
        }
        Tunnel tunnel = new Tunnel(this, id, local, secretBytes, Proofs.ownerTag(installKey, id), tlsContext);
        CommandMode started = command;
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            tunnel.stop();
            if (started != null) started.stop(); // agents' process trees are stopped, not orphaned
        }, "arpc-shutdown"));
        int code = tunnel.run();
        Thread.interrupted(); // a signal's shutdown hook interrupts run(); the runs must still be waited for
        if (command != null) command.stop();
        return code;
    }

    private String checkOptions() {
        if (commandMode && localPort != null) return "--local-port and --command-mode exclude each other: command mode exposes arpc's own API";
        if (!commandMode && localPort == null) return "--local-port is required: the port of the local service to expose (or --command-mode)";
        if (!commandMode && (apiPort != null || apiKey != null || !corsOrigins.isEmpty() || !proxyPorts.isEmpty() || enableMcp)) {
            return "--api-port, --api-key, --cors-origins, --proxy-ports and --enable-mcp need --command-mode";
        }
        if (mcpPort < 0 || mcpPort > 65535) return "--mcp-port must be 0..65535, not " + mcpPort;
        if (enableMcp && apiPort != null && apiPort != 0 && apiPort == mcpPort) return "--mcp-port and --api-port must differ";
        if (approvalTimeout < 1 || approvalTimeout > 86400) return "--approval-timeout must be 1..86400 seconds";
        if (apiPort != null && (apiPort < 0 || apiPort > 65535)) return "--api-port must be 0..65535, not " + apiPort;
        if (apiKey != null && apiKey.length() < 16) return "--api-key must have at least 16 characters";
        if (maxSessions < 1 || maxSessions > 1000) return "--max-sessions must be 1..1000, not " + maxSessions;
        if (maxRunTime < 0) return "--max-run-time must be 0 (no limit) or more seconds";
        for (int port : proxyPorts) if (port < 1 || port > 65535) return "--proxy-ports must list ports 1..65535, not " + port;
        if (!commandMode && (enableFs || !fsRoots.isEmpty())) return "--enable-fs and --fs-root need --command-mode";
        if (!fsRoots.isEmpty() && !enableFs) return "--fs-root needs --enable-fs";
        for (Path root : fsRoots) if (!Files.isDirectory(root)) return "--fs-root " + root + " is not an existing directory";
        for (String origin : corsOrigins) {
            if (!origin.matches("https?://[^/\\s]+")) return "--cors-origins takes origins such as https://app.example.com, not '" + origin + "'";
        }
        for (var p : List.of(java.util.Map.entry("--control-port", controlPort), java.util.Map.entry("--proxy-port", proxyPort))) {
            if (p.getValue() < 1 || p.getValue() > 65535) return p.getKey() + " must be 1..65535, not " + p.getValue();
        }
        if (localPort != null && (localPort < 1 || localPort > 65535)) return "--local-port must be 1..65535, not " + localPort;
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

        /** The command-mode API key, and whether it was made just now (then it is shown once). */
        record ApiKey(String value, boolean generated) {}

        /** The key given (option or environment), else the one stored in the config, else a new one, stored. */
        static ApiKey apiKey(Path dir, String given) throws IOException {
            if (given != null && !given.isBlank()) return new ApiKey(given.trim(), false);
            Map<String, String> values = read(dir);
            String stored = values.get("api-key");
            if (stored != null && stored.length() >= 16) return new ApiKey(stored, false);
            String made = java.util.Base64.getUrlEncoder().withoutPadding().encodeToString(Proofs.randomBytes(32));
            values.put("api-key", made);
            write(dir, values);
            return new ApiKey(made, true);
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
            Protocol.ownerOnly(dir, "rwx------");
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

    // ================================================================================================
    // Command mode: an authenticated HTTP API (Undertow) that runs coding agents and streams their output

    /**
     * The API server: every request is authenticated with the API key (except CORS preflights, which
     * carry no credentials), then served on a virtual thread, so a stream that waits for an agent's
     * next line holds no platform thread.
     */
    static final class CommandMode implements io.undertow.server.HttpHandler {
        /** Keeps Undertow's and XNIO's JUL loggers (weakly held by JUL) at WARNING, so their banners stay off stderr. */
        private static final List<java.util.logging.Logger> QUIET = new ArrayList<>();
        static final int MAX_BODY = 1 << 20;
        static final int MAX_STREAMS = 256;

        private final Arpc options;
        private final byte[] key;
        private final java.util.Set<String> corsOrigins;
        private final java.util.Set<Integer> proxyPorts;
        final Runs runs;
        private History history;
        private FileBrowser files; // null unless --enable-fs
        private final java.util.concurrent.ExecutorService requests = java.util.concurrent.Executors.newVirtualThreadPerTaskExecutor();
        private final java.util.concurrent.atomic.AtomicInteger streams = new java.util.concurrent.atomic.AtomicInteger();
        private final java.net.http.HttpClient proxyClient = java.net.http.HttpClient.newBuilder()
                .version(java.net.http.HttpClient.Version.HTTP_1_1).followRedirects(java.net.http.HttpClient.Redirect.NEVER)
                .connectTimeout(java.time.Duration.ofSeconds(5)).build();
        private io.undertow.Undertow server;
        private InetSocketAddress address;
        private InetSocketAddress mcpAddress;
        private Mcp mcp;

        private CommandMode(Arpc options, byte[] key, Runs runs) {
            this.options = options;
            this.key = key;
            this.corsOrigins = java.util.Set.copyOf(options.corsOrigins);
            this.proxyPorts = java.util.Set.copyOf(options.proxyPorts);
            this.runs = runs;
        }

        static CommandMode start(Arpc options, Path configDir) throws IOException {
            System.setProperty("org.jboss.logging.provider", "jdk");
            for (String name : List.of("io.undertow", "org.xnio", "org.jboss")) {
                var logger = java.util.logging.Logger.getLogger(name);
                logger.setLevel(java.util.logging.Level.WARNING);
                QUIET.add(logger);
            }
            String given = options.apiKey != null ? options.apiKey : System.getenv("ARP_API_KEY");
            if (given != null && !given.isBlank() && given.trim().length() < 16) {
                throw new IOException("the API key (ARP_API_KEY) must have at least 16 characters");
            }
            ClientConfig.ApiKey apiKey = ClientConfig.apiKey(configDir, given);
            Runs runs = new Runs(configDir.resolve("sessions"), options.maxSessions, options.maxRunTime, options.approvalTimeout);
            runs.load();
            CommandMode api = new CommandMode(options, apiKey.value().getBytes(StandardCharsets.UTF_8), runs);
            api.history = History.fromEnvironment();
            if (options.enableFs) api.files = new FileBrowser(options.fsRoots.isEmpty() ? List.of(History.home()) : options.fsRoots);
            if (options.enableMcp) api.mcp = new Mcp(runs, api.history);
            var builder = io.undertow.Undertow.builder()
                    .addHttpListener(options.apiPort == null ? 0 : options.apiPort, "127.0.0.1");
            if (options.enableMcp) builder.addHttpListener(options.mcpPort, "127.0.0.1");
            api.server = builder
                    .setIoThreads(1)
                    .setWorkerThreads(2) // requests run on virtual threads; workers only hand them over
                    .setServerOption(io.undertow.UndertowOptions.MAX_HEADER_SIZE, 32 * 1024)
                    .setServerOption(io.undertow.UndertowOptions.REQUEST_PARSE_TIMEOUT, 10_000)
                    .setServerOption(io.undertow.UndertowOptions.NO_REQUEST_TIMEOUT, 120_000)
                    .setHandler(api)
                    .build();
            try {
                api.server.start();
            } catch (RuntimeException e) {
                runs.shutdown();
                throw new IOException("cannot listen on 127.0.0.1:" + (options.apiPort == null ? 0 : options.apiPort)
                        + ": " + (e.getCause() != null ? e.getCause().getMessage() : e.getMessage()));
            }
            var listeners = api.server.getListenerInfo();
            api.address = (InetSocketAddress) listeners.get(0).getAddress();
            if (options.enableMcp) {
                api.mcpAddress = (InetSocketAddress) listeners.get(1).getAddress();
                Log.info("MCP server on http://127.0.0.1:" + api.mcpAddress.getPort() + "/mcp (and /mcp through the relay)");
            }
            if (apiKey.generated()) {
                System.err.println("arpc: API key (shown only now; also in " + configDir.resolve("config") + "): " + apiKey.value());
            }
            Log.info("command mode: API on http://127.0.0.1:" + api.address.getPort() + ", transcripts in " + runs.dir);
            if (options.json) {
                var line = Frames.JSON.createObjectNode().put("event", "api")
                        .put("url", "http://127.0.0.1:" + api.address.getPort()).put("sessions_dir", runs.dir.toString());
                if (api.mcpAddress != null) line.put("mcp_url", "http://127.0.0.1:" + api.mcpAddress.getPort() + "/mcp");
                System.out.println(line);
                System.out.flush();
            }
            return api;
        }

        InetSocketAddress address() { return address; }

        private boolean stopped;

        /** Once, whoever calls first (the shutdown hook or the main thread); a second caller waits for it. */
        synchronized void stop() {
            if (stopped) return;
            stopped = true;
            runs.shutdown();
            if (server != null) server.stop();
            requests.shutdownNow();
        }

        // --- requests

        /** An answer that is not a success: its status and a message that names what was wrong. */
        static final class ApiError extends Exception {
            final int status;

            ApiError(int status, String message) {
                super(message, null, false, false);
                this.status = status;
            }
        }

        @Override
        public void handleRequest(io.undertow.server.HttpServerExchange ex) {
            if (ex.isInIoThread()) {
                ex.dispatch(requests, this);
                return;
            }
            ex.startBlocking();
            try {
                String origin = ex.getRequestHeaders().getFirst("Origin");
                boolean allowed = origin != null && corsOrigins.contains(origin);
                if (allowed) {
                    ex.getResponseHeaders().put(io.undertow.util.HttpString.tryFromString("Access-Control-Allow-Origin"), origin);
                    ex.getResponseHeaders().put(io.undertow.util.HttpString.tryFromString("Vary"), "Origin");
                }
                if (ex.getRequestMethod().toString().equals("OPTIONS")) {
                    if (allowed) {
                        ex.getResponseHeaders().put(io.undertow.util.HttpString.tryFromString("Access-Control-Allow-Methods"), "GET, POST, DELETE, PUT, PATCH, OPTIONS");
                        ex.getResponseHeaders().put(io.undertow.util.HttpString.tryFromString("Access-Control-Allow-Headers"), "Authorization, Content-Type, Last-Event-ID, Accept");
                        ex.getResponseHeaders().put(io.undertow.util.HttpString.tryFromString("Access-Control-Max-Age"), "600");
                    }
                    ex.setStatusCode(204);
                    return;
                }
                if (!authorized(ex)) {
                    ex.getResponseHeaders().put(io.undertow.util.Headers.WWW_AUTHENTICATE, "Bearer");
                    throw new ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'");
                }
                route(ex);
            } catch (ApiError e) {
                sendError(ex, e.status, e.getMessage());
            } catch (IOException e) {
                Log.debug("API request " + ex.getRequestMethod() + " " + ex.getRequestPath() + ": " + e.getMessage());
            } catch (RuntimeException | InterruptedException e) {
                Log.warn("API request " + ex.getRequestMethod() + " " + ex.getRequestPath() + " failed: " + e);
                sendError(ex, 500, "internal error: " + e.getClass().getSimpleName());
            }
        }

        private boolean authorized(io.undertow.server.HttpServerExchange ex) {
            String header = ex.getRequestHeaders().getFirst(io.undertow.util.Headers.AUTHORIZATION);
            if (header == null || !header.regionMatches(true, 0, "Bearer ", 0, 7)) return false;
            return java.security.MessageDigest.isEqual(key, header.substring(7).trim().getBytes(StandardCharsets.UTF_8));
        }

        private void route(io.undertow.server.HttpServerExchange ex) throws ApiError, IOException, InterruptedException {
            String method = ex.getRequestMethod().toString();
            String path = ex.getRequestPath();
            if (path.equals("/mcp") && mcp != null) {
                mcp.handle(ex, corsOrigins);
                return;
            }
            if (mcpAddress != null && ex.getDestinationAddress() instanceof InetSocketAddress to && to.getPort() == mcpAddress.getPort()) {
                throw new ApiError(404, "the MCP port serves /mcp only");
            }
            if (path.startsWith("/proxy/")) {
                proxy(ex);
                return;
            }
            String[] parts = path.split("/", -1); // "", "api", "sessions", id, action
            if (parts.length >= 3 && parts[1].equals("api") && parts[2].equals("sessions")) {
                if (parts.length == 3 || (parts.length == 4 && parts[3].isEmpty())) {
                    switch (method) {
                        case "GET" -> sendJson(ex, 200, runs.listJson());
                        case "POST" -> create(ex);
                        default -> throw new ApiError(405, method + " is not allowed on /api/sessions (GET, POST)");
                    }
                    return;
                }
                AgentRun run = runs.find(parts[3]);
                if (parts.length == 4) {
                    switch (method) {
                        case "GET" -> {
                            if (run == null) throw new ApiError(404, "no session " + printable(parts[3]));
                            if (wantsJson(ex)) sendJson(ex, 200, run.details());
                            else stream(ex, run, since(ex));
                        }
                        case "DELETE" -> delete(ex, run, parts[3]);
                        default -> throw new ApiError(405, method + " is not allowed on a session (GET, DELETE)");
                    }
                    return;
                }
                if (parts.length == 6 && parts[4].equals("permissions")) {
                    if (!method.equals("POST")) throw new ApiError(405, "a permission is answered with POST");
                    if (run == null) throw new ApiError(404, "no session " + printable(parts[3]));
                    sendJson(ex, 200, run.answerPermission(parts[5], readJson(ex), "user"));
                    return;
                }
                if (parts.length == 5 && parts[4].equals("cancel")) {
                    if (!method.equals("POST")) throw new ApiError(405, "cancel takes POST");
                    if (run == null) throw new ApiError(404, "no session " + printable(parts[3]));
                    if (!run.cancel("cancelled by the user")) throw new ApiError(409, "session " + run.id + " has already finished (" + run.status() + ")");
                    sendJson(ex, 200, Frames.JSON.createObjectNode().put("session_id", run.id).put("type", "session_cancelled"));
                    return;
                }
            }
            if (history.route(ex, method, parts)) return;
            if (files != null && files.route(ex, method, parts, runs)) return;
            throw new ApiError(404, "no such route: " + method + " " + printable(path));
        }

        private static String printable(String s) {
            String cut = s.length() > 80 ? s.substring(0, 80) + "…" : s;
            return cut.replaceAll("[^\\x20-\\x7e]", "?");
        }

        private static boolean wantsJson(io.undertow.server.HttpServerExchange ex) {
            String accept = ex.getRequestHeaders().getFirst(io.undertow.util.Headers.ACCEPT);
            return accept != null && accept.contains("application/json") && !accept.contains("text/event-stream");
        }

        /** Where a reader resumes: Last-Event-ID or ?since=N (events after N), or the original's ?from_line=N (from N). */
        private static long since(io.undertow.server.HttpServerExchange ex) throws ApiError {
            String last = ex.getRequestHeaders().getFirst("Last-Event-ID");
            if (last != null && !last.isBlank()) return number("Last-Event-ID", last.trim());
            var q = ex.getQueryParameters();
            if (q.containsKey("since")) return number("since", q.get("since").getFirst());
            if (q.containsKey("from_line")) return Math.max(0, number("from_line", q.get("from_line").getFirst()) - 1);
            return 0;
        }

        private static long number(String name, String value) throws ApiError {
            try {
                long n = Long.parseLong(value);
                if (n >= 0) return Math.min(n, Long.MAX_VALUE / 2); // room for since + 1
            } catch (NumberFormatException e) {
                // below
            }
            throw new ApiError(400, name + " must be a whole number of 0 or more, not '" + printable(value) + "'");
        }

        /** The request's JSON object body (at most 1 MiB; empty is {}). */
        static com.fasterxml.jackson.databind.JsonNode readJson(io.undertow.server.HttpServerExchange ex) throws ApiError, IOException {
            byte[] body = ex.getInputStream().readNBytes(MAX_BODY + 1);
            if (body.length > MAX_BODY) throw new ApiError(413, "request body larger than " + MAX_BODY + " bytes");
            com.fasterxml.jackson.databind.JsonNode json;
            try {
                json = body.length == 0 ? Frames.JSON.createObjectNode() : Frames.JSON.readTree(body);
            } catch (IOException e) {
                throw new ApiError(400, "the request body is not valid JSON");
            }
            if (json == null || !json.isObject()) throw new ApiError(400, "the request body must be a JSON object");
            return json;
        }

        private void create(io.undertow.server.HttpServerExchange ex) throws ApiError, IOException, InterruptedException {
            RunRequest request = RunRequest.parse(readJson(ex));
            AgentRun run = runs.start(request);
            if (wantsJson(ex)) {
                ObjectNode answer = run.details().put("stream_url", "/api/sessions/" + run.id);
                sendJson(ex, 201, answer);
            } else {
                stream(ex, run, 0);
            }
        }

        private void delete(io.undertow.server.HttpServerExchange ex, AgentRun run, String id) throws ApiError, IOException {
            if (run == null) { // the original's semantics: then it is an agent's history session
                ObjectNode deleted = history.deleteAnywhere(id, History.query(ex, "executor"));
                if (deleted == null) throw new ApiError(404, "no session " + printable(id));
                sendJson(ex, 200, deleted);
                return;
            }
            if (run.cancel("cancelled by the user")) {
                sendJson(ex, 200, Frames.JSON.createObjectNode().put("session_id", run.id).put("type", "session_cancelled"));
            } else if (run.running()) {
                throw new ApiError(409, "session " + run.id + " is finishing; try again in a moment");
            } else {
                runs.forget(run);
                sendJson(ex, 200, Frames.JSON.createObjectNode().put("session_id", run.id).put("type", "session_removed"));
            }
        }

        /** Server-Sent Events: the run's events after {@code since}, then live ones, until its complete event. */
        private void stream(io.undertow.server.HttpServerExchange ex, AgentRun run, long since) throws ApiError, IOException, InterruptedException {
            if (streams.incrementAndGet() > MAX_STREAMS) {
                streams.decrementAndGet();
                throw new ApiError(429, MAX_STREAMS + " streams are open already");
            }
            try {
                ex.setStatusCode(200);
                var headers = ex.getResponseHeaders();
                headers.put(io.undertow.util.Headers.CONTENT_TYPE, "text/event-stream; charset=utf-8");
                headers.put(io.undertow.util.Headers.CACHE_CONTROL, "no-cache");
                headers.put(io.undertow.util.HttpString.tryFromString("X-Accel-Buffering"), "no");
                headers.put(io.undertow.util.HttpString.tryFromString("X-Arp-Session-Id"), run.id);
                OutputStream out = ex.getOutputStream();
                run.log.stream(since, new EventLog.Sink() {
                    @Override
                    public void send(EventLog.Event e) throws IOException {
                        StringBuilder b = new StringBuilder(e.data().length() + 32).append("id: ").append(e.id()).append('\n');
                        if (e.kind() != null) b.append("event: ").append(e.kind()).append('\n');
                        // A bare CR also ends an SSE line: each piece gets its own data: line, so output cannot forge fields.
                        for (String piece : e.data().split("\r\n|\r|\n", -1)) b.append("data: ").append(piece).append('\n');
                        b.append('\n');
                        out.write(b.toString().getBytes(StandardCharsets.UTF_8));
                        out.flush();
                    }

                    @Override
                    public void heartbeat() throws IOException {
                        out.write(": ping\n\n".getBytes(StandardCharsets.US_ASCII));
                        out.flush();
                    }
                });
            } finally {
                streams.decrementAndGet();
            }
        }

        /** /proxy/{port}/{path}: to 127.0.0.1:port, only for ports on --proxy-ports and never the API's own. */
        private void proxy(io.undertow.server.HttpServerExchange ex) throws ApiError, IOException, InterruptedException {
            String raw = ex.getRequestURI();
            int start = raw.indexOf("/proxy/") + "/proxy/".length();
            int slash = raw.indexOf('/', start);
            String portText = slash < 0 ? raw.substring(start) : raw.substring(start, slash);
            int port;
            try {
                port = Integer.parseInt(portText);
            } catch (NumberFormatException e) {
                throw new ApiError(400, "the port in /proxy/{port}/ must be a number, not '" + printable(portText) + "'");
            }
            boolean own = port == address.getPort() || (mcpAddress != null && port == mcpAddress.getPort());
            if (own || !proxyPorts.contains(port)) {
                throw new ApiError(403, "port " + port + " is not one of --proxy-ports" + (own ? " (it is arpc's own)" : ""));
            }
            String rest = slash < 0 ? "/" : raw.substring(slash);
            String query = ex.getQueryString();
            java.net.URI target = java.net.URI.create("http://127.0.0.1:" + port + rest + (query == null || query.isEmpty() ? "" : "?" + query));
            var request = java.net.http.HttpRequest.newBuilder(target).timeout(java.time.Duration.ofMinutes(5));
            for (var header : ex.getRequestHeaders()) {
                String name = header.getHeaderName().toString();
                if (HOP_BY_HOP.contains(name.toLowerCase(java.util.Locale.ROOT))) continue;
                for (String value : header) request.header(name, value);
            }
            long length = ex.getRequestContentLength();
            boolean hasBody = length > 0 || ex.getRequestHeaders().contains(io.undertow.util.Headers.TRANSFER_ENCODING);
            var in = ex.getInputStream();
            request.method(ex.getRequestMethod().toString(), hasBody
                    ? (length > 0 ? java.net.http.HttpRequest.BodyPublishers.fromPublisher(java.net.http.HttpRequest.BodyPublishers.ofInputStream(() -> in), length)
                                  : java.net.http.HttpRequest.BodyPublishers.ofInputStream(() -> in))
                    : java.net.http.HttpRequest.BodyPublishers.noBody());
            java.net.http.HttpResponse<java.io.InputStream> response;
            try {
                response = proxyClient.send(request.build(), java.net.http.HttpResponse.BodyHandlers.ofInputStream());
            } catch (IOException e) {
                throw new ApiError(502, "cannot reach 127.0.0.1:" + port + ": " + (e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage()));
            }
            ex.setStatusCode(response.statusCode());
            response.headers().map().forEach((name, values) -> {
                if (HOP_BY_HOP.contains(name.toLowerCase(java.util.Locale.ROOT)) || name.startsWith(":")) return;
                ex.getResponseHeaders().putAll(io.undertow.util.HttpString.tryFromString(name), values);
            });
            try (var body = response.body()) {
                body.transferTo(ex.getOutputStream());
            }
        }

        /** Headers that describe one hop, and ours: never passed on by the proxy route. */
        private static final java.util.Set<String> HOP_BY_HOP = java.util.Set.of("connection", "keep-alive", "proxy-connection",
                "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length", "expect", "authorization", "x-arp-token");

        static void sendJson(io.undertow.server.HttpServerExchange ex, int status, com.fasterxml.jackson.databind.JsonNode body) throws IOException {
            byte[] bytes = Frames.JSON.writeValueAsBytes(body);
            ex.setStatusCode(status);
            ex.getResponseHeaders().put(io.undertow.util.Headers.CONTENT_TYPE, "application/json");
            ex.getResponseHeaders().put(io.undertow.util.Headers.CONTENT_LENGTH, bytes.length);
            ex.getOutputStream().write(bytes);
        }

        private static void sendError(io.undertow.server.HttpServerExchange ex, int status, String message) {
            if (ex.isResponseStarted()) return;
            try {
                sendJson(ex, status, Frames.JSON.createObjectNode().put("message", message).put("type", "error"));
            } catch (IOException e) {
                // the caller is gone
            }
        }
    }

    // ------------------------------------------------------------------------------------------------

    /** The agents arpc runs, each invoked the way its current CLI expects, with no argument read as an option. */
    enum Agent {
        CLAUDE("claude"), CODEX("codex"), GEMINI("gemini");

        final String command;

        Agent(String command) { this.command = command; }

        static Agent named(String name) {
            for (Agent a : values()) if (a.command.equalsIgnoreCase(name)) return a;
            return null;
        }

        /** The arguments after the binary. Option values use the {@code --name=value} form; the prompt comes last. */
        List<String> arguments(RunRequest r) {
            List<String> args = new ArrayList<>();
            switch (this) {
                case CLAUDE -> {
                    args.addAll(List.of("-p", "--output-format", "stream-json", "--verbose"));
                    // Remote approvals: the prompt and the answers travel on stdin (Claude's control protocol).
                    if (r.remoteApprovals()) args.addAll(List.of("--input-format", "stream-json", "--permission-prompt-tool", "stdio"));
                    if (r.model() != null) args.add("--model=" + r.model());
                    if (r.resume() != null) args.add("--resume=" + r.resume());
                    if (r.permissionMode() != null) args.add("--permission-mode=" + r.permissionMode());
                    for (String tool : r.allowedTools()) args.add("--allowedTools=" + tool);
                    if (!r.remoteApprovals()) {
                        args.add("--");
                        args.add(r.prompt());
                    }
                }
                case CODEX -> {
                    // exec never asks for approval: --full-auto is its sandboxed mode (workspace writes only)
                    args.addAll(List.of("exec", "--json", "--skip-git-repo-check", "--full-auto"));
                    if (r.model() != null) args.add("--model=" + r.model());
                    if (r.resumeLast()) args.addAll(List.of("resume", "--last"));
                    else if (r.resume() != null) args.addAll(List.of("resume", r.resume()));
                    args.add("--");
                    args.add(r.prompt());
                }
                case GEMINI -> {
                    args.add("--output-format=stream-json");
                    if (r.model() != null) args.add("--model=" + r.model());
                    if (r.approvalMode() != null) args.add("--approval-mode=" + r.approvalMode());
                    if (r.resume() != null) args.add("--resume=" + r.resume());
                    args.add("--prompt=" + r.prompt());
                }
            }
            return args;
        }

        /** The agent's own session id, if this line of its stream announces it. */
        String sessionIdIn(com.fasterxml.jackson.databind.JsonNode line) {
            String type = line.path("type").asText("");
            com.fasterxml.jackson.databind.JsonNode id = switch (this) {
                case CLAUDE -> type.equals("system") && line.path("subtype").asText("").equals("init") ? line.get("session_id") : null;
                case CODEX -> type.equals("thread.started") ? line.get("thread_id") : null;
                case GEMINI -> type.equals("init") ? line.get("session_id") : null;
            };
            return id != null && id.isTextual() && !id.asText().isBlank() ? id.asText() : null;
        }

        /** The CLI on PATH, as an absolute path, or null. */
        Path find() {
            String path = System.getenv("PATH");
            if (path == null) return null;
            for (String dir : path.split(java.io.File.pathSeparator)) {
                if (dir.isEmpty()) continue;
                Path candidate = Path.of(dir, command);
                if (Files.isRegularFile(candidate) && Files.isExecutable(candidate)) return candidate.toAbsolutePath();
            }
            return null;
        }
    }

    /** A validated POST /api/sessions body (the original's fields). */
    record RunRequest(Agent agent, Path binary, String prompt, Path projectPath, String model, String resume,
                      String permissionMode, List<String> allowedTools, boolean resumeLast, String approvalMode,
                      boolean remoteApprovals) {
        static final java.util.Set<String> PERMISSION_MODES = java.util.Set.of("acceptEdits", "bypassPermissions", "default", "plan", "dontAsk");
        static final java.util.Set<String> APPROVAL_MODES = java.util.Set.of("default", "auto_edit", "yolo", "plan");
        /** Linux refuses a single argument longer than 128 KiB: a limit in bytes, with room for "--prompt=". */
        static final int MAX_PROMPT = 100_000;

        static RunRequest parse(com.fasterxml.jackson.databind.JsonNode body) throws CommandMode.ApiError {
            String executor = text(body, "executor", false);
            Agent agent = executor == null ? Agent.CLAUDE : Agent.named(executor);
            if (agent == null) throw bad("executor must be claude, codex or gemini, not '" + CommandMode.printable(executor) + "'");
            String prompt = text(body, "prompt", false);
            if (prompt == null || prompt.isBlank()) throw bad("prompt is required and cannot be empty");
            if (prompt.getBytes(StandardCharsets.UTF_8).length > MAX_PROMPT) throw bad("prompt is longer than " + MAX_PROMPT + " bytes (UTF-8)");
            if (prompt.indexOf('\0') >= 0) throw bad("prompt must not contain NUL characters");
            String project = text(body, "project_path", false);
            if (project == null || project.isBlank()) throw bad("project_path is required: the directory the agent works in");
            Path projectPath;
            try {
                projectPath = Path.of(project);
            } catch (java.nio.file.InvalidPathException e) {
                throw bad("project_path is not a valid path");
            }
            if (!projectPath.isAbsolute()) throw bad("project_path must be an absolute path, not '" + CommandMode.printable(project) + "'");
            if (!Files.isDirectory(projectPath)) throw bad("project_path " + CommandMode.printable(project) + " is not an existing directory");
            String model = text(body, "model", true);
            String resume = text(body, "resume", true);
            String permissionMode = text(body, "permission_mode", false);
            if (permissionMode != null && !permissionMode.isEmpty() && !PERMISSION_MODES.contains(permissionMode)) {
                throw bad("permission_mode must be one of acceptEdits, bypassPermissions, default, plan, dontAsk, not '"
                        + CommandMode.printable(permissionMode) + "'");
            }
            String approvalMode = text(body, "approval_mode", false);
            if (approvalMode != null && !approvalMode.isEmpty() && !APPROVAL_MODES.contains(approvalMode)) {
                throw bad("approval_mode must be one of default, auto_edit, yolo, plan, not '" + CommandMode.printable(approvalMode) + "'");
            }
            List<String> tools = new ArrayList<>();
            var toolsNode = body.get("allowed_tools");
            if (toolsNode != null && !toolsNode.isNull()) {
                if (!toolsNode.isArray() || toolsNode.size() > 100) throw bad("allowed_tools must be an array of at most 100 strings");
                for (var t : toolsNode) {
                    if (!t.isTextual() || t.asText().isBlank()) throw bad("allowed_tools must hold non-empty strings");
                    tools.add(optionValue("allowed_tools", t.asText()));
                }
            }
            boolean resumeLast = false;
            var last = body.get("resume_last");
            if (last != null && !last.isNull()) {
                if (last.isBoolean()) resumeLast = last.asBoolean();
                else if (last.isTextual() && List.of("true", "1", "yes", "on", "false", "0", "no", "off", "").contains(last.asText().toLowerCase(java.util.Locale.ROOT))) {
                    resumeLast = List.of("true", "1", "yes", "on").contains(last.asText().toLowerCase(java.util.Locale.ROOT));
                } else if (last.isNumber()) resumeLast = last.asInt() == 1;
                else throw bad("resume_last must be true or false");
            }
            boolean remoteApprovals = false;
            var remote = body.get("remote_approvals");
            if (remote != null && !remote.isNull()) {
                if (!remote.isBoolean()) throw bad("remote_approvals must be true or false");
                remoteApprovals = remote.asBoolean();
                if (remoteApprovals && agent != Agent.CLAUDE) throw bad("remote_approvals works with executor claude only");
            }
            Path binary = agent.find();
            if (binary == null) {
                throw bad("executor " + agent.command + ": the " + agent.command + " CLI is not installed here (not found on arpc's PATH)");
            }
            return new RunRequest(agent, binary, prompt, projectPath, model, resume, emptyToNull(permissionMode), tools,
                    resumeLast, emptyToNull(approvalMode), remoteApprovals);
        }

        /** A string field; {@code option} fields become option values and must not look like options. */
        private static String text(com.fasterxml.jackson.databind.JsonNode body, String name, boolean option) throws CommandMode.ApiError {
            var node = body.get(name);
            if (node == null || node.isNull()) return null;
            if (!node.isTextual()) throw bad(name + " must be a string");
            String value = node.asText();
            if (!option) return value;
            return value.isEmpty() ? null : optionValue(name, value);
        }

        private static String optionValue(String name, String value) throws CommandMode.ApiError {
            if (value.startsWith("-")) throw bad(name + " must not start with '-'");
            if (value.length() > 256 || value.chars().anyMatch(c -> c < 0x20)) throw bad(name + " must be at most 256 printable characters");
            return value;
        }

        private static String emptyToNull(String s) { return s == null || s.isEmpty() ? null : s; }

        private static CommandMode.ApiError bad(String message) { return new CommandMode.ApiError(400, message); }
    }

    // ------------------------------------------------------------------------------------------------

    /**
     * A run's events, in one sequence (1, 2, 3…) for all kinds. Each is appended to its transcript on
     * disk first and then kept in a bounded window in memory; a reader behind the window (or of a run
     * that finished, maybe before a restart) reads the older part from disk, so it never sees a gap.
     */
    static final class EventLog {
        static final int MAX_EVENTS = 10_000;
        static final long MAX_BYTES = 8L << 20;
        static final long HEARTBEAT_MILLIS = 15_000;

        /** {@code kind} null is the default SSE event ("message"): an agent's stdout line. */
        record Event(long id, String kind, String data) {}

        interface Sink {
            void send(Event e) throws IOException;

            void heartbeat() throws IOException;
        }

        private final Path file;
        private OutputStream disk;
        private Event[] window;     // made on the first append: runs read from disk need none
        private int windowStart;    // index in the ring of the oldest event kept
        private int windowSize;
        private long windowBytes;
        private long lastId;
        private boolean ended;      // the complete event is in
        private boolean diskFailed;

        /** A new transcript. */
        EventLog(Path file) throws IOException {
            this.file = file;
            this.disk = new java.io.BufferedOutputStream(Files.newOutputStream(file, java.nio.file.StandardOpenOption.CREATE_NEW,
                    java.nio.file.StandardOpenOption.WRITE), 64 * 1024);
        }

        /** A transcript on disk, read-only unless {@link #reopen} ends it. */
        EventLog(Path file, long lastId, boolean ended) {
            this.file = file;
            this.lastId = lastId;
            this.ended = ended;
        }

        /** Scans a transcript of a run that did not end (arpc died): its last id. */
        static long lastIdOnDisk(Path file) throws IOException {
            long last = 0;
            try (var lines = Files.lines(file, StandardCharsets.UTF_8)) {
                for (var it = lines.iterator(); it.hasNext(); ) {
                    String line = it.next();
                    try {
                        last = Math.max(last, Frames.JSON.readTree(line).path("id").asLong(0));
                    } catch (IOException e) {
                        break; // a line cut short by the crash: nothing after it counts
                    }
                }
            }
            return last;
        }

        /** Lets go of the file (a run that could not start, or is forgotten). */
        synchronized void close() {
            Sockets.closeQuietly(disk);
            disk = null;
        }

        /** Makes an ended-by-crash transcript writable again, to append its complete event. */
        synchronized void reopen() throws IOException {
            disk = new java.io.BufferedOutputStream(Files.newOutputStream(file, java.nio.file.StandardOpenOption.APPEND));
        }

        synchronized long lastId() { return lastId; }

        synchronized boolean ended() { return ended; }

        /** Adds an event; {@code complete} marks the last one. Returns its id, or -1 once ended. */
        synchronized long append(String kind, String data, boolean complete) {
            if (ended) return -1;
            Event e = new Event(++lastId, kind, data);
            if (disk != null && !diskFailed) {
                try {
                    var line = Frames.JSON.createObjectNode().put("id", e.id());
                    if (kind != null) line.put("event", kind);
                    line.put("data", data);
                    disk.write(Frames.JSON.writeValueAsBytes(line));
                    disk.write('\n');
                    disk.flush(); // before the window lets go of it, so a reader finds it on disk
                } catch (IOException ex) {
                    diskFailed = true;
                    Log.warn("cannot write " + file + " (" + ex.getMessage() + "); only the last events stay readable");
                }
            }
            if (window == null) window = new Event[MAX_EVENTS];
            if (windowSize == MAX_EVENTS) dropOldest();
            window[(windowStart + windowSize) % MAX_EVENTS] = e;
            windowSize++;
            windowBytes += data.length() + 16;
            while (windowBytes > MAX_BYTES && windowSize > 1) dropOldest();
            if (complete) {
                ended = true;
                Sockets.closeQuietly(disk);
                disk = null;
                windowStart = 0; // a finished run is read from disk: memory goes to the running ones
                windowSize = 0;
                windowBytes = 0;
                window = null;
            }
            notifyAll();
            return e.id();
        }

        private void dropOldest() {
            Event old = window[windowStart];
            window[windowStart] = null;
            windowStart = (windowStart + 1) % MAX_EVENTS;
            windowSize--;
            windowBytes -= old.data().length() + 16;
        }

        private record Batch(List<Event> events, long firstInWindow, long last, boolean ended) {}

        /** Events from {@code next} on in the window; waits up to a heartbeat interval for one. Null: none came. */
        private synchronized Batch after(long next) throws InterruptedException {
            long deadline = System.currentTimeMillis() + HEARTBEAT_MILLIS;
            while (next > lastId && !ended) {
                long left = deadline - System.currentTimeMillis();
                if (left <= 0) return null;
                wait(left);
            }
            return window(next);
        }

        private synchronized Batch window(long next) {
            long first = lastId - windowSize + 1;
            List<Event> events = new ArrayList<>();
            for (long id = Math.max(next, first); id <= lastId; id++) {
                events.add(window[(int) ((windowStart + (id - first)) % MAX_EVENTS)]);
            }
            return new Batch(events, first, lastId, ended);
        }

        /** Sends every event after {@code since}, then the live ones, until the complete event has gone out. */
        void stream(long since, Sink sink) throws IOException, InterruptedException {
            long next = since + 1;
            while (true) {
                Batch batch = after(next);
                if (batch == null) {
                    sink.heartbeat();
                    continue;
                }
                if (next < batch.firstInWindow()) next = fromDisk(next, batch.firstInWindow() - 1, sink);
                for (Event e : batch.events()) {
                    sink.send(e);
                    next = e.id() + 1;
                }
                if (batch.ended() && next > batch.last()) return;
            }
        }

        /** Up to {@code max} events after {@code since}, as they are now (no waiting): for a look, not a stream. */
        List<Event> read(long since, int max) throws IOException {
            Batch batch = window(since + 1);
            List<Event> out = new ArrayList<>();
            long last = Math.min(batch.last(), since + max);
            Sink collect = new Sink() {
                @Override public void send(Event e) { out.add(e); }
                @Override public void heartbeat() { }
            };
            if (since + 1 < batch.firstInWindow()) fromDisk(since + 1, Math.min(batch.firstInWindow() - 1, last), collect);
            for (Event e : batch.events()) if (e.id() <= last) out.add(e);
            return out;
        }

        /** Sends the events {@code from..to} from the transcript; returns the id after the last one asked for. */
        private long fromDisk(long from, long to, Sink sink) throws IOException {
            try (var reader = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
                String line;
                while ((line = reader.readLine()) != null) {
                    com.fasterxml.jackson.databind.JsonNode node;
                    try {
                        node = Frames.JSON.readTree(line);
                    } catch (IOException e) {
                        break;
                    }
                    long id = node.path("id").asLong(0);
                    if (id < from) continue;
                    if (id > to) break;
                    sink.send(new Event(id, node.hasNonNull("event") ? node.get("event").asText() : null, node.path("data").asText("")));
                }
            } catch (java.nio.file.NoSuchFileException e) {
                // forgotten meanwhile: nothing more to send
            }
            return to + 1;
        }
    }

    /** One agent run: its process tree, its output and its state, which changes once and atomically. */
    static final class AgentRun {
        final String id;
        final Agent agent;
        final Path projectPath;
        final Path dir;
        final EventLog log;
        final Instant createdAt;
        private volatile String agentSessionId;
        // guarded by this
        private String status;          // running, completed, cancelled, failed
        private Integer exitCode;
        private String error;
        private Instant finishedAt;
        private boolean finishing;      // the process has ended; the record is being written
        private String stopReason;      // why a stop was asked for (cancel, time limit, shutdown)
        private boolean cancelled;      // the stop was a cancel, not a failure
        private Process process;
        /** Every process of the tree seen so far: a grandchild whose parent died is still found here. */
        private final java.util.Set<ProcessHandle> tree = ConcurrentHashMap.newKeySet();
        private final Runs runs;

        AgentRun(Runs runs, String id, Agent agent, Path projectPath, Path dir, EventLog log, Instant createdAt, String status) {
            this.runs = runs;
            this.id = id;
            this.agent = agent;
            this.projectPath = projectPath;
            this.dir = dir;
            this.log = log;
            this.createdAt = createdAt;
            this.status = status;
        }

        String agentSessionId() { return agentSessionId; }

        /** The recorded state of a run loaded from disk. */
        synchronized void restore(com.fasterxml.jackson.databind.JsonNode m) {
            agentSessionId = m.hasNonNull("agent_session_id") ? m.get("agent_session_id").asText() : null;
            exitCode = m.hasNonNull("exit_code") ? m.get("exit_code").asInt() : null;
            error = m.hasNonNull("error") ? m.get("error").asText() : null;
            finishedAt = m.hasNonNull("finished_at") ? Instant.parse(m.get("finished_at").asText()) : null;
        }

        synchronized String status() { return status; }

        synchronized boolean running() { return status.equals("running"); }

        synchronized ObjectNode details() {
            ObjectNode d = Frames.JSON.createObjectNode().put("session_id", id).put("agent_session_id", agentSessionId)
                    .put("executor", agent.command).put("project_path", projectPath.toString()).put("status", status)
                    .put("created_at", createdAt.toString()).put("finished_at", finishedAt == null ? null : finishedAt.toString());
            if (exitCode == null) d.putNull("exit_code"); else d.put("exit_code", exitCode);
            d.put("error", error).put("events", log.lastId());
            return d;
        }

        void launch(RunRequest r) throws IOException {
            List<String> command = new ArrayList<>();
            command.add(r.binary().toString());
            command.addAll(agent.arguments(r));
            ProcessBuilder pb = new ProcessBuilder(command).directory(projectPath.toFile())
                    .redirectInput(ProcessBuilder.Redirect.from(new java.io.File(
                            System.getProperty("os.name").startsWith("Windows") ? "NUL" : "/dev/null")));
            // Claude Code refuses to start inside another Claude Code session; arpc may be run from one.
            pb.environment().remove("CLAUDECODE");
            pb.environment().remove("CLAUDE_CODE_ENTRYPOINT");
            // arpc's own secrets (API key, relay secret) are not the agent's business
            pb.environment().keySet().removeIf(k -> k.startsWith("ARP_") || k.startsWith("ARPS_"));
            pb.environment().put("ARP_SESSION_ID", id);
            if (r.remoteApprovals()) pb.redirectInput(ProcessBuilder.Redirect.PIPE);
            log.append("session", Frames.JSON.createObjectNode().put("session_id", id).put("executor", agent.command)
                    .put("project_path", projectPath.toString()).put("remote_approvals", r.remoteApprovals()).toString(), false);
            Process p = pb.start();
            synchronized (this) {
                process = p;
                tree.add(p.toHandle());
            }
            if (r.remoteApprovals()) {
                remoteApprovals = true;
                control = p.getOutputStream();
                ObjectNode prompt = Frames.JSON.createObjectNode().put("type", "user");
                prompt.putObject("message").put("role", "user").put("content", r.prompt());
                sendControl(prompt);
            }
            Thread out = Thread.ofVirtual().name("arpc-run-stdout").start(() -> pump(p.getInputStream(), null));
            Thread err = Thread.ofVirtual().name("arpc-run-stderr").start(() -> pump(p.getErrorStream(), "stderr"));
            Thread.ofVirtual().name("arpc-run-wait").start(() -> awaitEnd(p, out, err));
        }

        /** Copies one stream into the log, a line per event; lines beyond 1 MiB are cut there. */
        private void pump(java.io.InputStream in, String kind) {
            try (in) {
                LineReader lines = new LineReader(in, 1 << 20);
                String line;
                while ((line = lines.next()) != null) {
                    if (kind == null && remoteApprovals && lines.cut() && line.startsWith("{\"type\":\"control_request\"")) {
                        refuseOversized(line); // cut, it cannot be parsed; unanswered, Claude would wait for ever
                        continue;
                    }
                    if (kind == null && remoteApprovals && line.contains("\"control_") && controlMessage(line)) continue;
                    if (kind == null && agentSessionId == null && line.startsWith("{")) noticeAgentId(line);
                    log.append(kind, line, false);
                    // One prompt, one turn: closing stdin after the result lets Claude exit.
                    if (kind == null && control != null && line.contains("\"result\"")
                            && (isResult(line) || (lines.cut() && line.startsWith("{\"type\":\"result\"")))) { // a cut one too
                        closeControl();
                    }
                }
            } catch (IOException e) {
                // the process is gone
            }
        }

        // --- remote approvals (Claude's control protocol on stdin/stdout)

        /** A permission request waiting for an answer; {@code reply} takes the decision to whoever asked. */
        private record Permission(String requestId, com.fasterxml.jackson.databind.JsonNode input,
                                  java.util.function.Consumer<ObjectNode> reply, java.util.concurrent.ScheduledFuture<?> timeout) {}

        static final int MAX_PENDING_PERMISSIONS = 100;
        private volatile boolean remoteApprovals;       // Claude's control protocol is on (its lines are not output)
        private volatile OutputStream control;          // the agent's stdin, with remote approvals; null once closed
        private final Map<String, Permission> permissions = new LinkedHashMap<>();   // guarded by this
        private final java.util.Set<String> answered = new java.util.HashSet<>();     // guarded by this

        private void refuseOversized(String prefix) {
            var m = java.util.regex.Pattern.compile("\"request_id\"\\s*:\\s*\"([^\"]{1,200})\"").matcher(prefix);
            if (!m.find()) return;
            ObjectNode answer = Frames.JSON.createObjectNode().put("type", "control_response");
            answer.putObject("response").put("subtype", "success").put("request_id", m.group(1))
                    .set("response", deny("the request is larger than arp takes (1 MiB)"));
            sendControl(answer);
            log.append("stderr", "arp: denied permission request " + m.group(1) + ": larger than 1 MiB", false);
        }

        /** A control message from Claude: true if it was one (it is not passed on as output). */
        private boolean controlMessage(String line) {
            com.fasterxml.jackson.databind.JsonNode m;
            try {
                m = Frames.JSON.readTree(line);
            } catch (IOException e) {
                return false;
            }
            String type = m.path("type").asText("");
            String requestId = m.path("request_id").asText("");
            if (type.equals("control_request")) {
                if (control == null) return true; // after its result (stdin closed) nobody can answer: dropped
                var request = m.path("request");
                if (request.path("subtype").asText("").equals("can_use_tool")) {
                    requestPermission(requestId, request.path("tool_name").asText(""), request.path("input"),
                            request.path("tool_use_id").asText(null), decision -> {
                                ObjectNode answer = Frames.JSON.createObjectNode().put("type", "control_response");
                                answer.putObject("response").put("subtype", "success").put("request_id", requestId).set("response", decision);
                                sendControl(answer);
                            });
                } else {
                    ObjectNode answer = Frames.JSON.createObjectNode().put("type", "control_response");
                    answer.putObject("response").put("subtype", "error").put("request_id", requestId)
                            .put("error", "arp does not handle " + request.path("subtype").asText("this request"));
                    sendControl(answer);
                }
                return true;
            }
            if (type.equals("control_cancel_request")) {
                Permission p;
                synchronized (this) {
                    p = permissions.remove(requestId);
                    if (p != null) answered.add(requestId);
                }
                if (p != null) {
                    p.timeout().cancel(false);
                    log.append("permission_cancelled", Frames.JSON.createObjectNode().put("request_id", requestId).toString(), false);
                }
                return true;
            }
            return type.equals("control_response"); // an answer to a request of ours: nothing to show
        }

        /**
         * Records a permission request (from Claude's stdout or from the MCP approval_prompt tool) and
         * shows it in the stream; unanswered, it is denied after --approval-timeout.
         */
        void requestPermission(String requestId, String toolName, com.fasterxml.jackson.databind.JsonNode input, String toolUseId,
                               java.util.function.Consumer<ObjectNode> reply) {
            synchronized (this) {
                if (!status.equals("running") || permissions.size() >= MAX_PENDING_PERMISSIONS || permissions.containsKey(requestId)
                        || answered.contains(requestId)) {
                    reply.accept(deny("arp cannot take this permission request (session not running or too many pending)"));
                    return;
                }
                var timeout = runs.timers.schedule(() -> decide(requestId,
                        deny("no answer within " + runs.approvalTimeout + " s"), "timeout"), runs.approvalTimeout, TimeUnit.SECONDS);
                permissions.put(requestId, new Permission(requestId, input, reply, timeout));
            }
            ObjectNode event = Frames.JSON.createObjectNode().put("request_id", requestId).put("tool_name", toolName);
            event.set("input", input);
            event.put("tool_use_id", toolUseId).put("expires_at", Instant.now().plusSeconds(runs.approvalTimeout).toString());
            log.append("permission_request", event.toString(), false);
        }

        static ObjectNode deny(String message) {
            return Frames.JSON.createObjectNode().put("behavior", "deny").put("message", message);
        }

        /** The remote user's answer: {"behavior":"allow","updated_input":{…}?} or {"behavior":"deny","message":…}. */
        ObjectNode answerPermission(String requestId, com.fasterxml.jackson.databind.JsonNode body, String by) throws CommandMode.ApiError {
            String behavior = body.path("behavior").asText("");
            ObjectNode decision;
            if (behavior.equals("allow")) {
                var updated = body.hasNonNull("updated_input") ? body.get("updated_input") : body.get("updatedInput");
                if (updated != null && !updated.isNull() && !updated.isObject()) throw new CommandMode.ApiError(400, "updated_input must be a JSON object");
                decision = Frames.JSON.createObjectNode().put("behavior", "allow");
                if (updated != null && !updated.isNull()) decision.set("updatedInput", updated);
            } else if (behavior.equals("deny")) {
                var message = body.path("message");
                decision = deny(message.isTextual() && !message.asText().isBlank() ? message.asText() : "denied by the user");
            } else {
                throw new CommandMode.ApiError(400, "behavior must be allow or deny");
            }
            if (!decide(requestId, decision, by)) {
                boolean was;
                synchronized (this) {
                    was = answered.contains(requestId);
                }
                if (was) throw new CommandMode.ApiError(409, "permission request " + CommandMode.printable(requestId) + " was answered already");
                throw new CommandMode.ApiError(404, "no pending permission request " + CommandMode.printable(requestId) + " in session " + id);
            }
            return Frames.JSON.createObjectNode().put("session_id", id).put("request_id", requestId).put("behavior", behavior)
                    .put("type", "permission_answered");
        }

        /** Settles a pending request once: the answer goes to the agent and into the stream. */
        private boolean decide(String requestId, ObjectNode decision, String by) {
            Permission p;
            synchronized (this) {
                p = permissions.remove(requestId);
                if (p == null) return false;
                answered.add(requestId);
            }
            p.timeout().cancel(false);
            if (decision.path("behavior").asText().equals("allow") && !decision.has("updatedInput")) {
                decision.set("updatedInput", p.input().isObject() ? p.input() : Frames.JSON.createObjectNode()); // Claude wants it
            }
            p.reply().accept(decision);
            ObjectNode event = Frames.JSON.createObjectNode().put("request_id", requestId).put("behavior", decision.path("behavior").asText())
                    .put("by", by);
            if (decision.has("message")) event.put("message", decision.get("message").asText());
            if (decision.has("updatedInput")) event.set("updated_input", decision.get("updatedInput"));
            log.append("permission_response", event.toString(), false);
            return true;
        }

        private void sendControl(ObjectNode message) {
            OutputStream out = control;
            if (out == null) return;
            try {
                synchronized (out) {
                    out.write(Frames.JSON.writeValueAsBytes(message));
                    out.write('\n');
                    out.flush();
                }
            } catch (IOException e) {
                // the agent is gone; its end is noticed on stdout
            }
        }

        private void closeControl() {
            OutputStream out = control;
            control = null;
            Sockets.closeQuietly(out);
        }

        /** At the end of a run nobody can answer any more: pending requests are denied quietly. */
        private void denyPending() {
            List<Permission> left;
            synchronized (this) {
                left = new ArrayList<>(permissions.values());
                permissions.clear();
            }
            for (Permission p : left) {
                p.timeout().cancel(false);
                p.reply().accept(deny("the session ended"));
            }
        }

        private static boolean isResult(String line) {
            try {
                return Frames.JSON.readTree(line).path("type").asText("").equals("result");
            } catch (IOException e) {
                return false;
            }
        }

        private void noticeAgentId(String line) {
            try {
                String found = agent.sessionIdIn(Frames.JSON.readTree(line));
                if (found != null) {
                    agentSessionId = found;
                    runs.knowAgentId(found, this);
                    runs.save(this); // so the agent's id is known after a crash too
                }
            } catch (IOException e) {
                // not JSON: not the line that names the session
            }
        }

        private void awaitEnd(Process p, Thread out, Thread err) {
            int code;
            try {
                while (!p.waitFor(1, TimeUnit.SECONDS)) watchTree(); // a grandchild is known before its parent may die
                code = p.exitValue();
                synchronized (this) {
                    finishing = true; // it has ended: a cancel now would misreport how
                }
                // Output still in the pipes is part of the run; a background child holding them open is not.
                out.join(5000);
                err.join(5000);
            } catch (InterruptedException e) {
                return;
            }
            finish(code);
        }

        private void watchTree() {
            Process p;
            synchronized (this) {
                p = process;
            }
            if (p != null) p.descendants().forEach(tree::add);
        }

        /**
         * Settles the final state: a stop that was asked for wins over the exit code. From here on no
         * cancel is accepted; the status changes only once the complete event and session.json are
         * written, so whoever sees it finished also finds its whole record.
         */
        private void finish(int code) {
            String kind;
            synchronized (this) {
                if (!status.equals("running")) return;
                finishing = true;
                exitCode = code;
                finishedAt = Instant.now();
                kind = stopReason == null ? "completed" : cancelled ? "cancelled" : "failed";
                if (stopReason != null) error = stopReason;
            }
            killTree(); // whatever the agent left running in the background
            closeControl();
            denyPending();
            complete(kind);
            runs.ended(this);
        }

        /** Writes the complete event and the final metadata, then the status. */
        void complete(String kind) {
            ObjectNode done;
            synchronized (this) {
                done = Frames.JSON.createObjectNode().put("type", "completion").put("status", kind)
                        .put("success", kind.equals("completed") && exitCode != null && exitCode == 0);
                if (exitCode == null) done.putNull("exit_code"); else done.put("exit_code", exitCode);
                done.put("cancelled", kind.equals("cancelled")).put("error", error).put("total_events", log.lastId() + 1);
            }
            log.append("complete", done.toString(), true);
            synchronized (this) {
                status = kind;
            }
            runs.save(this);
        }

        /** A run that was running when arpc died: failed, with its complete event added now. */
        void markInterrupted() {
            synchronized (this) {
                finishing = true;
                error = "arpc stopped while it ran";
                finishedAt = Instant.now();
            }
            try {
                log.reopen();
            } catch (IOException e) {
                Log.warn("cannot complete the transcript of " + id + ": " + e.getMessage());
            }
            complete("failed");
        }

        /** Asks a running run to stop as cancelled; false if it has finished already. */
        boolean cancel(String reason) { return stop(reason, true); }

        boolean stop(String reason, boolean asCancel) {
            synchronized (this) {
                if (!status.equals("running") || finishing) return false;
                if (stopReason == null) {
                    stopReason = reason;
                    cancelled = asCancel;
                }
            }
            Log.info("session " + id + ": stopping (" + reason + ")");
            killTree();
            return true;
        }

        /** SIGTERM to every process of the tree, then SIGKILL to those still alive 3 s later. */
        private void killTree() {
            watchTree();
            List<ProcessHandle> all = new ArrayList<>(tree);
            all.forEach(ProcessHandle::destroy);
            Runnable kill = () -> {
                watchTree();
                for (ProcessHandle h : tree) if (h.isAlive()) h.destroyForcibly();
            };
            try {
                runs.timers.schedule(kill, 3, TimeUnit.SECONDS);
            } catch (java.util.concurrent.RejectedExecutionException e) {
                kill.run(); // arpc is stopping: no grace left
            }
        }

        /** Waits for the run to end (after a stop), at most the given time. */
        boolean awaitEnd(long millis) throws InterruptedException {
            long deadline = System.currentTimeMillis() + millis;
            while (running() && System.currentTimeMillis() < deadline) Thread.sleep(50);
            return !running();
        }
    }

    /** Reads lines of at most {@code max} bytes (the rest of a longer line is dropped), as UTF-8. */
    static final class LineReader {
        private final java.io.InputStream in;
        private final int max;
        private final byte[] buffer = new byte[64 * 1024];
        private int pos;
        private int limit;

        LineReader(java.io.InputStream in, int max) {
            this.in = in;
            this.max = max;
        }

        private boolean cut;

        /** Whether the last line was longer than the limit (and so was cut). */
        boolean cut() { return cut; }

        String next() throws IOException {
            java.io.ByteArrayOutputStream line = new java.io.ByteArrayOutputStream();
            boolean any = false;
            cut = false;
            while (true) {
                if (pos == limit) {
                    limit = in.read(buffer);
                    pos = 0;
                    if (limit <= 0) {
                        limit = 0;
                        return any ? decode(line) : null;
                    }
                }
                any = true;
                int start = pos;
                while (pos < limit && buffer[pos] != '\n') pos++;
                int room = max - line.size();
                if (pos - start > room) cut = true;
                line.write(buffer, start, Math.min(pos - start, Math.max(room, 0)));
                if (pos < limit) {
                    pos++; // the newline
                    return decode(line);
                }
            }
        }

        private static String decode(java.io.ByteArrayOutputStream line) {
            String s = line.toString(StandardCharsets.UTF_8);
            return s.endsWith("\r") ? s.substring(0, s.length() - 1) : s;
        }
    }

    /** All runs: the running ones and those kept on disk, by our id and by the agent's own session id. */
    static final class Runs {
        final Path dir;
        private final int maxRunning;
        private final long maxRunSeconds;
        final int approvalTimeout;
        private final Map<String, AgentRun> byId = new ConcurrentHashMap<>();
        private final Map<String, AgentRun> byAgentId = new ConcurrentHashMap<>();
        final java.util.concurrent.ScheduledExecutorService timers = java.util.concurrent.Executors.newSingleThreadScheduledExecutor(
                r -> Thread.ofPlatform().daemon().name("arpc-runs").unstarted(r));
        private int running;

        Runs(Path dir, int maxRunning, long maxRunSeconds, int approvalTimeout) {
            this.dir = dir;
            this.maxRunning = maxRunning;
            this.maxRunSeconds = maxRunSeconds;
            this.approvalTimeout = approvalTimeout;
        }

        AgentRun start(RunRequest r) throws CommandMode.ApiError, IOException {
            synchronized (this) {
                if (running >= maxRunning) {
                    throw new CommandMode.ApiError(429, maxRunning + " sessions are running already (--max-sessions); try again when one ends");
                }
                running++;
            }
            try {
                String id = java.util.UUID.randomUUID().toString();
                Path runDir = dir.resolve(id);
                Files.createDirectories(runDir);
                AgentRun run = new AgentRun(this, id, r.agent(), r.projectPath(), runDir, new EventLog(runDir.resolve("events.jsonl")),
                        Instant.now(), "running");
                byId.put(id, run);
                save(run);
                try {
                    run.launch(r);
                } catch (IOException e) {
                    forget(run);
                    throw new CommandMode.ApiError(500, "cannot start " + r.binary() + ": " + e.getMessage());
                }
                if (maxRunSeconds > 0) {
                    timers.schedule(() -> run.stop("ran longer than --max-run-time (" + maxRunSeconds + " s)", false), maxRunSeconds, TimeUnit.SECONDS);
                }
                Log.info("session " + id + ": " + r.agent().command + " started in " + r.projectPath());
                return run;
            } catch (CommandMode.ApiError | IOException | RuntimeException e) {
                synchronized (this) {
                    running--;
                }
                throw e;
            }
        }

        synchronized void ended(AgentRun run) {
            running--;
            Log.info("session " + run.id + ": " + run.status());
        }

        void knowAgentId(String agentId, AgentRun run) { byAgentId.putIfAbsent(agentId, run); }

        List<AgentRun> running() { return byId.values().stream().filter(AgentRun::running).toList(); }

        AgentRun find(String id) {
            AgentRun r = byId.get(id);
            return r != null ? r : byAgentId.get(id);
        }

        ObjectNode listJson() {
            var list = Frames.JSON.createArrayNode();
            byId.values().stream().sorted(java.util.Comparator.comparing((AgentRun r) -> r.createdAt).reversed())
                    .forEach(r -> list.add(r.details()));
            ObjectNode answer = Frames.JSON.createObjectNode();
            answer.set("sessions", list);
            return answer.put("total", list.size());
        }

        /** Writes session.json atomically (the output pump and the end of the run may both save). */
        void save(AgentRun run) {
            synchronized (run) {
                saveLocked(run);
            }
        }

        private void saveLocked(AgentRun run) {
            try {
                Path tmp = run.dir.resolve("session.json.tmp");
                Files.write(tmp, Frames.JSON.writeValueAsBytes(run.details()));
                Files.move(tmp, run.dir.resolve("session.json"), java.nio.file.StandardCopyOption.REPLACE_EXISTING,
                        java.nio.file.StandardCopyOption.ATOMIC_MOVE);
            } catch (IOException e) {
                Log.warn("cannot save " + run.dir.resolve("session.json") + ": " + e.getMessage());
            }
        }

        /** Forgets a finished run: out of the lists, and its transcript off the disk. */
        void forget(AgentRun run) {
            run.log.close();
            byId.remove(run.id, run);
            if (run.agentSessionId() != null) byAgentId.remove(run.agentSessionId(), run);
            try (var files = Files.walk(run.dir)) {
                for (Path p : files.sorted(java.util.Comparator.reverseOrder()).toList()) Files.deleteIfExists(p);
            } catch (IOException e) {
                Log.warn("cannot delete " + run.dir + ": " + e.getMessage());
            }
        }

        /** The runs kept on disk by earlier arpc processes. */
        void load() throws IOException {
            Files.createDirectories(dir);
            try (var dirs = Files.newDirectoryStream(dir)) {
                for (Path d : dirs) {
                    Path meta = d.resolve("session.json");
                    if (!Files.isRegularFile(meta)) continue;
                    try {
                        var m = Frames.JSON.readTree(meta.toFile());
                        Agent agent = Agent.named(m.path("executor").asText(""));
                        String id = m.path("session_id").asText("");
                        if (agent == null || !id.equals(d.getFileName().toString())) continue;
                        boolean wasRunning = m.path("status").asText("").equals("running");
                        Path events = d.resolve("events.jsonl");
                        long last = wasRunning ? EventLog.lastIdOnDisk(events) : m.path("events").asLong(0);
                        AgentRun run = new AgentRun(this, id, agent, Path.of(m.path("project_path").asText("/")), d,
                                new EventLog(events, last, !wasRunning), Instant.parse(m.path("created_at").asText()), m.path("status").asText());
                        run.restore(m);
                        byId.put(id, run);
                        if (run.agentSessionId() != null) byAgentId.put(run.agentSessionId(), run);
                        if (wasRunning) run.markInterrupted();
                    } catch (IOException | RuntimeException e) {
                        Log.warn("skipping " + d + ": " + e.getMessage());
                    }
                }
            }
        }

        /** arpc is stopping: every running agent's process tree is stopped, so none is left orphaned. */
        void shutdown() {
            List<AgentRun> live = running();
            for (AgentRun r : live) r.cancel("arpc was shut down");
            long deadline = System.currentTimeMillis() + 5000;
            boolean interrupted = false;
            for (AgentRun r : live) {
                while (true) { // each run's record is written before arpc may exit, interrupt or not
                    try {
                        r.awaitEnd(Math.max(0, deadline - System.currentTimeMillis()));
                        break;
                    } catch (InterruptedException e) {
                        interrupted = true;
                    }
                }
            }
            if (interrupted) Thread.currentThread().interrupt();
            timers.shutdownNow();
        }
    }

    // ------------------------------------------------------------------------------------------------

    /**
     * The Model Context Protocol over Streamable HTTP at /mcp, for MCP clients (Claude Desktop, the
     * Inspector, other agents) to start and watch runs, read history and answer permission requests.
     * A small JSON-RPC layer on Undertow and Jackson: the official Java SDK would bring Reactor and a
     * servlet container for five methods. Tools answer with JSON only (no server-sent streams), which a
     * tools-only server may always do.
     */
    static final class Mcp {
        static final List<String> VERSIONS = List.of("2025-11-25", "2025-06-18", "2025-03-26");
        static final int MAX_SESSIONS = 256;
        static final long SESSION_IDLE_MILLIS = TimeUnit.HOURS.toMillis(1);

        private record Session(String version, java.util.concurrent.atomic.AtomicLong lastUsed) {}

        private final Runs runs;
        private final History history;
        private final Map<String, Session> sessions = new ConcurrentHashMap<>();

        Mcp(Runs runs, History history) {
            this.runs = runs;
            this.history = history;
        }

        /** A JSON-RPC error, with the HTTP status it travels with. */
        static final class RpcError extends Exception {
            final int code;
            final int httpStatus;

            RpcError(int code, String message, int httpStatus) {
                super(message, null, false, false);
                this.code = code;
                this.httpStatus = httpStatus;
            }
        }

        void handle(io.undertow.server.HttpServerExchange ex, java.util.Set<String> allowedOrigins) throws IOException, InterruptedException {
            String origin = ex.getRequestHeaders().getFirst("Origin");
            try {
                // DNS rebinding: a web page of another origin must not drive a local MCP server.
                if (origin != null && !allowedOrigins.contains(origin)) throw new RpcError(-32600, "origin " + CommandMode.printable(origin) + " is not allowed (see --cors-origins)", 403);
                switch (ex.getRequestMethod().toString()) {
                    case "POST" -> post(ex);
                    case "DELETE" -> {
                        Session gone = sessions.remove(requireSessionId(ex));
                        if (gone == null) throw new RpcError(-32600, "unknown or expired MCP session", 404);
                        ex.setStatusCode(204);
                    }
                    default -> {
                        ex.getResponseHeaders().put(io.undertow.util.Headers.ALLOW, "POST, DELETE");
                        throw new RpcError(-32600, "this server sends no server-initiated streams: use POST", 405);
                    }
                }
            } catch (RpcError e) {
                reply(ex, e.httpStatus, error(null, e.code, e.getMessage()));
            }
        }

        private void post(io.undertow.server.HttpServerExchange ex) throws RpcError, IOException, InterruptedException {
            String type = ex.getRequestHeaders().getFirst(io.undertow.util.Headers.CONTENT_TYPE);
            if (type == null || !type.toLowerCase(java.util.Locale.ROOT).startsWith("application/json")) {
                throw new RpcError(-32600, "Content-Type must be application/json", 415);
            }
            String accept = ex.getRequestHeaders().getFirst(io.undertow.util.Headers.ACCEPT);
            if (accept != null && !accept.contains("application/json") && !accept.contains("*/*") && !accept.contains("text/event-stream")) {
                throw new RpcError(-32600, "Accept must include application/json", 406);
            }
            byte[] body = ex.getInputStream().readNBytes(CommandMode.MAX_BODY + 1);
            if (body.length > CommandMode.MAX_BODY) throw new RpcError(-32600, "message larger than " + CommandMode.MAX_BODY + " bytes", 413);
            com.fasterxml.jackson.databind.JsonNode message;
            try {
                message = Frames.JSON.readTree(body);
            } catch (IOException e) {
                throw new RpcError(-32700, "parse error: not JSON", 400);
            }
            if (message == null || message.isArray()) throw new RpcError(-32600, "one JSON-RPC message per request (no batches)", 400);
            if (!message.isObject() || !"2.0".equals(message.path("jsonrpc").asText())) throw new RpcError(-32600, "not a JSON-RPC 2.0 message", 400);
            var id = message.get("id");
            String method = message.path("method").asText(null);
            if (method == null || id == null || id.isNull()) { // a notification, or a response to us
                if (!"notifications/initialized".equals(method) && !"initialize".equals(method)) session(ex);
                ex.setStatusCode(202);
                return;
            }
            if (method.equals("initialize")) {
                initialize(ex, id, message.path("params"));
                return;
            }
            com.fasterxml.jackson.databind.JsonNode result;
            try {
                session(ex);
                result = call(method, message.path("params"));
            } catch (RpcError e) {
                reply(ex, e.httpStatus, error(id, e.code, e.getMessage()));
                return;
            }
            ObjectNode answer = Frames.JSON.createObjectNode().put("jsonrpc", "2.0");
            answer.set("id", id);
            answer.set("result", result);
            reply(ex, 200, answer);
        }

        private void initialize(io.undertow.server.HttpServerExchange ex, com.fasterxml.jackson.databind.JsonNode id,
                                com.fasterxml.jackson.databind.JsonNode params) throws IOException {
            String requested = params.path("protocolVersion").asText(null);
            if (requested == null) {
                reply(ex, 200, error(id, -32602, "initialize needs params.protocolVersion"));
                return;
            }
            String version = VERSIONS.contains(requested) ? requested : VERSIONS.getFirst();
            if (sessions.size() >= MAX_SESSIONS) expire(true);
            String sessionId = HexFormat.of().formatHex(Proofs.randomBytes(24));
            sessions.put(sessionId, new Session(version, new java.util.concurrent.atomic.AtomicLong(System.currentTimeMillis())));
            ObjectNode result = Frames.JSON.createObjectNode().put("protocolVersion", version);
            result.putObject("capabilities").putObject("tools").put("listChanged", false);
            result.putObject("serverInfo").put("name", "arp").put("version", Protocol.VERSION);
            result.put("instructions", "Runs coding agents (claude, codex, gemini) on the machine where arpc runs. "
                    + "start_session starts one; get_session shows its status and recent output; answer_permission answers "
                    + "a permission request of a run started with remote_approvals.");
            ObjectNode answer = Frames.JSON.createObjectNode().put("jsonrpc", "2.0");
            answer.set("id", id);
            answer.set("result", result);
            ex.getResponseHeaders().put(io.undertow.util.HttpString.tryFromString("Mcp-Session-Id"), sessionId);
            reply(ex, 200, answer);
        }

        private static String requireSessionId(io.undertow.server.HttpServerExchange ex) throws RpcError {
            String id = ex.getRequestHeaders().getFirst("Mcp-Session-Id");
            if (id == null || id.isBlank()) throw new RpcError(-32600, "missing Mcp-Session-Id header: initialize first", 400);
            return id;
        }

        /** Checks the session and protocol version headers of a request after initialize. */
        private void session(io.undertow.server.HttpServerExchange ex) throws RpcError {
            String id = requireSessionId(ex);
            expire(false);
            Session s = sessions.get(id);
            if (s == null) throw new RpcError(-32600, "unknown or expired MCP session: initialize again", 404);
            String version = ex.getRequestHeaders().getFirst("MCP-Protocol-Version");
            if (version != null && !VERSIONS.contains(version)) {
                throw new RpcError(-32600, "unsupported MCP-Protocol-Version " + CommandMode.printable(version) + "; this server speaks " + VERSIONS, 400);
            }
            s.lastUsed().set(System.currentTimeMillis());
        }

        /** Drops idle sessions; {@code oldest} also drops the least recently used one to make room. */
        private void expire(boolean oldest) {
            long now = System.currentTimeMillis();
            sessions.values().removeIf(s -> now - s.lastUsed().get() > SESSION_IDLE_MILLIS);
            if (oldest && sessions.size() >= MAX_SESSIONS) {
                sessions.entrySet().stream().min(java.util.Comparator.comparingLong(e -> e.getValue().lastUsed().get()))
                        .ifPresent(e -> sessions.remove(e.getKey()));
            }
        }

        private com.fasterxml.jackson.databind.JsonNode call(String method, com.fasterxml.jackson.databind.JsonNode params) throws RpcError, InterruptedException {
            return switch (method) {
                case "ping" -> Frames.JSON.createObjectNode();
                case "tools/list" -> {
                    ObjectNode result = Frames.JSON.createObjectNode();
                    result.set("tools", TOOLS);
                    yield result;
                }
                case "tools/call" -> {
                    String name = params.path("name").asText(null);
                    var arguments = params.has("arguments") ? params.get("arguments") : Frames.JSON.createObjectNode();
                    if (name == null || !TOOL_NAMES.contains(name)) throw new RpcError(-32602, "unknown tool " + CommandMode.printable(String.valueOf(name)), 200);
                    if (!arguments.isObject()) throw new RpcError(-32602, "tool arguments must be an object", 200);
                    yield callTool(name, arguments);
                }
                default -> throw new RpcError(-32601, "method not found: " + CommandMode.printable(method), 200);
            };
        }

        /** A tool's result; a tool that fails says so in-band ({@code isError}), as MCP asks. */
        private ObjectNode callTool(String name, com.fasterxml.jackson.databind.JsonNode args) throws InterruptedException {
            try {
                ObjectNode out = switch (name) {
                    case "start_session" -> runs.start(RunRequest.parse(args)).details();
                    case "get_session" -> {
                        AgentRun run = find(args);
                        ObjectNode details = run.details();
                        long last = run.log.lastId();
                        int max = Math.min(Math.max(args.path("max_events").asInt(20), 1), 200);
                        long since = args.has("since") ? Math.max(0, args.get("since").asLong()) : Math.max(0, last - max);
                        var events = details.putArray("recent_events");
                        for (EventLog.Event e : run.log.read(since, max)) {
                            events.addObject().put("id", e.id()).put("event", e.kind() == null ? "message" : e.kind()).put("data", e.data());
                        }
                        yield details;
                    }
                    case "list_sessions" -> runs.listJson();
                    case "cancel_session" -> {
                        AgentRun run = find(args);
                        if (!run.cancel("cancelled through MCP")) throw new CommandMode.ApiError(409, "session " + run.id + " has already finished (" + run.status() + ")");
                        yield Frames.JSON.createObjectNode().put("session_id", run.id).put("type", "session_cancelled");
                    }
                    case "answer_permission" -> find(args).answerPermission(args.path("request_id").asText(""), args, "mcp");
                    case "approval_prompt" -> approvalPrompt(args);
                    case "list_projects" -> History.projects(history.store(args.path("agent").asText(null)));
                    case "list_history_sessions" -> History.sessions(history.store(args.path("agent").asText(null)),
                            args.hasNonNull("project_path") ? args.get("project_path").asText() : null,
                            Math.max(0, args.path("offset").asInt(0)), Math.min(Math.max(args.path("limit").asInt(50), 1), 1000), true);
                    case "read_history_session" -> History.messages(history.store(args.path("agent").asText(null)),
                            args.path("session_id").asText(""), Math.max(0, args.path("offset").asInt(0)),
                            Math.min(Math.max(args.path("limit").asInt(50), 1), History.MAX_MESSAGES));
                    default -> throw new IllegalStateException(name);
                };
                ObjectNode result = Frames.JSON.createObjectNode();
                result.putArray("content").addObject().put("type", "text").put("text", out.toString());
                if (!name.equals("approval_prompt")) result.set("structuredContent", out);
                return result.put("isError", false);
            } catch (CommandMode.ApiError | IOException e) {
                ObjectNode result = Frames.JSON.createObjectNode();
                result.putArray("content").addObject().put("type", "text").put("text", e.getMessage());
                return result.put("isError", true);
            }
        }

        private AgentRun find(com.fasterxml.jackson.databind.JsonNode args) throws CommandMode.ApiError {
            String id = args.path("session_id").asText("");
            if (id.isEmpty()) throw new CommandMode.ApiError(400, "session_id is required");
            AgentRun run = runs.find(id);
            if (run == null) throw new CommandMode.ApiError(404, "no session " + CommandMode.printable(id));
            return run;
        }

        /**
         * Claude Code's MCP permission-prompt tool (the original's approval_prompt): the request joins
         * the run's stream like one from the control protocol, and this call waits for the answer. The
         * run is the one named by session_id, else the only running one.
         */
        private ObjectNode approvalPrompt(com.fasterxml.jackson.databind.JsonNode args) throws CommandMode.ApiError, InterruptedException {
            String toolName = args.path("tool_name").asText("");
            if (toolName.isEmpty()) throw new CommandMode.ApiError(400, "tool_name is required");
            AgentRun run;
            if (args.hasNonNull("session_id")) {
                run = find(args);
            } else {
                List<AgentRun> running = runs.running();
                if (running.size() != 1) return AgentRun.deny("arp cannot tell which session asks: pass session_id");
                run = running.getFirst();
            }
            var decision = new java.util.concurrent.CompletableFuture<ObjectNode>();
            String requestId = "mcp-" + HexFormat.of().formatHex(Proofs.randomBytes(8));
            run.requestPermission(requestId, toolName, args.has("input") ? args.get("input") : Frames.JSON.createObjectNode(),
                    args.path("tool_use_id").asText(null), decision::complete);
            try {
                return decision.get(runs.approvalTimeout + 5L, TimeUnit.SECONDS);
            } catch (java.util.concurrent.ExecutionException | java.util.concurrent.TimeoutException e) {
                return AgentRun.deny("no answer");
            }
        }

        private static ObjectNode error(com.fasterxml.jackson.databind.JsonNode id, int code, String message) {
            ObjectNode answer = Frames.JSON.createObjectNode().put("jsonrpc", "2.0");
            if (id == null) answer.putNull("id"); else answer.set("id", id);
            answer.putObject("error").put("code", code).put("message", message);
            return answer;
        }

        private static void reply(io.undertow.server.HttpServerExchange ex, int status, ObjectNode body) throws IOException {
            CommandMode.sendJson(ex, status, body);
        }

        // --- tool descriptions, with JSON schemas for their inputs

        private static final com.fasterxml.jackson.databind.node.ArrayNode TOOLS = Frames.JSON.createArrayNode();
        private static final java.util.Set<String> TOOL_NAMES = new java.util.LinkedHashSet<>();

        private static void tool(String name, String description, String schema) {
            try {
                ObjectNode t = TOOLS.addObject().put("name", name).put("description", description);
                t.set("inputSchema", Frames.JSON.readTree(schema));
                TOOL_NAMES.add(name);
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
        }

        static {
            String sessionId = "{\"type\":\"object\",\"properties\":{\"session_id\":{\"type\":\"string\",\"description\":\"arp's session id, or the agent's own\"}},\"required\":[\"session_id\"]}";
            tool("start_session", "Start a coding agent run (claude, codex or gemini) in a project directory on this machine.",
                    "{\"type\":\"object\",\"properties\":{"
                    + "\"executor\":{\"type\":\"string\",\"enum\":[\"claude\",\"codex\",\"gemini\"]},"
                    + "\"prompt\":{\"type\":\"string\"},\"project_path\":{\"type\":\"string\",\"description\":\"absolute path of an existing directory\"},"
                    + "\"model\":{\"type\":\"string\"},\"resume\":{\"type\":\"string\",\"description\":\"the agent's session id to continue\"},"
                    + "\"permission_mode\":{\"type\":\"string\",\"enum\":[\"default\",\"acceptEdits\",\"plan\",\"bypassPermissions\",\"dontAsk\"]},"
                    + "\"allowed_tools\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},\"resume_last\":{\"type\":\"boolean\"},"
                    + "\"approval_mode\":{\"type\":\"string\",\"enum\":[\"default\",\"auto_edit\",\"yolo\",\"plan\"]},"
                    + "\"remote_approvals\":{\"type\":\"boolean\",\"description\":\"claude: send its permission requests to arp to be answered\"}},"
                    + "\"required\":[\"prompt\",\"project_path\"]}");
            tool("get_session", "A session's status and its recent events (after `since`, at most `max_events`).",
                    "{\"type\":\"object\",\"properties\":{\"session_id\":{\"type\":\"string\"},\"since\":{\"type\":\"integer\",\"minimum\":0},"
                    + "\"max_events\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":200}},\"required\":[\"session_id\"]}");
            tool("list_sessions", "All sessions, newest first.", "{\"type\":\"object\",\"properties\":{}}");
            tool("cancel_session", "Stop a running session and its whole process tree.", sessionId);
            tool("answer_permission", "Answer a pending permission request of a session: allow (optionally with changed input) or deny.",
                    "{\"type\":\"object\",\"properties\":{\"session_id\":{\"type\":\"string\"},\"request_id\":{\"type\":\"string\"},"
                    + "\"behavior\":{\"type\":\"string\",\"enum\":[\"allow\",\"deny\"]},\"updated_input\":{\"type\":\"object\"},"
                    + "\"message\":{\"type\":\"string\"}},\"required\":[\"session_id\",\"request_id\",\"behavior\"]}");
            String agent = "\"agent\":{\"type\":\"string\",\"enum\":[\"claude\",\"codex\",\"gemini\"]}";
            tool("list_projects", "The projects an agent has worked on here, from its own history files.",
                    "{\"type\":\"object\",\"properties\":{" + agent + "},\"required\":[\"agent\"]}");
            tool("list_history_sessions", "An agent's past sessions, newest first (optionally of one project path).",
                    "{\"type\":\"object\",\"properties\":{" + agent + ",\"project_path\":{\"type\":\"string\"},"
                    + "\"offset\":{\"type\":\"integer\",\"minimum\":0},\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000}},\"required\":[\"agent\"]}");
            tool("read_history_session", "The messages of one of an agent's past sessions, a page at a time.",
                    "{\"type\":\"object\",\"properties\":{" + agent + ",\"session_id\":{\"type\":\"string\"},"
                    + "\"offset\":{\"type\":\"integer\",\"minimum\":0},\"limit\":{\"type\":\"integer\",\"minimum\":1}},\"required\":[\"agent\",\"session_id\"]}");
            tool("approval_prompt", "Claude Code's permission prompt tool (--permission-prompt-tool mcp__arp__approval_prompt): "
                    + "waits for the remote user's answer and returns {\"behavior\":\"allow\",\"updatedInput\":…} or {\"behavior\":\"deny\",\"message\":…}.",
                    "{\"type\":\"object\",\"properties\":{\"tool_name\":{\"type\":\"string\"},\"input\":{\"type\":\"object\"},"
                    + "\"tool_use_id\":{\"type\":\"string\"},\"session_id\":{\"type\":\"string\",\"description\":\"the asking run; default: the only running one\"}},"
                    + "\"required\":[\"tool_name\",\"input\"]}");
        }
    }

    // ================================================================================================
    // Agent history and files (command mode): the agents' own session files, and confined file browsing

    /**
     * GET/DELETE /api/{claude,codex,gemini}/...: the projects and sessions the agents keep on disk, read
     * where they are. A listing reads only the head and tail of a large transcript and remembers what it
     * found per (file, size, mtime); ids from the URL match {@link #SESSION_ID} before they touch the disk
     * and every file read or deleted is checked to be inside the agent's own directory.
     */
    static final class History {
        static final java.util.regex.Pattern SESSION_ID = java.util.regex.Pattern.compile("[0-9A-Za-z-]{1,128}");
        static final java.util.regex.Pattern PROJECT_ID = java.util.regex.Pattern.compile("[0-9A-Za-z_-][0-9A-Za-z._-]{0,254}");
        static final int DEFAULT_MESSAGES = 200;
        static final int MAX_MESSAGES = 10_000;
        /** A page of messages stops growing at about this many bytes (records with images are MBs each). */
        static final long MAX_PAGE_BYTES = 8L << 20;
        /** Pages of messages being read at once: each may hold MAX_PAGE_BYTES twice (parsed and written). */
        private static final java.util.concurrent.Semaphore PAGE_READS = new java.util.concurrent.Semaphore(2);
        static final int MAX_TEXT = 1000;

        final Map<String, Store> stores = new LinkedHashMap<>();

        History(Path home, String claudeDir, String codexDir) {
            Path claude = claudeDir != null && !claudeDir.isBlank() ? Path.of(claudeDir) : home.resolve(".claude");
            Path codex = codexDir != null && !codexDir.isBlank() ? Path.of(codexDir) : home.resolve(".codex");
            stores.put("claude", new ClaudeStore(claude));
            stores.put("codex", new CodexStore(codex));
            stores.put("gemini", new GeminiStore(home.resolve(".gemini"), () -> {
                List<String> known = new ArrayList<>(List.of(home.toString()));
                for (String agent : List.of("claude", "codex")) {
                    for (Project p : stores.get(agent).snapshot().projects().values()) if (p.path() != null) known.add(p.path());
                }
                return known;
            }));
        }

        /** $CLAUDE_CONFIG_DIR (else ~/.claude), $CODEX_HOME (else ~/.codex), ~/.gemini. */
        static History fromEnvironment() {
            return new History(home(), System.getenv("CLAUDE_CONFIG_DIR"), System.getenv("CODEX_HOME"));
        }

        /** $HOME if set, else the JVM's idea of it. */
        static Path home() {
            String home = System.getenv("HOME");
            return Path.of(home != null && !home.isBlank() ? home : System.getProperty("user.home"));
        }

        /** Serves the request if it is one of the history routes; false leaves it to the caller. */
        boolean route(io.undertow.server.HttpServerExchange ex, String method, String[] parts) throws CommandMode.ApiError, IOException {
            int n = parts.length > 4 && parts[parts.length - 1].isEmpty() ? parts.length - 1 : parts.length; // a trailing slash
            if (n < 4 || !parts[1].equals("api")) return false;
            Store store = stores.get(parts[2]);
            if (store == null) return false;
            boolean projects = parts[3].equals("projects");
            if (projects && n == 4) {
                allow(method, "GET");
                CommandMode.sendJson(ex, 200, projects(store));
            } else if (projects && n == 5 && parts[4].equals("working-directories")) {
                allow(method, "GET");
                CommandMode.sendJson(ex, 200, workingDirectories(store));
            } else if (projects && n == 6 && parts[5].equals("sessions")) {
                allow(method, "GET");
                if (!PROJECT_ID.matcher(parts[4]).matches()) {
                    throw new CommandMode.ApiError(400, "invalid project id '" + CommandMode.printable(parts[4]) + "'");
                }
                Snapshot snapshot = store.snapshot();
                Project project = snapshot.projects().get(parts[4]);
                if (project == null) throw new CommandMode.ApiError(404, "no " + store.name + " project " + parts[4]);
                int[] page = page(ex, 0, Integer.MAX_VALUE);
                CommandMode.sendJson(ex, 200, sessionList(store, snapshot, project.sessions(), page[0], page[1], query(ex, "limit") != null));
            } else if (parts[3].equals("sessions") && n == 4) {
                allow(method, "GET");
                int[] page = page(ex, 0, Integer.MAX_VALUE);
                CommandMode.sendJson(ex, 200, sessions(store, query(ex, "projectPath", "project_path"), page[0], page[1], query(ex, "limit") != null));
            } else if (parts[3].equals("sessions") && n == 5) {
                String id = checkId(parts[4]);
                switch (method) {
                    case "GET" -> {
                        int[] page = page(ex, DEFAULT_MESSAGES, MAX_MESSAGES);
                        CommandMode.sendJson(ex, 200, messages(store, id, page[0], page[1]));
                    }
                    case "DELETE" -> {
                        if (!store.delete(id)) throw new CommandMode.ApiError(404, "no " + store.name + " session " + id);
                        CommandMode.sendJson(ex, 200, deleted(id, store.name));
                    }
                    default -> throw new CommandMode.ApiError(405, method + " is not allowed on a history session (GET, DELETE)");
                }
            } else {
                return false;
            }
            return true;
        }

        /**
         * DELETE /api/sessions/{id} of an id that is not a run: the agents' history session of that id,
         * in every store (or only {@code executor}'s); null when none has it.
         */
        ObjectNode deleteAnywhere(String id, String executor) throws CommandMode.ApiError, IOException {
            if (!SESSION_ID.matcher(id).matches()) return null;
            String deletedFrom = null;
            for (Store store : stores.values()) {
                if (executor != null && !executor.equalsIgnoreCase(store.name)) continue;
                if (store.delete(id) && deletedFrom == null) deletedFrom = store.name;
            }
            return deletedFrom == null ? null : deleted(id, deletedFrom);
        }

        private static ObjectNode deleted(String id, String agent) {
            return Frames.JSON.createObjectNode().put("session_id", id).put("type", "session_deleted").put("executor", agent);
        }

        private static String checkId(String id) throws CommandMode.ApiError {
            if (!SESSION_ID.matcher(id).matches()) {
                throw new CommandMode.ApiError(400, "invalid session id '" + CommandMode.printable(id) + "': letters, digits and '-' only");
            }
            return id;
        }

        private static void allow(String method, String allowed) throws CommandMode.ApiError {
            if (!method.equals(allowed)) throw new CommandMode.ApiError(405, method + " is not allowed here (" + allowed + ")");
        }

        static String query(io.undertow.server.HttpServerExchange ex, String... names) {
            for (String name : names) {
                var values = ex.getQueryParameters().get(name);
                if (values != null && !values.isEmpty()) return values.getFirst();
            }
            return null;
        }

        /** {offset, limit} from the query; limit {@code max} when absent and {@code defaultLimit} is 0. */
        private static int[] page(io.undertow.server.HttpServerExchange ex, int defaultLimit, int max) throws CommandMode.ApiError {
            String o = query(ex, "offset");
            String l = query(ex, "limit");
            long offset = o == null || o.isEmpty() ? 0 : CommandMode.number("offset", o);
            long limit = l == null || l.isEmpty() ? (defaultLimit > 0 ? defaultLimit : max) : CommandMode.number("limit", l);
            if (limit > max) throw new CommandMode.ApiError(400, "limit must be at most " + max);
            return new int[] {(int) Math.min(offset, Integer.MAX_VALUE), (int) limit};
        }

        // --- the answers, shared by the HTTP routes and the MCP tools

        /** The agent's store, by name (claude, codex, gemini). */
        Store store(String agent) throws CommandMode.ApiError {
            Store store = agent == null ? null : stores.get(agent.toLowerCase(java.util.Locale.ROOT));
            if (store == null) throw new CommandMode.ApiError(400, "agent must be claude, codex or gemini, not '" + CommandMode.printable(String.valueOf(agent)) + "'");
            return store;
        }

        static ObjectNode projects(Store store) throws IOException {
            var list = Frames.JSON.createArrayNode();
            for (Project p : store.snapshot().projects().values()) list.add(p.json());
            ObjectNode answer = Frames.JSON.createObjectNode();
            answer.set("projects", list);
            return answer.put("type", "projects").put("total", list.size());
        }

        /** Sessions, newest first, of one project path or all; a page of them. */
        static ObjectNode sessions(Store store, String projectPath, int offset, int limit, boolean limited) throws IOException {
            Snapshot snapshot = store.snapshot();
            List<Session> sessions = snapshot.sessions();
            if (projectPath != null) {
                sessions = sessions.stream().filter(s -> projectPath.equals(snapshot.projects().get(s.projectId()).path())).toList();
            }
            return sessionList(store, snapshot, sessions, offset, limit, limited);
        }

        /** A page of one session's messages; 404 if the agent has no such session. */
        static ObjectNode messages(Store store, String id, int offset, int limit) throws CommandMode.ApiError, IOException {
            Session s = store.find(checkId(id));
            if (s == null) throw new CommandMode.ApiError(404, "no " + store.name + " session " + id);
            var messages = Frames.JSON.createArrayNode();
            long total;
            if (!PAGE_READS.tryAcquire()) throw new CommandMode.ApiError(429, "two history pages are being read already; try again");
            try {
                total = store.messages(store.readable(s.file()), offset, limit, messages);
            } finally {
                PAGE_READS.release();
            }
            ObjectNode answer = Frames.JSON.createObjectNode();
            answer.set("messages", messages);
            // truncated: the page was cut by size; the next one starts at offset + messages.length
            boolean cut = messages.size() < limit && offset + messages.size() < total;
            return answer.put("session_id", id).put("type", "session_history")
                    .put("total", total).put("offset", offset).put("limit", limit).put("truncated", cut);
        }

        private static ObjectNode sessionList(Store store, Snapshot snapshot, List<Session> sessions, int offset, int limit, boolean limited) {
            var list = Frames.JSON.createArrayNode();
            long now = System.currentTimeMillis();
            sessions.stream().skip(offset).limit(limit)
                    .forEach(s -> list.add(store.json(s, snapshot.projects().get(s.projectId()), now)));
            ObjectNode answer = Frames.JSON.createObjectNode();
            answer.set("sessions", list);
            answer.put("type", "sessions").put("total", sessions.size()).put("offset", offset);
            if (limited) answer.put("limit", limit); else answer.putNull("limit");
            return answer;
        }

        private static ObjectNode workingDirectories(Store store) {
            var list = Frames.JSON.createArrayNode();
            for (Project p : store.snapshot().projects().values()) {
                if (p.path() == null) continue;
                Path path = Path.of(p.path());
                int names = path.getNameCount();
                String shortname = names >= 2 ? path.getName(names - 2) + "/" + path.getName(names - 1) : p.path();
                list.addObject().put("path", p.path()).put("shortname", shortname)
                        .put("conversationCount", p.sessions().size()).put("lastDate", p.sessions().getFirst().updatedAt().toString());
            }
            ObjectNode answer = Frames.JSON.createObjectNode();
            answer.set("directories", list);
            return answer;
        }

        // --- the model

        /**
         * One session file as a listing sees it. {@code cwd} is the directory its records name;
         * {@code messageCount} is exact when {@code countExact}, else an estimate from the head and tail.
         */
        record Session(String id, Path file, String projectId, String cwd, String title, String firstMessage, Instant messageTimestamp,
                       int messageCount, boolean countExact, Instant createdAt, Instant updatedAt, long modified) {}

        /** A project: its id (a directory name, or a hash of the path), its real path when known, its sessions newest first. */
        record Project(String id, String path, List<Session> sessions) {
            ObjectNode json() {
                ObjectNode p = Frames.JSON.createObjectNode().put("id", id).put("path", path);
                var ids = p.putArray("sessions");
                for (Session s : sessions) ids.add(s.id());
                long created = sessions.stream().mapToLong(s -> s.createdAt().getEpochSecond()).min().orElse(0);
                return p.put("created_at", created).put("most_recent_session", sessions.getFirst().updatedAt().getEpochSecond())
                        .put("session_count", sessions.size());
            }
        }

        /** All sessions newest first, and the projects they make, most recently active first. */
        record Snapshot(List<Session> sessions, Map<String, Project> projects) {}

        /** What a scan of a session file noted. Records are fed in file order (the head, then the tail). */
        static final class Notes {
            String id;
            String cwd;
            String firstMessage;
            Instant firstMessageAt;
            Instant first;
            Instant last;
            String summary;
            String customTitle;
            String aiTitle;
            long messages;
            long bytesSeen;
            boolean sidechain;

            void time(com.fasterxml.jackson.databind.JsonNode ts) {
                if (ts == null || !ts.isTextual()) return;
                try {
                    Instant t = Instant.parse(ts.asText());
                    if (first == null || t.isBefore(first)) first = t;
                    if (last == null || t.isAfter(last)) last = t;
                } catch (java.time.format.DateTimeParseException e) {
                    // not a time: ignored
                }
            }

            void userText(String text, com.fasterxml.jackson.databind.JsonNode ts) {
                if (firstMessage != null || !realUserText(text)) return;
                firstMessage = clip(text.strip());
                try {
                    firstMessageAt = ts != null && ts.isTextual() ? Instant.parse(ts.asText()) : null;
                } catch (java.time.format.DateTimeParseException e) {
                    firstMessageAt = null;
                }
            }

            String title() {
                for (String t : new String[] {customTitle, summary, aiTitle, firstMessage}) if (t != null && !t.isBlank()) return clip(t.strip());
                return null;
            }

            /** Texts a listing keeps are cut at {@link #MAX_TEXT} characters: a pasted log must not fill the cache or every listing. */
            static String clip(String t) { return t.length() <= MAX_TEXT ? t : t.substring(0, MAX_TEXT) + "…"; }
        }

        /**
         * Whether a user text is something a person typed, not what the CLI injected (the original's filter
         * plus the newer markers): command echoes, IDE context, reminders, caveats, continuations, warm-ups.
         */
        static boolean realUserText(String text) {
            if (text == null) return false;
            String t = text.strip();
            if (t.isEmpty() || t.equals("Warmup")) return false;
            for (String p : List.of("<command-name>", "<command-message>", "<command-args>", "<local-command-stdout>",
                    "<system-reminder>", "<ide_", "<environment_context>", "<user_instructions>")) {
                if (t.startsWith(p)) return false;
            }
            return !t.contains("Caveat: The messages below were generated by the user while running local commands")
                    && !t.contains("This session is being continued from a previous conversation");
        }

        /** The {@code text} items of a content array joined by newlines, or the content itself if it is a string. */
        static String contentText(com.fasterxml.jackson.databind.JsonNode content, String textType) {
            if (content == null) return null;
            if (content.isTextual()) return content.asText();
            if (!content.isArray()) return null;
            StringBuilder b = new StringBuilder();
            for (var item : content) {
                if (!item.path("type").asText("").equals(textType) || !item.path("text").isTextual()) continue;
                if (!b.isEmpty()) b.append('\n');
                b.append(item.get("text").asText());
            }
            return b.isEmpty() ? null : b.toString();
        }

        static String sha256(String s) {
            try {
                return HexFormat.of().formatHex(java.security.MessageDigest.getInstance("SHA-256").digest(s.getBytes(StandardCharsets.UTF_8)));
            } catch (java.security.NoSuchAlgorithmException e) {
                throw new IllegalStateException(e);
            }
        }

        /**
         * One agent's history directory. Subclasses find the session files and read one; this class keeps
         * what was read per (file, size, mtime), groups sessions into projects, and checks containment.
         */
        abstract static class Store {
            static final int MAX_CACHED = 50_000;
            static final long ONGOING_MILLIS = 30_000;

            final String name;
            final Path root;
            /** What was read of each file, valid while its size and mtime stay; {@code session} null: not a session. */
            private record Cached(long size, long modified, Session session) {}

            private final Map<Path, Cached> cache = java.util.Collections.synchronizedMap(new LinkedHashMap<>(256, 0.75f, true) {
                @Override
                protected boolean removeEldestEntry(Map.Entry<Path, Cached> eldest) { return size() > MAX_CACHED; }
            });

            Store(String name, Path root) {
                this.name = name;
                this.root = root;
            }

            /** The candidate session files, or none if the directory is missing ({@link #session(Path)} keeps regular files only, never symlinks). */
            abstract List<Path> sessionFiles() throws IOException;

            /** Reads one session file; null if it is not a session (e.g. a subagent's transcript). */
            abstract Session read(Path file, java.nio.file.attribute.BasicFileAttributes attributes) throws IOException;

            /**
             * Appends the messages {@code offset..offset+limit} of a session to {@code out}, fewer once they
             * reach {@link #MAX_PAGE_BYTES}; returns how many it has.
             */
            abstract long messages(Path file, int offset, int limit, com.fasterxml.jackson.databind.node.ArrayNode out) throws IOException;

            /** The files and directories a delete removes: the session's own. */
            List<Path> ownFiles(Session s) throws IOException { return List.of(s.file()); }

            /** The project's real path: the directory its sessions' records name (the newest that names one). */
            String projectPath(String projectId, List<Session> sessions) {
                for (Session s : sessions) if (s.cwd() != null) return s.cwd();
                return null;
            }

            /** Extra per-agent fields of a listed session. */
            void addFields(Session s, ObjectNode json) {}

            /** The root's real path, or null if it does not exist. */
            Path realRoot() {
                try {
                    return root.toRealPath();
                } catch (IOException e) {
                    return null;
                }
            }

            /** {@code name} under the root, if it is a real directory (not a symlink); else null. */
            Path subdir(String name) {
                Path real = realRoot();
                Path dir = real == null ? null : real.resolve(name);
                return dir != null && Files.isDirectory(dir, java.nio.file.LinkOption.NOFOLLOW_LINKS) ? dir : null;
            }

            /** The real directories (not symlinks) in {@code subdir(name)} whose names are valid project ids. */
            List<Path> projectDirs(String name) throws IOException {
                Path parent = subdir(name);
                if (parent == null) return List.of();
                List<Path> dirs = new ArrayList<>();
                try (var stream = Files.newDirectoryStream(parent)) {
                    for (Path d : stream) {
                        String n = d.getFileName().toString();
                        if (PROJECT_ID.matcher(n).matches() && Files.isDirectory(d, java.nio.file.LinkOption.NOFOLLOW_LINKS)) dirs.add(d);
                    }
                }
                return dirs;
            }

            /** The session file or directory of a listing, if it is one, read or from the cache. */
            Session session(Path file) {
                try {
                    var a = Files.readAttributes(file, java.nio.file.attribute.BasicFileAttributes.class, java.nio.file.LinkOption.NOFOLLOW_LINKS);
                    if (!a.isRegularFile()) return null;
                    long modified = a.lastModifiedTime().toMillis();
                    Cached known = cache.get(file);
                    if (known != null && known.modified() == modified && known.size() == a.size()) return known.session();
                    Session s = read(file, a);
                    if (s != null && !SESSION_ID.matcher(s.id()).matches()) s = null; // never listed unless it can be asked for
                    cache.put(file, new Cached(a.size(), modified, s));
                    return s;
                } catch (IOException | RuntimeException e) {
                    Log.debug(name + " history: skipping " + file + ": " + e);
                    return null;
                }
            }

            Snapshot snapshot() {
                List<Session> all = new ArrayList<>();
                try {
                    // in parallel: a first listing reads every file (the next ones only stat them)
                    sessionFiles().parallelStream().map(this::session).filter(java.util.Objects::nonNull).forEachOrdered(all::add);
                } catch (IOException e) {
                    Log.debug(name + " history: " + e);
                }
                all.sort(java.util.Comparator.comparing(Session::updatedAt).reversed().thenComparing(Session::id));
                // one entry per id (Gemini may keep several files of one session): the newest
                java.util.Set<String> seen = new java.util.HashSet<>();
                all.removeIf(s -> !seen.add(s.id()));
                Map<String, List<Session>> byProject = new LinkedHashMap<>();
                for (Session s : all) byProject.computeIfAbsent(s.projectId(), k -> new ArrayList<>()).add(s);
                Map<String, Project> projects = new LinkedHashMap<>();
                byProject.forEach((id, sessions) -> projects.put(id, new Project(id, projectPath(id, sessions), List.copyOf(sessions))));
                return new Snapshot(List.copyOf(all), projects);
            }

            /** The session with this id (already checked against {@link #SESSION_ID}), or null. */
            Session find(String id) throws IOException {
                for (Session s : snapshot().sessions()) if (s.id().equals(id)) return s;
                return null;
            }

            /** The file's real path, if it lies inside the agent's directory. */
            Path readable(Path file) throws CommandMode.ApiError, IOException {
                Path real = realRoot();
                if (real == null || !file.toRealPath().startsWith(real)) {
                    throw new CommandMode.ApiError(403, "the session file is not inside " + root);
                }
                return file.toRealPath();
            }

            /** Deletes the session's own files; false if there is no such session. */
            boolean delete(String id) throws CommandMode.ApiError, IOException {
                Session s = find(id);
                if (s == null) return false;
                Path real = realRoot();
                for (Path p : ownFiles(s)) {
                    // every path must lie in the agent's directory; a symlink is removed, never followed
                    Path parent = p.toAbsolutePath().getParent();
                    if (real == null || parent == null || !parent.toRealPath().startsWith(real)) {
                        throw new CommandMode.ApiError(403, "refusing to delete " + p + ": not inside " + root);
                    }
                    if (Files.isDirectory(p, java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
                        try (var walk = Files.walk(p)) {
                            for (Path q : walk.sorted(java.util.Comparator.reverseOrder()).toList()) Files.deleteIfExists(q);
                        }
                    } else {
                        Files.deleteIfExists(p);
                    }
                    cache.remove(p);
                }
                Log.info(name + " history: deleted session " + id);
                return true;
            }

            /** A session as the original listed it (its field names), with its title, last activity and whether the count is exact. */
            ObjectNode json(Session s, Project project, long now) {
                ObjectNode j = Frames.JSON.createObjectNode().put("id", s.id()).put("project_id", s.projectId())
                        .put("project_path", project == null ? null : project.path()).put("title", s.title())
                        .put("first_message", s.firstMessage())
                        .put("message_timestamp", s.messageTimestamp() == null ? null : s.messageTimestamp().toString());
                j.put("message_count", s.messageCount()).put("message_count_exact", s.countExact());
                String status = s.messageCount() == 0 ? "pending"
                        : now - s.modified() < ONGOING_MILLIS ? "ongoing" : "completed";
                j.put("status", status).put("created_at", s.createdAt().getEpochSecond()).put("updated_at", s.updatedAt().toString());
                j.put("total_duration", java.time.Duration.between(s.createdAt(), s.updatedAt()).toMillis() / 1000.0);
                j.putNull("todo_data");
                addFields(s, j);
                return j;
            }

            /** A session made of a scan's notes; times fall back to the file's mtime. */
            Session newSession(String id, Path file, String projectId, Notes n, boolean exact, long size,
                            java.nio.file.attribute.BasicFileAttributes a) {
                Instant modified = a.lastModifiedTime().toInstant();
                Instant created = n.first != null ? n.first : modified;
                Instant updated = n.last != null ? n.last : modified;
                long count = exact || n.bytesSeen == 0 ? n.messages : Math.round((double) n.messages * size / n.bytesSeen);
                return new Session(id, file, projectId, n.cwd, n.title(), n.firstMessage, n.firstMessageAt, (int) Math.min(count, Integer.MAX_VALUE),
                        exact, created, updated, a.lastModifiedTime().toMillis());
            }
        }

        /** Bytes of a JSONL transcript read for a listing: at most this much of its head and of its tail. */
        static final int HEAD = 64 * 1024;
        static final int TAIL = 64 * 1024;
        /** A record longer than this is skipped (a listing never holds more of one line). */
        static final int MAX_SCAN_LINE = 1 << 20;
        /** A record longer than this is left out of a message page. */
        static final int MAX_MESSAGE_LINE = 32 << 20;

        /**
         * Feeds a JSONL transcript's records to {@code each}: all of them for a small file, else those of
         * the first {@link #HEAD} and last {@link #TAIL} bytes. Each record has its top-level scalars; of
         * its objects and arrays only those {@code wanted} are read (the others are empty), so a listing
         * does not build the trees of message texts it never looks at. Returns whether it saw the whole file.
         */
        static boolean scanJsonl(Path file, long size, Notes notes, java.util.function.Predicate<String> wanted,
                                 java.util.function.Consumer<com.fasterxml.jackson.databind.JsonNode> each) throws IOException {
            boolean whole = size <= HEAD + TAIL;
            Lines.Sink sink = (b, off, len) -> {
                notes.bytesSeen += len + 1;
                ObjectNode record = Frames.JSON.createObjectNode();
                try (var p = Frames.JSON.createParser(b, off, len)) {
                    if (p.nextToken() != com.fasterxml.jackson.core.JsonToken.START_OBJECT) return true;
                    while (p.nextToken() == com.fasterxml.jackson.core.JsonToken.FIELD_NAME) {
                        String name = p.currentName();
                        if (p.nextToken().isScalarValue() || wanted.test(name)) {
                            record.set(name, Frames.JSON.readTree(p));
                        } else {
                            p.skipChildren();
                            record.putObject(name);
                        }
                    }
                } catch (IOException e) {
                    return true; // a malformed line, or the last one half-written: skipped
                }
                each.accept(record);
                return true;
            };
            if (whole) {
                Lines.read(file, 0, Long.MAX_VALUE, MAX_SCAN_LINE, sink);
            } else {
                Lines.read(file, 0, HEAD, MAX_SCAN_LINE, sink);
                Lines.read(file, size - TAIL, Long.MAX_VALUE, MAX_SCAN_LINE, sink);
            }
            return whole;
        }

        /** A page of a JSONL transcript: its JSON-object lines, malformed ones skipped; returns how many there are. */
        static long jsonlMessages(Path file, int offset, int limit, com.fasterxml.jackson.databind.node.ArrayNode out) throws IOException {
            long[] total = {0};
            long[] bytes = {0};
            Lines.read(file, 0, Long.MAX_VALUE, MAX_MESSAGE_LINE, (b, off, len) -> {
                long i = total[0];
                if (i >= offset && i - offset < limit && bytes[0] < MAX_PAGE_BYTES) {
                    bytes[0] += len;
                    try {
                        var node = Frames.JSON.readTree(b, off, len);
                        if (node == null || !node.isObject()) return true;
                        out.add(node);
                    } catch (IOException e) {
                        return true;
                    }
                } else if (!isJsonObject(b, off, len)) {
                    return true;
                }
                total[0]++;
                return true;
            });
            return total[0];
        }

        /** Whether the bytes are one JSON object, checked without building it. */
        static boolean isJsonObject(byte[] b, int off, int len) {
            try (var p = Frames.JSON.createParser(b, off, len)) {
                if (p.nextToken() != com.fasterxml.jackson.core.JsonToken.START_OBJECT) return false;
                p.skipChildren();
                return true;
            } catch (IOException e) {
                return false;
            }
        }

        // --- Claude Code: <root>/projects/<encoded cwd>/<session id>.jsonl

        static final class ClaudeStore extends Store {
            ClaudeStore(Path root) { super("claude", root); }

            @Override
            List<Path> sessionFiles() throws IOException {
                List<Path> files = new ArrayList<>();
                for (Path d : projectDirs("projects")) {
                    try (var stream = Files.newDirectoryStream(d, "*.jsonl")) {
                        for (Path f : stream) {
                            // agent-<id>.jsonl: a subagent's transcript (older versions), not a session
                            if (!f.getFileName().toString().startsWith("agent-")) files.add(f);
                        }
                    }
                }
                return files;
            }

            @Override
            Session find(String id) {
                if (id.startsWith("agent-")) return null;
                try {
                    for (Path d : projectDirs("projects")) {
                        Path f = d.resolve(id + ".jsonl");
                        if (Files.isRegularFile(f, java.nio.file.LinkOption.NOFOLLOW_LINKS)) return session(f);
                    }
                } catch (IOException e) {
                    Log.debug("claude history: " + e);
                }
                return null;
            }

            @Override
            Session read(Path file, java.nio.file.attribute.BasicFileAttributes a) throws IOException {
                String name = file.getFileName().toString();
                String id = name.substring(0, name.length() - ".jsonl".length());
                Notes n = new Notes();
                // a message's content is read only while the first real user text is still to be found
                boolean whole = scanJsonl(file, a.size(), n, field -> field.equals("message") && n.firstMessage == null, r -> {
                    String type = r.path("type").asText("");
                    switch (type) {
                        case "summary" -> n.summary = text(r, "summary", n.summary);
                        case "custom-title" -> n.customTitle = text(r, "customTitle", n.customTitle);
                        case "ai-title" -> n.aiTitle = text(r, "aiTitle", n.aiTitle);
                        default -> { }
                    }
                    n.time(r.get("timestamp"));
                    if (n.cwd == null && r.path("cwd").isTextual() && !r.get("cwd").asText().isBlank()) n.cwd = r.get("cwd").asText();
                    if ((type.equals("user") || type.equals("assistant")) && r.has("message")) {
                        boolean side = r.path("isSidechain").asBoolean(false);
                        if (n.messages == 0) n.sidechain = side;
                        n.messages++;
                        if (type.equals("user") && !side && !r.path("isMeta").asBoolean(false)) {
                            n.userText(contentText(r.path("message").get("content"), "text"), r.get("timestamp"));
                        }
                    }
                });
                if (n.sidechain) return null; // a subagent's transcript under another name
                return newSession(id, file, file.getParent().getFileName().toString(), n, whole, a.size(), a);
            }

            private static String text(com.fasterxml.jackson.databind.JsonNode r, String field, String otherwise) {
                var v = r.get(field);
                return v != null && v.isTextual() && !v.asText().isBlank() ? v.asText() : otherwise;
            }

            /** The cwd whose encoding is the directory's name (a session may have moved on); else the newest recorded. */
            @Override
            String projectPath(String projectId, List<Session> sessions) {
                for (Session s : sessions) if (s.cwd() != null && encodes(s.cwd(), projectId)) return s.cwd();
                return super.projectPath(projectId, sessions);
            }

            /** Claude's directory name for a path: every UTF-16 unit outside [A-Za-z0-9] becomes '-'; long ones are cut and hashed. */
            static String encode(String path) {
                StringBuilder b = new StringBuilder(path.length());
                for (int i = 0; i < path.length(); i++) {
                    char c = path.charAt(i);
                    b.append((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ? c : '-');
                }
                if (b.length() <= 200) return b.toString();
                return b.substring(0, 200) + "-" + Long.toString(Math.abs((long) path.hashCode()), 36);
            }

            /** Whether {@code dir} is this path's directory name (for long paths the 200-character prefix, whatever the hash). */
            static boolean encodes(String path, String dir) {
                String e = encode(path);
                return e.equals(dir) || (e.length() > 200 && dir.length() > 201 && dir.startsWith(e.substring(0, 201)));
            }

            /** The transcript, its {@code <id>/} directory (subagents, tool results), its todos, and its legacy subagent files. */
            @Override
            List<Path> ownFiles(Session s) throws IOException {
                List<Path> own = new ArrayList<>(List.of(s.file()));
                Path dir = s.file().resolveSibling(s.id());
                if (Files.exists(dir, java.nio.file.LinkOption.NOFOLLOW_LINKS)) own.add(dir);
                try (var stream = Files.newDirectoryStream(s.file().getParent(), "agent-*.jsonl")) {
                    for (Path f : stream) if (s.id().equals(firstSessionId(f))) own.add(f);
                }
                Path todos = subdir("todos");
                if (todos != null) {
                    try (var stream = Files.newDirectoryStream(todos, f -> {
                        String n = f.getFileName().toString();
                        return n.equals(s.id() + ".json") || (n.startsWith(s.id() + "-agent-") && n.endsWith(".json"));
                    })) {
                        stream.forEach(own::add);
                    }
                }
                return own;
            }

            private static String firstSessionId(Path file) {
                String[] id = {null};
                try {
                    Lines.read(file, 0, 1, MAX_SCAN_LINE, (b, off, len) -> {
                        try {
                            id[0] = Frames.JSON.readTree(b, off, len).path("sessionId").asText(null);
                        } catch (IOException e) {
                            // not JSON
                        }
                        return false;
                    });
                } catch (IOException e) {
                    return null;
                }
                return id[0];
            }

            @Override
            long messages(Path file, int offset, int limit, com.fasterxml.jackson.databind.node.ArrayNode out) throws IOException {
                return jsonlMessages(file, offset, limit, out);
            }

            /** todo_data: the session's todo list, from todos/<id>-agent-<id>.json (or the older todos/<id>.json). */
            @Override
            void addFields(Session s, ObjectNode json) {
                Path real = realRoot();
                if (real == null) return;
                Path todos = real.resolve("todos");
                for (String n : List.of(s.id() + "-agent-" + s.id() + ".json", s.id() + ".json")) {
                    Path f = todos.resolve(n);
                    try {
                        if (Files.isRegularFile(f, java.nio.file.LinkOption.NOFOLLOW_LINKS) && Files.size(f) <= 1 << 20) {
                            json.set("todo_data", Frames.JSON.readTree(f.toFile()));
                            return;
                        }
                    } catch (IOException e) {
                        // unreadable or not JSON: no todos
                    }
                }
            }
        }

        // --- Codex: $CODEX_HOME/sessions/YYYY/MM/DD/rollout-<time>-<uuid>.jsonl

        static final class CodexStore extends Store {
            static final java.util.regex.Pattern FILE = java.util.regex.Pattern.compile(
                    "rollout-.*?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\\.jsonl");

            CodexStore(Path root) { super("codex", root); }

            @Override
            List<Path> sessionFiles() throws IOException {
                Path sessions = subdir("sessions");
                if (sessions == null) return List.of();
                try (var walk = Files.walk(sessions, 4)) {
                    return walk.filter(f -> {
                        String n = f.getFileName().toString();
                        return n.startsWith("rollout-") && n.endsWith(".jsonl");
                    }).toList();
                }
            }

            @Override
            Session read(Path file, java.nio.file.attribute.BasicFileAttributes a) throws IOException {
                Notes n = new Notes();
                boolean whole = scanJsonl(file, a.size(), n, field -> field.equals("payload"), r -> {
                    String type = r.path("type").asText("");
                    var p = r.path("payload");
                    n.time(r.get("timestamp"));
                    switch (type) {
                        case "session_meta" -> {
                            if (n.id == null && p.path("id").isTextual()) n.id = p.get("id").asText();
                            if (n.cwd == null && p.path("cwd").isTextual()) n.cwd = p.get("cwd").asText();
                            n.time(p.get("timestamp"));
                        }
                        case "turn_context" -> {
                            if (n.cwd == null && p.path("cwd").isTextual()) n.cwd = p.get("cwd").asText();
                        }
                        case "response_item" -> {
                            if (!p.path("type").asText("").equals("message")) return;
                            n.messages++;
                            if (p.path("role").asText("").equals("user")) n.userText(contentText(p.get("content"), "input_text"), r.get("timestamp"));
                        }
                        case "event_msg" -> {
                            if (p.path("type").asText("").equals("user_message") && p.path("message").isTextual()) {
                                n.userText(p.get("message").asText(), r.get("timestamp"));
                            }
                        }
                        default -> { }
                    }
                });
                // the whole UUID: the file name's, else the one session_meta records
                var m = FILE.matcher(file.getFileName().toString());
                String id = m.matches() ? m.group(1).toLowerCase(java.util.Locale.ROOT) : n.id;
                if (id == null) return null;
                // Codex keeps no project directories: a project is a cwd, its id the SHA-256 of the path (as Gemini names them)
                return newSession(id, file, n.cwd == null ? "unknown" : sha256(n.cwd), n, whole, a.size(), a);
            }

            @Override
            long messages(Path file, int offset, int limit, com.fasterxml.jackson.databind.node.ArrayNode out) throws IOException {
                return jsonlMessages(file, offset, limit, out);
            }
        }

        // --- Gemini: ~/.gemini/tmp/<sha256(project root)>/chats/session-<time>-<id prefix>.json, one JSON object each

        static final class GeminiStore extends Store {
            /** A file larger than this is read for a listing only until its first user message (the count is then estimated). */
            static final int WHOLE = 1 << 20;

            static final long KNOWN_NANOS = 5_000_000_000L;

            private final java.util.function.Supplier<List<String>> knownPaths;
            /** SHA-256 -> path of the paths arp knows of, and when that was computed (once per listing, not per project). */
            private volatile Map<String, String> known;
            private volatile long knownAt;

            GeminiStore(Path root, java.util.function.Supplier<List<String>> knownPaths) {
                super("gemini", root);
                this.knownPaths = knownPaths;
            }

            @Override
            List<Path> sessionFiles() throws IOException {
                List<Path> files = new ArrayList<>();
                for (Path d : projectDirs("tmp")) {
                    Path chats = d.resolve("chats");
                    if (!Files.isDirectory(chats, java.nio.file.LinkOption.NOFOLLOW_LINKS)) continue;
                    try (var stream = Files.newDirectoryStream(chats, "*.json")) {
                        stream.forEach(files::add);
                    }
                }
                return files;
            }

            @Override
            Session read(Path file, java.nio.file.attribute.BasicFileAttributes a) throws IOException {
                Notes n = new Notes();
                boolean whole = true;
                try (var in = Files.newInputStream(file, java.nio.file.LinkOption.NOFOLLOW_LINKS); var p = Frames.JSON.createParser(in)) {
                    if (p.nextToken() != com.fasterxml.jackson.core.JsonToken.START_OBJECT) return null;
                    fields:
                    while (p.nextToken() == com.fasterxml.jackson.core.JsonToken.FIELD_NAME) {
                        String field = p.currentName();
                        var t = p.nextToken();
                        switch (field) {
                            case "sessionId" -> n.id = t.isScalarValue() ? p.getValueAsString() : null;
                            case "startTime", "lastUpdated" -> n.time(t == com.fasterxml.jackson.core.JsonToken.VALUE_STRING
                                    ? com.fasterxml.jackson.databind.node.TextNode.valueOf(p.getText()) : null);
                            case "summary" -> n.summary = t == com.fasterxml.jackson.core.JsonToken.VALUE_STRING ? p.getText() : n.summary;
                            case "projectPath", "workingDirectory" -> {
                                if (n.cwd == null && t == com.fasterxml.jackson.core.JsonToken.VALUE_STRING) n.cwd = p.getText();
                            }
                            case "messages" -> {
                                if (t != com.fasterxml.jackson.core.JsonToken.START_ARRAY) {
                                    p.skipChildren();
                                    continue;
                                }
                                while (p.nextToken() != com.fasterxml.jackson.core.JsonToken.END_ARRAY) {
                                    n.messages++;
                                    if (n.firstMessage == null) {
                                        com.fasterxml.jackson.databind.JsonNode m = Frames.JSON.readTree(p);
                                        n.time(m.get("timestamp"));
                                        if (m.path("type").asText(m.path("role").asText("")).equals("user")) {
                                            n.userText(firstString(m.get("content")), m.get("timestamp"));
                                        }
                                    } else {
                                        p.skipChildren();
                                    }
                                    n.bytesSeen = p.currentLocation().getByteOffset();
                                    if (a.size() > WHOLE && n.firstMessage != null && n.bytesSeen > HEAD) {
                                        whole = false;
                                        break fields;
                                    }
                                }
                            }
                            default -> p.skipChildren();
                        }
                    }
                }
                if (n.id == null) return null;
                return newSession(n.id, file, file.getParent().getParent().getFileName().toString(), n, whole, a.size(), a);
            }

            /** The first non-blank string in the content, depth first (a string, or parts with text). */
            private static String firstString(com.fasterxml.jackson.databind.JsonNode node) {
                if (node == null) return null;
                if (node.isTextual()) return node.asText().isBlank() ? null : node.asText();
                for (var child : node) {
                    String s = firstString(child);
                    if (s != null) return s;
                }
                return null;
            }

            /**
             * The real path: one a session file, the directory's {@code .project_root} or its {@code logs.json}
             * records (preferring one whose SHA-256 is the directory's name), else a path arp knows of (a Claude
             * or Codex project, the home directory) whose hash it is; null if none.
             */
            @Override
            String projectPath(String projectId, List<Session> sessions) {
                List<String> recorded = new ArrayList<>();
                for (Session s : sessions) if (s.cwd() != null) recorded.add(s.cwd());
                Path tmp = subdir("tmp");
                Path dir = tmp == null ? null : tmp.resolve(projectId);
                if (recorded.isEmpty() && dir != null) {
                    try {
                        Path marker = dir.resolve(".project_root");
                        if (Files.isRegularFile(marker, java.nio.file.LinkOption.NOFOLLOW_LINKS) && Files.size(marker) < 4096) {
                            String s = Files.readString(marker).strip();
                            if (!s.isEmpty()) recorded.add(s);
                        }
                    } catch (IOException e) {
                        // unreadable
                    }
                }
                if (recorded.isEmpty() && dir != null) recorded.addAll(logPaths(dir.resolve("logs.json")));
                for (String r : recorded) if (sha256(r).equals(projectId)) return r;
                if (!recorded.isEmpty()) return recorded.getFirst();
                return knownHashes().get(projectId);
            }

            private Map<String, String> knownHashes() {
                Map<String, String> k = known;
                if (k == null || System.nanoTime() - knownAt > KNOWN_NANOS) {
                    Map<String, String> m = new java.util.HashMap<>();
                    for (String path : knownPaths.get()) m.putIfAbsent(sha256(path), path);
                    known = k = m;
                    knownAt = System.nanoTime();
                }
                return k;
            }

            /** Paths that logs.json entries record (projectPath, workingDirectory or cwd), from its first MiB. */
            private static List<String> logPaths(Path logs) {
                List<String> found = new ArrayList<>();
                try {
                    if (!Files.isRegularFile(logs, java.nio.file.LinkOption.NOFOLLOW_LINKS)) return found;
                    try (var in = Files.newInputStream(logs); var p = Frames.JSON.createParser(in)) {
                        com.fasterxml.jackson.core.JsonToken t;
                        while ((t = p.nextToken()) != null && p.currentLocation().getByteOffset() < WHOLE && found.isEmpty()) {
                            if (t == com.fasterxml.jackson.core.JsonToken.VALUE_STRING
                                    && List.of("projectPath", "workingDirectory", "cwd").contains(p.currentName()) && p.getText().startsWith("/")) {
                                found.add(p.getText());
                            }
                        }
                    }
                } catch (IOException e) {
                    // unreadable or malformed: nothing recorded
                }
                return found;
            }

            @Override
            long messages(Path file, int offset, int limit, com.fasterxml.jackson.databind.node.ArrayNode out) throws IOException {
                long total = 0;
                try (var in = Files.newInputStream(file, java.nio.file.LinkOption.NOFOLLOW_LINKS); var p = Frames.JSON.createParser(in)) {
                    if (p.nextToken() != com.fasterxml.jackson.core.JsonToken.START_OBJECT) return 0;
                    while (p.nextToken() == com.fasterxml.jackson.core.JsonToken.FIELD_NAME) {
                        String field = p.currentName();
                        var t = p.nextToken();
                        if (!field.equals("messages") || t != com.fasterxml.jackson.core.JsonToken.START_ARRAY) {
                            p.skipChildren();
                            continue;
                        }
                        long bytes = 0;
                        while (p.nextToken() != com.fasterxml.jackson.core.JsonToken.END_ARRAY) {
                            if (total >= offset && total - offset < limit && bytes < MAX_PAGE_BYTES) {
                                long start = p.currentLocation().getByteOffset();
                                com.fasterxml.jackson.databind.JsonNode m = Frames.JSON.readTree(p);
                                out.add(m);
                                bytes += p.currentLocation().getByteOffset() - start;
                            } else {
                                p.skipChildren();
                            }
                            total++;
                        }
                    }
                }
                return total;
            }
        }
    }

    /**
     * Reads the lines of a file region with one fixed buffer, handing each complete line to a sink as
     * bytes (no copy unless it spans two reads): for heads and tails of transcripts too large to read whole.
     */
    static final class Lines {
        interface Sink {
            /** One line, without its newline (or CR LF); false stops the reading. */
            boolean line(byte[] b, int off, int len) throws IOException;
        }

        /**
         * The lines that start at or after {@code from} and before {@code until}; when {@code from} is not 0,
         * the part of a line before the first newline is skipped (it began earlier). Lines longer than
         * {@code max} bytes and empty lines are skipped.
         */
        static void read(Path file, long from, long until, int max, Sink sink) throws IOException {
            try (var ch = java.nio.channels.FileChannel.open(file, java.nio.file.StandardOpenOption.READ, java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
                ch.position(from);
                byte[] buf = new byte[64 * 1024];
                ByteBuffer bb = ByteBuffer.wrap(buf);
                byte[] pending = new byte[0];
                int pendingLen = 0;
                boolean tooLong = false;
                boolean skip = from > 0;
                long offset = from;     // file offset of buf[0]
                long lineStart = from;
                int n;
                while ((n = ch.read(bb.clear())) > 0) {
                    int start = 0;
                    for (int i = 0; i < n; i++) {
                        if (buf[i] != '\n') continue;
                        if (lineStart >= until) return;
                        if (skip) {
                            skip = false;
                        } else if (!tooLong && (long) pendingLen + i - start <= max) {
                            boolean more;
                            if (pendingLen == 0) {
                                more = emit(sink, buf, start, i - start);
                            } else {
                                pending = append(pending, pendingLen, buf, start, i - start);
                                more = emit(sink, pending, 0, pendingLen + i - start);
                            }
                            if (!more) return;
                        }
                        pendingLen = 0;
                        tooLong = false;
                        start = i + 1;
                        lineStart = offset + i + 1;
                    }
                    if (lineStart >= until) return;
                    int rest = n - start;
                    if (!skip && !tooLong) {
                        if ((long) pendingLen + rest > max) {
                            tooLong = true;
                        } else {
                            pending = append(pending, pendingLen, buf, start, rest);
                            pendingLen += rest;
                        }
                    }
                    offset += n;
                    if ((tooLong || skip) && offset >= until) return; // the rest of this line is not wanted, nor anything after it
                }
                if (!skip && !tooLong && pendingLen > 0 && lineStart < until) emit(sink, pending, 0, pendingLen); // no final newline
            }
        }

        private static byte[] append(byte[] pending, int pendingLen, byte[] b, int off, int len) {
            if (pendingLen + len > pending.length) pending = java.util.Arrays.copyOf(pending, Math.max(pendingLen + len, pending.length * 2));
            System.arraycopy(b, off, pending, pendingLen, len);
            return pending;
        }

        private static boolean emit(Sink sink, byte[] b, int off, int len) throws IOException {
            if (len > 0 && b[off + len - 1] == '\r') len--;
            return len == 0 || sink.line(b, off, len);
        }
    }

    /**
     * --enable-fs: GET /api/fs?path=…, /api/fs/{path}?project_path=… and /api/sessions/{id}/fs/{path}
     * list directories and read files, only inside the --fs-root directories (compared as real paths,
     * so a symlink that leads out is refused). File reads stop at {@link #MAX_READ} bytes and are
     * binary-safe: UTF-8 text as it is, anything else as base64.
     */
    static final class FileBrowser {
        static final int MAX_READ = 1 << 20;
        static final int MAX_ENTRIES = 10_000;

        /** The roots as configured (for the check before the disk is touched) and as real paths. */
        private final List<Path> roots = new ArrayList<>();
        private final List<Path> realRoots = new ArrayList<>();

        FileBrowser(List<Path> configured) throws IOException {
            for (Path r : configured) {
                roots.add(r.toAbsolutePath().normalize());
                realRoots.add(r.toRealPath());
            }
        }

        boolean route(io.undertow.server.HttpServerExchange ex, String method, String[] parts, Runs runs) throws CommandMode.ApiError, IOException {
            String path = ex.getRequestPath();
            String sessionId = null;
            Path base = null;     // the directory relative paths start from, and results must stay in
            String rest;          // the path after .../fs
            if (path.equals("/api/fs") || path.startsWith("/api/fs/")) {
                rest = path.substring("/api/fs".length());
                String project = History.query(ex, "project_path");
                if (project != null) base = base(project);
            } else if (parts.length >= 5 && parts[1].equals("api") && parts[2].equals("sessions") && parts[4].equals("fs")) {
                AgentRun run = runs.find(parts[3]);
                if (run == null) throw new CommandMode.ApiError(404, "no session " + CommandMode.printable(parts[3]));
                sessionId = run.id;
                base = base(run.projectPath.toString());
                rest = "/" + String.join("/", java.util.Arrays.copyOfRange(parts, 5, parts.length));
            } else {
                return false;
            }
            if (!method.equals("GET")) throw new CommandMode.ApiError(405, method + " is not allowed on files (GET)");
            String asked = History.query(ex, "path");
            boolean fromQuery = asked != null;
            if (!fromQuery) asked = rest.startsWith("/") ? rest.substring(1) : rest;
            Path real = resolve(base, asked, fromQuery);
            String shown = base == null ? real.toString() : base.relativize(real).toString();
            var attributes = Files.readAttributes(real, java.nio.file.attribute.BasicFileAttributes.class);
            ObjectNode answer = Frames.JSON.createObjectNode().put("path", shown)
                    .put("project_path", base == null ? null : base.toString()).put("session_id", sessionId);
            if (attributes.isDirectory()) list(real, base, answer);
            else if (attributes.isRegularFile()) read(real, attributes.size(), answer);
            else throw new CommandMode.ApiError(400, CommandMode.printable(asked) + " is neither a directory nor a regular file");
            CommandMode.sendJson(ex, 200, answer);
            return true;
        }

        /** A project directory given by the caller: absolute, existing, and inside a root. */
        private Path base(String project) throws CommandMode.ApiError, IOException {
            Path p;
            try {
                p = Path.of(project);
            } catch (java.nio.file.InvalidPathException e) {
                throw new CommandMode.ApiError(400, "project_path is not a valid path");
            }
            if (!p.isAbsolute()) throw new CommandMode.ApiError(400, "project_path must be absolute, not '" + CommandMode.printable(project) + "'");
            Path real = resolve(null, project, true);
            if (!Files.isDirectory(real)) throw new CommandMode.ApiError(400, "project_path " + CommandMode.printable(project) + " is not a directory");
            return real;
        }

        /**
         * The real path of {@code asked}: relative to {@code base} (else the first root); absolute only if
         * it came from {@code ?path=}. No '..' component; inside a root (and the base), before and after
         * symlinks are resolved.
         */
        private Path resolve(Path base, String asked, boolean absoluteAllowed) throws CommandMode.ApiError, IOException {
            String shown = CommandMode.printable(asked);
            for (String part : asked.split("[/\\\\]")) {
                if (part.equals("..")) throw new CommandMode.ApiError(400, "'..' is not allowed in a path: " + shown);
            }
            Path p;
            try {
                p = Path.of(asked);
            } catch (java.nio.file.InvalidPathException e) {
                throw new CommandMode.ApiError(400, "not a valid path: " + shown);
            }
            if (p.isAbsolute() && !absoluteAllowed) {
                throw new CommandMode.ApiError(400, "absolute paths are not allowed here (use ?path=): " + shown);
            }
            if (!p.isAbsolute()) p = (base != null ? base : realRoots.getFirst()).resolve(p);
            p = p.normalize();
            Path lexical = p;
            if (roots.stream().noneMatch(lexical::startsWith) && realRoots.stream().noneMatch(lexical::startsWith)) {
                throw outside(shown);
            }
            Path real;
            try {
                real = p.toRealPath();
            } catch (java.nio.file.NoSuchFileException e) {
                throw new CommandMode.ApiError(404, "no such file or directory: " + shown);
            } catch (java.nio.file.AccessDeniedException e) {
                throw new CommandMode.ApiError(403, "permission denied: " + shown);
            }
            if (realRoots.stream().noneMatch(real::startsWith) || (base != null && !real.startsWith(base))) throw outside(shown);
            return real;
        }

        private CommandMode.ApiError outside(String shown) {
            return new CommandMode.ApiError(403, shown + " is outside the directories arpc may show (--fs-root)");
        }

        /** A directory: its entries (directories first, then by name), without following symlinks. */
        private static void list(Path dir, Path base, ObjectNode answer) throws IOException {
            List<ObjectNode> entries = new ArrayList<>();
            boolean truncated = false;
            try (var stream = Files.newDirectoryStream(dir)) {
                for (Path e : stream) {
                    if (entries.size() == MAX_ENTRIES) {
                        truncated = true;
                        break;
                    }
                    java.nio.file.attribute.BasicFileAttributes a;
                    try {
                        a = Files.readAttributes(e, java.nio.file.attribute.BasicFileAttributes.class, java.nio.file.LinkOption.NOFOLLOW_LINKS);
                    } catch (IOException gone) {
                        continue;
                    }
                    ObjectNode entry = Frames.JSON.createObjectNode().put("name", e.getFileName().toString())
                            .put("path", base == null ? e.toString() : base.relativize(e).toString()).put("is_dir", a.isDirectory());
                    if (a.isRegularFile()) entry.put("size", a.size()); else entry.putNull("size");
                    entry.put("modified", a.lastModifiedTime().toInstant().truncatedTo(java.time.temporal.ChronoUnit.MILLIS).toString());
                    if (a.isSymbolicLink()) entry.put("is_symlink", true);
                    entries.add(entry);
                }
            }
            entries.sort(java.util.Comparator.comparing((ObjectNode e) -> !e.get("is_dir").asBoolean()).thenComparing(e -> e.get("name").asText()));
            answer.put("type", "directory").putArray("entries").addAll(entries);
            answer.put("truncated", truncated);
        }

        /** A file's first {@link #MAX_READ} bytes: as text if they are UTF-8 (a character cut at the end is left out), else base64. */
        private static void read(Path file, long size, ObjectNode answer) throws IOException {
            byte[] data;
            boolean truncated;
            try (var in = Files.newInputStream(file, java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
                data = in.readNBytes(MAX_READ);
                truncated = in.read() != -1;
            }
            var decoder = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(java.nio.charset.CodingErrorAction.REPORT).onUnmappableCharacter(java.nio.charset.CodingErrorAction.REPORT);
            ByteBuffer in = ByteBuffer.wrap(data);
            java.nio.CharBuffer out = java.nio.CharBuffer.allocate(data.length);
            boolean text = !decoder.decode(in, out, !truncated).isError() && (truncated || !decoder.flush(out).isError());
            text = text && (!truncated || data.length - in.position() < 4); // only a cut character may be left over
            answer.put("type", "file").put("size", size).put("truncated", truncated);
            if (text) {
                answer.put("bytes", in.position()).put("encoding", "utf-8").put("content", out.flip().toString());
            } else {
                answer.put("bytes", data.length).put("encoding", "base64").put("content", java.util.Base64.getEncoder().encodeToString(data));
            }
        }
    }
}
