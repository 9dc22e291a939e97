///usr/bin/env jbang "$0" "$@" ; exit $?
//JAVA 21+
//DEPS org.junit.jupiter:junit-jupiter:6.1.3
//DEPS org.junit.platform:junit-platform-launcher:6.1.3
//DEPS info.picocli:picocli:4.7.7
//DEPS com.fasterxml.jackson.core:jackson-databind:2.23.0
//DEPS io.undertow:undertow-core:2.4.4.Final
//SOURCES ../Protocol.java ../Arps.java ../Arpc.java
//SOURCES support/*.java
//SOURCES *Test.java
//MAIN arp.tests.RunTests
package arp.tests;

import arp.tests.support.Deps;
import org.junit.platform.engine.TestExecutionResult;
import org.junit.platform.engine.discovery.ClassNameFilter;
import org.junit.platform.engine.discovery.DiscoverySelectors;
import org.junit.platform.engine.discovery.PackageNameFilter;
import org.junit.platform.engine.support.descriptor.ClassSource;
import org.junit.platform.engine.support.descriptor.MethodSource;
import org.junit.platform.launcher.Launcher;
import org.junit.platform.launcher.LauncherDiscoveryRequest;
import org.junit.platform.launcher.TestExecutionListener;
import org.junit.platform.launcher.TestIdentifier;
import org.junit.platform.launcher.TestPlan;
import org.junit.platform.launcher.core.LauncherDiscoveryRequestBuilder;
import org.junit.platform.launcher.core.LauncherFactory;
import org.junit.platform.launcher.listeners.SummaryGeneratingListener;
import org.junit.platform.launcher.listeners.TestExecutionSummary;

import java.nio.file.Path;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Pattern;

/**
 * Runs the end-to-end tests: {@code ./jbang tests/RunTests.java [ClassNameSubstring...]}.
 * First runs {@code tests/install-deps}, which installs the real clients some tests drive (PostgreSQL,
 * Chromium, playwright-core) when they are missing and is silent otherwise; if it fails, no test runs.
 * Discovers the test classes in the jar jbang built for this script (its own code source), prints one
 * line per test as it finishes, the failures' stack traces at the end, then {@code N passed, N failed}.
 * Exits 1 on any failure, or when no test ran (e.g. a filter that matches nothing).
 */
public class RunTests {
    public static void main(String[] args) throws Exception {
        String installFailure = Deps.install();
        if (installFailure != null) {
            System.err.println("Cannot run the tests: " + installFailure);
            System.exit(1);
        }
        Path root = Path.of(RunTests.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        LauncherDiscoveryRequestBuilder request = LauncherDiscoveryRequestBuilder.request()
                .selectors(DiscoverySelectors.selectClasspathRoots(Set.of(root)))
                .filters(PackageNameFilter.includePackageNames("arp")) // arp.tests, plus unit tests in package arp
                // Sequential: every test starts two JVMs, and the machine has two cores.
                .configurationParameter("junit.jupiter.execution.parallel.enabled", "false")
                .configurationParameter("junit.jupiter.testclass.order.default",
                        "org.junit.jupiter.api.ClassOrderer$ClassName")
                .configurationParameter("junit.jupiter.testmethod.order.default",
                        "org.junit.jupiter.api.MethodOrderer$MethodName")
                // A safety net under the per-operation timeouts: no test may hang the run.
                .configurationParameter("junit.jupiter.execution.timeout.default", "120 s")
                .configurationParameter("junit.jupiter.execution.timeout.thread.mode.default", "SEPARATE_THREAD");
        if (args.length > 0) {
            String[] patterns = new String[args.length];
            for (int i = 0; i < args.length; i++) patterns[i] = ".*" + Pattern.quote(args[i]) + ".*";
            request.filters(ClassNameFilter.includeClassNamePatterns(patterns));
            System.out.println("Filter: test classes whose name contains " + String.join(" or ", args));
        }
        LauncherDiscoveryRequest discovery = request.build();

        SummaryGeneratingListener summaryListener = new SummaryGeneratingListener();
        Launcher launcher = LauncherFactory.create();
        launcher.execute(discovery, summaryListener, new LinePrinter());
        TestExecutionSummary summary = summaryListener.getSummary();

        if (!summary.getFailures().isEmpty()) {
            System.out.println();
            System.out.println("==== Failures ====");
            for (TestExecutionSummary.Failure f : summary.getFailures()) {
                System.out.println();
                System.out.println("---- " + name(f.getTestIdentifier()));
                f.getException().printStackTrace(System.out);
            }
            System.out.println();
        }
        long passed = summary.getTestsSucceededCount();
        long failed = summary.getTestsFailedCount() + summary.getContainersFailedCount();
        long skipped = summary.getTestsSkippedCount() + summary.getTestsAbortedCount();
        System.out.println(passed + " passed, " + failed + " failed" + (skipped > 0 ? ", " + skipped + " skipped" : ""));
        System.out.flush();
        boolean ranNothing = summary.getTestsSucceededCount() + summary.getTestsFailedCount() == 0;
        if (ranNothing) System.err.println("No test ran.");
        System.exit(failed > 0 || ranNothing ? 1 : 0);
    }

    /** {@code SimpleClassName.method()} (plus the display name for parameterised invocations). */
    static String name(TestIdentifier id) {
        if (id.getSource().orElse(null) instanceof MethodSource m) {
            String cls = m.getClassName().substring(m.getClassName().lastIndexOf('.') + 1);
            String method = m.getMethodName() + "()";
            return cls + "." + method + (id.getDisplayName().equals(method) ? "" : " " + id.getDisplayName());
        }
        if (id.getSource().orElse(null) instanceof ClassSource c) {
            return c.getClassName().substring(c.getClassName().lastIndexOf('.') + 1);
        }
        return id.getDisplayName();
    }

    /** One line per finished test, printed as it happens so a slow run shows progress. */
    static final class LinePrinter implements TestExecutionListener {
        private final Map<String, Long> started = new ConcurrentHashMap<>();

        @Override public void testPlanExecutionStarted(TestPlan plan) {
            System.out.println("Running " + plan.countTestIdentifiers(TestIdentifier::isTest) + " tests");
        }

        @Override public void executionStarted(TestIdentifier id) {
            started.put(id.getUniqueId(), System.nanoTime());
        }

        @Override public void executionSkipped(TestIdentifier id, String reason) {
            System.out.println("SKIP " + name(id) + ": " + reason);
        }

        @Override public void executionFinished(TestIdentifier id, TestExecutionResult result) {
            Long t0 = started.remove(id.getUniqueId());
            String secs = t0 == null ? "" : String.format(Locale.ROOT, " (%.1fs)", (System.nanoTime() - t0) / 1e9);
            switch (result.getStatus()) {
                case SUCCESSFUL -> {
                    if (id.isTest()) System.out.println("PASS " + name(id) + secs);
                }
                case ABORTED -> System.out.println("SKIP " + name(id) + ": " + message(result));
                case FAILED -> System.out.println("FAIL " + name(id) + ": " + message(result));
            }
            System.out.flush();
        }

        private static String message(TestExecutionResult result) {
            Throwable t = result.getThrowable().orElse(null);
            if (t == null) return "(no exception)";
            String m = t.getMessage() == null ? t.getClass().getName() : t.getClass().getSimpleName() + ": " + t.getMessage();
            m = m.replaceAll("\\s*\\R\\s*", " | ");
            return m.length() > 400 ? m.substring(0, 400) + "..." : m;
        }
    }
}
