#!/usr/bin/env python3
"""Resident memory of arps and arpc while they hold many open visitor connections.

    holdconns.py PORT TOKEN STEPS OUT.json NAME=PID...

e.g. `holdconns.py 41234 bench 1000,10000 mem.json arps=123 arpc=124`. Samples VmRSS of each PID
idle, then opens connections to 127.0.0.1:PORT until STEPS[0] are open, samples again, goes on to
STEPS[1], … and finally closes them all. Each connection sends one keep-alive GET with the token and
reads the whole answer, so it is a spliced, working tunnel connection (arps holds a visitor socket
and a data connection, arpc a data connection and one to the origin) — and stays open while sampled.

Connections are opened at most CONCURRENCY at a time: arps lets a limited number of visitors wait
for a data connection (--max-pending), and a real crowd does not arrive in the same microsecond.
"""
import asyncio
import json
import os
import random
import resource
import sys
import time

CONCURRENCY = 200
SETTLE = 2.0  # seconds between the last connection and the sample (buffers, GC)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def sample(pids):
    return {name: {"rss_mb": round(rss_mb(pid), 1), "fds": fd_count(pid)} for name, pid in pids.items()}


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status


async def open_one(port, request, sem, held, failures):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 15)
            writer.write(request)
            status = await asyncio.wait_for(read_response(reader), 15)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            failures[type(e).__name__] = failures.get(type(e).__name__, 0) + 1
            return
        if status != b"200":
            failures[f"HTTP {status.decode()}"] = failures.get(f"HTTP {status.decode()}", 0) + 1
            writer.close()
            return
        held.append((reader, writer))


async def still_working(held, request, n=100):
    """A second request on n random held connections: are they really still spliced?"""
    ok = 0
    for reader, writer in random.sample(held, min(n, len(held))):
        try:
            writer.write(request)
            ok += await asyncio.wait_for(read_response(reader), 10) == b"200"
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
    return ok, min(n, len(held))


async def main(port, token, steps, out, pids):
    request = f"GET /small.txt?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    sem = asyncio.Semaphore(CONCURRENCY)
    held, failures = [], {}
    report = {"idle": sample(pids), "steps": []}
    for target in steps:
        t0 = time.monotonic()
        await asyncio.gather(*(open_one(port, request, sem, held, failures)
                               for _ in range(target - len(held))))
        opened = time.monotonic() - t0
        await asyncio.sleep(SETTLE)
        ok, tried = await still_working(held, request)
        step = {"target": target, "held": len(held), "open_seconds": round(opened, 2),
                "failures": dict(failures), "rechecked_ok": f"{ok}/{tried}", "processes": sample(pids)}
        report["steps"].append(step)
        print(f"  {target} wanted, {len(held)} held, failures {failures or 'none'}, "
              f"re-checked {ok}/{tried}: " + ", ".join(f"{k} {v['rss_mb']} MB" for k, v in step["processes"].items()),
              file=sys.stderr, flush=True)
    for _, writer in held:
        writer.close()
    await asyncio.sleep(SETTLE)
    report["after_close"] = sample(pids)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 10,000 sockets need more than 1024
    port, token, steps, out = int(sys.argv[1]), sys.argv[2], [int(s) for s in sys.argv[3].split(",")], sys.argv[4]
    pids = {k: int(v) for k, v in (a.split("=") for a in sys.argv[5:])}
    asyncio.run(main(port, token, steps, out, pids))
