package arp.tests.support;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.Deque;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ThreadLocalRandom;
import java.util.stream.Stream;

/**
 * Everything one test starts, owned in one place. Register it per test with
 * {@code @RegisterExtension final TestEnv env = new TestEnv();}: after each test it prints the output of
 * every process it started if the test failed, then closes everything (processes, servers, sockets,
 * temp dirs) in reverse order, so no test leaks a process or a port into the next.
 */
public final class TestEnv implements AfterEachCallback {
    /** JVM start-up plus binding: generous for a loaded 2-core machine. */
    public static final Duration START = Duration.ofSeconds(30);
    public static final String LOG_LEVEL = System.getenv().getOrDefault("ARP_TEST_LOG_LEVEL", "info");

    private final Deque<AutoCloseable> owned = new ArrayDeque<>();
    private final List<Proc> procs = new ArrayList<>();
    private Path root;
    private HttpClient http;

    public record Relay(Proc proc, int controlPort, int proxyPort, int publicPort) {
        public String base() { return "http://127.0.0.1:" + publicPort; }
    }

    public record Client(Proc proc, String clientId, String publicUrl, JsonNode registered) {}

    public record Tunnel(Relay relay, Client client) {
        public String token() { return client.clientId(); }

        public int publicPort() { return relay.publicPort(); }

        /** {@code http://127.0.0.1:<public>/<pathAndQuery>} with {@code token=<id>} appended to the query. */
        public String url(String pathAndQuery) {
            return relay.base() + pathAndQuery + (pathAndQuery.contains("?") ? "&" : "?") + "token=" + token();
        }
    }

    public synchronized <T extends AutoCloseable> T own(T resource) {
        owned.push(resource);
        return resource;
    }

    /** A fresh directory under this test's temp root. */
    public synchronized Path dir(String name) {
        try {
            if (root == null) {
                root = Files.createTempDirectory("arp-test-");
                Path r = root;
                owned.addLast(() -> deleteTree(r)); // deleted after everything else has closed
            }
            return Files.createDirectories(root.resolve(name));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    public static String randomId(String prefix) {
        return prefix + HexFormat.of().toHexDigits(ThreadLocalRandom.current().nextLong());
    }

    public Origin origin() { return own(Origin.start()); }

    // ---- processes ----

    /** Any command (curl, python, the jbang launcher); output captured, killed after the test. */
    public synchronized Proc start(String name, List<String> command, Path cwd) {
        return start(name, command, cwd, Map.of());
    }

    /** The same with variables added to its environment (a null value removes one). */
    public synchronized Proc start(String name, List<String> command, Path cwd, Map<String, String> extraEnv) {
        Map<String, String> env = childEnv();
        env.putAll(extraEnv);
        Proc p = Proc.start(name, command, cwd, env);
        procs.add(p);
        return own(p);
    }

    private synchronized Proc startJava(String name, String main, Args args) {
        return startJava(name, main, args, Map.of());
    }

    private synchronized Proc startJava(String name, String main, Args args, Map<String, String> extraEnv) {
        Map<String, String> env = childEnv();
        env.putAll(extraEnv);
        Proc p = Procs.startJava(name, main, args.toList(), env);
        procs.add(p);
        return own(p);
    }

    /**
     * The environment the children inherit: no ARP_LOG from the developer's shell, and ARP_CONFIG_DIR
     * pointing at a throw-away dir so nothing can touch ~/.arp-client even if --config-dir were ignored.
     */
    private Map<String, String> childEnv() {
        Map<String, String> env = new HashMap<>();
        env.put("ARP_LOG", null);
        env.put("ARP_SECRET", null); // arpc's secret from the environment
        env.put("ARPS_SECRET", null); // arps's
        env.put("ARP_CONFIG_DIR", dir("env-config-dir").toString());
        return env;
    }

    public Args arpsArgs() {
        return new Args().set("--bind", "127.0.0.1").set("--control-port", 0).set("--proxy-port", 0)
                .set("--public-port", 0).set("--log-level", LOG_LEVEL).flag("--json");
    }

    public Proc startArps(Args args) { return startJava("arps", Procs.ARPS_MAIN, args); }

    /** arps with variables added to its environment (e.g. ARPS_SECRET). */
    public Proc startArps(Args args, Map<String, String> extraEnv) { return startJava("arps", Procs.ARPS_MAIN, args, extraEnv); }

    /** arps on ephemeral ports; waits for its ready line. {@code overrides}: "--opt", "value" pairs. */
    public Relay arps(String... overrides) { return arps(arpsArgs().merge(overrides)); }

    public Relay arps(Args args) { return ready(startArps(args)); }

    public static Relay ready(Proc p) {
        JsonNode r = p.awaitEvent("ready", 1, START);
        return new Relay(p, r.path("control_port").asInt(), r.path("proxy_port").asInt(), r.path("public_port").asInt());
    }

    public Args arpcArgs(Relay relay, int localPort) {
        return new Args().set("--client-id", randomId("it")).set("--server-addr", "127.0.0.1")
                .set("--control-port", relay.controlPort()).set("--proxy-port", relay.proxyPort())
                .set("--local-addr", "127.0.0.1").set("--local-port", localPort)
                .set("--config-dir", dir("arpc-config-" + procs.size())).set("--log-level", LOG_LEVEL).flag("--json");
    }

    public Proc startArpc(Args args) { return startJava("arpc", Procs.ARPC_MAIN, args); }

    /** arpc with variables added to its environment (e.g. ARP_SECRET). */
    public Proc startArpc(Args args, Map<String, String> extraEnv) { return startJava("arpc", Procs.ARPC_MAIN, args, extraEnv); }

    /** arpc in tunnel mode to 127.0.0.1:{@code localPort}; waits for its registered line. */
    public Client arpc(Relay relay, int localPort, String... overrides) {
        return arpc(arpcArgs(relay, localPort).merge(overrides));
    }

    public Client arpc(Args args) { return registered(startArpc(args), 1); }

    public static Client registered(Proc p, int nth) {
        JsonNode r = p.awaitEvent("registered", nth, START);
        return new Client(p, r.path("client_id").asText(), r.path("public_url").asText(), r);
    }

    /** arps plus an arpc tunnelling to {@code localPort}. */
    public Tunnel tunnel(int localPort, String... arpsOverrides) {
        Relay relay = arps(arpsOverrides);
        return new Tunnel(relay, arpc(relay, localPort));
    }

    // ---- HTTP ----

    /** An HTTP/1.1 client (the default HTTP/2 would add h2c upgrade headers to plain-http requests). */
    public synchronized HttpClient http() {
        if (http == null) {
            http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(10)).build();
            HttpClient h = http;
            own(h::shutdownNow);
        }
        return http;
    }

    public HttpResponse<String> get(String url) throws IOException, InterruptedException {
        return http().send(HttpRequest.newBuilder(URI.create(url)).timeout(Duration.ofSeconds(30)).build(),
                HttpResponse.BodyHandlers.ofString());
    }

    // ---- clean-up ----

    @Override public void afterEach(ExtensionContext context) {
        if (context.getExecutionException().isPresent()) {
            StringBuilder sb = new StringBuilder();
            synchronized (this) {
                for (Proc p : procs) sb.append(p.dump(150));
            }
            if (!sb.isEmpty()) {
                System.out.print("\n" + sb);
                System.out.flush();
            }
        }
        closeAll();
    }

    public synchronized void closeAll() {
        while (!owned.isEmpty()) {
            try {
                owned.pop().close();
            } catch (Exception ignored) {
                // best effort: one failing close must not leave the rest running
            }
        }
        procs.clear();
    }

    private static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p)) return;
        try (Stream<Path> s = Files.walk(p)) {
            for (Path f : s.sorted(Comparator.reverseOrder()).toList()) Files.deleteIfExists(f);
        }
    }
}
