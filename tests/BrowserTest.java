package arp.tests;

import arp.tests.support.Deps;
import arp.tests.support.Proc;
import arp.tests.support.RawHttp;
import arp.tests.support.Site;
import arp.tests.support.TestEnv;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.function.Executable;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.List;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertAll;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The shared-link scenario in a real browser: headless Chromium (Debian's), driven by playwright-core
 * from tests/browser/load-page.mjs, opens {@code http://relay/index.html?token=ID} for a site whose
 * links are all root-relative and carry no token. arps answers that navigation itself with a redirect
 * to the same URL without the token and a cookie {@code arp_token}, which then routes every request of
 * the browser (stylesheet, script, image, fetch(), XMLHttpRequest, the next page) on any connection.
 * The site never sees the token: not in a query, and not as the cookie on a connection's first request
 * (arps removes it there).
 */
class BrowserTest {
    @RegisterExtension final TestEnv env = new TestEnv();

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Duration BROWSER = Duration.ofSeconds(60);

    /**
     * Runs load-page.mjs in {@code mode} against {@code url}; returns its report (the JSON line it prints,
     * which the TestEnv shows with the rest of node's output when the test fails).
     */
    private JsonNode browse(String mode, String url, Path screenshot) throws Exception {
        Path script = Deps.repoRoot().resolve("tests").resolve("browser").resolve("load-page.mjs");
        Path playwright = Deps.playwrightCore();
        assertTrue(Files.isRegularFile(playwright.resolve("index.mjs")), "playwright-core is not installed in " + playwright
                + ": run tests/install-deps");
        assertTrue(Files.isExecutable(Path.of(Deps.CHROMIUM)), Deps.CHROMIUM + " is missing: run tests/install-deps");
        Path tmp = env.dir("browser-tmp");
        ObjectNode config = JSON.createObjectNode().put("playwrightCore", playwright.toString()).put("chromium", Deps.CHROMIUM)
                .put("tmpDir", tmp.toString()).put("mode", mode).put("url", url)
                .put("screenshot", screenshot == null ? null : screenshot.toString());
        // The node process is closed with the test, and Chromium with it (its descendants are killed too).
        Proc node = env.start("node(" + mode + ")", List.of("node", script.toString(), JSON.writeValueAsString(config)), tmp);
        JsonNode report = node.awaitEvent("report", 1, BROWSER);
        assertEquals(0, node.awaitExit(Duration.ofSeconds(15)), () -> "load-page.mjs failed: " + report + "\n" + node.stderrText());
        return report;
    }

    private static String stepError(JsonNode report, String step) {
        JsonNode s = report.path("steps").path(step);
        return s.isMissingNode() ? "step " + step + " did not run" : s.path("error").asText(null);
    }

    @Test
    void aSharedLinkLoadsTheWholePageAndItsAssetsInChromium() throws Exception {
        Site site = env.own(Site.start());
        TestEnv.Tunnel t = env.tunnel(site.port());
        String base = t.relay().base();
        Path shot = env.dir("browser").resolve("index.png");

        JsonNode report = browse("shared-link", base + "/index.html?token=" + t.token(), shot);
        JsonNode open = report.path("steps").path("open");
        List<Site.Request> seen = site.requests();

        List<Executable> checks = new ArrayList<>();
        // The browser's side.
        checks.add(() -> assertNull(stepError(report, "open"), "opening the shared link"));
        checks.add(() -> assertEquals(200, open.path("status").asInt(), "status of the page"));
        checks.add(() -> assertEquals(base + "/index.html", open.path("url").asText(), "the address bar, without the token"));
        checks.add(() -> {
            JsonNode hops = open.path("redirects");
            assertEquals(1, hops.size(), "one redirect, by arps");
            JsonNode hop = hops.get(0);
            assertEquals(302, hop.path("status").asInt(), "the redirect's status");
            assertEquals("/index.html", hop.path("location").asText(), "the redirect's Location");
            String cookie = hop.path("setCookie").asText("");
            assertTrue(cookie.startsWith("arp_token=" + t.token() + ";"), "Set-Cookie: " + cookie);
            for (String attr : List.of("Path=/", "HttpOnly", "SameSite=Lax")) {
                assertTrue(Arrays.stream(cookie.split(";")).map(String::strip).anyMatch(attr::equalsIgnoreCase),
                        "Set-Cookie without " + attr + ": " + cookie);
            }
        });
        checks.add(() -> assertTrue(open.path("done").asBoolean(), "the page's script finished"));
        checks.add(() -> assertEquals(Site.TITLE, open.path("title").asText(), "title"));
        checks.add(() -> assertEquals(Site.HEADING, open.path("heading").asText(), "heading"));
        checks.add(() -> assertEquals(Site.DONE, open.path("statusText").asText(), "the page's status line"));
        JsonNode results = open.path("results");
        checks.add(() -> assertEquals(Site.HEADING_COLOR, results.path("css").asText(), "the stylesheet applied"));
        checks.add(() -> assertEquals(Site.IMAGE_SIZE + "x" + Site.IMAGE_SIZE, results.path("image").asText(), "the PNG decoded"));
        checks.add(() -> assertEquals("200 fetch", results.path("fetch").asText(), "fetch() of /api/data.json"));
        checks.add(() -> assertEquals("200 xhr", results.path("xhr").asText(), "XMLHttpRequest of /api/xhr.json"));
        checks.add(() -> {
            for (JsonNode f : report.path("failed")) {
                // A favicon request still in flight when the link is followed may be cancelled.
                if (!f.path("url").asText().endsWith("/favicon.ico")) throw new AssertionError("request failed: " + f);
            }
        });
        checks.add(() -> assertEquals(0, report.path("errors").size(), "page errors"));
        checks.add(() -> {
            for (JsonNode r : report.path("responses")) {
                String url = r.path("url").asText();
                int status = r.path("status").asInt();
                if (url.endsWith("/favicon.ico")) continue; // the site has none: its 404
                assertTrue(status == 200 || (status == 302 && url.contains("token=")), "response " + status + " for " + url);
            }
        });
        checks.add(() -> {
            JsonNode cookie = null;
            for (JsonNode c : report.path("steps").path("cookies")) if (c.path("name").asText().equals("arp_token")) cookie = c;
            assertTrue(cookie != null, "the browser holds an arp_token cookie");
            assertEquals(t.token(), cookie.path("value").asText(), "arp_token's value");
            assertTrue(cookie.path("httpOnly").asBoolean(), "arp_token is HttpOnly: " + cookie);
            assertEquals("Lax", cookie.path("sameSite").asText(), "arp_token's SameSite: " + cookie);
        });
        checks.add(() -> {
            assertNull(stepError(report, "screenshot"), "screenshot");
            byte[] png = Files.readAllBytes(shot);
            assertTrue(png.length > 1000, "screenshot of " + png.length + " bytes");
            assertEquals("89504e470d0a1a0a", HexFormat.of().formatHex(png, 0, 8), "PNG signature of " + shot);
            Path artifact = Deps.repoRoot().resolve("build").resolve("test-artifacts").resolve("browser.png");
            Files.createDirectories(artifact.getParent());
            Files.copy(shot, artifact, StandardCopyOption.REPLACE_EXISTING);
            System.out.println("BrowserTest: screenshot " + shot + " (" + png.length + " bytes), kept as " + artifact);
        });
        JsonNode link = report.path("steps").path("link");
        checks.add(() -> {
            assertNull(stepError(report, "link"), "following the link to /page2.html");
            assertEquals(base + "/page2.html", link.path("url").asText(), "the second page's address");
            assertEquals(Site.PAGE2_TITLE, link.path("title").asText(), "the second page's title");
            assertEquals(Site.PAGE2_HEADING, link.path("heading").asText(), "the second page's heading");
        });

        // The site's side.
        checks.add(() -> {
            Set<String> paths = new HashSet<>();
            for (Site.Request r : seen) paths.add(r.path());
            for (String p : Site.PATHS) assertTrue(paths.contains(p), p + " never reached the site; it saw " + seen);
        });
        checks.add(() -> {
            // Chromium fetches the script and the image in parallel with the stylesheet, on new
            // connections: those were routed by the cookie alone.
            long connections = seen.stream().mapToInt(Site.Request::connection).distinct().count();
            assertTrue(connections >= 2, "the browser's requests came on " + connections + " connection(s); it saw " + seen);
        });
        checks.add(() -> {
            for (Site.Request r : seen) {
                boolean token = Arrays.stream(r.query().split("&")).anyMatch(q -> q.equals("token") || q.startsWith("token="));
                assertFalse(token, "the site saw the token in a query: " + r + "; all it saw: " + seen);
                if (r.nth() == 1 && r.cookie() != null) {
                    assertFalse(r.cookie().contains("arp_token"), "the first request of a connection carried arp_token: " + r + "; all it saw: " + seen);
                }
            }
        });
        assertAll("the shared link in Chromium", checks.stream());
    }

    @Test
    void aWrongTokenGets404AndNoCookie() throws Exception {
        Site site = env.own(Site.start());
        TestEnv.Tunnel t = env.tunnel(site.port());
        String wrong = TestEnv.randomId("nobody");

        JsonNode report = browse("wrong-token", t.relay().base() + "/index.html?token=" + wrong, null);
        JsonNode open = report.path("steps").path("open");
        assertNull(stepError(report, "open"), "opening the link");
        assertEquals(404, open.path("status").asInt(), "status");
        assertEquals(0, open.path("redirects").size(), "redirects");
        assertTrue(open.path("setCookie").isNull(), "Set-Cookie on the 404");
        assertEquals(0, report.path("steps").path("cookies").size(), "cookies the browser holds");

        // The same navigation by hand, as a browser sends it.
        RawHttp.Response r = RawHttp.exchange(t.publicPort(), "GET /index.html?token=" + wrong + " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + "Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-Dest: document\r\n\r\n");
        assertEquals(404, r.status(), r::toString);
        assertNull(r.header("Set-Cookie"), r::toString);
        assertEquals(List.of(), site.requests(), "requests that reached the site");
    }
}
