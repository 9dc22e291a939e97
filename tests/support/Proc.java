package arp.tests.support;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;

/**
 * A child process whose stdout and stderr are captured line by line in memory. Tests wait for a line
 * with a timeout; a process that exits before printing it fails the wait at once instead of timing out.
 * {@link #close()} always kills the process and its descendants (the jbang launcher may not exec java),
 * and a shutdown hook kills whatever a crashed run left behind.
 */
public final class Proc implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Set<Proc> LIVE = ConcurrentHashMap.newKeySet();
    private static final int MAX_LINES = 200_000; // per stream; protects the test JVM from a log flood

    static {
        Runtime.getRuntime().addShutdownHook(new Thread(() -> LIVE.forEach(Proc::kill)));
    }

    public final String name;
    private final Process process;
    private final List<String> command;
    private final List<String> out = new ArrayList<>();
    private final List<String> err = new ArrayList<>();
    private int droppedLines;
    private boolean outDone, errDone; // guarded by this

    private Proc(String name, Process process, List<String> command) {
        this.name = name;
        this.process = process;
        this.command = List.copyOf(command);
    }

    /** {@code env} entries are added to the inherited environment; a null value removes the variable. */
    public static Proc start(String name, List<String> command, Path cwd, Map<String, String> env) {
        ProcessBuilder pb = new ProcessBuilder(command);
        if (cwd != null) pb.directory(cwd.toFile());
        if (env != null) {
            env.forEach((k, v) -> {
                if (v == null) pb.environment().remove(k);
                else pb.environment().put(k, v);
            });
        }
        Process p;
        try {
            p = pb.start();
            p.getOutputStream().close(); // nothing reads stdin; EOF rather than a pipe that never delivers
        } catch (IOException e) {
            throw new UncheckedIOException("cannot start " + name + ": " + command, e);
        }
        Proc proc = new Proc(name, p, command);
        LIVE.add(proc);
        Thread.ofPlatform().daemon().name(name + "-stdout").start(() -> proc.pump(p.getInputStream(), false));
        Thread.ofPlatform().daemon().name(name + "-stderr").start(() -> proc.pump(p.getErrorStream(), true));
        return proc;
    }

    private void pump(InputStream in, boolean stderr) {
        try (BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
            for (String line; (line = r.readLine()) != null; ) {
                synchronized (this) {
                    List<String> l = stderr ? err : out;
                    if (l.size() < MAX_LINES) l.add(line);
                    else droppedLines++;
                    notifyAll();
                }
            }
        } catch (IOException ignored) {
            // the process was killed; what was read is kept
        } finally {
            synchronized (this) {
                if (stderr) errDone = true;
                else outDone = true;
                notifyAll();
            }
        }
    }

    public long pid() { return process.pid(); }

    public boolean isAlive() { return process.isAlive(); }

    public synchronized List<String> stdout() { return List.copyOf(out); }

    public synchronized List<String> stderr() { return List.copyOf(err); }

    public String stdoutText() { return String.join("\n", stdout()); }

    public String stderrText() { return String.join("\n", stderr()); }

    /** Returns the {@code nth} (1-based) stdout line matching {@code p}. */
    public String awaitStdout(String what, Predicate<String> p, int nth, Duration timeout) {
        return awaitLine(false, what, p, nth, timeout);
    }

    public String awaitStderr(String what, Predicate<String> p, Duration timeout) {
        return awaitLine(true, what, p, 1, timeout);
    }

    /** The {@code nth} JSON line on stdout whose {@code event} field equals {@code event}. */
    public JsonNode awaitEvent(String event, int nth, Duration timeout) {
        String line = awaitStdout("a JSON line with \"event\":\"" + event + "\"" + (nth > 1 ? " (#" + nth + ")" : ""),
                l -> event.equals(json(l).path("event").asText(null)), nth, timeout);
        return json(line);
    }

    public int countEvents(String event) {
        return (int) stdout().stream().filter(l -> event.equals(json(l).path("event").asText(null))).count();
    }

    /** Parses a line as JSON; anything else becomes a missing node. */
    public static JsonNode json(String line) {
        String t = line.strip();
        if (!t.startsWith("{")) return JSON.missingNode();
        try {
            return JSON.readTree(t);
        } catch (IOException e) {
            return JSON.missingNode();
        }
    }

    private String awaitLine(boolean stderr, String what, Predicate<String> p, int nth, Duration timeout) {
        long deadline = System.nanoTime() + timeout.toNanos();
        boolean ended;
        synchronized (this) {
            while (true) {
                int seen = 0;
                for (String s : stderr ? err : out) {
                    if (p.test(s) && ++seen == nth) return s;
                }
                ended = stderr ? errDone : outDone;
                long left = deadline - System.nanoTime();
                if (ended || left <= 0) break;
                try {
                    wait(Math.max(1, TimeUnit.NANOSECONDS.toMillis(left)));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new AssertionError(name + ": interrupted while waiting for " + what);
                }
            }
        }
        if (ended) {
            throw new AssertionError(name + " closed its " + (stderr ? "stderr" : "stdout") + exitInfo(Duration.ofSeconds(2))
                    + " before printing " + what + lastLines());
        }
        throw new AssertionError(name + ": no " + what + " within " + timeout.toMillis() + " ms" + exitInfo(Duration.ZERO)
                + lastLines());
    }

    private String lastLines() {
        List<String> e = stderr();
        List<String> tail = e.subList(Math.max(0, e.size() - 5), e.size());
        return tail.isEmpty() ? "" : "; last stderr lines: " + String.join(" | ", tail);
    }

    private String exitInfo(Duration grace) {
        try {
            if (process.waitFor(grace.toMillis(), TimeUnit.MILLISECONDS)) return " (exited with " + process.exitValue() + ")";
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        return " (still running)";
    }

    /** Waits for the process to exit and its output to be fully read; fails on timeout. */
    public int awaitExit(Duration timeout) {
        try {
            if (!process.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
                throw new AssertionError(name + " did not exit within " + timeout.toMillis() + " ms");
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(2);
            synchronized (this) {
                while (!(outDone && errDone) && System.nanoTime() < deadline) wait(50);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError(name + ": interrupted while waiting for exit");
        }
        return process.exitValue();
    }

    /** SIGTERM (Process.destroy on Unix). */
    public void sigterm() { process.destroy(); }

    /** SIGKILL (Process.destroyForcibly on Unix): no shutdown hook runs, the kernel closes the sockets. */
    public void sigkill() { process.destroyForcibly(); }

    /**
     * Any signal by name ({@code STOP}, {@code CONT}, ...) with {@code kill(1)}. A stopped process keeps
     * its sockets open but answers nothing, like a machine that dropped off the network.
     */
    public void signal(String name) {
        try {
            Process k = new ProcessBuilder("kill", "-" + name, String.valueOf(process.pid())).redirectErrorStream(true).start();
            if (!k.waitFor(10, TimeUnit.SECONDS) || k.exitValue() != 0) {
                throw new AssertionError("kill -" + name + " " + process.pid() + " failed: " + new String(k.getInputStream().readAllBytes(), StandardCharsets.UTF_8));
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted while sending SIG" + name);
        }
    }

    public String dump(int maxLines) {
        StringBuilder sb = new StringBuilder();
        String state = process.isAlive() ? "running" : "exit " + process.exitValue();
        sb.append("==== ").append(name).append(" (pid ").append(process.pid()).append(", ").append(state).append(") ====\n");
        sb.append("$ ").append(String.join(" ", command)).append('\n');
        appendTail(sb, "stdout", stdout(), maxLines);
        appendTail(sb, "stderr", stderr(), maxLines);
        synchronized (this) {
            if (droppedLines > 0) sb.append("(").append(droppedLines).append(" lines dropped)\n");
        }
        return sb.toString();
    }

    private static void appendTail(StringBuilder sb, String label, List<String> lines, int max) {
        sb.append("---- ").append(label).append(" (").append(lines.size()).append(" lines)\n");
        if (lines.size() > max) sb.append("  ... ").append(lines.size() - max).append(" earlier lines omitted\n");
        for (String l : lines.subList(Math.max(0, lines.size() - max), lines.size())) sb.append("  ").append(l).append('\n');
    }

    private void kill() {
        List<ProcessHandle> kids = process.descendants().toList();
        process.destroy();
        kids.forEach(ProcessHandle::destroy);
        try {
            if (!process.waitFor(5, TimeUnit.SECONDS)) {
                process.destroyForcibly();
                process.waitFor(5, TimeUnit.SECONDS);
            }
            for (ProcessHandle k : kids) {
                try {
                    k.onExit().get(3, TimeUnit.SECONDS);
                } catch (Exception e) {
                    k.destroyForcibly();
                }
            }
        } catch (InterruptedException e) {
            process.destroyForcibly();
            kids.forEach(ProcessHandle::destroyForcibly);
            Thread.currentThread().interrupt();
        }
    }

    @Override public void close() {
        kill();
        LIVE.remove(this);
    }
}
