"""Running as a service: SIGTERM under traffic loses no acknowledged write, a second signal stops at once without
corrupting anything, and the log file rotates by size.

The daemon runs as a real `oscbridge serve` process on the embedded PostgreSQL in a temporary data directory, as
launchd would run it; the test checks the database afterwards by starting the embedded server on the same data
directory (or by running `serve` again, which replays the spool).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from oscbridge import logs
from oscbridge.client import BridgeClient
from oscbridge.store.embedded import EmbeddedPostgres, running_url
from tests.conftest import EmbeddedServer, free_port
from tests.test_cli import Daemon

STOP_DEADLINE = 10.0  # what BRIDGE-API.md and the LaunchAgent's ExitTimeOut promise for SIGTERM
SENDER = "service-test"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    yield {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg")}


@dataclass
class Acked:
    """Writes the daemon acknowledged: debug row ids and the track numbers of mapping sets."""

    debug: set[str] = field(default_factory=set)
    tracks: set[int] = field(default_factory=set)
    unanswered: int = 0

    @property
    def count(self) -> int:
        return len(self.debug) + len(self.tracks)


async def send_writes(port: int, acked: Acked, stop: asyncio.Event, workers: int = 6, pause: float = 0.002,
                      timeout: float = 1.0) -> None:
    """A steady stream of acknowledged writes from `workers` concurrent requesters until `stop` is set.

    Every write is distinct (a new debug row, a mapping for a new track number and plugin id), so each one can be
    looked up afterwards. A write without a reply is counted and not expected in the database."""
    client = await BridgeClient.connect("127.0.0.1", port)
    numbers = iter(range(1, 100_000))

    async def worker(w: int) -> None:
        turn = 0
        while not stop.is_set():
            turn += 1
            try:
                if turn % 2:
                    (row_id,) = await client.call("/bridge/debug/log", SENDER, "", "log", f"worker {w} turn {turn}",
                                                  "", "info", timeout=timeout)
                    acked.debug.add(row_id)
                else:
                    n = next(numbers)
                    await client.call("/bridge/mapping/set", n, f"track {n}", f"TR{n}", timeout=timeout)
                    acked.tracks.add(n)
            except TimeoutError:
                acked.unanswered += 1
            await asyncio.sleep(pause)

    try:
        await asyncio.gather(*(worker(w) for w in range(workers)))
    finally:
        await client.close()


async def wait_for_acks(acked: Acked, at_least: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while acked.count < at_least:
        assert time.monotonic() < deadline, f"only {acked.count} writes acknowledged within {timeout} s"
        await asyncio.sleep(0.01)


async def read_back(url: str) -> tuple[set[str], dict[int, int]]:
    """The debug row ids of this test's sender and, per track number, how many assignment rows exist."""
    conn = await asyncpg.connect(url)
    try:
        debug = {r["id"] for r in await conn.fetch(
            "SELECT id::text AS id FROM mission_control_debug WHERE sender = $1", SENDER)}
        tracks = {r["track_number"]: r["n"] for r in await conn.fetch(
            "SELECT track_number, count(*) AS n FROM track_assignments GROUP BY track_number")}
    finally:
        await conn.close()
    return debug, tracks


async def stored(data_dir: Path) -> tuple[set[str], dict[int, int]]:
    """Starts the embedded server on the daemon's data directory (the daemon stopped it) and reads back."""
    server = EmbeddedPostgres(data_dir / "postgres")
    url = await server.start_async()
    try:
        return await read_back(url)
    finally:
        await asyncio.to_thread(server.stop)


def assert_all_stored(acked: Acked, debug: set[str], tracks: dict[int, int]) -> None:
    assert acked.debug <= debug, f"{len(acked.debug - debug)} acknowledged debug rows missing"
    assert acked.tracks <= set(tracks), f"{len(acked.tracks - set(tracks))} acknowledged mappings missing"
    assert set(tracks.values()) == {1}, "a replayed mapping was applied twice"


def spool_lines(data_dir: Path) -> int:
    path = data_dir / "spool" / "writes.jsonl"
    offset_file = data_dir / "spool" / "writes.offset"
    offset = int(offset_file.read_text() or 0) if offset_file.exists() else 0
    return path.read_bytes()[offset:].count(b"\n") if path.exists() else 0


async def start_and_stop(env: dict[str, str], *args: str) -> None:
    """Runs `serve` until it is ready (so the spool has been replayed), then stops it cleanly."""
    daemon = Daemon(*args, env=env)
    try:
        daemon.wait_for("ready")
        daemon.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.proc.wait, STOP_DEADLINE) == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
    assert daemon.wait_for("stopped")["drained"] is True


async def test_sigterm_under_traffic_drains_stops_postgres_and_loses_nothing(tmp_path: Path,
                                                                            env: dict[str, str]) -> None:
    data_dir, port = tmp_path / "data", free_port()
    daemon = Daemon("--osc-port", str(port), "--data-dir", str(data_dir), env=env)
    try:
        daemon.wait_for("ready")
        acked, stop = Acked(), asyncio.Event()
        traffic = asyncio.create_task(send_writes(port, acked, stop))
        await wait_for_acks(acked, 600)

        daemon.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = await asyncio.to_thread(daemon.proc.wait, STOP_DEADLINE + 5)
        elapsed = time.monotonic() - signalled
        stop.set()
        await traffic
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
    assert code == 0
    assert elapsed < STOP_DEADLINE, f"took {elapsed:.1f} s"  # the promise; about 1 s here, mostly PostgreSQL's stop
    stopped = daemon.wait_for("stopped")
    assert stopped["drained"] is True
    assert [e["event"] for e in daemon.events].count("stopping") == 1

    # Everything queued was written before the exit, and the embedded server went down with the daemon.
    assert spool_lines(data_dir) == 0
    assert running_url(data_dir / "postgres") is None

    assert_all_stored(acked, *await stored(data_dir))


async def test_second_sigterm_during_the_drain_exits_at_once_and_the_next_start_replays(
        tmp_path: Path, env: dict[str, str]) -> None:
    data_dir, port = tmp_path / "data", free_port()
    daemon = Daemon("--osc-port", str(port), "--data-dir", str(data_dir), env=env)
    try:
        daemon.wait_for("ready")
        url = running_url(data_dir / "postgres")
        assert url is not None
        # Hold the debug table locked, as a long query or a slow disk would, so the writer cannot finish and
        # the drain is still running when the second signal comes.
        blocker = await asyncpg.connect(url)
        await blocker.execute("BEGIN; LOCK TABLE mission_control_debug IN ACCESS EXCLUSIVE MODE")
        acked, stop = Acked(), asyncio.Event()
        # Every write is answered (from the spool) while the table is locked; 5 s per call, so that a loaded
        # machine's slow answer is not taken for a missing one.
        traffic = asyncio.create_task(send_writes(port, acked, stop, timeout=5.0))
        await wait_for_acks(acked, 300)
        stop.set()
        await traffic
        assert acked.unanswered == 0

        daemon.proc.send_signal(signal.SIGTERM)
        daemon.wait_for("stopping")
        await asyncio.sleep(0.5)  # the drain is now waiting on the lock
        assert daemon.proc.poll() is None
        daemon.proc.send_signal(signal.SIGTERM)
        second = time.monotonic()
        code = await asyncio.to_thread(daemon.proc.wait, STOP_DEADLINE + 5)
        took = time.monotonic() - second
        assert took < 5.0, f"took {took:.1f} s"  # at once, not after the drain: it waits on the lock for 8 s
        assert code != 0
        daemon.wait_for("stopping_now")
        with_lock_released = blocker.close()
        await asyncio.wait_for(with_lock_released, 10)
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()

    # What was acknowledged but not yet written is in the spool, intact.
    assert spool_lines(data_dir) > 0
    # The embedded PostgreSQL did not outlive the daemon.
    for _ in range(100):
        if running_url(data_dir / "postgres") is None:
            break
        await asyncio.sleep(0.1)
    assert running_url(data_dir / "postgres") is None

    # The next start replays the spool; a clean stop then leaves it empty.
    await start_and_stop(env, "--osc-port", str(port), "--data-dir", str(data_dir))
    assert spool_lines(data_dir) == 0

    assert_all_stored(acked, *await stored(data_dir))


async def test_after_sigkill_the_next_start_adopts_the_orphaned_postgres_and_replays(
        tmp_path: Path, env: dict[str, str]) -> None:
    """SIGKILL (launchd after ExitTimeOut) cannot be caught: PostgreSQL, detached by pg_ctl, keeps running. The
    next start must attach to it, replay the spool, and stop it on its clean stop."""
    data_dir, port = tmp_path / "data", free_port()
    args = ("--osc-port", str(port), "--data-dir", str(data_dir))
    daemon = Daemon(*args, env=env)
    try:
        daemon.wait_for("ready")
        acked, stop = Acked(), asyncio.Event()
        traffic = asyncio.create_task(send_writes(port, acked, stop))
        await wait_for_acks(acked, 300)
        daemon.proc.kill()
        await asyncio.to_thread(daemon.proc.wait, 5)
        stop.set()
        await traffic
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
    assert running_url(data_dir / "postgres") is not None  # the orphan

    await start_and_stop(env, *args)
    assert running_url(data_dir / "postgres") is None
    assert spool_lines(data_dir) == 0
    assert_all_stored(acked, *await stored(data_dir))


async def test_sigterm_with_a_hung_database_still_exits_in_time(tmp_path: Path, env: dict[str, str]) -> None:
    """A database server that stops answering mid-write (a NAS asleep, a frozen VM) cannot hold up the stop: what
    the writer could not write stays in the spool, and the next start writes it."""
    server = EmbeddedServer(tmp_path / "pg")  # its own server: frozen backends must not disturb other tests
    frozen: list[int] = []
    try:
        url = await server.new_database()
        data_dir, port = tmp_path / "data", free_port()
        args = ("--osc-port", str(port), "--data-dir", str(data_dir), "--database-url", url)
        daemon = Daemon(*args, env=env)
        try:
            daemon.wait_for("ready")
            acked, stop = Acked(), asyncio.Event()
            traffic = asyncio.create_task(send_writes(port, acked, stop))
            await wait_for_acks(acked, 200)
            admin = await asyncpg.connect(server.admin_url)
            try:
                name = url.split("?")[0].rsplit("/", 1)[1]
                for row in await admin.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", name):
                    os.kill(row["pid"], signal.SIGSTOP)  # the bridge's server processes: frozen, sockets open
                    frozen.append(row["pid"])
            finally:
                await admin.close()
            assert frozen
            await wait_for_acks(acked, acked.count + 200)  # acknowledged into the spool, not written

            daemon.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            code = await asyncio.to_thread(daemon.proc.wait, STOP_DEADLINE + 10)
            elapsed = time.monotonic() - signalled
            stop.set()
            await traffic
        finally:
            if daemon.proc.poll() is None:
                daemon.proc.kill()
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        assert code == 0
        assert elapsed < STOP_DEADLINE, f"took {elapsed:.1f} s"
        assert daemon.wait_for("stopped")["drained"] is False
        assert spool_lines(data_dir) > 0

        await start_and_stop(env, *args)
        assert spool_lines(data_dir) == 0
        assert_all_stored(acked, *await read_back(url))
    finally:
        server.cleanup()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    logs.configure_logging("warning")  # what tests/conftest.py set up for the rest of the run


def test_log_file_rotates_by_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None) -> None:
    monkeypatch.setattr(logs, "LOG_MAX_BYTES", 2000)
    log_file = tmp_path / "logs" / "oscbridge.log"
    logs.configure_logging("info", log_file)
    logger = logs.get_logger("oscbridge.test")
    for i in range(400):
        logger.info("line", number=i, filler="x" * 50)
    logging.getLogger("asyncpg").warning("from a library")  # the standard logging path rotates too

    files = sorted(log_file.parent.iterdir())
    names = [f.name for f in files]
    assert names == ["oscbridge.log"] + [f"oscbridge.log.{i}" for i in range(1, logs.LOG_BACKUPS + 1)]
    for f in files:
        assert f.stat().st_size <= 2000
        for line in f.read_text().splitlines():
            json.loads(line)
    newest = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert newest[-1]["event"] == "from a library" and newest[-1]["logger"] == "asyncpg"
    assert newest[-2]["number"] == 399
    # Old lines are gone: the disk holds at most (backups + 1) x max size.
    kept = [json.loads(line).get("number") for f in files for line in f.read_text().splitlines()]
    assert 0 not in kept
