"""How a tool reaches the bridge's database, whether the bridge runs or not (migrate-sqlite, export).

The database in use is the one of `--database-url`, else the embedded server of the data dir. When the bridge
runs, its embedded server is running and the tool connects to it (`running_url`); when it does not, the tool
starts that server itself for as long as it needs it and stops it afterwards (the helper stops a server only
when its last user leaves, so a bridge started meanwhile keeps it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from oscbridge.config import Settings
from oscbridge.redact import redact_url
from oscbridge.store.db import CONNECTION_ERRORS, DatabaseUnavailable
from oscbridge.store.embedded import EmbeddedPostgres, running_url
from oscbridge.store.schema import apply_schema


@asynccontextmanager
async def tool_connection(settings: Settings, *, read_only: bool) -> AsyncIterator[asyncpg.Connection | None]:
    """A connection to the database in use, or None when there is nothing to read yet.

    A tool that writes (`read_only` False) gets the schema applied first. A tool that only reads creates nothing:
    without a URL and without an embedded data directory (the bridge never started on this data dir) it gets
    None without any server being started, and also None for a database that does not hold the bridge's tables.
    Raises `DatabaseUnavailable`, naming the URL with its password hidden, when the server cannot be reached.
    """
    embedded: EmbeddedPostgres | None = None
    url = settings.direct_database_url or running_url(settings.embedded_pgdata)
    if url is None:
        if read_only and not (settings.embedded_pgdata / "PG_VERSION").exists():
            yield None
            return
        embedded = EmbeddedPostgres(settings.embedded_pgdata)
        url = await embedded.start_async()
    try:
        try:
            conn = await asyncpg.connect(url, timeout=10)
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"cannot reach the database at {redact_url(url)}: {exc}") from exc
        try:
            if not read_only:
                await apply_schema(conn)
            elif not await conn.fetchval("SELECT to_regclass('track_assignments') IS NOT NULL"):
                yield None
                return
            yield conn
        finally:
            await conn.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
