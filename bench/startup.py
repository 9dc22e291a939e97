#!/usr/bin/env python3
"""Start-up time of arps: seconds from spawn to its `--json` "ready" line, RUNS times.

    startup.py RUNS OUT.json LABEL -- COMMAND...

Appends {LABEL: [seconds, …]} to OUT.json (created if missing). Each run is started in its own
process group (jbang's launcher starts a second JVM) and that group is killed once ready.
"""
import json
import os
import select
import signal
import subprocess
import sys
import time

TIMEOUT = 60  # seconds; a first, uncached jbang run compiles the script


def ready_after(cmd):
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        buf = b""
        while time.monotonic() - t0 < TIMEOUT:
            readable, _, _ = select.select([proc.stdout], [], [], 0.5)
            if readable:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break  # it exited without saying ready
                buf += chunk
                if b'"event":"ready"' in buf:
                    return time.monotonic() - t0
        raise RuntimeError(f"{cmd[0]}: no ready line within {TIMEOUT} s: {buf[:200]!r}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group of this run only
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main():
    runs, out, label = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    cmd = sys.argv[sys.argv.index("--") + 1:]
    times = []
    for _ in range(runs):
        times.append(round(ready_after(cmd), 3))
        time.sleep(0.3)
    print(f"  {label}: {times}", file=sys.stderr)
    data = json.load(open(out)) if os.path.exists(out) else {}
    data[label] = times
    with open(out, "w") as f:
        json.dump(data, f, indent=1)


if __name__ == "__main__":
    main()
