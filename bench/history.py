#!/usr/bin/env python3
"""How fast arpc lists agent history: GET /api/claude/sessions over 1,000 Claude Code sessions.

    bench/history.py [--sessions N] [--big N] [--big-mb MB] [--reps N] [--keep]

Writes N Claude Code sessions (default 1,000, in 20 projects, 10 to 150 records of 0.3 to 2.5 KB each,
as Claude writes them) into a temporary HOME, starts arpc in command mode with that HOME (no relay:
the API's local port, so the numbers are arpc's own work), and times with one keep-alive connection:

  cold      the first listing (every file read: head and tail, or whole if small)
  warm      the median of --reps more listings (answered from the per-file cache: one stat per file)
  page      the median of --reps listings with ?limit=10 (the total still counts every session)
  projects  the median of --reps GET /api/claude/projects
  re-read   the median of 3 listings after every file's mtime changed (all read again, JIT warm)
  big       one listing right after --big transcripts of --big-mb MB each are added (only they are read)
  messages  GET /api/claude/sessions/{big id}?offset=100000&limit=50 (a page from deep in one big file)

and, in the same invocation, a baseline: `cat` of every session file to /dev/null (page cache warm),
i.e. what merely reading every byte costs, before any parsing. The ratios are to that baseline.
Before it measures, it waits (up to 120 s) for the machine to be idle, as bench/run does, and says so
when it was not.
Everything it starts is stopped, and the temporary HOME deleted (unless --keep), on exit or Ctrl-C.
"""
import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quiet  # noqa: E402  (bench/quiet.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def encode(cwd):
    return "".join(c if c.isascii() and c.isalnum() else "-" for c in cwd)


def record(kind, sid, cwd, ts, content):
    return json.dumps({"type": kind, "uuid": str(uuid.uuid4()), "parentUuid": None, "isSidechain": False,
                       "userType": "external", "cwd": cwd, "sessionId": sid, "version": "2.0.31", "gitBranch": "main",
                       "timestamp": ts, "message": {"role": kind, "content": content}}, ensure_ascii=False)


def write_sessions(claude, n, rng):
    files = []
    for i in range(n):
        cwd = f"/home/bench/project_{i % 20}.app"
        sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        d = os.path.join(claude, "projects", encode(cwd))
        os.makedirs(d, exist_ok=True)
        t0 = 1_760_000_000 + i * 3600
        lines = [record("user", sid, cwd, iso(t0), f"task {i}: make the build green")]
        for j in range(rng.randint(10, 150)):
            kind = "assistant" if j % 2 == 0 else "user"
            text = "y" * rng.randint(300, 2500)
            lines.append(record(kind, sid, cwd, iso(t0 + j + 1), [{"type": "text", "text": text}]))
        lines.append(json.dumps({"type": "summary", "summary": f"Session {i}", "leafUuid": "x"}))
        path = os.path.join(d, sid + ".jsonl")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        files.append(path)
    return files


def write_big(claude, count, mb, rng):
    ids = []
    for k in range(count):
        cwd = f"/home/bench/big_{k}"
        sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        d = os.path.join(claude, "projects", encode(cwd))
        os.makedirs(d, exist_ok=True)
        t0 = 1_770_000_000 + k * 3600
        filler = "z" * 1900
        with open(os.path.join(d, sid + ".jsonl"), "w") as f:
            f.write(record("user", sid, cwd, iso(t0), "summarise the logs") + "\n")
            j, size = 0, 0
            while size < mb << 20:
                line = record("assistant", sid, cwd, iso(t0 + j), [{"type": "text", "text": f"{j} {filler}"}]) + "\n"
                f.write(line)
                size += len(line)
                j += 1
        ids.append(sid)
    return ids


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, port, key):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.headers = {"Authorization": "Bearer " + key}

    def get(self, path):
        t = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers)
        r = self.conn.getresponse()
        body = r.read()
        ms = (time.perf_counter() - t) * 1000
        if r.status != 200:
            raise RuntimeError(f"GET {path}: {r.status} {body[:200]!r}")
        return ms, json.loads(body), len(body)


def median_ms(api, path, reps):
    return statistics.median(api.get(path)[0] for _ in range(reps))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--big", type=int, default=5)
    ap.add_argument("--big-mb", type=int, default=20)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--keep", action="store_true", help="keep the temporary HOME")
    args = ap.parse_args()

    rng = random.Random(6)
    home = tempfile.mkdtemp(prefix="arp-history-bench-")
    claude = os.path.join(home, ".claude")
    proc = None

    def stop(*_):
        if proc and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # jbang's launcher and the JVM it started: this group only
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        t = time.perf_counter()
        files = write_sessions(claude, args.sessions, rng)
        total_bytes = sum(os.path.getsize(f) for f in files)
        print(f"wrote {len(files)} sessions, {total_bytes / 1e6:.1f} MB, in {time.perf_counter() - t:.1f} s ({home})")

        waited, busy = time.monotonic(), 1.0
        while time.monotonic() - waited < 120 and (busy := max(quiet.busy_cores() for _ in range(quiet.WINDOWS))) >= quiet.THRESHOLD:
            pass
        if busy >= quiet.THRESHOLD:
            print(f"warning: the machine stayed busy ({busy:.2f} cores used by others): the numbers are disturbed")
        cat = []
        for _ in range(3):  # the first run warms the page cache
            t = time.perf_counter()
            subprocess.run(["xargs", "-0", "cat"], input="\0".join(files).encode(), stdout=subprocess.DEVNULL, check=True)
            cat.append((time.perf_counter() - t) * 1000)
        baseline = min(cat[1:])

        port, key = free_port(), "bench-" + uuid.uuid4().hex
        env = dict(os.environ, HOME=home)
        env.pop("CLAUDE_CONFIG_DIR", None)
        cmd = [os.path.join(ROOT, "jbang"), os.path.join(ROOT, "Arpc.java"), "--command-mode", "--api-port", str(port),
               "--api-key", key, "--config-dir", os.path.join(home, ".arp-client"), "--log-level", "error", "--json"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, start_new_session=True, cwd=ROOT)
        for line in proc.stdout:  # the api line: the API listens
            if b'"event":"api"' in line:
                break
        else:
            raise RuntimeError("arpc exited before its API listened")
        api = Api(port, key)

        cold, listing, size = api.get("/api/claude/sessions")
        assert listing["total"] == args.sessions, listing["total"]
        warm = median_ms(api, "/api/claude/sessions", args.reps)
        page = median_ms(api, "/api/claude/sessions?limit=10", args.reps)
        projects = median_ms(api, "/api/claude/projects", args.reps)
        reread = []
        for k in range(3):  # every file changed: all read again, by a JVM that has compiled the code by now
            for f in files:
                os.utime(f, (1_700_000_000 + k, 1_700_000_000 + k))
            reread.append(api.get("/api/claude/sessions")[0])
        reread = statistics.median(reread)

        big_ids = write_big(claude, args.big, args.big_mb, rng)
        big, listing2, _ = api.get("/api/claude/sessions")
        assert listing2["total"] == args.sessions + args.big
        big_warm = median_ms(api, "/api/claude/sessions", args.reps)
        messages = api.get(f"/api/claude/sessions/{big_ids[0]}?offset=10000&limit=50")[0] if big_ids else float("nan")

        rows = [
            ("cat of every session file (baseline)", baseline),
            (f"cold listing, {args.sessions} sessions", cold),
            ("warm listing (cached)", warm),
            ("warm listing, ?limit=10", page),
            ("warm GET /api/claude/projects", projects),
            ("every file changed: all re-read (median of 3)", reread),
            (f"listing after adding {args.big} x {args.big_mb} MB transcripts", big),
            (f"warm listing, {args.sessions + args.big} sessions", big_warm),
            (f"a page of 50 messages deep in one {args.big_mb} MB transcript", messages),
        ]
        print(f"\n{args.sessions} Claude sessions ({total_bytes / 1e6:.0f} MB) + {args.big} x {args.big_mb} MB; "
              f"listing answer {size / 1e3:.0f} kB; median of {args.reps} where warm\n")
        print(f"{'':62} {'ms':>9} {'x cat':>8}")
        for name, ms in rows:
            print(f"{name:62} {ms:9.1f} {ms / baseline:8.2f}")
    finally:
        stop()


if __name__ == "__main__":
    main()
