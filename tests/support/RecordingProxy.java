package arp.tests.support;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.time.Duration;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;

/**
 * A TCP proxy on 127.0.0.1:0 in front of 127.0.0.1:{@code target} that records the bytes of each
 * connection in both directions, as an eavesdropper on the network would: tests replay what a real
 * arpc sent to show that a recording is worth nothing to an attacker.
 */
public final class RecordingProxy implements AutoCloseable {
    private final ServerSocket server;
    private final int target;
    private final List<Recording> recordings = new CopyOnWriteArrayList<>();
    private final Set<Socket> open = ConcurrentHashMap.newKeySet();
    private volatile boolean closed;

    /** The bytes of one proxied connection so far. */
    public static final class Recording {
        private final ByteArrayOutputStream up = new ByteArrayOutputStream(); // client → target
        private final ByteArrayOutputStream down = new ByteArrayOutputStream(); // target → client

        public byte[] clientToServer() {
            synchronized (up) {
                return up.toByteArray();
            }
        }

        public byte[] serverToClient() {
            synchronized (down) {
                return down.toByteArray();
            }
        }
    }

    private RecordingProxy(int target) throws IOException {
        this.target = target;
        this.server = new ServerSocket(0, 50, InetAddress.getByName("127.0.0.1"));
        Thread.ofPlatform().daemon().name("recording-proxy-accept").start(this::acceptLoop);
    }

    public static RecordingProxy start(int targetPort) {
        try {
            return new RecordingProxy(targetPort);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    public int port() { return server.getLocalPort(); }

    public List<Recording> recordings() { return List.copyOf(recordings); }

    /** The {@code n}th (0-based) connection's recording, waiting for it to be accepted. */
    public Recording recording(int n, Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (recordings.size() <= n) {
            if (System.nanoTime() > deadline) throw new AssertionError("recording proxy: fewer than " + (n + 1) + " connections within " + timeout.toMillis() + " ms");
            TimeUnit.MILLISECONDS.sleep(20);
        }
        return recordings.get(n);
    }

    private void acceptLoop() {
        while (!closed) {
            Socket client;
            try {
                client = server.accept();
            } catch (IOException e) {
                return;
            }
            Recording r = new Recording();
            recordings.add(r);
            open.add(client);
            Thread.ofVirtual().start(() -> {
                Socket upstream = new Socket();
                open.add(upstream);
                try {
                    upstream.connect(new InetSocketAddress("127.0.0.1", target), 5_000);
                    client.setTcpNoDelay(true);
                    upstream.setTcpNoDelay(true);
                } catch (IOException e) {
                    closeQuietly(client);
                    closeQuietly(upstream);
                    return;
                }
                Thread a = Thread.ofVirtual().start(() -> pump(client, upstream, r.up));
                Thread b = Thread.ofVirtual().start(() -> pump(upstream, client, r.down));
                try {
                    a.join();
                    b.join();
                } catch (InterruptedException ignored) {
                    // closing
                } finally {
                    closeQuietly(client);
                    closeQuietly(upstream);
                    open.remove(client);
                    open.remove(upstream);
                }
            });
        }
    }

    private static void pump(Socket from, Socket to, ByteArrayOutputStream record) {
        byte[] buf = new byte[16384];
        try {
            InputStream in = from.getInputStream();
            OutputStream out = to.getOutputStream();
            for (int n; (n = in.read(buf)) > 0; ) {
                synchronized (record) {
                    record.write(buf, 0, n);
                }
                out.write(buf, 0, n);
                out.flush();
            }
            to.shutdownOutput();
        } catch (IOException e) {
            closeQuietly(from);
            closeQuietly(to);
        }
    }

    private static void closeQuietly(Socket s) {
        try {
            s.close();
        } catch (IOException ignored) {
        }
    }

    @Override public void close() throws IOException {
        closed = true;
        server.close();
        for (Socket s : open) closeQuietly(s);
    }
}
