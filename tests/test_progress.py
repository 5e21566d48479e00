"""Progress of long work, on a terminal only: `migrate-sqlite` counts the rows it imports and `replay` the
datagrams it sends, on stderr when that is a terminal. Piped, stderr shows no progress and stdout is the same."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oscbridge.tools.progress import SILENT, progress
from oscbridge.tools.recording import Recorder
from tests.conftest import EmbeddedServer, free_port
from tests.pty_support import Run, plain, terminal_env
from tests.test_migrate_sqlite import legacy_db

ROWS = 300
DATAGRAMS = 3000
RMS = b"/aiplayer/rms\x00\x00\x00,if\x00\x00\x00\x00\x03\x3e\x80\x00\x00"

TIME_LEFT = r" (took \d+:\d\d:\d\d|[-:\d]+ left)"  # the last column: time left, or taken once done


def both_ways(home: Path, on_terminal: list[str], piped: list[str]) -> tuple[Run, Run]:
    """A command run with stderr on a terminal, then another on a pipe; both must succeed."""
    env = terminal_env({**os.environ, "HOME": str(home)})
    runs = []
    for args, terminal in ((on_terminal, True), (piped, False)):
        run = Run(*args, env=env, terminal=terminal)
        assert run.finish() == 0, run.error_text
        runs.append(run)
    return runs[0], runs[1]


async def test_migrate_sqlite_counts_the_rows_it_imports_on_a_terminal(
        tmp_path: Path, pg: EmbeddedServer, database_url: str) -> None:
    rows = [(f"TR{i}", f"TR{i}", f"Track {i}", i, "2024-05-01 10:00:00") for i in range(1, ROWS + 1)]
    source = legacy_db(tmp_path / "track_mappings.db", rows)
    # Two fresh databases, so that both runs import everything and must print the same report.
    args = ["migrate-sqlite", str(source), "--osc-port", str(free_port()), "--database-url"]
    shown, piped = both_ways(tmp_path, [*args, database_url], [*args, await pg.upgraded_database()])

    assert re.search(rf"importing .*\b{ROWS}/{ROWS} rows\b.* [\d,]+ rows/s\b.*{TIME_LEFT}", plain(shown.error_text)), \
        shown.error_text
    assert f"summary: {ROWS} row(s) read, {ROWS} imported" in piped.stdout.decode()
    assert shown.stdout == piped.stdout
    assert piped.stderr == b""


@pytest.fixture
def sink() -> Iterator[int]:
    """A UDP port on loopback that takes whatever it gets."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    done = threading.Event()

    def drain() -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                sock.recv(65536)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    yield sock.getsockname()[1]
    done.set()
    reader.join()
    sock.close()


def test_replay_counts_the_datagrams_it_sends_on_a_terminal(tmp_path: Path, sink: int) -> None:
    path = tmp_path / "session.jsonl"
    with Recorder(path) as recorder:
        for i in range(DATAGRAMS):
            recorder.record(("127.0.0.1", 50000 + i % 3), ("127.0.0.1", 8999), RMS, t=i * 0.0001)
        recorder.record(("127.0.0.1", 8999), ("127.0.0.1", 9000), RMS, t=1.0)  # to a plugin: not replayed
    args = ["replay", str(path), "--target", f"127.0.0.1:{sink}", "--speed", "0"]
    shown, piped = both_ways(tmp_path, args, args)

    assert re.search(rf"replay .*\b{DATAGRAMS}/{DATAGRAMS} datagrams\b.* [\d,]+ datagrams/s\b.*{TIME_LEFT}",
                     plain(shown.error_text)), shown.error_text
    assert piped.stderr == b""

    def facts(run: Run) -> dict[str, Any]:
        stats: dict[str, Any] = json.loads(run.stdout)  # one JSON line, as without a terminal
        del stats["duration"]
        stats["source_ports"] = sorted(stats["source_ports"])  # the local ports differ from run to run
        return stats

    assert facts(shown) == facts(piped)
    assert facts(piped)["sent"] == DATAGRAMS and facts(piped)["skipped"] == 1


def test_progress_is_silent_off_a_terminal() -> None:
    with progress("copying", "items", total=3, stream=io.StringIO()) as nothing:
        assert nothing is SILENT and not nothing.shown
        nothing.advance(3)
    master, follower = os.openpty()
    try:
        with open(follower, "w") as terminal, progress("copying", "items", stream=terminal) as shown:
            assert shown.shown
            shown.start(3)
            shown.advance(3)
        assert re.search(r"copying .*\b3/3 items\b", plain(read_all(master).decode()))
    finally:
        os.close(master)


def read_all(master: int) -> bytes:
    """Everything written to the terminal whose other end is closed now: one read may return only the first of the
    display's refreshes (seen: the line with 0/3, not the final one with 3/3)."""
    data = b""
    while select.select([master], [], [], 1.0)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: all of it was read and the other end is closed
            break
        if not chunk:
            break
        data += chunk
    return data
