"""Least privilege, for real: `oscbridge db init` on a fresh database makes an owner role (owns the tables, applies
the schema) and a bridge role (reads and writes only); the bridge runs as the bridge role (mappings, messages,
debug rows, retention's deletes) and cannot alter, drop or create a table; a pending migration or a missing grant
stops its start with a message that names the right and the command (`oscbridge db upgrade --owner-url`), which
then fixes it; `db upgrade` with an administrator's URL applies migrations as the owner; a table someone else keeps
in the schema is not the bridge's business."""

from __future__ import annotations

import stat
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from oscbridge.client import BridgeClient
from oscbridge.store import schema
from oscbridge.store.db import Database, classify
from oscbridge.store.schema import Migration, SchemaError, latest_version, migrations
from oscbridge.tools.db import init_database, upgrade_database, url_as, write_passfile
from tests.conftest import EmbeddedServer, free_port, make_settings, run_cli, running

EXIT_CONFIG = 78


class Studio:
    """Unique names for one test on the shared test server (roles belong to the whole server)."""

    def __init__(self, pg: EmbeddedServer) -> None:
        tag = uuid.uuid4().hex[:8]
        self.pg = pg
        self.database, self.owner, self.bridge = f"studio_{tag}", f"owner_{tag}", f"bridge_{tag}"

    @property
    def bridge_url(self) -> str:
        return url_as(self.pg.admin_url, self.bridge, self.database)

    @property
    def owner_url(self) -> str:
        return url_as(self.pg.admin_url, self.owner, self.database)

    async def init(self) -> None:
        result = await init_database(self.pg.admin_url, database=self.database, owner=self.owner,
                                     bridge=self.bridge, passwords={})
        assert result.missing == [] and result.version == latest_version()


async def fetch(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def test_db_init_then_the_bridge_runs_as_a_role_that_only_reads_and_writes(pg: EmbeddedServer,
                                                                                   tmp_path: Path) -> None:
    studio = Studio(pg)
    passfile = tmp_path / "pgpass"
    args = ("db", "init", "--owner-url", pg.admin_url, "--database", studio.database, "--owner-role", studio.owner,
            "--bridge-role", studio.bridge, "--passfile", str(passfile))
    made = run_cli(*args)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == studio.bridge_url  # the URL to give the bridges: no password in it
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
    lines = passfile.read_text().splitlines()
    assert [line.rsplit(":", 1)[0] for line in lines] == [f"localhost:5432:{studio.database}:{role}"
                                                          for role in (studio.owner, studio.bridge)]
    for password in (line.rsplit(":", 1)[1] for line in lines):
        assert len(password) >= 32 and password not in made.stdout + made.stderr
    again = run_cli(*args)  # nothing to do: the passwords stay as they are
    assert again.returncode == 0 and "nothing new" in again.stderr and passfile.read_text().splitlines() == lines

    owners = await fetch(pg.url_of(studio.database), """
        SELECT DISTINCT pg_get_userbyid(c.relowner) AS owner FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')""")
    assert [r["owner"] for r in owners] == [studio.owner]

    settings = make_settings(tmp_path, studio.bridge_url, debug_retention_days=30.0)
    async with running(settings) as bridge:
        async with bridge.parts.db.acquire() as conn:
            assert await conn.fetchval("SELECT current_user") == studio.bridge
        client = await BridgeClient.connect("127.0.0.1", bridge.port, transport="tcp")
        try:
            await client.call("/bridge/project/open", "Least privilege", "")
            await client.call("/bridge/mapping/set", 1, "Kick", "TR1")
            await client.save_message("user", "only reads and writes", embed=False)
            await client.call("/bridge/debug/log", "orchestrator", "", "log", "old news", "", "info")
            await client.call("/bridge/debug/log", "orchestrator", "", "log", "fresh", "", "info")
            assert await bridge.writer.flush(10.0)
            assert await client.rows("/bridge/mapping/list") == [[1, "Kick", "TR1", -1, ""]]
        finally:
            await client.close()
        conn = await asyncpg.connect(studio.owner_url)
        try:
            await conn.execute("UPDATE mission_control_debug SET created_at = $1 WHERE content = 'old news'",
                               datetime.now(UTC) - timedelta(days=60))
        finally:
            await conn.close()
        assert await bridge.parts.retention.remove_old() == 1  # DELETE, as the bridge role
        assert bridge.writer.rejected == 0
    rows = await fetch(studio.owner_url, "SELECT content FROM mission_control_debug ORDER BY content")
    assert [r["content"] for r in rows if r["content"] in ("old news", "fresh")] == ["fresh"]

    conn = await asyncpg.connect(studio.bridge_url)
    try:
        for statement in ("ALTER TABLE messages ADD COLUMN mine int", "DROP TABLE messages",
                          "CREATE TABLE mine (x int)", "TRUNCATE mission_control_debug",
                          "INSERT INTO schema_version (version, description) VALUES (999, 'forged')",
                          "CREATE OR REPLACE FUNCTION project_id_for(p_name text) RETURNS uuid LANGUAGE sql "
                          "AS 'SELECT NULL::uuid'"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError) as denied:
                await conn.execute(statement)
            # A write refused for a missing grant waits in the spool for the owner's fix, never goes to rejected.
            assert classify(denied.value) == "temporary"
    finally:
        await conn.close()


async def test_a_pending_migration_names_itself_and_db_upgrade_applies_it(pg: EmbeddedServer,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    studio = Studio(pg)
    await studio.init()
    shipped = migrations()
    newer = Migration(latest_version() + 1, "studio_notes", "CREATE TABLE studio_notes (id int PRIMARY KEY)")
    monkeypatch.setattr(schema, "migrations", lambda: [*shipped, newer])

    db = Database(studio.bridge_url)
    with pytest.raises(SchemaError) as refused:
        await db.connect(timeout=5.0)
    message = str(refused.value)
    assert f"this oscbridge needs migration {newer.version} (studio_notes), which the role {studio.bridge} may " \
           "not apply" in message
    assert "oscbridge db upgrade --owner-url" in message

    before, after, missing = await upgrade_database(studio.owner_url, studio.bridge)
    assert (before, after, missing) == (newer.version - 1, newer.version, [])
    await db.connect(timeout=5.0)  # the bridge role starts now, and may use what the migration made
    try:
        async with db.acquire() as conn:
            await conn.execute("INSERT INTO studio_notes VALUES (1)")
    finally:
        await db.close()


async def test_a_missing_grant_stops_the_start_saying_which_and_db_upgrade_grants_it(pg: EmbeddedServer,
                                                                                     tmp_path: Path) -> None:
    studio = Studio(pg)
    await studio.init()
    conn = await asyncpg.connect(studio.owner_url)
    try:
        await conn.execute(f"REVOKE DELETE ON mission_control_debug FROM {studio.bridge}")
        await conn.execute(f"REVOKE TEMPORARY ON DATABASE {studio.database} FROM {studio.bridge}")
    finally:
        await conn.close()

    serve = run_cli("serve", "--osc-port", str(free_port()), "--data-dir", str(tmp_path / "data"),
                    "--database-url", studio.bridge_url, "--log-level", "warning")
    assert serve.returncode == EXIT_CONFIG, serve.stderr
    assert "Traceback" not in serve.stderr
    assert (f"the role {studio.bridge} lacks rights the bridge needs: DELETE on table mission_control_debug, "
            f"TEMPORARY on database {studio.database}") in serve.stderr
    assert "oscbridge db upgrade --owner-url" in serve.stderr

    # TEMPORARY on the database is the administrator's to grant (db init did); the owner grants the rest.
    admin = await asyncpg.connect(pg.url_of(studio.database))
    try:
        await admin.execute(f"GRANT TEMPORARY ON DATABASE {studio.database} TO {studio.bridge}")
    finally:
        await admin.close()
    upgrade = run_cli("db", "upgrade", "--owner-url", studio.owner_url, "--bridge-role", studio.bridge)
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"role {studio.bridge}: every right a bridge needs" in upgrade.stdout
    db = Database(studio.bridge_url)
    await db.connect(timeout=5.0)
    await db.close()


async def test_a_database_without_the_schema_tells_the_bridge_role_to_run_db_init(pg: EmbeddedServer) -> None:
    studio = Studio(pg)
    admin = await asyncpg.connect(pg.admin_url)
    try:
        await admin.execute(f"CREATE ROLE {studio.bridge} LOGIN")
        await admin.execute(f"CREATE DATABASE {studio.database}")
    finally:
        await admin.close()
    with pytest.raises(SchemaError, match=f"no oscbridge schema yet and the role {studio.bridge} may not create it.*"
                                          "oscbridge db init --owner-url"):
        await Database(studio.bridge_url).connect(timeout=5.0)


def test_the_passfile_keeps_other_lines_and_replaces_its_own(tmp_path: Path) -> None:
    path = tmp_path / "pgpass"
    path.write_text("db.lan:5432:*:someone:kept\nlocalhost:5432:oscbridge:bridge:old\n")
    write_passfile(path, "localhost", 5432, "oscbridge", {"bridge": "new", "owner": "p:w\\d"})
    assert path.read_text().splitlines() == ["db.lan:5432:*:someone:kept", "localhost:5432:oscbridge:bridge:new",
                                             "localhost:5432:oscbridge:owner:p\\:w\\\\d"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def owners_in_public(url: str) -> set[tuple[str, str]]:
    """(kind and name, owner) of every object in public that is not pgvector's: relations (indexes and sequences
    too) and functions."""
    rows = await fetch(url, """
        SELECT c.relkind::text || ' ' || c.relname AS what, pg_get_userbyid(c.relowner) AS owner FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
        UNION ALL
        SELECT 'function ' || p.proname, pg_get_userbyid(p.proowner) FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')""")
    return {(r["what"], r["owner"]) for r in rows}


async def test_db_upgrade_as_an_administrator_applies_migrations_as_the_owner(pg: EmbeddedServer,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    studio = Studio(pg)
    await studio.init()
    shipped = migrations()
    report = Migration(latest_version() + 1, "studio_report", """
        CREATE TABLE studio_report (id bigserial PRIMARY KEY, note text);
        CREATE VIEW studio_report_notes AS SELECT note FROM studio_report;
        CREATE FUNCTION studio_report_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM studio_report';
    """)
    monkeypatch.setattr(schema, "migrations", lambda: [*shipped, report])
    admin_url = pg.url_of(studio.database)  # the superuser, as `db upgrade --owner-url` allows

    assert await upgrade_database(admin_url, studio.bridge) == (report.version - 1, report.version, [])
    objects = await owners_in_public(admin_url)
    assert {what for what, _ in objects} >= {"r studio_report", "v studio_report_notes", "S studio_report_id_seq",
                                              "i studio_report_pkey", "function studio_report_count"}
    assert {owner for _, owner in objects} == {studio.owner}, sorted(objects)

    # So the owner role can change them later: a migration that alters them applies as the owner.
    later = Migration(report.version + 1, "studio_report_by", """
        ALTER TABLE studio_report ADD COLUMN made_by text;
        CREATE OR REPLACE VIEW studio_report_notes AS SELECT note, made_by FROM studio_report;
        CREATE OR REPLACE FUNCTION studio_report_count() RETURNS bigint LANGUAGE sql
            AS 'SELECT count(*) FROM studio_report WHERE made_by IS NOT NULL';
    """)
    monkeypatch.setattr(schema, "migrations", lambda: [*shipped, report, later])
    assert await upgrade_database(studio.owner_url, studio.bridge) == (report.version, later.version, [])
    assert {owner for _, owner in await owners_in_public(admin_url)} == {studio.owner}

    # A role that is neither the owner nor an administrator is told to use one.
    with pytest.raises(SchemaError, match=f"the role {studio.bridge} may not act as {studio.owner}, the owner of "
                                          "the database"):
        await upgrade_database(studio.bridge_url, studio.bridge)


async def test_a_table_of_someone_else_in_public_does_not_stop_the_bridge(pg: EmbeddedServer) -> None:
    studio = Studio(pg)
    await studio.init()
    admin = await asyncpg.connect(pg.url_of(studio.database))
    try:  # an administrator's own reporting table and function, next to the bridge's
        await admin.execute("CREATE TABLE admin_report (day date PRIMARY KEY, plays int)")
        await admin.execute("CREATE FUNCTION admin_plays() RETURNS bigint LANGUAGE sql "
                            "AS 'SELECT sum(plays) FROM admin_report'")
        await admin.execute("REVOKE EXECUTE ON FUNCTION admin_plays() FROM PUBLIC")
    finally:
        await admin.close()

    db = Database(studio.bridge_url)
    await db.connect(timeout=5.0)  # the start's check of the bridge role's rights passes
    await db.close()
    upgrade = run_cli("db", "upgrade", "--owner-url", studio.owner_url, "--bridge-role", studio.bridge)
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"role {studio.bridge}: every right a bridge needs" in upgrade.stdout
    # ... and neither gave the bridge role any right on the administrator's objects.
    rows = await fetch(pg.url_of(studio.database), """
        SELECT has_table_privilege($1, 'admin_report', 'SELECT') AS reads,
               has_function_privilege($1, 'admin_plays()', 'EXECUTE') AS runs""", studio.bridge)
    assert (rows[0]["reads"], rows[0]["runs"]) == (False, False)
