package arp.tests;

import arp.tests.support.CommandArpc;
import arp.tests.support.FakeAgents;
import arp.tests.support.Inspector;
import arp.tests.support.McpClient;
import arp.tests.support.Proc;
import arp.tests.support.Sse;
import arp.tests.support.TestEnv;
import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static arp.tests.support.CommandArpc.fields;
import static arp.tests.support.CommandArpc.json;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The real MCP Inspector (CLI mode, a client arp's code knows nothing of) against arpc's MCP server,
 * on its own port and through the relay, authenticated with --header: it lists the tools, calls them,
 * starts a fake agent run, and its approval_prompt call waits until the remote user answers through
 * the REST API, then prints the decision.
 */
class McpInspectorTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final Duration WAIT = CommandArpc.WAIT;

    private static String auth(CommandArpc c) { return "Authorization: Bearer " + c.key(); }

    private static JsonNode ok(Inspector.Result r, String what) {
        assertEquals(0, r.exit(), () -> what + ": " + r);
        JsonNode result = r.json().path("result");
        assertTrue(result.isObject(), () -> what + ": no result: " + r);
        return result;
    }

    @Test
    void inspectorListsToolsCallsThemAndStartsARun() {
        CommandArpc c = CommandArpc.start(env, "--enable-mcp", "--mcp-port", "0");
        Inspector inspector = new Inspector(env);
        String direct = c.mcpUrl().toString();
        String relayed = c.url("/mcp");
        String token = "X-Arp-Token: " + c.clientId;

        // tools/list, on the MCP port and through the relay.
        for (String[] target : new String[][] {{direct}, {relayed, "--header", token}}) {
            List<String> args = new ArrayList<>(List.of(target).subList(1, target.length));
            args.addAll(List.of("--header", auth(c), "--method", "tools/list"));
            JsonNode tools = ok(inspector.run(target[0], args.toArray(String[]::new)), "tools/list " + target[0]).path("tools");
            List<String> names = new ArrayList<>();
            for (JsonNode t : tools) {
                names.add(t.path("name").asText());
                assertEquals("object", t.path("inputSchema").path("type").asText(), t::toString);
            }
            assertTrue(names.containsAll(McpTest.CONTRACT_TOOLS), () -> "tools via " + target[0] + ": " + names);
        }

        // Without the key, or with another one, the Inspector gets nowhere (exit 3: auth_required).
        Inspector.Result none = inspector.run(direct, "--method", "tools/list");
        assertEquals(3, none.exit(), none::toString);
        assertEquals("auth_required", none.error().path("code").asText(), none::toString);
        Inspector.Result wrong = inspector.run(relayed, "--header", token, "--header", "Authorization: Bearer " + CommandArpc.newKey(),
                "--method", "tools/list");
        assertEquals(3, wrong.exit(), wrong::toString);
        assertTrue(wrong.error().path("message").asText().contains("API key"), wrong::toString);

        // tools/call list_sessions: nothing yet.
        JsonNode empty = ok(inspector.run(direct, "--header", auth(c), "--method", "tools/call", "--tool-name", "list_sessions"), "list_sessions");
        assertFalse(empty.path("isError").asBoolean(true), empty::toString);
        assertEquals(0, empty.path("structuredContent").path("total").asInt(-1), empty::toString);

        // tools/call start_session with --tool-arg values (through the relay): a fake claude run.
        String project = c.project().toString();
        String tag = FakeAgents.tag("inspector");
        String prompt = FakeAgents.prompt(tag, "lines=2");
        JsonNode started = ok(inspector.run(relayed, "--header", token, "--header", auth(c), "--method", "tools/call",
                "--tool-name", "start_session", "--tool-arg", "executor=claude", "prompt=" + prompt, "project_path=" + project,
                "remote_approvals=false"), "start_session");
        assertFalse(started.path("isError").asBoolean(true), started::toString);
        String id = started.path("structuredContent").path("session_id").asText();
        assertEquals("running", started.path("structuredContent").path("status").asText(), started::toString);
        FakeAgents.Run run = c.fakes.run(tag).awaitStarted(WAIT);
        assertEquals(List.of("-p", "--output-format", "stream-json", "--verbose", "--", prompt), run.argv());
        assertEquals(project, run.cwd());
        c.awaitStatus(id, WAIT, "completed");

        // get_session and list_sessions show it; a failing tool is reported as such (exit 5, isError).
        JsonNode got = ok(inspector.run(direct, "--header", auth(c), "--method", "tools/call", "--tool-name", "get_session",
                "--tool-arg", "session_id=" + id), "get_session");
        assertEquals("completed", got.path("structuredContent").path("status").asText(), got::toString);
        assertEquals(run.sessionId(), got.path("structuredContent").path("agent_session_id").asText(), got::toString);
        JsonNode listed = ok(inspector.run(direct, "--header", auth(c), "--method", "tools/call", "--tool-name", "list_sessions"), "list_sessions");
        assertEquals(id, listed.path("structuredContent").path("sessions").path(0).path("session_id").asText(), listed::toString);
        Inspector.Result failing = inspector.run(direct, "--header", auth(c), "--method", "tools/call", "--tool-name", "get_session",
                "--tool-arg", "session_id=no-such-session");
        assertEquals(5, failing.exit(), failing::toString);
        assertTrue(failing.json().path("result").path("isError").asBoolean(false), failing::toString);
        assertTrue(failing.json().path("result").path("content").path(0).path("text").asText().contains("no session"), failing::toString);
    }

    @Test
    void approvalPromptWaitsForTheRemoteUsersAnswer() {
        CommandArpc c = CommandArpc.start(env, "--enable-mcp", "--mcp-port", "0");
        Inspector inspector = new Inspector(env);
        String project = c.project().toString();
        String tag = FakeAgents.tag("asker");
        // A run that stays running (the fake waits at its gate) for approval_prompt to attach to.
        String id = c.create(fields("executor", "claude", "prompt", FakeAgents.prompt(tag, "lines=0", "gate=0"), "project_path", project))
                .path("session_id").asText();
        FakeAgents.Run run = c.fakes.run(tag).awaitGated(WAIT);

        try (Sse s = c.stream("/api/sessions/" + id)) {
            // 1. No session_id: it attaches to the only running run. Allowed with changed input.
            Proc asking = inspector.start(c.mcpUrl().toString(), "--header", auth(c), "--method", "tools/call", "--tool-name", "approval_prompt",
                    "--tool-arg", "tool_name=Bash", "input={\"command\":\"rm -rf build\"}", "tool_use_id=toolu_77");
            JsonNode req = s.until(e -> e.kind().equals("permission_request"), "the Inspector's permission_request", WAIT).getLast().json();
            String rid = req.path("request_id").asText();
            assertEquals("Bash", req.path("tool_name").asText(), req::toString);
            assertEquals(parse("{\"command\":\"rm -rf build\"}"), req.path("input"), req::toString);
            assertEquals("toolu_77", req.path("tool_use_id").asText(), req::toString);
            McpTest.sleep(1000);
            assertTrue(asking.isAlive(), () -> "the Inspector's call waits for the answer: " + asking.stdoutText() + asking.stderrText());

            HttpResponse<String> answered = c.call("POST", "/api/sessions/" + id + "/permissions/" + rid,
                    json(Map.of("behavior", "allow", "updated_input", Map.of("command", "rm -rf build/tmp"))));
            assertEquals(200, answered.statusCode(), answered::body);
            Inspector.Result r = Inspector.await(asking, WAIT);
            JsonNode result = ok(r, "approval_prompt");
            assertFalse(result.path("isError").asBoolean(true), result::toString);
            assertEquals(1, result.path("content").size(), result::toString);
            assertEquals("text", result.path("content").path(0).path("type").asText(), result::toString);
            assertEquals(parse("{\"behavior\":\"allow\",\"updatedInput\":{\"command\":\"rm -rf build/tmp\"}}"),
                    parse(result.path("content").path(0).path("text").asText()), () -> "the Inspector shows the decision: " + r);
            JsonNode response = s.until(e -> e.kind().equals("permission_response"), "permission_response", WAIT).getLast().json();
            assertEquals(rid, response.path("request_id").asText(), response::toString);
            assertEquals("user", response.path("by").asText(), response::toString);

            // 2. With session_id (the agent's own id), through the relay; denied with a message.
            Proc second = inspector.start(c.url("/mcp"), "--header", "X-Arp-Token: " + c.clientId, "--header", auth(c),
                    "--method", "tools/call", "--tool-name", "approval_prompt", "--tool-arg", "tool_name=Write",
                    "input={\"file_path\":\"/etc/passwd\"}", "session_id=" + run.sessionId());
            JsonNode req2 = s.until(e -> e.kind().equals("permission_request"), "the second permission_request", WAIT).getLast().json();
            assertEquals("Write", req2.path("tool_name").asText(), req2::toString);
            HttpResponse<String> denied = c.call("POST", "/api/sessions/" + id + "/permissions/" + req2.path("request_id").asText(),
                    json(Map.of("behavior", "deny", "message", "not that file")));
            assertEquals(200, denied.statusCode(), denied::body);
            Inspector.Result r2 = Inspector.await(second, WAIT);
            JsonNode result2 = ok(r2, "approval_prompt with session_id");
            assertEquals(parse("{\"behavior\":\"deny\",\"message\":\"not that file\"}"),
                    parse(result2.path("content").path(0).path("text").asText()), r2::toString);
        }
        run.go();
        c.awaitStatus(id, WAIT, "completed");
    }

    /** McpClient.parse, for brevity. */
    private static JsonNode parse(String s) { return McpClient.parse(s); }
}
