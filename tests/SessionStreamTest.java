package arp.tests;

import arp.tests.support.CommandArpc;
import arp.tests.support.Curl;
import arp.tests.support.FakeAgents;
import arp.tests.support.Sse;
import arp.tests.support.TestEnv;
import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;

import static arp.tests.support.CommandArpc.fields;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * The SSE stream of a session, read through the real tunnel with Java's HTTP client and curl: live
 * while the agent runs, numbered 1..N across all kinds, resumable with Last-Event-ID, ?since= and
 * ?from_line= without gaps or duplicates (also from disk, behind the memory window), ended by exactly
 * one complete event; cancel kills the whole process tree; finished sessions survive an arpc restart.
 */
class SessionStreamTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final Duration WAIT = CommandArpc.WAIT;

    // ---- checks shared by the tests ----

    /** Data of the events of one kind, in order. */
    static List<String> data(List<Sse.Event> events, String kind) {
        return events.stream().filter(e -> e.kind().equals(kind)).map(Sse.Event::data).toList();
    }

    /** Equal lists of lines, reporting the first difference (not two 15,000-line dumps). */
    static void assertLines(List<String> expected, List<String> actual, String what) {
        for (int i = 0; i < Math.min(expected.size(), actual.size()); i++) {
            if (!expected.get(i).equals(actual.get(i))) {
                fail(what + ": first difference at line " + (i + 1) + "\nexpected: " + cut(expected.get(i)) + "\nactual:   " + cut(actual.get(i)));
            }
        }
        if (expected.size() != actual.size()) {
            fail(what + ": " + actual.size() + " lines instead of " + expected.size() + "; "
                    + (actual.size() > expected.size() ? "extra: " + cut(actual.get(expected.size())) : "missing: " + cut(expected.get(actual.size()))));
        }
    }

    /** {@code expected} is a subsequence of {@code actual}. */
    static void assertInOrder(List<String> expected, List<String> actual, String what) {
        int j = 0;
        for (String a : actual) if (j < expected.size() && expected.get(j).equals(a)) j++;
        if (j < expected.size()) fail(what + ": line " + (j + 1) + " missing or out of order: " + cut(expected.get(j)) + "; got " + actual.size() + " lines");
    }

    static String cut(String s) { return s.length() > 300 ? s.substring(0, 300) + "...(" + s.length() + " chars)" : s; }

    /** Ids {@code from, from+1, ...}: no gap, no duplicate, every event numbered. */
    static void assertIdsFrom(long from, List<Sse.Event> events, String what) {
        for (int i = 0; i < events.size(); i++) {
            if (events.get(i).id() != from + i) {
                fail(what + ": event " + (i + 1) + " has id " + events.get(i).id() + ", expected " + (from + i)
                        + " (previous: " + (i > 0 ? events.get(i - 1) : "none") + ", this: " + events.get(i) + ")");
            }
        }
    }

    /**
     * A whole stream: session event first (id 1), then the agent's stdout lines verbatim as default
     * events and its stderr lines as stderr events, ids 1..N, and one complete event, last.
     */
    static JsonNode assertWholeStream(List<Sse.Event> events, String sessionId, FakeAgents.Run run, String what) {
        return assertWholeStream(events, sessionId, run, what, false);
    }

    /**
     * {@code killed}: the run's tree was killed, so its shells may have added stderr lines of their own
     * (bash's "Terminated"): the fake's stderr lines must then appear in order among the stderr events.
     */
    static JsonNode assertWholeStream(List<Sse.Event> events, String sessionId, FakeAgents.Run run, String what, boolean killed) {
        assertFalse(events.isEmpty(), what + ": no events");
        assertIdsFrom(1, events, what);
        Sse.Event first = events.getFirst();
        assertEquals("session", first.kind(), () -> what + ": first event " + first);
        assertEquals(sessionId, first.json().path("session_id").asText(), () -> what + ": first event " + first);
        for (Sse.Event e : events) {
            assertTrue(Set.of("session", "message", "stderr", "complete").contains(e.kind()), () -> what + ": unexpected kind: " + e);
        }
        assertEquals(1, events.stream().filter(e -> e.kind().equals("session")).count(), what + ": one session event");
        assertEquals(1, events.stream().filter(e -> e.kind().equals("complete")).count(), what + ": one complete event");
        Sse.Event last = events.getLast();
        assertEquals("complete", last.kind(), () -> what + ": last event " + last);
        assertLines(run.stdout(), data(events, "message"), what + ": stdout events vs the agent's stdout");
        if (!killed) assertLines(run.stderr(), data(events, "stderr"), what + ": stderr events vs the agent's stderr");
        else assertInOrder(run.stderr(), data(events, "stderr"), what + ": stderr events vs the agent's stderr");
        JsonNode c = last.json();
        assertEquals("completion", c.path("type").asText(), c::toString);
        assertEquals(events.size(), c.path("total_events").asInt(), () -> what + ": total_events in " + c);
        return c;
    }

    static void assertSameEvents(List<Sse.Event> expected, List<Sse.Event> actual, String what) {
        assertLines(expected.stream().map(e -> e.id() + " " + e.kind() + " " + e.data()).toList(),
                actual.stream().map(e -> e.id() + " " + e.kind() + " " + e.data()).toList(), what);
    }

    static void assertCompleted(JsonNode complete) {
        assertEquals("completed", complete.path("status").asText(), complete::toString);
        assertTrue(complete.path("success").asBoolean(false), complete::toString);
        assertEquals(0, complete.path("exit_code").asInt(-1), complete::toString);
        assertFalse(complete.path("cancelled").asBoolean(true), complete::toString);
        assertTrue(complete.path("error").isNull(), complete::toString);
    }

    static int count(List<Sse.Event> events, String kind) { return (int) events.stream().filter(e -> e.kind().equals(kind)).count(); }

    // ---- tests ----

    @Test
    void eventsStreamLiveThroughTheTunnel() throws Exception {
        CommandArpc c = CommandArpc.start(env);
        Path project = c.project();
        String tag = FakeAgents.tag("live");
        // init, tool_use, tool_result, 3 lines, then the fake waits at its gate; 9 more lines 0.15 s apart.
        Sse s = c.createStreaming(fields("executor", "claude", "prompt", FakeAgents.prompt(tag, "lines=12", "gate=3", "delay=0.15", "errlines=2"),
                "project_path", project.toString()));
        String id = s.header("X-Arp-Session-Id");
        assertNotNull(id, "POST answered with the stream carries X-Arp-Session-Id");
        List<Sse.Event> all = new ArrayList<>();
        Sse.Event first = s.next(WAIT);
        all.add(first);
        assertEquals(1, first.id(), first::toString);
        assertEquals("session", first.kind(), first::toString);
        JsonNode fj = first.json();
        assertEquals(id, fj.path("session_id").asText(), fj::toString);
        assertEquals("claude", fj.path("executor").asText(), fj::toString);
        assertEquals(project.toString(), fj.path("project_path").asText(), fj::toString);

        // While the fake waits at its gate, everything it printed so far has arrived: that is live.
        FakeAgents.Run run = c.fakes.run(tag).awaitGated(WAIT);
        List<String> printed = run.stdout();
        assertEquals(6, printed.size(), () -> "fake's stdout at the gate: " + printed);
        while (count(all, "message") < printed.size() || count(all, "stderr") < 2) {
            Sse.Event e = s.next(WAIT);
            assertNotNull(e, "stream ended while the agent runs");
            all.add(e);
        }
        assertFalse(run.finished(), "the agent was still running");
        assertEquals(printed, data(all, "message"), "stdout lines before the gate, verbatim");
        JsonNode running = c.details(id);
        assertEquals("running", running.path("status").asText(), running::toString);

        run.go();
        all.addAll(s.rest(WAIT)); // ends when the server closes the stream after complete
        JsonNode complete = assertWholeStream(all, id, run, "POST stream");
        assertCompleted(complete);
        // The 9 lines after the gate came one by one as printed (0.15 s apart), not in one batch at the end.
        List<Sse.Event> msgs = all.stream().filter(e -> e.kind().equals("message")).toList();
        double spreadSeconds = (msgs.getLast().nanos() - msgs.get(6).nanos()) / 1e9;
        assertTrue(spreadSeconds > 0.6, "post-gate lines arrived within " + spreadSeconds + " s: not streamed live");

        // Details: the agent's session id recorded, and accepted in place of ours.
        JsonNode d = c.details(id);
        assertEquals("completed", d.path("status").asText(), d::toString);
        assertEquals(run.sessionId(), d.path("agent_session_id").asText(), d::toString);
        assertEquals(0, d.path("exit_code").asInt(-1), d::toString);
        assertEquals("claude", d.path("executor").asText(), d::toString);
        assertEquals(project.toString(), d.path("project_path").asText(), d::toString);
        assertEquals(all.size(), d.path("events").asInt(), d::toString);
        assertFalse(d.path("created_at").isMissingNode() || d.path("created_at").isNull(), d::toString);
        assertFalse(d.path("finished_at").isMissingNode() || d.path("finished_at").isNull(), d::toString);
        assertSameEvents(all, c.fullStream(run.sessionId()), "replay by the agent's session id");

        HttpResponse<String> list = c.call("GET", "/api/sessions", null);
        assertEquals(200, list.statusCode(), list::body);
        JsonNode l = CommandArpc.parse(list);
        assertEquals(1, l.path("total").asInt(), l::toString);
        assertEquals(id, l.path("sessions").path(0).path("session_id").asText(), l::toString);
        assertEquals(run.sessionId(), l.path("sessions").path(0).path("agent_session_id").asText(), l::toString);
        assertEquals("completed", l.path("sessions").path(0).path("status").asText(), l::toString);

        // curl, with the token in the query as a link would carry it, gets the same replay.
        Curl.Result r = Curl.run(env, "-N", "-H", "Authorization: Bearer " + c.key(),
                c.relay.base() + "/api/sessions/" + id + "?token=" + c.clientId);
        assertEquals(200, r.status(), r::toString);
        assertTrue(r.header("Content-Type").startsWith("text/event-stream"), r::toString);
        assertSameEvents(all, Sse.parse(r.body()), "curl replay");
    }

    @Test
    void reconnectGetsExactlyTheMissedEvents() throws Exception {
        CommandArpc c = CommandArpc.start(env);
        String tag = FakeAgents.tag("reconnect");
        // codex: 4 opening lines, 30 items 0.05 s apart, a gate after item 6; stderr lines first.
        JsonNode created = c.create("codex", tag, "lines=30", "gate=6", "delay=0.05", "errlines=3");
        String id = created.path("session_id").asText();
        String path = "/api/sessions/" + id;

        Sse a = c.stream(path);
        List<Sse.Event> seen = a.next(4, WAIT);
        a.close(); // the client goes away; the run goes on
        FakeAgents.Run run = c.fakes.run(tag).awaitGated(WAIT); // by now events 5.. exist that the client missed
        assertIdsFrom(1, seen, "first reader");

        // Three ways back, while the run is still going.
        Sse byHeader = c.stream(path, "Last-Event-ID", "4");
        Sse bySince = c.stream(path + "?since=4");
        Sse byFromLine = c.stream(path + "?from_line=5");
        List<List<Sse.Event>> got = new ArrayList<>();
        for (Sse s : List.of(byHeader, bySince, byFromLine)) got.add(new ArrayList<>(s.next(3, WAIT)));
        assertEquals("running", c.details(id).path("status").asText(), "reconnected mid-run");
        run.go();
        for (int i = 0; i < 3; i++) got.get(i).addAll(List.of(byHeader, bySince, byFromLine).get(i).rest(WAIT));

        List<Sse.Event> full = c.fullStream(id);
        assertCompleted(assertWholeStream(full, id, run, "full replay"));
        String[] names = {"Last-Event-ID: 4", "?since=4", "?from_line=5"};
        for (int i = 0; i < 3; i++) {
            List<Sse.Event> joined = new ArrayList<>(seen);
            joined.addAll(got.get(i));
            assertIdsFrom(5, got.get(i), names[i]);
            assertSameEvents(full, joined, "first 4 events + " + names[i]);
        }

        // After the end: the last three, or nothing at all when nothing was missed.
        int n = full.size();
        try (Sse tail = c.stream(path, "Last-Event-ID", String.valueOf(n - 3))) {
            assertSameEvents(full.subList(n - 3, n), tail.rest(WAIT), "Last-Event-ID: N-3 after the end");
        }
        try (Sse none = c.stream(path + "?since=" + n)) {
            assertEquals(List.of(), none.rest(WAIT), "?since=N after the end");
        }
    }

    @Test
    void theLargestLastEventIdReplaysNothing() throws Exception {
        CommandArpc c = CommandArpc.start(env);
        String tag = FakeAgents.tag("maxid");
        String id = c.create("codex", tag, "lines=3", "errlines=1").path("session_id").asText();
        c.awaitStatus(id, WAIT, "completed", "failed", "cancelled");
        List<Sse.Event> full = c.fullStream(id);
        assertCompleted(assertWholeStream(full, id, c.fakes.run(tag), "full replay"));
        long last = full.getLast().id();

        // since + 1 must not overflow into "from the start": nothing comes, and the stream ends.
        String max = String.valueOf(Long.MAX_VALUE);
        String path = "/api/sessions/" + id;
        List<String> problems = new ArrayList<>();
        Map<String, Sse> readers = new java.util.LinkedHashMap<>();
        readers.put("Last-Event-ID: " + max, c.stream(path, "Last-Event-ID", max));
        readers.put("Last-Event-ID: " + (Long.MAX_VALUE - 1), c.stream(path, "Last-Event-ID", String.valueOf(Long.MAX_VALUE - 1)));
        readers.put("?since=" + max, c.stream(path + "?since=" + max));
        readers.put("?from_line=" + max, c.stream(path + "?from_line=" + max));
        for (var r : readers.entrySet()) {
            try (Sse s = r.getValue()) {
                List<Sse.Event> got = s.rest(WAIT);
                if (got.stream().anyMatch(e -> e.id() <= last)) problems.add(r.getKey() + " → " + got);
            }
        }
        assertEquals(List.of(), problems, "events replayed after the largest ids (the run's last id is " + last + ")");
        // The run is untouched: its whole stream is still there.
        assertSameEvents(full, c.fullStream(id), "full replay afterwards");
    }

    /** The agent's lines as a strict SSE parser must see them: each CR (bare, or of a CRLF) is a line end inside one event's data. */
    private static List<String> asDataLines(List<String> lines) {
        return lines.stream().map(l -> l.replace("\r\n", "\n").replace('\r', '\n')).toList();
    }

    /** No field was forged by a CR in the agent's output: ids 1..N, one complete event, last, and the pieces joined as data. */
    private static void assertNotForged(List<Sse.Event> events, String id, FakeAgents.Run run, String what) {
        assertIdsFrom(1, events, what);
        assertEquals("session", events.getFirst().kind(), () -> what + ": first event " + events.getFirst());
        assertEquals(1, count(events, "complete"), () -> what + ": complete events in " + events);
        Sse.Event last = events.getLast();
        assertEquals("complete", last.kind(), () -> what + ": last event " + last);
        assertEquals(events.size(), last.json().path("total_events").asInt(), () -> what + ": total_events of " + last);
        assertCompleted(last.json());
        assertTrue(events.stream().noneMatch(e -> e.id() == 999_999), () -> what + ": the forged id arrived: " + events);
        for (Sse.Event e : events) {
            assertTrue(Set.of("session", "message", "stderr", "complete").contains(e.kind()), () -> what + ": unexpected kind: " + e);
        }
        assertLines(asDataLines(run.stdout()), data(events, "message"), what + ": stdout events vs the agent's stdout");
        assertLines(asDataLines(run.stderr()), data(events, "stderr"), what + ": stderr events vs the agent's stderr");
        assertTrue(data(events, "message").contains("50%\nevent: complete\nid: 999999\ndata: {}"),
                () -> what + ": the forging line is one message event, its pieces data lines: " + data(events, "message"));
        assertEquals(id, events.getFirst().json().path("session_id").asText());
    }

    @Test
    void carriageReturnsInTheOutputCannotForgeSseFields() throws Exception {
        CommandArpc c = CommandArpc.start(env);
        String tag = FakeAgents.tag("forge");
        // One stderr line and one plain-text stdout line with bare CRs: "...50%\revent: complete\rid: 999999\rdata: {}".
        Sse live = c.createStreaming(fields("executor", "codex", "prompt", FakeAgents.prompt(tag, "forge=1", "lines=2"),
                "project_path", c.project().toString()));
        String id = live.header("X-Arp-Session-Id");
        List<Sse.Event> streamed = live.rest(WAIT);
        FakeAgents.Run run = c.fakes.run(tag);
        assertTrue(run.stdout().contains("50%\revent: complete\rid: 999999\rdata: {}"), () -> "the fake printed the forging line: " + run.stdout());
        assertTrue(run.stderr().stream().anyMatch(l -> l.endsWith("50%\revent: complete\rid: 999999\rdata: {}")), () -> "and on stderr: " + run.stderr());

        // Sse parses as the HTML standard does: CR, LF and CRLF all end a line (BufferedReader.readLine).
        assertNotForged(streamed, id, run, "live stream");
        assertNotForged(c.fullStream(id), id, run, "replay from disk");
        try (Sse tail = c.stream("/api/sessions/" + id, "Last-Event-ID", "1")) {
            List<Sse.Event> rest = tail.rest(WAIT);
            assertSameEvents(streamed.subList(1, streamed.size()), rest, "resumed after event 1");
        }
        // The bytes on the wire: no CR at all, so no parser can split a line where arpc did not.
        Curl.Result r = Curl.run(env, "-N", "-H", "Authorization: Bearer " + c.key(), c.relay.base() + "/api/sessions/" + id + "?token=" + c.clientId);
        assertEquals(200, r.status(), r::toString);
        assertFalse(r.body().contains("\r"), () -> "a CR in the SSE body: " + r.body().replace("\r", "<CR>"));
        assertSameEvents(streamed, Sse.parse(r.body()), "curl's copy");
    }

    @Test
    void readerBehindTheMemoryWindowGetsEverythingFromDisk() throws Exception {
        CommandArpc c = CommandArpc.start(env);
        String tag = FakeAgents.tag("window");
        // 15,000 lines of ~1.1 KiB (16 MiB) in a burst: past both the 10,000-event and the 8 MiB window.
        // Then the fake waits, still running; after the gate one 2 MiB line (cut to 1 MiB) and the result.
        JsonNode created = c.create("claude", tag, "lines=15000", "linebytes=900", "gate=15000", "huge=2097152");
        String id = created.path("session_id").asText();
        String path = "/api/sessions/" + id;
        FakeAgents.Run run = c.fakes.run(tag).awaitGated(Duration.ofSeconds(60));
        List<String> burst = run.stdout();
        assertEquals(15_003, burst.size()); // init, tool_use, tool_result, 15,000 lines

        Sse fromStart = c.stream(path);
        Sse fromHundred = c.stream(path, "Last-Event-ID", "100");
        List<Sse.Event> a = fromStart.next(1 + burst.size(), Duration.ofSeconds(60));
        List<Sse.Event> b = fromHundred.next(1 + burst.size() - 100, Duration.ofSeconds(60));
        assertIdsFrom(1, a, "reader from the start, mid-run");
        assertIdsFrom(101, b, "reader from 100, mid-run");
        assertLines(burst, data(a, "message"), "reader from the start: the burst");
        assertLines(burst.subList(99, burst.size()), data(b, "message"), "reader from 100: the burst");
        assertEquals("running", c.details(id).path("status").asText());

        run.go();
        a = new ArrayList<>(a);
        a.addAll(fromStart.rest(Duration.ofSeconds(60)));
        b = new ArrayList<>(b);
        b.addAll(fromHundred.rest(Duration.ofSeconds(60)));

        // The huge line is one event, cut to 1 MiB.
        List<String> all = run.stdout();
        String huge = all.get(all.size() - 2);
        List<String> got = data(a, "message");
        String hugeEvent = got.get(got.size() - 2);
        assertEquals(1 << 20, hugeEvent.length(), "a 2 MiB line is cut to 1 MiB");
        assertTrue(huge.startsWith(hugeEvent), "the cut line is the line's start");

        // Apart from that cut, everything from the start, in order, once.
        List<String> expected = new ArrayList<>(all);
        expected.set(expected.size() - 2, hugeEvent);
        assertIdsFrom(1, a, "reader from the start");
        assertLines(expected, got, "reader from the start: stdout events");
        assertEquals("complete", a.getLast().kind());
        assertCompleted(a.getLast().json());
        assertEquals(a.size(), a.getLast().json().path("total_events").asInt(), a.getLast()::toString);
        assertSameEvents(a.subList(100, a.size()), b, "reader from 100");

        // On disk: <sessions_dir>/<id>/events.jsonl holds every event, session.json the metadata.
        Path dir = Path.of(c.apiEvent().path("sessions_dir").asText()).resolve(id);
        assertTrue(Files.isRegularFile(dir.resolve("session.json")), dir + "/session.json");
        try (Stream<String> lines = Files.lines(dir.resolve("events.jsonl"))) {
            assertEquals(a.size(), lines.count(), dir + "/events.jsonl: one line per event");
        }
    }

    @Test
    void oneMegabyteOfStderrDoesNotBlockTheRun() throws Exception {
        CommandArpc c = CommandArpc.start(env);
        String tag = FakeAgents.tag("stderr");
        long t0 = System.nanoTime();
        // 1 MiB on stderr before the first stdout line: a host that reads stdout only would deadlock at 64 KiB.
        JsonNode created = c.create("codex", tag, "stderr=1048576", "lines=5");
        String id = created.path("session_id").asText();
        JsonNode d = c.awaitStatus(id, WAIT, "completed", "failed", "cancelled");
        assertEquals("completed", d.path("status").asText(), d::toString);
        assertTrue(System.nanoTime() - t0 < Duration.ofSeconds(15).toNanos(), "the run took too long");
        FakeAgents.Run run = c.fakes.run(tag);
        assertEquals(1024, run.stderr().size());
        List<Sse.Event> all = c.fullStream(id);
        assertCompleted(assertWholeStream(all, id, run, "stream with 1 MiB of stderr"));
        assertEquals(1024, count(all, "stderr"));
    }

    @Test
    void cancelKillsTheWholeProcessTree() throws Exception {
        CommandArpc c = CommandArpc.start(env);
        String tag = FakeAgents.tag("cancel");
        Sse s = c.createStreaming(fields("executor", "claude", "prompt", FakeAgents.prompt(tag, "tree=1", "lines=2", "hold=1000"),
                "project_path", c.project().toString()));
        String id = s.header("X-Arp-Session-Id");
        FakeAgents.Run run = c.fakes.run(tag).awaitStarted(WAIT);
        long[] tree = {run.pid(), run.childPid(), run.grandchildPid()};
        for (long pid : tree) assertTrue(FakeAgents.alive(pid), "pid " + pid + " runs before the cancel");
        List<Sse.Event> all = new ArrayList<>(s.until(e -> e.data().contains("line 2 of 2"), "the agent's second line", WAIT));

        HttpResponse<String> r = c.call("POST", "/api/sessions/" + id + "/cancel", null);
        assertEquals(200, r.statusCode(), r::body);
        JsonNode cj = CommandArpc.parse(r);
        assertEquals(id, cj.path("session_id").asText(), r::body);
        assertEquals("session_cancelled", cj.path("type").asText(), r::body);

        all.addAll(s.rest(WAIT));
        JsonNode complete = assertWholeStream(all, id, run, "cancelled stream", true);
        assertEquals("cancelled", complete.path("status").asText(), complete::toString);
        assertTrue(complete.path("cancelled").asBoolean(false), complete::toString);
        assertFalse(complete.path("success").asBoolean(true), complete::toString);
        FakeAgents.awaitGone(Duration.ofSeconds(10), "agent, its child and grandchild after cancel", tree);
        assertEquals("cancelled", c.details(id).path("status").asText());
        Thread.sleep(1000);
        assertEquals("cancelled", c.details(id).path("status").asText(), "a cancelled session never becomes completed");

        assertEquals(409, c.call("POST", "/api/sessions/" + id + "/cancel", null).statusCode(), "cancel of a finished session");
        assertEquals(404, c.call("POST", "/api/sessions/no-such-session/cancel", null).statusCode(), "cancel of an unknown session");

        // DELETE of a finished session forgets it and its transcript.
        Path dir = Path.of(c.apiEvent().path("sessions_dir").asText()).resolve(id);
        assertTrue(Files.isDirectory(dir), dir + " exists before DELETE");
        r = c.call("DELETE", "/api/sessions/" + id, null);
        assertEquals(200, r.statusCode(), r::body);
        assertEquals("session_removed", CommandArpc.parse(r).path("type").asText(), r::body);
        assertEquals(id, CommandArpc.parse(r).path("session_id").asText(), r::body);
        assertEquals(404, c.call("GET", "/api/sessions/" + id, null).statusCode(), "details after DELETE");
        assertEquals(404, Sse.send(env.http(), c.request("/api/sessions/" + id).header("Accept", "text/event-stream").build()).statusCode(),
                "stream after DELETE");
        assertEquals(404, c.call("DELETE", "/api/sessions/" + id, null).statusCode(), "DELETE again");
        assertEquals(404, c.call("DELETE", "/api/sessions/no-such-session", null).statusCode(), "DELETE of an unknown session");
        assertFalse(Files.exists(dir), dir + " after DELETE");
        assertEquals(0, CommandArpc.parse(c.call("GET", "/api/sessions", null)).path("total").asInt());

        // DELETE of a running session cancels it, tree and all.
        String tag2 = FakeAgents.tag("delete");
        String id2 = c.create("gemini", tag2, "tree=1", "lines=1", "hold=1000").path("session_id").asText();
        FakeAgents.Run run2 = c.fakes.run(tag2).awaitStarted(WAIT);
        long[] tree2 = {run2.pid(), run2.childPid(), run2.grandchildPid()};
        r = c.call("DELETE", "/api/sessions/" + id2, null);
        assertEquals(200, r.statusCode(), r::body);
        assertEquals("session_cancelled", CommandArpc.parse(r).path("type").asText(), r::body);
        FakeAgents.awaitGone(Duration.ofSeconds(10), "tree after DELETE of a running session", tree2);
        assertEquals("cancelled", c.awaitStatus(id2, WAIT, "cancelled", "completed", "failed").path("status").asText());
    }

    @Test
    void finishedSessionsSurviveAnArpcRestartAndCrash() throws Exception {
        CommandArpc c = CommandArpc.start(env);
        String tagA = FakeAgents.tag("done");
        String a = c.create("codex", tagA, "lines=5", "errlines=2").path("session_id").asText();
        c.awaitStatus(a, WAIT, "completed", "failed", "cancelled");
        List<Sse.Event> streamA = c.fullStream(a); // ends after the complete event
        JsonNode detailsA = c.details(a);
        assertEquals(streamA.size(), detailsA.path("events").asInt(), detailsA::toString);
        FakeAgents.Run runA = c.fakes.run(tagA);
        assertCompleted(assertWholeStream(streamA, a, runA, "before the restart"));

        // B runs when arpc dies without a chance to clean up.
        String tagB = FakeAgents.tag("orphan");
        String b = c.create("claude", tagB, "tree=1", "lines=1", "hold=1000").path("session_id").asText();
        FakeAgents.Run runB = c.fakes.run(tagB).awaitStarted(WAIT);
        try (Sse s = c.stream("/api/sessions/" + b)) {
            s.until(e -> e.data().contains("line 1 of 1"), "the agent's line", WAIT);
        }
        assertEquals(runB.sessionId(), c.details(b).path("agent_session_id").asText(), "agent_session_id while it runs");
        c.proc().sigkill();
        c.proc().awaitExit(WAIT);
        for (long pid : new long[] {runB.grandchildPid(), runB.childPid(), runB.pid()}) ProcessHandle.of(pid).ifPresent(ProcessHandle::destroyForcibly);

        c.launch(c.args(), Map.of());
        assertEquals(detailsA, c.details(a), "details of a finished session after a restart");
        assertSameEvents(streamA, c.fullStream(a), "stream of a finished session after a restart");
        assertEquals(a, c.details(runA.sessionId()).path("session_id").asText(), "the agent's id after a restart");
        try (Sse tail = c.stream("/api/sessions/" + a, "Last-Event-ID", "3")) {
            assertSameEvents(streamA.subList(3, streamA.size()), tail.rest(WAIT), "resume after a restart");
        }

        JsonNode detailsB = c.details(b);
        assertEquals("failed", detailsB.path("status").asText(), detailsB::toString);
        assertTrue(detailsB.path("error").asText("").contains("arpc stopped"), detailsB::toString);
        // The agent's id was in its stream before arpc died: a client needs it to resume the conversation.
        assertEquals(runB.sessionId(), detailsB.path("agent_session_id").asText(), () -> "agent_session_id after a crash: " + detailsB);
        List<Sse.Event> streamB = c.fullStream(b);
        assertIdsFrom(1, streamB, "stream of the session arpc lost");
        assertEquals(runB.stdout(), data(streamB, "message"), "what the lost session printed is kept");
        assertEquals("complete", streamB.getLast().kind(), () -> "its stream ends with complete: " + streamB.getLast());
        assertEquals("failed", streamB.getLast().json().path("status").asText(), streamB.getLast()::toString);
        assertEquals(2, CommandArpc.parse(c.call("GET", "/api/sessions", null)).path("total").asInt());
        assertEquals(b, c.details(runB.sessionId()).path("session_id").asText(), "the lost session by the agent's id");
    }

    @Test
    void sigtermToArpcStopsRunningSessionsAndRecordsIt() throws Exception {
        CommandArpc c = CommandArpc.start(env);
        // SIGTERM to arpc stops a running session, process tree first, and records how it ended.
        String tagC = FakeAgents.tag("sigterm");
        String cid = c.create("gemini", tagC, "tree=1", "lines=1", "hold=1000").path("session_id").asText();
        FakeAgents.Run runC = c.fakes.run(tagC).awaitStarted(WAIT);
        try (Sse s = c.stream("/api/sessions/" + cid)) {
            s.until(e -> e.data().contains("line 1 of 1"), "the agent's line", WAIT); // the agent's id is known by now
        }
        c.stop();
        FakeAgents.awaitGone(Duration.ofSeconds(5), "tree of a running session after SIGTERM to arpc", runC.pid(), runC.childPid(), runC.grandchildPid());
        c.launch(c.args(), Map.of());
        JsonNode detailsC = c.details(cid);
        // The contract says SIGTERM "cancels" running sessions; cancelled or failed, the stop must have been
        // recorded by arpc as it stopped, not found out at the next start.
        assertTrue(Set.of("cancelled", "failed").contains(detailsC.path("status").asText()), detailsC::toString);
        assertFalse(detailsC.path("error").asText("").contains("arpc stopped while it ran"),
                () -> "the stop at SIGTERM was not recorded (complete event and session.json written before exit): " + detailsC);
        assertEquals(runC.sessionId(), detailsC.path("agent_session_id").asText(), detailsC::toString);
        List<Sse.Event> streamC = c.fullStream(cid);
        assertEquals(detailsC.path("status").asText(), streamC.getLast().json().path("status").asText(), streamC.getLast()::toString);
    }
}
