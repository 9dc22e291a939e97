package arp.tests.support;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Command-line options as an ordered map, so a test can override a default without passing the option
 * twice (picocli rejects a single-value option given twice).
 */
public final class Args {
    private final LinkedHashMap<String, String> opts = new LinkedHashMap<>(); // null value = flag
    private final List<String> repeated = new ArrayList<>(); // "--opt", "value" pairs of repeatable options

    public Args set(String opt, Object value) {
        opts.put(opt, String.valueOf(value));
        return this;
    }

    public Args flag(String opt) {
        opts.put(opt, null);
        return this;
    }

    /** One more value of a repeatable option (e.g. arpc {@code --token}); given after the others. */
    public Args add(String opt, Object value) {
        repeated.add(opt);
        repeated.add(String.valueOf(value));
        return this;
    }

    public Args remove(String opt) {
        opts.remove(opt);
        for (int i = repeated.size() - 2; i >= 0; i -= 2) {
            if (repeated.get(i).equals(opt)) {
                repeated.remove(i + 1);
                repeated.remove(i);
            }
        }
        return this;
    }

    public String get(String opt) { return opts.get(opt); }

    /** {@code "--opt", "value"} pairs; an option followed by another option (or nothing) is a flag. */
    public Args merge(String... tokens) {
        for (int i = 0; i < tokens.length; i++) {
            String t = tokens[i];
            if (i + 1 < tokens.length && !tokens[i + 1].startsWith("--")) set(t, tokens[++i]);
            else flag(t);
        }
        return this;
    }

    public List<String> toList() {
        List<String> out = new ArrayList<>();
        for (Map.Entry<String, String> e : opts.entrySet()) {
            out.add(e.getKey());
            if (e.getValue() != null) out.add(e.getValue());
        }
        out.addAll(repeated);
        return out;
    }

    @Override public String toString() { return String.join(" ", toList()); }
}
