package arp.tests.support;

import java.io.BufferedInputStream;
import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketException;
import java.net.SocketTimeoutException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Locale;

/**
 * HTTP/1.1 over a plain socket, for what an HTTP client library hides: exact bytes, pipelining, 100-continue,
 * chunked uploads, half-sent heads, and checking that a server closed a connection.
 */
public final class RawHttp {
    private RawHttp() {}

    public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(20);

    public static Conn connect(int port) throws IOException {
        Socket s = new Socket();
        s.connect(new InetSocketAddress("127.0.0.1", port), 5_000);
        s.setSoTimeout((int) DEFAULT_TIMEOUT.toMillis());
        s.setTcpNoDelay(true);
        return new Conn(s);
    }

    /** Wraps an already connected socket (e.g. a fake client's data connection). */
    public static Conn wrap(Socket s) throws IOException {
        s.setSoTimeout((int) DEFAULT_TIMEOUT.toMillis());
        return new Conn(s);
    }

    /** One request on a fresh connection, one response back. */
    public static Response exchange(int port, String request) throws IOException {
        try (Conn c = connect(port)) {
            c.send(request);
            return c.read();
        }
    }

    /** A port with nothing listening on it (bound, then released). */
    public static int closedPort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getByName("127.0.0.1"))) {
            return s.getLocalPort();
        }
    }

    public static boolean isListening(int port) {
        try (Socket s = new Socket()) {
            s.connect(new InetSocketAddress("127.0.0.1", port), 500);
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    public record Response(int status, String head, byte[] body) {
        public String bodyText() { return new String(body, StandardCharsets.UTF_8); }

        /** First value of a header, case-insensitive name, or null. */
        public String header(String name) {
            for (String line : head.split("\r\n")) {
                int colon = line.indexOf(':');
                if (colon > 0 && line.substring(0, colon).trim().equalsIgnoreCase(name)) return line.substring(colon + 1).trim();
            }
            return null;
        }

        @Override public String toString() {
            String b = bodyText();
            return head.strip() + "\n\n" + (b.length() > 300 ? b.substring(0, 300) + "..." : b);
        }
    }

    public static final class Conn implements AutoCloseable {
        public final Socket socket;
        private final InputStream in;
        private final OutputStream out;

        Conn(Socket socket) throws IOException {
            this.socket = socket;
            this.in = new BufferedInputStream(socket.getInputStream());
            this.out = socket.getOutputStream();
        }

        public int localPort() { return socket.getLocalPort(); }

        public Conn send(String ascii) throws IOException { return send(Bytes.ascii(ascii)); }

        public Conn send(byte[] b) throws IOException {
            out.write(b);
            out.flush();
            return this;
        }

        public OutputStream out() { return out; }

        public InputStream in() { return in; }

        public Conn timeout(Duration d) throws IOException {
            socket.setSoTimeout((int) d.toMillis());
            return this;
        }

        /** One response (a 1xx comes back on its own, with no body). */
        public Response read() throws IOException { return RawHttp.readResponse(in); }

        /** Skips interim 1xx responses. */
        public Response readFinal() throws IOException {
            Response r;
            do r = read(); while (r.status() / 100 == 1);
            return r;
        }

        public byte[] readExactly(int n) throws IOException {
            byte[] b = in.readNBytes(n);
            if (b.length < n) throw new EOFException("connection closed after " + b.length + " of " + n + " bytes: " + Bytes.ascii(b));
            return b;
        }

        /**
         * Passes if the peer closes the connection (EOF or reset) within {@code timeout}, discarding any
         * bytes it sends first; fails if the connection is still open by then. Returns what was received.
         */
        public String assertClosedByPeer(Duration timeout, String what) throws IOException {
            ByteArrayOutputStream got = new ByteArrayOutputStream();
            long deadline = System.nanoTime() + timeout.toNanos();
            byte[] buf = new byte[8192];
            while (true) {
                long left = (deadline - System.nanoTime()) / 1_000_000;
                if (left <= 0) throw new AssertionError(what + ": connection still open after " + timeout.toMillis() + " ms");
                socket.setSoTimeout((int) Math.max(1, left));
                try {
                    int n = in.read(buf);
                    if (n < 0) return Bytes.ascii(got.toByteArray());
                    if (got.size() < 1 << 20) got.write(buf, 0, n);
                } catch (SocketTimeoutException e) {
                    // loop re-checks the deadline
                } catch (SocketException e) {
                    return Bytes.ascii(got.toByteArray()); // reset counts as closed
                }
            }
        }

        @Override public void close() throws IOException { socket.close(); }
    }

    public static Response readResponse(InputStream in) throws IOException {
        String head = Bytes.ascii(readHead(in));
        String statusLine = head.substring(0, head.indexOf("\r\n"));
        String[] parts = statusLine.split(" ", 3);
        if (parts.length < 2 || !parts[0].startsWith("HTTP/")) throw new IOException("not an HTTP response: " + statusLine);
        int status = Integer.parseInt(parts[1]);
        Response headOnly = new Response(status, head, new byte[0]);
        if (status / 100 == 1 || status == 204 || status == 304) return headOnly;
        String te = headOnly.header("Transfer-Encoding");
        String cl = headOnly.header("Content-Length");
        byte[] body;
        if (te != null && te.toLowerCase(Locale.ROOT).contains("chunked")) body = readChunked(in);
        else if (cl != null) {
            int n = Integer.parseInt(cl);
            body = in.readNBytes(n);
            if (body.length < n) throw new EOFException("body cut short: " + body.length + " of " + n + " bytes");
        } else body = in.readAllBytes(); // delimited by close
        return new Response(status, head, body);
    }

    /** Bytes up to and including the blank line; EOF before it is an error. */
    public static byte[] readHead(InputStream in) throws IOException {
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        int last4 = 0; // the last four bytes read, packed
        while (last4 != 0x0d0a0d0a) {
            int c = in.read();
            if (c < 0) {
                throw new EOFException(b.size() == 0 ? "connection closed without a response"
                        : "connection closed inside a head: " + Bytes.ascii(b.toByteArray()));
            }
            b.write(c);
            if (b.size() > 256 * 1024) throw new IOException("head too long");
            last4 = (last4 << 8) | c;
        }
        return b.toByteArray();
    }

    private static byte[] readChunked(InputStream in) throws IOException {
        ByteArrayOutputStream body = new ByteArrayOutputStream();
        while (true) {
            String sizeLine = readLine(in);
            int semi = sizeLine.indexOf(';');
            int size = Integer.parseInt((semi >= 0 ? sizeLine.substring(0, semi) : sizeLine).trim(), 16);
            if (size == 0) {
                while (!readLine(in).isEmpty()) { /* trailers */ }
                return body.toByteArray();
            }
            byte[] chunk = in.readNBytes(size);
            if (chunk.length < size) throw new EOFException("chunk cut short");
            body.write(chunk);
            readLine(in);
        }
    }

    private static String readLine(InputStream in) throws IOException {
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        for (int c; (c = in.read()) != '\n'; ) {
            if (c < 0) throw new EOFException("EOF in chunked body");
            if (c != '\r') b.write(c);
        }
        return Bytes.ascii(b.toByteArray());
    }
}
