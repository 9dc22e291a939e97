package arp.tests.support;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The fake {@code claude}, {@code codex} and {@code gemini} of {@code tests/fake-agents} (see the header
 * of {@code tests/fake-agents/fake-agent} for what they print and record), and what they recorded.
 * A test asks for a behaviour with {@code key=value} words in the prompt ({@link #prompt}); each run
 * records under its {@code tag} in {@link #log}. {@link #close()} SIGKILLs every process the runs
 * recorded (fake, child, grandchild) that is still alive, so a broken cancel cannot leak them.
 */
public final class FakeAgents implements AutoCloseable {
    private static final AtomicInteger SEQ = new AtomicInteger();

    public final Path log;

    public FakeAgents(Path log) { this.log = log; }

    /** The directory holding the three fakes. */
    public static Path dir() { return Deps.repoRoot().resolve("tests").resolve("fake-agents"); }

    /**
     * Environment for arpc: the fakes first on {@code PATH} (or only the given CLIs, with
     * /usr/bin:/bin for the tools the fakes use), and {@code FAKE_AGENT_LOG}.
     */
    public Map<String, String> env(String... onlyThese) {
        Map<String, String> env = new HashMap<>();
        env.put("FAKE_AGENT_LOG", log.toString());
        if (onlyThese.length == 0) {
            env.put("PATH", dir() + ":" + System.getenv().getOrDefault("PATH", "/usr/bin:/bin"));
        } else {
            try {
                Path some = Files.createDirectories(log.resolveSibling(log.getFileName() + "-path"));
                for (String cli : onlyThese) Files.createSymbolicLink(some.resolve(cli), dir().resolve(cli));
                env.put("PATH", some + ":/usr/bin:/bin");
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
        return env;
    }

    /** A fresh tag (a file-name-safe word). */
    public static String tag(String prefix) { return prefix + "-" + SEQ.incrementAndGet() + "-" + ProcessHandle.current().pid(); }

    /** {@code tag=<tag>} followed by the directives, space-separated. */
    public static String prompt(String tag, String... directives) {
        return "tag=" + tag + (directives.length == 0 ? "" : " " + String.join(" ", directives));
    }

    public Run run(String tag) { return new Run(tag); }

    /** What one run of a fake recorded. */
    public final class Run {
        public final String tag;

        Run(String tag) { this.tag = tag; }

        public Path file(String ext) { return log.resolve(tag + "." + ext); }

        /** Waits until the fake recorded its start (argv, cwd, stdin, env, pid, tree, session id). */
        public Run awaitStarted(Duration timeout) {
            awaitFile("started", timeout);
            return this;
        }

        /** Waits until the fake stopped at its gate ({@code gate=K}). */
        public Run awaitGated(Duration timeout) {
            awaitFile("gated", timeout);
            return this;
        }

        /** Opens the gate. */
        public void go() {
            try {
                Files.writeString(file("go"), "go");
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }

        public boolean started() { return Files.exists(file("started")); }

        public boolean finished() { return Files.exists(file("finished")); }

        public List<String> argv() {
            String s = read("argv");
            if (s.isEmpty()) return List.of();
            return Arrays.asList(s.substring(0, s.length() - 1).split("\0", -1)); // every arg ends with NUL
        }

        public String cwd() { return read("cwd").strip(); }

        /** Where fd 0 pointed ({@code /dev/null}, {@code pipe:[…]}). */
        public String stdinTarget() { return lines("stdin").get(0); }

        /**
         * {@code eof}, {@code open} (a read blocked for 3 s) or {@code closed} (no fd 0 at all); {@code control}
         * in Claude's stream-json input mode, where stdin carries the prompt and the control messages.
         */
        public String stdinState() { return lines("stdin").get(1); }

        /** {@code CLAUDECODE=...} etc. as the fake saw them ({@code <unset>} when absent). */
        public Map<String, String> env() {
            Map<String, String> m = new HashMap<>();
            for (String l : lines("env")) {
                int eq = l.indexOf('=');
                if (eq > 0) m.put(l.substring(0, eq), l.substring(eq + 1));
            }
            return m;
        }

        /** The fake's whole environment, as it saw it (T.environ). */
        public Map<String, String> environment() {
            String s = read("environ");
            if (s.isEmpty()) throw new AssertionError("fake agent run " + tag + " recorded no environment");
            Map<String, String> m = new java.util.TreeMap<>();
            for (String entry : s.split("\0")) {
                int eq = entry.indexOf('=');
                if (eq > 0) m.put(entry.substring(0, eq), entry.substring(eq + 1));
            }
            return m;
        }

        public String sessionId() { return read("sid").strip(); }

        // ---- Claude's stream-json input mode (remote approvals) ----

        /** The first stdin line (the user message carrying the prompt), as read. */
        public String input() { return read("input").strip(); }

        /** The prompt decoded from {@link #input()}. */
        public String stdinPrompt() { return read("prompt"); }

        /** Every later stdin line (the control_response messages), as read. */
        public List<String> control() { return lines("control"); }

        /** One {@code TOOL NAME} line per tool the fake ran after an allow. */
        public List<String> ran() { return lines("ran"); }

        /** {@code eof} if stdin was closed after the result, {@code open} if it was not. */
        public String eofAfterResult() { return read("eof").strip(); }

        public long pid() { return Long.parseLong(read("pid").strip()); }

        public long childPid() { return Long.parseLong(read("child").strip()); }

        public long grandchildPid() { return Long.parseLong(read("grandchild").strip()); }

        /** Every stdout line the fake printed so far, as printed. */
        public List<String> stdout() { return lines("stdout"); }

        public List<String> stderr() { return lines("stderr"); }

        public List<String> lines(String ext) {
            String s = read(ext);
            if (s.isEmpty()) return List.of();
            List<String> out = new ArrayList<>(Arrays.asList(s.split("\n", -1)));
            if (out.get(out.size() - 1).isEmpty()) out.remove(out.size() - 1);
            return out;
        }

        public String read(String ext) {
            try {
                return Files.exists(file(ext)) ? Files.readString(file(ext), StandardCharsets.UTF_8) : "";
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }

        private void awaitFile(String ext, Duration timeout) {
            long deadline = System.nanoTime() + timeout.toNanos();
            while (!Files.exists(file(ext))) {
                if (System.nanoTime() > deadline) {
                    throw new AssertionError("fake agent run " + tag + ": no " + ext + " within " + timeout.toMillis()
                            + " ms (recorded: " + recorded() + ")");
                }
                sleep(20);
            }
        }

        private String recorded() {
            try (var s = Files.list(log)) {
                return s.map(p -> p.getFileName().toString()).filter(n -> n.startsWith(tag + ".")).sorted().toList().toString();
            } catch (IOException e) {
                return "?";
            }
        }
    }

    /** All runs that recorded a start. */
    public List<Run> runs() {
        try (var s = Files.list(log)) {
            return s.map(p -> p.getFileName().toString()).filter(n -> n.endsWith(".started"))
                    .map(n -> new Run(n.substring(0, n.length() - ".started".length()))).toList();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    public static boolean alive(long pid) { return ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false) && !zombie(pid); }

    /** A zombie is dead, only not reaped yet (its parent, e.g. a killed fake, is gone or busy). */
    private static boolean zombie(long pid) {
        try {
            String stat = Files.readString(Path.of("/proc/" + pid + "/stat"));
            int close = stat.lastIndexOf(')');
            return close > 0 && stat.length() > close + 2 && stat.charAt(close + 2) == 'Z';
        } catch (IOException e) {
            return false; // gone
        }
    }

    /** Waits until none of {@code pids} is alive; fails naming the survivors. */
    public static void awaitGone(Duration timeout, String what, long... pids) {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (true) {
            List<Long> alive = new ArrayList<>();
            for (long p : pids) if (alive(p)) alive.add(p);
            if (alive.isEmpty()) return;
            if (System.nanoTime() > deadline) {
                throw new AssertionError(what + ": still alive after " + timeout.toMillis() + " ms: " + alive);
            }
            sleep(50);
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

    @Override public void close() {
        if (!Files.isDirectory(log)) return;
        for (Run r : runs()) {
            for (String ext : List.of("grandchild", "child", "pid")) {
                String s = r.read(ext).strip();
                if (s.isEmpty()) continue;
                // Only a process that still runs one of our fakes or their sleeps (never a reused pid).
                Optional<ProcessHandle> h = ProcessHandle.of(Long.parseLong(s));
                h.filter(p -> p.info().commandLine().map(c -> c.contains("fake-agent") || c.contains("sleep")).orElse(false))
                        .ifPresent(ProcessHandle::destroyForcibly);
            }
        }
    }
}
