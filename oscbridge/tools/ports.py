"""Free loopback ports for the tests and the benchmarks: one port for a bridge, or a block for a plugin port pool.

A port found free here is only free *now*: another process may take it before the caller binds it. The helpers
keep that window small and the odds of a collision low rather than pretending to rule it out; several test runs
and benchmarks share this machine at once.
"""

from __future__ import annotations

import random
import socket

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port that is free for both UDP and TCP on 127.0.0.1 right now (the bridge listens on both).

    The kernel picks a free UDP port; the loop retries the rare one whose TCP twin is taken."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port")


def port_free(port: int) -> bool:
    """Whether a UDP socket can bind `port` on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_block(count: int, low: int = 20000, high: int = 32000) -> int:
    """The first port of `count` consecutive UDP ports that are free now.

    The default range lies below Linux's ephemeral range (32768-60999), so the kernel never hands one of these
    ports to a `bind(0)` elsewhere while the block is in use. The start is random rather than the lowest free
    block, so that concurrent test runs rarely pick the same one."""
    for _ in range(200):
        base = random.randrange(low, high - count)
        if all(port_free(p) for p in range(base, base + count)):
            return base
    raise RuntimeError(f"no block of {count} free ports in {low}-{high}")
