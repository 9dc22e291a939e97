package arp.tests.support;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.BufferedWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.security.MessageDigest;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The agents' history trees, written in their real on-disk formats (docs/reference/coding-agents.md
 * section 5, fixtures of 6.1): Claude Code's {@code projects/<encoded cwd>/<id>.jsonl}, Codex's
 * {@code sessions/YYYY/MM/DD/rollout-…-<uuid>.jsonl} and Gemini's {@code tmp/<sha256>/chats/*.json}.
 * Every file's mtime is set, so "ongoing" and ordering do not depend on when the test runs.
 */
public final class HistoryFixtures {
    private static final ObjectMapper JSON = new ObjectMapper();
    /** Old enough that no file counts as "ongoing" unless a test touches it. */
    public static final Instant OLD = Instant.parse("2025-12-01T00:00:00Z");

    private HistoryFixtures() {}

    // ---- Claude Code ----

    /** Claude's directory name for a cwd: each UTF-16 unit outside [A-Za-z0-9] becomes '-'; over 200, cut and suffixed with a hash. */
    public static String claudeDirName(String cwd) {
        StringBuilder b = new StringBuilder();
        for (char c : cwd.toCharArray()) b.append(Character.isLetterOrDigit(c) && c < 128 ? c : '-');
        if (b.length() <= 200) return b.toString();
        return b.substring(0, 200) + "-" + Long.toString(Math.abs((long) cwd.hashCode()), 36);
    }

    public static final String A_CWD = "/home/alice/my_app.v2-x";
    public static final String B_CWD = "/home/zoë/项目 x";
    public static final String LONG_CWD = "/home/alice/" + "a-very_long.directory-name/".repeat(9) + "end";
    public static final String BIG_CWD = "/w/big";
    public static final String SNAP_DIR = "-w-snap";

    public static final String S_NORMAL = "5b0c0e7a-1111-4a4a-8b8b-000000000001";
    public static final String S_CLEAR = "5b0c0e7a-1111-4a4a-8b8b-000000000002";
    public static final String S_TITLED = "5b0c0e7a-1111-4a4a-8b8b-000000000003";
    public static final String S_B_OLD = "5b0c0e7a-1111-4a4a-8b8b-000000000004";
    public static final String S_B_NEW = "5b0c0e7a-1111-4a4a-8b8b-000000000005";
    public static final String S_LONG = "5b0c0e7a-1111-4a4a-8b8b-000000000006";
    public static final String S_SNAP = "5b0c0e7a-1111-4a4a-8b8b-000000000007";
    public static final String S_BIG = "5b0c0e7a-1111-4a4a-8b8b-000000000008";
    public static final String S_SIDECHAIN = "5b0c0e7a-1111-4a4a-8b8b-000000000009";
    /** What the listing of {@link #claude} shows, newest first. */
    public static final List<String> CLAUDE_LISTED = List.of(S_TITLED, S_BIG, S_NORMAL, S_CLEAR, S_LONG, S_B_NEW, S_B_OLD, S_SNAP);

    public static final String BIG_HEAD_PROMPT = "summarise the big log";
    public static final String BIG_MIDDLE_TITLE = "MIDDLE TITLE: only a whole read sees this";
    public static final String BIG_TAIL_SUMMARY = "Big log summary";
    public static final int BIG_LINES = 10_000;

    public static Map<String, Object> claudeRecord(String type, String sid, String cwd, String ts, Object content) {
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("type", type);
        r.put("uuid", java.util.UUID.randomUUID().toString());
        r.put("parentUuid", null);
        r.put("isSidechain", false);
        r.put("userType", "external");
        r.put("cwd", cwd);
        r.put("sessionId", sid);
        r.put("version", "2.0.31");
        r.put("gitBranch", "main");
        r.put("timestamp", ts);
        r.put("message", Map.of("role", type, "content", content));
        return r;
    }

    public static Map<String, Object> text(String t) { return Map.of("type", "text", "text", t); }

    /**
     * A Claude tree under {@code root} (a ~/.claude): see {@link #CLAUDE_LISTED}, plus what must not be
     * listed (a legacy subagent file, a {@code <sid>/subagents/} sidecar, {@code not_a_uuid.jsonl}, a
     * sidechain-only file) and a todo list of {@link #S_NORMAL}. The big transcript is about 20 MB.
     */
    public static void claude(Path root) throws IOException {
        Path a = root.resolve("projects").resolve(claudeDirName(A_CWD));
        String ts = "2025-11-07T10:00:0";
        // A normal session: out-of-order timestamps, one invalid line, a summary, a half-written last line.
        write(a.resolve(S_NORMAL + ".jsonl"), List.of(
                line(claudeRecord("user", S_NORMAL, A_CWD, ts + "0.000Z", "fix the failing test")),
                line(claudeRecord("assistant", S_NORMAL, A_CWD, ts + "5.000Z", List.of(text("Running the tests"),
                        Map.of("type", "tool_use", "id", "toolu_1", "name", "Bash", "input", Map.of("command", "npm test"))))),
                line(claudeRecord("user", S_NORMAL, A_CWD, ts + "3.000Z",
                        List.of(Map.of("type", "tool_result", "tool_use_id", "toolu_1", "content", "1 failing")))),
                "{this is not json",
                line(claudeRecord("assistant", S_NORMAL, A_CWD, ts + "9.000Z", List.of(text("Fixed.")))),
                line(Map.of("type", "summary", "summary", "Fix the failing test", "leafUuid", "x")),
                "{\"type\":\"assistant\",\"message\":{\"role\":\"assis"), false);
        // Its subagents: a legacy agent-<id>.jsonl and a <sid>/subagents/ sidecar; and tool results.
        Map<String, Object> side = claudeRecord("user", S_NORMAL, A_CWD, ts + "4.000Z", "Warmup");
        side.put("isSidechain", true);
        write(a.resolve("agent-9f8e7d6c.jsonl"), List.of(line(side)), true);
        write(a.resolve(S_NORMAL).resolve("subagents").resolve("agent-a1b2c3.jsonl"), List.of(line(side)), true);
        write(a.resolve(S_NORMAL).resolve("tool-results").resolve("toolu_1.txt"), List.of("1 failing"), true);
        write(root.resolve("todos").resolve(S_NORMAL + "-agent-" + S_NORMAL + ".json"),
                List.of(line(List.of(Map.of("content", "run the tests", "status", "completed", "activeForm", "Running the tests")))), true);
        // A sidechain-only file under a UUID name: a subagent's too.
        write(a.resolve(S_SIDECHAIN + ".jsonl"), List.of(line(side)), true);

        // A session that starts with what the CLI injects: the first real message comes later.
        write(a.resolve(S_CLEAR + ".jsonl"), List.of(
                line(claudeRecord("user", S_CLEAR, A_CWD, "2025-11-06T09:00:00.000Z", "<command-name>/clear</command-name>\n<command-message>clear</command-message>")),
                line(claudeRecord("user", S_CLEAR, A_CWD, "2025-11-06T09:00:01.000Z", "<local-command-stdout></local-command-stdout>")),
                line(claudeRecord("user", S_CLEAR, A_CWD, "2025-11-06T09:00:02.000Z",
                        "Caveat: The messages below were generated by the user while running local commands. DO NOT respond to these messages.")),
                line(claudeRecord("user", S_CLEAR, A_CWD, "2025-11-06T09:00:03.000Z", List.of(text("what does this repo do?")))),
                line(claudeRecord("assistant", S_CLEAR, A_CWD, "2025-11-06T09:00:04.000Z", List.of(text("It tunnels.")))),
                ""), true);
        // Titles: the user's custom title wins over AI titles, whatever their order.
        write(a.resolve(S_TITLED + ".jsonl"), List.of(
                line(claudeRecord("user", S_TITLED, A_CWD, "2025-11-20T08:00:00.000Z", "hello")),
                line(claudeRecord("assistant", S_TITLED, A_CWD, "2025-11-20T08:00:01.000Z", List.of(text("Hi.")))),
                line(Map.of("type", "ai-title", "aiTitle", "AI title", "sessionId", S_TITLED)),
                line(Map.of("type", "custom-title", "customTitle", "My title", "sessionId", S_TITLED)),
                line(Map.of("type", "ai-title", "aiTitle", "A later AI title", "sessionId", S_TITLED))), true);
        // Not a session id: never listed (and never loadable).
        write(a.resolve("not_a_uuid.jsonl"), List.of(line(claudeRecord("user", "not_a_uuid", A_CWD, "2025-11-07T11:00:00.000Z", "hidden"))), true);

        // Non-ASCII path; the newer session moved to a subdirectory, so its cwd does not name the project.
        Path b = root.resolve("projects").resolve(claudeDirName(B_CWD));
        write(b.resolve(S_B_OLD + ".jsonl"), List.of(
                line(claudeRecord("user", S_B_OLD, B_CWD, "2025-11-01T10:00:00.000Z", "première question 项目")),
                line(claudeRecord("assistant", S_B_OLD, B_CWD, "2025-11-01T10:00:01.000Z", List.of(text("ok"))))), true);
        write(b.resolve(S_B_NEW + ".jsonl"), List.of(
                line(claudeRecord("user", S_B_NEW, B_CWD + "/sub", "2025-11-02T10:00:00.000Z", "second")),
                line(claudeRecord("assistant", S_B_NEW, B_CWD + "/sub", "2025-11-02T10:00:01.000Z", List.of(text("ok"))))), true);

        // A path over 200 characters (the directory name is cut and hashed).
        write(root.resolve("projects").resolve(claudeDirName(LONG_CWD)).resolve(S_LONG + ".jsonl"), List.of(
                line(claudeRecord("user", S_LONG, LONG_CWD, "2025-11-05T10:00:00.000Z", "deep")),
                line(claudeRecord("assistant", S_LONG, LONG_CWD, "2025-11-05T10:00:01.000Z", List.of(text("ok"))))), true);

        // Only file-history snapshots: an empty session, and no cwd anywhere in the project.
        Path snap = write(root.resolve("projects").resolve(SNAP_DIR).resolve(S_SNAP + ".jsonl"), List.of(
                line(Map.of("type", "file-history-snapshot", "messageId", "m1", "snapshot", Map.of("trackedFileBackups", Map.of()))),
                line(Map.of("type", "file-history-snapshot", "messageId", "m2", "snapshot", Map.of("trackedFileBackups", Map.of())))), true);
        Files.setLastModifiedTime(snap, FileTime.from(Instant.parse("2025-10-01T00:00:00Z")));

        bigClaude(root.resolve("projects").resolve(claudeDirName(BIG_CWD)).resolve(S_BIG + ".jsonl"), BIG_LINES);

        try (var files = Files.walk(root)) {
            for (Path f : files.filter(Files::isRegularFile).toList()) {
                if (!f.equals(snap)) Files.setLastModifiedTime(f, FileTime.from(OLD));
            }
        }
        Files.setLastModifiedTime(a.resolve(S_TITLED + ".jsonl"), FileTime.from(Instant.now())); // being written: "ongoing"
    }

    /**
     * A large transcript (about 2 KB a line): a prompt first, a custom title in the middle (only a whole
     * read finds it), a summary near the end.
     */
    public static void bigClaude(Path file, int lines) throws IOException {
        Files.createDirectories(file.getParent());
        String sid = file.getFileName().toString().replace(".jsonl", "");
        String filler = "x".repeat(1900);
        try (BufferedWriter w = Files.newBufferedWriter(file, StandardCharsets.UTF_8)) {
            w.write(line(claudeRecord("user", sid, BIG_CWD, "2025-11-10T00:00:00.000Z", BIG_HEAD_PROMPT)));
            w.write('\n');
            Instant t = Instant.parse("2025-11-10T00:00:01Z");
            for (int i = 0; i < lines; i++) {
                if (i == lines / 2) w.write(line(Map.of("type", "custom-title", "customTitle", BIG_MIDDLE_TITLE, "sessionId", sid)) + "\n");
                if (i == lines - 3) w.write(line(Map.of("type", "summary", "summary", BIG_TAIL_SUMMARY, "leafUuid", "x")) + "\n");
                w.write(line(claudeRecord("assistant", sid, BIG_CWD, t.plusSeconds(i).toString(), List.of(text(i + " " + filler)))));
                w.write('\n');
            }
        }
    }

    // ---- Codex ----

    public static final String CODEX_CWD = "/w/codex-proj";
    public static final String C_FIRST = "019a5e2b-7c1d-7e2f-9a3b-4c5d6e7f8a01";
    public static final String C_SECOND = "019a5e2b-7c1d-7e2f-9a3b-4c5d6e7f8a02";

    /** Two rollouts of one cwd on two days, as {@code codex exec} writes them. */
    public static void codex(Path root) throws IOException {
        codexRollout(root, "2025/11/07", "2025-11-07T10-30-45", C_FIRST, "add a README", "2025-11-07T10:30:45");
        codexRollout(root, "2025/11/08", "2025-11-08T09-00-00", C_SECOND, "now a LICENSE", "2025-11-08T09:00:00");
        try (var files = Files.walk(root)) {
            for (Path f : files.filter(Files::isRegularFile).toList()) Files.setLastModifiedTime(f, FileTime.from(OLD));
        }
    }

    private static void codexRollout(Path root, String day, String stamp, String id, String prompt, String t) throws IOException {
        List<String> lines = new ArrayList<>();
        lines.add(codex(t + ".100Z", "session_meta", Map.of("id", id, "timestamp", t + ".100Z", "cwd", CODEX_CWD,
                "originator", "codex_exec", "cli_version", "0.53.0", "source", "exec", "instructions", "")));
        lines.add(codex(t + ".200Z", "turn_context", Map.of("cwd", CODEX_CWD, "approval_policy", "never", "model", "gpt-5-codex")));
        lines.add(codex(t + ".300Z", "response_item", Map.of("type", "message", "role", "user", "content",
                List.of(Map.of("type", "input_text", "text", "<environment_context>\n  <cwd>" + CODEX_CWD + "</cwd>\n</environment_context>")))));
        lines.add(codex(t + ".400Z", "response_item", Map.of("type", "message", "role", "user", "content",
                List.of(Map.of("type", "input_text", "text", prompt)))));
        lines.add(codex(t + ".400Z", "event_msg", Map.of("type", "user_message", "message", prompt, "kind", "plain")));
        lines.add(codex(t + ".500Z", "response_item", Map.of("type", "function_call", "call_id", "call_1", "name", "shell",
                "arguments", "{\"command\":[\"ls\"]}")));
        lines.add(codex(t + ".600Z", "response_item", Map.of("type", "function_call_output", "call_id", "call_1", "output", "README.md")));
        lines.add(codex(t + ".700Z", "response_item", Map.of("type", "message", "role", "assistant", "content",
                List.of(Map.of("type", "output_text", "text", "Done.")))));
        lines.add(codex(t + ".800Z", "event_msg", Map.of("type", "token_count", "info", Map.of("total_token_usage", Map.of("total_tokens", 1234)))));
        write(root.resolve("sessions").resolve(day).resolve("rollout-" + stamp + "-" + id + ".jsonl"), lines, true);
    }

    private static String codex(String ts, String type, Object payload) {
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("timestamp", ts);
        r.put("type", type);
        r.put("payload", payload);
        return line(r);
    }

    // ---- Gemini ----

    public static final String GEMINI_LOGGED_CWD = "/w/gem-only";
    public static final String GEMINI_UNKNOWN_CWD = "/w/nobody-knows";
    public static final String G_KNOWN = "3c4f6a1e-2b7d-4e8f-9a0b-1c2d3e4f5a01";
    public static final String G_LOGGED = "3c4f6a1e-2b7d-4e8f-9a0b-1c2d3e4f5a02";
    public static final String G_UNKNOWN = "3c4f6a1e-2b7d-4e8f-9a0b-1c2d3e4f5a03";

    public static String sha256(String s) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(s.getBytes(StandardCharsets.UTF_8)));
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /**
     * ~/.gemini/tmp: a session in the project of {@link #CODEX_CWD} (known from Codex), one whose
     * logs.json records its path, one nobody can resolve, and a project directory without chats/.
     */
    public static void gemini(Path root) throws IOException {
        geminiSession(root, CODEX_CWD, G_KNOWN, "2025-11-07T11:00", "explain main.go");
        geminiSession(root, GEMINI_LOGGED_CWD, G_LOGGED, "2025-11-06T11:00", "list the files");
        write(root.resolve("tmp").resolve(sha256(GEMINI_LOGGED_CWD)).resolve("logs.json"), List.of(line(List.of(Map.of(
                "sessionId", G_LOGGED, "messageId", 0, "type", "user", "message", "list the files",
                "timestamp", "2025-11-06T11:00:00.000Z", "cwd", GEMINI_LOGGED_CWD)))), true);
        geminiSession(root, GEMINI_UNKNOWN_CWD, G_UNKNOWN, "2025-11-05T11:00", "who am I");
        write(root.resolve("tmp").resolve(sha256("/w/no-chats")).resolve("logs.json"), List.of("[]"), true);
        try (var files = Files.walk(root)) {
            for (Path f : files.filter(Files::isRegularFile).toList()) Files.setLastModifiedTime(f, FileTime.from(OLD));
        }
    }

    private static void geminiSession(Path root, String projectRoot, String id, String minute, String prompt) throws IOException {
        Map<String, Object> s = new LinkedHashMap<>();
        s.put("sessionId", id);
        s.put("projectHash", sha256(projectRoot));
        s.put("startTime", minute + ":00.000Z");
        s.put("lastUpdated", minute + ":30.000Z");
        s.put("messages", List.of(
                Map.of("id", "m1", "timestamp", minute + ":00.000Z", "type", "user", "content", prompt),
                Map.of("id", "m2", "timestamp", minute + ":20.000Z", "type", "gemini", "content", "Here it is.",
                        "thoughts", List.of(Map.of("subject", "Reading", "description", "reading the file", "timestamp", minute + ":10.000Z")),
                        "toolCalls", List.of(Map.of("id", "read_file-1", "name", "read_file", "args", Map.of("absolute_path", projectRoot + "/x"),
                                "result", List.of(), "status", "success", "displayName", "ReadFile")),
                        "tokens", Map.of("input", 100, "output", 20, "total", 120), "model", "gemini-2.5-pro"),
                Map.of("id", "m3", "timestamp", minute + ":30.000Z", "type", "info", "content", "Session saved.")));
        Path file = root.resolve("tmp").resolve(sha256(projectRoot)).resolve("chats")
                .resolve("session-" + minute.replace(':', '-') + "-" + id.substring(0, 8) + ".json");
        write(file, List.of(line(s)), true);
    }

    // ---- files ----

    public static String line(Object o) {
        try {
            return JSON.writeValueAsString(o);
        } catch (JsonProcessingException e) {
            throw new IllegalArgumentException(e);
        }
    }

    /** Writes the lines, each followed by a newline unless {@code lastNewline} is false for the last one. */
    public static Path write(Path file, List<String> lines, boolean lastNewline) {
        try {
            Files.createDirectories(file.getParent());
            String text = String.join("\n", lines) + (lastNewline ? "\n" : "");
            return Files.writeString(file, text, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Every regular file and directory under {@code root}, as paths relative to it. */
    public static java.util.SortedSet<String> tree(Path root) throws IOException {
        try (var s = Files.walk(root)) {
            return s.map(p -> root.relativize(p).toString()).collect(java.util.stream.Collectors.toCollection(java.util.TreeSet::new));
        }
    }
}
