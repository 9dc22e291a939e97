package arp.tests;

import arp.tests.support.Postgres;
import arp.tests.support.Proc;
import arp.tests.support.TestEnv;
import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.ThreadLocalRandom;
import java.util.stream.Collectors;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A real PostgreSQL server behind arpc, reached through a dedicated TCP port of arps
 * ({@code --tcp-ports} / {@code --remote-port 0}) by the real {@code psql}: its SSL request, the
 * SCRAM password login (several round trips), COPY and large values in both directions, and two
 * sessions open at once.
 */
class PostgresTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final Duration PSQL = Duration.ofSeconds(30);

    /** PostgreSQL on a free port, then arps with a range of dedicated ports and arpc asking for any of them. */
    private record Setup(Postgres pg, int remotePort) {}

    private Setup start() throws Exception {
        Postgres pg = Postgres.start(env, TcpPortTest.freeRange(1).low());
        TcpPortTest.Range range = TcpPortTest.freeRange(5); // after postgres has bound its port: never overlaps it
        TestEnv.Relay relay = env.arps(env.arpsArgs().set("--tcp-ports", range.spec()));
        TestEnv.Client client = env.arpc(env.arpcArgs(relay, pg.port).set("--remote-port", 0));
        JsonNode r = client.registered();
        int remote = r.path("remote_port").asInt(-1);
        assertTrue(range.contains(remote), () -> "remote_port outside --tcp-ports " + range.spec() + ": " + r);
        assertEquals("tcp://127.0.0.1:" + remote, r.path("tcp_url").asText(null), r::toString);
        return new Setup(pg, remote);
    }

    /** psql against 127.0.0.1:{@code port}, unaligned and tuples only, stopping at the first error. */
    private Proc psql(String name, Postgres pg, int port, String... args) {
        List<String> cmd = new ArrayList<>(List.of("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", pg.uri(port)));
        cmd.addAll(List.of(args));
        return env.start(name, cmd, null);
    }

    /** Runs psql to the end; returns its stdout lines. */
    private List<String> psqlOk(String name, Postgres pg, int port, String... args) {
        Proc p = psql(name, pg, port, args);
        int code = p.awaitExit(PSQL);
        assertEquals(0, code, () -> name + " failed; stderr:\n" + p.stderrText());
        return p.stdout();
    }

    @Test
    void psqlCreatesInsertsCopiesAndSelectsThroughTheDedicatedPort() throws Exception {
        Setup s = start();
        Postgres pg = s.pg();
        int port = s.remotePort();
        Path dir = env.dir("psql");

        // Rows for COPY, and a 100,000-character value: many TCP segments in each direction.
        List<String> rows = IntStream.rangeClosed(4, 1003).mapToObj(i -> i + ",row " + i + " " + "x".repeat(i % 97))
                .toList();
        Path csv = Files.write(dir.resolve("rows.csv"), rows);
        byte[] random = new byte[50_000];
        ThreadLocalRandom.current().nextBytes(random);
        String big = HexFormat.of().formatHex(random);
        String unicode = "ünïcødé ✓ 日本語";
        Files.writeString(dir.resolve("setup.sql"), String.join("\n",
                "CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL);",
                "INSERT INTO notes VALUES (1, 'hello through arp'), (2, '" + unicode + "');",
                "INSERT INTO notes VALUES (3, '" + big + "');",
                "\\copy notes FROM '" + csv + "' WITH (FORMAT csv)",
                "SELECT 'rows ' || count(*) FROM notes;", ""), StandardCharsets.UTF_8);
        assertEquals(List.of("rows 1003"), psqlOk("psql-setup", pg, port, "-f", dir.resolve("setup.sql").toString()));

        // Each psql below is a new visitor connection on the dedicated port.
        assertEquals(List.of("1|hello through arp", "2|" + unicode),
                psqlOk("psql-small", pg, port, "-c", "SELECT id || '|' || body FROM notes WHERE id IN (1, 2) ORDER BY id"));
        List<String> bigBack = psqlOk("psql-big", pg, port, "-c", "SELECT body FROM notes WHERE id = 3");
        assertEquals(1, bigBack.size(), "one row");
        assertEquals(big, bigBack.get(0), "the 100,000-character value, read back");

        String joined = rows.stream().map(r -> r.substring(r.indexOf(',') + 1)).collect(Collectors.joining("|"));
        String md5 = HexFormat.of().formatHex(MessageDigest.getInstance("MD5").digest(joined.getBytes(StandardCharsets.UTF_8)));
        assertEquals(List.of("1000|" + md5), psqlOk("psql-copy", pg, port, "-c",
                "SELECT count(*) || '|' || md5(string_agg(body, '|' ORDER BY id)) FROM notes WHERE id > 3"));

        // The real server, on its own port, sees the client as a local connection (arpc's).
        assertEquals(List.of(pg.port + "|127.0.0.1"),
                psqlOk("psql-server", pg, port, "-c", "SELECT inet_server_port() || '|' || host(inet_client_addr())"));
    }

    @Test
    void twoPsqlSessionsRunConcurrently() throws Exception {
        Setup s = start();
        Postgres pg = s.pg();
        int port = s.remotePort();
        Path dir = env.dir("psql");
        psqlOk("psql-setup", pg, port, "-c", "CREATE TABLE arrivals (who text PRIMARY KEY, pid int NOT NULL)");

        // Each session announces itself, then waits (server-side, bounded) until the other has: both must
        // be connected through the tunnel at the same time. Then each pulls ~200 KB of rows.
        List<Proc> sessions = new ArrayList<>();
        for (String who : List.of("A", "B")) {
            Path sql = Files.writeString(dir.resolve(who + ".sql"), String.join("\n",
                    "INSERT INTO arrivals VALUES ('" + who + "', pg_backend_pid());",
                    "DO $$ DECLARE t0 timestamptz := clock_timestamp(); BEGIN",
                    "  WHILE (SELECT count(*) FROM arrivals) < 2 LOOP",
                    "    IF clock_timestamp() - t0 > interval '20 seconds' THEN",
                    "      RAISE EXCEPTION 'session " + who + ": the other session never arrived';",
                    "    END IF;",
                    "    PERFORM pg_sleep(0.05);",
                    "  END LOOP;",
                    "END $$;",
                    "SELECT 'saw ' || string_agg(who, ',' ORDER BY who) || ' ' || count(DISTINCT pid) FROM arrivals;",
                    "SELECT g || '|' || md5(g::text || '" + who + "') FROM generate_series(1, 5000) g;", ""));
            sessions.add(psql("psql-" + who, pg, port, "-f", sql.toString()));
        }
        for (int i = 0; i < 2; i++) {
            Proc p = sessions.get(i);
            String who = i == 0 ? "A" : "B";
            assertEquals(0, p.awaitExit(PSQL), () -> p.name + " failed; stderr:\n" + p.stderrText());
            List<String> out = p.stdout();
            assertEquals("saw A,B 2", out.get(0), () -> p.name + ": " + out.subList(0, Math.min(3, out.size())));
            assertEquals(5001, out.size(), p.name + ": lines");
            MessageDigest md = MessageDigest.getInstance("MD5");
            for (int g : new int[] {1, 2500, 5000}) {
                String expected = g + "|" + HexFormat.of().formatHex(md.digest((g + who).getBytes(StandardCharsets.UTF_8)));
                assertEquals(expected, out.get(g), p.name + ": row " + g);
            }
        }
    }
}
