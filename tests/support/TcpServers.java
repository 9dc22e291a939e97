package arp.tests.support;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.time.Duration;
import java.util.Locale;
import java.util.Set;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/** Plain-socket local services on 127.0.0.1:0 for byte-level assertions. */
public final class TcpServers {
    private TcpServers() {}

    /** Records exactly the bytes of each connection and answers with a canned response. */
    public static Capture capture(String cannedResponse) { return new Capture(Bytes.ascii(cannedResponse)); }

    /** Echoes everything back. */
    public static Echo echo() { return new Echo(new byte[0]); }

    /** Writes the banner as soon as a connection is accepted, then echoes (server speaks first, like SMTP). */
    public static Echo banner(String banner) { return new Echo(Bytes.ascii(banner)); }

    public abstract static class Base implements AutoCloseable {
        private final ServerSocket server;
        private final Set<Socket> open = ConcurrentHashMap.newKeySet();
        private final AtomicInteger accepted = new AtomicInteger();
        private volatile boolean closed;

        Base(String name) {
            try {
                server = new ServerSocket(0, 512, InetAddress.getByName("127.0.0.1"));
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            Thread.ofPlatform().daemon().name(name + "-accept").start(this::acceptLoop);
        }

        private void acceptLoop() {
            while (!closed) {
                Socket s;
                try {
                    s = server.accept();
                } catch (IOException e) {
                    return; // closed
                }
                accepted.incrementAndGet();
                open.add(s);
                Thread.ofVirtual().start(() -> {
                    try (s) {
                        handle(s);
                    } catch (IOException ignored) {
                        // peer went away; nothing to record beyond what handle() did
                    } finally {
                        open.remove(s);
                    }
                });
            }
        }

        abstract void handle(Socket s) throws IOException;

        public int port() { return server.getLocalPort(); }

        public int accepted() { return accepted.get(); }

        @Override public void close() throws IOException {
            closed = true;
            server.close();
            for (Socket s : open) s.close();
        }
    }

    public static final class Capture extends Base {
        private final byte[] response;
        private final BlockingQueue<byte[]> captures = new LinkedBlockingQueue<>();

        Capture(byte[] response) {
            super("capture");
            this.response = response;
        }

        /** The complete bytes received on the next connection (available once that connection ended). */
        public String next(Duration timeout) throws InterruptedException {
            byte[] b = captures.poll(timeout.toMillis(), TimeUnit.MILLISECONDS);
            if (b == null) throw new AssertionError("capture server: no connection completed within " + timeout.toMillis() + " ms");
            return Bytes.ascii(b);
        }

        @Override void handle(Socket s) throws IOException {
            ByteArrayOutputStream got = new ByteArrayOutputStream();
            try {
                InputStream in = s.getInputStream();
                s.setSoTimeout(15_000);
                byte[] buf = new byte[8192];
                boolean replied = false;
                while (true) {
                    int n;
                    try {
                        n = in.read(buf);
                    } catch (SocketTimeoutException e) {
                        break;
                    }
                    if (n < 0) break;
                    got.write(buf, 0, n);
                    if (!replied && requestComplete(got.toByteArray())) {
                        OutputStream out = s.getOutputStream();
                        out.write(response);
                        out.flush();
                        replied = true;
                        // Keep reading briefly: anything arriving after the first request (pipelined
                        // bytes, or bytes arps should not have added) belongs in the capture too.
                        s.setSoTimeout(500);
                    }
                }
            } finally {
                captures.add(got.toByteArray());
            }
        }

        private static boolean requestComplete(byte[] b) {
            int end = Bytes.headEnd(b, b.length);
            if (end < 0) return false;
            long length = 0;
            for (String line : Bytes.ascii(b).substring(0, end).split("\r\n")) {
                int colon = line.indexOf(':');
                if (colon > 0 && line.substring(0, colon).trim().toLowerCase(Locale.ROOT).equals("content-length")) {
                    length = Long.parseLong(line.substring(colon + 1).trim());
                }
            }
            return b.length >= end + length;
        }
    }

    public static final class Echo extends Base {
        private final byte[] banner;

        Echo(byte[] banner) {
            super(banner.length > 0 ? "banner" : "echo");
            this.banner = banner;
        }

        @Override void handle(Socket s) throws IOException {
            s.setSoTimeout(60_000);
            OutputStream out = s.getOutputStream();
            if (banner.length > 0) {
                out.write(banner);
                out.flush();
            }
            InputStream in = s.getInputStream();
            byte[] buf = new byte[8192];
            for (int n; (n = in.read(buf)) > 0; ) {
                out.write(buf, 0, n);
                out.flush();
            }
        }
    }
}
