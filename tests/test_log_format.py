"""Logs for people and for machines: `oscbridge serve` writes readable, coloured lines when stderr is a terminal
and JSON lines when it is not (launchd, a file, a pipe); `--log-format` and NO_COLOR override that."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import pytest
from pythonosc.osc_bundle import OscBundle

from oscbridge.config import ConfigError, Settings
from oscbridge.logs import configure_logging, get_logger
from tests.conftest import free_port, run_cli
from tests.pty_support import ANSI, Run, plain, terminal_env

READY = re.compile(r'"event": "ready"|\] ready ')
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def serve(tmp_path: Path, database_url: str, *flags: str, terminal: bool, **env: str) -> tuple[str, int]:
    """Runs `serve` until it is ready, stops it, and returns all it wrote to stderr, and its OSC port."""
    port = free_port()
    run = Run("serve", "--osc-port", str(port), "--data-dir", str(tmp_path / "data"), "--database-url",
              database_url, *flags, env=terminal_env({**os.environ, "HOME": str(tmp_path)}, **env),
              terminal=terminal)
    run.read_until(READY)
    assert run.finish(stop=True) == 0, run.error_text
    assert run.stdout == b""
    return run.error_text, port


def console_lines(text: str, port: int) -> list[str]:
    """The lines of console output, checked for the ready and stopped events with their key=values."""
    lines = [line for line in plain(text).splitlines() if line]
    assert any(re.fullmatch(rf"{TIME} \[info\s*\] ready\s+\[oscbridge\.app\] .*\bport={port}\b.*", line)
               for line in lines), lines
    assert any(re.fullmatch(rf"{TIME} \[info\s*\] stopped\s+\[oscbridge\.\w+\].*\bdrained=True\b.*", line)
               for line in lines), lines
    for line in lines:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
    return lines


def json_lines(text: str, port: int) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in text.replace("\r\n", "\n").splitlines() if line]
    ready = next(r for r in records if r["event"] == "ready")
    assert ready["port"] == port and ready["level"] == "info" and ready["logger"] == "oscbridge.app"
    assert all(r["timestamp"].endswith("Z") for r in records)
    return records


def test_terminal_gets_coloured_console_lines(tmp_path: Path, database_url: str) -> None:
    text, port = serve(tmp_path, database_url, terminal=True)
    assert ANSI.search(text), text
    console_lines(text, port)


def test_pipe_gets_json_lines(tmp_path: Path, database_url: str) -> None:
    text, port = serve(tmp_path, database_url, terminal=False)
    assert "\x1b" not in text
    assert [r["event"] for r in json_lines(text, port)][-1] == "stopped"


def test_json_on_a_terminal_when_asked(tmp_path: Path, database_url: str) -> None:
    text, port = serve(tmp_path, database_url, "--log-format", "json", terminal=True)
    assert "\x1b" not in text
    json_lines(text, port)


def test_console_on_a_pipe_when_asked_has_no_colour(tmp_path: Path, database_url: str) -> None:
    text, port = serve(tmp_path, database_url, "--log-format", "console", terminal=False)
    assert "\x1b" not in text
    console_lines(text, port)


def test_no_color_on_a_terminal(tmp_path: Path, database_url: str) -> None:
    text, port = serve(tmp_path, database_url, terminal=True, NO_COLOR="1")
    assert "\x1b" not in text
    console_lines(text, port)


def test_a_wrong_log_format_is_explained(tmp_path: Path) -> None:
    out = run_cli("serve", "--log-format", "pretty", "--data-dir", str(tmp_path / "data"))
    assert out.returncode == 78
    assert "log_format must be auto, console, json, not 'pretty'" in out.stderr and "--log-format" in out.stderr
    with pytest.raises(ConfigError, match="log_format"):
        Settings(log_format="JSON").validate()


def logged_to(stream: TextIO, log_format: str, log_file: Path | None = None) -> None:
    """Logs a line and an exception in `log_format` with `stream` as stderr."""
    saved = sys.stderr
    sys.stderr = stream
    try:
        configure_logging("info", log_file, log_format)
        log = get_logger("oscbridge.test")
        log.info("started", port=8999)
        try:
            raise KeyError("missing")
        except KeyError:
            log.exception("request_failed", address="/bridge/ping")
    finally:
        sys.stderr = saved
        configure_logging("warning")  # as tests/conftest.py set it


def test_exceptions_are_readable_in_both_formats() -> None:
    console = io.StringIO()
    logged_to(console, "console")
    text = console.getvalue()
    assert re.search(r"\[error\s*\] request_failed\s+\[oscbridge\.test\] address=/bridge/ping\n", text), text
    assert "Traceback (most recent call last):" in text and "KeyError: 'missing'" in text
    assert "\x1b" not in text  # not a terminal

    machine = io.StringIO()
    logged_to(machine, "json")
    failed = [json.loads(line) for line in machine.getvalue().splitlines()][-1]
    assert failed["event"] == "request_failed" and "KeyError: 'missing'" in failed["exception"]


def test_the_log_file_stays_json_on_a_terminal(tmp_path: Path) -> None:
    master, follower = os.openpty()
    terminal = open(follower, "w")  # noqa: SIM115 - closed below; a terminal as stderr
    try:
        assert terminal.isatty()
        log_file = tmp_path / "oscbridge.log"
        logged_to(terminal, "auto", log_file)
        records = [json.loads(line) for line in log_file.read_text().splitlines()]
        assert [r["event"] for r in records] == ["started", "request_failed"]
    finally:
        terminal.close()
        os.close(master)


def test_python_osc_cannot_flood_the_log_file(tmp_path: Path) -> None:
    """Issue 8: python-osc logs "Could not identify content type of dgram" through the root logger for every
    bundle element it cannot read. Under the daemon's logging, 1,000 of them from one source line leave one line
    (one per 10 s: more only if this machine took that long), while our own lines all pass."""
    elements = 1000
    bundle = b"#bundle\0" + b"\0" * 8 + (struct.pack(">i", 4) + b"xxxx") * elements
    log_file = tmp_path / "oscbridge.log"
    configure_logging("info", log_file, "json")
    try:
        started = time.monotonic()
        assert OscBundle(bundle).num_contents == 0  # python-osc skipped (and logged) every element
        elapsed = time.monotonic() - started
        log = get_logger("oscbridge.test")
        for n in range(3):
            log.warning("ours", n=n)
    finally:
        configure_logging("warning")  # as tests/conftest.py set it
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    noise = [r for r in records if r["event"].startswith("Could not identify content type of dgram")]
    assert 1 <= len(noise) <= 1 + int(elapsed // 10), len(noise)
    assert [r["n"] for r in records if r["event"] == "ours"] == [0, 1, 2]
