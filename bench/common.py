"""Helpers shared by the benchmarks: the comparison servers as processes, a blocking request socket, percentiles,
tables, CPU pinning and CPU time.

The benchmarks are modules of the `bench` package, run from the repository root with their extra dependencies
installed (`pip install -e '.[bench]'`):

    .venv/bin/python -m bench.bench_latency

The bridge under test is `oscbridge.tools.bridge_process.BridgeProcess`; free ports come from
`oscbridge.tools.ports`, as in the tests.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import psutil

from oscbridge.osc.codec import decode_packet, encode_message
from oscbridge.tools.bridge_process import answers_ping
from oscbridge.tools.ports import LOOPBACK, free_port

ROOT = Path(__file__).resolve().parent.parent  # where `python -m bench.peers` finds the bench package


class Peer:
    """One of `bench.peers`' servers in a process of its own, answering when the constructor returns."""

    def __init__(self, name: str, quiet: bool = False, timeout: float = 10.0) -> None:
        self.name = name
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.peers", name, str(self.port)], cwd=ROOT,
                                     stderr=subprocess.DEVNULL if quiet else None)
        deadline = time.monotonic() + timeout
        while not answers_ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the {name} peer did not start")
            time.sleep(0.05)  # not bound yet: the ping was refused at once

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def peer_count(port: int) -> int:
    """How many datagrams the python-osc or liblo peer on `port` has handled (its `/count` request)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(3)
        sock.sendto(encode_message("/count", [sock.getsockname()[1]]), (LOOPBACK, port))
        return int(decode_packet(sock.recv(1024))[0].args[0])


class Requests:
    """A blocking request socket to the bridge: one request in flight, replies matched by request id."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect((LOOPBACK, port))
        self.sock.settimeout(3)
        self.n = 0

    def _send(self, address: str, args: tuple[object, ...]) -> str:
        self.n += 1
        req_id = f"b{self.n}"
        self.sock.send(encode_message(address, [req_id, *args]))
        return req_id

    def _reply(self, req_id: str, address: str) -> list[Any]:
        while True:
            values = decode_packet(self.sock.recv(65536))[0].args
            if values[0] == req_id:
                if values[1] != "ok":
                    raise RuntimeError(f"{address}: {values}")
                return values[2:]

    def call(self, address: str, *args: object) -> list[Any]:
        return self._reply(self._send(address, args), address)

    def rows(self, address: str, *args: object) -> list[list[Any]]:
        """A list reply: `[index, total, ...row]` per row."""
        req_id = self._send(address, args)
        rows: dict[int, list[Any]] = {}
        while True:
            index, total, *row = self._reply(req_id, address)
            if total == 0:
                return []
            rows[index] = row
            if len(rows) == total:
                return [rows[i] for i in sorted(rows)]

    def stats(self) -> dict[str, int]:
        """`/bridge/stats` as a dict (the counters of docs/plugin-hub.md)."""
        return {str(name): int(value) for name, value in self.rows("/bridge/stats")}

    def latency_us(self, request: bytes) -> float:
        """The round trip of one pre-encoded request, in microseconds."""
        started = time.perf_counter_ns()
        self.sock.send(request)
        self.sock.recv(65536)
        return (time.perf_counter_ns() - started) / 1000.0

    def close(self) -> None:
        self.sock.close()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The `q` quantile (0..1) of already sorted values, at the nearest index (no interpolation); NaN for none."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def print_table(title: str, rows: Sequence[tuple[str, ...]]) -> None:
    """Prints `rows` in aligned columns under `title`; the first row is the header."""
    print(f"\n{title}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def pin(pid: int, cpu: int) -> None:
    """Pins a process to one core where the OS allows it (Linux); elsewhere leaves scheduling alone."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(pid, {cpu})


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process so far (its children not included)."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def run_on_daemon_loop(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Runs `main()` on the event loop `oscbridge serve` uses (uvloop where installed), so that what a bench measures
    in its own process runs as in the daemon."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())
