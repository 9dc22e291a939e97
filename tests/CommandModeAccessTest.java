package arp.tests;

import arp.tests.support.Bytes;
import arp.tests.support.CommandArpc;
import arp.tests.support.Curl;
import arp.tests.support.FakeAgents;
import arp.tests.support.Origin;
import arp.tests.support.Proc;
import arp.tests.support.RawHttp;
import arp.tests.support.Sse;
import arp.tests.support.TestEnv;
import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Locale;
import java.util.Map;

import static arp.tests.support.CommandArpc.fields;
import static arp.tests.support.CommandArpc.json;
import static org.junit.jupiter.api.Assertions.assertAll;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Who may use the command-mode API and with what: the key on every route, CORS, input validation
 * naming the field, --max-sessions, --max-run-time, and /proxy/{port} limited to --proxy-ports.
 * Every request goes through the real tunnel.
 */
class CommandModeAccessTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final Duration WAIT = CommandArpc.WAIT;

    static void assertError(HttpResponse<String> r, int status, String mustName, String what) {
        assertEquals(status, r.statusCode(), () -> what + ": " + r.body());
        JsonNode j;
        try {
            j = CommandArpc.parse(r);
        } catch (AssertionError e) {
            throw new AssertionError(what + ": error body is not JSON: " + r.body());
        }
        assertEquals("error", j.path("type").asText(), () -> what + ": " + r.body());
        assertTrue(j.path("message").isTextual() && !j.path("message").asText().isBlank(), () -> what + ": " + r.body());
        if (mustName != null) {
            assertTrue(j.path("message").asText().contains(mustName), () -> what + ": the message should name " + mustName + ": " + r.body());
        }
    }

    @Test
    void everyRouteAnswers401WithoutTheRightKey() throws Exception {
        Origin origin = env.origin();
        CommandArpc c = CommandArpc.start(env, "--proxy-ports", String.valueOf(origin.port()));
        String tag = FakeAgents.tag("auth");
        String id = c.create("claude", tag, "lines=0").path("session_id").asText();
        c.awaitStatus(id, WAIT, "completed", "failed", "cancelled");
        String body = json(fields("executor", "claude", "prompt", FakeAgents.prompt(FakeAgents.tag("never"), "lines=0"),
                "project_path", c.project().toString()));
        String key = c.key();

        List<String> auths = new ArrayList<>();
        auths.add(null);
        auths.add("Bearer " + CommandArpc.newKey());
        auths.add("Bearer " + key.substring(0, key.length() - 1));
        auths.add("Bearer " + key + "x");
        auths.add("Bearer");
        auths.add("Bearer ");
        auths.add(key); // no scheme
        auths.add("Basic " + Base64.getEncoder().encodeToString(("user:" + key).getBytes(StandardCharsets.UTF_8)));
        String[][] routes = {
                {"POST", "/api/sessions", body},
                {"GET", "/api/sessions", null},
                {"GET", "/api/sessions/" + id, null},
                {"GET", "/api/sessions/no-such-session", null},
                {"POST", "/api/sessions/" + id + "/cancel", null},
                {"DELETE", "/api/sessions/" + id, null},
                {"GET", "/proxy/" + origin.port() + "/hello", null},
                {"POST", "/proxy/" + origin.port() + "/upload", "x"},
                {"GET", "/nope", null},
                {"GET", "/", null},
                {"PUT", "/api/sessions", body},
        };
        for (String auth : auths) {
            for (String[] route : routes) {
                for (String accept : new String[] {"application/json", "text/event-stream"}) {
                    HttpRequest.Builder b = c.anonymous(route[1]).header("Accept", accept);
                    if (auth != null) b.header("Authorization", auth);
                    if (route[2] != null) b.header("Content-Type", "application/json");
                    b.method(route[0], route[2] == null ? HttpRequest.BodyPublishers.noBody() : HttpRequest.BodyPublishers.ofString(route[2]));
                    assertError(c.send(b.build()), 401, null, route[0] + " " + route[1] + " (Accept " + accept + ") with Authorization " + auth);
                }
            }
        }
        // curl, with the token in the query: the same.
        Curl.Result r = Curl.run(env, c.relay.base() + "/api/sessions?token=" + c.clientId);
        assertEquals(401, r.status(), r::toString);

        // Nothing happened behind the refusals.
        assertEquals(1, c.fakes.runs().size(), "only the one authorised session ran");
        assertEquals(0, origin.requests(), "the proxy was never used");
        JsonNode list = CommandArpc.parse(c.call("GET", "/api/sessions", null));
        assertEquals(1, list.path("total").asInt(), list::toString);
        assertEquals("completed", c.details(id).path("status").asText(), "the session was not deleted");
    }

    @Test
    void corsPreflightAndResponseHeaders() throws Exception {
        CommandArpc c = CommandArpc.start(env, "--cors-origins", "https://app.example,https://b.example:8443");
        String id = c.create("claude", FakeAgents.tag("cors"), "lines=0").path("session_id").asText();
        c.awaitStatus(id, WAIT, "completed", "failed", "cancelled");

        for (String origin : List.of("https://app.example", "https://b.example:8443")) {
            for (String path : List.of("/api/sessions", "/api/sessions/" + id, "/api/sessions/" + id + "/cancel")) {
                // A browser's preflight carries no key (and no custom headers: the token is in the query).
                HttpResponse<String> r = c.send(HttpRequest.newBuilder(URI.create(c.url(path + "?token=" + c.clientId))).timeout(WAIT)
                        .method("OPTIONS", HttpRequest.BodyPublishers.noBody()).header("Origin", origin)
                        .header("Access-Control-Request-Method", "POST")
                        .header("Access-Control-Request-Headers", "authorization,content-type,last-event-id").build());
                assertEquals(204, r.statusCode(), () -> "preflight " + path + " from " + origin + ": " + r.body());
                assertEquals(origin, r.headers().firstValue("Access-Control-Allow-Origin").orElse(null), "Allow-Origin for " + origin);
                String methods = r.headers().firstValue("Access-Control-Allow-Methods").orElse("").toUpperCase(Locale.ROOT);
                for (String m : List.of("GET", "POST", "DELETE")) assertTrue(methods.contains(m), "Allow-Methods lacks " + m + ": " + methods);
                String headers = r.headers().firstValue("Access-Control-Allow-Headers").orElse("").toLowerCase(Locale.ROOT);
                for (String h : List.of("authorization", "content-type", "last-event-id")) {
                    assertTrue(headers.contains(h), "Allow-Headers lacks " + h + ": " + headers);
                }
            }
            HttpResponse<String> actual = c.send(c.request("/api/sessions").header("Origin", origin).build());
            assertEquals(200, actual.statusCode(), actual::body);
            assertEquals(origin, actual.headers().firstValue("Access-Control-Allow-Origin").orElse(null), "actual response for " + origin);
            try (Sse s = c.stream("/api/sessions/" + id, "Origin", origin)) {
                assertEquals(origin, s.header("Access-Control-Allow-Origin"), "SSE response for " + origin);
            }
        }

        for (String origin : List.of("https://evil.example", "http://app.example", "https://app.example.evil.example", "null")) {
            HttpResponse<String> r = c.send(HttpRequest.newBuilder(URI.create(c.url("/api/sessions?token=" + c.clientId))).timeout(WAIT)
                    .method("OPTIONS", HttpRequest.BodyPublishers.noBody()).header("Origin", origin)
                    .header("Access-Control-Request-Method", "POST").header("Access-Control-Request-Headers", "authorization").build());
            assertEquals(204, r.statusCode(), () -> "preflight from " + origin + ": " + r.body());
            for (String h : List.of("Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers")) {
                assertNull(r.headers().firstValue(h).orElse(null), h + " for the disallowed origin " + origin);
            }
            HttpResponse<String> actual = c.send(c.request("/api/sessions").header("Origin", origin).build());
            assertEquals(200, actual.statusCode(), actual::body);
            assertNull(actual.headers().firstValue("Access-Control-Allow-Origin").orElse(null), "actual response for " + origin);
        }
    }

    @Test
    void badRequestsAreRefusedNamingTheField() throws Exception {
        CommandArpc c = CommandArpc.relay(env);
        // claude and gemini on PATH, codex missing; no --cors-origins.
        c.launch(c.args(), c.fakes.env("claude", "gemini"));
        String project = c.project().toString();
        Path file = Files.writeString(c.project().resolve("a-file"), "x");
        String p = "tag=never lines=0";

        Object[][] cases = {
                {fields("executor", "cursor", "prompt", p, "project_path", project), "executor"},
                {fields("executor", "claude-code", "prompt", p, "project_path", project), "executor"},
                {fields("executor", List.of("claude"), "prompt", p, "project_path", project), "executor"},
                {fields("project_path", project), "prompt"},
                {fields("prompt", "", "project_path", project), "prompt"},
                {fields("prompt", "a\u0000b " + p, "project_path", project), "prompt"}, // no argument can carry a NUL
                // Linux limits one argument to 128 KiB (MAX_ARG_STRLEN): 60,000 characters of 3 UTF-8 bytes are too many.
                {fields("prompt", "\u20ac".repeat(60_000) + " " + p, "project_path", project), "prompt"},
                {fields("prompt", "x".repeat(200_000) + " " + p, "project_path", project), "prompt"},
                {fields("prompt", p), "project_path"},
                {fields("prompt", p, "project_path", ""), "project_path"},
                {fields("prompt", p, "project_path", "relative/dir"), "project_path"},
                {fields("prompt", p, "project_path", "/nonexistent/arp-test-dir"), "project_path"},
                {fields("prompt", p, "project_path", file.toString()), "project_path"},
                {fields("prompt", p, "project_path", project, "permission_mode", "yolo"), "permission_mode"},
                {fields("prompt", p, "project_path", project, "permission_mode", "--dangerously-skip-permissions"), "permission_mode"},
                {fields("executor", "gemini", "prompt", p, "project_path", project, "approval_mode", "always"), "approval_mode"},
                {fields("executor", "gemini", "prompt", p, "project_path", project, "approval_mode", "--yolo"), "approval_mode"},
                {fields("prompt", p, "project_path", project, "model", "-rf"), "model"},
                {fields("prompt", p, "project_path", project, "model", "--dangerously-skip-permissions"), "model"},
                {fields("prompt", p, "project_path", project, "resume", "--fork-session"), "resume"},
                {fields("prompt", p, "project_path", project, "allowed_tools", List.of("Read", "--dangerously-skip-permissions")), "allowed_tools"},
                {fields("executor", "gemini", "prompt", p, "project_path", project, "model", "-y"), "model"},
                {fields("executor", "gemini", "prompt", p, "project_path", project, "resume", "-1"), "resume"},
                {fields("executor", "codex", "prompt", p, "project_path", project), "codex"}, // not on PATH
        };
        // All cases run; the failures are reported together.
        List<org.junit.jupiter.api.function.Executable> checks = new ArrayList<>();
        for (Object[] k : cases) {
            @SuppressWarnings("unchecked") Map<String, Object> f = (Map<String, Object>) k[0];
            String shown = json(f).length() > 120 ? json(f).substring(0, 120) + "..." : json(f);
            checks.add(() -> assertError(c.call("POST", "/api/sessions", json(f)), 400, (String) k[1], "POST " + shown));
        }
        for (String raw : List.of("{not json", "", "[1,2]", "\"prompt\"", "{\"prompt\": \"x\", \"project_path\": ")) {
            checks.add(() -> assertError(c.call("POST", "/api/sessions", raw), 400, null, "POST body " + raw));
        }
        assertAll(checks);
        assertEquals(List.of(), c.fakes.runs(), "no agent ran for a refused request");
        assertEquals(0, CommandArpc.parse(c.call("GET", "/api/sessions", null)).path("total").asInt());

        // Unknown sessions.
        assertError(c.call("GET", "/api/sessions/no-such-session", null), 404, null, "details of an unknown session");
        HttpResponse<String> sse = c.send(c.request("/api/sessions/no-such-session").header("Accept", "text/event-stream").build());
        assertEquals(404, sse.statusCode(), sse::body);
        assertError(c.call("POST", "/api/sessions/no-such-session/cancel", null), 404, null, "cancel of an unknown session");
        assertError(c.call("DELETE", "/api/sessions/no-such-session", null), 404, null, "DELETE of an unknown session");

        // The same arpc takes good requests (so the refusals above were about the fields).
        String tag = FakeAgents.tag("good");
        String id = c.create("gemini", tag, "lines=0").path("session_id").asText();
        assertEquals("completed", c.awaitStatus(id, WAIT, "completed", "failed", "cancelled").path("status").asText());

        // Without --cors-origins no origin is allowed.
        HttpResponse<String> pre = c.send(HttpRequest.newBuilder(URI.create(c.url("/api/sessions?token=" + c.clientId))).timeout(WAIT)
                .method("OPTIONS", HttpRequest.BodyPublishers.noBody()).header("Origin", "https://app.example")
                .header("Access-Control-Request-Method", "POST").build());
        assertEquals(204, pre.statusCode(), pre::body);
        assertNull(pre.headers().firstValue("Access-Control-Allow-Origin").orElse(null), "no origin is allowed by default");
    }

    @Test
    void agentsInheritNoneOfArpcsOwnSecrets() throws Exception {
        String secret = "relay-secret-of-this-test";
        CommandArpc c = CommandArpc.relay(env, env.arpsArgs().set("--secret", secret));
        String apiKey = "sixteen-chars-ak"; // exactly 16 characters: enough for ARP_API_KEY
        c.key(apiKey);
        Map<String, String> more = new java.util.HashMap<>(Map.of("ARP_API_KEY", apiKey, "ARP_SECRET", secret,
                "ARPS_SECRET", "the-relay-secret-in-arpcs-env", "ARPS_FOO", "bar", "ARP_FOO", "baz", "AGENT_KEEPS_THIS", "kept"));
        c.launch(c.args().remove("--api-key"), more); // registered with the relay's secret from ARP_SECRET
        assertEquals(200, c.call("GET", "/api/sessions", null).statusCode(), "ARP_API_KEY of 16 characters opens the API");

        List<String> problems = new ArrayList<>();
        for (String executor : List.of("claude", "codex", "gemini")) {
            String tag = FakeAgents.tag("env-" + executor);
            String id = c.create(executor, tag, "lines=0").path("session_id").asText();
            c.awaitStatus(id, WAIT, "completed", "failed", "cancelled");
            Map<String, String> seen = c.fakes.run(tag).environment();
            List<String> arp = seen.keySet().stream().filter(k -> k.startsWith("ARP_") || k.startsWith("ARPS_")).toList();
            if (!arp.equals(List.of("ARP_SESSION_ID"))) problems.add(executor + " inherited " + arp);
            if (!id.equals(seen.get("ARP_SESSION_ID"))) problems.add(executor + ": ARP_SESSION_ID " + seen.get("ARP_SESSION_ID") + " is not " + id);
            for (var e : seen.entrySet()) {
                for (String v : List.of(apiKey, secret, "the-relay-secret-in-arpcs-env")) {
                    if (e.getValue().contains(v)) problems.add(executor + ": " + e.getKey() + " holds " + v);
                }
            }
            if (!"kept".equals(seen.get("AGENT_KEEPS_THIS"))) problems.add(executor + ": other variables are inherited, but AGENT_KEEPS_THIS is " + seen.get("AGENT_KEEPS_THIS"));
            if (seen.containsKey("CLAUDECODE")) problems.add(executor + " inherited CLAUDECODE");
        }
        assertEquals(List.of(), problems, "the agents' environments");
    }

    @Test
    void anApiKeyShorterThan16CharactersFromTheEnvironmentIsRefused() throws Exception {
        TestEnv.Relay nowhere = new TestEnv.Relay(null, RawHttp.closedPort(), RawHttp.closedPort(), 0);
        List<Proc> arpcs = new ArrayList<>();
        for (String key : List.of("fifteen-chars-k", "  fifteen-chars-k  ")) {
            var args = env.arpcArgs(nowhere, 1).remove("--local-port").remove("--local-addr").flag("--command-mode")
                    .set("--config-dir", env.dir("short-key-" + arpcs.size()));
            arpcs.add(env.startArpc(args, Map.of("ARP_API_KEY", key)));
        }
        for (Proc p : arpcs) {
            int code = p.awaitExit(TestEnv.START);
            String out = p.stdoutText() + "\n" + p.stderrText();
            assertNotEquals(0, code, () -> "arpc with a 15-character ARP_API_KEY: " + out);
            assertTrue(out.contains("ARP_API_KEY") && out.contains("16"), () -> "the message names the API key and the minimum: " + out);
            assertEquals(0, p.countEvents("api"), () -> "arpc served its API: " + out);
            assertFalse(out.contains("fifteen-chars-k"), () -> "arpc printed the key: " + out);
        }
    }

    @Test
    void maxSessionsAndMaxRunTime() throws Exception {
        CommandArpc c = CommandArpc.start(env, "--max-sessions", "2", "--max-run-time", "5");
        long t0 = System.nanoTime();
        String tagA = FakeAgents.tag("limit-a"), tagB = FakeAgents.tag("limit-b");
        String a = c.create("claude", tagA, "tree=1", "lines=1", "hold=1000").path("session_id").asText();
        // B ignores SIGTERM, tree and all: only the SIGKILL after the grace period ends it.
        String b = c.create("gemini", tagB, "tree=1", "lines=1", "hold=1000", "ignoreterm=1").path("session_id").asText();
        HttpResponse<String> third = c.call("POST", "/api/sessions", json(fields("executor", "codex",
                "prompt", FakeAgents.prompt(FakeAgents.tag("limit-c"), "lines=0"), "project_path", c.project().toString())));
        assertTrue(System.nanoTime() - t0 < Duration.ofSeconds(4).toNanos(), "the machine is too slow for this check");
        assertError(third, 429, null, "a third session with --max-sessions 2");

        FakeAgents.Run runA = c.fakes.run(tagA).awaitStarted(WAIT), runB = c.fakes.run(tagB).awaitStarted(WAIT);
        try (Sse s = c.stream("/api/sessions/" + a)) {
            List<Sse.Event> all = s.rest(Duration.ofSeconds(30));
            JsonNode complete = all.getLast().json();
            assertEquals("complete", all.getLast().kind(), all.getLast()::toString);
            assertEquals("failed", complete.path("status").asText(), complete::toString);
            assertFalse(complete.path("success").asBoolean(true), complete::toString);
            assertFalse(complete.path("cancelled").asBoolean(true), complete::toString);
            assertTrue(complete.path("error").isTextual(), complete::toString);
        }
        double seconds = (System.nanoTime() - t0) / 1e9;
        assertTrue(seconds > 4, "ended after " + seconds + " s: before --max-run-time 5");
        FakeAgents.awaitGone(Duration.ofSeconds(10), "tree of a run past --max-run-time", runA.pid(), runA.childPid(), runA.grandchildPid());
        JsonNode db = c.awaitStatus(b, Duration.ofSeconds(20), "failed", "completed", "cancelled");
        assertEquals("failed", db.path("status").asText(), db::toString);
        assertTrue(db.path("error").isTextual(), db::toString);
        FakeAgents.awaitGone(Duration.ofSeconds(10), "tree that ignores SIGTERM, past --max-run-time", runB.pid(), runB.childPid(), runB.grandchildPid());
        assertEquals("failed", c.details(a).path("status").asText());

        // The slots are free again.
        String tagD = FakeAgents.tag("limit-d");
        String d = c.create("codex", tagD, "lines=1").path("session_id").asText();
        assertEquals("completed", c.awaitStatus(d, WAIT, "completed", "failed", "cancelled").path("status").asText());
    }

    @Test
    void proxyReachesListedLocalPortsOnly() throws Exception {
        Origin origin = env.origin();
        Origin unlisted = env.origin();
        int apiPort = RawHttp.closedPort();
        int downPort = RawHttp.closedPort();
        CommandArpc c = CommandArpc.start(env, "--api-port", String.valueOf(apiPort),
                "--proxy-ports", origin.port() + "," + apiPort + "," + downPort);
        assertEquals(apiPort, c.apiPort(), "--api-port");

        HttpResponse<String> r = c.call("GET", "/proxy/" + origin.port() + "/hello", null);
        assertEquals(200, r.statusCode(), r::body);
        assertEquals("hello world", r.body());
        r = c.call("GET", "/proxy/" + origin.port() + "/echo-target?a=1&b=x%20y", null);
        assertEquals(200, r.statusCode(), r::body);
        assertTrue(r.body().startsWith("target /echo-target?a=1&b=x%20y\n"), r::body);
        byte[] data = Bytes.bytes(5, 300_000);
        r = c.send(c.request("/proxy/" + origin.port() + "/upload").POST(HttpRequest.BodyPublishers.ofByteArray(data)).build());
        assertEquals(200, r.statusCode(), r::body);
        assertEquals(Bytes.sha256(data).toString(), r.body());
        Curl.Result cr = Curl.run(env, "-H", "Authorization: Bearer " + c.key(),
                c.relay.base() + "/proxy/" + origin.port() + "/hello?token=" + c.clientId);
        assertEquals(200, cr.status(), cr::toString);
        assertEquals("hello world", cr.body());
        assertEquals(4, origin.requests(), "requests that reached the listed origin");

        assertError(c.call("GET", "/proxy/" + unlisted.port() + "/hello", null), 403, String.valueOf(unlisted.port()), "a port not in --proxy-ports");
        assertError(c.call("POST", "/proxy/" + unlisted.port() + "/upload", "{}"), 403, String.valueOf(unlisted.port()), "a port not in --proxy-ports (POST)");
        assertEquals(0, unlisted.requests(), "the unlisted origin was never reached");
        assertError(c.call("GET", "/proxy/" + apiPort + "/api/sessions", null), 403, null, "the API's own port, even when listed");
        HttpResponse<String> down = c.call("GET", "/proxy/" + downPort + "/x", null);
        assertEquals(502, down.statusCode(), down::body);
        assertNotNull(down.body());
        assertFalse(c.call("GET", "/proxy/notaport/x", null).statusCode() == 200, "a port that is not a number");
    }
}
