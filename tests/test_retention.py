"""Retention removes only debug traffic older than its age, in batches, while writes go on; conversations are
never removed; /bridge/storage says how big each table is."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from oscbridge.client import BridgeClient
from oscbridge.clock import SYSTEM_CLOCK
from oscbridge.store import retention
from oscbridge.store.db import Database
from oscbridge.store.retention import Retention
from tests.conftest import make_settings, running, wait_until

OLD, NEW = 40, 1  # days


async def seed(conn: asyncpg.Connection, old: int, new: int) -> tuple[str, str]:
    """A project and session with `old` debug rows 40 days old, `new` ones a day old, and old conversation."""
    project = await conn.fetchval("SELECT get_or_create_project('Retained')")
    session = await conn.fetchval("SELECT start_session($1)", project)
    for count, days in ((old, OLD), (new, NEW)):
        await conn.execute(
            "INSERT INTO mission_control_debug (project_id, session_id, sender, message_type, content, created_at) "
            "SELECT $1, $2, 'orchestrator', 'log', 'row ' || n, now() - make_interval(days => $3) "
            "FROM generate_series(1, $4) n", project, session, days, count)
    await conn.execute("INSERT INTO messages (project_id, session_id, role, content, created_at) "
                       "VALUES ($1, $2, 'user', 'an old decision', now() - interval '400 days')", project, session)
    await conn.execute("INSERT INTO mission_control_conversations (project_id, session_id, role, content, "
                       "created_at) VALUES ($1, $2, 'producer', 'an old chat', now() - interval '400 days')",
                       project, session)
    return str(project), str(session)


async def counts(conn: asyncpg.Connection) -> tuple[int, int, int, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM mission_control_debug WHERE created_at < now() - interval '30 days'),"
        " (SELECT count(*) FROM mission_control_debug WHERE created_at >= now() - interval '30 days'),"
        " (SELECT count(*) FROM messages), (SELECT count(*) FROM mission_control_conversations)")
    assert row is not None
    return row[0], row[1], row[2], row[3]


async def test_only_old_debug_rows_go_in_batches_while_writes_continue(database_url: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "RETENTION_BATCH", 300)
    monkeypatch.setattr(retention, "BATCH_PAUSE", 0.01)
    conn = await asyncpg.connect(database_url)
    db = Database(database_url)
    try:
        project, session = await seed(conn, old=2000, new=100)
        written = 0
        stop = asyncio.Event()

        async def keep_writing() -> None:
            nonlocal written
            async with db.acquire() as writer_conn:
                while not stop.is_set():
                    await writer_conn.execute(
                        "INSERT INTO mission_control_debug (project_id, session_id, sender, message_type, content) "
                        "VALUES ($1, $2, 'bridge', 'log', 'during')", project, session)
                    written += 1
                    await asyncio.sleep(0)

        writing = asyncio.create_task(keep_writing())
        remover = Retention(db, 30, 3600, SYSTEM_CLOCK)
        removed = await remover.remove_old()
        stop.set()
        await writing
        assert removed == 2000 and remover.batches == 7  # 6 of 300 rows, then the last 200
        assert written > 0
        assert await counts(conn) == (0, 100 + written, 1, 1)
    finally:
        await db.close()
        await conn.close()


async def test_the_bridge_removes_old_rows_in_the_background_and_reports_sizes(tmp_path: Path,
                                                                             database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await seed(conn, old=500, new=20)
        settings = make_settings(tmp_path, database_url, retention_interval=0.2)
        async with running(settings) as bridge, \
                await BridgeClient.connect("127.0.0.1", bridge.port, transport="tcp") as client:

            async def old_gone() -> bool:
                return (await counts(conn))[0] == 0

            await wait_until(old_gone, timeout=10)
            assert (await counts(conn))[1:] == (20, 1, 1)  # recent traffic, messages, conversations stay
            # The count is taken when the DELETE's answer is read, which may be just after the test saw the rows go.
            await wait_until(lambda: bridge.parts.retention.deleted == 500)
            stats = dict(await client.rows("/bridge/stats"))
            assert stats["retention.deleted"] == 500 and stats["retention.runs"] >= 1
            storage = {row[0]: row[1:] for row in await client.rows("/bridge/storage")}
            assert {"messages", "mission_control_debug", "projects", "sessions"} <= set(storage)
            assert storage["database"][1] >= sum(v[1] for k, v in storage.items() if k != "database")
            assert all(isinstance(rows, int) and size > 0 for rows, size in storage.values())
    finally:
        await conn.close()


async def test_no_retention_keeps_everything(tmp_path: Path, database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await seed(conn, old=50, new=5)
        async with running(make_settings(tmp_path, database_url, debug_retention_days=0, retention_interval=0.1)) \
                as bridge:
            await asyncio.sleep(0.5)
            assert bridge.parts.retention.runs == 0
        assert (await counts(conn))[:2] == (50, 5)
    finally:
        await conn.close()


async def test_a_refused_removal_is_tried_again_and_never_ends_the_retention(tmp_path: Path, database_url: str,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    """Before, anything but a connection error ended the retention task for good, without a word."""
    conn = await asyncpg.connect(database_url)
    try:
        await seed(conn, old=50, new=5)
        await conn.execute("CREATE FUNCTION keep_debug_rows() RETURNS trigger LANGUAGE plpgsql AS "
                           "$$ BEGIN RAISE EXCEPTION 'debug rows are evidence'; END $$")
        await conn.execute("CREATE TRIGGER keep_debug_rows BEFORE DELETE ON mission_control_debug "
                           "FOR EACH ROW EXECUTE FUNCTION keep_debug_rows()")
        async with running(make_settings(tmp_path, database_url, retention_interval=0.1)) as bridge:
            remover = bridge.parts.retention
            await wait_until(lambda: remover.failures >= 2, timeout=10)  # tried again after the first refusal
            assert (await counts(conn))[0] == 50
            assert "retention_failed" in caplog.text and "debug rows are evidence" in caplog.text
            await conn.execute("DROP TRIGGER keep_debug_rows ON mission_control_debug")

            async def old_gone() -> bool:
                return (await counts(conn))[0] == 0

            await wait_until(old_gone, timeout=10)
            await wait_until(lambda: remover.deleted == 50)  # counted when the DELETE's answer is read
    finally:
        await conn.execute("DROP TRIGGER IF EXISTS keep_debug_rows ON mission_control_debug")
        await conn.close()
