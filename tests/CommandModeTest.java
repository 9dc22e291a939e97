package arp.tests;

import arp.tests.support.CommandArpc;
import arp.tests.support.FakeAgents;
import arp.tests.support.Proc;
import arp.tests.support.TestEnv;
import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static arp.tests.support.CommandArpc.fields;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * arpc --command-mode starts the agent CLIs (the fakes of tests/fake-agents first on its PATH) with
 * exactly the argument vectors of the contract, in the project directory, with stdin at EOF and
 * without CLAUDECODE; the agent's own session id is picked from its stream; the API key is generated,
 * stored privately and printed once.
 */
class CommandModeTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final Duration WAIT = CommandArpc.WAIT;

    /** Starts one session, waits for it to finish, checks what every run must satisfy; returns the run. */
    private static FakeAgents.Run run(CommandArpc c, Map<String, Object> fields, String tag, String status) {
        JsonNode created = c.create(fields);
        String id = created.path("session_id").asText();
        assertEquals("running", created.path("status").asText(), () -> "POST answer: " + created);
        assertEquals(fields.getOrDefault("executor", "claude"), created.path("executor").asText(), () -> "POST answer: " + created);
        assertEquals(fields.get("project_path"), created.path("project_path").asText(), () -> "POST answer: " + created);
        assertEquals("/api/sessions/" + id, created.path("stream_url").asText(), () -> "POST answer: " + created);

        FakeAgents.Run run = c.fakes.run(tag).awaitStarted(WAIT);
        JsonNode done = c.awaitStatus(id, WAIT, "completed", "failed", "cancelled");
        assertEquals(status, done.path("status").asText(), () -> "details: " + done + "\nfake stdout: " + run.stdout());

        // Where and how it ran.
        assertEquals(fields.get("project_path"), run.cwd(), "the agent's working directory is project_path");
        assertEquals("eof", run.stdinState(), "the agent's stdin must be at EOF (never an open pipe)");
        assertEquals("/dev/null", run.stdinTarget(), "the agent's stdin is /dev/null");
        assertEquals("<unset>", run.env().get("CLAUDECODE"), "CLAUDECODE must not reach the agent");
        for (String a : run.argv()) {
            assertFalse(a.equals("--dangerously-skip-permissions") || a.contains("danger-full-access")
                    || a.equals("--dangerously-bypass-approvals-and-sandbox"), () -> "unsafe flag in " + run.argv());
        }

        // The agent's session id comes from its stream, and names the session too.
        assertEquals(run.sessionId(), done.path("agent_session_id").asText(), () -> "details: " + done);
        JsonNode byAgentId = c.details(run.sessionId());
        assertEquals(id, byAgentId.path("session_id").asText(), () -> "GET by the agent's id: " + byAgentId);
        return run;
    }

    @Test
    void claudeArgumentVectors() throws Exception {
        CommandArpc c = CommandArpc.start(env);
        String project = c.project().toString();

        // Defaults: executor claude, no options.
        String t = FakeAgents.tag("claude-min");
        String p = FakeAgents.prompt(t, "lines=1");
        FakeAgents.Run min = run(c, fields("prompt", p, "project_path", project), t, "completed");
        assertEquals(List.of("-p", "--output-format", "stream-json", "--verbose", "--", p), min.argv());

        // Every option, in the = form; a prompt that looks like an option and spans lines stays one argument.
        t = FakeAgents.tag("claude-all");
        p = "--dangerously-skip-permissions \"quoted\" $HOME `x`\nsecond line " + FakeAgents.prompt(t, "lines=1");
        FakeAgents.Run all = run(c, fields("executor", "claude", "prompt", p, "project_path", project,
                "model", "claude-opus-4-1", "resume", "3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b", "permission_mode", "acceptEdits",
                "allowed_tools", List.of("Read", "Bash(git log:*)", "mcp__srv__tool")), t, "completed");
        assertEquals(List.of("-p", "--output-format", "stream-json", "--verbose", "--model=claude-opus-4-1",
                "--resume=3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b", "--permission-mode=acceptEdits",
                "--allowedTools=Read", "--allowedTools=Bash(git log:*)", "--allowedTools=mcp__srv__tool", "--", p), all.argv());

        // Each permission mode of the contract maps to --permission-mode=<mode>.
        for (String mode : List.of("acceptEdits", "bypassPermissions", "default", "plan", "dontAsk")) {
            String tm = FakeAgents.tag("claude-" + mode);
            String pm = FakeAgents.prompt(tm, "lines=0");
            FakeAgents.Run r = run(c, fields("executor", "claude", "prompt", pm, "project_path", project, "permission_mode", mode), tm, "completed");
            assertEquals(List.of("-p", "--output-format", "stream-json", "--verbose", "--permission-mode=" + mode, "--", pm), r.argv());
        }

        // Another project directory is another cwd.
        String other = c.project().toString();
        t = FakeAgents.tag("claude-other");
        FakeAgents.Run r = run(c, fields("prompt", FakeAgents.prompt(t, "lines=0"), "project_path", other), t, "completed");
        assertEquals(other, r.cwd());
    }

    @Test
    void codexArgumentVectorsAndExitCode() throws Exception {
        CommandArpc c = CommandArpc.start(env);
        String project = c.project().toString();
        List<String> base = List.of("exec", "--json", "--skip-git-repo-check", "--full-auto");

        String t = FakeAgents.tag("codex-min");
        String p = FakeAgents.prompt(t, "lines=1");
        FakeAgents.Run r = run(c, fields("executor", "codex", "prompt", p, "project_path", project), t, "completed");
        assertEquals(concat(base, "--", p), r.argv());

        t = FakeAgents.tag("codex-model");
        p = "-n 3 " + FakeAgents.prompt(t, "lines=1"); // looks like an option: still the prompt, after --
        r = run(c, fields("executor", "codex", "prompt", p, "project_path", project, "model", "gpt-5-codex", "resume_last", false), t, "completed");
        assertEquals(concat(base, "--model=gpt-5-codex", "--", p), r.argv());

        t = FakeAgents.tag("codex-resume");
        p = FakeAgents.prompt(t, "lines=1");
        r = run(c, fields("executor", "codex", "prompt", p, "project_path", project, "resume", "0199a213-81c0-7800-8aa1-bbab2a035a53"), t, "completed");
        assertEquals(concat(base, "resume", "0199a213-81c0-7800-8aa1-bbab2a035a53", "--", p), r.argv());

        t = FakeAgents.tag("codex-last");
        p = FakeAgents.prompt(t, "lines=1");
        r = run(c, fields("executor", "codex", "prompt", p, "project_path", project, "model", "o3", "resume_last", true), t, "completed");
        assertEquals(concat(base, "--model=o3", "resume", "--last", "--", p), r.argv());

        // An agent that exits non-zero ran to its end: status completed, but success false and its exit code.
        t = FakeAgents.tag("codex-exit3");
        p = FakeAgents.prompt(t, "lines=1", "exit=3");
        JsonNode created = c.create(fields("executor", "codex", "prompt", p, "project_path", project));
        String id = created.path("session_id").asText();
        JsonNode d = c.awaitStatus(id, WAIT, "completed", "failed", "cancelled");
        assertEquals("completed", d.path("status").asText(), d::toString);
        assertEquals(3, d.path("exit_code").asInt(), d::toString);
        JsonNode complete = c.fullStream(id).getLast().json();
        assertEquals("completed", complete.path("status").asText(), complete::toString);
        assertFalse(complete.path("success").asBoolean(true), complete::toString);
        assertEquals(3, complete.path("exit_code").asInt(), complete::toString);
        assertFalse(complete.path("cancelled").asBoolean(true), complete::toString);
    }

    @Test
    void geminiArgumentVectors() throws Exception {
        CommandArpc c = CommandArpc.start(env);
        String project = c.project().toString();

        String t = FakeAgents.tag("gemini-min");
        String p = "-y " + FakeAgents.prompt(t, "lines=1"); // the = form keeps a leading - inside the prompt
        FakeAgents.Run r = run(c, fields("executor", "gemini", "prompt", p, "project_path", project), t, "completed");
        assertEquals(List.of("--output-format=stream-json", "--prompt=" + p), r.argv());

        for (String mode : List.of("default", "auto_edit", "yolo", "plan")) {
            t = FakeAgents.tag("gemini-" + mode);
            p = FakeAgents.prompt(t, "lines=0");
            r = run(c, fields("executor", "gemini", "prompt", p, "project_path", project, "model", "gemini-2.5-flash",
                    "approval_mode", mode, "resume", "latest"), t, "completed");
            assertEquals(List.of("--output-format=stream-json", "--model=gemini-2.5-flash", "--approval-mode=" + mode,
                    "--resume=latest", "--prompt=" + p), r.argv());
        }
    }

    private static List<String> concat(List<String> base, String... more) {
        List<String> l = new ArrayList<>(base);
        l.addAll(List.of(more));
        return l;
    }

    private static final Pattern KEY = Pattern.compile("(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])");

    @Test
    void generatedApiKeyIsPrintedOnceAndStoredPrivately() throws Exception {
        CommandArpc c = CommandArpc.relay(env);
        var args = c.args().remove("--api-key");
        c.launch(args, Map.of());
        Proc first = c.proc();

        String line = first.awaitStderr("a line with the generated API key", l -> l.contains("API key"), WAIT);
        Matcher m = KEY.matcher(line);
        assertTrue(m.find(), () -> "no 43-character base64url key in: " + line);
        String key = m.group();
        Path config = c.configDir.resolve("config");
        assertTrue(Files.readAllLines(config).contains("api-key=" + key), () -> config + " lacks api-key=" + key);
        assertEquals("rw-------", PosixFilePermissions.toString(Files.getPosixFilePermissions(config)), "mode of " + config);
        assertFalse(first.stdoutText().contains(key), "the key must not be in the --json output");
        assertEquals(1, first.stderr().stream().filter(l -> l.contains(key)).count(), "the key is printed once");

        c.key(key);
        assertEquals(200, c.call("GET", "/api/sessions", null).statusCode(), "the printed key opens the API");
        c.key(CommandArpc.newKey());
        assertEquals(401, c.call("GET", "/api/sessions", null).statusCode(), "another key does not");

        // A restart with the same config dir uses the stored key and never prints it again.
        c.stop();
        c.launch(args, Map.of());
        c.key(key);
        assertEquals(200, c.call("GET", "/api/sessions", null).statusCode(), "the stored key after a restart");
        Proc second = c.proc();
        assertFalse(second.stderrText().contains(key), "the key was printed again after a restart");
        assertFalse(second.stderr().stream().anyMatch(l -> l.contains("API key") && KEY.matcher(l).find()),
                "a key was printed again after a restart");
        assertTrue(Files.readAllLines(config).contains("api-key=" + key), "the stored key is kept");

        // ARP_API_KEY overrides the stored key.
        c.stop();
        String fromEnv = CommandArpc.newKey();
        c.launch(args, Map.of("ARP_API_KEY", fromEnv));
        c.key(fromEnv);
        assertEquals(200, c.call("GET", "/api/sessions", null).statusCode(), "ARP_API_KEY opens the API");
        c.key(key);
        assertEquals(401, c.call("GET", "/api/sessions", null).statusCode(), "the stored key is not used when ARP_API_KEY is set");

        JsonNode api = c.apiEvent();
        assertTrue(api.path("url").asText().startsWith("http://127.0.0.1:"), api::toString);
        assertNotNull(api.get("sessions_dir"), api::toString);
    }
}
