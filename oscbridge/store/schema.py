"""The database's schema: the baseline (schema.sql, version 1) and the numbered migrations after it.

A new database gets schema.sql and then every migration; an existing one gets the migrations it has not had. The
migrations are files of `oscbridge/store/migrations/` named `NNNN_what_it_does.sql` (version, then a name), applied
in order, each in its own transaction, under one advisory lock held for the whole upgrade so that two bridges
starting at once on one database upgrade it once, and each recorded in `schema_version` with its name. A database
whose recorded version is newer than this bridge knows is refused with a message saying so.

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
        if current is None or current == BASELINE:
            async with conn.transaction():
                await conn.execute(schema_sql())
        for migration in pending:
            if current is not None and migration.version <= current:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute("INSERT INTO schema_version (version, description) VALUES ($1, $2) "
                                   "ON CONFLICT (version) DO NOTHING", migration.version, migration.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK_KEY)
    return latest
