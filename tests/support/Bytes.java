package arp.tests.support;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.Objects;

/**
 * Deterministic test data and hashing. Byte {@code i} of {@code stream(seed, size)} depends only on
 * (seed, i), never on how the stream is read in chunks, so the origin can stream it and a test can
 * recompute its hash without either side holding the whole payload in memory.
 */
public final class Bytes {
    private Bytes() {}

    /** SHA-256 (lower-case hex) and byte count of a stream. */
    public record Digest(String hex, long count) {
        @Override public String toString() { return hex + " " + count; }
    }

    public static InputStream stream(long seed, long size) { return new Gen(seed, size); }

    public static byte[] bytes(long seed, int size) {
        try {
            return stream(seed, size).readAllBytes();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    public static Digest expected(long seed, long size) {
        try {
            return sha256(stream(seed, size));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Reads {@code in} to EOF (does not close it). */
    public static Digest sha256(InputStream in) throws IOException {
        MessageDigest md = sha();
        byte[] buf = new byte[1 << 16];
        long count = 0;
        for (int n; (n = in.read(buf)) > 0; ) {
            md.update(buf, 0, n);
            count += n;
        }
        return new Digest(HexFormat.of().formatHex(md.digest()), count);
    }

    public static Digest sha256(byte[] data) {
        return new Digest(HexFormat.of().formatHex(sha().digest(data)), data.length);
    }

    public static byte[] ascii(String s) { return s.getBytes(StandardCharsets.ISO_8859_1); }

    public static String ascii(byte[] b) { return new String(b, StandardCharsets.ISO_8859_1); }

    /** Index just past the first CRLFCRLF, or -1. */
    public static int headEnd(byte[] b, int len) {
        for (int i = 3; i < len; i++) {
            if (b[i] == '\n' && b[i - 1] == '\r' && b[i - 2] == '\n' && b[i - 3] == '\r') return i + 1;
        }
        return -1;
    }

    private static MessageDigest sha() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    private static long mix(long z) { // splitmix64 finaliser
        z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9L;
        z = (z ^ (z >>> 27)) * 0x94d049bb133111ebL;
        return z ^ (z >>> 31);
    }

    private static final class Gen extends InputStream {
        private final long seed, size;
        private long pos;

        Gen(long seed, long size) { this.seed = seed; this.size = size; }

        private long word(long p) { return mix(seed * 0x9E3779B97F4A7C15L + (p >>> 3)); }

        @Override public int read() {
            if (pos >= size) return -1;
            long p = pos++;
            return (int) (word(p) >>> ((p & 7) << 3)) & 0xff;
        }

        @Override public int read(byte[] b, int off, int len) {
            Objects.checkFromIndexSize(off, len, b.length);
            if (len == 0) return 0;
            if (pos >= size) return -1;
            int n = (int) Math.min(len, size - pos);
            long w = word(pos);
            for (int i = 0; i < n; i++) {
                long p = pos + i;
                if ((p & 7) == 0) w = word(p);
                b[off + i] = (byte) (w >>> ((p & 7) << 3));
            }
            pos += n;
            return n;
        }
    }
}
