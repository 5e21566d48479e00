"""Schema upgrades: a database made by the first release, with data in it, is brought to the current schema by the
migrations, ends up exactly like a new one, keeps its data, and serves a bridge. (Every other test runs on such an
upgraded database too: tests/conftest.py `database_url`.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from oscbridge.client import BridgeClient
from oscbridge.projects import project_id_for
from oscbridge.store import schema
from oscbridge.store.schema import Migration, SchemaError, apply_schema, latest_version, migrations
from tests.conftest import LANDED_SCHEMA, EmbeddedServer, make_settings, running

# The catalog as a person would compare two databases: every table's columns, constraints and indexes, the views,
# functions and triggers, each by its definition.
CATALOG = {
    "columns": """SELECT table_name, column_name, data_type, udt_name, is_nullable, column_default, is_generated,
                         generation_expression
                  FROM information_schema.columns WHERE table_schema = 'public'
                  ORDER BY table_name, column_name""",
    "constraints": """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
                      WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2""",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
    "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY 1",
    "functions": """SELECT proname, pg_get_function_identity_arguments(oid), prosrc FROM pg_proc
                    WHERE pronamespace = 'public'::regnamespace AND prokind = 'f' ORDER BY 1, 2""",
    "triggers": "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1",
}


async def catalog(url: str) -> dict[str, list[tuple[object, ...]]]:
    conn = await asyncpg.connect(url)
    try:
        # Functions of the pgvector extension live in public too; compare ours only.
        ours = await conn.fetchval("SELECT array_agg(p.oid) FROM pg_proc p LEFT JOIN pg_depend d ON d.objid = p.oid "
                                   "AND d.deptype = 'e' WHERE p.pronamespace = 'public'::regnamespace "
                                   "AND d.objid IS NULL")
        out: dict[str, list[tuple[object, ...]]] = {}
        for name, sql in CATALOG.items():
            if name == "functions":
                sql = sql.replace("prokind = 'f'", "prokind = 'f' AND oid = ANY($1::oid[])")
                out[name] = [tuple(r) for r in await conn.fetch(sql, ours)]
            else:
                out[name] = [tuple(r) for r in await conn.fetch(sql)]
        return out
    finally:
        await conn.close()


async def landed_database(pg: EmbeddedServer) -> str:
    """A database as the first release left it: its schema.sql, and data written the way it wrote data."""
    url = await pg.new_database()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(LANDED_SCHEMA.read_text())
        song = project_id_for("Landed Song")
        await conn.execute("INSERT INTO projects (id, name, last_opened_at) VALUES ($1, 'Landed Song', now())", song)
        session = await conn.fetchval("SELECT start_session($1)", song)
        await conn.execute("INSERT INTO track_assignments (project_id, session_id, track_number, track_name, "
                           "plugin_id) VALUES ($1, $2, 1, 'Kick', 'TR1'), ($1, $2, 2, 'Snare', 'TR2')", song, session)
        await conn.execute("INSERT INTO messages (project_id, session_id, role, content, embedding) "
                           "VALUES ($1, $2, 'assistant', 'cut 300 Hz on the bass', $3::vector)",
                           song, session, "[" + ",".join(["0.01"] * 768) + "]")
        await conn.execute("INSERT INTO mission_control_debug (project_id, session_id, sender, message_type, "
                           "content) SELECT $1, $2, 'orchestrator', 'log', 'row ' || n FROM generate_series(1, 50) n",
                           song, session)
    finally:
        await conn.close()
    return url


async def test_an_upgraded_database_is_exactly_a_new_one(pg: EmbeddedServer) -> None:
    fresh = await pg.new_database()
    conn = await asyncpg.connect(fresh)
    try:
        assert await apply_schema(conn) == latest_version()
    finally:
        await conn.close()
    upgraded = await landed_database(pg)
    conn = await asyncpg.connect(upgraded)
    try:
        assert await apply_schema(conn) == latest_version()
    finally:
        await conn.close()
    assert await catalog(upgraded) == await catalog(fresh)


async def test_the_upgrade_keeps_the_data_and_serves_a_bridge(pg: EmbeddedServer, tmp_path: Path) -> None:
    url = await landed_database(pg)
    conn = await asyncpg.connect(url)
    try:
        before = {t: await conn.fetchval(f"SELECT count(*) FROM {t}")
                  for t in ("projects", "sessions", "track_assignments", "messages", "mission_control_debug")}
    finally:
        await conn.close()
    async with running(make_settings(tmp_path, url)) as bridge, \
            await BridgeClient.connect("127.0.0.1", bridge.port) as client:
        assert (await client.call("/bridge/project/current"))[:2] == ["Landed Song", project_id_for("Landed Song")]
        assert [r[:3] for r in await client.rows("/bridge/mapping/list")] == [[1, "Kick", "TR1"], [2, "Snare", "TR2"]]
        await client.call("/bridge/mapping/set", 3, "Bass", "TR3")
        assert await bridge.writer.flush(5.0)
    conn = await asyncpg.connect(url)
    try:
        versions = await conn.fetch("SELECT version, description FROM schema_version ORDER BY version")
        assert [v["version"] for v in versions] == list(range(1, latest_version() + 1))
        assert [v["description"] for v in versions[1:]] == [m.name for m in migrations()]
        after = {t: await conn.fetchval(f"SELECT count(*) FROM {t}")
                 for t in before}
        assert after["mission_control_debug"] >= before["mission_control_debug"]
        assert after["messages"] == before["messages"] == 1
        assert after["track_assignments"] == before["track_assignments"] + 1
        assert await conn.fetchval("SELECT embedding IS NOT NULL FROM messages") is True
    finally:
        await conn.close()


async def test_a_failing_migration_is_rolled_back_and_says_so(pg: EmbeddedServer,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    url = await pg.new_database()
    shipped, latest = migrations(), latest_version()
    broken = [*shipped, Migration(len(shipped) + 2, "broken", "CREATE TABLE half_done (x int); SELECT 1/0;")]
    monkeypatch.setattr(schema, "migrations", lambda: broken)
    conn = await asyncpg.connect(url)
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await apply_schema(conn)
        # Everything before the broken one is applied and recorded; of the broken one, nothing.
        assert await conn.fetchval("SELECT max(version) FROM schema_version") == latest
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        monkeypatch.setattr(schema, "migrations", lambda: shipped)
        assert await apply_schema(conn) == latest  # after the fix: fine
    finally:
        await conn.close()


async def test_bridges_starting_at_once_upgrade_the_database_once(pg: EmbeddedServer) -> None:
    url = await landed_database(pg)
    conns = [await asyncpg.connect(url) for _ in range(4)]
    try:
        assert await asyncio.gather(*(apply_schema(c) for c in conns)) == [latest_version()] * 4
        assert await conns[0].fetchval("SELECT count(*) FROM schema_version") == latest_version()
    finally:
        for c in conns:
            await c.close()


def test_migrations_are_numbered_without_a_gap() -> None:
    assert [m.version for m in migrations()] == list(range(2, latest_version() + 1))
    assert all(m.name and m.sql.strip() for m in migrations())


async def test_a_database_newer_than_the_bridge_is_refused(pg: EmbeddedServer) -> None:
    url = await pg.new_database()
    conn = await asyncpg.connect(url)
    try:
        await apply_schema(conn)
        await conn.execute("INSERT INTO schema_version (version, description) VALUES ($1, 'from the future')",
                           latest_version() + 1)
        with pytest.raises(SchemaError, match=f"schema version {latest_version() + 1}, newer than this oscbridge"):
            await apply_schema(conn)
    finally:
        await conn.close()


async def test_a_server_older_than_the_schema_needs_is_refused_before_anything_changes(
        pg: EmbeddedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migration 3 needs PostgreSQL 15 (NULLS NOT DISTINCT). No older server is at hand, so the bar is raised above
    the test server's own version: the refusal names both versions and the way out, and nothing was created."""
    url = await pg.new_database()
    conn = await asyncpg.connect(url)
    try:
        version = await conn.fetchval("SELECT current_setting('server_version_num')::int")
        monkeypatch.setattr(schema, "MIN_SERVER", (version // 10000 + 1) * 10000)
        with pytest.raises(SchemaError, match=rf"server is version {version // 10000}; oscbridge needs "
                                              rf"{version // 10000 + 1} or newer .* embedded PostgreSQL 18"):
            await apply_schema(conn)
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    finally:
        await conn.close()
