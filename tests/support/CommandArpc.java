package arp.tests.support;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.Base64;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * An arpc in command mode ({@code --command-mode}) behind a real arps, with the fake agent CLIs first
 * on its PATH, and a client for its API that always goes through the tunnel: the relay's public port,
 * {@code X-Arp-Token: <client id>} (or {@code ?token=}), {@code Authorization: Bearer <key>}.
 * <p>
 * Start with {@link #start(TestEnv, String...)} (arps, then arpc with a fresh {@code --api-key}), or
 * {@link #relay(TestEnv)} then {@link #launch(Args, Map)} to control arpc's options and environment.
 * The environment always carries {@code CLAUDECODE=1}, which arpc must not pass to the agents.
 */
public final class CommandArpc {
    public static final Duration WAIT = Duration.ofSeconds(20);
    public static final ObjectMapper JSON = new ObjectMapper();
    private static final SecureRandom RANDOM = new SecureRandom();

    public final TestEnv env;
    public final TestEnv.Relay relay;
    public final FakeAgents fakes;
    public final Path configDir;
    public final String clientId;
    private final Map<String, String> extraEnv = new HashMap<>();
    private String key = newKey();
    private Proc proc;
    private JsonNode apiEvent;
    private int projects;

    private CommandArpc(TestEnv env, TestEnv.Relay relay) {
        this.env = env;
        this.relay = relay;
        this.fakes = env.own(new FakeAgents(env.dir("fake-agent-log")));
        this.configDir = env.dir("cmd-config");
        this.clientId = TestEnv.randomId("cmd");
    }

    /** A relay (arps) for an arpc that {@link #launch} starts. */
    public static CommandArpc relay(TestEnv env) { return new CommandArpc(env, env.arps()); }

    /** The same with arps's options (e.g. {@code env.arpsArgs().set("--secret", s)}). */
    public static CommandArpc relay(TestEnv env, Args arpsArgs) { return new CommandArpc(env, env.arps(arpsArgs)); }

    /** arps plus arpc in command mode with {@code --api-key <fresh key>}, its defaults overridden by {@code overrides}. */
    public static CommandArpc start(TestEnv env, String... overrides) {
        CommandArpc c = relay(env);
        return c.launch(c.args().merge(overrides), Map.of());
    }

    public static String newKey() {
        byte[] b = new byte[32];
        RANDOM.nextBytes(b);
        return Base64.getUrlEncoder().withoutPadding().encodeToString(b);
    }

    /** arpc's options: tunnel to {@link #relay}, command mode, this instance's config dir and key. */
    public Args args() {
        return env.arpcArgs(relay, 1).remove("--local-port").remove("--local-addr").flag("--command-mode")
                .set("--client-id", clientId).set("--config-dir", configDir).set("--api-key", key);
    }

    /**
     * Starts arpc with {@code args} and the fakes' environment plus {@code moreEnv} (a null value
     * removes a variable); waits for its {@code api} and {@code registered} lines.
     */
    public CommandArpc launch(Args args, Map<String, String> moreEnv) {
        Map<String, String> e = new HashMap<>(fakes.env());
        e.put("CLAUDECODE", "1");
        e.put("CLAUDE_CODE_ENTRYPOINT", "cli");
        e.put("ARP_API_KEY", null);
        e.putAll(extraEnv);
        e.putAll(moreEnv);
        if (args.get("--api-key") != null) key = args.get("--api-key");
        proc = env.startArpc(args, e);
        apiEvent = proc.awaitEvent("api", 1, TestEnv.START);
        TestEnv.registered(proc, 1);
        return this;
    }

    /**
     * Stops arpc (SIGTERM, as a user would) and waits for it to exit. Sent with kill(1), not
     * Process.destroy(), which would also close the pipes and lose what arpc logs while stopping.
     */
    public int stop() {
        proc.signal("TERM");
        return proc.awaitExit(Duration.ofSeconds(30));
    }

    public Proc proc() { return proc; }

    public String key() { return key; }

    /** The key later requests use (e.g. one arpc generated and printed). */
    public void key(String k) { key = k; }

    public JsonNode apiEvent() { return apiEvent; }

    public int apiPort() { return URI.create(apiEvent.path("url").asText()).getPort(); }

    /** The MCP endpoint on 127.0.0.1 ({@code mcp_url} of the api line; arpc runs with {@code --enable-mcp}). */
    public URI mcpUrl() {
        String u = apiEvent.path("mcp_url").asText(null);
        if (u == null) throw new AssertionError("no mcp_url in the api line (is --enable-mcp on?): " + apiEvent);
        return URI.create(u);
    }

    /** A fresh, empty project directory (its real path). */
    public Path project() {
        try {
            return env.dir("project-" + (++projects)).toRealPath();
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    // ---- requests through the tunnel ----

    public String url(String pathAndQuery) { return relay.base() + pathAndQuery; }

    /** A request through the tunnel with the token header but no key. */
    public HttpRequest.Builder anonymous(String pathAndQuery) {
        return HttpRequest.newBuilder(URI.create(url(pathAndQuery))).timeout(WAIT).header("X-Arp-Token", clientId);
    }

    /** A request through the tunnel with the key. */
    public HttpRequest.Builder request(String pathAndQuery) {
        return anonymous(pathAndQuery).header("Authorization", "Bearer " + key);
    }

    public HttpResponse<String> send(HttpRequest request) {
        try {
            return env.http().send(request, HttpResponse.BodyHandlers.ofString());
        } catch (IOException e) {
            throw new AssertionError(request.method() + " " + request.uri() + ": " + e, e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted");
        }
    }

    /** {@code method path} with the key, {@code Accept: application/json}, and a JSON body when not null. */
    public HttpResponse<String> call(String method, String path, String jsonBody) {
        HttpRequest.Builder b = request(path).header("Accept", "application/json");
        if (jsonBody != null) b.header("Content-Type", "application/json");
        b.method(method, jsonBody == null ? HttpRequest.BodyPublishers.noBody() : HttpRequest.BodyPublishers.ofString(jsonBody));
        return send(b.build());
    }

    /** {@code "k1", v1, "k2", v2...} as an ordered map (values: String, Boolean, List...). */
    public static Map<String, Object> fields(Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) m.put((String) kv[i], kv[i + 1]);
        return m;
    }

    public static String json(Object o) {
        try {
            return JSON.writeValueAsString(o);
        } catch (JsonProcessingException e) {
            throw new IllegalArgumentException(e);
        }
    }

    public static JsonNode parse(HttpResponse<String> r) {
        try {
            return JSON.readTree(r.body());
        } catch (IOException e) {
            throw new AssertionError("not JSON (status " + r.statusCode() + "): " + r.body());
        }
    }

    /** POST /api/sessions with {@code Accept: application/json}; must answer 201. */
    public JsonNode create(Map<String, Object> fields) {
        HttpResponse<String> r = call("POST", "/api/sessions", json(fields));
        if (r.statusCode() != 201) throw new AssertionError("POST /api/sessions " + json(fields) + ": " + r.statusCode() + " " + r.body());
        JsonNode n = parse(r);
        if (!n.path("session_id").isTextual()) throw new AssertionError("no session_id in " + r.body());
        return n;
    }

    /** A session of {@code executor} in a fresh project whose prompt is {@code tag=<tag> directives...}. */
    public JsonNode create(String executor, String tag, String... directives) {
        return create(fields("executor", executor, "prompt", FakeAgents.prompt(tag, directives), "project_path", project().toString()));
    }

    /** GET /api/sessions/{id} as JSON; must answer 200. */
    public JsonNode details(String id) {
        HttpResponse<String> r = call("GET", "/api/sessions/" + id, null);
        if (r.statusCode() != 200) throw new AssertionError("GET /api/sessions/" + id + ": " + r.statusCode() + " " + r.body());
        return parse(r);
    }

    /** Polls the details until the status is one of {@code statuses}. */
    public JsonNode awaitStatus(String id, Duration timeout, String... statuses) {
        Set<String> want = Set.of(statuses);
        long deadline = System.nanoTime() + timeout.toNanos();
        JsonNode d;
        while (true) {
            d = details(id);
            if (want.contains(d.path("status").asText())) return d;
            if (System.nanoTime() > deadline) {
                throw new AssertionError("session " + id + " not " + want + " within " + timeout.toMillis() + " ms: " + d);
            }
            FakeAgents.sleep(100);
        }
    }

    /** The SSE stream of {@code path} with the key ({@code "Header", "value"} pairs added). */
    public Sse stream(String path, String... headers) {
        HttpRequest.Builder b = request(path).header("Accept", "text/event-stream");
        for (int i = 0; i < headers.length; i += 2) b.header(headers[i], headers[i + 1]);
        return Sse.open(env.http(), b.build());
    }

    /** POST /api/sessions answered with the SSE stream of the new session. */
    public Sse createStreaming(Map<String, Object> fields) {
        HttpRequest r = request("/api/sessions").header("Accept", "text/event-stream").header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(json(fields))).build();
        return Sse.open(env.http(), r);
    }

    /** Everything the stream of a finished session holds, read from the start. */
    public List<Sse.Event> fullStream(String id) {
        try (Sse s = stream("/api/sessions/" + id)) {
            return s.rest(WAIT);
        }
    }
}
