package arp.tests;

import arp.tests.support.CommandArpc;
import arp.tests.support.FakeAgents;
import arp.tests.support.HistoryFixtures;
import arp.tests.support.TestEnv;
import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SortedSet;
import java.util.TreeSet;

import static arp.tests.support.HistoryFixtures.*;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Issue 6: the agents' own history (Claude Code, Codex, Gemini) and the opt-in file routes, served by
 * arpc in command mode and always asked for through the real tunnel with the API key. The history
 * trees are written by {@link HistoryFixtures} in the agents' real formats into a temporary HOME (or
 * CLAUDE_CONFIG_DIR / CODEX_HOME) of the arpc process.
 */
class HistoryTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    /** arps plus arpc in command mode whose HOME is {@code home}, with {@code extraEnv}. */
    private CommandArpc start(Path home, Map<String, String> extraEnv) {
        CommandArpc c = CommandArpc.relay(env);
        return c.launch(c.args(), environment(c, home, extraEnv));
    }

    /** The fakes on PATH, HOME, no agent directory from the developer's environment, then {@code extraEnv}. */
    private static Map<String, String> environment(CommandArpc c, Path home, Map<String, String> extraEnv) {
        Map<String, String> e = new HashMap<>(c.fakes.env());
        e.put("HOME", home.toString());
        e.put("CLAUDE_CONFIG_DIR", null);
        e.put("CODEX_HOME", null);
        e.putAll(extraEnv);
        return e;
    }

    private static JsonNode ok(CommandArpc c, String method, String path) {
        HttpResponse<String> r = c.call(method, path, null);
        assertEquals(200, r.statusCode(), () -> method + " " + path + ": " + r.body());
        return CommandArpc.parse(r);
    }

    private static JsonNode get(CommandArpc c, String path) { return ok(c, "GET", path); }

    private static List<String> ids(JsonNode list, String field) {
        List<String> ids = new ArrayList<>();
        for (JsonNode n : list) ids.add(n.isTextual() ? n.asText() : n.path(field).asText());
        return ids;
    }

    private static JsonNode byId(JsonNode list, String id) {
        for (JsonNode n : list) if (n.path("id").asText().equals(id)) return n;
        throw new AssertionError("no " + id + " in " + list);
    }

    /** Refused: any 4xx (never a 200 or a 500), as an error naming what was wrong. */
    private static void refused(CommandArpc c, String path, String what) {
        HttpResponse<String> r = c.call("GET", path, null);
        assertTrue(r.statusCode() >= 400 && r.statusCode() < 500, () -> what + ": GET " + path + " answered " + r.statusCode() + " " + r.body());
        assertFalse(r.body().contains("root:x:0:0"), () -> what + ": " + r.body());
    }

    @Test
    void claudeProjectsSessionsMessagesAndDelete() throws Exception {
        Path home = env.dir("home");
        Path claude = home.resolve(".claude");
        HistoryFixtures.claude(claude);
        CommandArpc c = start(home, Map.of());

        // Projects: the path comes from the recorded cwd, never from the directory name.
        JsonNode projects = get(c, "/api/claude/projects");
        assertEquals("projects", projects.path("type").asText());
        Map<String, String> pathOf = new HashMap<>();
        for (JsonNode p : projects.path("projects")) pathOf.put(p.path("id").asText(), p.path("path").isNull() ? null : p.path("path").asText());
        assertEquals(A_CWD, pathOf.get(claudeDirName(A_CWD)), projects::toString);
        assertEquals(B_CWD, pathOf.get(claudeDirName(B_CWD)), "the cwd that encodes to the directory, not the newer session's subdirectory");
        assertEquals(LONG_CWD, pathOf.get(claudeDirName(LONG_CWD)), "a path over 200 characters");
        assertTrue(claudeDirName(LONG_CWD).length() > 200 && claudeDirName(LONG_CWD).length() < LONG_CWD.length());
        assertEquals(BIG_CWD, pathOf.get(claudeDirName(BIG_CWD)));
        assertTrue(pathOf.containsKey(SNAP_DIR) && pathOf.get(SNAP_DIR) == null, "no cwd recorded: no path (not '/w/snap'): " + projects);
        assertEquals(5, pathOf.size(), projects::toString);
        JsonNode a = byId(projects.path("projects"), claudeDirName(A_CWD));
        assertEquals(List.of(S_TITLED, S_NORMAL, S_CLEAR), ids(a.path("sessions"), null), a::toString);

        // Working directories: those with a path, with a short name.
        JsonNode dirs = get(c, "/api/claude/projects/working-directories").path("directories");
        assertEquals(4, dirs.size(), dirs::toString);
        JsonNode dirA = null;
        for (JsonNode d : dirs) if (d.path("path").asText().equals(A_CWD)) dirA = d;
        assertEquals("alice/my_app.v2-x", dirA.path("shortname").asText());
        assertEquals(3, dirA.path("conversationCount").asInt());
        assertEquals("2025-11-20T08:00:01Z", dirA.path("lastDate").asText());

        // Sessions, newest first: no subagent transcripts, no invalid ids.
        long t0 = System.nanoTime();
        JsonNode all = get(c, "/api/claude/sessions");
        long listMillis = (System.nanoTime() - t0) / 1_000_000;
        assertEquals("sessions", all.path("type").asText());
        assertEquals(CLAUDE_LISTED, ids(all.path("sessions"), "id"), all::toString);
        assertEquals(CLAUDE_LISTED.size(), all.path("total").asInt());

        JsonNode normal = byId(all.path("sessions"), S_NORMAL);
        assertEquals(claudeDirName(A_CWD), normal.path("project_id").asText());
        assertEquals(A_CWD, normal.path("project_path").asText());
        assertEquals("fix the failing test", normal.path("first_message").asText());
        assertEquals("Fix the failing test", normal.path("title").asText(), "the summary record names it");
        assertEquals("2025-11-07T10:00:00Z", normal.path("message_timestamp").asText());
        assertEquals(4, normal.path("message_count").asInt(), "user/assistant records; the invalid and the half-written lines are skipped");
        assertTrue(normal.path("message_count_exact").asBoolean());
        assertEquals("completed", normal.path("status").asText());
        assertEquals(java.time.Instant.parse("2025-11-07T10:00:00Z").getEpochSecond(), normal.path("created_at").asLong());
        assertEquals("2025-11-07T10:00:09Z", normal.path("updated_at").asText(), "the latest timestamp, though out of order");
        assertEquals(9.0, normal.path("total_duration").asDouble());
        assertEquals("run the tests", normal.path("todo_data").path(0).path("content").asText(), normal::toString);

        JsonNode clear = byId(all.path("sessions"), S_CLEAR);
        assertEquals("what does this repo do?", clear.path("first_message").asText(), "injected texts are not the first message");
        assertEquals("what does this repo do?", clear.path("title").asText());
        JsonNode titled = byId(all.path("sessions"), S_TITLED);
        assertEquals("My title", titled.path("title").asText());
        assertEquals("hello", titled.path("first_message").asText());
        assertEquals("ongoing", titled.path("status").asText(), "written just now");
        assertEquals("première question 项目", byId(all.path("sessions"), S_B_OLD).path("first_message").asText());
        assertEquals(B_CWD, byId(all.path("sessions"), S_B_NEW).path("project_path").asText());
        JsonNode snap = byId(all.path("sessions"), S_SNAP);
        assertEquals("pending", snap.path("status").asText());
        assertEquals(0, snap.path("message_count").asInt());
        assertTrue(snap.path("project_path").isNull());

        // The 20 MB transcript is listed from its head and tail: the title in its middle is never seen.
        Path bigFile = claude.resolve("projects").resolve(claudeDirName(BIG_CWD)).resolve(S_BIG + ".jsonl");
        assertTrue(Files.size(bigFile) > 20_000_000L, "the big transcript is " + Files.size(bigFile) + " bytes");
        JsonNode big = byId(all.path("sessions"), S_BIG);
        assertEquals(BIG_HEAD_PROMPT, big.path("first_message").asText());
        assertEquals(BIG_TAIL_SUMMARY, big.path("title").asText(), "a whole read would have found the custom title in the middle");
        assertFalse(big.path("message_count_exact").asBoolean());
        int estimate = big.path("message_count").asInt();
        assertTrue(estimate > BIG_LINES / 2 && estimate < BIG_LINES * 2, "estimated count " + estimate);
        assertTrue(listMillis < 10_000, "the first listing took " + listMillis + " ms");

        // Paging keeps the total; projectPath filters exactly.
        JsonNode page = get(c, "/api/claude/sessions?limit=2&offset=1");
        assertEquals(CLAUDE_LISTED.subList(1, 3), ids(page.path("sessions"), "id"));
        assertEquals(CLAUDE_LISTED.size(), page.path("total").asInt());
        assertEquals(1, page.path("offset").asInt());
        assertEquals(2, page.path("limit").asInt());
        JsonNode inB = get(c, "/api/claude/sessions?projectPath=" + java.net.URLEncoder.encode(B_CWD, StandardCharsets.UTF_8));
        assertEquals(List.of(S_B_NEW, S_B_OLD), ids(inB.path("sessions"), "id"));
        assertEquals(0, get(c, "/api/claude/sessions?projectPath=/home/alice").path("total").asInt());
        JsonNode ofA = get(c, "/api/claude/projects/" + claudeDirName(A_CWD) + "/sessions");
        assertEquals(List.of(S_TITLED, S_NORMAL, S_CLEAR), ids(ofA.path("sessions"), "id"));
        assertEquals(404, c.call("GET", "/api/claude/projects/-no-such-project/sessions", null).statusCode());
        CommandModeAccessTest.assertError(c.call("GET", "/api/claude/sessions?limit=-1", null), 400, "limit", "negative limit");

        // Messages: the JSON lines, malformed ones skipped, paged.
        JsonNode msgs = get(c, "/api/claude/sessions/" + S_NORMAL);
        assertEquals("session_history", msgs.path("type").asText());
        assertEquals(S_NORMAL, msgs.path("session_id").asText());
        assertEquals(5, msgs.path("total").asInt(), msgs::toString);
        assertEquals(5, msgs.path("messages").size());
        assertFalse(msgs.path("truncated").asBoolean());
        assertEquals("fix the failing test", msgs.path("messages").path(0).path("message").path("content").asText());
        assertEquals("summary", msgs.path("messages").path(4).path("type").asText());
        JsonNode bigPage = get(c, "/api/claude/sessions/" + S_BIG + "?offset=9000&limit=3");
        assertEquals(BIG_LINES + 3, bigPage.path("total").asInt(), "every record of the big transcript is counted");
        assertEquals(3, bigPage.path("messages").size());
        assertEquals(3, bigPage.path("limit").asInt());

        // Ids from the URL never reach outside: refused before the disk is touched.
        for (String bad : List.of("..", "%2e%2e", "..%2F..%2Fetc%2Fpasswd", "..%5C..%5Cx", "not_a_uuid", "a.jsonl", "%00", "x%20y")) {
            refused(c, "/api/claude/sessions/" + bad, "session id " + bad);
            assertNotEquals(200, c.call("DELETE", "/api/claude/sessions/" + bad, null).statusCode(), "DELETE " + bad);
        }
        CommandModeAccessTest.assertError(c.call("GET", "/api/claude/sessions/..%5Cx", null), 400, "..", "the message names the id");
        refused(c, "/api/claude/sessions/../../../etc/passwd", "dot segments");
        refused(c, "/api/claude/sessions//etc/passwd", "an absolute path");
        refused(c, "/api/claude/projects/../sessions", "project id ..");
        refused(c, "/api/claude/projects/..%2F..%2Fetc/sessions", "encoded separators in a project id");
        assertEquals(404, c.call("GET", "/api/claude/sessions/agent-9f8e7d6c", null).statusCode(), "a subagent file is not a session");
        assertEquals(404, c.call("GET", "/api/claude/sessions/" + S_SIDECHAIN, null).statusCode(), "a sidechain-only file is not a session");
        assertEquals(404, c.call("GET", "/api/claude/sessions/5b0c0e7a-0000-0000-0000-000000000000", null).statusCode());

        // The key is needed; the file routes are off by default (404 like any unknown route).
        assertEquals(401, c.send(c.anonymous("/api/claude/sessions").build()).statusCode());
        assertEquals(401, c.send(c.anonymous("/api/fs?path=/").build()).statusCode());
        assertEquals(404, c.call("GET", "/api/fs?path=" + home, null).statusCode());
        assertEquals(404, c.call("GET", "/api/fs/x?project_path=" + home, null).statusCode());

        // DELETE removes exactly that session's own files: transcript, sidecar directory, legacy subagent file, todos.
        SortedSet<String> before = tree(home);
        JsonNode del = ok(c, "DELETE", "/api/claude/sessions/" + S_NORMAL);
        assertEquals("session_deleted", del.path("type").asText());
        assertEquals(S_NORMAL, del.path("session_id").asText());
        SortedSet<String> gone = new TreeSet<>(before);
        gone.removeAll(tree(home));
        String inA = ".claude/projects/" + claudeDirName(A_CWD) + "/";
        assertEquals(new TreeSet<>(List.of(inA + S_NORMAL + ".jsonl", inA + "agent-9f8e7d6c.jsonl", inA + S_NORMAL,
                inA + S_NORMAL + "/subagents", inA + S_NORMAL + "/subagents/agent-a1b2c3.jsonl", inA + S_NORMAL + "/tool-results",
                inA + S_NORMAL + "/tool-results/toolu_1.txt", ".claude/todos/" + S_NORMAL + "-agent-" + S_NORMAL + ".json")), gone);
        assertEquals(before.size() - gone.size(), tree(home).size(), "nothing was added");
        assertEquals(404, c.call("GET", "/api/claude/sessions/" + S_NORMAL, null).statusCode());
        assertEquals(404, c.call("DELETE", "/api/claude/sessions/" + S_NORMAL, null).statusCode(), "DELETE again");
        assertEquals(CLAUDE_LISTED.size() - 1, get(c, "/api/claude/sessions").path("total").asInt());

        // DELETE /api/sessions/{id} of a history id (the original's semantics) deletes it too; unknown ids are 404.
        before = tree(home);
        JsonNode del2 = ok(c, "DELETE", "/api/sessions/" + S_CLEAR);
        assertEquals("session_deleted", del2.path("type").asText());
        assertEquals("claude", del2.path("executor").asText());
        gone = new TreeSet<>(before);
        gone.removeAll(tree(home));
        assertEquals(new TreeSet<>(List.of(inA + S_CLEAR + ".jsonl")), gone);
        assertEquals(404, c.call("DELETE", "/api/sessions/" + S_CLEAR, null).statusCode());
        assertEquals(404, c.call("DELETE", "/api/sessions/..%2F..%2Fx", null).statusCode());
    }

    @Test
    void codexAndGeminiSessionsAndClaudeConfigDir() throws Exception {
        Path home = env.dir("home");
        Path codexHome = env.dir("codex-home");
        Path claudeDir = env.dir("claude-config");
        HistoryFixtures.codex(codexHome);
        HistoryFixtures.gemini(home.resolve(".gemini"));
        write(claudeDir.resolve("projects").resolve(claudeDirName(A_CWD)).resolve(S_LONG + ".jsonl"),
                List.of(line(claudeRecord("user", S_LONG, A_CWD, "2025-11-05T10:00:00.000Z", "from CLAUDE_CONFIG_DIR"))), true);
        write(claudeDir.resolve("projects").resolve(claudeDirName(A_CWD)).resolve(S_B_OLD + ".jsonl"),
                List.of(line(claudeRecord("user", S_B_OLD, A_CWD, "2025-11-04T10:00:00.000Z", "pasted log: " + "x".repeat(50_000)))), true);
        write(home.resolve(".claude/projects").resolve(claudeDirName(A_CWD)).resolve(S_NORMAL + ".jsonl"), // ignored: CLAUDE_CONFIG_DIR wins
                List.of(line(claudeRecord("user", S_NORMAL, A_CWD, "2025-11-05T10:00:00.000Z", "from HOME"))), true);
        CommandArpc c = start(home, Map.of("CODEX_HOME", codexHome.toString(), "CLAUDE_CONFIG_DIR", claudeDir.toString()));

        JsonNode claude = get(c, "/api/claude/sessions");
        assertEquals(List.of(S_LONG, S_B_OLD), ids(claude.path("sessions"), "id"));
        assertEquals("from CLAUDE_CONFIG_DIR", claude.path("sessions").path(0).path("first_message").asText());
        String pasted = claude.path("sessions").path(1).path("first_message").asText();
        assertEquals(1001, pasted.length(), "a listing keeps 1,000 characters of a text, and '…'");
        assertTrue(pasted.startsWith("pasted log: xxx") && pasted.endsWith("…"), pasted);
        assertEquals(50_012, get(c, "/api/claude/sessions/" + S_B_OLD).path("messages").path(0).path("message").path("content").asText().length(),
                "the messages are whole");

        // Codex: the whole UUID, metadata from session_meta and the first real prompt; a project per cwd.
        JsonNode codex = get(c, "/api/codex/sessions");
        assertEquals(List.of(C_SECOND, C_FIRST), ids(codex.path("sessions"), "id"), codex::toString);
        JsonNode first = byId(codex.path("sessions"), C_FIRST);
        assertEquals("add a README", first.path("first_message").asText(), "the environment context is not the prompt");
        assertEquals(CODEX_CWD, first.path("project_path").asText());
        assertEquals(sha256(CODEX_CWD), first.path("project_id").asText());
        assertEquals(3, first.path("message_count").asInt(), "response_item messages");
        assertEquals("2025-11-07T10:30:45.400Z", first.path("message_timestamp").asText());
        assertEquals("completed", first.path("status").asText());
        JsonNode codexProjects = get(c, "/api/codex/projects").path("projects");
        assertEquals(1, codexProjects.size(), codexProjects::toString);
        assertEquals(CODEX_CWD, codexProjects.path(0).path("path").asText());
        assertEquals(List.of(C_SECOND, C_FIRST), ids(codexProjects.path(0).path("sessions"), null));
        assertEquals(List.of(C_SECOND, C_FIRST), ids(get(c, "/api/codex/projects/" + sha256(CODEX_CWD) + "/sessions").path("sessions"), "id"));
        assertEquals("w/codex-proj", get(c, "/api/codex/projects/working-directories").path("directories").path(0).path("shortname").asText());
        JsonNode cm = get(c, "/api/codex/sessions/" + C_FIRST + "?limit=2");
        assertEquals(9, cm.path("total").asInt());
        assertEquals(List.of("session_meta", "turn_context"), ids(cm.path("messages"), "type"));
        assertEquals(404, c.call("GET", "/api/codex/sessions/" + C_FIRST.substring(24), null).statusCode(), "only the whole UUID names it");

        // Gemini: the project's path from a known path's hash or from what its files record; else null.
        JsonNode gp = get(c, "/api/gemini/projects").path("projects");
        assertEquals(3, gp.size(), "a directory without chats/ has no sessions: " + gp);
        assertEquals(CODEX_CWD, byId(gp, sha256(CODEX_CWD)).path("path").asText());
        assertEquals(GEMINI_LOGGED_CWD, byId(gp, sha256(GEMINI_LOGGED_CWD)).path("path").asText());
        assertTrue(byId(gp, sha256(GEMINI_UNKNOWN_CWD)).path("path").isNull(), gp::toString);
        JsonNode gs = get(c, "/api/gemini/sessions");
        assertEquals(List.of(G_KNOWN, G_LOGGED, G_UNKNOWN), ids(gs.path("sessions"), "id"));
        JsonNode g = byId(gs.path("sessions"), G_KNOWN);
        assertEquals("explain main.go", g.path("first_message").asText());
        assertEquals(3, g.path("message_count").asInt());
        assertEquals(30.0, g.path("total_duration").asDouble());
        assertEquals(CODEX_CWD, g.path("project_path").asText());
        assertEquals(2, get(c, "/api/gemini/projects/working-directories").path("directories").size());
        JsonNode gm = get(c, "/api/gemini/sessions/" + G_KNOWN + "?offset=1&limit=1");
        assertEquals(3, gm.path("total").asInt());
        assertEquals("gemini", gm.path("messages").path(0).path("type").asText());
        assertEquals("read_file", gm.path("messages").path(0).path("toolCalls").path(0).path("name").asText());

        // Deletes remove one file each, and only from their own store.
        SortedSet<String> codexBefore = tree(codexHome);
        SortedSet<String> homeBefore = tree(home);
        assertEquals("session_deleted", ok(c, "DELETE", "/api/codex/sessions/" + C_FIRST).path("type").asText());
        SortedSet<String> gone = new TreeSet<>(codexBefore);
        gone.removeAll(tree(codexHome));
        assertEquals(new TreeSet<>(List.of("sessions/2025/11/07/rollout-2025-11-07T10-30-45-" + C_FIRST + ".jsonl")), gone);
        assertEquals(homeBefore, tree(home));
        assertEquals("gemini", ok(c, "DELETE", "/api/sessions/" + G_LOGGED).path("executor").asText());
        gone = new TreeSet<>(homeBefore);
        gone.removeAll(tree(home));
        assertEquals(1, gone.size(), gone::toString);
        assertTrue(gone.first().startsWith(".gemini/tmp/" + sha256(GEMINI_LOGGED_CWD) + "/chats/session-"), gone::toString);
        assertEquals(List.of(G_KNOWN, G_UNKNOWN), ids(get(c, "/api/gemini/sessions").path("sessions"), "id"));
        assertEquals(List.of(C_SECOND), ids(get(c, "/api/codex/sessions").path("sessions"), "id"));
    }

    @Test
    void missingAgentDirectoriesAndConfinedFiles() throws Exception {
        Path home = env.dir("empty-home");
        Path root = env.dir("fs-root").toRealPath();
        Path other = env.dir("fs-other").toRealPath();
        Path outside = env.dir("outside").toRealPath();
        Files.createDirectories(root.resolve("sub/deeper"));
        Files.writeString(root.resolve("hello.txt"), "héllo, 世界\n");
        byte[] binary = new byte[256];
        for (int i = 0; i < 256; i++) binary[i] = (byte) i;
        Files.write(root.resolve("bin.dat"), binary);
        byte[] large = ("a" + "é".repeat(700_000)).getBytes(StandardCharsets.UTF_8); // 1.4 MB; a 2-byte character straddles 1 MiB
        Files.write(root.resolve("large.txt"), large);
        Files.writeString(outside.resolve("secret.txt"), "root:x:0:0 secret");
        Files.writeString(other.resolve("shared.txt"), "in the second root");
        Files.createSymbolicLink(root.resolve("leak"), outside);
        Files.createSymbolicLink(root.resolve("passwd"), Path.of("/etc/passwd"));
        Files.createSymbolicLink(root.resolve("to-sub"), root.resolve("sub"));
        Files.createSymbolicLink(root.resolve("to-other"), other.resolve("shared.txt"));
        CommandArpc c = CommandArpc.relay(env);
        c.launch(c.args().flag("--enable-fs").add("--fs-root", root).add("--fs-root", other), environment(c, home, Map.of()));

        // No ~/.claude, ~/.codex or ~/.gemini: empty lists, not errors.
        for (String agent : List.of("claude", "codex", "gemini")) {
            assertEquals(0, get(c, "/api/" + agent + "/projects").path("projects").size(), agent);
            assertEquals(0, get(c, "/api/" + agent + "/projects/working-directories").path("directories").size(), agent);
            JsonNode s = get(c, "/api/" + agent + "/sessions");
            assertEquals(0, s.path("total").asInt(), agent);
            assertEquals(0, s.path("sessions").size(), agent);
            assertEquals(404, c.call("GET", "/api/" + agent + "/sessions/" + S_NORMAL, null).statusCode(), agent);
            assertEquals(404, c.call("DELETE", "/api/" + agent + "/sessions/" + S_NORMAL, null).statusCode(), agent);
        }
        assertEquals(404, c.call("DELETE", "/api/sessions/" + S_NORMAL, null).statusCode());

        // A directory: directories first, then by name; symlinks are marked, not followed.
        JsonNode dir = get(c, "/api/fs?path=" + root);
        assertEquals("directory", dir.path("type").asText());
        assertEquals(root.toString(), dir.path("path").asText());
        assertEquals(List.of("sub", "bin.dat", "hello.txt", "large.txt", "leak", "passwd", "to-other", "to-sub"), ids(dir.path("entries"), "name"));
        JsonNode hello = dir.path("entries").path(2);
        assertEquals(root.resolve("hello.txt").toString(), hello.path("path").asText());
        assertEquals(Files.size(root.resolve("hello.txt")), hello.path("size").asLong());
        assertFalse(hello.path("is_dir").asBoolean());
        assertTrue(hello.path("modified").asText().endsWith("Z"));
        assertTrue(dir.path("entries").path(0).path("is_dir").asBoolean());
        assertTrue(dir.path("entries").path(4).path("is_symlink").asBoolean());
        assertEquals(dir.path("entries"), get(c, "/api/fs").path("entries"), "no path: the first root");

        // Files: UTF-8 as text, anything else base64, at most 1 MiB.
        JsonNode text = get(c, "/api/fs?path=hello.txt");
        assertEquals("file", text.path("type").asText());
        assertEquals("utf-8", text.path("encoding").asText());
        assertEquals("héllo, 世界\n", text.path("content").asText());
        assertFalse(text.path("truncated").asBoolean());
        JsonNode bin = get(c, "/api/fs?path=" + root.resolve("bin.dat"));
        assertEquals("base64", bin.path("encoding").asText());
        assertTrue(java.util.Arrays.equals(binary, Base64.getDecoder().decode(bin.path("content").asText())), "binary-safe");
        JsonNode cut = get(c, "/api/fs?path=large.txt");
        assertTrue(cut.path("truncated").asBoolean());
        assertEquals(large.length, cut.path("size").asLong());
        assertEquals("utf-8", cut.path("encoding").asText(), "a character cut at 1 MiB does not make it binary");
        assertEquals((1 << 20) - 1, cut.path("bytes").asInt());
        assertEquals("a" + "é".repeat((1 << 20) / 2 - 1), cut.path("content").asText());
        assertEquals("sub/deeper", get(c, "/api/fs/to-sub/deeper?project_path=" + root).path("path").asText(), "a symlink inside the root is followed");
        JsonNode rel = get(c, "/api/fs/hello.txt?project_path=" + root);
        assertEquals("hello.txt", rel.path("path").asText());
        assertEquals(root.toString(), rel.path("project_path").asText());

        // Everything that leads out is refused.
        refused(c, "/api/fs?path=" + outside.resolve("secret.txt"), "an absolute path outside the roots");
        refused(c, "/api/fs?path=/etc/passwd", "/etc/passwd");
        refused(c, "/api/fs?path=" + root + "/../outside/secret.txt", "..");
        refused(c, "/api/fs?path=..%2Foutside%2Fsecret.txt", "encoded .. in the query");
        refused(c, "/api/fs/../outside/secret.txt", "dot segments in the path");
        refused(c, "/api/fs/%2e%2e/outside/secret.txt", "encoded dot segments");
        refused(c, "/api/fs/..%2Foutside%2Fsecret.txt", "encoded separators");
        refused(c, "/api/fs/..%5Coutside%5Csecret.txt", "encoded backslashes");
        refused(c, "/api/fs//etc/passwd", "an absolute path in the URL path");
        refused(c, "/api/fs?path=leak/secret.txt", "a symlink out of the root");
        refused(c, "/api/fs?path=leak", "a symlinked directory out of the root");
        refused(c, "/api/fs?path=passwd", "a symlink to /etc/passwd");
        assertEquals("in the second root", get(c, "/api/fs?path=to-other").path("content").asText(), "a symlink into another root");
        assertEquals("in the second root", get(c, "/api/fs?path=" + other.resolve("shared.txt")).path("content").asText());
        refused(c, "/api/fs/to-other?project_path=" + root, "a symlink that leaves the project_path");
        refused(c, "/api/fs/passwd?project_path=/etc", "a project_path outside the roots");
        refused(c, "/api/fs/secret.txt?project_path=" + outside, "a project_path outside the roots");
        refused(c, "/api/fs?path=%00", "NUL");
        CommandModeAccessTest.assertError(c.call("GET", "/api/fs?path=" + outside.resolve("secret.txt"), null), 403, "outside", "403 names the cause");
        CommandModeAccessTest.assertError(c.call("GET", "/api/fs/../x", null), 400, "..", "400 names the cause");
        assertEquals(404, c.call("GET", "/api/fs?path=nope.txt", null).statusCode());
        assertEquals(405, c.call("POST", "/api/fs?path=hello.txt", null).statusCode());

        // /api/sessions/{id}/fs: the run's project, if it lies inside a root.
        Path project = Files.createDirectories(root.resolve("project"));
        Files.writeString(project.resolve("main.go"), "package main\n");
        String id = c.create(CommandArpc.fields("executor", "gemini", "prompt", FakeAgents.prompt(FakeAgents.tag("fs"), "lines=0"),
                "project_path", project.toString())).path("session_id").asText();
        JsonNode sdir = get(c, "/api/sessions/" + id + "/fs");
        assertEquals(id, sdir.path("session_id").asText());
        assertEquals(List.of("main.go"), ids(sdir.path("entries"), "name"));
        assertEquals("package main\n", get(c, "/api/sessions/" + id + "/fs/main.go").path("content").asText());
        refused(c, "/api/sessions/" + id + "/fs/../hello.txt", "dot segments under a session");
        String away = c.create(CommandArpc.fields("executor", "gemini", "prompt", FakeAgents.prompt(FakeAgents.tag("fs-out"), "lines=0"),
                "project_path", outside.toString())).path("session_id").asText();
        refused(c, "/api/sessions/" + away + "/fs/secret.txt", "a run whose project lies outside the roots");
        assertEquals(404, c.call("GET", "/api/sessions/5b0c0e7a-0000-0000-0000-000000000000/fs", null).statusCode());
    }

    @Test
    void fsRootOptionsAreChecked() throws Exception {
        Path dir = env.dir("opts");
        for (List<String> bad : List.of(List.of("--fs-root", dir.toString()), List.of("--enable-fs", "--fs-root", dir.resolve("missing").toString()),
                List.of("--enable-fs", "--local-port", "1"))) {
            List<String> args = new ArrayList<>(List.of("--config-dir", dir.toString()));
            if (!bad.contains("--local-port")) args.add("--command-mode");
            args.addAll(bad);
            var p = env.start("arpc-bad", arp.tests.support.Procs.javaCommand(arp.tests.support.Procs.ARPC_MAIN, args), null);
            assertEquals(2, p.awaitExit(java.time.Duration.ofSeconds(30)), () -> bad + ": " + p.dump(20));
            assertTrue(p.stderrText().contains(bad.contains("--local-port") ? "--command-mode" : "--fs-root"), () -> p.dump(20));
        }
    }
}
