"""`oscbridge ui` as a user runs it, next to `oscbridge serve` as it ships: the daemon's `ready` line names the web
page, and `ui` opens that page, with the installation's token, in the browser Python's webbrowser module picks
(it honours BROWSER, so a small script stands in for the browser and records what it was asked to open)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

from oscbridge.tools.bridge_process import BridgeProcess
from oscbridge.web.token import token_path
from tests.conftest import free_port, run_cli

FAKE_BROWSER = """#!/bin/sh
printf '%s\\n' "$@" > "{record}"
"""


def ready_record(bridge: BridgeProcess, timeout: float = 10.0) -> dict[str, object]:
    """The `ready` event of a daemon whose stderr is a file (so its log is JSON lines). The daemon answers pings
    a moment before it logs `ready`, so the file is read until the line is there."""
    deadline = time.monotonic() + timeout
    while True:
        log = bridge.stderr_tail(limit=1 << 20)
        for line in log.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("event") == "ready":
                return record
        assert time.monotonic() < deadline, f"no ready line in the daemon's log: {log}"
        time.sleep(0.05)


def test_ui_opens_the_page_with_its_token_and_the_ready_line_names_it(tmp_path: Path, database_url: str) -> None:
    http_port = free_port()
    data_dir = tmp_path / "data"
    record = tmp_path / "opened.txt"
    browser = tmp_path / "fake-browser"
    browser.write_text(FAKE_BROWSER.format(record=record))
    browser.chmod(browser.stat().st_mode | stat.S_IXUSR)
    page = f"http://127.0.0.1:{http_port}/"

    with BridgeProcess("--http-port", str(http_port), "--database-url", database_url, data_dir=data_dir,
                       log_level="info") as bridge:
        ready = ready_record(bridge)
        assert ready["web"] == page and ready["port"] == bridge.port

        env = {**os.environ, "BROWSER": str(browser), "OSCBRIDGE_HTTP_PORT": ""}
        out = run_cli("ui", "--data-dir", str(data_dir), "--http-port", str(http_port), env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout == f"opened {page} in your browser\n"
        token = token_path(data_dir).read_text().strip()
        assert token  # a real token, not an empty fragment
        assert record.read_text() == f"{page}#token={token}\n"  # one argument: the page with the token
        assert token not in out.stdout + out.stderr  # opened, never printed
