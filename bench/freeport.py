#!/usr/bin/env python3
"""Prints a free TCP port on 127.0.0.1, or with --range N a run "A-B" of N free consecutive ports.

The kernel picks single ports (bind to port 0). Ranges are looked for below the ephemeral range
(32768+ on Linux), so that client connections made during the benchmark cannot take them.
"""
import random
import socket
import sys


def is_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_range(n, tries=200):
    for _ in range(tries):
        base = random.randrange(20000, 32000 - n)
        if all(is_free(p) for p in range(base, base + n)):
            return f"{base}-{base + n - 1}"
    sys.exit(f"freeport: no {n} consecutive free ports found")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--range":
        print(free_range(int(sys.argv[2])))
    else:
        print(free_port())
