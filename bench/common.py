"""Helpers shared by the benchmarks: start a bridge as a real process, free ports, percentiles."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any


def free_port() -> int:
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        port = int(udp.getsockname()[1])
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            tcp.close()
            udp.close()
    raise RuntimeError("no free port")


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


class BridgeProcess:
    """`python -m oscbridge serve` on the embedded PostgreSQL in a temporary data directory."""

    def __init__(self, port: int | None = None, extra_env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="oscbridge-bench-")
        env = {**os.environ, **(extra_env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "oscbridge", "serve", "--osc-port", str(self.port), "--data-dir",
             str(Path(self._tmp.name) / "data"), "--log-level", "warning"],
            stderr=subprocess.PIPE, text=True, env=env)
        self.ready = self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> dict[str, Any]:
        stream: IO[str] | None = self.proc.stderr
        assert stream is not None
        os.set_blocking(stream.fileno(), True)
        deadline = time.monotonic() + timeout
        # The ready line is logged at info; with --log-level warning we poll the port instead.
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited: {stream.read()}")
            if _answers(self.port):
                return {"port": self.port}
            time.sleep(0.1)
        raise RuntimeError("bridge did not become ready")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._tmp.cleanup()


def _answers(port: int) -> bool:
    from oscbridge.osc.codec import encode_message

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.2)
    try:
        sock.sendto(encode_message("/bridge/ping", ["probe"]), ("127.0.0.1", port))
        sock.recvfrom(65536)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def print_table(title: str, rows: Sequence[tuple[str, ...]]) -> None:
    print(f"\n{title}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def dump_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2))
