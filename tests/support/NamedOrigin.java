package arp.tests.support;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;

import java.io.IOException;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * A small HTTP service on 127.0.0.1:0 (the JDK's own server) that answers every request with
 * {@code origin=<name>}, then {@code target <path?query>} and one {@code Name: value} line per request
 * header, and keeps the heads it saw: routing tests tell which of several services a visitor reached
 * and what arrived there.
 */
public final class NamedOrigin implements AutoCloseable {
    public final String name;
    private final HttpServer server;
    private final ExecutorService executor = Executors.newVirtualThreadPerTaskExecutor();
    private final List<String> seen = new CopyOnWriteArrayList<>();

    private NamedOrigin(String name) throws IOException {
        this.name = name;
        server = HttpServer.create(new InetSocketAddress(InetAddress.getByName("127.0.0.1"), 0), 64);
        server.setExecutor(executor);
        server.createContext("/", this::handle);
        server.start();
    }

    public static NamedOrigin start(String name) {
        try {
            return new NamedOrigin(name);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    public int port() { return server.getAddress().getPort(); }

    /** The requests seen so far, each as the body it was answered with. */
    public List<String> seen() { return List.copyOf(seen); }

    private void handle(HttpExchange ex) throws IOException {
        StringBuilder sb = new StringBuilder("origin=").append(name).append('\n');
        sb.append("target ").append(ex.getRequestURI().getRawPath());
        if (ex.getRequestURI().getRawQuery() != null) sb.append('?').append(ex.getRequestURI().getRawQuery());
        sb.append('\n');
        for (Map.Entry<String, List<String>> h : ex.getRequestHeaders().entrySet()) {
            for (String v : h.getValue()) sb.append(h.getKey()).append(": ").append(v).append('\n');
        }
        String body = sb.toString();
        seen.add(body);
        ex.getRequestBody().readAllBytes();
        byte[] b = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", "text/plain");
        boolean head = ex.getRequestMethod().equals("HEAD");
        ex.sendResponseHeaders(200, head ? -1 : b.length);
        try (OutputStream out = ex.getResponseBody()) {
            if (!head) out.write(b);
        }
    }

    @Override public void close() {
        server.stop(0);
        executor.shutdownNow();
    }
}
