#!/usr/bin/env python3
"""The interleaved part of bench/run: every metric on every path, A B C … A B C …, N times.

    measure.py PATHS_FILE OUT.json [--reps N] [--quick]

PATHS_FILE has one path per line: `name base_url url_suffix iperf_port tunnel_pids origin_pids`
(`-` for "none"; pid lists comma-separated). The processes are started and stopped by bench/run;
this script only drives load at them and writes what it measured, one list entry per repetition.

Besides each tool's own figures it records the CPU time used meanwhile by the load generator
(this process's children), the tunnel's processes and the origin's, so that the report can say
which of them ran out of CPU: the machine has two cores and all three share them.
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time

import quiet

SMALL = "small.txt"
BIG = "big.bin"
BIG_SIZE = 1 << 30


# --------------------------------------------------------------------------------------------
# paths and processes


def read_paths(file):
    def pids(field):
        return [] if field == "-" else [int(p) for p in field.split(",")]

    paths = []
    for line in open(file):
        if not line.strip() or line.startswith("#"):
            continue
        name, base, suffix, iperf, tunnel, origin = line.split()
        paths.append({
            "name": name,
            "base": base,
            "suffix": "" if suffix == "-" else suffix,
            "iperf": None if iperf == "-" else int(iperf),
            "tunnel_pids": pids(tunnel),
            "origin_pids": pids(origin),
        })
    return paths


def url(path, file):
    return f"{path['base']}/{file}{path['suffix']}"


TICK = os.sysconf("SC_CLK_TCK")


def proc_table():
    """pid -> (ppid, cpu seconds incl. reaped children) for every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited while we looked
        # after the ")": state ppid … utime(11) stime(12) cutime(13) cstime(14), 0-based
        ppid = int(fields[1])
        cpu = sum(int(x) for x in fields[11:15]) / TICK
        table[int(entry)] = (ppid, cpu)
    return table


def tree(roots, table):
    """The pids in `roots` and all their descendants (socat and sshd fork per connection)."""
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo, seen = list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in table:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
    return seen


def cpu_of(pids, table):
    return sum(table[p][1] for p in pids)


def machine_cpu():
    """CPU seconds spent in user and system mode by the whole machine (interrupt time left out)."""
    with open("/proc/stat") as f:
        user, nice, system = (int(x) for x in f.readline().split()[1:4])
    return (user + nice + system) / TICK


class CpuMeter:
    """CPU cores used during a `with` block by the client (our child processes), the tunnel, the
    origin, and everything else: the machine's total minus those and this script. "Other" well above
    zero means something else ran on the machine and disturbed the measurement."""

    def __init__(self, path):
        self.path = path

    def snapshot(self):
        table = proc_table()
        t = os.times()
        return {"time": time.monotonic(), "machine": machine_cpu(), "self": t.user + t.system,
                "client": t.children_user + t.children_system,
                "tunnel": cpu_of(tree(self.path["tunnel_pids"], table), table),
                "origin": cpu_of(tree(self.path["origin_pids"], table), table)}

    def __enter__(self):
        self.before = self.snapshot()
        return self

    def __exit__(self, *exc):
        end = time.monotonic()
        # socat's per-connection children exit as the test ends: give socat time to reap them, which
        # moves their CPU time to its cutime, instead of missing them half-way through exiting
        time.sleep(0.3)
        a, b = self.snapshot(), self.before
        wall = end - b["time"]
        used = {k: (a[k] - b[k]) / wall for k in a if k != "time"}
        self.cores = {k: round(used[k], 2) for k in ("client", "tunnel", "origin")}
        other = used["machine"] - sum(used[k] for k in ("self", "client", "tunnel", "origin"))
        self.cores["other"] = round(max(0.0, other), 2)


# --------------------------------------------------------------------------------------------
# the tools


def run(cmd, timeout):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def iperf(port, secs, reverse):
    cmd = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(secs), "-J"] + (["-R"] if reverse else [])
    try:
        out = json.loads(run(cmd, secs + 30).stdout)
    except (subprocess.TimeoutExpired, ValueError) as e:
        return {"error": f"iperf3: {e}"}
    if "error" in out:
        return {"error": f"iperf3: {out['error']}"}
    return {"gbps": out["end"]["sum_received"]["bits_per_second"] / 1e9}


def download(u):
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{speed_download}", u]
    try:
        code, size, speed = run(cmd, 300).stdout.split()
    except (subprocess.TimeoutExpired, ValueError) as e:
        return {"error": f"curl: {e}"}
    if code != "200" or int(size) != BIG_SIZE:
        return {"error": f"curl: HTTP {code}, {size} bytes"}
    return {"gbps": float(speed) * 8 / 1e9}


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def wrk_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * UNITS[m.group(2)]


def wrk(u, secs, close):
    cmd = ["wrk", "-t2", "-c50", f"-d{secs}s", "--latency"] + (["-H", "Connection: close"] if close else []) + [u]
    try:
        out = run(cmd, secs + 60).stdout
    except subprocess.TimeoutExpired:
        return {"error": "wrk: timed out"}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (rps and p50 and p99):
        return {"error": "wrk: " + out.strip()[-300:]}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {
        "rps": float(rps.group(1)),
        "p50_ms": wrk_ms(p50.group(1)),
        "p99_ms": wrk_ms(p99.group(1)),
        "requests": int(total.group(1)) if total else None,
        # wrk counts a server's close after "Connection: close" as a read error on some paths,
        # so these are reported, not treated as failures; non-2xx answers are failures.
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def one_request(host, port, request):
    """Seconds for connect + request + whole response (read until the server closes)."""
    t0 = time.perf_counter()
    with socket.create_connection((host, port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    elapsed = time.perf_counter() - t0
    if not data.startswith(b"HTTP/1.1 200"):
        raise OSError(f"answer {data[:40]!r}")
    return elapsed


def latency(path, n, gap):
    """n sequential requests, each on a new connection, `gap` seconds apart (a lone visitor)."""
    host, port = path["base"].removeprefix("http://").split(":")
    request = (f"GET /{SMALL}{path['suffix']} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               "Connection: close\r\n\r\n").encode()
    times, errors = [], 0
    for _ in range(n):
        try:
            times.append(one_request(host, int(port), request) * 1e3)
        except OSError:
            errors += 1
        time.sleep(gap)
    if len(times) < n // 2:
        return {"error": f"latency: {errors} of {n} requests failed"}
    times.sort()
    return {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99), "errors": errors}


def percentile(sorted_values, p):
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


# --------------------------------------------------------------------------------------------
# the plan


def metrics(quick):
    """(name, function(path) -> dict). Durations follow issue 3, shortened by --quick."""
    t_iperf, t_wrk, n_lat = (2, 3, 50) if quick else (5, 10, 200)

    def needs_iperf(f):
        return lambda p: f(p) if p["iperf"] else {"error": "no raw TCP port on this path"}

    return [
        ("iperf_fwd", needs_iperf(lambda p: iperf(p["iperf"], t_iperf, False))),
        ("iperf_rev", needs_iperf(lambda p: iperf(p["iperf"], t_iperf, True))),
        ("http_1gib", lambda p: download(url(p, BIG))),
        ("wrk_keepalive", lambda p: wrk(url(p, SMALL), t_wrk, False)),
        ("wrk_close", lambda p: wrk(url(p, SMALL), t_wrk, True)),
        ("latency", lambda p: latency(p, n_lat, 0.01)),
    ]


def warm_up(paths, quick):
    """A short unrecorded load on each path first: the JVMs of arp compile their hot code (JIT)."""
    secs = 1 if quick else 2
    for p in paths:
        log(f"warm-up {p['name']}")
        wrk(url(p, SMALL), secs, False)
        wrk(url(p, SMALL), secs, True)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def summary(result):
    keys = ("gbps", "rps", "p50_ms", "p99_ms")
    shown = ", ".join(f"{k} {result[k]:.3g}" for k in keys if k in result)
    return shown or result.get("error", "?")


DISTURBED = 0.3  # cores used by other processes during a test that make it worth repeating


class Retries:
    """Repeats a test that other processes disturbed, once, after waiting for an idle machine — as long
    as a time budget lasts, so that a machine that never calms down still finishes in time."""

    def __init__(self, budget):
        self.deadline = time.monotonic() + budget

    def run(self, path, measure):
        first = timed(path, measure)
        if first["cpu_cores"]["other"] <= DISTURBED or time.monotonic() > self.deadline:
            return first
        log(f"  disturbed (other processes used {first['cpu_cores']['other']} cores); once more when idle")
        quiet.wait(min(30.0, self.deadline - time.monotonic()))
        second = timed(path, measure)
        best = min((first, second), key=lambda r: r["cpu_cores"]["other"])
        best["repeated"] = True
        return best


def timed(path, measure):
    with CpuMeter(path) as cpu:
        r = measure(path)
    r["cpu_cores"] = cpu.cores
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("paths_file")
    ap.add_argument("out")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--retry-budget", type=float, default=150,
                    help="seconds that repeating disturbed tests may add in all (default 150)")
    args = ap.parse_args()

    paths = read_paths(args.paths_file)
    plan = metrics(args.quick)
    results = {p["name"]: {m: [] for m, _ in plan} for p in paths}
    warm_up(paths, args.quick)
    retries = Retries(args.retry_budget)
    for rep in range(1, args.reps + 1):
        for p in paths:                        # interleaved: A B C … then again A B C …
            for name, measure in plan:
                r = retries.run(p, measure)
                results[p["name"]][name].append(r)
                log(f"rep {rep}/{args.reps} {p['name']:>10} {name:<14} {summary(r)}  cpu {r['cpu_cores']}")
                time.sleep(0.2)                # let sockets in FIN/TIME-WAIT settle between tests
    with open(args.out, "w") as f:
        json.dump({"paths": [p["name"] for p in paths], "reps": args.reps, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
