package arp.tests.support;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.GroupPrincipal;
import java.nio.file.attribute.PosixFileAttributeView;
import java.nio.file.attribute.UserPrincipal;
import java.nio.file.attribute.UserPrincipalLookupService;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ThreadLocalRandom;
import java.util.stream.Stream;

/**
 * A real PostgreSQL server of the test's own (Debian's postgresql package, binaries under
 * /usr/lib/postgresql/VERSION/bin): initdb into a fresh directory, then {@code postgres} listening on
 * 127.0.0.1:{@code port} only, with password (SCRAM) authentication for user {@link #USER}. PostgreSQL
 * refuses to run as root, so as root both run as the {@code postgres} system user (via runuser) in a
 * directory it owns. Owned by the {@link TestEnv}: after the test it is stopped with
 * {@code pg_ctl stop -m fast}, killed if that fails, and its directory is deleted.
 */
public final class Postgres {
    public static final String USER = "arp";
    private static final Duration START = Duration.ofSeconds(30);

    public final int port;
    public final String password;
    private final Proc server;

    private Postgres(int port, String password, Proc server) {
        this.port = port;
        this.password = password;
        this.server = server;
    }

    public Proc server() { return server; }

    /** Starts a server on 127.0.0.1:{@code port}; returns once it accepts connections. */
    public static Postgres start(TestEnv env, int port) throws IOException {
        Path bin = binDir();
        boolean root = isRoot();
        List<String> as = root ? List.of("runuser", "-u", "postgres", "--") : List.of();
        // Not under the TestEnv's temp dir: that one is private to root, and the postgres user must get in.
        Path base = Files.createTempDirectory("arp-pg-");
        env.own(() -> deleteTree(base)); // closed last: after the server is gone
        Path data = base.resolve("data"), sockets = Files.createDirectory(base.resolve("sock"));
        String password = HexFormat.of().toHexDigits(ThreadLocalRandom.current().nextLong());
        Path pwFile = Files.writeString(base.resolve("pw"), password + "\n");
        if (root) {
            for (Path p : List.of(base, sockets, pwFile)) chown(p, "postgres");
        }

        List<String> initdb = new ArrayList<>(as);
        initdb.addAll(List.of(bin.resolve("initdb").toString(), "-D", data.toString(), "-U", USER, "--pwfile=" + pwFile,
                "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"));
        Proc init = env.start("initdb", initdb, base);
        if (init.awaitExit(Duration.ofSeconds(60)) != 0) {
            throw new AssertionError("initdb failed:\n" + init.stdoutText() + "\n" + init.stderrText());
        }

        List<String> postgres = new ArrayList<>(as);
        postgres.addAll(List.of(bin.resolve("postgres").toString(), "-D", data.toString(), "-p", String.valueOf(port),
                "-k", sockets.toString(), "-c", "listen_addresses=127.0.0.1",
                // A throw-away server: no durability, little memory, every connection logged.
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "shared_buffers=16MB", "-c", "max_connections=20", "-c", "log_connections=on"));
        Proc server = env.start("postgres", postgres, base);
        env.own(() -> stop(as, bin, data, server));
        server.awaitStderr("PostgreSQL's \"ready to accept connections\"",
                l -> l.contains("database system is ready to accept connections"), START);
        return new Postgres(port, password, server);
    }

    /** A connection URI for psql: user, password and UTF-8, to {@code 127.0.0.1:port}. */
    public String uri(int port) {
        return "postgresql://" + USER + ":" + password + "@127.0.0.1:" + port
                + "/postgres?connect_timeout=10&client_encoding=UTF8&application_name=arp-test";
    }

    /** Fast shutdown (sessions are ended, then a clean stop), then the process is reaped. */
    private static void stop(List<String> as, Path bin, Path data, Proc server) {
        if (server.isAlive()) {
            List<String> cmd = new ArrayList<>(as);
            cmd.addAll(List.of(bin.resolve("pg_ctl").toString(), "stop", "-D", data.toString(), "-m", "fast", "-w", "-t", "15"));
            try (Proc pgCtl = Proc.start("pg_ctl", cmd, data.getParent(), Map.of())) {
                pgCtl.awaitExit(Duration.ofSeconds(20));
                server.awaitExit(Duration.ofSeconds(10));
            } catch (AssertionError e) {
                // server.close() (after this) kills what is left
            }
        }
    }

    /** The newest /usr/lib/postgresql/VERSION/bin holding postgres and initdb. */
    static Path binDir() throws IOException {
        Path lib = Path.of("/usr/lib/postgresql");
        if (!Files.isDirectory(lib)) throw new AssertionError("PostgreSQL is not installed (no " + lib + "): run tests/install-deps");
        try (Stream<Path> versions = Files.list(lib)) {
            return versions.filter(v -> v.getFileName().toString().matches("\\d+(\\.\\d+)?"))
                    .map(v -> v.resolve("bin"))
                    .filter(b -> Files.isExecutable(b.resolve("postgres")) && Files.isExecutable(b.resolve("initdb")))
                    .max(Comparator.comparingDouble(b -> Double.parseDouble(b.getParent().getFileName().toString())))
                    .orElseThrow(() -> new AssertionError("no PostgreSQL server binaries under " + lib + ": run tests/install-deps"));
        }
    }

    static boolean isRoot() {
        try {
            return ((Number) Files.getAttribute(Path.of("/proc/self"), "unix:uid")).intValue() == 0;
        } catch (IOException | UnsupportedOperationException e) {
            return "root".equals(System.getProperty("user.name"));
        }
    }

    private static void chown(Path p, String user) throws IOException {
        UserPrincipalLookupService users = p.getFileSystem().getUserPrincipalLookupService();
        UserPrincipal owner = users.lookupPrincipalByName(user);
        GroupPrincipal group = users.lookupPrincipalByGroupName(user);
        PosixFileAttributeView view = Files.getFileAttributeView(p, PosixFileAttributeView.class);
        view.setOwner(owner);
        view.setGroup(group);
    }

    private static void deleteTree(Path p) {
        if (!Files.exists(p)) return;
        try (Stream<Path> s = Files.walk(p)) {
            for (Path f : s.sorted(Comparator.reverseOrder()).toList()) Files.deleteIfExists(f);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
