package arp.tests.support;

import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManager;
import javax.net.ssl.X509TrustManager;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;

/** Certificates for the TLS tests (made with the real openssl) and looking at what a port presents. */
public final class Tls {
    private Tls() {}

    /** A certificate and its key as PEM files; {@code rsaKey} is the same key as PKCS#1 ("RSA PRIVATE KEY"). */
    public record Pem(Path cert, Path key, Path rsaKey) {}

    /**
     * A self-signed RSA certificate for CN=localhost with subjectAltName DNS:localhost and IP:127.0.0.1,
     * its key as PKCS#8 ("PRIVATE KEY", what OpenSSL 3 writes) and as PKCS#1.
     */
    public static Pem selfSigned(TestEnv env, String name) {
        return selfSigned(env, name, "localhost", "DNS:localhost,IP:127.0.0.1");
    }

    /** As {@link #selfSigned(TestEnv, String)} for another common name and subjectAltName. */
    public static Pem selfSigned(TestEnv env, String name, String cn, String subjectAltName) {
        Path dir = env.dir("pem-" + name);
        Path cert = dir.resolve("cert.pem"), key = dir.resolve("key.pem"), rsa = dir.resolve("key-rsa.pem");
        run(env, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", key.toString(),
                "-out", cert.toString(), "-subj", "/CN=" + cn, "-addext", "subjectAltName=" + subjectAltName);
        run(env, "openssl", "rsa", "-in", key.toString(), "-traditional", "-out", rsa.toString());
        try {
            String k = Files.readString(key), r = Files.readString(rsa);
            if (!k.contains("-----BEGIN PRIVATE KEY-----")) throw new AssertionError("openssl wrote no PKCS#8 key:\n" + k);
            if (!r.contains("-----BEGIN RSA PRIVATE KEY-----")) throw new AssertionError("openssl wrote no PKCS#1 key:\n" + r);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return new Pem(cert, key, rsa);
    }

    private static void run(TestEnv env, String... cmd) {
        Proc p = env.start(cmd[0], List.of(cmd), null);
        int code = p.awaitExit(Duration.ofSeconds(60));
        if (code != 0) throw new AssertionError(String.join(" ", cmd) + " exited with " + code + ":\n" + p.stderrText());
    }

    /** {@code sha256:<64 lower-case hex>} of a certificate's DER encoding. */
    public static String fingerprint(Certificate cert) {
        try {
            return "sha256:" + HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(cert.getEncoded()));
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException(e);
        }
    }

    public static X509Certificate readCert(Path pem) {
        try (InputStream in = Files.newInputStream(pem)) {
            return (X509Certificate) CertificateFactory.getInstance("X.509").generateCertificate(in);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException(e);
        }
    }

    public static String fingerprint(Path pem) { return fingerprint(readCert(pem)); }

    /** Connects to 127.0.0.1:{@code port}, trusting anything, and returns the leaf certificate it presents. */
    public static X509Certificate peerCertificate(int port) throws IOException {
        try (SSLSocket s = (SSLSocket) trustAll().getSocketFactory().createSocket()) {
            s.connect(new InetSocketAddress("127.0.0.1", port), 5_000);
            s.setSoTimeout(10_000);
            s.startHandshake();
            return (X509Certificate) s.getSession().getPeerCertificates()[0];
        }
    }

    /** True when a TLS handshake with 127.0.0.1:{@code port} completes. */
    public static boolean speaksTls(int port) {
        try {
            peerCertificate(port);
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    public static SSLContext trustAll() {
        try {
            SSLContext ctx = SSLContext.getInstance("TLS");
            ctx.init(null, new TrustManager[] {new X509TrustManager() {
                @Override public void checkClientTrusted(X509Certificate[] chain, String authType) {}

                @Override public void checkServerTrusted(X509Certificate[] chain, String authType) {}

                @Override public X509Certificate[] getAcceptedIssuers() { return new X509Certificate[0]; }
            }}, null);
            return ctx;
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException(e);
        }
    }

    /** A plain socket's opposite: a TLS socket to 127.0.0.1:{@code port} trusting anything, handshake done. */
    public static Socket connectTrustingAll(int port) throws IOException {
        SSLSocket s = (SSLSocket) trustAll().getSocketFactory().createSocket();
        s.connect(new InetSocketAddress("127.0.0.1", port), 5_000);
        s.setSoTimeout(10_000);
        s.startHandshake();
        return s;
    }
}
