"""schema.sql on a real PostgreSQL: idempotent, versioned, and the original's defects fixed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from oscbridge.store.db import SchemaError, apply_schema, schema_path


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(database_url)
    await apply_schema(c)
    yield c
    await c.close()


async def test_applies_twice_and_records_its_version(conn: asyncpg.Connection) -> None:
    assert await apply_schema(conn) == 1
    assert await conn.fetchval("SELECT array_agg(version) FROM schema_version") == [1]


async def test_refuses_a_newer_database(conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO schema_version (version, description) VALUES (99, 'future')")
    with pytest.raises(SchemaError, match="newer than this oscbridge"):
        await apply_schema(conn)


async def _session(conn: asyncpg.Connection, name: str = "P") -> tuple[uuid.UUID, uuid.UUID]:
    pid = await conn.fetchval("SELECT get_or_create_project($1)", name)
    sid = await conn.fetchval("SELECT start_session($1)", pid)
    return pid, sid


async def test_get_or_create_and_start_session_are_race_free(database_url: str, conn: asyncpg.Connection) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(8)]
    try:
        ids = await asyncio.gather(*(c.fetchval("SELECT get_or_create_project('Race')") for c in conns))
        assert len(set(ids)) == 1
        await asyncio.gather(*(c.fetchval("SELECT start_session($1)", ids[0]) for c in conns))
        assert await conn.fetchval("SELECT count(*) FROM sessions WHERE is_active AND project_id = $1", ids[0]) == 1
    finally:
        for c in conns:
            await c.close()


async def test_one_active_session_and_one_current_row_per_track_and_plugin(conn: asyncpg.Connection) -> None:
    pid, sid = await _session(conn)
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute("INSERT INTO sessions (project_id) VALUES ($1)", pid)
    insert = ("INSERT INTO track_assignments (project_id, session_id, track_number, track_name, plugin_id) "
              "VALUES ($1, $2, $3, $4, $5)")
    await conn.execute(insert, pid, sid, 1, "Kick", "TR1")
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(insert, pid, sid, 1, "Kick again", "TR2")
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(insert, pid, sid, 2, "Snare", "TR1")  # audit: Kick->TR1 and Snare->TR1 were accepted
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(insert, pid, sid, 0, "Zero", "TR3")
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(insert, pid, sid, 3, "Bad", "Kick")


async def test_session_must_belong_to_the_project(conn: asyncpg.Connection) -> None:
    _pid_a, sid_a = await _session(conn, "A")
    pid_b, _ = await _session(conn, "B")
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await conn.execute("INSERT INTO messages (project_id, session_id, role, content) VALUES ($1, $2, 'user', 'x')",
                           pid_b, sid_a)


async def test_empty_snapshot_is_refused(conn: asyncpg.Connection) -> None:
    pid, sid = await _session(conn)
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("INSERT INTO context_snapshots (project_id, session_id, name, message_ids) "
                           "VALUES ($1, $2, 'snap', '{}')", pid, sid)


async def test_sessions_have_a_single_foreign_key_to_projects(conn: asyncpg.Connection) -> None:
    count = await conn.fetchval("SELECT count(*) FROM pg_constraint WHERE conrelid = 'sessions'::regclass "
                                "AND contype = 'f'")
    assert count == 1


async def test_recent_messages_view_is_not_limited_globally(conn: asyncpg.Connection) -> None:
    pid_a, sid_a = await _session(conn, "A")
    pid_b, sid_b = await _session(conn, "B")
    insert = "INSERT INTO messages (project_id, session_id, role, content) VALUES ($1, $2, 'user', $3)"
    await conn.execute(insert, pid_a, sid_a, "from A")
    for i in range(12):
        await conn.execute(insert, pid_b, sid_b, f"from B {i}")
    assert await conn.fetchval("SELECT count(*) FROM recent_messages WHERE project_id = $1", pid_a) == 1


async def test_conversation_context_is_deterministic_capped_and_handles_null(conn: asyncpg.Connection) -> None:
    from pgvector.asyncpg import register_vector

    await register_vector(conn)
    pid, sid = await _session(conn)
    vec = [0.0] * 768
    vec[0] = 1.0
    insert = ("INSERT INTO messages (project_id, session_id, role, content, embedding, is_key_decision, created_at) "
              "VALUES ($1, $2, 'user', $3, $4, $5, now() - make_interval(secs => $6))")
    for i in range(30):
        await conn.execute(insert, pid, sid, f"m{i}", vec, i == 25, float(100 - i))
    rows = await conn.fetch("SELECT * FROM get_conversation_context($1, $2, 7)", pid, vec)
    assert len(rows) == 7
    times = [r["created_at"] for r in rows]
    assert times == sorted(times)
    assert any(r["is_key_decision"] for r in rows)
    assert len({r["message_id"] for r in rows}) == 7
    rows_null = await conn.fetch("SELECT * FROM get_conversation_context($1, NULL, 20)", pid)
    assert rows_null and all(r["similarity"] == 0.0 for r in rows_null)
    assert all(r["is_recent"] or r["is_key_decision"] for r in rows_null)


def test_schema_file_ships_with_the_package() -> None:
    assert schema_path().read_text().startswith("-- oscbridge database schema")
