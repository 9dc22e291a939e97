package arp.tests.support;

import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * The chunk framing of a reusable data connection (feature "reuse"): after StartProxy (arps → arpc) and
 * ProxyStarted (arpc → arps), each direction is a sequence of chunks, a 4-byte big-endian length n and
 * n bytes (1 ≤ n ≤ {@link #MAX}); a chunk of length 0 ends that direction.
 */
public final class Chunks {
    private Chunks() {}

    /** Largest chunk either side may send. */
    public static final int MAX = 65532;

    /** The end-of-direction chunk. */
    public static byte[] end() { return new byte[4]; }

    /** Just a 4-byte length header, any value (for malformed-input tests). */
    public static byte[] header(int length) { return ByteBuffer.allocate(4).putInt(length).array(); }

    /** One chunk carrying {@code data} (1..MAX bytes). */
    public static byte[] chunk(byte[] data) {
        if (data.length < 1 || data.length > MAX) throw new IllegalArgumentException("chunk of " + data.length + " bytes");
        return ByteBuffer.allocate(4 + data.length).putInt(data.length).put(data).array();
    }

    public static byte[] chunk(String ascii) { return chunk(Bytes.ascii(ascii)); }

    /** {@code data} cut into chunks of at most {@code size} bytes, concatenated (no end chunk). */
    public static byte[] split(byte[] data, int size) {
        ByteArrayOutputStream b = new ByteArrayOutputStream(data.length + 4 * (data.length / size + 1));
        for (int off = 0; off < data.length; off += size) {
            int n = Math.min(size, data.length - off);
            b.writeBytes(header(n));
            b.write(data, off, n);
        }
        return b.toByteArray();
    }

    /** Concatenation of byte arrays (to send several chunks, or a frame and chunks, in one write). */
    public static byte[] concat(byte[]... parts) {
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        for (byte[] p : parts) b.writeBytes(p);
        return b.toByteArray();
    }

    /** A chunk length outside 0..MAX, as the peer sent it. */
    public static final class BadChunk extends IOException {
        public final int length;

        BadChunk(int length) {
            super("chunk length " + length + " outside 0.." + MAX);
            this.length = length;
        }
    }

    /**
     * One chunk's data; an empty array is the end chunk. A length outside 0..MAX is {@link BadChunk}; EOF
     * before or inside a chunk is {@link EOFException} (a stream that ends without its end chunk).
     */
    public static byte[] read(DataInputStream in) throws IOException {
        int n;
        try {
            n = in.readInt();
        } catch (EOFException e) {
            throw new EOFException("connection closed where a chunk header was due (no end chunk)");
        }
        if (n < 0 || n > MAX) throw new BadChunk(n);
        byte[] b = in.readNBytes(n);
        if (b.length < n) throw new EOFException("connection closed inside a chunk (" + b.length + " of " + n + " bytes)");
        return b;
    }

    /** Per-stream statistics for tests that check how data was cut. */
    public static final class Stats {
        public long chunks, bytes;
        public int smallest = Integer.MAX_VALUE, largest;

        public void add(int n) {
            chunks++;
            bytes += n;
            smallest = Math.min(smallest, n);
            largest = Math.max(largest, n);
        }

        @Override public String toString() {
            return chunks + " chunks, " + bytes + " bytes, sizes " + (chunks == 0 ? "-" : smallest + ".." + largest);
        }
    }

    /** Reads chunks up to and including the end chunk; returns the data (at most {@code limit} bytes kept). */
    public static byte[] readUntilEnd(DataInputStream in, int limit, Stats stats) throws IOException {
        ByteArrayOutputStream all = new ByteArrayOutputStream();
        while (true) {
            byte[] c = read(in);
            if (c.length == 0) return all.toByteArray();
            if (stats != null) stats.add(c.length);
            if (all.size() + c.length > limit) throw new IOException("more than " + limit + " bytes before the end chunk");
            all.writeBytes(c);
        }
    }
}
