package arp.tests.support;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Starts {@code arp.Arps} / {@code arp.Arpc} as real child JVMs: the same java binary and the same
 * class path as this test JVM (under jbang that is the jar it built from //SOURCES plus the //DEPS).
 */
public final class Procs {
    private Procs() {}

    public static final String ARPS_MAIN = "arp.Arps";
    public static final String ARPC_MAIN = "arp.Arpc";

    /**
     * Options for the child JVMs: fast start-up matters more here than peak JIT throughput (every test
     * starts two JVMs on a 2-core machine). Override with -Darp.test.jvmArgs="...".
     */
    private static final String JVM_ARGS = System.getProperty("arp.test.jvmArgs",
            "-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto");

    public static String javaExecutable() {
        return ProcessHandle.current().info().command()
                .orElse(Path.of(System.getProperty("java.home"), "bin", "java").toString());
    }

    public static List<String> javaCommand(String mainClass, List<String> args) {
        List<String> cmd = new ArrayList<>();
        cmd.add(javaExecutable());
        for (String a : JVM_ARGS.trim().split("\\s+")) {
            if (!a.isEmpty()) cmd.add(a);
        }
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add(mainClass);
        cmd.addAll(args);
        return cmd;
    }

    public static Proc startJava(String name, String mainClass, List<String> args, Map<String, String> env) {
        return Proc.start(name, javaCommand(mainClass, args), null, env);
    }
}
