#!/usr/bin/env python3
"""Waits (at most MAX_WAIT seconds) until the machine is idle, so that nothing else skews the numbers.

    quiet.py MAX_WAIT OUT.json LABEL

Idle: less than 0.25 cores busy in each of 3 consecutive one-second windows (from /proc/stat).
Appends {LABEL: {"busy_cores": last window, "waited_s": …, "quiet": true|false}} to OUT.json; a machine
that stays busy is reported, not fatal.
"""
import json
import os
import sys
import time

THRESHOLD = 0.25
WINDOWS = 3


def jiffies():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v[:8]) - idle, sum(v[:8])


def busy_cores(seconds=1.0):
    b0, t0 = jiffies()
    time.sleep(seconds)
    b1, t1 = jiffies()
    return (b1 - b0) / max(1, t1 - t0) * os.cpu_count()


def wait(max_wait):
    """Waits until idle or max_wait seconds passed; returns (idle?, seconds waited, last busy cores)."""
    start, calm, busy = time.monotonic(), 0, 0.0
    while calm < WINDOWS and time.monotonic() - start < max_wait:
        busy = busy_cores()
        calm = calm + 1 if busy < THRESHOLD else 0
    return calm >= WINDOWS, round(time.monotonic() - start, 1), busy


def main():
    max_wait, out, label = float(sys.argv[1]), sys.argv[2], sys.argv[3]
    quiet, waited, busy = wait(max_wait)
    if not quiet:
        print(f"  warning: the machine was not idle for {WINDOWS} s in a row within {waited} s (last second:"
              f" {busy:.2f} cores busy); measuring anyway, the report flags it", file=sys.stderr)
    data = json.load(open(out)) if os.path.exists(out) else {}
    data[label] = {"busy_cores": round(busy, 2), "waited_s": waited, "quiet": quiet}
    with open(out, "w") as f:
        json.dump(data, f, indent=1)


if __name__ == "__main__":
    main()
