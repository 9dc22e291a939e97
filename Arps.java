///usr/bin/env jbang "$0" "$@" ; exit $?
//JAVA 21+
//JAVA_OPTIONS -XX:+UseG1GC -Xms32m -Xmx512m -XX:MaxNewSize=32m -XX:MaxDirectMemorySize=1g
//DEPS info.picocli:picocli:4.7.7
//SOURCES Protocol.java
package arp;

import arp.Protocol.Acceptor;
import arp.Protocol.EventLoop;
import arp.Protocol.EventLoopGroup;
import arp.Protocol.FrameReader;
import arp.Protocol.Frames;
import arp.Protocol.Hello;
import arp.Protocol.IoHandler;
import arp.Protocol.Log;
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
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.OutputStream;
import java.net.BindException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.net.StandardSocketOptions;
import java.net.URLDecoder;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.Iterator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.Callable;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;

/**
 * arps, the relay. Three ports: control (clients register and receive commands), proxy (clients open
 * data connections) and public (visitors arrive; the request's token picks the client).
 */
@Command(name = "arps", mixinStandardHelpOptions = true, version = "arps " + Protocol.VERSION,
        sortOptions = false, usageHelpAutoWidth = true,
        description = "The arp relay: exposes services of registered arpc clients on a public port.")
public final class Arps implements Callable<Integer> {

    @Option(names = "--bind", defaultValue = "0.0.0.0", description = "Address the three ports listen on (default: ${DEFAULT-VALUE}).")
    String bind;

    @Option(names = "--control-port", defaultValue = "17001", description = "Port where clients register (default: ${DEFAULT-VALUE}; 0 = any free port).")
    int controlPort;

    @Option(names = "--proxy-port", defaultValue = "17002", description = "Port where clients open data connections (default: ${DEFAULT-VALUE}).")
    int proxyPort;

    @Option(names = "--public-port", defaultValue = "17003", description = "Port where visitors arrive (default: ${DEFAULT-VALUE}).")
    int publicPort;

    @Option(names = "--pool-size", defaultValue = "1", description = "Idle data connections kept ready per client (default: ${DEFAULT-VALUE}).")
    int poolSize;

    @Option(names = "--pool-max", defaultValue = "64", paramLabel = "N", description = "Up to how many idle connections the pool may grow while visitors find it empty; it shrinks back to --pool-size when calm (default: ${DEFAULT-VALUE}).")
    int poolMax;

    @Option(names = "--pending-timeout", defaultValue = "10", paramLabel = "SECONDS", description = "How long a visitor may wait for a data connection before getting 504 (default: ${DEFAULT-VALUE}).")
    int pendingTimeout;

    @Option(names = "--head-timeout", defaultValue = "10", paramLabel = "SECONDS", description = "How long a visitor or a new connection may take to send its request head or first frame (default: ${DEFAULT-VALUE}).")
    int headTimeout;

    @Option(names = "--tcp-ports", paramLabel = "LOW-HIGH", description = "Ports the relay may give clients that ask for a dedicated raw TCP port (arpc --remote-port); without it, none are given.")
    String tcpPorts;

    @Option(names = "--client-timeout", defaultValue = "60", paramLabel = "SECONDS", description = "Drop a client that sends heartbeats once it has been silent this long; clients of the original protocol never send any and are never dropped for silence (default: ${DEFAULT-VALUE}).")
    int clientTimeout;

    @Option(names = "--max-pending", defaultValue = "1000", paramLabel = "N", description = "Visitors that may wait for a data connection per client; more get 503 (default: ${DEFAULT-VALUE}).")
    int maxPending;

    @Option(names = "--max-clients", defaultValue = "10000", paramLabel = "N", description = "Clients that may be registered at once; more are refused until one leaves (default: ${DEFAULT-VALUE}).")
    int maxClients;

    @Option(names = "--max-head", defaultValue = "32768", paramLabel = "BYTES", description = "Largest request head a visitor may send; larger ones get 431 (default: ${DEFAULT-VALUE}).")
    int maxHead;

    @Option(names = "--max-handshakes", defaultValue = "4096", paramLabel = "N", description = "Connections on all ports that have not yet identified themselves (no Register, NewProxyConn or request head yet); more are closed at once (default: ${DEFAULT-VALUE}).")
    int maxHandshakes;

    @Option(names = "--max-handshakes-per-ip", defaultValue = "256", paramLabel = "N", description = "The same, per source address (default: ${DEFAULT-VALUE}).")
    int maxHandshakesPerIp;

    @Option(names = "--domain", paramLabel = "DOMAIN", description = "Route visitors by Host: ID.DOMAIN reaches the client with token ID (needs wildcard DNS for *.DOMAIN).")
    String domain;

    @Option(names = "--secret", paramLabel = "SECRET", description = "Shared secret that clients must prove they know (default: $ARPS_SECRET). Prefer --secret-file or the variable: arguments show in ps.")
    String secret;

    @Option(names = "--secret-file", paramLabel = "FILE", description = "File whose first line is the shared secret.")
    Path secretFile;

    @Option(names = "--client-secrets", paramLabel = "FILE", description = "File of '<client-id> <secret>' lines: a listed id registers only with its own secret.")
    Path clientSecrets;

    @Option(names = "--tls-cert", paramLabel = "PEM", description = "Certificate chain for TLS on the control and proxy ports (with --tls-key).")
    Path tlsCert;

    @Option(names = "--tls-key", paramLabel = "PEM", description = "Unencrypted private key (PKCS#8 or PKCS#1 RSA) for --tls-cert.")
    Path tlsKey;

    @Option(names = "--tls-self-signed", description = "TLS with a self-signed certificate made once and kept in --state-dir; clients pin its fingerprint, which arps prints.")
    boolean tlsSelfSigned;

    @Option(names = "--tls-public", description = "Also serve visitors over HTTPS on the public port (needs a TLS certificate).")
    boolean tlsPublic;

    @Option(names = "--state-dir", paramLabel = "DIR", description = "Where arps keeps its self-signed certificate (default: $ARPS_STATE_DIR, else ~/.arps).")
    Path stateDir;

    @Option(names = "--io-threads", paramLabel = "N", description = "Event-loop threads that carry the traffic (default: one per core).")
    Integer ioThreads;

    @Option(names = "--log-level", paramLabel = "LEVEL", description = "error, warn, info, debug or trace (default: $ARP_LOG, else info).")
    String logLevel;

    @Option(names = "--json", description = "Print one JSON line on stdout once all ports listen.")
    boolean json;

    public static void main(String[] args) {
        System.exit(new CommandLine(new Arps()).execute(args));
    }

    @Override
    public Integer call() throws Exception {
        try {
            Log.configure("arps", logLevel);
        } catch (IllegalArgumentException e) {
            System.err.println("arps: " + e.getMessage());
            return 2;
        }
        String problem = checkOptions();
        if (problem != null) {
            System.err.println("arps: " + problem);
            return 2;
        }
        Authenticator auth;
        Tls.Identity tls;
        try {
            auth = Authenticator.load(this);
            tls = loadTls();
        } catch (IOException | java.security.GeneralSecurityException | IllegalArgumentException e) {
            System.err.println("arps: " + e.getMessage());
            return 2;
        }
        Relay relay = new Relay(this, auth, tls);
        try {
            relay.start();
        } catch (PortInUse e) {
            System.err.println("arps: " + e.getMessage());
            relay.close();
            return 1;
        }
        Runtime.getRuntime().addShutdownHook(new Thread(relay::close, "arps-shutdown"));
        if (json) {
            var ready = Frames.JSON.createObjectNode().put("event", "ready").put("control_port", relay.controlPort())
                    .put("proxy_port", relay.proxyPort()).put("public_port", relay.publicPort());
            if (tls != null) ready.put("tls_fingerprint", tls.fingerprint());
            System.out.println(ready);
            System.out.flush();
        }
        Log.info("listening on " + bind + ": control " + relay.controlPort() + ", proxy " + relay.proxyPort()
                + ", public " + relay.publicPort() + (tlsPublic ? " (HTTPS)" : "") + " (pool size " + poolSize + ")");
        if (tls != null) {
            Log.info("TLS on the control and proxy ports" + (tlsPublic ? " and the public port" : "")
                    + "; certificate " + tls.fingerprint() + (tlsSelfSigned ? " (self-signed: clients connect with --tls-pin " + tls.fingerprint() + ")" : ""));
        } else {
            Log.warn("no TLS: registrations and tunnelled bytes cross the network in the clear (see --tls-cert, --tls-self-signed)");
        }
        if (!auth.required()) {
            Log.warn("OPEN RELAY: no --secret and no --client-secrets, so any client may register any free id");
        }
        relay.awaitClosed();
        return 0;
    }

    private Tls.Identity loadTls() throws IOException, java.security.GeneralSecurityException {
        if (tlsCert != null) return Tls.fromPem(tlsCert, tlsKey);
        if (!tlsSelfSigned) return null;
        Path dir = stateDir != null ? stateDir
                : System.getenv("ARPS_STATE_DIR") != null ? Path.of(System.getenv("ARPS_STATE_DIR"))
                : Path.of(System.getProperty("user.home"), ".arps");
        return Tls.selfSigned(dir);
    }

    private String checkOptions() {
        for (var p : List.of(Map.entry("--control-port", controlPort), Map.entry("--proxy-port", proxyPort),
                Map.entry("--public-port", publicPort))) {
            if (p.getValue() < 0 || p.getValue() > 65535) return p.getKey() + " must be 0..65535, not " + p.getValue();
        }
        if (poolSize < 0 || poolSize > 1000) return "--pool-size must be 0..1000, not " + poolSize;
        if (ioThreads != null && (ioThreads < 1 || ioThreads > 256)) return "--io-threads must be 1..256, not " + ioThreads;
        if (poolMax < 0 || poolMax > 1000) return "--pool-max must be 0..1000, not " + poolMax;
        if (pendingTimeout < 1 || pendingTimeout > 3600) return "--pending-timeout must be 1..3600 seconds";
        if (headTimeout < 1 || headTimeout > 3600) return "--head-timeout must be 1..3600 seconds";
        if (clientTimeout < 1 || clientTimeout > 86400) return "--client-timeout must be 1..86400 seconds";
        if (maxPending < 1 || maxPending > 1_000_000) return "--max-pending must be 1..1000000";
        if (maxClients < 1) return "--max-clients must be at least 1";
        if (maxHead < 1024 || maxHead > 1 << 20) return "--max-head must be 1024..1048576 bytes";
        if (maxHandshakes < 1) return "--max-handshakes must be at least 1";
        if (maxHandshakesPerIp < 1) return "--max-handshakes-per-ip must be at least 1";
        if ((tlsCert == null) != (tlsKey == null)) return "--tls-cert and --tls-key go together";
        if (tlsCert != null && tlsSelfSigned) return "--tls-self-signed and --tls-cert exclude each other";
        if (tlsPublic && tlsCert == null && !tlsSelfSigned) return "--tls-public needs --tls-cert/--tls-key or --tls-self-signed";
        if (domain != null && !domain.matches("(?i)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")) {
            return "--domain must be a DNS name such as tunnel.example.com, not '" + domain + "'";
        }
        if (secret != null && secretFile != null) return "--secret and --secret-file exclude each other";
        if (secret != null && secret.isBlank()) return "--secret is empty (an unset variable?): give a secret of 16 or more random characters";
        if (tcpPorts != null && TcpPorts.parseRange(tcpPorts) == null) {
            return "--tcp-ports must be a port or a range LOW-HIGH within 1..65535, not '" + tcpPorts + "'";
        }
        return null;
    }

    /** Where a pooled data connection is: waiting in the pool, taken by a visitor, or closed. */
    enum DataConnState { IDLE, TAKEN, DEAD }

    static final class PortInUse extends Exception {
        PortInUse(String message) { super(message); }
    }

    // ------------------------------------------------------------------------------------------------
    // Trust: who may register, and how many strangers may knock at once

    /** The secrets clients must prove: one shared, and/or one per client id. Without any, the relay is open. */
    static final class Authenticator {
        static final int MIN_SECRET = 16;
        private final byte[] shared;
        private final Map<String, byte[]> perClient;

        Authenticator(byte[] shared, Map<String, byte[]> perClient) {
            this.shared = shared;
            this.perClient = perClient;
        }

        static Authenticator load(Arps o) throws IOException {
            String secret = Protocol.resolveSecret(o.secret, o.secretFile, "ARPS_SECRET");
            // The relay proves the secret first (so clients never answer an impostor); that proof is
            // an offline test for guesses, so only secrets too long to guess are accepted.
            if (secret != null && secret.length() < MIN_SECRET) {
                throw new IllegalArgumentException("the shared secret has " + secret.length() + " characters; use "
                        + MIN_SECRET + " or more random ones (e.g. head -c 32 /dev/urandom | base64)");
            }
            Map<String, byte[]> perClient = new HashMap<>();
            if (o.clientSecrets != null) {
                warnIfReadableByOthers(o.clientSecrets);
                List<String> lines = Files.readAllLines(o.clientSecrets, StandardCharsets.UTF_8);
                for (int i = 0; i < lines.size(); i++) {
                    String line = lines.get(i).strip();
                    if (line.isEmpty() || line.startsWith("#")) continue;
                    String[] parts = line.split("\\s+", 2);
                    if (parts.length != 2 || !Protocol.validClientId(parts[0])) {
                        throw new IllegalArgumentException(o.clientSecrets + " line " + (i + 1)
                                + ": expected '<client-id> <secret>' with an id of A-Z a-z 0-9 . _ ~ -");
                    }
                    if (parts[1].strip().length() < MIN_SECRET) {
                        throw new IllegalArgumentException(o.clientSecrets + " line " + (i + 1) + ": the secret of " + parts[0]
                                + " is shorter than " + MIN_SECRET + " characters");
                    }
                    if (perClient.put(parts[0], parts[1].strip().getBytes(StandardCharsets.UTF_8)) != null) {
                        throw new IllegalArgumentException(o.clientSecrets + " line " + (i + 1) + ": client id " + parts[0] + " is listed twice");
                    }
                }
            }
            return new Authenticator(secret == null ? null : secret.getBytes(StandardCharsets.UTF_8), Map.copyOf(perClient));
        }

        private static void warnIfReadableByOthers(Path file) {
            try {
                var perms = Files.getPosixFilePermissions(file);
                if (perms.contains(java.nio.file.attribute.PosixFilePermission.GROUP_READ)
                        || perms.contains(java.nio.file.attribute.PosixFilePermission.OTHERS_READ)) {
                    Log.warn(file + " is readable by other users; chmod 600 it");
                }
            } catch (UnsupportedOperationException | IOException e) {
                // not POSIX: nothing to check
            }
        }

        boolean required() { return shared != null || !perClient.isEmpty(); }

        /** The key this id proves, or null if the id may not register at all. */
        byte[] keyFor(String clientId) {
            byte[] own = perClient.get(clientId);
            return own != null ? own : shared;
        }

        /** Listed with its own secret: whoever proves it is the id's owner. */
        boolean listed(String clientId) { return perClient.containsKey(clientId); }
    }

    /**
     * Failed proofs slow down the address they came from: each answer waits twice as long as the one
     * before (up to 8 s), and together with the per-address handshake limit this caps guessing.
     */
    static final class AuthThrottle {
        private record Failures(int count, long lastNanos) {}

        private final Map<java.net.InetAddress, Failures> byAddress = new ConcurrentHashMap<>();

        /** Records a failure; returns how long to wait before answering. */
        long fail(java.net.InetAddress address) {
            long now = System.nanoTime();
            if (byAddress.size() > 10_000) byAddress.values().removeIf(f -> now - f.lastNanos > TimeUnit.MINUTES.toNanos(10));
            Failures f = byAddress.merge(address, new Failures(1, now), (old, one) ->
                    new Failures(now - old.lastNanos > TimeUnit.MINUTES.toNanos(10) ? 1 : old.count + 1, now));
            return Math.min(8000L, 250L << Math.min(f.count - 1, 5));
        }

        int failures(java.net.InetAddress address) {
            Failures f = byAddress.get(address);
            return f == null ? 0 : f.count;
        }
    }

    /**
     * Counts connections that have not yet said who they are, on all ports, in total and per address,
     * so a flood of half-open or slow connections cannot take the relay's memory and threads from
     * everyone else. Refusals are logged at most once a second per port, with how many were refused.
     */
    static final class Admission implements Tls.Gate {
        private final int max;
        private final int perAddress;
        private final java.util.concurrent.atomic.AtomicInteger total = new java.util.concurrent.atomic.AtomicInteger();
        private final Map<java.net.InetAddress, Integer> byAddress = new ConcurrentHashMap<>();
        private final Refusals refusals;

        Admission(int max, int perAddress, Refusals refusals) {
            this.max = max;
            this.perAddress = perAddress;
            this.refusals = refusals;
        }

        @Override
        public boolean enter(java.net.InetAddress address, String port) {
            if (address == null) return false;
            int atAddress = byAddress.merge(address, 1, Integer::sum);
            int all = total.incrementAndGet();
            if (atAddress <= perAddress && all <= max) return true;
            leave(address);
            String why = atAddress > perAddress
                    ? perAddress + " unidentified connections from " + address.getHostAddress() + " already (--max-handshakes-per-ip)"
                    : max + " unidentified connections already (--max-handshakes)";
            refusals.log("unidentified connections on the " + port + " port", "refused a connection on the " + port + " port from "
                    + address.getHostAddress() + ": " + why);
            return false;
        }

        @Override
        public void leave(java.net.InetAddress address) {
            total.decrementAndGet();
            byAddress.computeIfPresent(address, (a, n) -> n <= 1 ? null : n - 1);
        }

    }

    /** Refusals of every kind, each kind {@link RateLimited} on its own (floods must not flood the log). */
    static final class Refusals {
        private final Map<String, RateLimited> byKind = new ConcurrentHashMap<>();

        void log(String kind, String message) { byKind.computeIfAbsent(kind, RateLimited::new).log(message); }

        void flush() { byKind.values().forEach(RateLimited::flush); }
    }

    /**
     * A warning that may fire thousands of times a second: at most {@link #PER_SECOND} lines a second;
     * what is held back is counted, and the count is logged by {@link #flush} (every 2 s).
     */
    static final class RateLimited {
        static final int PER_SECOND = 10;
        private final String kind;
        private long windowStart = System.nanoTime();
        private int inWindow;
        private int suppressed;

        RateLimited(String kind) { this.kind = kind; }

        synchronized void log(String message) {
            long now = System.nanoTime();
            if (now - windowStart >= TimeUnit.SECONDS.toNanos(1)) {
                windowStart = now;
                inWindow = 0;
            }
            if (++inWindow > PER_SECOND) {
                suppressed++;
                return;
            }
            Log.warn(message);
        }

        synchronized void flush() {
            if (suppressed == 0) return;
            Log.warn(suppressed + " more refusals (" + kind + ") not logged one by one");
            suppressed = 0;
        }
    }

    // ------------------------------------------------------------------------------------------------

    /** The running relay: listeners, registered clients and the event loops that serve their traffic. */
    static final class Relay {
        /** A requested data connection that has not arrived by then is counted as lost. */
        static final long REQUEST_EXPIRY_NANOS = TimeUnit.SECONDS.toNanos(10);
        static final int MAX_HANDOVER_ATTEMPTS = 3;

        final Arps options;
        final Authenticator auth;
        final Tls.Identity tls;
        final Admission admission;
        final AuthThrottle throttle = new AuthThrottle();
        final Refusals refusals = new Refusals();
        final Map<String, ClientSession> clients = new ConcurrentHashMap<>();
        /** Extra tokens (arpc --token) of registered clients; a client's id is looked up in {@link #clients}. */
        final Map<String, ClientSession> tokens = new ConcurrentHashMap<>();
        /** Held while deciding who gets an id or a token, so two registrations cannot both win. */
        final Object registrations = new Object();
        final SecureRandom random = new SecureRandom();
        private final CountDownLatch closed = new CountDownLatch(1);
        EventLoopGroup loops;
        TcpPorts tcpPorts;
        ScheduledExecutorService maintenance;
        private ServerSocket controlServer;
        private List<ServerSocketChannel> proxyServers;
        private List<ServerSocketChannel> publicServers;
        private final List<Tls.Front> tlsFronts = new ArrayList<>();
        private int proxyPort;
        private int publicPort;
        private volatile boolean closing;

        Relay(Arps options, Authenticator auth, Tls.Identity tls) {
            this.options = options;
            this.auth = auth;
            this.tls = tls;
            this.admission = new Admission(options.maxHandshakes, options.maxHandshakesPerIp, refusals);
        }

        void start() throws IOException, PortInUse {
            InetAddress address = InetAddress.getByName(options.bind);
            controlServer = tls != null ? tls.context().getServerSocketFactory().createServerSocket() : new ServerSocket();
            controlServer.setReuseAddress(true);
            bind("control", () -> controlServer.bind(new InetSocketAddress(address, options.controlPort), 128), options.controlPort);
            loops = new EventLoopGroup("arps-io", options.ioThreads == null ? EventLoopGroup.defaultSize() : options.ioThreads);
            maintenance = Executors.newSingleThreadScheduledExecutor(r -> {
                Thread t = new Thread(r, "arps-pool");
                t.setDaemon(true);
                return t;
            });
            proxyServers = openPort("proxy", address, options.proxyPort, tls != null, p -> proxyPort = p);
            publicServers = openPort("public", address, options.publicPort, options.tlsPublic, p -> publicPort = p);
            tcpPorts = new TcpPorts(this, options.tcpPorts == null ? null : TcpPorts.parseRange(options.tcpPorts), address);
            maintenance.scheduleWithFixedDelay(this::topUpPools, 2, 2, TimeUnit.SECONDS);
            Thread.ofPlatform().daemon().name("arps-control-accept").start(this::acceptControl);
            Acceptor.listen(loops, proxyServers, "proxy", (loop, ch) -> {
                InetSocketAddress from = admit(ch, "proxy");
                if (from != null) new DataConnHandshake(this, loop, ch, from.getAddress());
            });
            Acceptor.listen(loops, publicServers, "public", (loop, ch) -> {
                InetSocketAddress from = admit(ch, "public");
                if (from != null) new Visitor(this, loop, ch, from);
            });
        }

        /** The connection's peer if it may start a handshake; otherwise it is closed. */
        private InetSocketAddress admit(SocketChannel ch, String port) {
            InetSocketAddress peer = Tls.peerOf(ch);
            if (peer != null && admission.enter(peer.getAddress(), port)) return peer;
            Sockets.closeQuietly(ch);
            return null;
        }

        /**
         * The event-loop listeners of a port. With TLS they listen on loopback only, behind a TLS front
         * on the real address; {@code actualPort} learns the port visitors or clients use.
         */
        private List<ServerSocketChannel> openPort(String name, InetAddress address, int port, boolean withTls,
                                                   java.util.function.IntConsumer actualPort) throws IOException, PortInUse {
            if (!withTls) {
                List<ServerSocketChannel> servers = openListeners(name, address, port);
                actualPort.accept(servers.get(0).socket().getLocalPort());
                return servers;
            }
            ServerSocket external = new ServerSocket();
            external.setReuseAddress(true);
            bind(name, () -> external.bind(new InetSocketAddress(address, port), 1024), port);
            List<ServerSocketChannel> inner = openListeners(name + " (behind TLS)", InetAddress.getLoopbackAddress(), 0);
            tlsFronts.add(new Tls.Front(tls.context(), external, (InetSocketAddress) inner.get(0).getLocalAddress(),
                    options.headTimeout * 1000, admission, name));
            actualPort.accept(external.getLocalPort());
            return inner;
        }

        /** Logs a refusal of some kind, rate-limited per kind. */
        void refused(String kind, String message) { refusals.log(kind, message); }

        /** Adds all of a client's extra tokens, or none if one is taken or invalid. */
        AddTokensResult addTokens(ClientSession session, List<String> wanted) {
            if (wanted.size() > Protocol.MAX_TOKENS) return new AddTokensResult(false, "at most " + Protocol.MAX_TOKENS + " extra tokens");
            for (String t : wanted) {
                if (!Protocol.validClientId(t)) {
                    return new AddTokensResult(false, "invalid token: use 1-128 characters from A-Z a-z 0-9 . _ ~ -");
                }
            }
            synchronized (registrations) {
                long fresh = wanted.stream().filter(t -> !t.equals(session.id) && !session.tokens.contains(t)).distinct().count();
                if (session.tokens.size() + fresh > Protocol.MAX_TOKENS) {
                    return new AddTokensResult(false, "at most " + Protocol.MAX_TOKENS + " extra tokens per client");
                }
                for (String t : wanted) {
                    ClientSession holder = route(t);
                    if (holder != null && holder != session && !holder.isClosed()) {
                        Log.warn("client " + Log.mask(session.id) + " asked for token " + Log.mask(t) + ", which another client holds; refused");
                        return new AddTokensResult(false, "token " + t + " is in use by another client");
                    }
                    if (!t.equals(session.id) && auth.listed(t)) {
                        return new AddTokensResult(false, "token " + t + " is the id of another client of this relay");
                    }
                }
                for (String t : wanted) {
                    if (t.equals(session.id)) continue;
                    tokens.put(t, session);
                    session.tokens.add(t);
                }
            }
            Log.info("client " + Log.mask(session.id) + " also answers to " + wanted.size() + " more token" + (wanted.size() == 1 ? "" : "s"));
            return new AddTokensResult(true, null);
        }

        /** The client a visitor's token names: by its id, else by one of its extra tokens. */
        ClientSession route(String token) {
            ClientSession s = clients.get(token);
            return s != null ? s : tokens.get(token);
        }

        private interface Binder { void bind() throws IOException; }

        private static void bind(String name, Binder binder, int port) throws IOException, PortInUse {
            try {
                binder.bind();
            } catch (BindException e) {
                throw new PortInUse("cannot listen on the " + name + " port " + port + ": " + e.getMessage());
            }
        }

        /**
         * Listening sockets for a port: one per event loop where SO_REUSEPORT allows it (no loop wakes
         * up for a connection another one takes), else one shared by all loops.
         */
        private List<ServerSocketChannel> openListeners(String name, InetAddress address, int port) throws IOException, PortInUse {
            List<ServerSocketChannel> servers = new ArrayList<>();
            try {
                int count = loops.size() > 1 && reusePortSupported() ? loops.size() : 1;
                if (count > 1 && port != 0) {
                    // Sockets with SO_REUSEPORT share a port with each other, also across processes of
                    // the same user: make sure no other program (say, a forgotten arps) holds it first.
                    ServerSocketChannel probe = ServerSocketChannel.open();
                    try (probe) {
                        probe.setOption(StandardSocketOptions.SO_REUSEADDR, true);
                        bind(name, () -> probe.bind(new InetSocketAddress(address, port)), port);
                    }
                }
                int actual = port;
                for (int i = 0; i < count; i++) {
                    ServerSocketChannel server = ServerSocketChannel.open();
                    servers.add(server);
                    Sockets.tuneListener(server);
                    if (count > 1) server.setOption(StandardSocketOptions.SO_REUSEPORT, true);
                    int bindPort = actual;
                    bind(name, () -> server.bind(new InetSocketAddress(address, bindPort), 1024), port);
                    actual = server.socket().getLocalPort();
                }
                return servers;
            } catch (IOException | PortInUse | RuntimeException e) {
                servers.forEach(Sockets::closeQuietly);
                throw e;
            }
        }

        private static boolean reusePortSupported() {
            try (ServerSocketChannel ch = ServerSocketChannel.open()) {
                return ch.supportedOptions().contains(StandardSocketOptions.SO_REUSEPORT);
            } catch (IOException e) {
                return false;
            }
        }

        int controlPort() { return controlServer.getLocalPort(); }
        int proxyPort() { return proxyPort; }
        int publicPort() { return publicPort; }

        void awaitClosed() throws InterruptedException { closed.await(); }

        void close() {
            if (closing) return;
            closing = true;
            Sockets.closeQuietly(controlServer);
            if (proxyServers != null) proxyServers.forEach(Sockets::closeQuietly);
            if (publicServers != null) publicServers.forEach(Sockets::closeQuietly);
            tlsFronts.forEach(Tls.Front::close);
            for (ClientSession s : clients.values()) s.close("relay shutting down");
            if (tcpPorts != null) tcpPorts.closeAll();
            if (maintenance != null) maintenance.shutdownNow();
            if (loops != null) loops.close();
            closed.countDown();
        }

        String newConnectionId() {
            byte[] b = new byte[16];
            random.nextBytes(b);
            return HexFormat.of().formatHex(b);
        }

        private void topUpPools() {
            for (ClientSession s : clients.values()) s.tick();
            tcpPorts.expire();
            refusals.flush();
        }

        // --- accepting

        private void acceptControl() {
            Sockets.acceptEach(controlServer, "control", socket -> {
                if (admission.enter(socket.getInetAddress(), "control")) {
                    Thread.ofVirtual().name("arps-control").start(() -> new ControlConnection(this, socket).serve());
                } else {
                    Sockets.closeQuietly(socket);
                }
            });
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Control connections: few and chatty only at start, so a virtual thread each with blocking I/O.

    static final class ControlConnection {
        private final Relay relay;
        private final Socket socket;
        private final InetAddress address;
        private final String peer;
        private boolean admitted = true; // counted by the relay's admission until registered or gone
        private Message early;           // a frame that came with Register and is not Hello

        ControlConnection(Relay relay, Socket socket) {
            this.relay = relay;
            this.socket = socket;
            this.address = socket.getInetAddress();
            this.peer = address.getHostAddress() + ":" + socket.getPort();
        }

        void serve() {
            ClientSession session = null;
            String reason = "disconnected";
            // The whole handshake has one deadline: a per-read timeout alone would let a client drip bytes forever.
            var deadline = relay.maintenance.schedule(() -> Sockets.closeQuietly(socket), relay.options.headTimeout, TimeUnit.SECONDS);
            try {
                Sockets.tune(socket);
                socket.setSoTimeout(relay.options.headTimeout * 1000);
                DataInputStream in = new DataInputStream(new BufferedInputStream(socket.getInputStream(), 8192));
                OutputStream out = socket.getOutputStream();
                session = register(in, out, deadline);
                if (session == null) return;
                // The original arpc never writes after Register: only TCP keep-alive can tell it is gone.
                socket.setSoTimeout(session.modern ? relay.options.clientTimeout * 1000 : 0);
                if (early != null) handle(session, early);
                while (!session.isClosed()) handle(session, Frames.read(in));
            } catch (SocketTimeoutException e) {
                reason = session == null ? "no registration within " + relay.options.headTimeout + " s"
                        : "silent for " + relay.options.clientTimeout + " s";
            } catch (EOFException e) {
                reason = "disconnected";
            } catch (ProtocolException e) {
                reason = "protocol error: " + e.getMessage();
                relay.refused("control-protocol", "control connection from " + peer + ": " + e.getMessage() + "; closed it");
            } catch (IOException e) {
                reason = deadline.isDone() && !deadline.isCancelled() && session == null
                        ? "no registration within " + relay.options.headTimeout + " s" : "connection error: " + e.getMessage();
            } finally {
                deadline.cancel(false);
                leaveAdmission();
                if (session != null) {
                    session.close(reason);
                } else {
                    if (reason.startsWith("no registration")) relay.refused("control-slow", "closed a control connection from " + peer + ": " + reason);
                    else Log.debug("control connection from " + peer + " closed before registering: " + reason);
                    Sockets.closeQuietly(socket);
                }
            }
        }

        private void leaveAdmission() {
            if (admitted) {
                admitted = false;
                relay.admission.leave(address);
            }
        }

        /**
         * Register, then (with a secret) Challenge and Auth, then the decision who holds the id. Returns
         * the registered session, or null after telling the client why not.
         */
        private ClientSession register(DataInputStream in, OutputStream out, java.util.concurrent.Future<?> deadline) throws IOException {
            Message first = Frames.read(in);
            if (!(first instanceof Register register)) {
                throw new ProtocolException("expected Register, got " + first.getClass().getSimpleName());
            }
            String id = register.clientId();
            if (!Protocol.validClientId(id)) {
                Log.warn("refused registration from " + peer + ": invalid client id");
                Frames.write(out, new RegisterResult(false, "invalid client id: use 1-128 characters from A-Z a-z 0-9 . _ ~ -"));
                return null;
            }
            Hello hello = readHello(in);
            byte[] sessionKey = null;
            boolean provedOwnSecret = false;
            if (relay.auth.required()) {
                if (hello == null || !Proofs.validNonce(hello.nonce())) {
                    relay.refused("auth", "refused registration of client " + Log.mask(id) + " from " + peer
                            + ": the relay requires a secret and this client cannot authenticate (an original arpc?)");
                    refuse(out, hello, "this relay requires authentication: run arp's arpc with --secret (or ARP_SECRET)", false);
                    return null;
                }
                byte[] key = relay.auth.keyFor(id);
                // An id with no secret gets a challenge like any other, so ids cannot be probed.
                byte[] proving = key != null ? key : Proofs.randomBytes(32);
                String relayNonce = Proofs.nonce();
                Frames.write(out, new Challenge(relayNonce, Proofs.relay(proving, id, hello.nonce(), relayNonce)));
                Message answer;
                try {
                    answer = Frames.read(in);
                } catch (EOFException e) {
                    answer = null; // our arpc leaves when the relay's proof does not match its secret
                }
                if (answer != null && !(answer instanceof Auth)) {
                    throw new ProtocolException("expected Auth, got " + answer.getClass().getSimpleName());
                }
                if (key == null || !(answer instanceof Auth auth) || !Proofs.same(Proofs.client(key, id, relayNonce, hello.nonce()), auth.proof())) {
                    deadline.cancel(false);
                    long delay = relay.throttle.fail(address);
                    Log.warn("authentication failed for client " + Log.mask(id) + " from " + address.getHostAddress()
                            + (answer == null ? ": it left after the challenge (its secret differs from the relay's)" : "")
                            + " (" + relay.throttle.failures(address) + " in a row from this address"
                            + (answer == null ? ")" : "; answering in " + delay + " ms)"));
                    if (answer == null) return null;
                    try {
                        Thread.sleep(delay);
                    } catch (InterruptedException e) {
                        return null;
                    }
                    refuse(out, hello, "authentication failed: the relay does not accept this secret for client id " + id, false);
                    return null;
                }
                sessionKey = Proofs.sessionKey(key, relayNonce, hello.nonce());
                provedOwnSecret = relay.auth.listed(id);
            }

            if (hello == null && early == null && relay.clients.containsKey(id)) {
                hello = awaitHello(in, 1000); // the id is live: only Hello's owner tag can show a restart of the same install
            }
            ClientSession session = new ClientSession(relay, id, socket, out, peer, hello != null, sessionKey,
                    hello == null ? null : hello.owner());
            ClientSession old;
            synchronized (relay.registrations) {
                old = relay.clients.get(id);
                if (old != null && old.isClosed()) old = null;
                if (old == null && relay.clients.size() >= relay.options.maxClients) {
                    relay.refused("full", "refused registration of client " + Log.mask(id) + " from " + peer + ": "
                            + relay.options.maxClients + " clients already (--max-clients)");
                    refuse(out, hello, "the relay is full (" + relay.options.maxClients + " clients); try again later", true);
                    return null;
                }
                ClientSession tokenHolder = relay.tokens.get(id);
                if (tokenHolder != null && !tokenHolder.isClosed()) {
                    Log.warn("refused registration of client " + Log.mask(id) + " from " + peer + ": it is an extra token of client "
                            + Log.mask(tokenHolder.id) + " from " + tokenHolder.peer);
                    refuse(out, hello, "client id " + id + " is in use as another client's token; choose another --client-id", true);
                    return null;
                }
                boolean sameInstall = old != null && old.owner != null && Proofs.same(old.owner, session.owner);
                if (old != null && !provedOwnSecret && !sameInstall) {
                    // The holder's address stays in our log: anyone who knows a token could otherwise learn it.
                    Log.warn("refused registration of client " + Log.mask(id) + " from " + peer + ": the id is in use by a client from "
                            + old.peer + " and this one cannot prove it is the same install or the id's owner");
                    refuse(out, hello, "client id " + id + " is in use by another arpc; stop that one or choose another --client-id", true);
                    return null;
                }
                // queued before the session is visible, so RegisterResult precedes any pool request
                session.send(new RegisterResult(true, null));
                if (session.modern) session.send(ourHello());
                session.startWriter();
                relay.clients.put(id, session);
            }
            deadline.cancel(false);
            leaveAdmission();
            if (old != null) {
                Log.warn("client " + Log.mask(id) + " registered again from " + peer + " ("
                        + (provedOwnSecret ? "it proved the id's own secret" : "the same install") + "); the registration from "
                        + old.peer + " is closed");
                old.close("replaced by a new registration");
            }
            Log.info("client " + Log.mask(id) + " registered from " + peer
                    + (session.modern ? " (arp protocol " + Protocol.PROTOCOL_VERSION + ")" : " (original protocol)")
                    + (sessionKey != null ? ", authenticated" : ""));
            session.topUp();
            return session;
        }

        /**
         * Our arpc sends Hello in the same write as Register; the original sends nothing more. Waits for
         * it only where it matters: authentication needs its nonce.
         */
        private Hello readHello(DataInputStream in) throws IOException {
            if (in.available() > 0) return asHello(Frames.read(in));
            return relay.auth.required() ? awaitHello(in, 2000) : null; // else a late Hello is welcome in the main loop
        }

        private Hello awaitHello(DataInputStream in, int millis) throws IOException {
            int before = socket.getSoTimeout();
            socket.setSoTimeout(millis);
            try {
                return asHello(Frames.read(in));
            } catch (SocketTimeoutException e) {
                return null;
            } finally {
                socket.setSoTimeout(before);
            }
        }

        /** Hello, or null with any other frame kept for after the registration. */
        private Hello asHello(Message m) {
            if (m instanceof Hello h) return h;
            early = m;
            return null;
        }

        /** A refusal; {@code retry} tells our arpc that trying later may work (never sent to the original). */
        private static void refuse(OutputStream out, Hello hello, String why, boolean retry) throws IOException {
            Frames.write(out, new RegisterResult(false, why, retry && hello != null ? Boolean.TRUE : null));
        }

        private Hello ourHello() {
            return new Hello(Protocol.PROTOCOL_VERSION, Protocol.OUR_FEATURES, relay.publicPort(), null, null,
                    relay.options.tlsPublic ? Boolean.TRUE : null, relay.options.domain);
        }

        private void handle(ClientSession session, Message m) throws IOException {
            switch (m) {
                case Ping p -> session.send(new Pong());
                case TcpPort t -> {
                    TcpPortResult result = relay.tcpPorts.claim(session, t.port());
                    if (result.success()) {
                        Log.info("client " + Log.mask(session.id) + " has TCP port " + result.port());
                    } else {
                        Log.warn("client " + Log.mask(session.id) + " asked for TCP port " + t.port() + ": " + result.error());
                    }
                    session.send(result);
                }
                case AddTokens t -> session.send(relay.addTokens(session, t.tokens()));
                case Hello h -> {
                    if (!session.modern) {
                        session.modern = true;
                        session.send(ourHello());
                        socket.setSoTimeout(relay.options.clientTimeout * 1000);
                    }
                }
                default -> throw new ProtocolException("unexpected " + m.getClass().getSimpleName() + " on the control connection");
            }
        }
    }

    // ------------------------------------------------------------------------------------------------

    /**
     * One registered client: its control connection and its pool of idle data connections. The pool
     * state is guarded by the session's monitor; channel work happens on event loops, outside it.
     */
    static final class ClientSession {
        final Relay relay;
        final String id;
        final String peer;
        /** Keys the proofs its data connections must carry; null on an open relay. */
        private final byte[] sessionKey;
        /** The install's tag from Hello ({@link Proofs#ownerTag}); null for the original arpc. */
        final String owner;
        final java.util.Set<String> tokens = ConcurrentHashMap.newKeySet();
        private final Socket socket;
        private final OutputStream out;
        private final BlockingQueue<Message> outbox = new ArrayBlockingQueue<>(4096);
        private Thread writer;
        volatile boolean modern;

        private final ArrayDeque<PooledConn> idle = new ArrayDeque<>();
        private final Map<String, Long> requested = new LinkedHashMap<>();
        private final ArrayDeque<Visitor> waiting = new ArrayDeque<>();
        private volatile boolean closed;
        /** Connections kept beyond --pool-size: grown by visitors that found the pool empty, halved when calm. */
        private int extra;
        private boolean missedSinceTick;

        ClientSession(Relay relay, String id, Socket socket, OutputStream out, String peer, boolean modern,
                      byte[] sessionKey, String owner) {
            this.relay = relay;
            this.id = id;
            this.socket = socket;
            this.out = out;
            this.peer = peer;
            this.modern = modern;
            this.sessionKey = sessionKey;
            this.owner = owner;
        }

        boolean isClosed() { return closed; }

        void startWriter() {
            writer = Thread.ofVirtual().name("arps-control-writer").start(() -> {
                List<Message> batch = new ArrayList<>();
                try {
                    while (!closed) {
                        batch.add(outbox.take());
                        outbox.drainTo(batch);
                        Frames.write(out, batch.toArray(Message[]::new));
                        batch.clear();
                    }
                } catch (InterruptedException | IOException e) {
                    close("control connection write failed");
                }
            });
        }

        void send(Message m) {
            if (closed) return;
            if (!outbox.offer(m)) close("control connection not keeping up");
        }

        /** How many idle connections the pool aims for now. Hold the monitor. */
        private int target() { return relay.options.poolSize + extra; }

        private int maxIdle() { return Math.max(target() * 2, target() + 4); }

        /**
         * Every 2 s: a pool that no visitor found empty since the last tick shrinks its extra half, and
         * idle connections beyond the target are closed, oldest first.
         */
        void tick() {
            List<PooledConn> surplus = new ArrayList<>();
            synchronized (this) {
                if (closed) return;
                if (!missedSinceTick) extra /= 2;
                missedSinceTick = false;
                while (idle.size() > target()) {
                    PooledConn c = idle.pollFirst();
                    if (c.state.compareAndSet(DataConnState.IDLE, DataConnState.DEAD)) surplus.add(c);
                }
            }
            for (PooledConn c : surplus) c.loop.execute(c::close);
            topUp();
        }

        /** Requests as many data connections as the pool and the waiting visitors are short of. */
        void topUp() {
            List<String> ids = new ArrayList<>();
            synchronized (this) {
                if (closed) return;
                long now = System.nanoTime();
                requested.values().removeIf(t -> now - t > Relay.REQUEST_EXPIRY_NANOS);
                int want = target() + waiting.size() - idle.size() - requested.size();
                want = Math.min(want, 256 - requested.size()); // a bound on outstanding requests
                for (int i = 0; i < want; i++) {
                    String cid = relay.newConnectionId();
                    requested.put(cid, now);
                    ids.add(cid);
                }
            }
            for (String cid : ids) send(new RequestNewProxyConn(cid));
        }

        /** A visitor needs a data connection: a pooled one now, or the next one to arrive. */
        void dispatch(Visitor visitor) {
            PooledConn conn = null;
            boolean gone;
            boolean full = false;
            synchronized (this) {
                gone = closed;
                if (!gone) {
                    conn = takeIdle(visitor.loop);
                    if (conn == null) {
                        missedSinceTick = true;
                        extra = Math.min(extra + 1, Math.max(0, relay.options.poolMax - relay.options.poolSize));
                        full = waiting.size() >= relay.options.maxPending;
                        if (!full) waiting.addLast(visitor);
                    }
                }
            }
            if (gone) {
                visitor.fail(502, "tunnel client disconnected");
                return;
            }
            if (full) {
                Log.warn("client " + Log.mask(id) + ": " + relay.options.maxPending + " visitors already waiting; refusing one more");
                visitor.fail(503, "too many visitors are waiting for this tunnel");
                return;
            }
            topUp();
            if (conn != null) visitor.attach(conn);
        }

        /**
         * The newest idle connection (the least likely to have died), preferably one served by the
         * visitor's own event loop so that it need not move between selectors. Hold the monitor.
         */
        private PooledConn takeIdle(EventLoop preferred) {
            PooledConn c = takeIdleOn(preferred);
            return c != null ? c : takeIdleOn(null);
        }

        private PooledConn takeIdleOn(EventLoop only) {
            for (Iterator<PooledConn> it = idle.descendingIterator(); it.hasNext(); ) {
                PooledConn c = it.next();
                if (only != null && c.loop != only) continue;
                it.remove();
                if (c.state.compareAndSet(DataConnState.IDLE, DataConnState.TAKEN)) return c;
            }
            return null;
        }

        /**
         * A data connection arrived: it is this session's only if the session asked for exactly this id
         * (one-time, 128 random bits) and, on an authenticated session, it proves the session key.
         * Returns null if it was taken, else why not.
         */
        String offer(PooledConn conn, String proof) {
            synchronized (this) {
                if (closed) return "the client's session is closed";
                if (!requested.containsKey(conn.connId)) return "its connection id was not requested";
                if (sessionKey != null && !Proofs.same(Proofs.conn(sessionKey, conn.connId), proof)) {
                    return proof == null ? "no proof of the client's session key" : "a wrong proof of the client's session key";
                }
                requested.remove(conn.connId);
            }
            return place(conn) ? null : "the pool is full";
        }

        /** A data connection is free again (a stream ended cleanly, or it was never used): place or close it. */
        void reuse(PooledConn conn, ByteBuffer leftover) {
            if (leftover.hasRemaining()) {
                Log.warn("client " + Log.mask(id) + " sent bytes on an idle data connection; closed it");
                conn.close();
            } else if (place(conn)) {
                Log.log(Protocol.Level.TRACE, "data connection of client " + Log.mask(id) + " reused");
            } else {
                conn.close();
            }
        }

        /**
         * Gives a free data connection to the longest-waiting visitor, else to the idle pool. Returns
         * false if neither wants it (the session is closed or the pool is full).
         */
        private boolean place(PooledConn conn) {
            Visitor visitor;
            synchronized (this) {
                if (closed) return false;
                while ((visitor = waiting.pollFirst()) != null && visitor.isDone()) {
                    // a visitor that timed out while waiting
                }
                if (visitor == null) {
                    if (idle.size() >= maxIdle()) return false;
                    conn.state.set(DataConnState.IDLE);
                    conn.watchIdle(this);
                    idle.addLast(conn);
                    return true;
                }
                conn.state.set(DataConnState.TAKEN);
                conn.key.interestOps(0); // the visitor's loop takes the connection over
            }
            Visitor v = visitor;
            v.loop.execute(() -> v.attach(conn));
            return true;
        }

        void forgetIdle(PooledConn conn) {
            synchronized (this) {
                idle.remove(conn);
            }
            topUp();
        }

        synchronized void forgetWaiting(Visitor v) { waiting.remove(v); }

        void close(String reason) {
            List<PooledConn> idleConns;
            List<Visitor> visitors;
            synchronized (this) {
                if (closed) return;
                closed = true;
                idleConns = new ArrayList<>(idle);
                visitors = new ArrayList<>(waiting);
                idle.clear();
                waiting.clear();
                requested.clear();
            }
            relay.clients.remove(id, this);
            for (String t : tokens) relay.tokens.remove(t, this);
            relay.tcpPorts.detach(this);
            Log.info("client " + Log.mask(id) + " unregistered: " + reason);
            Sockets.closeQuietly(socket);
            if (writer != null) writer.interrupt();
            for (PooledConn c : idleConns) {
                if (c.state.compareAndSet(DataConnState.IDLE, DataConnState.DEAD)) c.loop.execute(c::close);
            }
            for (Visitor v : visitors) v.loop.execute(() -> v.fail(502, "tunnel client disconnected"));
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Data connections from clients

    /** Reads the first frame of a new connection on the proxy port. */
    static final class DataConnHandshake implements IoHandler {
        private final Relay relay;
        private final EventLoop loop;
        private final SocketChannel ch;
        private final InetAddress from;
        private final FrameReader reader = new FrameReader();
        private final Timer deadline;
        private final SelectionKey key;
        private boolean admitted = true;

        DataConnHandshake(Relay relay, EventLoop loop, SocketChannel ch, InetAddress from) throws IOException {
            this.relay = relay;
            this.loop = loop;
            this.ch = ch;
            this.from = from;
            this.key = loop.register(ch, SelectionKey.OP_READ, this);
            this.deadline = loop.schedule(relay.options.headTimeout * 1000L, () -> reject("no NewProxyConn within "
                    + relay.options.headTimeout + " s"));
        }

        @Override
        public void onReady(SelectionKey k) throws IOException {
            Message m = reader.read(ch);
            if (m == null) return;
            deadline.cancel();
            leaveAdmission();
            if (!(m instanceof NewProxyConn npc)) {
                throw new ProtocolException("expected NewProxyConn, got " + m.getClass().getSimpleName());
            }
            if (reader.hasLeftover()) throw new ProtocolException("bytes after NewProxyConn before a visitor");
            ClientSession session = relay.clients.get(npc.clientId());
            PooledConn conn = new PooledConn(loop, ch, key, npc.proxyConnId(), npc.wantsHandover(), npc.wantsReuse());
            String refusal = session == null ? "no client with this id is registered" : session.offer(conn, npc.proof());
            if (refusal == null) {
                Log.debug("new data connection for client " + Log.mask(npc.clientId())
                        + (conn.reusable ? " (reusable)" : conn.handover ? " (handover)" : " (original protocol)"));
            } else {
                // Also what a connection that arrives after its request expired sees: rate-limited, not an alarm.
                relay.refused("data", "refused data connection from " + Sockets.describe(ch) + " for client "
                        + Log.mask(npc.clientId()) + ": " + refusal);
                k.cancel();
                Sockets.closeQuietly(ch);
            }
        }

        private void leaveAdmission() {
            if (admitted) {
                admitted = false;
                relay.admission.leave(from);
            }
        }

        private void reject(String why) {
            leaveAdmission();
            relay.refused("data-protocol", "data connection from " + Sockets.describe(ch) + ": " + why + "; closed");
            key.cancel();
            Sockets.closeQuietly(ch);
        }

        @Override
        public void onFailure(Throwable error) {
            deadline.cancel();
            if (error instanceof ProtocolException) {
                reject(error.getMessage());
            } else {
                leaveAdmission();
                key.cancel();
                Sockets.closeQuietly(ch);
            }
        }
    }

    /** A data connection from a client, idle in its pool until a visitor takes it. */
    static final class PooledConn implements IoHandler {
        EventLoop loop;
        final SocketChannel ch;
        SelectionKey key;
        final String connId;
        final boolean handover;
        final boolean reusable;   // chunked streams: goes back to the pool after each visitor
        final java.util.concurrent.atomic.AtomicReference<DataConnState> state =
                new java.util.concurrent.atomic.AtomicReference<>(DataConnState.IDLE);
        private ClientSession session;

        PooledConn(EventLoop loop, SocketChannel ch, SelectionKey key, String connId, boolean handover, boolean reusable) {
            this.loop = loop;
            this.ch = ch;
            this.key = key;
            this.connId = connId;
            this.handover = handover;
            this.reusable = reusable;
        }

        /** While idle, the client sends nothing: readable means closed (or broken). */
        void watchIdle(ClientSession session) {
            this.session = session;
            key.attach(this);
            key.interestOps(SelectionKey.OP_READ);
        }

        @Override
        public void onReady(SelectionKey k) {
            if (!state.compareAndSet(DataConnState.IDLE, DataConnState.DEAD)) return;
            Log.debug("pooled connection of client " + Log.mask(session.id) + " closed while idle");
            close();
            session.forgetIdle(this);
        }

        @Override
        public void onFailure(Throwable error) {
            state.set(DataConnState.DEAD);
            close();
            if (session != null) session.forgetIdle(this);
        }

        /** Moves this connection to the given loop (the visitor's) under a new handler. Call on that loop. */
        void moveTo(EventLoop target, IoHandler handler, int ops) throws IOException {
            if (target == loop && key.isValid()) {
                key.attach(handler);
                key.interestOps(ops);
            } else {
                key.cancel();
                loop.wakeup(); // so the old loop lets go of the channel now, not at its next event
                loop = target;
                key = target.register(ch, ops, handler);
            }
        }

        void close() {
            key.cancel();
            Sockets.closeQuietly(ch);
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Visitors on the public port

    /**
     * A visitor: reads the HTTP request head (bounded in size and time), finds the client by token,
     * waits for a data connection, hands the visitor's bytes over and then splices the two sockets.
     */
    static final class Visitor implements IoHandler {
        final Relay relay;
        final EventLoop loop;
        final SocketChannel ch;
        private final SelectionKey key;
        private final String address;
        private final boolean raw;           // on a dedicated TCP port: no HTTP head, no HTTP errors
        private ByteBuffer head;
        private Timer timer;
        private ByteBuffer forward;          // rewritten head and any bytes after it
        private ClientSession session;
        private PooledConn handingOver;      // the connection a Handover is waiting on, if any
        private int attempts;
        private boolean done;
        private InetAddress admitted;        // counted by the relay's admission until the head is read

        Visitor(Relay relay, EventLoop loop, SocketChannel ch, InetSocketAddress from) throws IOException {
            this.relay = relay;
            this.loop = loop;
            this.ch = ch;
            this.address = Sockets.describe(from);
            this.admitted = from.getAddress();
            this.raw = false;
            this.head = ByteBuffer.allocate(2048);
            this.key = loop.register(ch, SelectionKey.OP_READ, this);
            this.timer = loop.schedule(relay.options.headTimeout * 1000L, () -> fail(408, "request head not received in time"));
        }

        /** A visitor on a client's dedicated TCP port: the port names the client, the bytes stay untouched. */
        Visitor(Relay relay, EventLoop loop, SocketChannel ch, ClientSession session) throws IOException {
            this.relay = relay;
            this.loop = loop;
            this.ch = ch;
            this.address = Sockets.describe(ch);
            this.raw = true;
            this.session = session;
            this.forward = ByteBuffer.allocate(0);
            this.key = loop.register(ch, 0, this);
            Log.debug("TCP visitor " + address + " → client " + Log.mask(session.id));
            waitForConnection();
        }

        boolean isDone() { return done; }

        @Override
        public void onReady(SelectionKey k) throws IOException {
            if (done || forward != null) return;
            int maxHead = relay.options.maxHead;
            if (!head.hasRemaining()) {
                if (head.capacity() >= maxHead) {
                    fail(431, "request head too large");
                    return;
                }
                head = ByteBuffer.allocate(Math.min(head.capacity() * 4, maxHead)).put(head.flip());
            }
            int n = ch.read(head);
            if (n < 0) {
                finish(true);
                return;
            }
            int end = RequestHead.findEnd(head.array(), head.position());
            if (end < 0) {
                if (head.position() >= maxHead) fail(431, "request head too large");
                return;
            }
            route(end);
        }

        private void route(int end) {
            leaveAdmission();
            RequestHead parsed;
            try {
                parsed = RequestHead.parse(head.array(), end, relay.options.domain);
            } catch (RequestHead.BadRequest e) {
                fail(400, e.getMessage());
                return;
            }
            if (parsed.token() == null) {
                fail(400, "missing token (add ?token=<id> to the URL or send an X-Arp-Token header"
                        + (relay.options.domain == null ? "" : ", or use <id>." + relay.options.domain) + ")");
                return;
            }
            session = relay.route(parsed.token());
            if (session == null) {
                Log.debug("visitor " + address + ": no tunnel for token " + Log.mask(parsed.token()));
                fail(404, "no tunnel for this token");
                return;
            }
            if (parsed.crossTunnelFromAPage()) {
                // All tunnels of a relay without --domain share one browser origin: a page of one tunnel
                // must not read another with the visitor's cookies.
                fail(403, "a page may not call another tunnel (use --domain to give each tunnel its own origin)");
                return;
            }
            if (parsed.isBrowserNavigationWithQueryToken() && isLocalPath(parsed.target())) {
                redirectWithCookie(parsed);
                return;
            }
            byte[] rest = java.util.Arrays.copyOfRange(head.array(), end, head.position());
            forward = ByteBuffer.allocate(parsed.bytes().length + rest.length).put(parsed.bytes()).put(rest).flip();
            head = null;
            key.interestOps(0); // the rest of the visitor's bytes wait in the kernel until the splice
            timer.cancel();
            Log.debug("visitor " + address + " → client " + Log.mask(session.id) + ": " + parsed.method() + " " + parsed.path());
            waitForConnection();
        }

        /**
         * A browser opened a link with ?token=: answer it here with the same URL minus the token and a
         * cookie that carries the token, so the page's own requests (scripts, styles, fetch) that know
         * nothing of tokens reach the same tunnel, and the token does not linger in the address bar,
         * history or Referer headers.
         */
        private void redirectWithCookie(RequestHead parsed) {
            String cookie = RequestHead.COOKIE + "=" + parsed.token() + "; Path=/; HttpOnly; SameSite=Lax"
                    + (relay.options.tlsPublic ? "; Secure" : "");
            Log.debug("visitor " + address + ": redirected to " + parsed.target() + " with the token in a cookie");
            answer(302, List.of("Location: " + parsed.target(), "Set-Cookie: " + cookie, "Cache-Control: no-store",
                    "Referrer-Policy: no-referrer"), new byte[0]);
        }

        /**
         * A target that stays on this host: "//evil.example/x" or "/\\evil.example" in a Location
         * header would send the browser elsewhere, so such a request is forwarded, not redirected.
         */
        private static boolean isLocalPath(String target) {
            return target.startsWith("/") && !target.startsWith("//") && !target.startsWith("/\\");
        }

        private void leaveAdmission() {
            if (admitted != null) {
                relay.admission.leave(admitted);
                admitted = null;
            }
        }

        private void waitForConnection() {
            timer = loop.schedule(relay.options.pendingTimeout * 1000L, () -> {
                session.forgetWaiting(this);
                fail(504, "tunnel client did not provide a connection in time");
            });
            session.dispatch(this);
        }

        /** Called on this visitor's loop with a data connection taken for it. */
        void attach(PooledConn conn) {
            if (!loop.inLoop()) {
                loop.execute(() -> attach(conn));
                return;
            }
            if (done) { // timed out or failed meanwhile: the connection is unused, so it serves the next one
                session.reuse(conn, ByteBuffer.allocate(0));
                return;
            }
            try {
                if (conn.handover) {
                    handingOver = conn;
                    new Handover(this, conn).start();
                } else {
                    spliceWith(conn, null, forward.duplicate());
                }
            } catch (IOException e) {
                conn.close();
                retry("data connection failed: " + e.getMessage());
            }
        }

        /**
         * Splices the visitor with the data connection. {@code fromClient} are bytes the client sent
         * after ProxyStarted: on a reusable connection they are chunks still to be parsed, otherwise raw.
         */
        void spliceWith(PooledConn conn, ByteBuffer fromClient, ByteBuffer toClient) throws IOException {
            conn.moveTo(loop, null, 0); // may fail: the caller then retries with another connection
            done = true;
            handingOver = null;
            timer.cancel();
            Splice splice = Splice.between(loop, ch, conn.ch).toSecond(toClient);
            if (conn.reusable) {
                splice.secondFramed(fromClient, leftover -> session.reuse(conn, leftover));
            } else {
                splice.toFirst(fromClient);
            }
            splice.start();
        }

        /** The data connection died before answering: try another one while time remains. */
        void retry(String why) {
            handingOver = null;
            if (done) return;
            Log.debug("visitor " + address + ": " + why + "; retrying");
            if (++attempts >= Relay.MAX_HANDOVER_ATTEMPTS) {
                fail(502, "tunnel client did not answer");
                return;
            }
            session.dispatch(this);
        }

        /** Answers with a short plain-text error and closes. Runs on this loop. */
        void fail(int status, String message) {
            if (!loop.inLoop()) {
                loop.execute(() -> fail(status, message));
                return;
            }
            if (done) return;
            if (raw) { // not HTTP: all a raw TCP client can be told is a closed connection
                if (handingOver != null) handingOver.close();
                Log.debug("TCP visitor " + address + ": " + message);
                finish(false);
                return;
            }
            Log.debug("visitor " + address + ": " + status + " " + message);
            answer(status, List.of("Content-Type: text/plain; charset=utf-8"), ("arp: " + message + "\n").getBytes(StandardCharsets.UTF_8));
        }

        /** Writes an answer of arps's own and closes. */
        private void answer(int status, List<String> headers, byte[] body) {
            done = true;
            leaveAdmission();
            if (timer != null) timer.cancel();
            if (handingOver != null) handingOver.close();
            StringBuilder text = new StringBuilder("HTTP/1.1 ").append(status).append(' ').append(reason(status)).append("\r\n");
            for (String h : headers) text.append(h).append("\r\n");
            text.append("Content-Length: ").append(body.length).append("\r\nConnection: close\r\n\r\n");
            byte[] headBytes = text.toString().getBytes(StandardCharsets.ISO_8859_1);
            ByteBuffer response = ByteBuffer.allocate(headBytes.length + body.length).put(headBytes).put(body).flip();
            try {
                ch.write(response); // a few hundred bytes always fit in an empty send buffer
                ch.shutdownOutput();
                new Drain(loop, ch, key).start();
            } catch (IOException e) {
                finish(true);
            }
        }

        private void finish(boolean abort) {
            done = true;
            leaveAdmission();
            if (timer != null) timer.cancel();
            key.cancel();
            if (abort) Sockets.abort(ch); else Sockets.closeQuietly(ch);
        }

        @Override
        public void onFailure(Throwable error) {
            if (session != null) session.forgetWaiting(this);
            finish(true);
        }

        static String reason(int status) {
            return switch (status) {
                case 302 -> "Found";
                case 400 -> "Bad Request";
                case 403 -> "Forbidden";
                case 404 -> "Not Found";
                case 408 -> "Request Timeout";
                case 431 -> "Request Header Fields Too Large";
                case 502 -> "Bad Gateway";
                case 503 -> "Service Unavailable";
                case 504 -> "Gateway Timeout";
                default -> "Error";
            };
        }
    }

    /**
     * After an error answer: read and discard what the visitor still sends (bounded), so that closing
     * does not reset the connection before the visitor has read the answer.
     */
    static final class Drain implements IoHandler {
        private final EventLoop loop;
        private final SocketChannel ch;
        private final SelectionKey key;
        private Timer timer;
        private long discarded;

        Drain(EventLoop loop, SocketChannel ch, SelectionKey key) {
            this.loop = loop;
            this.ch = ch;
            this.key = key;
        }

        void start() {
            key.attach(this);
            key.interestOps(SelectionKey.OP_READ);
            timer = loop.schedule(2000, this::close);
        }

        @Override
        public void onReady(SelectionKey k) throws IOException {
            ByteBuffer scratch = loop.buffers.take();
            try {
                int n = ch.read(scratch);
                discarded += Math.max(n, 0);
                if (n < 0 || discarded > 1 << 20) close();
            } finally {
                loop.buffers.give(scratch);
            }
        }

        private void close() {
            timer.cancel();
            key.cancel();
            Sockets.closeQuietly(ch);
        }

        @Override
        public void onFailure(Throwable error) { close(); }
    }

    /**
     * Handover on a connection that asked for it: send StartProxy and the visitor's bytes, wait for the
     * client's answer, then splice. If the connection dies first, the visitor is retried elsewhere.
     */
    static final class Handover implements IoHandler {
        private final Visitor visitor;
        private final PooledConn conn;
        private final ByteBuffer out;
        private final FrameReader reader = new FrameReader();

        Handover(Visitor visitor, PooledConn conn) {
            this.visitor = visitor;
            this.conn = conn;
            byte[] start = Frames.encode(new StartProxy(visitor.address));
            ByteBuffer fwd = visitor.forward.duplicate();
            int chunkHeader = conn.reusable && fwd.hasRemaining() ? 4 : 0; // the visitor's first bytes, as a chunk
            this.out = ByteBuffer.allocate(start.length + chunkHeader + fwd.remaining()).put(start);
            if (chunkHeader > 0) out.putInt(fwd.remaining());
            out.put(fwd).flip();
        }

        void start() throws IOException {
            conn.moveTo(visitor.loop, this, SelectionKey.OP_READ);
            writeMore();
        }

        private void writeMore() throws IOException {
            conn.ch.write(out);
            conn.key.interestOps(out.hasRemaining() ? SelectionKey.OP_READ | SelectionKey.OP_WRITE : SelectionKey.OP_READ);
        }

        @Override
        public void onReady(SelectionKey k) throws IOException {
            if (visitor.isDone()) { // the visitor timed out meanwhile
                conn.close();
                return;
            }
            if (k.isWritable()) writeMore();
            if (!k.isReadable()) return;
            Message m = reader.read(conn.ch);
            if (m == null) return;
            switch (m) {
                case ProxyStarted s -> visitor.spliceWith(conn, reader.leftover(), out.hasRemaining() ? out : null);
                case ProxyFailed f -> {
                    String why = f.error() == null ? "no reason given" : f.error();
                    Log.info("client " + Log.mask(visitor.session.id) + " could not reach its local service: "
                            + (why.length() > 200 ? why.substring(0, 200) + "…" : why).replaceAll("[^\\x20-\\x7e]", "?"));
                    conn.close();
                    visitor.fail(502, "the tunnel client could not reach its local service");
                }
                default -> throw new ProtocolException("unexpected " + m.getClass().getSimpleName() + " during handover");
            }
        }

        @Override
        public void onFailure(Throwable error) {
            conn.close();
            if (error instanceof ProtocolException) {
                Log.warn("client " + Log.mask(visitor.session.id) + ": " + error.getMessage());
                visitor.fail(502, "tunnel client did not answer");
            } else {
                visitor.retry("data connection closed before the handover was answered");
            }
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Dedicated TCP ports

    /**
     * Public ports for raw TCP, one per client that asks, from the --tcp-ports range. A port stays with
     * its client id while the client is registered and for a grace period after it leaves, so a client
     * that reconnects gets the same port back and its users' address keeps working.
     */
    static final class TcpPorts {
        static final long GRACE_NANOS = TimeUnit.SECONDS.toNanos(60);

        private final Relay relay;
        private final int low;
        private final int high;
        private final InetAddress address;
        private final Map<Integer, PortListener> byPort = new HashMap<>();

        TcpPorts(Relay relay, int[] range, InetAddress address) {
            this.relay = relay;
            this.low = range == null ? 0 : range[0];
            this.high = range == null ? -1 : range[1];
            this.address = address;
        }

        /** "20000-20100" or "20000" as {low, high}; null if malformed. */
        static int[] parseRange(String text) {
            var m = java.util.regex.Pattern.compile("(\\d{1,5})(?:-(\\d{1,5}))?").matcher(text.trim());
            if (!m.matches()) return null;
            int lo = Integer.parseInt(m.group(1));
            int hi = m.group(2) == null ? lo : Integer.parseInt(m.group(2));
            return lo >= 1 && hi <= 65535 && lo <= hi ? new int[] {lo, hi} : null;
        }

        synchronized TcpPortResult claim(ClientSession session, int wanted) {
            if (low == 0) return refused("this relay gives out no TCP ports (start arps with --tcp-ports LOW-HIGH)");
            if (wanted != 0 && (wanted < low || wanted > high)) {
                return refused("port " + wanted + " is outside the relay's range " + low + "-" + high);
            }
            PortListener own = null;
            for (PortListener l : byPort.values()) if (l.clientId.equals(session.id)) own = l;
            if (own != null && (wanted == 0 || wanted == own.port)) {
                own.session = session; // back within the grace period, or a second ask
                return new TcpPortResult(true, own.port, null);
            }
            if (wanted != 0 && byPort.containsKey(wanted)) return refused("port " + wanted + " is held by another client");
            if (own != null) release(own); // one port per client: asking for another gives the old one back
            int from = wanted != 0 ? wanted : low;
            int to = wanted != 0 ? wanted : high;
            for (int port = from; port <= to; port++) {
                if (byPort.containsKey(port)) continue;
                try {
                    PortListener l = new PortListener(relay, port, session, address);
                    byPort.put(port, l);
                    return new TcpPortResult(true, port, null);
                } catch (IOException e) {
                    if (wanted != 0) return refused("port " + wanted + " cannot be opened: " + e.getMessage());
                }
            }
            return refused("no free port left in " + low + "-" + high);
        }

        private static TcpPortResult refused(String why) { return new TcpPortResult(false, null, why); }

        /** The client left: its port waits for it for the grace period. */
        synchronized void detach(ClientSession session) {
            for (PortListener l : byPort.values()) {
                if (l.session == session) {
                    l.session = null;
                    l.detachedAt = System.nanoTime();
                }
            }
        }

        synchronized void expire() {
            long now = System.nanoTime();
            for (PortListener l : List.copyOf(byPort.values())) {
                if (l.session == null && now - l.detachedAt > GRACE_NANOS) {
                    Log.info("TCP port " + l.port + " of client " + Log.mask(l.clientId) + " released");
                    release(l);
                }
            }
        }

        private void release(PortListener l) {
            byPort.remove(l.port);
            l.close();
        }

        synchronized void closeAll() {
            for (PortListener l : List.copyOf(byPort.values())) release(l);
        }
    }

    /** One dedicated port: visitors accepted there go to whichever session of its client is current. */
    static final class PortListener {
        final int port;
        final String clientId;
        volatile ClientSession session;
        long detachedAt;
        private final ServerSocketChannel server;
        private final Relay relay;

        PortListener(Relay relay, int port, ClientSession session, InetAddress address) throws IOException {
            this.relay = relay;
            this.port = port;
            this.clientId = session.id;
            this.session = session;
            server = ServerSocketChannel.open();
            try {
                Sockets.tuneListener(server);
                server.bind(new InetSocketAddress(address, port), 1024);
                Acceptor.listen(relay.loops, List.of(server), "TCP " + port, (loop, ch) -> {
                    ClientSession s = this.session;
                    if (s == null || s.isClosed()) { // the client is away (grace period): nobody to serve this
                        Sockets.closeQuietly(ch);
                    } else {
                        new Visitor(relay, loop, ch, s);
                    }
                });
            } catch (IOException e) {
                Sockets.closeQuietly(server);
                throw e;
            }
        }

        void close() {
            Sockets.closeQuietly(server);
            relay.loops.wakeupAll(); // every loop watched the socket: the port is free only once all let go
        }
    }

    // ------------------------------------------------------------------------------------------------

    /**
     * The parts of an HTTP request head that routing needs. Only the request line is rebuilt (without
     * the token parameter); X-Arp-Token lines are dropped and arps's own cookie is taken out of Cookie
     * lines; every other byte is kept as sent.
     *
     * <p>The token comes from, in this order: the {@code token} query parameter, an X-Arp-Token header,
     * the Host header under {@code --domain}, the {@code arp_token} cookie.
     */
    record RequestHead(String method, String path, String target, String token, TokenSource source,
                       boolean navigation, String cookieToken, byte[] bytes) {
        static final String COOKIE = "arp_token";

        enum TokenSource { QUERY, HEADER, HOST, COOKIE }

        static final class BadRequest extends Exception {
            BadRequest(String message) { super(message); }
        }

        /**
         * A browser loading a page from a link with the token in it: a GET or HEAD that says it is a
         * navigation (Sec-Fetch-Mode, or an Accept that prefers HTML, for browsers without Fetch Metadata).
         * API clients (curl's Accept is *&#47;*) are never redirected.
         */
        /** A browser's request from a page (it has our cookie, it is no navigation) that names another tunnel. */
        boolean crossTunnelFromAPage() {
            return cookieToken != null && !cookieToken.isEmpty() && !navigation && source != TokenSource.COOKIE
                    && source != TokenSource.HOST && !cookieToken.equals(token);
        }

        boolean isBrowserNavigationWithQueryToken() {
            return source == TokenSource.QUERY && navigation && (method.equals("GET") || method.equals("HEAD"));
        }

        /** Index just past the blank line that ends the head, or -1. Accepts CRLF and bare LF. */
        static int findEnd(byte[] b, int length) {
            for (int i = 0; i < length; i++) {
                if (b[i] != '\n') continue;
                if (i + 1 < length && b[i + 1] == '\n') return i + 2;
                if (i + 2 < length && b[i + 1] == '\r' && b[i + 2] == '\n') return i + 3;
            }
            return -1;
        }

        static RequestHead parse(byte[] b, int end, String domain) throws BadRequest {
            int lineEnd = indexOf(b, (byte) '\n', 0, end);
            int textEnd = lineEnd > 0 && b[lineEnd - 1] == '\r' ? lineEnd - 1 : lineEnd;
            String requestLine = new String(b, 0, textEnd, StandardCharsets.ISO_8859_1);
            String[] parts = requestLine.split(" ", -1);
            if (parts.length != 3 || parts[0].isEmpty() || parts[1].isEmpty() || !isHttpVersion(parts[2])) {
                throw new BadRequest("not an HTTP/1.x request");
            }
            String method = parts[0];
            String target = parts[1];
            for (int i = 0; i < target.length(); i++) {
                char c = target.charAt(i);
                if (c <= 0x20 || c == 0x7f) throw new BadRequest("control characters in the request target");
            }
            String queryToken = null;
            int q = target.indexOf('?');
            String newTarget = target;
            if (q >= 0) {
                List<String> kept = new ArrayList<>();
                for (String pair : target.substring(q + 1).split("&", -1)) {
                    int eq = pair.indexOf('=');
                    String name = eq < 0 ? pair : pair.substring(0, eq);
                    if (name.equals("token")) {
                        if (queryToken == null && eq >= 0) queryToken = decode(pair.substring(eq + 1));
                    } else {
                        kept.add(pair);
                    }
                }
                String query = String.join("&", kept);
                newTarget = target.substring(0, q) + (query.isEmpty() ? "" : "?" + query);
            }
            ByteArrayOutputStream out = new ByteArrayOutputStream(end);
            out.writeBytes((method + " " + newTarget + " " + parts[2]).getBytes(StandardCharsets.ISO_8859_1));
            out.write(b, textEnd, lineEnd + 1 - textEnd);
            String headerToken = null;
            String hostToken = null;
            String cookieToken = null;
            boolean navigation = false;
            int pos = lineEnd + 1;
            while (pos < end) {
                int next = indexOf(b, (byte) '\n', pos, end);
                int stop = next < 0 ? end : next + 1;
                String line = new String(b, pos, stop - pos, StandardCharsets.ISO_8859_1);
                int colon = line.indexOf(':');
                String name = colon > 0 ? line.substring(0, colon).trim().toLowerCase(java.util.Locale.ROOT) : "";
                String value = colon > 0 ? line.substring(colon + 1).trim() : "";
                switch (name) {
                    case "x-arp-token" -> {
                        if (headerToken == null) headerToken = value;
                        pos = stop;
                        continue; // dropped
                    }
                    case "cookie" -> {
                        List<String> others = new ArrayList<>();
                        boolean ours = false;
                        for (String c : value.split(";")) {
                            String cookie = c.trim();
                            if (cookie.startsWith(COOKIE + "=")) {
                                ours = true;
                                if (cookieToken == null) cookieToken = cookie.substring(COOKIE.length() + 1);
                            } else if (!cookie.isEmpty()) {
                                others.add(cookie);
                            }
                        }
                        if (ours) {
                            if (!others.isEmpty()) {
                                String eol = line.endsWith("\r\n") ? "\r\n" : line.endsWith("\n") ? "\n" : "";
                                out.writeBytes((line.substring(0, colon) + ": " + String.join("; ", others) + eol)
                                        .getBytes(StandardCharsets.ISO_8859_1));
                            }
                            pos = stop;
                            continue;
                        }
                    }
                    case "host" -> hostToken = domain == null ? null : subdomainOf(value, domain);
                    case "sec-fetch-mode" -> navigation |= value.equalsIgnoreCase("navigate");
                    case "accept" -> navigation |= value.contains("text/html");
                    default -> { }
                }
                out.write(b, pos, stop - pos);
                pos = stop;
            }
            String path = q >= 0 ? target.substring(0, q) : target;
            TokenSource source = present(queryToken) ? TokenSource.QUERY : present(headerToken) ? TokenSource.HEADER
                    : present(hostToken) ? TokenSource.HOST : present(cookieToken) ? TokenSource.COOKIE : null;
            String token = source == null ? null : switch (source) {
                case QUERY -> queryToken;
                case HEADER -> headerToken;
                case HOST -> hostToken;
                case COOKIE -> cookieToken;
            };
            return new RequestHead(method, path, newTarget, token, source, navigation, cookieToken, out.toByteArray());
        }

        private static boolean present(String token) { return token != null && !token.isEmpty(); }

        /** "alice" for Host "alice.tunnel.example.com:17003" under domain "tunnel.example.com", else null. */
        static String subdomainOf(String host, String domain) {
            String h = host;
            int colon = h.lastIndexOf(':');
            if (colon > 0 && !h.endsWith("]")) h = h.substring(0, colon);
            if (h.endsWith(".")) h = h.substring(0, h.length() - 1);
            String suffix = "." + domain;
            if (h.length() <= suffix.length() || !h.regionMatches(true, h.length() - suffix.length(), suffix, 0, suffix.length())) return null;
            return h.substring(0, h.length() - suffix.length());
        }

        /** "HTTP/d.d" (no regex: this runs for every visitor). */
        private static boolean isHttpVersion(String v) {
            return v.length() == 8 && v.startsWith("HTTP/") && Character.isDigit(v.charAt(5)) && v.charAt(6) == '.'
                    && Character.isDigit(v.charAt(7));
        }

        private static String decode(String s) {
            try {
                return URLDecoder.decode(s, StandardCharsets.UTF_8);
            } catch (IllegalArgumentException e) {
                return s;
            }
        }

        private static int indexOf(byte[] b, byte v, int from, int to) {
            for (int i = from; i < to; i++) if (b[i] == v) return i;
            return -1;
        }
    }
}
