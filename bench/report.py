#!/usr/bin/env python3
"""bench/run's report: RESULTS.md, chart.svg and raw.json from what the run measured.

    report.py --machine-info JAVA            prints the machine description as JSON
    report.py --dir TMP --out DIR --command "bench/run …" --elapsed SECONDS --arp-tcp 0|1
    report.py --from-raw bench/results/raw.json    renders RESULTS.md and chart.svg again (same dir)

TMP holds machine.json, measure.json (measure.py), memory-pool{1,8}.json (holdconns.py) and
startup.json (startup.py). The Markdown tables are also printed on stdout.
"""
import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import time
from html import escape

PATH_LABELS = {"direct": "direct", "socat": "socat", "ssh-R": "ssh -R",
               "arp-pool1": "arp pool 1", "arp-pool8": "arp pool 8"}
ARP_PATHS = ("arp-pool1", "arp-pool8")

# (test, field, title, unit, higher is better)
FIGURES = [
    ("iperf_fwd", "gbps", "iperf3 single stream, client → server", "Gbit/s", True),
    ("iperf_rev", "gbps", "iperf3 single stream, reverse (-R)", "Gbit/s", True),
    ("http_1gib", "gbps", "1 GiB HTTP download (curl)", "Gbit/s", True),
    ("wrk_keepalive", "rps", "HTTP keep-alive (wrk -t2 -c50 -d10s)", "req/s", True),
    ("wrk_keepalive", "p50_ms", "HTTP keep-alive p50", "ms", False),
    ("wrk_keepalive", "p99_ms", "HTTP keep-alive p99", "ms", False),
    ("wrk_close", "rps", "HTTP new connection per request (Connection: close)", "req/s", True),
    ("wrk_close", "p50_ms", "new connection p50", "ms", False),
    ("wrk_close", "p99_ms", "new connection p99", "ms", False),
    ("latency", "p50_ms", "single request at low load (sequential, new connection each) p50", "ms", False),
    ("latency", "p99_ms", "single request at low load p99", "ms", False),
]

# Tables: one per test; its figures become column pairs (value, × direct).
TABLES = [
    ("iperf3, single stream (`iperf3 -t 5 -J`, `end.sum_received`)", [("iperf_fwd", "gbps", "forward Gbit/s"),
                                                                      ("iperf_rev", "gbps", "reverse (-R) Gbit/s")]),
    ("1 GiB HTTP download (`curl -o /dev/null`)", [("http_1gib", "gbps", "Gbit/s")]),
    ("HTTP keep-alive, small file (`wrk -t2 -c50 -d10s --latency`)",
     [("wrk_keepalive", "rps", "req/s"), ("wrk_keepalive", "p50_ms", "p50 ms"), ("wrk_keepalive", "p99_ms", "p99 ms")]),
    ("HTTP new connection per request (same, `-H 'Connection: close'`)",
     [("wrk_close", "rps", "req/s"), ("wrk_close", "p50_ms", "p50 ms"), ("wrk_close", "p99_ms", "p99 ms")]),
    ("Single request at low load (sequential, 10 ms apart, connect + request + response)",
     [("latency", "p50_ms", "p50 ms"), ("latency", "p99_ms", "p99 ms")]),
]

# Issue 3's reference machine: direct and the best established tunnel, medians.
REF = {"direct_gbps": 34.0, "best_gbps": 11.0,
       "direct_ka": 108_000, "best_ka": 47_500, "best_ka_p99": 1.8,
       "direct_close": 33_000, "best_close": 7_700, "close_p99": 10.0}


# --------------------------------------------------------------------------------------------
# machine description


def sh(cmd):
    try:
        p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20)
        return (p.stdout + p.stderr).strip()
    except subprocess.TimeoutExpired:
        return "?"


def first_line(text, pattern=""):
    for line in text.splitlines():
        if re.search(pattern, line):
            return line.strip()
    return "?"


def machine_info(java):
    meminfo = open("/proc/meminfo").read()
    os_release = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', open("/etc/os-release").read(), re.M))
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": first_line(sh("lscpu"), "Model name").split(":", 1)[-1].strip(),
        "cores": os.cpu_count(),
        "memory_gib": round(int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1)) / 2**20, 1),
        "os": os_release.get("PRETTY_NAME", "?"),
        "kernel": platform.release(),
        "jdk": " / ".join(sh(f"'{java}' -version").splitlines()[:2]),
        "jvm_options": os.environ.get("ARP_JVM_OPTS_TEXT", "(JVM defaults)"),
        "nginx": sh("nginx -v"),
        "wrk": first_line(sh("wrk -v"), "wrk"),
        "iperf3": first_line(sh("iperf3 --version")),
        "socat": first_line(sh("socat -V"), "socat version"),
        "ssh": sh("ssh -V"),
        "curl": first_line(sh("curl --version")),
        "python": platform.python_version(),
        "fd_limit": sh("ulimit -Hn"),
        "arp": sh(f"git -C '{os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}' describe --always --dirty"),
    }


# --------------------------------------------------------------------------------------------
# numbers


def values(measure, path, test, field):
    return [r[field] for r in measure["results"][path][test] if field in r]


def stats(measure, path, test, field):
    v = values(measure, path, test, field)
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def fmt(x, unit):
    if x is None:
        return "n/a"
    if unit == "req/s":
        return f"{x / 1000:.1f} k"
    if unit == "ms":
        return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 10 else f"{x:.1f}"
    if unit in ("Gbit/s", "s"):
        return f"{x:.2f}"
    return f"{x:.1f}"


def cell(s, unit, reps):
    if s is None:
        return "n/a"
    text = f"{fmt(s['median'], unit)} ({fmt(s['min'], unit)}–{fmt(s['max'], unit)})"
    return text if s["n"] == reps else f"{text} [{s['n']}/{reps} reps]"


def ratio(s, d):
    if s is None or d is None or not d["median"]:
        return "n/a"
    return f"{s['median'] / d['median']:.2f}×"


def unit_of(field):
    return {"gbps": "Gbit/s", "rps": "req/s"}.get(field, "ms")


DISTURBED = 0.3  # cores used by processes the benchmark did not start (as in measure.py)


def problems(measure, quiet):
    """Errors, non-2xx answers and disturbed tests: a fast but failing or skewed path must not pass
    unnoticed."""
    notes = [f"the machine was not idle before the {label} phase (waited {q['waited_s']} s for 3 idle seconds"
             f" in a row; the last one had {q['busy_cores']} cores busy)" for label, q in quiet.items() if not q["quiet"]]
    for path, tests in (measure or {}).get("results", {}).items():
        for test, runs in tests.items():
            for i, r in enumerate(runs, 1):
                if r.get("cpu_cores", {}).get("other", 0) > DISTURBED:
                    again = " (even when repeated)" if r.get("repeated") else ""
                    notes.append(f"{path} {test} rep {i}: other processes used {r['cpu_cores']['other']} cores"
                                 f" meanwhile{again}")
                if "error" in r and "no raw TCP port" not in r["error"]:
                    notes.append(f"{path} {test} rep {i}: {r['error']}")
                if r.get("non2xx"):
                    notes.append(f"{path} {test} rep {i}: {r['non2xx']} non-2xx answers")
                if r.get("errors"):
                    notes.append(f"{path} {test} rep {i}: {r['errors']} failed requests")
    return notes


# --------------------------------------------------------------------------------------------
# Markdown


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def metric_tables(measure):
    reps, paths, parts = measure["reps"], measure["paths"], []
    for title, cols in TABLES:
        header = ["path"]
        for _, _, label in cols:
            header += [f"{label}: median (min–max)", "× direct"]
        rows = []
        for p in paths:
            row = [PATH_LABELS.get(p, p)]
            for test, field, _ in cols:
                s, d = stats(measure, p, test, field), stats(measure, "direct", test, field)
                row += [cell(s, unit_of(field), reps), ratio(s, d)]
            rows.append(row)
        parts.append(f"### {title}\n\n{md_table(header, rows)}")
    return "\n\n".join(parts)


def cpu_table(measure):
    tests = [("iperf_fwd", "iperf3 →"), ("iperf_rev", "iperf3 ←"), ("http_1gib", "1 GiB"),
             ("wrk_keepalive", "keep-alive"), ("wrk_close", "new conn.")]
    rows = []
    for p in measure["paths"]:
        row = [PATH_LABELS.get(p, p)]
        for test, _ in tests:
            runs = [r for r in measure["results"][p][test] if "error" not in r]
            if not runs:
                row.append("n/a")
                continue
            med = {k: statistics.median(r["cpu_cores"].get(k, 0) for r in runs) for k in ("client", "tunnel", "origin", "other")}
            row.append(f"{med['client']:.2f} / {med['tunnel']:.2f} / {med['origin']:.2f} / {med['other']:.2f}")
        rows.append(row)
    return md_table(["path"] + [t for _, t in tests], rows)


def memory_table(memory):
    rows = []
    for pool, m in memory.items():
        for proc in ("arps", "arpc"):
            row = [f"arp pool {pool}", proc, f"{m['idle'][proc]['rss_mb']:.0f}"]
            row += [f"{s['processes'][proc]['rss_mb']:.0f}" for s in m["steps"]]
            row.append(f"{m['after_close'][proc]['rss_mb']:.0f}")
            rows.append(row)
        total = [f"arp pool {pool}", "**together**", f"{sum(m['idle'][p]['rss_mb'] for p in ('arps', 'arpc')):.0f}"]
        total += [f"**{sum(s['processes'][p]['rss_mb'] for p in ('arps', 'arpc')):.0f}**" for s in m["steps"]]
        total.append(f"{sum(m['after_close'][p]['rss_mb'] for p in ('arps', 'arpc')):.0f}")
        rows.append(total)
    any_m = next(iter(memory.values()))
    header = ["path", "process", "idle MB"] + [f"{s['target']:,} conns MB" for s in any_m["steps"]] + ["after closing MB"]
    held = []
    for pool, m in memory.items():
        for s in m["steps"]:
            fails = ", ".join(f"{k} {v}" for k, v in s["failures"].items()) or "none"
            held.append(f"- pool {pool}, {s['target']:,} wanted: {s['held']:,} held (opened in {s['open_seconds']} s; "
                        f"failures: {fails}; a second request on {s['rechecked_ok']} of them answered 200; "
                        f"fds: arps {s['processes']['arps']['fds']}, arpc {s['processes']['arpc']['fds']})")
    return md_table(header, rows) + "\n\n" + "\n".join(held)


def startup_table(startup):
    rows = []
    for label, name in (("jbang", "`./jbang Arps.java` (cached)"), ("fatjar", "`java -jar build/arps.jar` (a copy)")):
        v = startup.get(label, [])
        if v:
            rows.append([name, f"{statistics.median(v):.3f}", f"{min(v):.3f}–{max(v):.3f}", str(len(v))])
    return md_table(["command", "median s", "min–max s", "runs"], rows)


# --------------------------------------------------------------------------------------------
# targets


def med(measure, path, test, field):
    s = stats(measure, path, test, field)
    return s["median"] if s else None


def targets(measure, memory, startup):
    """(target, path, measured, required this run, issue's absolute, met) rows."""
    rows = []

    def add(target, path, measured, unit, bound, higher, absolute):
        if measured is None or bound is None:
            met = "n/a"
        else:
            met = "**met**" if (measured >= bound if higher else measured <= bound) else "not met"
        rel = "≥" if higher else "≤"
        rows.append([target, PATH_LABELS.get(path, path), fmt(measured, unit) + " " + unit,
                     f"{rel} {fmt(bound, unit)} {unit}" if bound is not None else "n/a", absolute, met])

    def scaled(path_metric, factor):
        d = med(measure, "direct", *path_metric)
        return d * factor if d else None

    bulk = 1.2 * REF["best_gbps"] / REF["direct_gbps"]
    ka = 1.2 * REF["best_ka"] / REF["direct_ka"]
    close = 1.5 * REF["best_close"] / REF["direct_close"]
    d_ka = med(measure, "direct", "wrk_keepalive", "rps") if measure else None
    d_close = med(measure, "direct", "wrk_close", "rps") if measure else None
    # p99 bounds scale inversely with this machine's speed relative to the reference machine
    ka_p99 = REF["best_ka_p99"] * REF["direct_ka"] / d_ka if d_ka else None
    close_p99 = REF["close_p99"] * REF["direct_close"] / d_close if d_close else None
    for p in ARP_PATHS if measure else ():
        add("bulk: iperf3 → ≥ 1.2 × best (= 0.39 × direct)", p, med(measure, p, "iperf_fwd", "gbps"), "Gbit/s",
            scaled(("iperf_fwd", "gbps"), bulk), True, "≥ 13.2 Gbit/s")
        add("bulk: iperf3 ← (-R), same", p, med(measure, p, "iperf_rev", "gbps"), "Gbit/s",
            scaled(("iperf_rev", "gbps"), bulk), True, "≥ 13.2 Gbit/s")
        add("bulk: 1 GiB HTTP, same ratio", p, med(measure, p, "http_1gib", "gbps"), "Gbit/s",
            scaled(("http_1gib", "gbps"), bulk), True, "≥ 13.2 Gbit/s")
        add("keep-alive req/s ≥ 1.2 × best (= 0.53 × direct)", p, med(measure, p, "wrk_keepalive", "rps"), "req/s",
            scaled(("wrk_keepalive", "rps"), ka), True, "≥ 57.0 k req/s")
        add("keep-alive p99 no worse than best (1.8 ms × 108 k / direct)", p,
            med(measure, p, "wrk_keepalive", "p99_ms"), "ms", ka_p99, False, "≤ 1.8 ms")
        add("new-connection req/s ≥ 1.5 × best (= 0.35 × direct)", p, med(measure, p, "wrk_close", "rps"), "req/s",
            scaled(("wrk_close", "rps"), close), True, "≥ 11.6 k req/s")
        add("new-connection p99 ≤ 10 ms (× 33 k / direct)", p, med(measure, p, "wrk_close", "p99_ms"), "ms",
            close_p99, False, "≤ 10 ms")
    for pool, m in memory.items():
        p = f"arp-pool{pool}"
        last = m["steps"][-1]
        together = sum(last["processes"][x]["rss_mb"] for x in ("arps", "arpc"))
        held = f" ({last['held']:,} held)" if last["held"] != last["target"] else ""
        add(f"{last['target']:,} open connections: arps + arpc RSS < 300 MB{held}", p, together, "MB", 300, False, "< 300 MB")
        add("idle arps RSS < 64 MB", p, m["idle"]["arps"]["rss_mb"], "MB", 64, False, "< 64 MB")
    if startup.get("fatjar"):
        add("fat jar ready < 0.5 s", "arp", statistics.median(startup["fatjar"]), "s", 0.5, False, "< 0.5 s")
    if startup.get("jbang"):
        add("cached jbang run ready < 1 s", "arp", statistics.median(startup["jbang"]), "s", 1.0, False, "< 1 s")
    return rows


# --------------------------------------------------------------------------------------------
# chart


COLORS = {"direct": "#7f7f7f", "socat": "#8c6bb1", "ssh-R": "#e6550d", "arp-pool1": "#6baed6", "arp-pool8": "#08519c"}
CHART_FIGURES = [f for f in FIGURES if f[1] in ("gbps", "rps")] + [
    f for f in FIGURES if (f[0], f[1]) in (("wrk_keepalive", "p99_ms"), ("wrk_close", "p99_ms"), ("latency", "p50_ms"))]


def chart(measure):
    """Grouped horizontal bars: per figure, each path's median as a multiple of direct's."""
    paths = measure["paths"]
    left, bar_w, bar_h, gap, width = 250, 480, 16, 3, 900
    y = 70
    body = []
    for test, field, title, unit, higher in CHART_FIGURES:
        d = stats(measure, "direct", test, field)
        ratios = {}
        for p in paths:
            s = stats(measure, p, test, field)
            ratios[p] = (s["median"] / d["median"], s["median"]) if s and d and d["median"] else None
        scale = max([1.0] + [r[0] for r in ratios.values() if r])
        better = "higher is better" if higher else "lower is better"
        body.append(f'<text x="10" y="{y}" class="t">{escape(title)} — × direct, {better}</text>')
        y += 8
        top, line_at = y, len(body)
        one = left + bar_w / scale  # where direct's value is, marked by a dashed line
        for p in paths:
            r = ratios[p]
            body.append(f'<text x="{left - 8}" y="{y + bar_h - 4}" class="l">{PATH_LABELS.get(p, p)}</text>')
            if r:
                w = max(1.0, bar_w * r[0] / scale)
                body.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{COLORS.get(p, "#999")}"/>')
                label = f"{r[0]:.2f}× ({fmt(r[1], unit)} {unit})"
                x = left + w + 6
                if x < one < x + 7 * len(label):  # the dashed line would cross it: start after the line
                    x = one + 6
                body.append(f'<text x="{x:.1f}" y="{y + bar_h - 4}" class="v">{escape(label)}</text>')
            else:
                body.append(f'<text x="{left + 6}" y="{y + bar_h - 4}" class="v">n/a</text>')
            y += bar_h + gap
        body.insert(line_at, f'<line x1="{one:.1f}" y1="{top - 2}" x2="{one:.1f}" y2="{y}" class="one"/>')
        y += 26
    legend = " ".join(
        f'<rect x="{10 + i * 140}" y="36" width="12" height="12" fill="{COLORS.get(p, "#999")}"/>'
        f'<text x="{26 + i * 140}" y="46" class="v">{PATH_LABELS.get(p, p)}</text>' for i, p in enumerate(paths))
    return f"""<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" viewBox="0 0 {width} {y}">
<style>
 text {{ font-family: sans-serif; font-size: 12px; fill: #222; }}
 .h {{ font-size: 16px; font-weight: bold; }} .t {{ font-weight: bold; }} .l {{ text-anchor: end; }}
 .one {{ stroke: #000; stroke-dasharray: 3 3; }}
</style>
<rect width="100%" height="100%" fill="#fff"/>
<text x="10" y="22" class="h">arp vs direct, socat, ssh -R: medians of {measure["reps"]} run(s) as a multiple of direct (dashed line = direct)</text>
{legend}
{chr(10).join(body)}
</svg>
"""


# --------------------------------------------------------------------------------------------


def load(path, default=None):
    return json.load(open(path)) if os.path.exists(path) else default


def machine_md(m):
    rows = [("CPU", f"{m['cpu']}, {m['cores']} cores"), ("memory", f"{m['memory_gib']} GiB"),
            ("OS, kernel", f"{m['os']}, {m['kernel']}"), ("JDK (arps, arpc)", m["jdk"]),
            ("JVM options (arps, arpc)", m.get("jvm_options", "(JVM defaults)")), ("nginx", m["nginx"]),
            ("wrk", m["wrk"]), ("iperf3", m["iperf3"]), ("socat", m["socat"]), ("ssh, sshd", m["ssh"]),
            ("curl", m["curl"]), ("open files per process (hard limit)", m["fd_limit"]),
            ("arp (git describe)", m.get("arp", "?"))]
    return md_table(["", ""], [list(r) for r in rows])


def paths_md(measure, arp_tcp):
    if not measure:
        return ""
    md = f"""Load generator, origin (nginx with 2 workers, `iperf3 -s`) and tunnel share the machine's cores, all on
127.0.0.1. The paths are measured interleaved (direct, socat, ssh -R, arp pool 1, arp pool 8, then
again), {measure['reps']} repetition(s), after a short unrecorded warm-up of each; each cell is the
median with min–max over the repetitions, and "× direct" is the median divided by direct's median (for
latencies, more than 1 is slower).

{metric_tables(measure)}

### CPU used during each test (cores: load generator / tunnel / origin / other processes, medians)

The machine has 2 cores. A tunnel near 1.00 is bound by one core (socat and ssh handle a connection
in one process); the four together near 2.00 means the machine is saturated (the kernel's loopback
work is charged to whichever process sends). "Other" is everything not started by the benchmark:
well above 0 means something else ran on the machine and disturbed that measurement.

{cpu_table(measure)}
"""
    if not arp_tcp:
        md += "\niperf3 through arp: not measured, this arp has no dedicated raw-TCP ports (`--tcp-ports`).\n"
    return md


def memory_md(memory, fd_limit):
    if not memory:
        return ""
    steps = ", ".join(f"{s['target']:,}" for s in next(iter(memory.values()))["steps"])
    most = max(s["target"] for m in memory.values() for s in m["steps"])
    fd_note = ""
    if fd_limit.isdigit() and int(fd_limit) < 2 * most + 100:
        fd_note = (f" With this machine's hard limit of {int(fd_limit):,} open files per process (which"
                   f" root cannot raise in this container), slightly fewer than {most:,} fit; the"
                   " list below says how many were held and what the others got.")
    return f"""### Resident memory of arp (VmRSS, MB)

A fresh arps + arpc per pool size (the load tests above would have grown their heaps), idle, then
holding {steps} open visitor connections (each sent one keep-alive GET and read the answer; a sample
of them is asked again before the memory is read, to show they still work).

Each held connection costs arps two file descriptors (visitor, data connection) and arpc two (data
connection, origin).{fd_note}

{memory_table(memory)}
"""


def startup_md(startup):
    if not startup:
        return ""
    return f"""### Start-up time to the `--json` ready line of arps

From spawning the process to reading `{{"event":"ready",…}}` on its stdout, on an otherwise idle
machine; the jbang run is cached (one untimed run first).

{startup_table(startup)}
"""


def targets_md(rows):
    return f"""## Targets

Issue 3's figures come from its reference machine (direct 34 Gbit/s, 108 k req/s keep-alive, 33 k
req/s new connections; best established tunnel 11 Gbit/s, 47.5 k req/s with p99 1.8 ms, 7.7 k req/s
with p99 10 ms). Throughput targets are applied here as the same fraction of direct measured in this
run, and p99 bounds are scaled by how much slower or faster direct is here than there; memory and
start-up targets are absolute. The issue's absolute figures are shown for reference.

{md_table(["target (issue 3)", "path", "measured (median)", "required in this run", "issue's absolute figure", "met"], rows)}
"""


def collect(args):
    """Everything a run measured, from its temporary directory, as raw.json stores it."""
    d = args.dir
    return {"machine": load(f"{d}/machine.json"), "command": args.command, "elapsed_seconds": args.elapsed,
            "arp_tcp": bool(args.arp_tcp), "quiet": load(f"{d}/quiet.json", {}),
            "measure": load(f"{d}/measure.json"), "startup": load(f"{d}/startup.json", {}),
            "memory": {pool: m for pool in ("1", "8") if (m := load(f"{d}/memory-pool{pool}.json"))}}


def write_report(raw, out):
    machine, measure, memory, startup = raw["machine"], raw["measure"], raw["memory"], raw["startup"]
    elapsed = raw["elapsed_seconds"]
    os.makedirs(out, exist_ok=True)
    with open(f"{out}/raw.json", "w") as f:
        json.dump(raw, f, indent=1)
    if measure:
        with open(f"{out}/chart.svg", "w") as f:
            f.write(chart(measure))

    target_rows = targets(measure, memory, startup)
    notes = problems(measure, raw.get("quiet", {}))
    md = f"""# arp benchmark results

Produced by `{raw['command']}` on {machine['date']}; the run took {elapsed // 60} min {elapsed % 60:02d} s.
Raw numbers: [raw.json](raw.json).{" Chart: [chart.svg](chart.svg)." if measure else ""}
{chr(10) + "![chart](chart.svg)" + chr(10) if measure else ""}
## Machine

{machine_md(machine)}

## Results

{paths_md(measure, raw.get("arp_tcp", True))}
{memory_md(memory, machine['fd_limit'])}
{startup_md(startup)}
{targets_md(target_rows)}"""
    if notes:
        md += "\n## Problems seen during the run\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    with open(f"{out}/RESULTS.md", "w") as f:
        f.write(md)
    print((metric_tables(measure) + "\n\n" if measure else "") + "### Targets\n\n" +
          md_table(["target", "path", "measured", "required", "absolute", "met"], target_rows))
    if notes:
        print("\nProblems:\n" + "\n".join(f"- {n}" for n in notes))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--machine-info", metavar="JAVA")
    ap.add_argument("--dir")
    ap.add_argument("--out")
    ap.add_argument("--command", default="bench/run")
    ap.add_argument("--elapsed", type=int, default=0)
    ap.add_argument("--arp-tcp", type=int, default=1)
    ap.add_argument("--from-raw", metavar="RAW_JSON", help="render RESULTS.md and chart.svg again from a raw.json")
    args = ap.parse_args()
    if args.machine_info:
        print(json.dumps(machine_info(args.machine_info), indent=1))
    elif args.from_raw:
        raw = json.load(open(args.from_raw))
        write_report(raw, args.out or os.path.dirname(os.path.abspath(args.from_raw)))
    else:
        write_report(collect(args), args.out)


if __name__ == "__main__":
    main()
