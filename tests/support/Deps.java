package arp.tests.support;

import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Where the checkout is, and the outside programs the tests drive besides arps and arpc (PostgreSQL,
 * Chromium, Node.js with playwright-core, the MCP Inspector), which {@code tests/install-deps} installs.
 */
public final class Deps {
    private Deps() {}

    /** Debian's Chromium, installed by tests/install-deps. */
    public static final String CHROMIUM = "/usr/bin/chromium";

    /**
     * The checkout: {@code -Darp.repo} or {@code $ARP_REPO}, else the nearest directory at or above the
     * working directory that holds Arps.java. (jbang runs the tests from a jar in its cache, so the
     * jar's location says nothing about the checkout.)
     */
    public static Path repoRoot() {
        String prop = System.getProperty("arp.repo", System.getenv("ARP_REPO"));
        if (prop != null) return Path.of(prop).toAbsolutePath();
        List<Path> tried = new ArrayList<>();
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            if (Files.isRegularFile(p.resolve("Arps.java"))) return p;
            tried.add(p);
        }
        throw new AssertionError("repository root not found (no Arps.java in " + tried + "); run from inside the repo or pass -Darp.repo=DIR");
    }

    /**
     * Where tests/install-deps puts playwright-core: {@code $ARP_NODE_DIR}, else
     * {@code ${ARP_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/arp}/node} (the script's own default, and the
     * cache directory the ./jbang launcher uses). {@link #install()} hands this path to the script.
     */
    public static Path nodeDir() {
        String dir = System.getenv("ARP_NODE_DIR");
        if (nonEmpty(dir)) return Path.of(dir);
        String cache = System.getenv("ARP_CACHE_DIR");
        if (nonEmpty(cache)) return Path.of(cache, "node");
        String xdg = System.getenv("XDG_CACHE_HOME");
        Path base = nonEmpty(xdg) ? Path.of(xdg) : Path.of(System.getProperty("user.home"), ".cache");
        return base.resolve("arp").resolve("node");
    }

    /** The installed playwright-core package directory (holds index.mjs). */
    public static Path playwrightCore() { return nodeDir().resolve("node_modules").resolve("playwright-core"); }

    /**
     * The Node.js runtime tests/install-deps installs from npm for the MCP Inspector (which needs
     * Node.js 22.19+): {@code node-<os>-<arch>/bin/node} next to playwright-core.
     */
    public static Path inspectorNode() {
        String os = System.getProperty("os.name").toLowerCase(java.util.Locale.ROOT).startsWith("mac") ? "darwin" : "linux";
        String arch = switch (System.getProperty("os.arch")) {
            case "aarch64", "arm64" -> "arm64";
            default -> "x64";
        };
        return nodeDir().resolve("node_modules").resolve("node-" + os + "-" + arch).resolve("bin").resolve("node");
    }

    /** The MCP Inspector's entry point (its {@code mcp-inspector} bin; {@code --cli} selects the CLI). */
    public static Path inspector() {
        return nodeDir().resolve("node_modules").resolve("@modelcontextprotocol").resolve("inspector")
                .resolve("clients").resolve("launcher").resolve("build").resolve("index.js");
    }

    private static boolean nonEmpty(String s) { return s != null && !s.isEmpty(); }

    /**
     * Runs tests/install-deps (quick and silent when everything is installed), its output going to this
     * process's stdout/stderr. Returns null on success, else what went wrong.
     */
    public static String install() {
        Path script;
        try {
            script = repoRoot().resolve("tests").resolve("install-deps");
        } catch (AssertionError e) {
            return e.getMessage();
        }
        if (!Files.isExecutable(script)) return script + " is missing or not executable";
        ProcessBuilder pb = new ProcessBuilder(script.toString())
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .redirectOutput(ProcessBuilder.Redirect.INHERIT)
                .redirectError(ProcessBuilder.Redirect.INHERIT);
        pb.environment().put("ARP_NODE_DIR", nodeDir().toString());
        try {
            Process p = pb.start();
            // apt-get installing Chromium and PostgreSQL on a fresh machine takes a minute or two.
            if (!p.waitFor(20, TimeUnit.MINUTES)) {
                p.descendants().forEach(ProcessHandle::destroy);
                p.destroy();
                return script + " did not finish within 20 minutes";
            }
            return p.exitValue() == 0 ? null : script + " failed (exit " + p.exitValue() + ")";
        } catch (IOException e) {
            return "cannot run " + script + ": " + e;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return "interrupted while running " + script;
        }
    }
}
