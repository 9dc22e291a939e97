package arp.tests.support;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;

import static arp.tests.support.CommandArpc.JSON;

/**
 * A minimal MCP client (Streamable HTTP, JSON answers) over {@link HttpClient}, written from the
 * specification rather than from arp's code: POSTs one JSON-RPC message with
 * {@code Content-Type: application/json} and {@code Accept: application/json, text/event-stream}, keeps
 * the {@code Mcp-Session-Id} of its {@code initialize} and sends it with {@code MCP-Protocol-Version} on
 * every later request. {@link #direct} talks to arpc's own MCP port, {@link #relayed} to {@code /mcp}
 * through the relay's public port ({@code X-Arp-Token}). Both send the API key.
 */
public final class McpClient {
    public static final String ACCEPT = "application/json, text/event-stream";

    public final URI uri;
    public final String name;
    private final HttpClient http;
    private final Map<String, String> headers = new LinkedHashMap<>();
    private final AtomicLong ids = new AtomicLong();
    private String sessionId;
    private String version;

    private McpClient(String name, HttpClient http, URI uri, Map<String, String> headers) {
        this.name = name;
        this.http = http;
        this.uri = uri;
        this.headers.putAll(headers);
    }

    /** The MCP port on 127.0.0.1 ({@code mcp_url}). */
    public static McpClient direct(CommandArpc c) {
        return new McpClient("direct", c.env.http(), c.mcpUrl(), Map.of("Authorization", "Bearer " + c.key()));
    }

    /** {@code /mcp} through the tunnel: the relay's public port with {@code X-Arp-Token}. */
    public static McpClient relayed(CommandArpc c) {
        return new McpClient("relayed", c.env.http(), URI.create(c.url("/mcp")),
                Map.of("Authorization", "Bearer " + c.key(), "X-Arp-Token", c.clientId));
    }

    public String sessionId() { return sessionId; }

    public String version() { return version; }

    /** Use another session id from now on (null: send none). */
    public void sessionId(String id) { sessionId = id; }

    /** A POST to the endpoint with the client's headers (no session headers); the caller may override any. */
    public HttpRequest.Builder post(String body) {
        HttpRequest.Builder b = HttpRequest.newBuilder(uri).timeout(CommandArpc.WAIT)
                .header("Content-Type", "application/json").header("Accept", ACCEPT)
                .POST(HttpRequest.BodyPublishers.ofString(body));
        headers.forEach(b::header);
        return b;
    }

    /** A request of any method to the endpoint with the client's headers and, if set, its session headers. */
    public HttpRequest.Builder request(String method) {
        HttpRequest.Builder b = HttpRequest.newBuilder(uri).timeout(CommandArpc.WAIT).method(method, HttpRequest.BodyPublishers.noBody());
        headers.forEach(b::header);
        withSession(b);
        return b;
    }

    /** Adds Mcp-Session-Id and MCP-Protocol-Version (when known). */
    public HttpRequest.Builder withSession(HttpRequest.Builder b) {
        if (sessionId != null) b.header("Mcp-Session-Id", sessionId);
        if (version != null) b.header("MCP-Protocol-Version", version);
        return b;
    }

    public HttpResponse<String> send(HttpRequest request) {
        try {
            return http.send(request, HttpResponse.BodyHandlers.ofString());
        } catch (IOException e) {
            throw new AssertionError(name + " " + request.method() + " " + request.uri() + ": " + e, e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted");
        }
    }

    /** A JSON-RPC request message with a fresh numeric id. */
    public ObjectNode message(String method, Object params) {
        ObjectNode m = JSON.createObjectNode().put("jsonrpc", "2.0").put("id", ids.incrementAndGet()).put("method", method);
        if (params != null) m.set("params", JSON.valueToTree(params));
        return m;
    }

    /** initialize with {@code protocolVersion}; keeps the session id and the version the server chose, then sends notifications/initialized. */
    public JsonNode initialize(String protocolVersion) {
        ObjectNode m = message("initialize", Map.of("protocolVersion", protocolVersion, "capabilities", Map.of(),
                "clientInfo", Map.of("name", "arp-tests", "version", "1.0")));
        HttpResponse<String> r = send(post(m.toString()).build());
        JsonNode answer = json(r, 200, "initialize");
        if (!answer.has("result")) throw new AssertionError(name + " initialize: no result: " + r.body());
        sessionId = r.headers().firstValue("Mcp-Session-Id").orElseThrow(() -> new AssertionError(name + " initialize: no Mcp-Session-Id header"));
        version = answer.path("result").path("protocolVersion").asText();
        HttpResponse<String> n = send(withSession(post("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}")).build());
        if (n.statusCode() != 202) throw new AssertionError(name + " notifications/initialized: " + n.statusCode() + " " + n.body());
        return answer;
    }

    /** Sends a request in the session; the whole JSON-RPC answer (HTTP 200 JSON, id echoed). */
    public JsonNode rpc(String method, Object params) {
        ObjectNode m = message(method, params);
        HttpResponse<String> r = send(withSession(post(m.toString())).build());
        JsonNode answer = json(r, 200, method);
        if (!answer.path("jsonrpc").asText().equals("2.0") || !answer.path("id").isNumber() || answer.path("id").asLong() != m.get("id").asLong()) {
            throw new AssertionError(name + " " + method + ": answer is not JSON-RPC 2.0 with id " + m.get("id") + ": " + r.body());
        }
        return answer;
    }

    /** The result of a request that must succeed. */
    public JsonNode result(String method, Object params) {
        JsonNode a = rpc(method, params);
        if (!a.has("result") || a.has("error")) throw new AssertionError(name + " " + method + " " + params + ": not a result: " + a);
        return a.get("result");
    }

    /** tools/call: the result ({content, structuredContent?, isError}). */
    public JsonNode call(String tool, Object arguments) {
        return result("tools/call", Map.of("name", tool, "arguments", arguments));
    }

    /** A tool call that must succeed (isError false): its structuredContent, which must equal its text content. */
    public JsonNode callOk(String tool, Object arguments) {
        JsonNode r = call(tool, arguments);
        if (r.path("isError").asBoolean(true)) throw new AssertionError(name + " " + tool + " " + arguments + " failed: " + r);
        JsonNode structured = r.get("structuredContent");
        if (structured == null) throw new AssertionError(name + " " + tool + ": no structuredContent: " + r);
        JsonNode text = parse(r.path("content").path(0).path("text").asText());
        if (!structured.equals(text)) throw new AssertionError(name + " " + tool + ": text content differs from structuredContent: " + r);
        return structured;
    }

    /** A tool call that must fail in-band: its one text content. */
    public String callFails(String tool, Object arguments) {
        JsonNode r = call(tool, arguments);
        if (!r.path("isError").asBoolean(false)) throw new AssertionError(name + " " + tool + " " + arguments + " should fail: " + r);
        JsonNode c = r.path("content");
        if (c.size() != 1 || !c.get(0).path("type").asText().equals("text")) throw new AssertionError(name + " " + tool + ": content is not one text: " + r);
        return c.get(0).path("text").asText();
    }

    /** The body as JSON, after checking the status and that it is application/json. */
    public JsonNode json(HttpResponse<String> r, int status, String what) {
        if (r.statusCode() != status) throw new AssertionError(name + " " + what + ": status " + r.statusCode() + " (expected " + status + "): " + r.body());
        String type = r.headers().firstValue("Content-Type").orElse("");
        if (!type.startsWith("application/json")) throw new AssertionError(name + " " + what + ": Content-Type '" + type + "': " + r.body());
        return parse(r.body());
    }

    public static JsonNode parse(String s) {
        try {
            return JSON.readTree(s);
        } catch (IOException e) {
            throw new AssertionError("not JSON: " + s);
        }
    }

    @Override public String toString() { return name + " " + uri; }
}
