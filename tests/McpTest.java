package arp.tests;

import arp.tests.support.CommandArpc;
import arp.tests.support.FakeAgents;
import arp.tests.support.McpClient;
import arp.tests.support.TestEnv;
import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import static arp.tests.support.CommandArpc.fields;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * arpc's MCP server (--enable-mcp) at the protocol level, with java.net.http as the client, both on its
 * own port (mcp_url) and as /mcp through the relay's public port: every refusal of the contract with its
 * HTTP status and JSON-RPC error code, version negotiation, sessions (Mcp-Session-Id, DELETE), the
 * methods, tool failures reported in-band, and the session tools driving real (fake) agent runs.
 */
class McpTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final Duration WAIT = CommandArpc.WAIT;
    private static final String GOOD_ORIGIN = "https://app.example.com";
    static final List<String> CONTRACT_TOOLS = List.of("start_session", "get_session", "list_sessions", "cancel_session",
            "answer_permission", "approval_prompt");

    static CommandArpc startWithMcp(TestEnv env, String... more) {
        List<String> args = new ArrayList<>(List.of("--enable-mcp", "--mcp-port", "0", "--cors-origins", GOOD_ORIGIN));
        args.addAll(List.of(more));
        return CommandArpc.start(env, args.toArray(String[]::new));
    }

    /** A JSON-RPC error answer: the HTTP status, JSON, {"jsonrpc":"2.0","id":…,"error":{"code":…,"message":…}}. */
    static JsonNode assertRpcError(McpClient m, HttpResponse<String> r, int status, int code, String what) {
        JsonNode a = m.json(r, status, what);
        assertEquals("2.0", a.path("jsonrpc").asText(), () -> m + " " + what + ": " + r.body());
        assertEquals(code, a.path("error").path("code").asInt(), () -> m + " " + what + ": " + r.body());
        assertFalse(a.path("error").path("message").asText().isBlank(), () -> m + " " + what + ": no message: " + r.body());
        assertFalse(a.has("result"), () -> m + " " + what + ": " + r.body());
        return a;
    }

    private static HttpResponse<String> post(McpClient m, String body, String... headers) {
        HttpRequest.Builder b = m.withSession(m.post(body));
        for (int i = 0; i < headers.length; i += 2) b.setHeader(headers[i], headers[i + 1]);
        return m.send(b.build());
    }

    private static final String PING = "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}";

    /** Every refusal of the contract, on one endpoint. */
    private static void refusals(CommandArpc c, McpClient m) {
        String init = m.message("initialize", Map.of("protocolVersion", "2025-11-25", "capabilities", Map.of(),
                "clientInfo", Map.of("name", "t", "version", "1"))).toString();

        // The API key on every request: 401 with the API's JSON error, before anything else is looked at.
        for (String auth : new String[] {null, "Bearer " + CommandArpc.newKey(), "Basic " + c.key(), "Bearer"}) {
            HttpRequest.Builder b = HttpRequest.newBuilder(m.uri).timeout(WAIT).header("Content-Type", "application/json")
                    .header("Accept", McpClient.ACCEPT).POST(HttpRequest.BodyPublishers.ofString(init));
            if (m.name.equals("relayed")) b.header("X-Arp-Token", c.clientId);
            if (auth != null) b.header("Authorization", auth);
            HttpResponse<String> r = m.send(b.build());
            JsonNode e = m.json(r, 401, "initialize with Authorization " + auth);
            assertEquals("error", e.path("type").asText(), r::body);
            assertFalse(e.path("message").asText().isBlank(), r::body);
            assertTrue(r.headers().firstValue("WWW-Authenticate").orElse("").startsWith("Bearer"), () -> "WWW-Authenticate: " + r.headers().map());
            assertTrue(r.headers().firstValue("Mcp-Session-Id").isEmpty(), "no session for an unauthenticated initialize");
        }

        // A foreign Origin (DNS rebinding) is refused; a --cors-origins one is not.
        assertRpcError(m, post(m, init, "Origin", "https://evil.example"), 403, -32600, "initialize from a foreign Origin");
        assertRpcError(m, post(m, init, "Origin", "null"), 403, -32600, "initialize from Origin null");
        HttpResponse<String> good = post(m, init, "Origin", GOOD_ORIGIN);
        assertEquals(200, good.statusCode(), () -> "initialize from " + GOOD_ORIGIN + ": " + good.body());

        // Content-Type and Accept.
        assertRpcError(m, post(m, init, "Content-Type", "text/plain"), 415, -32600, "Content-Type text/plain");
        assertRpcError(m, post(m, init, "Content-Type", "application/x-www-form-urlencoded"), 415, -32600, "a form");
        HttpRequest.Builder noType = HttpRequest.newBuilder(m.uri).timeout(WAIT).header("Accept", McpClient.ACCEPT)
                .header("Authorization", "Bearer " + c.key()).POST(HttpRequest.BodyPublishers.ofString(init));
        if (m.name.equals("relayed")) noType.header("X-Arp-Token", c.clientId);
        assertRpcError(m, m.send(noType.build()), 415, -32600, "no Content-Type");
        assertRpcError(m, post(m, init, "Accept", "text/html"), 406, -32600, "Accept text/html");
        assertRpcError(m, post(m, init, "Accept", "text/plain, image/png"), 406, -32600, "Accept text/plain, image/png");
        for (String accept : List.of("application/json", "text/event-stream", "*/*", McpClient.ACCEPT)) {
            HttpResponse<String> ok = post(m, init, "Accept", accept, "Content-Type", "application/json; charset=utf-8");
            assertEquals(200, ok.statusCode(), () -> "Accept " + accept + ": " + ok.body());
        }

        // Not JSON, a batch, not JSON-RPC 2.0.
        JsonNode parse = assertRpcError(m, post(m, "{\"jsonrpc\":\"2.0\",\"id\":1,", new String[0]), 400, -32700, "invalid JSON");
        assertTrue(parse.path("id").isNull(), () -> "the id of a parse error is null: " + parse);
        assertRpcError(m, post(m, "not json at all"), 400, -32700, "plain text");
        assertRpcError(m, post(m, "[" + init + "]"), 400, -32600, "a batch");
        assertRpcError(m, post(m, "[]"), 400, -32600, "an empty batch");
        assertRpcError(m, post(m, "{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"ping\"}"), 400, -32600, "jsonrpc 1.0");
        assertRpcError(m, post(m, "{\"id\":1,\"method\":\"ping\"}"), 400, -32600, "no jsonrpc member");
        assertRpcError(m, post(m, "\"ping\""), 400, -32600, "a JSON string");

        // initialize needs params.protocolVersion (an error answer, HTTP 200, no session).
        HttpResponse<String> noVersion = post(m, "{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"initialize\",\"params\":{\"capabilities\":{}}}");
        JsonNode nv = assertRpcError(m, noVersion, 200, -32602, "initialize without protocolVersion");
        assertEquals("a", nv.path("id").asText(), nv::toString);
        assertTrue(noVersion.headers().firstValue("Mcp-Session-Id").isEmpty(), "no session without a version");

        // Sessions: none → 400; unknown → 404; unsupported MCP-Protocol-Version → 400; absent version is fine.
        m.initialize("2025-11-25");
        String session = m.sessionId();
        HttpResponse<String> noSession = m.send(m.post(PING).build());
        assertRpcError(m, noSession, 400, -32600, "ping without Mcp-Session-Id");
        assertRpcError(m, post(m, PING, "Mcp-Session-Id", "0123456789abcdef0123456789abcdef0123456789abcdef"), 404, -32600, "an unknown session");
        assertRpcError(m, post(m, PING, "MCP-Protocol-Version", "2024-11-05"), 400, -32600, "MCP-Protocol-Version 2024-11-05");
        assertRpcError(m, post(m, PING, "MCP-Protocol-Version", "banana"), 400, -32600, "MCP-Protocol-Version banana");
        for (String v : List.of("2025-11-25", "2025-06-18", "2025-03-26")) {
            HttpResponse<String> r = post(m, PING, "MCP-Protocol-Version", v);
            assertEquals(200, r.statusCode(), () -> "MCP-Protocol-Version " + v + ": " + r.body());
        }
        HttpResponse<String> noVersionHeader = m.send(m.post(PING).header("Mcp-Session-Id", session).build());
        assertEquals(200, noVersionHeader.statusCode(), () -> "no MCP-Protocol-Version (2025-03-26 assumed): " + noVersionHeader.body());
        // A notification of an unknown session is refused too.
        assertRpcError(m, post(m, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":1}}",
                "Mcp-Session-Id", "nope"), 404, -32600, "a notification in an unknown session");

        // No server-initiated stream: GET 405 (Allow: POST, DELETE); other methods 405 too.
        HttpResponse<String> get = m.send(m.request("GET").header("Accept", "text/event-stream").build());
        assertRpcError(m, get, 405, -32600, "GET");
        Set<String> allow = new HashSet<>();
        for (String a : get.headers().firstValue("Allow").orElse("").split(",")) allow.add(a.strip());
        assertTrue(allow.containsAll(List.of("POST", "DELETE")), () -> "Allow: " + get.headers().map());
        assertRpcError(m, m.send(m.request("PUT").build()), 405, -32600, "PUT");

        // DELETE ends the session: 204, then 404 for it (and for a second DELETE); DELETE without a session id: 400.
        HttpResponse<String> deleted = m.send(m.request("DELETE").build());
        assertEquals(204, deleted.statusCode(), () -> "DELETE: " + deleted.body());
        assertRpcError(m, post(m, PING), 404, -32600, "ping after DELETE");
        assertRpcError(m, m.send(m.request("DELETE").build()), 404, -32600, "DELETE again");
        m.sessionId(null);
        assertRpcError(m, m.send(m.request("DELETE").build()), 400, -32600, "DELETE without Mcp-Session-Id");
    }

    @Test
    void everyRefusalDirectAndThroughTheRelay() {
        CommandArpc c = startWithMcp(env);
        refusals(c, McpClient.direct(c));
        refusals(c, McpClient.relayed(c));

        // ?token= names the tunnel as well as X-Arp-Token does.
        McpClient byQuery = McpClient.relayed(c);
        HttpRequest r = HttpRequest.newBuilder(URI.create(c.url("/mcp?token=" + c.clientId))).timeout(WAIT)
                .header("Authorization", "Bearer " + c.key()).header("Content-Type", "application/json").header("Accept", McpClient.ACCEPT)
                .POST(HttpRequest.BodyPublishers.ofString(byQuery.message("initialize", Map.of("protocolVersion", "2025-06-18")).toString())).build();
        HttpResponse<String> answer = byQuery.send(r);
        assertEquals("2025-06-18", byQuery.json(answer, 200, "initialize via ?token=").path("result").path("protocolVersion").asText(), answer::body);
    }

    @Test
    void initializeNegotiatesTheVersionAndSessionsAreSeparate() {
        CommandArpc c = startWithMcp(env);
        Set<String> sessions = new HashSet<>();
        for (McpClient m : List.of(McpClient.direct(c), McpClient.relayed(c))) {
            for (String asked : List.of("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05", "2099-01-01")) {
                McpClient client = m.name.equals("direct") ? McpClient.direct(c) : McpClient.relayed(c);
                JsonNode init = client.initialize(asked);
                JsonNode result = init.path("result");
                String expected = List.of("2025-11-25", "2025-06-18", "2025-03-26").contains(asked) ? asked : "2025-11-25";
                assertEquals(expected, result.path("protocolVersion").asText(), () -> "asked " + asked + ": " + init);
                assertFalse(result.path("capabilities").path("tools").path("listChanged").asBoolean(true), init::toString);
                assertTrue(result.path("capabilities").path("tools").isObject(), init::toString);
                assertEquals("arp", result.path("serverInfo").path("name").asText(), init::toString);
                assertFalse(result.path("serverInfo").path("version").asText().isBlank(), init::toString);
                assertFalse(result.path("instructions").asText().isBlank(), init::toString);
                String id = client.sessionId();
                assertTrue(id.length() >= 32 && id.chars().allMatch(ch -> ch >= 0x21 && ch <= 0x7e), () -> "Mcp-Session-Id " + id);
                assertTrue(sessions.add(id), "every initialize gets a session of its own");

                // In the session: ping → {}, with the negotiated MCP-Protocol-Version.
                JsonNode pong = client.rpc("ping", null);
                assertTrue(pong.path("result").isObject() && pong.path("result").isEmpty(), pong::toString);
            }
        }

        // A string id is echoed as a string; notifications and responses are 202 with no body.
        McpClient m = McpClient.direct(c);
        m.initialize("2025-11-25");
        HttpResponse<String> r = post(m, "{\"jsonrpc\":\"2.0\",\"id\":\"req-x\",\"method\":\"ping\"}");
        assertEquals("req-x", m.json(r, 200, "ping with a string id").path("id").textValue(), r::body);
        for (String body : List.of("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}",
                "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":3,\"reason\":\"x\"}}",
                "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/roots/list_changed\"}",
                "{\"jsonrpc\":\"2.0\",\"id\":42,\"result\":{}}",
                "{\"jsonrpc\":\"2.0\",\"id\":43,\"error\":{\"code\":-1,\"message\":\"no\"}}")) {
            HttpResponse<String> n = post(m, body);
            assertEquals(202, n.statusCode(), () -> body + ": " + n.body());
            assertEquals("", n.body(), () -> body + ": a 202 has no body");
        }

        // One session's DELETE leaves the others working.
        McpClient other = McpClient.relayed(c);
        other.initialize("2025-06-18");
        assertEquals(204, m.send(m.request("DELETE").build()).statusCode());
        assertTrue(other.rpc("ping", null).has("result"), "another session survives a DELETE");
    }

    @Test
    void errorsKeepTheRequestIdAndTheMcpPortServesOnlyMcp() {
        arp.tests.support.Origin origin = env.origin();
        CommandArpc c = startWithMcp(env, "--proxy-ports", String.valueOf(origin.port()));
        for (McpClient m : List.of(McpClient.direct(c), McpClient.relayed(c))) {
            m.initialize("2025-11-25");
            String session = m.sessionId();
            // Session errors of a request with an id: the error answers that id (a client matches answers by id).
            m.sessionId(null);
            JsonNode none = assertRpcError(m, post(m, "{\"jsonrpc\":\"2.0\",\"id\":41,\"method\":\"tools/list\",\"params\":{}}"), 400, -32600,
                    "tools/list without Mcp-Session-Id");
            assertTrue(none.path("id").isNumber() && none.path("id").asLong() == 41, () -> m + ": the error's id: " + none);
            JsonNode unknown = assertRpcError(m, post(m, "{\"jsonrpc\":\"2.0\",\"id\":\"req-42\",\"method\":\"tools/list\"}",
                    "Mcp-Session-Id", "0123456789abcdef0123456789abcdef0123456789abcdef"), 404, -32600, "tools/list in an unknown session");
            assertEquals("req-42", unknown.path("id").textValue(), () -> m + ": the error's id: " + unknown);
            m.sessionId(session);
            JsonNode version = assertRpcError(m, post(m, "{\"jsonrpc\":\"2.0\",\"id\":43,\"method\":\"ping\"}", "MCP-Protocol-Version", "1999-01-01"),
                    400, -32600, "an unsupported MCP-Protocol-Version");
            assertEquals(43, version.path("id").asLong(-1), () -> m + ": the error's id: " + version);
            // A method error in the session keeps it too (and the session still works).
            JsonNode method = m.rpc("tools/frobnicate", Map.of());
            assertEquals(-32601, method.path("error").path("code").asInt(), method::toString);
            assertTrue(m.rpc("ping", null).has("result"));
        }

        // get_session with the largest since: nothing, not every event again (since + 1 must not overflow).
        McpClient m = McpClient.direct(c);
        m.initialize("2025-11-25");
        String tag = FakeAgents.tag("mcp-since");
        String id = c.create("codex", tag, "lines=2").path("session_id").asText();
        awaitToolStatus(m, id, "completed");
        JsonNode events = m.callOk("get_session", Map.of("session_id", id, "since", Long.MAX_VALUE, "max_events", 200)).path("recent_events");
        assertEquals(0, events.size(), () -> "get_session since " + Long.MAX_VALUE + ": " + events);

        // The MCP port serves /mcp only: not the proxy (even to a --proxy-ports port), not the REST API. With the key.
        URI mcp = c.mcpUrl();
        for (String path : List.of("/proxy/" + origin.port() + "/hello", "/api/sessions", "/api/sessions/" + id)) {
            HttpResponse<String> r = m.send(HttpRequest.newBuilder(mcp.resolve(path)).timeout(WAIT)
                    .header("Authorization", "Bearer " + c.key()).header("Accept", "application/json").GET().build());
            assertEquals(404, r.statusCode(), () -> "GET " + path + " on the MCP port: " + r.body());
            assertFalse(r.body().contains(id) || r.body().contains("hello world"), () -> "GET " + path + " on the MCP port: " + r.body());
        }
        assertEquals(0, origin.requests(), "the MCP port reached a --proxy-ports service");
        // The API port does serve them (so the 404s above were about the port).
        HttpResponse<String> viaApi = c.call("GET", "/proxy/" + origin.port() + "/hello", null);
        assertEquals(200, viaApi.statusCode(), viaApi::body);
        assertEquals(1, origin.requests());
    }

    @Test
    void toolsListMethodErrorsAndInBandToolFailures() {
        CommandArpc c = startWithMcp(env);
        for (McpClient m : List.of(McpClient.direct(c), McpClient.relayed(c))) {
            m.initialize("2025-11-25");
            JsonNode tools = m.result("tools/list", Map.of()).path("tools");
            assertTrue(tools.isArray() && !tools.isEmpty(), tools::toString);
            List<String> names = new ArrayList<>();
            for (JsonNode t : tools) {
                String name = t.path("name").asText();
                names.add(name);
                assertFalse(t.path("description").asText().isBlank(), () -> "description of " + t);
                JsonNode schema = t.path("inputSchema");
                assertEquals("object", schema.path("type").asText(), () -> "inputSchema of " + name + ": " + schema);
                if (schema.has("properties")) assertTrue(schema.get("properties").isObject(), () -> name + ": " + schema);
                for (JsonNode req : schema.path("required")) {
                    assertTrue(schema.path("properties").has(req.asText()), () -> name + ": required " + req + " is not a property: " + schema);
                }
            }
            assertTrue(names.containsAll(CONTRACT_TOOLS), () -> "tools: " + names);
            assertEquals(names.size(), new HashSet<>(names).size(), () -> "tool names repeat: " + names);
            JsonNode approval = tools.get(names.indexOf("approval_prompt"));
            assertTrue(approval.path("inputSchema").path("properties").has("tool_name") && approval.path("inputSchema").path("properties").has("input"),
                    approval::toString);

            // Protocol errors: JSON-RPC errors with HTTP 200.
            assertEquals(-32601, m.rpc("tools/frobnicate", Map.of()).path("error").path("code").asInt(), "unknown method");
            assertEquals(-32601, m.rpc("resources/list", Map.of()).path("error").path("code").asInt(), "resources are not offered");
            assertEquals(-32602, m.rpc("tools/call", Map.of("name", "no_such_tool", "arguments", Map.of())).path("error").path("code").asInt(), "unknown tool");
            assertEquals(-32602, m.rpc("tools/call", Map.of("arguments", Map.of())).path("error").path("code").asInt(), "no tool name");
            assertEquals(-32602, m.rpc("tools/call", Map.of("name", "list_sessions", "arguments", List.of(1, 2))).path("error").path("code").asInt(),
                    "arguments that are not an object");
            assertEquals(-32602, m.rpc("tools/call", Map.of("name", "get_session", "arguments", "x")).path("error").path("code").asInt(),
                    "arguments that are a string");

            // Tool failures: in-band, isError true, one text naming the problem.
            String project = c.project().toString();
            String noPath = m.callFails("start_session", Map.of("prompt", "hello"));
            assertTrue(noPath.contains("project_path"), noPath);
            String noPrompt = m.callFails("start_session", Map.of("project_path", project));
            assertTrue(noPrompt.contains("prompt"), noPrompt);
            String relative = m.callFails("start_session", Map.of("prompt", "hi", "project_path", "relative/dir"));
            assertTrue(relative.contains("absolute"), relative);
            String badExecutor = m.callFails("start_session", Map.of("prompt", "hi", "project_path", project, "executor", "cursor"));
            assertTrue(badExecutor.contains("executor"), badExecutor);
            String codexApprovals = m.callFails("start_session", Map.of("prompt", "hi", "project_path", project, "executor", "codex", "remote_approvals", true));
            assertTrue(codexApprovals.contains("remote_approvals"), codexApprovals);
            String unknown = m.callFails("get_session", Map.of("session_id", "00000000-0000-0000-0000-000000000000"));
            assertTrue(unknown.contains("no session"), unknown);
            String missing = m.callFails("get_session", Map.of());
            assertTrue(missing.contains("session_id"), missing);
            String cancelUnknown = m.callFails("cancel_session", Map.of("session_id", "nope"));
            assertTrue(cancelUnknown.contains("no session"), cancelUnknown);
            String answerUnknown = m.callFails("answer_permission", Map.of("session_id", "nope", "request_id", "r1", "behavior", "allow"));
            assertTrue(answerUnknown.contains("no session"), answerUnknown);
            assertTrue(m.callOk("list_sessions", Map.of()).path("sessions").isEmpty(), "no session was started by the failures");

            // approval_prompt with no running session cannot tell who asks: a deny, not an error.
            JsonNode prompt = m.call("approval_prompt", Map.of("tool_name", "Bash", "input", Map.of("command", "ls")));
            assertFalse(prompt.path("isError").asBoolean(true), prompt::toString);
            JsonNode decision = McpClient.parse(prompt.path("content").path(0).path("text").asText());
            assertEquals("deny", decision.path("behavior").asText(), prompt::toString);
            assertTrue(decision.path("message").asText().contains("session_id"), prompt::toString);
        }
    }

    @Test
    void sessionToolsRunAgentsEndToEnd() {
        CommandArpc c = startWithMcp(env);
        McpClient relayed = McpClient.relayed(c);
        McpClient direct = McpClient.direct(c);
        relayed.initialize("2025-11-25");
        direct.initialize("2025-06-18");

        // start_session through the relay runs the fake claude with the contract's argv, in the project.
        String project = c.project().toString();
        String tag = FakeAgents.tag("mcp-claude");
        String prompt = FakeAgents.prompt(tag, "lines=2");
        JsonNode started = relayed.callOk("start_session", fields("executor", "claude", "prompt", prompt, "project_path", project,
                "model", "claude-opus-4-1"));
        String id = started.path("session_id").asText();
        assertEquals("running", started.path("status").asText(), started::toString);
        assertEquals("claude", started.path("executor").asText(), started::toString);
        assertEquals(project, started.path("project_path").asText(), started::toString);
        FakeAgents.Run run = c.fakes.run(tag).awaitStarted(WAIT);
        assertEquals(List.of("-p", "--output-format", "stream-json", "--verbose", "--model=claude-opus-4-1", "--", prompt), run.argv());
        assertEquals(project, run.cwd());

        // get_session (direct) until it completed: details plus its recent events, numbered from 1.
        JsonNode done = awaitToolStatus(direct, id, "completed");
        assertEquals(0, done.path("exit_code").asInt(-1), done::toString);
        assertEquals(run.sessionId(), done.path("agent_session_id").asText(), done::toString);
        JsonNode all = direct.callOk("get_session", Map.of("session_id", id, "since", 0, "max_events", 200)).path("recent_events");
        List<String> expected = new ArrayList<>(List.of("session"));
        for (String ignored : run.stdout()) expected.add("message");
        expected.add("complete");
        List<String> kinds = new ArrayList<>();
        for (int i = 0; i < all.size(); i++) {
            assertEquals(i + 1, all.get(i).path("id").asLong(), () -> "event ids: " + all);
            kinds.add(all.get(i).path("event").asText());
        }
        assertEquals(expected, kinds, () -> "events: " + all);
        List<String> data = new ArrayList<>();
        for (JsonNode e : all) if (e.path("event").asText().equals("message")) data.add(e.path("data").asText());
        assertEquals(run.stdout(), data, "the agent's lines, verbatim");
        JsonNode complete = McpClient.parse(all.get(all.size() - 1).path("data").asText());
        assertEquals("completed", complete.path("status").asText(), complete::toString);

        // since / max_events page through the events; by default the most recent ones.
        JsonNode page = direct.callOk("get_session", Map.of("session_id", id, "since", 2, "max_events", 2)).path("recent_events");
        assertEquals(List.of(3L, 4L), List.of(page.get(0).path("id").asLong(), page.get(1).path("id").asLong()), page::toString);
        assertEquals(2, page.size(), page::toString);
        JsonNode recent = direct.callOk("get_session", Map.of("session_id", run.sessionId(), "max_events", 1)).path("recent_events");
        assertEquals(1, recent.size(), recent::toString);
        assertEquals("complete", recent.get(0).path("event").asText(), "by the agent's own id, the last event: " + recent);

        // list_sessions has it, as GET /api/sessions does.
        JsonNode listed = relayed.callOk("list_sessions", Map.of());
        assertEquals(1, listed.path("total").asInt(), listed::toString);
        assertEquals(id, listed.path("sessions").path(0).path("session_id").asText(), listed::toString);
        assertEquals("completed", listed.path("sessions").path(0).path("status").asText(), listed::toString);

        // cancel_session stops a running run (the fake waits at its gate); a finished one cannot be cancelled.
        String gated = FakeAgents.tag("mcp-gated");
        JsonNode g = relayed.callOk("start_session", fields("executor", "gemini", "prompt", FakeAgents.prompt(gated, "lines=1", "gate=1"),
                "project_path", project));
        String gid = g.path("session_id").asText();
        c.fakes.run(gated).awaitGated(WAIT);
        assertEquals("running", direct.callOk("get_session", Map.of("session_id", gid)).path("status").asText());
        JsonNode cancelled = relayed.callOk("cancel_session", Map.of("session_id", gid));
        assertEquals(gid, cancelled.path("session_id").asText(), cancelled::toString);
        assertEquals("session_cancelled", cancelled.path("type").asText(), cancelled::toString);
        JsonNode end = awaitToolStatus(direct, gid, "cancelled");
        assertTrue(end.path("error").asText().contains("MCP"), () -> "the reason names MCP: " + end);
        FakeAgents.awaitGone(WAIT, "the cancelled fake", c.fakes.run(gated).pid());
        String again = relayed.callFails("cancel_session", Map.of("session_id", gid));
        assertTrue(again.contains("finished"), again);
        assertEquals("cancelled", c.details(gid).path("status").asText(), "the REST API sees the same run");

        JsonNode both = direct.callOk("list_sessions", Map.of());
        assertEquals(List.of(gid, id), List.of(both.path("sessions").path(0).path("session_id").asText(),
                both.path("sessions").path(1).path("session_id").asText()), () -> "newest first: " + both);
    }

    @Test
    void approvalPromptIsDeniedAfterTheTimeoutAndWhenTheRunEnds() throws Exception {
        CommandArpc c = startWithMcp(env, "--approval-timeout", "2");
        McpClient m = McpClient.direct(c);
        m.initialize("2025-11-25");
        String tag = FakeAgents.tag("mcp-waiting");
        String id = c.create(fields("prompt", FakeAgents.prompt(tag, "lines=0", "gate=0"), "project_path", c.project().toString()))
                .path("session_id").asText();
        FakeAgents.Run run = c.fakes.run(tag).awaitGated(WAIT);

        // Nobody answers: after --approval-timeout the call returns a deny, and the stream records it.
        long t0 = System.nanoTime();
        JsonNode r = m.call("approval_prompt", Map.of("tool_name", "Bash", "input", Map.of("command", "make")));
        double waited = (System.nanoTime() - t0) / 1e9;
        assertTrue(waited > 1.5 && waited < 10, "answered after about 2 s, not " + waited);
        assertFalse(r.path("isError").asBoolean(true), r::toString);
        assertFalse(r.has("structuredContent"), () -> "approval_prompt answers with text only: " + r);
        assertEquals(McpClient.parse("{\"behavior\":\"deny\",\"message\":\"no answer within 2 s\"}"),
                McpClient.parse(r.path("content").path(0).path("text").asText()), r::toString);
        List<JsonNode> events = new ArrayList<>();
        for (JsonNode e : m.callOk("get_session", Map.of("session_id", id, "since", 0)).path("recent_events")) events.add(e);
        JsonNode request = events.stream().filter(e -> e.path("event").asText().equals("permission_request")).findFirst().orElseThrow();
        JsonNode response = events.stream().filter(e -> e.path("event").asText().equals("permission_response")).findFirst().orElseThrow();
        String rid = McpClient.parse(request.path("data").asText()).path("request_id").asText();
        assertTrue(rid.startsWith("mcp-"), request::toString);
        assertEquals(McpClient.parse("{\"request_id\":\"" + rid + "\",\"behavior\":\"deny\",\"by\":\"timeout\",\"message\":\"no answer within 2 s\"}"),
                McpClient.parse(response.path("data").asText()));

        // A call still waiting when the run ends is denied then, not left hanging.
        var pending = java.util.concurrent.CompletableFuture.supplyAsync(() ->
                m.call("approval_prompt", Map.of("tool_name", "Bash", "input", Map.of("command", "make install"), "session_id", id)));
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (countEvents(m, id, "permission_request") < 2) {
            if (System.nanoTime() > deadline) throw new AssertionError("no second permission_request");
            sleep(50);
        }
        m.callOk("cancel_session", Map.of("session_id", id));
        JsonNode ended = pending.get(WAIT.toSeconds(), java.util.concurrent.TimeUnit.SECONDS);
        JsonNode decision = McpClient.parse(ended.path("content").path(0).path("text").asText());
        assertEquals("deny", decision.path("behavior").asText(), ended::toString);
        assertFalse(decision.path("message").asText().isBlank(), ended::toString);
        FakeAgents.awaitGone(WAIT, "the cancelled fake", run.pid());
    }

    private static long countEvents(McpClient m, String id, String kind) {
        long n = 0;
        for (JsonNode e : m.callOk("get_session", Map.of("session_id", id, "since", 0, "max_events", 200)).path("recent_events")) {
            if (e.path("event").asText().equals(kind)) n++;
        }
        return n;
    }

    /** Polls get_session until the status is {@code status} (or fails on another final one, or after WAIT). */
    static JsonNode awaitToolStatus(McpClient m, String id, String status) {
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (true) {
            JsonNode d = m.callOk("get_session", Map.of("session_id", id));
            String s = d.path("status").asText();
            if (s.equals(status)) return d;
            if (!s.equals("running")) throw new AssertionError("session " + id + " ended " + s + ", expected " + status + ": " + d);
            if (System.nanoTime() > deadline) throw new AssertionError("session " + id + " not " + status + " within " + WAIT + ": " + d);
            sleep(100);
        }
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted");
        }
    }
}
