package arp.tests.support;

import com.fasterxml.jackson.databind.JsonNode;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * The real MCP Inspector ({@code @modelcontextprotocol/inspector}, pinned by tests/install-deps) in CLI
 * mode, on the Node.js 22 runtime installed next to it: {@code node <inspector> --cli URL --transport
 * http --format json --stored-auth-only ARGS…}. Each run performs one method and exits; with
 * {@code --format json} its answer is one JSON object, {@code {"result":…}} on stdout, or
 * {@code {"error":{"code":…,"message":…}}} on stderr. {@code --stored-auth-only} keeps it from
 * starting an interactive OAuth login when the server answers 401. Its home (where it keeps a catalog
 * and client settings) is a directory of the test.
 */
public final class Inspector {
    private final TestEnv env;
    private final Path home;

    public Inspector(TestEnv env) {
        this.env = env;
        this.home = env.dir("inspector-home");
        for (Path p : List.of(Deps.inspectorNode(), Deps.inspector())) {
            if (!Files.exists(p)) throw new AssertionError(p + " is missing: tests/install-deps installs the MCP Inspector and its Node.js");
        }
    }

    /** One finished run. */
    public record Result(int exit, List<String> stdout, List<String> stderr) {
        /** The JSON answer on stdout ({"result":…}). */
        public JsonNode json() {
            String out = String.join("\n", stdout).strip();
            JsonNode n = Proc.json(out);
            if (n.isMissingNode()) throw new AssertionError("the Inspector's stdout is not JSON: " + this);
            return n;
        }

        /** The JSON error on stderr ({"error":…}). */
        public JsonNode error() {
            for (String l : stderr) {
                JsonNode n = Proc.json(l);
                if (n.has("error")) return n.get("error");
            }
            throw new AssertionError("no JSON error on the Inspector's stderr: " + this);
        }

        @Override public String toString() { return "exit " + exit + "\nstdout: " + String.join("\n", stdout) + "\nstderr: " + String.join("\n", stderr); }
    }

    /** Starts {@code --cli url ARGS…} (to be awaited with {@link #await}). */
    public Proc start(String url, String... args) {
        List<String> cmd = new ArrayList<>(List.of(Deps.inspectorNode().toString(), Deps.inspector().toString(), "--cli", url,
                "--transport", "http", "--format", "json", "--stored-auth-only"));
        cmd.addAll(List.of(args));
        Map<String, String> e = new java.util.HashMap<>();
        e.put("HOME", home.toString());
        e.put("PATH", Deps.inspectorNode().getParent() + ":/usr/bin:/bin");
        e.put("NODE_OPTIONS", null);
        e.put("MCP_AUTO_OPEN_ENABLED", "false");
        return env.start("inspector", cmd, home, e);
    }

    public static Result await(Proc p, Duration timeout) {
        int exit = p.awaitExit(timeout);
        return new Result(exit, p.stdout(), p.stderr());
    }

    /** Runs {@code --cli url ARGS…} to its end (at most 30 s). */
    public Result run(String url, String... args) { return await(start(url, args), Duration.ofSeconds(30)); }
}
