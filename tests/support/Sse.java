package arp.tests.support;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.StringReader;
import java.io.UncheckedIOException;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Predicate;

/**
 * A Server-Sent Events reader over {@link HttpClient}: the body is read line by line as it arrives, on
 * a thread of its own, and parsed as the HTML standard says (fields {@code id}, {@code event},
 * {@code data}; one leading space after the colon dropped; several {@code data} lines joined with
 * {@code \n}; a blank line ends an event; {@code :} lines are comments). Each event keeps the time it
 * arrived, so a test can tell live streaming from a replay at the end. Every wait has a timeout.
 */
public final class Sse implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Object END = new Object();

    /**
     * One event: {@code id} is -1 when the event had no {@code id:} line, {@code event} null when it had
     * no {@code event:} line (the default "message" event).
     */
    public record Event(long id, String event, String data, long nanos) {
        public String kind() { return event == null ? "message" : event; }

        public JsonNode json() {
            try {
                return JSON.readTree(data);
            } catch (IOException e) {
                throw new AssertionError("event " + id + " (" + kind() + ") data is not JSON: " + abbreviate(data), e);
            }
        }

        @Override public String toString() { return "#" + id + " " + kind() + " " + abbreviate(data); }
    }

    private final HttpResponse<InputStream> response;
    private final BlockingQueue<Object> queue = new LinkedBlockingQueue<>();
    private final List<Event> received = new ArrayList<>();
    private final AtomicInteger comments = new AtomicInteger();
    private volatile Throwable failure;
    private boolean ended; // END taken from the queue

    private Sse(HttpResponse<InputStream> response, String name) {
        this.response = response;
        Thread.ofPlatform().daemon().name("sse-" + name).start(() -> pump(response.body()));
    }

    /**
     * Sends {@code request}; fails unless the answer is 200 with {@code text/event-stream} (the failure
     * shows the status and body). The request should carry its own timeout for the head only: the body
     * is read without one, each wait here has its own.
     */
    public static Sse open(HttpClient http, HttpRequest request) {
        HttpResponse<InputStream> r = send(http, request);
        String type = r.headers().firstValue("Content-Type").orElse("");
        if (r.statusCode() != 200 || !type.startsWith("text/event-stream")) {
            String body;
            try (InputStream in = r.body()) {
                body = new String(in.readNBytes(4000), StandardCharsets.UTF_8);
            } catch (IOException e) {
                body = "(body unreadable: " + e + ")";
            }
            throw new AssertionError(request.method() + " " + request.uri() + ": expected 200 text/event-stream, got "
                    + r.statusCode() + " " + type + ": " + body);
        }
        return new Sse(r, request.uri().getPath());
    }

    /** The response head, whatever it is, with the body left unread (close it). */
    public static HttpResponse<InputStream> send(HttpClient http, HttpRequest request) {
        CompletableFuture<HttpResponse<InputStream>> f = http.sendAsync(request, HttpResponse.BodyHandlers.ofInputStream());
        try {
            return f.get(30, TimeUnit.SECONDS);
        } catch (TimeoutException e) {
            f.cancel(true);
            throw new AssertionError(request.method() + " " + request.uri() + ": no response head within 30 s");
        } catch (ExecutionException e) {
            throw new AssertionError(request.method() + " " + request.uri() + ": " + e.getCause(), e.getCause());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted");
        }
    }

    /** Parses a whole SSE body (e.g. what curl saved). */
    public static List<Event> parse(String body) {
        List<Event> out = new ArrayList<>();
        try {
            parse(new BufferedReader(new StringReader(body)), out::add, () -> {});
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out;
    }

    public HttpResponse<InputStream> response() { return response; }

    public String header(String name) { return response.headers().firstValue(name).orElse(null); }

    /** Comment lines seen so far (heartbeats). */
    public int comments() { return comments.get(); }

    private void pump(InputStream body) {
        try (BufferedReader r = new BufferedReader(new InputStreamReader(body, StandardCharsets.UTF_8), 1 << 16)) {
            parse(r, queue::add, comments::incrementAndGet);
        } catch (Throwable t) {
            failure = t;
        } finally {
            queue.add(END);
        }
    }

    private static void parse(BufferedReader r, java.util.function.Consumer<Event> sink, Runnable comment) throws IOException {
        long id = -1;
        String event = null;
        StringBuilder data = null;
        for (String line; (line = r.readLine()) != null; ) {
            if (line.isEmpty()) {
                if (data != null) sink.accept(new Event(id, event, data.toString(), System.nanoTime()));
                id = -1;
                event = null;
                data = null;
                continue;
            }
            if (line.startsWith(":")) {
                comment.run();
                continue;
            }
            int colon = line.indexOf(':');
            String field = colon < 0 ? line : line.substring(0, colon);
            String value = colon < 0 ? "" : line.substring(colon + 1);
            if (value.startsWith(" ")) value = value.substring(1);
            switch (field) {
                case "id" -> id = value.isEmpty() ? -1 : Long.parseLong(value);
                case "event" -> event = value;
                case "data" -> {
                    if (data == null) data = new StringBuilder(value);
                    else data.append('\n').append(value);
                }
                default -> { /* retry and unknown fields are ignored */ }
            }
        }
    }

    /** The next event, or null at the end of the stream; fails after {@code timeout}. */
    public synchronized Event next(Duration timeout) {
        if (ended) return null;
        Object o;
        try {
            o = queue.poll(timeout.toNanos(), TimeUnit.NANOSECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted");
        }
        if (o == null) {
            throw new AssertionError("no SSE event within " + timeout.toMillis() + " ms after " + received.size()
                    + " events; last: " + (received.isEmpty() ? "none" : received.get(received.size() - 1)));
        }
        if (o == END) {
            ended = true;
            return null;
        }
        Event e = (Event) o;
        received.add(e);
        return e;
    }

    /** The next {@code n} events; fails if the stream ends first. */
    public List<Event> next(int n, Duration timeout) {
        long deadline = System.nanoTime() + timeout.toNanos();
        List<Event> out = new ArrayList<>();
        while (out.size() < n) {
            Event e = next(Duration.ofNanos(Math.max(1, deadline - System.nanoTime())));
            if (e == null) throw new AssertionError("stream ended after " + out.size() + " of " + n + " events" + failureText());
            out.add(e);
        }
        return out;
    }

    /** Events up to and including the first that matches; fails if the stream ends first. */
    public List<Event> until(Predicate<Event> p, String what, Duration timeout) {
        long deadline = System.nanoTime() + timeout.toNanos();
        List<Event> out = new ArrayList<>();
        while (true) {
            long left = deadline - System.nanoTime();
            if (left <= 0) throw new AssertionError("no " + what + " within " + timeout.toMillis() + " ms; got " + out.size() + " events");
            Event e = next(Duration.ofNanos(left));
            if (e == null) throw new AssertionError("stream ended before " + what + " after " + out.size() + " events" + failureText());
            out.add(e);
            if (p.test(e)) return out;
        }
    }

    /** Events until the server ends the stream; fails if it is still open after {@code timeout}. */
    public List<Event> rest(Duration timeout) {
        long deadline = System.nanoTime() + timeout.toNanos();
        List<Event> out = new ArrayList<>();
        while (true) {
            long left = deadline - System.nanoTime();
            if (left <= 0) throw new AssertionError("stream still open after " + timeout.toMillis() + " ms; got " + out.size() + " events");
            Event e = next(Duration.ofNanos(left));
            if (e == null) return out;
            out.add(e);
        }
    }

    /** Everything received so far through this reader. */
    public synchronized List<Event> received() { return List.copyOf(received); }

    private String failureText() { return failure == null ? "" : " (" + failure + ")"; }

    static String abbreviate(String s) { return s.length() > 200 ? s.substring(0, 200) + "...(" + s.length() + " chars)" : s; }

    /** Drops the connection (the server sees the client go away). */
    @Override public void close() {
        try {
            response.body().close();
        } catch (IOException ignored) {
            // closing anyway
        }
    }
}
