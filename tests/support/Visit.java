package arp.tests.support;

import java.io.IOException;

/**
 * A visitor's GET on a fresh connection with {@code Connection: close}. The first request's token routes
 * the whole public connection, so a test that visits several tunnels (or one that is replaced) must not
 * let a pooling HTTP client reuse a connection spliced to another client.
 */
public final class Visit {
    private Visit() {}

    public static RawHttp.Response get(int publicPort, String target) throws IOException {
        return RawHttp.exchange(publicPort, "GET " + target + " HTTP/1.1\r\nHost: visitor.test\r\nConnection: close\r\n\r\n");
    }

    /** The first line of the answering service's body on a 200, else {@code <status> <body>}. */
    public static String firstLine(int publicPort, String target) throws IOException {
        RawHttp.Response r = get(publicPort, target);
        return r.status() == 200 ? r.bodyText().lines().findFirst().orElse("") : r.status() + " " + r.bodyText();
    }
}
