"""What every request that reads PostgreSQL does first: see what was accepted before it (read-your-writes), then
take a pooled connection, or answer `unavailable` when the database cannot be reached."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from oscbridge.store.db import Database, DatabaseUnavailable
from oscbridge.store.writer import Writer
from oscbridge.typedefs import BridgeError, ErrorCode

FLUSH_TIMEOUT = 1.0  # seconds a read waits for the writer to commit what was accepted before it


async def settle(db: Database, writer: Writer) -> None:
    """Waits until the writer committed every write accepted so far (up to 1 s; not while the database is down)."""
    if db.up:
        await writer.flush(FLUSH_TIMEOUT)


@asynccontextmanager
async def reading(db: Database, writer: Writer | None = None) -> AsyncIterator[asyncpg.Connection]:
    """A connection for a read; with `writer`, after it settled (`settle`)."""
    if writer is not None:
        await settle(db, writer)
    try:
        async with db.acquire() as conn:
            yield conn
    except DatabaseUnavailable as exc:
        raise BridgeError(ErrorCode.UNAVAILABLE, "the database is unreachable right now; accepted writes are "
                          "kept and stored when it is back, but this read cannot be answered") from exc
