package arp.tests;

import arp.tests.support.Bytes;
import arp.tests.support.Origin;
import arp.tests.support.TestEnv;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Volume and concurrency: large bodies streamed both ways, many visitors at once. */
class BulkTransferTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final long SIZE = 50L * 1024 * 1024;

    @Test
    void download50MiBMatchesByHash() throws Exception {
        Origin origin = env.origin();
        TestEnv.Tunnel t = env.tunnel(origin.port());

        HttpResponse<InputStream> r = env.http().send(HttpRequest.newBuilder(URI.create(t.url("/download?size=" + SIZE)))
                .timeout(Duration.ofSeconds(90)).build(), HttpResponse.BodyHandlers.ofInputStream());
        assertEquals(200, r.statusCode());
        Bytes.Digest got;
        try (InputStream in = r.body()) {
            got = Bytes.sha256(in);
        }
        assertEquals(Bytes.expected(Origin.SEED, SIZE), got);
    }

    @Test
    void upload50MiBMatchesByHash() throws Exception {
        Origin origin = env.origin();
        TestEnv.Tunnel t = env.tunnel(origin.port());
        long seed = 99;

        // Streamed from the generator with a fixed Content-Length; never held in memory.
        HttpRequest.BodyPublisher body = HttpRequest.BodyPublishers.fromPublisher(
                HttpRequest.BodyPublishers.ofInputStream(() -> Bytes.stream(seed, SIZE)), SIZE);
        HttpResponse<String> r = env.http().send(HttpRequest.newBuilder(URI.create(t.url("/upload")))
                .timeout(Duration.ofSeconds(90)).POST(body).build(), HttpResponse.BodyHandlers.ofString());
        assertEquals(200, r.statusCode(), r::body);
        assertEquals(Bytes.expected(seed, SIZE).toString(), r.body());
    }

    @Test
    void twoHundredConcurrentVisitorsAllGetTheirOwnBody() throws Exception {
        Origin origin = env.origin();
        // A longer --pending-timeout: this test is about correctness under concurrency, not latency.
        TestEnv.Tunnel t = env.tunnel(origin.port(), "--pending-timeout", "30");

        int visitors = 200;
        List<CompletableFuture<String>> results = new ArrayList<>(); // null = fine, else what went wrong
        for (int i = 0; i < visitors; i++) {
            int visitor = i, size = 1000 + i * 131; // every visitor a different length, so crossed wires show
            results.add(env.http().sendAsync(HttpRequest.newBuilder(URI.create(t.url("/download?size=" + size)))
                            .timeout(Duration.ofSeconds(60)).build(), HttpResponse.BodyHandlers.ofByteArray())
                    .handle((r, error) -> {
                        if (error != null) return "visitor " + visitor + ": " + error;
                        if (r.statusCode() != 200) return "visitor " + visitor + ": status " + r.statusCode() + " " + new String(r.body());
                        if (!Bytes.sha256(r.body()).equals(Bytes.sha256(Bytes.bytes(Origin.SEED, size)))) return "visitor " + visitor + ": wrong body";
                        return null;
                    }));
        }
        CompletableFuture.allOf(results.toArray(CompletableFuture[]::new)).get(90, TimeUnit.SECONDS);
        List<String> problems = results.stream().map(CompletableFuture::join).filter(p -> p != null).toList();
        int ok = visitors - problems.size();
        assertTrue(problems.isEmpty(), () -> problems.size() + " of " + visitors + " failed, e.g. " + problems.subList(0, Math.min(5, problems.size())));
        assertEquals(visitors, ok);
    }
}
