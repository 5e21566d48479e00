"""schema.sql on a real PostgreSQL: idempotent, versioned, the original's defects fixed, and the SQL interface for
people who query the database directly (docs/sql-interface.md): every view and function in it is tested here."""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from pgvector.asyncpg import register_vector

from oscbridge.app import Bridge
from oscbridge.client import BridgeClient
from oscbridge.memory.dimension import ensure_dimension
from oscbridge.projects import project_id_for
from oscbridge.store.schema import SchemaError, apply_schema, latest_version, schema_sql


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(database_url)
    await apply_schema(c)
    yield c
    await c.close()


async def test_applies_twice_and_records_its_version(conn: asyncpg.Connection) -> None:
    assert await apply_schema(conn) == latest_version()
    assert await conn.fetchval("SELECT array_agg(version ORDER BY version) FROM schema_version") == \
        list(range(1, latest_version() + 1))


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
    assert schema_sql().startswith("-- oscbridge database schema")


# ------------------------------------------------------------------------------------------------------------
# Project ids: the SQL functions make the id the bridge makes (uuid5 of the name)
# ------------------------------------------------------------------------------------------------------------

NAMES = [
    "Default Project",
    "a",
    "Ünïcødé Mix — 日本語 🎛️",  # 2-, 3- and 4-byte UTF-8
    "O'Brien \"Final\" \\ mix; DROP TABLE projects",
    " spaces around ",
    "x" * 255,  # the longest name the schema takes
    "ü" * 255,  # 510 bytes: the hash runs over several 64-byte blocks
]


@pytest.mark.parametrize("size", [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000])
async def test_sha1_matches_hashlib_at_every_padding_boundary(conn: asyncpg.Connection, size: int) -> None:
    """oscbridge_sha1 pads to 64-byte blocks: 55/56 and 119/120 bytes are where the length needs another block."""
    data = random.Random(size).randbytes(size)
    assert await conn.fetchval("SELECT oscbridge_sha1($1)", data) == hashlib.sha1(data).digest()


async def test_get_or_create_project_makes_the_bridges_id(conn: asyncpg.Connection) -> None:
    for name in NAMES:
        expected = uuid.UUID(project_id_for(name))
        assert await conn.fetchval("SELECT project_id_for($1)", name) == expected, name
        assert await conn.fetchval("SELECT get_or_create_project($1, '/Music/x.logicx')", name) == expected, name
        assert await conn.fetchval("SELECT get_or_create_project($1)", name) == expected, name  # found again
    rows = await conn.fetch("SELECT name, logic_project_path FROM projects")
    assert sorted((r["name"], r["logic_project_path"]) for r in rows) == sorted(
        (n, "/Music/x.logicx") for n in NAMES)  # one row each, and a later call without a path keeps it


async def test_concurrent_callers_of_many_names_never_deadlock(database_url: str, conn: asyncpg.Connection) -> None:
    """Each name's id is fixed, so two first inserts of one name collide in both unique indexes of projects; without
    the function's advisory lock, 100 rounds of 8 callers deadlocked 8 times (measured)."""
    conns = [await asyncpg.connect(database_url) for _ in range(8)]
    try:
        for i in range(100):
            name = f"Race {i}"
            ids = await asyncio.gather(*(c.fetchval("SELECT get_or_create_project($1)", name) for c in conns))
            assert set(ids) == {uuid.UUID(project_id_for(name))}
    finally:
        for c in conns:
            await c.close()


async def test_a_live_project_keeps_its_id_and_a_deleted_one_comes_back(conn: asyncpg.Connection) -> None:
    legacy = uuid.uuid4()  # made before ids were derived from names (the old get_or_create_project)
    await conn.execute("INSERT INTO projects (id, name) VALUES ($1, 'Legacy')", legacy)
    assert await conn.fetchval("SELECT get_or_create_project('Legacy')") == legacy

    pid = await conn.fetchval("SELECT get_or_create_project('Shelved')")
    await conn.execute("UPDATE projects SET deleted_at = now() WHERE id = $1", pid)
    assert await conn.fetchval("SELECT get_or_create_project('Shelved')") == pid
    assert await conn.fetchval("SELECT deleted_at FROM projects WHERE id = $1", pid) is None


async def test_the_bridge_and_sql_agree_on_project_ids(bridge: Bridge, udp_client: BridgeClient,
                                                        database_url: str) -> None:
    """A project made by SQL while the bridge runs, then opened through the bridge, is the same row (with a
    random id its name would collide, and the bridge's write would be rejected); and the other way round."""
    conn = await asyncpg.connect(database_url)
    try:
        made_in_sql = await conn.fetchval("SELECT get_or_create_project('Made in SQL')")
        project_id, _session = await udp_client.call("/bridge/project/open", "Made in SQL", "")
        assert project_id == str(made_in_sql)
        bridge_id, _session = await udp_client.call("/bridge/project/open", "Made by the bridge", "")
        assert await bridge.writer.flush(5.0), "writes did not reach PostgreSQL"
        assert str(await conn.fetchval("SELECT get_or_create_project('Made by the bridge')")) == bridge_id
        status = await udp_client.call("/bridge/status")
        assert status[8] == 0  # nothing rejected
        names = await conn.fetch("SELECT name FROM projects WHERE name LIKE 'Made %' ORDER BY name")
        assert [r["name"] for r in names] == ["Made by the bridge", "Made in SQL"]
    finally:
        await conn.close()


# ------------------------------------------------------------------------------------------------------------
# The rest of the SQL interface
# ------------------------------------------------------------------------------------------------------------


async def test_updated_at_follows_every_change_of_a_project(conn: asyncpg.Connection) -> None:
    pid = await conn.fetchval("INSERT INTO projects (name, updated_at) VALUES ('Old', '2020-01-01') RETURNING id")
    async with conn.transaction():
        # The statement the bridge runs when a project is opened again (store/core_ops.py, project_touch).
        await conn.execute("UPDATE projects SET last_opened_at = greatest(last_opened_at, now()) WHERE id = $1", pid)
        assert await conn.fetchval("SELECT updated_at = now() FROM projects WHERE id = $1", pid)
    async with conn.transaction():
        await conn.execute("UPDATE projects SET updated_at = '2020-01-01' WHERE id = $1", pid)
        assert await conn.fetchval("SELECT updated_at = now() FROM projects WHERE id = $1", pid)


async def test_active_sessions_counts_the_messages_of_the_current_session(conn: asyncpg.Connection) -> None:
    pid, first = await _session(conn, "Song")
    insert = "INSERT INTO messages (project_id, session_id, role, content) VALUES ($1, $2, 'user', $3)"
    await conn.execute(insert, pid, first, "before")
    second = await conn.fetchval("SELECT start_session($1)", pid)
    for text in ("one", "two"):
        await conn.execute(insert, pid, second, text)
    rows = await conn.fetch("SELECT * FROM active_sessions")
    assert [(r["session_id"], r["project_id"], r["project_name"], r["message_count"]) for r in rows] == [
        (second, pid, "Song", 2)]
    last = await conn.fetchval("SELECT max(created_at) FROM messages WHERE session_id = $1", second)
    assert rows[0]["last_message_at"] == last


async def test_current_track_assignments_shows_only_current_rows(conn: asyncpg.Connection) -> None:
    pid, sid = await _session(conn, "Song")
    insert = ("INSERT INTO track_assignments (project_id, session_id, track_number, track_name, plugin_id) "
              "VALUES ($1, $2, $3, $4, $5)")
    await conn.execute(insert, pid, sid, 1, "Kick", "TR1")
    await conn.execute(insert, pid, sid, 2, "Snare", "TR2")
    await conn.execute("UPDATE track_assignments SET is_current = false, retired_at = now() "
                       "WHERE project_id = $1 AND track_number = 1", pid)
    await conn.execute(insert, pid, sid, 1, "Kick In", "TR3")
    rows = await conn.fetch("SELECT project_name, track_number, track_name, plugin_id FROM current_track_assignments "
                            "ORDER BY track_number")
    assert [tuple(r) for r in rows] == [("Song", 1, "Kick In", "TR3"), ("Song", 2, "Snare", "TR2")]


async def test_mission_control_complete_merges_conversation_and_debug_log(conn: asyncpg.Connection) -> None:
    pid, sid = await _session(conn, "Song")
    await conn.execute("INSERT INTO mission_control_conversations (project_id, session_id, role, content, created_at) "
                       "VALUES ($1, $2, 'user', 'make the kick louder', now() - interval '2 s')", pid, sid)
    await conn.execute("INSERT INTO mission_control_debug (project_id, session_id, sender, receiver, message_type, "
                       "content, payload, severity, created_at) VALUES ($1, $2, 'bridge', 'TR1', 'osc_out', "
                       "'/aiplayer/gain', '{\"db\": 3}', 'debug', now() - interval '1 s')", pid, sid)
    rows = await conn.fetch("SELECT source_type, sender, receiver, message_type, content, payload, severity "
                            "FROM mission_control_complete WHERE project_id = $1 ORDER BY created_at", pid)
    assert [tuple(r) for r in rows] == [
        ("conversation", "user", None, "chat", "make the kick louder", None, "info"),
        ("debug", "bridge", "TR1", "osc_out", "/aiplayer/gain", '{"db": 3}', "debug"),
    ]


async def test_conversation_context_follows_the_configured_dimension(conn: asyncpg.Connection) -> None:
    """With embed_dim 384 (memory/dimension.py changes the column), the function takes 384-d query vectors."""
    assert (await ensure_dimension(conn, 384)).changed
    await register_vector(conn)
    pid, sid = await _session(conn)
    insert = ("INSERT INTO messages (project_id, session_id, role, content, embedding, created_at) "
              "VALUES ($1, $2, 'user', $3, $4, now() - make_interval(secs => $5)) RETURNING id")
    ids = []
    for i in range(20):
        vec = [0.0] * 384
        vec[i] = 1.0
        ids.append(await conn.fetchval(insert, pid, sid, f"m{i}", vec, float(100 - i)))
    query = [0.0] * 384
    query[3] = 1.0  # the same direction as m3, which is too old to be among the 10 recent ones
    for i in (0, 1, 2, 4, 5, 6):  # and the next nearest are old ones too (no tie with a recent one to break)
        query[i] = 0.1
    rows = await conn.fetch("SELECT * FROM get_conversation_context($1, $2, 12)", pid, query)
    by_id = {r["message_id"]: r for r in rows}
    assert by_id[ids[3]]["similarity"] == pytest.approx(1 / math.sqrt(1.06)) and not by_id[ids[3]]["is_recent"]
    assert len(rows) == 12
    with pytest.raises(asyncpg.DataError, match="different vector dimensions"):
        await conn.fetch("SELECT * FROM get_conversation_context($1, $2)", pid, [0.0] * 768)
