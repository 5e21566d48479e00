"""A full disk is temporary: refused writes are never stored, acknowledged writes are stored exactly once.

Real disk-full conditions on small tmpfs mounts (root only; skipped with the reason otherwise), real PostgreSQL
errors for the classification, and a real short write (RLIMIT_FSIZE) for the spool's rollback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import pwd
import resource
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from oscbridge.app import Bridge
from oscbridge.client import BridgeClient, BridgeRequestError
from oscbridge.store.db import classify
from oscbridge.store.spool import Spool, SpoolError, SpoolLocked, free_bytes
from oscbridge.store.writes import WRITE_TYPES, DebugRow
from oscbridge.tools import doctor
from tests.conftest import EmbeddedServer, make_settings, run_cli, running, wait_until

PAGE = 4096


# ------------------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str, **options: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted on `path` for the block; skips the test when that is not possible."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill it needs root")
    path.mkdir(parents=True, exist_ok=True)
    opts = ",".join([f"size={size}", *(f"{k}={v}" for k, v in options.items())])
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path, leave: int = 0) -> None:
    """Writes `path` until its filesystem is full, then gives back `leave` bytes."""
    with open(path, "wb") as fh:
        chunk = b"\0" * (64 * 1024)
        with contextlib.suppress(OSError):
            while True:
                fh.write(chunk)
                fh.flush()
        with contextlib.suppress(OSError):
            fh.flush()  # whatever part of the last chunk is still buffered
    size = path.stat().st_size
    while True:  # the buffered tail may have landed partially: shrink until the kernel agrees there is room
        os.truncate(path, max(0, size - leave))
        if free_bytes(path.parent) >= leave:
            return
        size -= PAGE


async def stored_contents(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT content, count(*) AS n FROM mission_control_debug GROUP BY content")
    finally:
        await conn.close()
    return {r["content"]: r["n"] for r in rows}


async def log_line(client: BridgeClient, content: str) -> str | None:
    """Sends one /bridge/debug/log; returns the row id, or None when refused with `unavailable`."""
    try:
        (row_id,) = await client.call("/bridge/debug/log", "test", "", "log", content, "", "info", timeout=5)
    except BridgeRequestError as exc:
        assert exc.code == "unavailable", exc
        assert "nothing was stored" in exc.message, exc.message
        return None
    return str(row_id)


class Tracebacks(logging.Handler):
    """Collects log records that carry a traceback (the bridge must log none for a full disk)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "Traceback" in record.getMessage():
            self.records.append(record)


@pytest.fixture
def tracebacks() -> Iterator[Tracebacks]:
    handler = Tracebacks()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


# ------------------------------------------------------------------------------------------------------------
# The spool: whole or nothing, a cap, one owner
# ------------------------------------------------------------------------------------------------------------


def test_a_write_that_fails_half_way_leaves_the_spool_exactly_as_before(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, reserve_bytes=0)
    try:
        assert spool.append({"k": "x", "d": {"i": 1}}) == 1
        before = (tmp_path / "writes.jsonl").read_bytes()
        # A real short write: the kernel writes up to the file size limit, then refuses the rest (EFBIG).
        old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
        old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 100, old_limit[1]))
        try:
            with pytest.raises(SpoolError, match="nothing was stored") as refused:
                spool.append({"k": "x", "d": {"text": "y" * 1000}})
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
            signal.signal(signal.SIGXFSZ, old_handler)
        assert refused.value.errno == errno.EFBIG
        assert (tmp_path / "writes.jsonl").read_bytes() == before
        assert (spool.pending, spool.appended, spool.refused) == (1, 1, 1)
        # The next write lands right after the first; the refused one never shows up.
        assert spool.append({"k": "x", "d": {"i": 2}}) == 2
        ops, _ = spool.read_batch(10)
        assert [op["d"] for op in ops] == [{"i": 1}, {"i": 2}]
    finally:
        spool.close()


def test_the_cap_drops_best_effort_writes_first_then_refuses(tmp_path: Path) -> None:
    cap = 64 * 1024
    spool = Spool(tmp_path, max_bytes=cap, reserve_bytes=0)
    try:
        row = {"k": "debug_row", "d": {"content": "z" * 900}}
        line = len(json.dumps(row, separators=(",", ":"))) + 1
        accepted_best_effort = 0
        while spool.append(row, best_effort=True) is not None:
            accepted_best_effort += 1
        assert accepted_best_effort == int(cap * 0.75) // line and spool.dropped == 1
        while True:  # the writes that matter still go in, up to the cap
            try:
                spool.append(row)
            except SpoolError as exc:
                assert "the spool's cap is 64 KiB (spool_max_bytes)" in str(exc) and "nothing was stored" in str(exc)
                break
        assert cap - line < spool.unapplied_bytes <= cap
        assert (tmp_path / "writes.jsonl").stat().st_size == spool.unapplied_bytes
        assert spool.append(row, best_effort=True) is None and spool.dropped == 2
        # Committing what was written makes room again.
        ops, end = spool.read_batch(10_000)
        spool.commit(end, len(ops))
        assert spool.unapplied_bytes == 0 and spool.append(row, best_effort=True) is not None
    finally:
        spool.close()


def test_a_best_effort_write_is_dropped_when_the_disk_is_nearly_full(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, reserve_bytes=1 << 62)  # no disk has that much free
    try:
        assert spool.append({"k": "x", "d": {}}, best_effort=True) is None and spool.dropped == 1
        assert spool.append({"k": "x", "d": {}}) == 1  # the writes that matter are not held back
    finally:
        spool.close()


def test_one_process_owns_a_spool(tmp_path: Path) -> None:
    first = Spool(tmp_path, max_bytes=1 << 20, reserve_bytes=0, owner={"host": "127.0.0.1", "port": 8999})
    try:
        with pytest.raises(SpoolLocked, match="in use by another oscbridge process") as locked:
            Spool(tmp_path, max_bytes=1 << 20, reserve_bytes=0)
        assert locked.value.owner == {"pid": os.getpid(), "host": "127.0.0.1", "port": 8999}
    finally:
        first.close()
    Spool(tmp_path, max_bytes=1 << 20, reserve_bytes=0).close()  # released with the first


# ------------------------------------------------------------------------------------------------------------
# PostgreSQL errors: temporary or refused for good
# ------------------------------------------------------------------------------------------------------------


async def caught(conn: asyncpg.Connection, sql: str) -> BaseException:
    try:
        await conn.execute(sql)
    except Exception as exc:
        return exc
    raise AssertionError(f"{sql} did not fail")


async def test_real_postgresql_errors_are_classified(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    other = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY, n int CHECK (n > 0))")
        await conn.execute("INSERT INTO t VALUES (1, 1)")
        refused = {
            "23514": await caught(conn, "INSERT INTO t VALUES (2, -1)"),  # CHECK
            "23505": await caught(conn, "INSERT INTO t VALUES (1, 5)"),  # duplicate key
            "22P02": await caught(conn, "INSERT INTO t VALUES ('x', 1)"),  # invalid input
            "42P01": await caught(conn, "INSERT INTO missing VALUES (1)"),  # the schema no longer fits
        }
        try:  # a bad argument type is refused by the driver before it reaches the server
            await conn.execute("INSERT INTO t VALUES ($1, 1)", "three")
        except Exception as exc:
            refused["22000"] = exc
        temporary = {"57014": await caught(conn, "SET statement_timeout = 1; SELECT pg_sleep(1)")}
        await conn.execute("RESET statement_timeout")
        async with other.transaction():
            await other.execute("SELECT * FROM t WHERE id = 1 FOR UPDATE")
            temporary["55P03"] = await caught(conn, "SELECT * FROM t WHERE id = 1 FOR UPDATE NOWAIT")
        tx = conn.transaction(isolation="repeatable_read")
        await tx.start()
        await conn.fetch("SELECT * FROM t")
        await other.execute("UPDATE t SET n = 2 WHERE id = 1")
        temporary["40001"] = await caught(conn, "UPDATE t SET n = 3 WHERE id = 1")
        await tx.rollback()
        pid = await other.fetchval("SELECT pg_backend_pid()")
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
        try:
            await other.fetchval("SELECT 1")
        except Exception as exc:
            dropped: BaseException = exc
        else:  # pragma: no cover - makes a failure readable
            raise AssertionError("the terminated connection still answered")
    finally:
        await conn.close()
        other.terminate()
    for state, error in refused.items():
        assert getattr(error, "sqlstate", None) == state and classify(error) == "refused", (state, error)
    for state, error in temporary.items():
        assert getattr(error, "sqlstate", None) == state and classify(error) == "temporary", (state, error)
    assert classify(dropped) == "connection", dropped
    assert classify(KeyError("d")) == classify(ValueError()) == "refused"
    assert classify(RuntimeError("a bug")) == "unknown"
    assert classify(ConnectionRefusedError()) == "connection"


# ------------------------------------------------------------------------------------------------------------
# The spool's disk full
# ------------------------------------------------------------------------------------------------------------


async def test_spool_disk_full_refuses_writes_until_space_is_freed(tmp_path: Path, database_url: str,
                                                                 tracebacks: Tracebacks) -> None:
    with tmpfs(tmp_path / "small", "1m") as disk:
        settings = replace(make_settings(tmp_path, database_url, disk_reserve_bytes=0), data_dir=disk / "data")
        big = "x" * 6000  # more than the page left free below: written in part, then refused and undone
        acked: dict[str, str] = {}  # content -> row id
        refused: list[str] = []
        async with running(settings) as bridge, \
                await BridgeClient.connect("127.0.0.1", bridge.port, transport="tcp") as client:
            writer = bridge.writer

            async def send(content: str) -> None:
                row_id = await log_line(client, content)
                if row_id is None:
                    refused.append(content)
                else:
                    acked[content] = row_id

            for i in range(5):
                await send(f"before {i} {big}")
            assert await writer.flush(10) and len(acked) == 5
            fill(disk / "filler", leave=PAGE)
            for i in range(5):
                await send(f"full, large {i} {big}")
            assert refused == [f"full, large {i} {big}" for i in range(5)]
            # A project switch that cannot be stored changes nothing: the bridge stays in its session (else every
            # later write would name a session the database never got, and be rejected).
            current = await client.call("/bridge/project/current")
            with pytest.raises(BridgeRequestError) as err:
                await client.call("/bridge/project/open", "Another Song", "/Music/" + "p" * 4000)
            assert err.value.code == "unavailable" and "nothing was stored" in err.value.message
            assert await client.call("/bridge/project/current") == current
            # Small writes in a burst take the page left until it is full (unless the writer empties the spool
            # in between): whichever way each one goes, it is either stored once or not at all.
            await asyncio.gather(*(send(f"full, small {i}") for i in range(60)))
            status = await client.call("/bridge/status")
            assert status[4] == 1 and status[6] == 0 and status[8] == 0  # database up, no MiB free, none rejected
            (disk / "filler").unlink()
            for i in range(5):
                await send(f"after {i} {big}")
            assert all(not c.startswith("after") for c in refused)
            assert await writer.flush(10)
            assert writer.spool.refused == len(refused) + 1  # and the project switch
    stored = await stored_contents(database_url)
    assert {c: stored.get(c) for c in acked} == dict.fromkeys(acked, 1)
    assert not set(refused) & set(stored)
    assert not tracebacks.records, [r.getMessage() for r in tracebacks.records]


# ------------------------------------------------------------------------------------------------------------
# The database's disk full
# ------------------------------------------------------------------------------------------------------------


async def test_database_disk_full_keeps_writes_in_the_spool_until_space_is_freed(tmp_path: Path,
                                                                                tracebacks: Tracebacks) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill it needs root")
    server = EmbeddedServer(tmp_path / "own-pg")
    try:
        system_user = server._server.system_user
        if system_user is None:  # pragma: no cover - as root the helper always runs PostgreSQL as `pgserver`
            pytest.skip("the embedded PostgreSQL does not run as its own OS user here")
        owner = pwd.getpwnam(system_user)
        with tmpfs(tmp_path / "pgspace", "24m", mode="0755") as disk:
            location = disk / "ts"
            location.mkdir(mode=0o700)
            os.chown(location, owner.pw_uid, owner.pw_gid)
            admin = await asyncpg.connect(server.admin_url)
            try:
                await admin.execute(f"CREATE TABLESPACE small_disk LOCATION '{location}'")
                await admin.execute("CREATE DATABASE on_small_disk TABLESPACE small_disk")
            finally:
                await admin.close()
            url = server.admin_url.replace("/postgres?", "/on_small_disk?")
            await database_full_scenario(tmp_path, url, disk / "filler")
    finally:
        server.cleanup()
    assert not tracebacks.records, [r.getMessage() for r in tracebacks.records]


async def database_full_scenario(tmp_path: Path, url: str, filler: Path) -> None:
    acked: dict[str, str] = {}
    async with running(make_settings(tmp_path, url)) as bridge, \
            await BridgeClient.connect("127.0.0.1", bridge.port, transport="tcp") as client:
        writer = bridge.writer
        for i in range(10):
            acked[f"before {i}"] = str(await log_line(client, f"before {i}"))
        assert await writer.flush(10)
        probe = await asyncpg.connect(url)
        try:
            await probe.execute("CREATE TABLE probe (x text)")
            fill(filler)
            full = await caught(probe, "INSERT INTO probe SELECT repeat('x', 500) FROM generate_series(1, 2000)")
        finally:
            await probe.close()
        assert getattr(full, "sqlstate", None) == "53100" and classify(full) == "temporary", full

        for i in range(300):  # acknowledged: the spool has room
            row_id = await log_line(client, f"while full {i} " + "y" * 200)
            assert row_id is not None
            acked[f"while full {i} " + "y" * 200] = row_id
        await wait_until(lambda: writer.backoff.failures >= 2, timeout=10)
        assert writer.rejected == 0 and writer.spool.pending > 0 and bridge.db.up

        filler.unlink()
        writer.wake()
        assert await writer.flush(20), "the spooled writes did not reach the database once it had room"
        assert writer.rejected == 0 and not (bridge.settings.spool_dir / "rejected.jsonl").exists()
    stored = await stored_contents(url)
    assert {c: stored.get(c) for c in acked} == dict.fromkeys(acked, 1)


# ------------------------------------------------------------------------------------------------------------
# rejected.jsonl and `oscbridge spool retry-rejected`
# ------------------------------------------------------------------------------------------------------------


async def test_retry_rejected_through_the_bridge_then_without_one(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url)
    cli_args = ["spool", "retry-rejected", "--data-dir", str(settings.data_dir), "--database-url", database_url]
    admin = await asyncpg.connect(database_url)
    try:
        async with running(settings) as bridge, \
                await BridgeClient.connect("127.0.0.1", bridge.port, transport="tcp") as client:
            assert set(bridge.writer.kinds) == set(WRITE_TYPES)  # every write type has its applier
            for name in ("a", "b"):  # what a fix will allow again, one at a time
                await admin.execute(f"ALTER TABLE mission_control_debug ADD CONSTRAINT no_{name} "
                                    f"CHECK (content <> 'refused {name}')")
            for content in ("fine 1", "refused a", "refused b", "fine 2"):
                assert await log_line(client, content) is not None  # acknowledged: spooled
            assert await bridge.writer.flush(10)
            assert bridge.writer.rejected == 2
            assert (await client.call("/bridge/status"))[8] == 2
            entries = [json.loads(line) for line in (settings.spool_dir / "rejected.jsonl").read_text().splitlines()]
            assert [e["op"]["d"]["content"] for e in entries] == ["refused a", "refused b"]
            assert all("CheckViolationError (23514)" in e["error"] for e in entries)

            await admin.execute("ALTER TABLE mission_control_debug DROP CONSTRAINT no_a")  # the first fix
            done = await asyncio.to_thread(run_cli, *cli_args)
            assert done.returncode == 1, done.stderr  # one is still refused
            assert "re-applied 1, refused again 1 by the running bridge" in done.stdout
            assert (await client.call("/bridge/status"))[8] == 1

        await admin.execute("ALTER TABLE mission_control_debug DROP CONSTRAINT no_b")  # the second fix
        done = await asyncio.to_thread(run_cli, *cli_args)
        assert done.returncode == 0, done.stderr
        assert "re-applied 1, refused again 0 (no bridge is running: applied by this command)" in done.stdout
        assert (settings.spool_dir / "rejected.jsonl").read_text() == ""
        done = await asyncio.to_thread(run_cli, *cli_args)
        assert done.returncode == 0 and "holds no writes to retry" in done.stdout
    finally:
        await admin.close()
    stored = await stored_contents(database_url)
    assert {c: stored.get(c) for c in ("fine 1", "refused a", "refused b", "fine 2")} == dict.fromkeys(
        ("fine 1", "refused a", "refused b", "fine 2"), 1)


async def test_spool_cap_through_the_bridge(tmp_path: Path) -> None:
    url = f"postgresql://postgres@/oscbridge?host={tmp_path}/nowhere"  # down: everything stays in the spool
    settings = make_settings(tmp_path, url, spool_max_bytes=64 * 1024, disk_reserve_bytes=0, drain_timeout=0.5)
    bridge = Bridge(settings)
    await bridge.start()
    try:
        writer = bridge.writer
        project_id, session_id = bridge.projects.ids()
        row = DebugRow(str(uuid.uuid4()), project_id, session_id, "test", None, "log", "w" * 500, None, 0.0)
        async with await BridgeClient.connect("127.0.0.1", bridge.port, transport="tcp") as client:
            accepted = 0
            while await log_line(client, "v" * 500) is not None:
                accepted += 1
            assert accepted > 50
            assert writer.submit_best_effort(row) is None
            status = await client.call("/bridge/status")
            assert status[4] == 0 and 63 * 1024 < status[7] <= 64 * 1024 and status[9] == 1
    finally:
        await bridge.stop()


# ------------------------------------------------------------------------------------------------------------
# The doctor: disk and spool
# ------------------------------------------------------------------------------------------------------------


def test_doctor_disk_and_spool_checks(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, None)
    assert doctor.disk_check(settings).status == "ok"  # the test machine's disk has more than 1 GiB free
    assert doctor.spool_check(settings).message == "empty: every write is in the database"
    settings.spool_dir.mkdir(parents=True)
    (settings.spool_dir / "rejected.jsonl").write_text('{"error":"x","op":{}}\n{"error":"y","op":{}}\n')
    check = doctor.spool_check(settings)
    assert check.status == "warn" and check.message.startswith("2 writes refused by PostgreSQL")
    assert check.fix is not None and "oscbridge spool retry-rejected" in check.fix
    (settings.spool_dir / "writes.jsonl").write_bytes(b"x" * 100 + b"\n")
    check = doctor.spool_check(replace(settings, spool_max_bytes=65536))
    assert check.details["unapplied_bytes"] == 101

    with tmpfs(tmp_path / "small", "1m") as disk:
        small = replace(settings, data_dir=disk / "data")
        check = doctor.disk_check(small)
        assert check.status == "fail" and "under the reserve of 64 MiB" in check.message
        check = doctor.disk_check(replace(small, disk_reserve_bytes=0))
        assert check.status == "warn" and check.message.startswith("only 1 MiB free")
