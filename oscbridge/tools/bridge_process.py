"""`python -m oscbridge serve` as a process of its own, for benchmarks and tests that need the daemon as it ships.

The process gets a private temporary directory: its data directory (so, without `--database-url`, its own embedded
PostgreSQL) unless the caller names one, and the file its stderr goes to. A file rather than a pipe: nobody reads
the pipe while a benchmark runs, and a bridge that logs more than the pipe holds (64 KiB) would block on its next
log line. The process counts as ready once it answers `/bridge/ping` over UDP, which also holds when its log goes
to a file or is quieted with `--log-level warning`.

    with BridgeProcess(extra_env={"OSCBRIDGE_PLUGIN_SILENCE": "600"}) as bridge:
        ...  # talk to 127.0.0.1:bridge.port; bridge.pid for psutil
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from oscbridge.osc.codec import encode_message
from oscbridge.tools.ports import LOOPBACK, free_port

STOP_TIMEOUT = 15.0  # seconds between SIGTERM and SIGKILL: the writer may still be draining the spool


class BridgeProcess:
    """An `oscbridge serve` process, started and ready (it answered a ping) when the constructor returns.

    `serve_args` go to `oscbridge serve` after the port, data directory and log level (e.g. `--database-url URL`,
    `--log-file PATH`); `extra_env` is added to this process's environment (the `OSCBRIDGE_*` settings). Without
    `--http-port` among them the process serves no web page, so several can run next to a developer's bridge."""

    def __init__(self, *serve_args: str, port: int | None = None, data_dir: Path | None = None,
                 extra_env: Mapping[str, str] | None = None, log_level: str = "warning",
                 ready_timeout: float = 60.0) -> None:
        self.port = port or free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="oscbridge-process-")
        self.data_dir = data_dir or Path(self._tmp.name) / "data"
        self.stderr_path = Path(self._tmp.name) / "stderr.log"
        with self.stderr_path.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "oscbridge", "serve", "--osc-port", str(self.port), "--data-dir",
                 str(self.data_dir), "--log-level", log_level,
                 *([] if "--http-port" in serve_args else ["--http-port", "0"]), *serve_args],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                env={**os.environ, **(extra_env or {})})
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_tail(self, limit: int = 4000) -> str:
        """The end of what the process wrote to stderr (its log, unless `--log-file` sends that elsewhere)."""
        try:
            return self.stderr_path.read_text(errors="replace")[-limit:]
        except FileNotFoundError:  # stopped: the directory is gone
            return ""

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"oscbridge serve exited with {self.proc.returncode}: {self.stderr_tail()}")
            if answers_ping(self.port):
                return
            time.sleep(0.1)
        raise RuntimeError(f"oscbridge serve did not answer /bridge/ping within {timeout:.0f} s: "
                           f"{self.stderr_tail()}")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it has not exited after STOP_TIMEOUT; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._tmp.cleanup()
        return self.proc.returncode

    def __enter__(self) -> BridgeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def answers_ping(port: int, timeout: float = 0.2) -> bool:
    """Whether something on 127.0.0.1:`port` answers a `/bridge/ping` datagram within `timeout` seconds (the
    bridge with its reply; the benchmarks' comparison servers, echoes included, with theirs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(encode_message("/bridge/ping", ["ready?"]), (LOOPBACK, port))
            sock.recv(65536)
        except OSError:  # nothing listens yet (ECONNREFUSED) or no answer in time
            return False
    return True
