"""The database's schema: the baseline (schema.sql, version 1) and the numbered migrations after it.

A new database gets schema.sql and then every migration; an existing one gets the migrations it has not had. The
migrations are files of `oscbridge/store/migrations/` named `NNNN_what_it_does.sql` (version, then a name), applied
in order, each in its own transaction, under one advisory lock held for the whole upgrade so that two bridges
starting at once on one database upgrade it once, and each recorded in `schema_version` with its name. A database
whose recorded version is newer than this bridge knows is refused with a message saying so.

The lock is a session-level advisory lock held across the migrations' transactions, so `apply_schema` needs a
connection to PostgreSQL itself, never one through a transaction pooler (which may run each transaction on another
server connection): `Database` gives it `database_direct_url` (docs/studio.md).

A role that may not change the schema (the bridge role of `oscbridge db init`, which only reads and writes the
tables) gets a SchemaError that names the migration waiting and the command that applies it as the owner.

schema.sql is idempotent and was applied at every start by the first releases (version 1). It is applied again only
to a database still at version 1 (that is how those releases kept its functions current); from version 2 on, every
change is a migration, so that a later change (a dropped index, a changed view) is never undone by the baseline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

SCHEMA_LOCK_KEY = 0x05CB_0001  # advisory lock serialising schema changes between processes
BASELINE = 1
MIN_SERVER = 150000  # server_version_num of the oldest PostgreSQL the schema runs on
_MIGRATION_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


class SchemaError(Exception):
    """The database cannot hold our schema (pgvector missing, a newer schema version); says what to do."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def schema_sql() -> str:
    """The text of schema.sql, package data of `oscbridge.store`: importlib.resources finds it wherever the
    package is installed (a checkout, a wheel, a zip), with no path arithmetic."""
    return resources.files("oscbridge.store").joinpath("schema.sql").read_text(encoding="utf-8")


def migrations() -> list[Migration]:
    """The migrations shipped with this bridge, in order; their versions follow the baseline without a gap."""
    found: list[Migration] = []
    for entry in resources.files("oscbridge.store.migrations").iterdir():
        match = _MIGRATION_FILE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    expected = list(range(BASELINE + 1, BASELINE + 1 + len(found)))
    if [m.version for m in found] != expected:
        raise SchemaError(f"the migrations shipped are numbered {[m.version for m in found]}, not {expected}")
    return found


def latest_version() -> int:
    """The schema version this bridge brings a database to."""
    return BASELINE + len(migrations())


async def current_version(conn: asyncpg.Connection) -> int | None:
    """The database's schema version, or None when it has none yet (a new database)."""
    if not await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL"):
        return None
    version: int | None = await conn.fetchval("SELECT max(version) FROM schema_version")
    return version


async def apply_schema(conn: asyncpg.Connection) -> int:
    """Brings the database to `latest_version()` (see the module docstring); returns that version.

    Refuses a database whose recorded version is newer than this code knows, and explains a missing pgvector.
    """
    server = await conn.fetchval("SELECT current_setting('server_version_num')::int")
    if server < MIN_SERVER:
        raise SchemaError(
            f"the PostgreSQL server is version {server // 10000}; oscbridge needs {MIN_SERVER // 10000} or newer "
            "(unique indexes with NULLS NOT DISTINCT, schema migration 3). Upgrade the server, or run without "
            "--database-url to use the embedded PostgreSQL 18."
        )
    available = await conn.fetchval("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
    if available is None:
        raise SchemaError(
            "the PostgreSQL server has no pgvector extension. Install it (Homebrew: `brew install pgvector`; "
            "Debian/Ubuntu: `apt install postgresql-<major>-pgvector`; Docker: use a pgvector/pgvector image), "
            "or run without --database-url to use the embedded server, which includes it."
        )
    pending = migrations()
    latest = BASELINE + len(pending)
    # A session-level lock for the whole upgrade: each step below is its own transaction.
    await conn.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK_KEY)
    try:
        current = await current_version(conn)
        if current is not None and current > latest:
            raise SchemaError(
                f"the database has schema version {current}, newer than this oscbridge ({latest}). "
                "Upgrade oscbridge, or point it at another database."
            )
        step = "the schema (schema.sql)"
        try:
            if current is None or current == BASELINE:
                async with conn.transaction():
                    await conn.execute(schema_sql())
            for migration in pending:
                if current is not None and migration.version <= current:
                    continue
                step = f"migration {migration.version} ({migration.name})"
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute("INSERT INTO schema_version (version, description) VALUES ($1, $2) "
                                       "ON CONFLICT (version) DO NOTHING", migration.version, migration.name)
        except asyncpg.InsufficientPrivilegeError as exc:
            raise SchemaError(await _not_allowed(conn, current, step, exc)) from exc
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK_KEY)
    return latest


async def _not_allowed(conn: asyncpg.Connection, current: int | None, step: str, exc: Exception) -> str:
    """What to do when the connection's role may not make a schema change (docs/studio.md, Roles)."""
    user = await conn.fetchval("SELECT current_user")
    why = " ".join(str(exc).split())  # the server's hint on the same line
    if current is None:
        return (f"the database has no oscbridge schema yet and the role {user} may not create it ({why}). Set it "
                "up as an administrator with `oscbridge db init --owner-url ADMIN_URL`, which makes an owner role "
                "for the schema and a bridge role for the bridge (docs/studio.md, Roles)")
    return (f"the database has schema version {current}; this oscbridge needs {step}, which the role {user} may "
            f"not apply ({why}). Apply it as the database's owner with `oscbridge db upgrade --owner-url "
            "OWNER_URL`, then start the bridge again (docs/studio.md, Roles)")
