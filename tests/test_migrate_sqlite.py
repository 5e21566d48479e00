"""`oscbridge migrate-sqlite` on databases built here in the legacy schema (storage audit section 2): dry run,
bad rows reported and skipped, duplicates resolved, idempotency, newer mappings kept, the default and sandboxed
paths, and the daemon seeing the result."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from oscbridge.client import BridgeClient
from oscbridge.tools.migrate_sqlite import SANDBOXED, migrate, report
from tests.conftest import free_port, make_settings, run_cli
from tests.memory_support import fetch, running

LEGACY_SCHEMA = """
CREATE TABLE track_mappings (
    temp_id TEXT PRIMARY KEY,
    logic_uuid TEXT NOT NULL,
    track_name TEXT NOT NULL,
    track_number INTEGER,
    last_updated TIMESTAMP DEFAULT CURRENT_TIMESTAMP
)
"""
ROWS: list[tuple[Any, ...]] = [
    ("TR1", "TR1", "Kick", 1, "2024-05-01 10:00:00"),
    ("TR2", "TR2", "Snare", 2, "2024-05-01 10:00:01"),
    ("TR3", "TR3", "Bass (old)", 3, "2024-04-01 09:00:00"),
    ("TR9", "TR9", "Bass", 3, "2024-05-02 12:00:00"),  # same track number, newer: wins
    ("TR4", "TR4", "No number", None, "2024-05-01 10:00:00"),
    ("TR5", "TR5", "Zero", 0, "2024-05-01 10:00:00"),
    ("TR6", "TR6", "Text", "three", "2024-05-01 10:00:00"),
    ("TR7", "TR7", "Half", 2.5, "2024-05-01 10:00:00"),
    ("X8", "X8", "Not a plugin id", 8, "2024-05-01 10:00:00"),
    ("TR10", "TR10", "Vox 'lead'; DROP TABLE projects; --", 10, None),
]
CURRENT = "SELECT track_number, track_name, plugin_id, assigned_at FROM track_assignments WHERE is_current " \
          "ORDER BY track_number"


def legacy_db(path: Path, rows: Sequence[tuple[Any, ...]] = ROWS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute(LEGACY_SCHEMA)
    for row in rows:
        if row[4] is None:
            conn.execute("INSERT INTO track_mappings (temp_id, logic_uuid, track_name, track_number) "
                         "VALUES (?, ?, ?, ?)", row[:4])
        else:
            conn.execute("INSERT INTO track_mappings VALUES (?, ?, ?, ?, ?)", row)
    conn.commit()
    conn.close()
    return path


async def connect(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(url)
    from oscbridge.store.schema import apply_schema

    await apply_schema(conn)
    return conn


async def test_dry_run_then_import_then_nothing_changes(tmp_path: Path, database_url: str) -> None:
    source = legacy_db(tmp_path / "track_mappings.db")
    conn = await connect(database_url)
    try:
        dry = await migrate(conn, [source], None, dry_run=True)
        assert (dry.project, dry.project_id) == ("Default Project", None)
        assert [r.temp_id for r in dry.imports] == ["TR1", "TR2", "TR9", "TR10"]
        assert await conn.fetchval("SELECT count(*) FROM projects") == 0  # a dry run writes nothing
        lines = list(report(dry, dry_run=True))
        assert any("would import: TR9 'Bass'" in line for line in lines)
        assert any("duplicate track number 3: kept TR9 'Bass'" in line and "dropped TR3" in line for line in lines)
        reasons = {bad.temp_id: bad.reason for bad in dry.skipped}
        assert reasons == {
            "TR4": "missing track number (NULL)", "TR5": "track number 0 is not positive",
            "TR6": "non-numeric track number 'three'", "TR7": "track number 2.5 is not a whole number",
            "X8": "temp_id must start with 'TR'; got 'X8'",
        }
        assert lines[-1] == ("summary: 10 row(s) read, 4 would import, 0 unchanged, 0 kept newer, "
                             "1 duplicate(s) dropped, 5 skipped (dry run: nothing was written)")

        done = await migrate(conn, [source], None, dry_run=False)
        assert len(done.imports) == 4 and done.project_id is not None
        rows = await conn.fetch(CURRENT)
        assert [(r["track_number"], r["track_name"], r["plugin_id"]) for r in rows] == [
            (1, "Kick", "TR1"), (2, "Snare", "TR2"), (3, "Bass", "TR9"),
            (10, "Vox 'lead'; DROP TABLE projects; --", "TR10")]
        assert rows[2]["assigned_at"].isoformat() == "2024-05-02T12:00:00+00:00"  # last_updated kept
        sessions = await conn.fetch("SELECT is_active FROM sessions")
        assert [s["is_active"] for s in sessions] == [False]

        before = [dict(r) for r in await conn.fetch("SELECT * FROM track_assignments ORDER BY id")]
        again = await migrate(conn, [source], None, dry_run=False)
        assert (len(again.imports), len(again.unchanged)) == (0, 4)
        assert [dict(r) for r in await conn.fetch("SELECT * FROM track_assignments ORDER BY id")] == before
        assert await conn.fetchval("SELECT count(*) FROM sessions") == 1  # no session for an empty import
    finally:
        await conn.close()


async def test_newer_mappings_in_postgresql_are_kept(tmp_path: Path, database_url: str) -> None:
    conn = await connect(database_url)
    try:
        await migrate(conn, [legacy_db(tmp_path / "a.db", ROWS[:2])], "Song", dry_run=False)
        # Later the daemon moved the kick to track 5 (newer than any legacy row)...
        await conn.execute("UPDATE track_assignments SET track_number = 5, assigned_at = now() "
                           "WHERE plugin_id = 'TR1'")
        # ... and an older legacy copy of the same mapping must not undo that.
        plan = await migrate(conn, [legacy_db(tmp_path / "b.db", ROWS[:2])], "Song", dry_run=False)
        assert [(row.temp_id, current.track_number) for row, current in plan.kept_newer] == [("TR1", 5)]
        rows = await conn.fetch(CURRENT)
        assert [(r["track_number"], r["plugin_id"]) for r in rows] == [(2, "TR2"), (5, "TR1")]
    finally:
        await conn.close()


async def test_cli_finds_the_sandboxed_file_and_says_a_running_daemon_must_restart(
        tmp_path: Path, database_url: str) -> None:
    home = tmp_path / "home"
    legacy_db(home / SANDBOXED)
    env = {**os.environ, "HOME": str(home)}
    async with running(make_settings(tmp_path, database_url)) as bridge:
        args = ["migrate-sqlite", "--database-url", database_url, "--osc-port", str(bridge.port)]
        first = await asyncio.to_thread(run_cli, *args, "--project", "My Song", env=env)
        assert first.returncode == 0, first.stderr
        assert f"source {home / SANDBOXED}: 10 row(s)" in first.stdout
        assert "summary: 10 row(s) read, 4 imported" in first.stdout
        assert "oscbridge is running" in first.stdout and "restart it" in first.stdout
        second = await asyncio.to_thread(run_cli, *args, "--project", "My Song", env=env)
        assert "summary: 10 row(s) read, 0 imported, 4 unchanged" in second.stdout
        assert "oscbridge is running" not in second.stdout  # nothing changed, nothing to restart for

    missing = run_cli(*args, str(tmp_path / "nope.db"), env=env)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    (tmp_path / "junk.db").write_text("not sqlite at all " * 100)
    junk = run_cli(*args, str(tmp_path / "junk.db"), env=env)
    assert junk.returncode == 1 and "junk.db" in junk.stderr and "legacy" in junk.stderr
    nothing = run_cli(*args, env={**env, "HOME": str(tmp_path / "empty-home")})
    assert nothing.returncode == 0 and "nothing to import" in nothing.stdout


async def test_cli_with_the_embedded_database_of_the_data_dir(tmp_path: Path) -> None:
    """The default setup: no database URL. A dry run before the first start writes nothing at all; the import
    starts the embedded server itself, and the daemon started later on that data dir serves the mappings."""
    source = legacy_db(tmp_path / "legacy.db")
    data = tmp_path / "data"
    args = ["migrate-sqlite", str(source), "--data-dir", str(data), "--osc-port", str(free_port())]
    dry = await asyncio.to_thread(run_cli, *args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "target project 'Default Project' (to be created)" in dry.stdout and "4 would import" in dry.stdout
    assert not (data / "postgres").exists()
    done = await asyncio.to_thread(run_cli, *args)
    assert done.returncode == 0, done.stderr
    assert "4 imported" in done.stdout
    async with running(make_settings(tmp_path, None)) as bridge:
        client = await BridgeClient.connect("127.0.0.1", bridge.port, transport="udp")
        assert len(await client.rows("/bridge/mapping/list")) == 4
        await client.close()


async def test_a_started_daemon_serves_the_imported_mappings(tmp_path: Path, database_url: str) -> None:
    conn = await connect(database_url)
    try:
        await migrate(conn, [legacy_db(tmp_path / "t.db")], None, dry_run=False)
    finally:
        await conn.close()
    async with running(make_settings(tmp_path, database_url)) as bridge:
        client = await BridgeClient.connect("127.0.0.1", bridge.port, transport="udp")
        assert (await client.call("/bridge/project/current"))[0] == "Default Project"
        rows = await client.rows("/bridge/mapping/list")
        assert [(r[0], r[1], r[2]) for r in rows] == [(1, "Kick", "TR1"), (2, "Snare", "TR2"), (3, "Bass", "TR9"),
                                                      (10, "Vox 'lead'; DROP TABLE projects; --", "TR10")]
        await client.close()
    assert len(await fetch(database_url, CURRENT)) == 4


@pytest.mark.parametrize("dry_run", [True, False])
async def test_both_default_files_are_merged_newest_first(tmp_path: Path, database_url: str, dry_run: bool) -> None:
    old = legacy_db(tmp_path / "old.db", [("TR1", "TR1", "Kick", 1, "2024-01-01 00:00:00")])
    new = legacy_db(tmp_path / "new.db", [("TR1", "TR1", "Kick 2", 1, "2024-06-01 00:00:00")])
    conn = await connect(database_url)
    try:
        plan = await migrate(conn, [old, new], "Merged", dry_run=dry_run)
    finally:
        await conn.close()
    assert [(r.track_name, r.source) for r in plan.imports] == [("Kick 2", new)]
    assert [(kept.source, dropped.source, key) for kept, dropped, key in plan.duplicates] == [
        (new, old, "track number 1")]
