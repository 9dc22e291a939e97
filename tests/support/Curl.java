package arp.tests.support;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Runs the real {@code curl} (never through a proxy from the environment) and returns what it got:
 * the status, the response heads (all of them when it followed redirects) and the body.
 */
public final class Curl {
    private Curl() {}

    private static final AtomicInteger SEQ = new AtomicInteger();

    public record Result(int exit, int status, String heads, String body, String stderr) {
        /** The head of the last response (after redirects). */
        public String lastHead() {
            String[] blocks = heads.strip().split("\r\n\r\n");
            return blocks[blocks.length - 1];
        }

        /** Values of a header in the last response, case-insensitive name. */
        public List<String> headers(String name) {
            List<String> values = new ArrayList<>();
            for (String line : lastHead().split("\r\n")) {
                int colon = line.indexOf(':');
                if (colon > 0 && line.substring(0, colon).trim().equalsIgnoreCase(name)) values.add(line.substring(colon + 1).trim());
            }
            return values;
        }

        public String header(String name) {
            List<String> v = headers(name);
            return v.isEmpty() ? null : v.get(0);
        }

        @Override public String toString() {
            return "curl exit " + exit + ", status " + status + "\n" + heads.strip() + "\n\n"
                    + (body.length() > 500 ? body.substring(0, 500) + "..." : body) + (stderr.isBlank() ? "" : "\nstderr: " + stderr);
        }
    }

    /** {@code curl -sS --max-time 20 <args>}; waits at most 40 s. */
    public static Result run(TestEnv env, String... args) {
        Path dir = env.dir("curl-" + SEQ.incrementAndGet());
        Path heads = dir.resolve("heads"), body = dir.resolve("body");
        List<String> cmd = new ArrayList<>(List.of("curl", "-sS", "--noproxy", "*", "--max-time", "20",
                "-D", heads.toString(), "-o", body.toString(), "-w", "%{http_code}"));
        cmd.addAll(List.of(args));
        Proc p = env.start("curl", cmd, null);
        int exit = p.awaitExit(Duration.ofSeconds(40));
        String code = p.stdoutText().strip();
        try {
            return new Result(exit, code.matches("\\d+") ? Integer.parseInt(code) : -1,
                    Files.exists(heads) ? Files.readString(heads, StandardCharsets.ISO_8859_1) : "",
                    Files.exists(body) ? Files.readString(body, StandardCharsets.UTF_8) : "", p.stderrText());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
