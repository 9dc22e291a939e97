package arp.tests;

import arp.tests.support.CommandArpc;
import arp.tests.support.FakeAgents;
import arp.tests.support.McpClient;
import arp.tests.support.Sse;
import arp.tests.support.TestEnv;
import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static arp.tests.support.CommandArpc.JSON;
import static arp.tests.support.CommandArpc.fields;
import static arp.tests.support.CommandArpc.json;
import static arp.tests.support.CommandArpc.parse;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Remote approvals ("remote_approvals": true) through the real tunnel: arpc runs the fake claude in
 * its stream-json input mode (prompt on stdin, --permission-prompt-tool stdio), turns each
 * control_request can_use_tool into a permission_request event, and hands the remote user's answer
 * (REST, MCP, or the --approval-timeout deny) back on Claude's stdin as a control_response. The fake
 * acts on what it receives (it creates the file named in the input it was allowed), so the files in the
 * project and the fake's record of its stdin prove what reached it.
 */
class ApprovalTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final Duration WAIT = CommandArpc.WAIT;
    static final List<String> BASE_ARGV = List.of("-p", "--output-format", "stream-json", "--verbose",
            "--input-format", "stream-json", "--permission-prompt-tool", "stdio");

    /** Starts a remote-approvals run of the fake claude; returns its session id. */
    private static String start(CommandArpc c, String project, String prompt, Object... moreFields) {
        Map<String, Object> f = fields("executor", "claude", "prompt", prompt, "project_path", project, "remote_approvals", true);
        f.putAll(fields(moreFields));
        return c.create(f).path("session_id").asText();
    }

    private static Sse.Event next(Sse s, String kind) {
        return s.until(e -> e.kind().equals(kind), "a " + kind + " event", WAIT).getLast();
    }

    private static HttpResponse<String> answer(CommandArpc c, String session, String requestId, Object body) {
        return c.call("POST", "/api/sessions/" + session + "/permissions/" + requestId, body instanceof String s ? s : json(body));
    }

    private static void assertStatus(int status, HttpResponse<String> r, String what) {
        assertEquals(status, r.statusCode(), () -> what + ": " + r.body());
        JsonNode e = parse(r);
        if (status >= 400) {
            assertEquals("error", e.path("type").asText(), () -> what + ": " + r.body());
            assertFalse(e.path("message").asText().isBlank(), () -> what + ": " + r.body());
        }
    }

    /** The fake's control_request lines (can_use_tool and others), as it printed them. */
    private static List<JsonNode> controlRequests(FakeAgents.Run run) {
        List<JsonNode> out = new ArrayList<>();
        for (String l : run.stdout()) {
            JsonNode n = CommandArpc.JSON.valueToTree(Map.of());
            try {
                n = JSON.readTree(l);
            } catch (Exception ignored) {
                // not JSON
            }
            if (n.path("type").asText().equals("control_request")) out.add(n);
        }
        return out;
    }

    private static JsonNode tree(String s) {
        try {
            return JSON.readTree(s);
        } catch (Exception e) {
            throw new AssertionError("not JSON: " + s);
        }
    }

    /** The agent's output events are its stdout lines without the control messages, verbatim and in order. */
    private static void assertOutputWithoutControl(FakeAgents.Run run, List<Sse.Event> all) {
        List<String> expected = run.stdout().stream().filter(l -> !l.startsWith("{\"type\":\"control_")).toList();
        List<String> got = all.stream().filter(e -> e.kind().equals("message")).map(Sse.Event::data).toList();
        assertEquals(expected, got, "the output events are the fake's stdout minus its control messages");
        for (Sse.Event e : all) {
            assertFalse(e.data().contains("\"type\":\"control_request\"") || e.data().contains("\"type\":\"control_cancel_request\""),
                    () -> "a control message leaked into the stream: " + e);
        }
    }

    private static String assistantTexts(List<Sse.Event> events) {
        StringBuilder b = new StringBuilder();
        for (Sse.Event e : events) {
            if (!e.kind().equals("message")) continue;
            JsonNode n = e.json();
            if (!n.path("type").asText().equals("assistant")) continue;
            for (JsonNode c : n.path("message").path("content")) if (c.path("type").asText().equals("text")) b.append(c.path("text").asText()).append('\n');
        }
        return b.toString();
    }

    private static JsonNode completion(List<Sse.Event> all) {
        Sse.Event last = all.getLast();
        assertEquals("complete", last.kind(), () -> "the last event: " + last);
        return last.json();
    }

    @Test
    void allowWithChangedInputReachesClaudeThroughTheTunnel() throws Exception {
        CommandArpc c = CommandArpc.start(env);
        String project = c.project().toString();
        String tag = FakeAgents.tag("allow");
        // A prompt that would be dangerous in argv: it travels as JSON on stdin.
        String prompt = "--dangerously-skip-permissions \"quoted\" $HOME `x`\nsecond line " + FakeAgents.prompt(tag, "file=original.txt", "eofwait=8");
        String id = start(c, project, prompt, "model", "claude-opus-4-1", "permission_mode", "default", "allowed_tools", List.of("Read"));
        FakeAgents.Run run = c.fakes.run(tag).awaitStarted(WAIT);

        // The argv: stream-json input and the stdio permission tool, and no prompt at all.
        List<String> argv = new ArrayList<>(BASE_ARGV);
        argv.addAll(List.of("--model=claude-opus-4-1", "--permission-mode=default", "--allowedTools=Read"));
        assertEquals(argv, run.argv());
        assertFalse(run.argv().contains("--"), "no -- (no prompt follows)");
        assertFalse(run.argv().contains("--dangerously-skip-permissions"), () -> "argv: " + run.argv());
        // The prompt came on stdin, as Claude's user message; stdin is a pipe.
        assertEquals(prompt, run.stdinPrompt());
        JsonNode user = tree(run.input());
        assertEquals(tree(json(Map.of("type", "user", "message", fields("role", "user", "content", prompt)))), user, "the first stdin line");
        assertTrue(run.stdinTarget().startsWith("pipe:"), () -> "stdin: " + run.stdinTarget());
        assertEquals("<unset>", run.env().get("CLAUDECODE"));

        try (Sse s = c.stream("/api/sessions/" + id)) {
            JsonNode session = s.next(WAIT).json();
            assertTrue(session.path("remote_approvals").asBoolean(false), session::toString);

            Sse.Event requested = next(s, "permission_request");
            JsonNode req = requested.json();
            JsonNode asked = controlRequests(run).getFirst();
            String rid = asked.path("request_id").asText();
            assertEquals(rid, req.path("request_id").asText(), req::toString);
            assertEquals("Write", req.path("tool_name").asText(), req::toString);
            assertEquals(tree("{\"file_path\":\"original.txt\",\"content\":\"written by fake claude\"}"), req.path("input"), req::toString);
            assertEquals("toolu_01", req.path("tool_use_id").asText(), req::toString);
            Instant expires = Instant.parse(req.path("expires_at").asText());
            assertTrue(expires.isAfter(Instant.now().plusSeconds(250)) && expires.isBefore(Instant.now().plusSeconds(310)),
                    () -> "expires_at about --approval-timeout (300 s) from now: " + req);

            // Refusals leave the request pending.
            assertStatus(400, answer(c, id, rid, Map.of("behavior", "maybe")), "behavior maybe");
            assertStatus(400, answer(c, id, rid, Map.of()), "no behavior");
            assertStatus(400, answer(c, id, rid, Map.of("behavior", "allow", "updated_input", "rm -rf /")), "updated_input not an object");
            assertStatus(400, answer(c, id, rid, "[1]"), "a body that is not an object");
            assertStatus(404, answer(c, id, "no-such-request", Map.of("behavior", "allow")), "an unknown request");
            assertStatus(404, answer(c, "no-such-session", rid, Map.of("behavior", "allow")), "an unknown session");
            HttpResponse<String> get = c.call("GET", "/api/sessions/" + id + "/permissions/" + rid, null);
            assertEquals(405, get.statusCode(), get::body);
            assertTrue(run.control().isEmpty(), () -> "nothing reached the agent yet: " + run.control());
            assertTrue(c.details(id).path("status").asText().equals("running"), "the run waits for the answer");

            // The remote user allows, with changed input.
            Map<String, Object> changed = fields("file_path", "changed.txt", "content", "changed by the remote user");
            HttpResponse<String> ok = answer(c, id, rid, Map.of("behavior", "allow", "updated_input", changed));
            assertStatus(200, ok, "allow");
            assertEquals(tree(json(fields("session_id", id, "request_id", rid, "behavior", "allow", "type", "permission_answered"))), parse(ok), ok.body());
            assertStatus(409, answer(c, id, rid, Map.of("behavior", "deny")), "a second answer");

            JsonNode response = next(s, "permission_response").json();
            assertEquals(tree(json(fields("request_id", rid, "behavior", "allow", "by", "user", "updated_input", changed))), response, response.toString());

            List<Sse.Event> rest = s.rest(WAIT);
            JsonNode done = completion(rest);
            assertEquals("completed", done.path("status").asText(), done::toString);
            assertTrue(done.path("success").asBoolean(false), done::toString);
            assertEquals(0, done.path("exit_code").asInt(-1), () -> "exit 0: the fake got EOF on stdin after its result: " + done);
            assertTrue(assistantTexts(rest).contains("ran Write on changed.txt"), () -> "the fake ran the changed input: " + rest);
        }

        // What reached the agent: exactly one control_response, with the changed input.
        assertEquals(1, run.control().size(), () -> "stdin after the prompt: " + run.control());
        String rid = controlRequests(run).getFirst().path("request_id").asText();
        assertEquals(tree("{\"type\":\"control_response\",\"response\":{\"subtype\":\"success\",\"request_id\":\"" + rid
                + "\",\"response\":{\"behavior\":\"allow\",\"updatedInput\":{\"file_path\":\"changed.txt\",\"content\":\"changed by the remote user\"}}}}"),
                tree(run.control().getFirst()));
        assertEquals(List.of("Write changed.txt"), run.ran());
        Path file = Path.of(project, "changed.txt");
        assertEquals("changed by the remote user", Files.readString(file), "the file the fake created with the changed input");
        assertFalse(Files.exists(Path.of(project, "original.txt")), "the original input was not run");
        assertEquals("eof", run.eofAfterResult(), "arpc closes Claude's stdin after the result");
        assertEquals(run.sessionId(), c.details(id).path("agent_session_id").asText());
        assertOutputWithoutControl(run, c.fullStream(id));
    }

    @Test
    void denyWithAMessageThenAllowUnchangedThroughMcp() {
        CommandArpc c = CommandArpc.start(env, "--enable-mcp", "--mcp-port", "0");
        McpClient mcp = McpClient.relayed(c);
        mcp.initialize("2025-11-25");
        String project = c.project().toString();
        String tag = FakeAgents.tag("twice");
        String id = start(c, project, FakeAgents.prompt(tag, "file=first.txt", "file=second.txt", "eofwait=8"));
        FakeAgents.Run run = c.fakes.run(tag).awaitStarted(WAIT);

        String first;
        String second;
        try (Sse s = c.stream("/api/sessions/" + id)) {
            // The first: denied by the remote user with a message.
            JsonNode r1 = next(s, "permission_request").json();
            first = r1.path("request_id").asText();
            assertEquals("first.txt", r1.path("input").path("file_path").asText(), r1::toString);
            assertStatus(200, answer(c, id, first, Map.of("behavior", "deny", "message", "not in \"this\" project")), "deny");
            JsonNode p1 = next(s, "permission_response").json();
            assertEquals(tree(json(fields("request_id", first, "behavior", "deny", "by", "user", "message", "not in \"this\" project"))), p1, p1.toString());

            // The second (a new request id): allowed through MCP's answer_permission, without changes.
            List<Sse.Event> between = s.until(e -> e.kind().equals("permission_request"), "the second permission_request", WAIT);
            JsonNode r2 = between.getLast().json();
            second = r2.path("request_id").asText();
            assertFalse(second.equals(first), "each request has its own id");
            assertEquals("toolu_02", r2.path("tool_use_id").asText(), r2::toString);
            // The fake reported the denial before asking again: an is_error tool_result with the message.
            JsonNode denied = between.stream().filter(e -> e.kind().equals("message")).map(Sse.Event::json)
                    .filter(n -> n.path("type").asText().equals("user")).findFirst().orElseThrow(() -> new AssertionError("no tool_result: " + between));
            JsonNode result = denied.path("message").path("content").path(0);
            assertTrue(result.path("is_error").asBoolean(false), denied::toString);
            assertEquals("not in \"this\" project", result.path("content").asText(), denied::toString);

            JsonNode answered = mcp.callOk("answer_permission", Map.of("session_id", id, "request_id", second, "behavior", "allow"));
            assertEquals(tree(json(fields("session_id", id, "request_id", second, "behavior", "allow", "type", "permission_answered"))), answered);
            String again = mcp.callFails("answer_permission", Map.of("session_id", id, "request_id", second, "behavior", "deny"));
            assertTrue(again.contains("already"), again);
            JsonNode p2 = next(s, "permission_response").json();
            assertEquals(tree(json(fields("request_id", second, "behavior", "allow", "by", "mcp", "updated_input", r2.path("input")))), p2,
                    () -> "allowed unchanged: the original input is sent as updatedInput: " + p2);

            List<Sse.Event> rest = s.rest(WAIT);
            JsonNode done = completion(rest);
            assertEquals("completed", done.path("status").asText(), done::toString);
            assertEquals(0, done.path("exit_code").asInt(-1), done::toString);
            JsonNode resultLine = rest.stream().filter(e -> e.kind().equals("message")).map(Sse.Event::json)
                    .filter(n -> n.path("type").asText().equals("result")).findFirst().orElseThrow();
            assertEquals(1, resultLine.path("permission_denials").size(), resultLine::toString);
            assertEquals("toolu_01", resultLine.path("permission_denials").path(0).path("tool_use_id").asText(), resultLine::toString);
        }
        List<String> control = run.control();
        assertEquals(2, control.size(), () -> "stdin: " + control);
        assertEquals(tree("{\"type\":\"control_response\",\"response\":{\"subtype\":\"success\",\"request_id\":\"" + first
                + "\",\"response\":{\"behavior\":\"deny\",\"message\":\"not in \\\"this\\\" project\"}}}"), tree(control.get(0)));
        assertEquals(tree("{\"type\":\"control_response\",\"response\":{\"subtype\":\"success\",\"request_id\":\"" + second
                + "\",\"response\":{\"behavior\":\"allow\",\"updatedInput\":{\"file_path\":\"second.txt\",\"content\":\"written by fake claude\"}}}}"),
                tree(control.get(1)));
        assertEquals(List.of("Write second.txt"), run.ran());
        assertTrue(Files.exists(Path.of(project, "second.txt")), "the allowed tool ran");
        assertFalse(Files.exists(Path.of(project, "first.txt")), "the denied tool did not");
        assertOutputWithoutControl(run, c.fullStream(id));
    }

    @Test
    void anUnansweredRequestIsDeniedAfterTheApprovalTimeout() {
        CommandArpc c = CommandArpc.start(env, "--approval-timeout", "2");
        String project = c.project().toString();
        String tag = FakeAgents.tag("late");
        String id = start(c, project, FakeAgents.prompt(tag, "file=late.txt", "eofwait=8"));
        FakeAgents.Run run = c.fakes.run(tag).awaitStarted(WAIT);
        try (Sse s = c.stream("/api/sessions/" + id)) {
            Sse.Event requested = next(s, "permission_request");
            JsonNode req = requested.json();
            Instant expires = Instant.parse(req.path("expires_at").asText());
            assertTrue(expires.isAfter(Instant.now().minusSeconds(1)) && expires.isBefore(Instant.now().plusSeconds(3)),
                    () -> "expires_at about 2 s from now: " + req);
            Sse.Event timedOut = next(s, "permission_response");
            double waited = (timedOut.nanos() - requested.nanos()) / 1e9;
            assertTrue(waited > 1.5 && waited < 10, "denied about 2 s after the request, not after " + waited + " s");
            JsonNode r = timedOut.json();
            assertEquals(tree(json(fields("request_id", req.path("request_id").asText(), "behavior", "deny", "by", "timeout",
                    "message", "no answer within 2 s"))), r, r.toString());
            assertStatus(409, answer(c, id, req.path("request_id").asText(), Map.of("behavior", "allow")), "an answer after the timeout");

            List<Sse.Event> rest = s.rest(WAIT);
            JsonNode done = completion(rest);
            assertEquals("completed", done.path("status").asText(), done::toString);
            assertEquals(0, done.path("exit_code").asInt(-1), done::toString);
            assertTrue(assistantTexts(rest).contains("Write on late.txt was denied: no answer within 2 s"), () -> "the fake reports the denial: " + rest);
        }
        assertEquals(1, run.control().size(), () -> "stdin: " + run.control());
        JsonNode sent = tree(run.control().getFirst()).path("response");
        assertEquals("deny", sent.path("response").path("behavior").asText(), sent::toString);
        assertEquals("no answer within 2 s", sent.path("response").path("message").asText(), sent::toString);
        assertFalse(Files.exists(Path.of(project, "late.txt")), "the denied tool did not run");
        assertTrue(run.ran().isEmpty(), () -> "ran: " + run.ran());
    }

    @Test
    void aPermissionRequestLargerThan1MiBIsDeniedAndTheRunGoesOn() {
        CommandArpc c = CommandArpc.start(env);
        String project = c.project().toString();
        String tag = FakeAgents.tag("oversized");
        // A Write of 2 MiB: its control_request line is cut at 1 MiB, so arpc cannot parse it; unanswered, Claude would wait for ever.
        String id = start(c, project, FakeAgents.prompt(tag, "file=big.txt", "content=2097152", "answerwait=20", "eofwait=8"));
        FakeAgents.Run run = c.fakes.run(tag).awaitStarted(WAIT);
        List<Sse.Event> all;
        try (Sse s = c.stream("/api/sessions/" + id)) {
            all = s.rest(Duration.ofSeconds(40));
        }
        List<JsonNode> asked = controlRequests(run);
        assertEquals(1, asked.size(), () -> "the fake's control requests: " + asked.size());
        String rid = asked.getFirst().path("request_id").asText();
        assertTrue(run.stdout().stream().anyMatch(l -> l.startsWith("{\"type\":\"control_request\"") && l.length() > 2 << 20),
                "the control_request line is over 2 MiB");

        // The fake got a deny for exactly that request.
        assertFalse(run.control().isEmpty(), () -> "nothing reached the fake's stdin; stream: " + kinds(all));
        JsonNode sent = tree(run.control().getFirst());
        assertEquals("control_response", sent.path("type").asText(), sent::toString);
        assertEquals("success", sent.path("response").path("subtype").asText(), sent::toString);
        assertEquals(rid, sent.path("response").path("request_id").asText(), sent::toString);
        assertEquals("deny", sent.path("response").path("response").path("behavior").asText(), sent::toString);
        assertTrue(sent.path("response").path("response").path("message").asText().contains("1 MiB"), sent::toString);
        assertTrue(run.ran().isEmpty(), () -> "ran: " + run.ran());
        assertFalse(Files.exists(Path.of(project, "big.txt")), "the denied tool did not run");

        // The stream says so on stderr, and no control message leaked into it.
        assertTrue(all.stream().anyMatch(e -> e.kind().equals("stderr") && e.data().contains(rid) && e.data().contains("1 MiB")),
                () -> "a stderr event about the denied request: " + kinds(all));
        for (Sse.Event e : all) {
            assertFalse(e.data().startsWith("{\"type\":\"control_request\""), () -> "the cut control_request leaked into the stream: event " + e.id());
        }
        // (the tool_use line, 2 MiB, is cut at 1 MiB like any output line: it is no longer JSON)
        List<Sse.Event> whole = all.stream().filter(e -> !e.kind().equals("message") || e.data().length() < 1 << 20).toList();
        assertTrue(assistantTexts(whole).contains("Write on big.txt was denied: the request is larger than arp takes (1 MiB)"),
                () -> "the fake went on after the deny: " + assistantTexts(whole));

        // The run completes: the fake's result came, arpc closed its stdin, it exited 0. (Claude's result lists each denial
        // with its tool_input, so this result line is over 1 MiB too: arpc must still see that it is the result.)
        JsonNode done = completion(all);
        int resultBytes = run.stdout().stream().filter(l -> l.startsWith("{\"type\":\"result\"")).mapToInt(String::length).findFirst().orElse(-1);
        assertEquals("eof", run.eofAfterResult(), () -> "arpc did not close Claude's stdin after its result line of " + resultBytes
                + " characters (a line cut at 1 MiB is not recognised as the result), so Claude waits for another turn; " + done);
        assertEquals("completed", done.path("status").asText(), done::toString);
        assertEquals(0, done.path("exit_code").asInt(-1), done::toString);
    }

    /** Each event's id, kind and size (not the MiBs of data). */
    private static String kinds(List<Sse.Event> events) {
        return events.stream().map(e -> e.id() + " " + e.kind() + " (" + e.data().length() + ")").toList().toString();
    }

    @Test
    void aCancelledRequestAndAnUnknownControlRequest() {
        CommandArpc c = CommandArpc.start(env);
        String project = c.project().toString();

        // Claude withdraws its request: permission_cancelled, and nothing is sent to it.
        String tag = FakeAgents.tag("withdrawn");
        String id = start(c, project, FakeAgents.prompt(tag, "cancel=1", "file=gone.txt", "eofwait=8"));
        FakeAgents.Run run = c.fakes.run(tag).awaitStarted(WAIT);
        try (Sse s = c.stream("/api/sessions/" + id)) {
            JsonNode req = next(s, "permission_request").json();
            String rid = req.path("request_id").asText();
            JsonNode cancelled = next(s, "permission_cancelled").json();
            assertEquals(rid, cancelled.path("request_id").asText(), cancelled::toString);
            List<Sse.Event> rest = s.rest(WAIT);
            assertEquals("completed", completion(rest).path("status").asText(), rest::toString);
            assertTrue(rest.stream().noneMatch(e -> e.kind().equals("permission_response")), () -> "no answer to a withdrawn request: " + rest);
            HttpResponse<String> late = answer(c, id, rid, Map.of("behavior", "allow"));
            assertEquals(409, late.statusCode(), () -> "answering a withdrawn request: " + late.body());
        }
        assertTrue(run.control().isEmpty(), () -> "nothing was sent for the withdrawn request: " + run.control());
        assertFalse(Files.exists(Path.of(project, "gone.txt")));
        assertEquals("eof", run.eofAfterResult());

        // A control_request arp does not handle gets an error control_response; the run goes on.
        String tag2 = FakeAgents.tag("unknown");
        String id2 = start(c, project, FakeAgents.prompt(tag2, "unknown=hook_callback", "file=after.txt", "eofwait=8"));
        FakeAgents.Run run2 = c.fakes.run(tag2).awaitStarted(WAIT);
        try (Sse s = c.stream("/api/sessions/" + id2)) {
            JsonNode req = next(s, "permission_request").json();
            assertStatus(200, answer(c, id2, req.path("request_id").asText(), Map.of("behavior", "allow")), "allow");
            List<Sse.Event> rest = s.rest(WAIT);
            assertEquals("completed", completion(rest).path("status").asText(), rest::toString);
            assertEquals(0, completion(rest).path("exit_code").asInt(-1), rest::toString);
        }
        List<JsonNode> asked = controlRequests(run2);
        assertEquals("hook_callback", asked.getFirst().path("request").path("subtype").asText(), asked::toString);
        String unknownId = asked.getFirst().path("request_id").asText();
        JsonNode error = tree(run2.control().getFirst());
        assertEquals("control_response", error.path("type").asText(), error::toString);
        assertEquals("error", error.path("response").path("subtype").asText(), error::toString);
        assertEquals(unknownId, error.path("response").path("request_id").asText(), error::toString);
        assertFalse(error.path("response").path("error").asText().isBlank(), error::toString);
        assertEquals(2, run2.control().size(), () -> "the error, then the allow: " + run2.control());
        assertTrue(Files.exists(Path.of(project, "after.txt")), "the run went on after the error answer");
        List<Sse.Event> all = c.fullStream(id2);
        assertTrue(all.stream().noneMatch(e -> e.kind().equals("permission_request") && e.data().contains(unknownId)),
                "only can_use_tool becomes a permission_request");
        assertOutputWithoutControl(run2, all);
    }

    @Test
    void remoteApprovalsNeedClaudeAndABoolean() {
        CommandArpc c = CommandArpc.start(env);
        String project = c.project().toString();
        for (String executor : List.of("codex", "gemini")) {
            HttpResponse<String> r = c.call("POST", "/api/sessions", json(fields("executor", executor, "prompt", "hi", "project_path", project,
                    "remote_approvals", true)));
            assertStatus(400, r, executor + " with remote_approvals");
            assertTrue(parse(r).path("message").asText().contains("remote_approvals"), r::body);
        }
        for (Object bad : List.of("yes", 1, "true")) {
            HttpResponse<String> r = c.call("POST", "/api/sessions", json(fields("prompt", "hi", "project_path", project, "remote_approvals", bad)));
            assertStatus(400, r, "remote_approvals " + bad);
        }
        assertTrue(c.call("GET", "/api/sessions", null).body().contains("\"total\":0"), "nothing was started");

        // remote_approvals false is the one-shot run: prompt after --, stdin at EOF, no permission route.
        String tag = FakeAgents.tag("plain");
        String prompt = FakeAgents.prompt(tag, "lines=1");
        String id = start(c, project, prompt, "remote_approvals", false);
        FakeAgents.Run run = c.fakes.run(tag).awaitStarted(WAIT);
        c.awaitStatus(id, WAIT, "completed");
        assertEquals(List.of("-p", "--output-format", "stream-json", "--verbose", "--", prompt), run.argv());
        assertEquals("eof", run.stdinState());
        assertStatus(404, answer(c, id, "r1", Map.of("behavior", "allow")), "a permission of a run without remote approvals");
        assertTrue(c.fullStream(id).stream().noneMatch(e -> e.kind().startsWith("permission_")));
    }
}
