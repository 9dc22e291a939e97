package arp.tests;

import arp.tests.support.Args;
import arp.tests.support.Curl;
import arp.tests.support.FakeClient;
import arp.tests.support.NamedOrigin;
import arp.tests.support.Proc;
import arp.tests.support.RawHttp;
import arp.tests.support.TestEnv;
import arp.tests.support.Visit;
import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Locale;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * How a visitor picks a tunnel besides {@code ?token=} and {@code X-Arp-Token}: the Host header under
 * arps {@code --domain}, extra tokens of a client (arpc {@code --token}), and the {@code arp_token} cookie
 * that a browser gets with a redirect when it navigates to a {@code ?token=} link. Visitors are real curl
 * processes (curl {@code --resolve} plays DNS for {@code ID.tunnel.test}) or raw sockets where the exact
 * head matters; the local services answer with their name and the head they received.
 */
class RoutingTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final String DOMAIN = "tunnel.test";
    private static final Duration WAIT = Duration.ofSeconds(10);
    private static final String BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    private NamedOrigin origin(String name) { return env.own(NamedOrigin.start(name)); }

    /** curl to {@code http://<id>.tunnel.test:<public port><pathAndQuery>}, resolved to 127.0.0.1. */
    private Curl.Result viaHost(TestEnv.Relay relay, String id, String pathAndQuery, String... extra) {
        String host = id + "." + DOMAIN;
        int port = relay.publicPort();
        List<String> args = new java.util.ArrayList<>(List.of("--resolve", host + ":" + port + ":127.0.0.1"));
        args.addAll(List.of(extra));
        args.add("http://" + host + ":" + port + pathAndQuery);
        return Curl.run(env, args.toArray(String[]::new));
    }

    private Curl.Result viaUrl(TestEnv.Relay relay, String pathAndQuery, String... extra) {
        List<String> args = new java.util.ArrayList<>(List.of(extra));
        args.add("http://127.0.0.1:" + relay.publicPort() + pathAndQuery);
        return Curl.run(env, args.toArray(String[]::new));
    }

    /** A 200 from the named local service for {@code target}. */
    private static void assertReached(String origin, String target, Curl.Result r) {
        assertEquals(0, r.exit(), r::toString);
        assertEquals(200, r.status(), r::toString);
        assertTrue(r.body().startsWith("origin=" + origin + "\n"), () -> "expected the service " + origin + ": " + r);
        assertTrue(r.body().contains("\ntarget " + target + "\n"), () -> "expected target " + target + ": " + r);
    }

    private static void assertReached(String origin, String target, RawHttp.Response r) {
        assertEquals(200, r.status(), r::toString);
        assertTrue(r.bodyText().startsWith("origin=" + origin + "\n"), () -> "expected the service " + origin + ": " + r);
        assertTrue(r.bodyText().contains("\ntarget " + target + "\n"), () -> "expected target " + target + ": " + r);
    }

    private static String lower(String s) { return s == null ? null : s.toLowerCase(Locale.ROOT); }

    @Test
    void hostUnderTheDomainRoutesEachVisitorToItsOwnClient() throws Exception {
        TestEnv.Relay relay = env.arps("--domain", DOMAIN);
        NamedOrigin a = origin("A"), b = origin("B");
        String idA = TestEnv.randomId("alpha"), idB = TestEnv.randomId("beta");
        env.arpc(relay, a.port(), "--client-id", idA);
        env.arpc(relay, b.port(), "--client-id", idB);
        int port = relay.publicPort();

        Curl.Result ra = viaHost(relay, idA, "/path/one?q=1");
        assertReached("A", "/path/one?q=1", ra);
        // Every byte but arp's own token passes: the service sees the Host the visitor sent.
        assertTrue(ra.body().contains("\nHost: " + idA + "." + DOMAIN + ":" + port + "\n"), ra::toString);
        assertReached("B", "/two", viaHost(relay, idB, "/two"));
        assertReached("A", "/three", viaHost(relay, idA, "/three"));

        // An id nobody registered: the usual 404, and neither service saw anything.
        Curl.Result unknown = viaHost(relay, "nobody-0123", "/x");
        assertEquals(404, unknown.status(), unknown::toString);
        assertTrue(unknown.body().startsWith("arp: "), unknown::toString);
        assertEquals(2, a.seen().size(), () -> "A saw: " + a.seen());
        assertEquals(1, b.seen().size(), () -> "B saw: " + b.seen());

        // Precedence: ?token= and X-Arp-Token beat the Host; the token is still removed from the query.
        assertReached("B", "/p?k=v", viaHost(relay, idA, "/p?token=" + idB + "&k=v"));
        assertReached("B", "/h", viaHost(relay, idA, "/h", "-H", "X-Arp-Token: " + idB));
        // The cookie comes last: the Host beats it.
        assertReached("A", "/c", viaHost(relay, idA, "/c", "-H", "Cookie: arp_token=" + idB));
        // The plain address with ?token= still works next to --domain.
        assertReached("A", "/plain", viaUrl(relay, "/plain?token=" + idA));
    }

    @Test
    void extraTokensAndTheClientIdAllReachTheSameClient() throws Exception {
        TestEnv.Relay relay = env.arps("--domain", DOMAIN);
        NamedOrigin o = origin("O");
        TestEnv.Client c = env.arpc(env.arpcArgs(relay, o.port()).add("--token", "alice").add("--token", "bob"));

        assertReached("O", "/q", viaUrl(relay, "/q?token=alice"));
        assertReached("O", "/h", viaUrl(relay, "/h", "-H", "X-Arp-Token: bob"));
        assertReached("O", "/host-a", viaHost(relay, "alice", "/host-a"));
        assertReached("O", "/host-b", viaHost(relay, "bob", "/host-b"));
        assertReached("O", "/id", viaUrl(relay, "/id?token=" + c.clientId()));
        assertReached("O", "/host-id", viaHost(relay, c.clientId(), "/host-id"));
        assertEquals(6, o.seen().size(), () -> "the service saw: " + o.seen());

        Curl.Result other = viaUrl(relay, "/x?token=carol");
        assertEquals(404, other.status(), other::toString);

        // Up to 16 tokens, each a valid id: anything else is an invalid option (exit 2, naming it).
        Args seventeen = env.arpcArgs(relay, o.port());
        for (int i = 0; i < 17; i++) seventeen.add("--token", "t" + i);
        for (Args bad : List.of(seventeen, env.arpcArgs(relay, o.port()).add("--token", "not a token!"))) {
            Proc p = env.startArpc(bad);
            int code = p.awaitExit(TestEnv.START);
            String out = p.stdoutText() + "\n" + p.stderrText();
            assertEquals(2, code, () -> "exit code for " + bad + ":\n" + out);
            assertTrue(out.contains("--token"), () -> "the error should name --token:\n" + out);
        }
    }

    @Test
    void aTokenHeldByAnotherLiveClientIsRefusedAndStaysWithItsHolder() throws Exception {
        TestEnv.Relay relay = env.arps();
        NamedOrigin a = origin("A"), b = origin("B");
        TestEnv.Client holder = env.arpc(env.arpcArgs(relay, a.port()).add("--token", "shared-name"));

        Args takerArgs = env.arpcArgs(relay, b.port()).add("--token", "shared-name");
        Args idTakerArgs = env.arpcArgs(relay, b.port()).add("--token", holder.clientId());
        Proc taker = env.startArpc(takerArgs);
        Proc idTaker = env.startArpc(idTakerArgs);

        String err = assertRefused(taker);
        assertTrue(err.contains("shared-name"), "arpc's message should name the token:\n" + err);
        // A token that is another live client's id is taken too.
        String idErr = assertRefused(idTaker);
        assertTrue(idErr.contains(holder.clientId()), "arpc's message should name the token:\n" + idErr);

        assertReached("A", "/s", viaUrl(relay, "/s?token=shared-name"));
        assertReached("A", "/i", viaUrl(relay, "/i?token=" + holder.clientId()));
        // The refused clients are not reachable under their own ids either.
        assertEquals(404, viaUrl(relay, "/t?token=" + takerArgs.get("--client-id")).status());
        assertEquals(0, b.seen().size(), () -> "B saw: " + b.seen());

        // Once the holder is gone, the token is free again.
        holder.proc().sigterm();
        holder.proc().awaitExit(WAIT);
        relay.proc().awaitStderr("arps logging that the holder left", l -> l.contains("unregistered"), WAIT);
        env.arpc(env.arpcArgs(relay, b.port()).add("--token", "shared-name"));
        assertReached("B", "/later", viaUrl(relay, "/later?token=shared-name"));
    }

    @Test
    void aLiveTokenCannotBeTakenByRegisteringItAsAClientId() throws Exception {
        TestEnv.Relay relay = env.arps();
        NamedOrigin a = origin("A"), b = origin("B");
        env.arpc(env.arpcArgs(relay, a.port()).add("--token", "team-demo"));
        assertReached("A", "/before", viaUrl(relay, "/before?token=team-demo"));

        // A client whose id is that token: the token is live, so the id is in use.
        Proc taker = env.startArpc(env.arpcArgs(relay, b.port()).set("--client-id", "team-demo").set("--max-retries", 0));
        long deadline = System.nanoTime() + TestEnv.START.toNanos();
        while (taker.isAlive() && taker.countEvents("registered") == 0 && System.nanoTime() < deadline) Thread.sleep(50);
        assertEquals(0, taker.countEvents("registered"), () -> "a client registered another live client's token as its id; "
                + "visitors of team-demo now reach: " + viaUrl(relay, "/after?token=team-demo").body().lines().findFirst().orElse(""));
        int code = taker.awaitExit(WAIT);
        assertTrue(code == 1 || code == 3, () -> "exit " + code + "; stderr:\n" + taker.stderrText());
        assertReached("A", "/after", viaUrl(relay, "/after?token=team-demo"));
        assertEquals(0, b.seen().size(), () -> "B saw: " + b.seen());
    }

    @Test
    void aClientHasAtMost16ExtraTokensInAllItsAddTokensMessages() throws Exception {
        TestEnv.Relay relay = env.arps();
        String id = TestEnv.randomId("tokens");
        FakeClient c = env.own(FakeClient.register(relay.controlPort(), id, true));
        assertTrue(c.registerResult().path("RegisterResult").path("success").asBoolean(false), c.registerResult()::toString);

        List<String> first = new java.util.ArrayList<>();
        for (int i = 0; i < 10; i++) first.add("first-" + i + "-" + id);
        JsonNode r1 = addTokens(c, first);
        assertTrue(r1.path("success").asBoolean(false), () -> "10 extra tokens: " + r1);

        // 10 + 7 > 16: the whole second message is refused (before the fix each message had its own 16).
        List<String> second = new java.util.ArrayList<>();
        for (int i = 0; i < 7; i++) second.add("second-" + i + "-" + id);
        JsonNode r2 = addTokens(c, second);
        assertFalse(r2.path("success").asBoolean(true), () -> "10 + 7 extra tokens were accepted: " + r2);
        assertTrue(r2.path("error").asText("").contains("16"), () -> "the refusal names the limit: " + r2);
        for (String t : second) assertEquals(404, Visit.get(relay.publicPort(), "/x?token=" + t).status(), "refused token " + t);

        // Up to 16 in all is fine; tokens it holds already (and its own id) do not count again.
        List<String> third = new java.util.ArrayList<>(first.subList(0, 3));
        third.add(id);
        for (int i = 0; i < 6; i++) third.add("third-" + i + "-" + id);
        JsonNode r3 = addTokens(c, third);
        assertTrue(r3.path("success").asBoolean(false), () -> "6 more (16 in all), with 3 held ones and the id repeated: " + r3);
        JsonNode again = addTokens(c, first);
        assertTrue(again.path("success").asBoolean(false), () -> "tokens it holds, sent again: " + again);

        // The 17th, alone or in a message of its own, is refused; so is a flood of one-token messages.
        for (int i = 0; i < 5; i++) {
            String t = "more-" + i + "-" + id;
            JsonNode r = addTokens(c, List.of(t));
            assertFalse(r.path("success").asBoolean(true), () -> "token " + t + " beyond 16: " + r);
            assertEquals(404, Visit.get(relay.publicPort(), "/x?token=" + t).status(), "refused token " + t);
        }
        assertTrue(relay.proc().isAlive());
    }

    /** Sends AddTokens and returns the AddTokensResult body (answering Pings, skipping the pool's requests on the way). */
    private static JsonNode addTokens(FakeClient c, List<String> tokens) throws Exception {
        c.send(arp.tests.support.CommandArpc.json(Map.of("AddTokens", Map.of("tokens", tokens))));
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (true) {
            JsonNode f = c.next(Duration.ofNanos(Math.max(1, deadline - System.nanoTime())));
            if (f.has("AddTokensResult")) return f.get("AddTokensResult");
            if (f.has("Ping")) c.send(FakeClient.Frames.pong());
            else if (!f.has("Pong") && !f.has("RequestNewProxyConn")) throw new AssertionError("expected AddTokensResult, got " + f);
        }
    }

    @Test
    void aPageOfOneTunnelCannotCallAnotherWithTheVisitorsCookie() throws Exception {
        TestEnv.Relay relay = env.arps(); // no --domain: every tunnel shares the relay's browser origin
        NamedOrigin a = origin("A"), b = origin("B");
        String idA = env.arpc(relay, a.port()).clientId();
        String idB = env.arpc(relay, b.port()).clientId();
        int port = relay.publicPort();
        String cookieA = "Cookie: theme=dark; arp_token=" + idA + "\r\n";

        // What a script on A's page sends to B (fetch, XHR, <img>, a form POST): A's cookie, no navigation.
        List<String> fromAPage = List.of(
                "GET /data?token=" + idB + " HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n" + cookieA + "Sec-Fetch-Mode: cors\r\n\r\n",
                "GET /data HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n" + cookieA + "X-Arp-Token: " + idB + "\r\nSec-Fetch-Mode: cors\r\n\r\n",
                "GET /img.png?token=" + idB + " HTTP/1.1\r\nHost: h\r\nAccept: image/*\r\n" + cookieA + "Sec-Fetch-Mode: no-cors\r\n\r\n",
                // a browser without Fetch Metadata
                "GET /data?token=" + idB + " HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n" + cookieA + "\r\n",
                "POST /form?token=" + idB + " HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n" + cookieA + "Content-Length: 3\r\n\r\nx=1");
        for (String request : fromAPage) {
            RawHttp.Response r = RawHttp.exchange(port, request);
            assertEquals(403, r.status(), () -> "from A's page to B:\n" + request + "\n→ " + r);
            assertTrue(r.head().startsWith("HTTP/1.1 403 Forbidden\r\n"), r::toString);
            assertNull(r.header("Set-Cookie"), r::toString);
        }
        assertEquals(List.of(), b.seen(), "B's service saw requests from A's page");
        assertEquals(List.of(), a.seen(), "A's service saw them");

        // A navigation to B (a link the visitor follows) is allowed: B's cookie comes with the redirect.
        RawHttp.Response nav = RawHttp.exchange(port, "GET /page?token=" + idB + " HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n"
                + cookieA + "Sec-Fetch-Mode: navigate\r\n\r\n");
        assertEquals(302, nav.status(), nav::toString);
        assertEquals("/page", nav.header("Location"), nav::toString);
        assertArpCookie(idB, nav.header("Set-Cookie"), false, nav.toString());
        RawHttp.Response oldNav = RawHttp.exchange(port, "GET /old?token=" + idB + " HTTP/1.1\r\nHost: h\r\nAccept: " + BROWSER_ACCEPT
                + "\r\n" + cookieA + "\r\n");
        assertEquals(302, oldNav.status(), () -> "a navigation by a browser without Fetch Metadata: " + oldNav);
        assertArpCookie(idB, oldNav.header("Set-Cookie"), false, oldNav.toString());
        // With B's cookie, the page of B reaches B.
        assertReached("B", "/after", RawHttp.exchange(port, "GET /after HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nCookie: arp_token=" + idB
                + "\r\nSec-Fetch-Mode: cors\r\n\r\n"));

        // A page calling its own tunnel, by cookie, by ?token= or by header, works.
        assertReached("A", "/own", RawHttp.exchange(port, "GET /own?token=" + idA + " HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n" + cookieA
                + "Sec-Fetch-Mode: cors\r\n\r\n"));
        assertReached("A", "/own-header", RawHttp.exchange(port, "GET /own-header HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n" + cookieA
                + "X-Arp-Token: " + idA + "\r\nSec-Fetch-Mode: cors\r\n\r\n"));
        assertReached("A", "/own-cookie", RawHttp.exchange(port, "GET /own-cookie HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n" + cookieA
                + "Sec-Fetch-Mode: cors\r\n\r\n"));
        // An API client without the cookie names any tunnel.
        assertReached("B", "/api", RawHttp.exchange(port, "GET /api HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nX-Arp-Token: " + idB + "\r\n\r\n"));
        assertReached("B", "/api2", viaUrl(relay, "/api2?token=" + idB));

        assertEquals(3, a.seen().size(), () -> "A saw: " + a.seen());
        assertEquals(3, b.seen().size(), () -> "B saw: " + b.seen());
    }

    @Test
    void controlCharactersInTheRequestTargetAreA400() throws Exception {
        TestEnv.Relay relay = env.arps();
        NamedOrigin o = origin("O");
        String id = env.arpc(relay, o.port()).clientId();
        int port = relay.publicPort();
        List<String> problems = new java.util.ArrayList<>();
        // A navigation with a token is answered with a redirect to the target: a CR in it would have split the Location header.
        for (String target : List.of("/a\tb?token=" + id, "/a?x=1\t&token=" + id, "/p\rSet-Cookie:evil=1?token=" + id,
                "/p?token=" + id + "\u0001", "/\u0000?token=" + id, "/del\u007f?token=" + id, "/esc\u001b[31m?token=" + id)) {
            for (String accept : List.of("text/html", "*/*")) {
                String shown = target.chars().mapToObj(ch -> ch < 0x20 || ch == 0x7f ? String.format("\\x%02x", ch) : String.valueOf((char) ch))
                        .collect(java.util.stream.Collectors.joining());
                RawHttp.Response r = RawHttp.exchange(port, "GET " + target + " HTTP/1.1\r\nHost: h\r\nAccept: " + accept + "\r\n\r\n");
                if (r.status() != 400 || r.header("Location") != null || r.header("Set-Cookie") != null) {
                    problems.add(shown + " (Accept " + accept + ") → " + r.status() + " Location: " + r.header("Location")
                            + " Set-Cookie: " + r.header("Set-Cookie"));
                }
            }
        }
        assertEquals(List.of(), problems, "requests with control characters in the target");
        assertEquals(List.of(), o.seen(), "the service saw them");
        // The same relay still serves a clean target.
        assertReached("O", "/a%09b", RawHttp.exchange(port, "GET /a%09b?token=" + id + " HTTP/1.1\r\nHost: h\r\n\r\n"));
    }

    /** arpc exits 3 without claiming to be registered; returns its stderr. */
    static String assertRefused(Proc arpc) {
        int code = arpc.awaitExit(TestEnv.START);
        String err = arpc.stderrText();
        assertEquals(3, code, () -> "arpc's exit code; stderr:\n" + err);
        assertEquals(0, arpc.countEvents("registered"), () -> "arpc printed a registered line: " + arpc.stdoutText());
        return err;
    }

    @Test
    void browserNavigationWithATokenGetsACookieAndARedirectWithoutTheToken() throws Exception {
        TestEnv.Relay relay = env.arps();
        NamedOrigin o = origin("O");
        String id = env.arpc(relay, o.port()).clientId();
        int port = relay.publicPort();

        RawHttp.Response r = RawHttp.exchange(port, "GET /page?a=1&token=" + id + "&b=2 HTTP/1.1\r\nHost: relay.example\r\n"
                + "Accept: " + BROWSER_ACCEPT + "\r\nUser-Agent: Mozilla/5.0\r\n\r\n");
        assertEquals(302, r.status(), r::toString);
        assertEquals("/page?a=1&b=2", r.header("Location"), r::toString);
        assertArpCookie(id, r.header("Set-Cookie"), false, r.toString());
        assertNotNull(r.header("Cache-Control"), r::toString);
        assertTrue(lower(r.header("Cache-Control")).contains("no-store"), r::toString);

        // Only the parameter named token goes; the others stay exactly as sent.
        RawHttp.Response exact = RawHttp.exchange(port, "GET /a%20b/c?mytoken=1&token=" + id + "&tokenx=2&x=%2F%3F&token2 HTTP/1.1\r\n"
                + "Host: h\r\nAccept: text/html\r\n\r\n");
        assertEquals(302, exact.status(), exact::toString);
        assertEquals("/a%20b/c?mytoken=1&tokenx=2&x=%2F%3F&token2", exact.header("Location"), exact::toString);
        // Only the token in the query: the Location is the bare path.
        RawHttp.Response bare = RawHttp.exchange(port, "GET /doc?token=" + id + " HTTP/1.1\r\nHost: h\r\nAccept: text/html\r\n\r\n");
        assertEquals(302, bare.status(), bare::toString);
        assertEquals("/doc", bare.header("Location"), bare::toString);
        // Sec-Fetch-Mode: navigate is a navigation whatever the Accept; HEAD is redirected as GET is.
        RawHttp.Response nav = RawHttp.exchange(port, "GET /n?token=" + id + " HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n"
                + "Sec-Fetch-Mode: navigate\r\n\r\n");
        assertEquals(302, nav.status(), nav::toString);
        assertArpCookie(id, nav.header("Set-Cookie"), false, nav.toString());
        try (RawHttp.Conn c = RawHttp.connect(port)) {
            c.send("HEAD /h?token=" + id + " HTTP/1.1\r\nHost: h\r\nAccept: text/html\r\n\r\n");
            c.timeout(WAIT);
            String head = arp.tests.support.Bytes.ascii(RawHttp.readHead(c.in())); // a HEAD answer has no body
            assertTrue(head.startsWith("HTTP/1.1 302 "), () -> "HEAD with a token:\n" + head);
            RawHttp.Response h = new RawHttp.Response(302, head, new byte[0]);
            assertEquals("/h", h.header("Location"), head);
            assertArpCookie(id, h.header("Set-Cookie"), false, head);
        }
        assertEquals(0, o.seen().size(), () -> "arps answers the redirects itself, but the service saw: " + o.seen());

        // The cookie alone routes; arps removes its own cookie and keeps the others.
        RawHttp.Response withCookie = RawHttp.exchange(port, "GET /after?x=1 HTTP/1.1\r\nHost: h\r\nAccept: text/html\r\n"
                + "Cookie: theme=dark; arp_token=" + id + "; lang=en\r\n\r\n");
        assertReached("O", "/after?x=1", withCookie);
        String seen = withCookie.bodyText();
        assertFalse(seen.contains("arp_token"), "the service must not see arp's cookie:\n" + seen);
        assertFalse(seen.contains(id), "the service must not see the token:\n" + seen);
        assertTrue(seen.contains("theme=dark") && seen.contains("lang=en"), "the other cookies should arrive:\n" + seen);
        RawHttp.Response onlyCookie = RawHttp.exchange(port, "GET /only HTTP/1.1\r\nHost: h\r\nCookie: arp_token=" + id + "\r\n\r\n");
        assertReached("O", "/only", onlyCookie);
        assertFalse(onlyCookie.bodyText().contains("arp_token"), onlyCookie::toString);

        // curl's default Accept: */* is no navigation: served at once, no cookie.
        Curl.Result plain = Curl.run(env, "http://127.0.0.1:" + port + "/page?token=" + id);
        assertReached("O", "/page", plain);
        assertEquals(List.of(), plain.headers("Set-Cookie"), plain::toString);
        // Nor is a POST, whatever it accepts.
        RawHttp.Response post = RawHttp.exchange(port, "POST /form?token=" + id + " HTTP/1.1\r\nHost: h\r\nAccept: text/html\r\n"
                + "Content-Length: 3\r\n\r\nx=1");
        assertReached("O", "/form", post);
        assertNull(post.header("Set-Cookie"), post::toString);

        // An unknown token gets the usual 404, and no cookie.
        RawHttp.Response unknown = RawHttp.exchange(port, "GET /?token=nobody-4242 HTTP/1.1\r\nHost: h\r\nAccept: text/html\r\n\r\n");
        assertEquals(404, unknown.status(), unknown::toString);
        assertNull(unknown.header("Set-Cookie"), unknown::toString);
    }

    @Test
    void theRedirectNeverSendsTheBrowserAwayFromTheRelay() throws Exception {
        TestEnv.Relay relay = env.arps();
        NamedOrigin o = origin("O");
        String id = env.arpc(relay, o.port()).clientId();
        // A link to the relay that a browser would follow elsewhere if the Location were the target as sent:
        // //host/ and /\host/ are other hosts to a browser, and so is an absolute-form target.
        List<String> problems = new java.util.ArrayList<>();
        for (String target : List.of("//evil.example/x?token=" + id, "/\\evil.example/x?token=" + id,
                "http://evil.example/x?token=" + id, "///evil.example/x?token=" + id)) {
            RawHttp.Response r = RawHttp.exchange(relay.publicPort(), "GET " + target + " HTTP/1.1\r\nHost: h\r\nAccept: text/html\r\n\r\n");
            String location = r.header("Location");
            if (r.status() / 100 == 3 && (location == null || !location.startsWith("/") || location.startsWith("//")
                    || location.startsWith("/\\"))) {
                problems.add(target + " → " + r.status() + " Location: " + location);
            }
        }
        assertEquals(List.of(), problems, "redirects off the relay (an open redirect)");
    }

    /**
     * {@code arp_token=<id>} with {@code Path=/}, {@code HttpOnly}, {@code SameSite=Lax}, and {@code Secure}
     * exactly when {@code secure}.
     */
    static void assertArpCookie(String id, String setCookie, boolean secure, String context) {
        assertNotNull(setCookie, () -> "no Set-Cookie: " + context);
        List<String> parts = java.util.Arrays.stream(setCookie.split(";")).map(String::trim).toList();
        assertEquals("arp_token=" + id, parts.get(0), () -> "Set-Cookie: " + setCookie);
        List<String> attrs = parts.subList(1, parts.size()).stream().map(RoutingTest::lower).toList();
        assertTrue(attrs.contains("path=/"), () -> "Set-Cookie without Path=/: " + setCookie);
        assertTrue(attrs.contains("httponly"), () -> "Set-Cookie without HttpOnly: " + setCookie);
        assertTrue(attrs.contains("samesite=lax"), () -> "Set-Cookie without SameSite=Lax: " + setCookie);
        assertEquals(secure, attrs.contains("secure"), () -> "Set-Cookie " + (secure ? "without" : "with") + " Secure: " + setCookie);
    }

    @Test
    void curlWithACookieJarFollowsTheRedirectLikeABrowser() throws Exception {
        TestEnv.Relay relay = env.arps();
        NamedOrigin o = origin("O");
        String id = env.arpc(relay, o.port()).clientId();
        Path jar = env.dir("jar").resolve("cookies.txt");

        Curl.Result r = Curl.run(env, "-L", "-c", jar.toString(), "-b", jar.toString(), "-H", "Accept: text/html",
                "http://127.0.0.1:" + relay.publicPort() + "/app/index.html?lang=en&token=" + id);
        assertReached("O", "/app/index.html?lang=en", r);
        assertTrue(r.heads().startsWith("HTTP/1.1 302"), r::toString);
        assertFalse(r.body().contains("arp_token"), r::toString);
        assertEquals(1, o.seen().size(), () -> "the service saw: " + o.seen());
        // The jar holds the cookie for the relay's host, HttpOnly (curl marks those lines #HttpOnly_).
        String cookies = Files.readString(jar);
        assertTrue(cookies.lines().anyMatch(l -> l.startsWith("#HttpOnly_127.0.0.1") && l.endsWith("\tarp_token\t" + id)),
                "curl's cookie jar:\n" + cookies);

        // Later visits with the jar alone reach the service.
        Curl.Result again = Curl.run(env, "-b", jar.toString(), "-H", "Accept: text/html",
                "http://127.0.0.1:" + relay.publicPort() + "/app/next");
        assertReached("O", "/app/next", again);
    }
}
