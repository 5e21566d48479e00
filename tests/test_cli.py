"""The command line as a user runs it: `oscbridge serve` as a real process, `call`, `db url`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, run_cli


class Daemon:
    """`python -m oscbridge serve` in a subprocess, with its JSON log lines collected."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "oscbridge", "serve", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.events: list[dict[str, object]] = []

    def wait_for(self, event: str, timeout: float = 60) -> dict[str, object]:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise AssertionError(f"daemon exited ({self.proc.wait()}) before {event!r}: {self.events}")
            try:
                record: dict[str, object] = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.events.append(record)
            if record.get("event") == event:
                return record
        raise AssertionError(f"no {event!r} within {timeout} s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    yield {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg")}


def test_serve_on_embedded_postgres_answers_and_stops_cleanly(tmp_path: Path, env: dict[str, str]) -> None:
    port = free_port()
    daemon = Daemon("--osc-port", str(port), "--data-dir", str(tmp_path / "data"), env=env)
    try:
        ready = daemon.wait_for("ready")
        assert ready["port"] == port and ready["database"] == "embedded" and ready["database_up"] is True
        assert ready["pgvector"] == "0.8.5"

        out = run_cli("call", "--osc-port", str(port), "/bridge/mapping/set", "3", "Bass", "TR3", env=env)
        assert out.returncode == 0, out.stderr
        out = run_cli("call", "--osc-port", str(port), "--tcp", "/bridge/mapping/list", env=env)
        assert out.stdout.splitlines() == ["3\tBass\tTR3\t-1\t"]
        out = run_cli("call", "--osc-port", str(port), "/bridge/mapping/set", "0", "Bass", "TR3", env=env)
        assert out.returncode == 1 and "bad_request" in out.stderr

        url = run_cli("db", "url", "--data-dir", str(tmp_path / "data"), env=env)
        assert url.returncode == 0 and url.stdout.startswith("postgresql://postgres@/oscbridge?host=")

        # A second bridge on the same port says so and exits non-zero.
        second = run_cli("serve", "--osc-port", str(port), "--data-dir", str(tmp_path / "other"), env=env)
        assert second.returncode == 3
        assert f"port {port}" in second.stderr and "already in use" in second.stderr

        started = time.monotonic()
        # The same signal delivered twice at once (a wrapper forwarding what it got) is one request to stop.
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.stop() == 0
        assert time.monotonic() - started < 10
        stopped = daemon.wait_for("stopped")
        assert stopped["drained"] is True
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
    # The embedded server was stopped with the daemon.
    gone = run_cli("db", "url", "--data-dir", str(tmp_path / "data"), env=env)
    assert gone.returncode == 1 and "not running" in gone.stderr


def test_call_without_a_bridge_says_so(env: dict[str, str]) -> None:
    port = free_port()
    out = run_cli("call", "--osc-port", str(port), "--timeout", "0.5", "/bridge/ping", env=env)
    assert out.returncode == 1 and "no reply" in out.stderr
    out = run_cli("call", "--osc-port", str(port), "--tcp", "/bridge/ping", env=env)
    assert out.returncode == 1 and "cannot reach the bridge" in out.stderr


def test_bad_setting_is_explained(env: dict[str, str]) -> None:
    out = run_cli("serve", "--osc-port", "9500", env=env)
    assert out.returncode == 78 and "inside the plugin port range" in out.stderr


def test_port_held_by_another_program(tmp_path: Path, env: dict[str, str]) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    try:
        port = holder.getsockname()[1]
        out = run_cli("serve", "--osc-port", str(port), "--data-dir", str(tmp_path / "d"), env=env)
        assert out.returncode == 3 and "already in use" in out.stderr
    finally:
        holder.close()


LOADED_TOOLS = ("import atexit, sys; atexit.register(lambda: print('TOOLS', sorted(m for m in sys.modules "
                "if m.startswith('oscbridge.tools')), file=sys.stderr, flush=True)); "
                "from oscbridge.cli import main; sys.exit(main(sys.argv[1:]))")


def test_serve_loads_none_of_the_tools(tmp_path: Path, env: dict[str, str], database_url: str) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", LOADED_TOOLS, "serve", "--osc-port", str(port), "--data-dir",
                             str(tmp_path / "data"), "--database-url", database_url], stderr=subprocess.PIPE,
                            text=True, env=env)
    daemon = Daemon.__new__(Daemon)
    daemon.proc, daemon.events = proc, []
    try:
        daemon.wait_for("ready")
        assert run_cli("call", "--osc-port", str(port), "/bridge/ping", env=env).returncode == 0
        assert daemon.stop() == 0
        assert proc.stderr is not None
        assert "TOOLS []" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
