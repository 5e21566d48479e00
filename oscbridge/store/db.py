"""The connection pool, whether the database is up, and applying schema.sql.

The daemon keeps working when PostgreSQL is unreachable: `Database.up` says whether it is, the writer keeps
acknowledged writes in the spool, and a reconnect loop brings the pool back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import asyncpg
from pgvector.asyncpg import register_vector

from oscbridge.logs import get_logger
from oscbridge.redact import redact_url
from oscbridge.store.schema import apply_schema

log = get_logger("oscbridge.db")


class DatabaseUnavailable(Exception):
    """The database cannot be reached now; requests that need it get the `unavailable` error."""


# Errors that mean "the server is not reachable now", as opposed to "this statement is wrong".
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    ConnectionError,
    DatabaseUnavailable,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)


# SQLSTATE classes (and single codes) of errors that say "not now" rather than "not this": the write stays in the
# spool and is tried again (with capped backoff), never moved to rejected.jsonl. Seen on a full disk: 53100
# "could not extend file" had sent 1,219 of 1,360 acknowledged writes to rejected.jsonl.
TEMPORARY_SQLSTATE_CLASSES = {
    "08": "connection exception",
    "40": "transaction rollback (serialization failure, deadlock)",
    "53": "insufficient resources (disk full, out of memory, too many connections)",
    "57": "operator intervention (shutdown, cannot connect now, query canceled)",
    "58": "system error (I/O error)",
}
TEMPORARY_SQLSTATES = {"55P03": "lock not available"}

ErrorKind = Literal["connection", "temporary", "refused", "unknown"]


def classify(exc: BaseException) -> ErrorKind:
    """What a failed write means, for the writer.

    - `connection`: the server cannot be reached (mark the database down, keep the write, retry);
    - `temporary`: PostgreSQL answers but cannot take the write now (TEMPORARY_SQLSTATE_CLASSES: a full disk,
      memory, a shutdown, a deadlock, a lock timeout): keep the write and retry;
    - `refused`: PostgreSQL refuses this write for good: a data error (classes 22, 23) or any other SQLSTATE
      outside the temporary classes (a statement that the schema no longer fits, class 42), and the bridge's own
      ValueError/KeyError/TypeError from an applier (a malformed operation): it goes to rejected.jsonl, from which
      `oscbridge spool retry-rejected` re-applies it after a fix;
    - `unknown`: anything else (a bug): keep the write and retry, logging the traceback.
    """
    if isinstance(exc, asyncpg.PostgresError):
        state = str(exc.sqlstate or "")
        if state[:2] == "08" or isinstance(exc, CONNECTION_ERRORS):
            return "connection"
        if state[:2] in TEMPORARY_SQLSTATE_CLASSES or state in TEMPORARY_SQLSTATES:
            return "temporary"
        return "refused"
    if isinstance(exc, CONNECTION_ERRORS):
        return "connection"
    if isinstance(exc, ValueError | KeyError | TypeError):
        return "refused"
    return "unknown"


async def _init_connection(conn: asyncpg.Connection) -> None:
    await register_vector(conn)


class Database:
    """A small asyncpg pool plus an `up` flag kept honest by the writer and a reconnect loop."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4) -> None:
        self.url = url
        self._min = min_size
        self._max = max_size
        self.pool: asyncpg.Pool | None = None
        self.up = False
        self._lock = asyncio.Lock()

    async def connect(self, timeout: float = 10.0) -> None:
        """Applies the schema on a first plain connection (the pool's vector codec needs the extension), then
        opens the pool. Raises a CONNECTION_ERRORS member when the server is not reachable, SchemaError when
        it cannot hold our schema."""
        async with self._lock:
            if self.pool is not None:
                return
            conn = await asyncpg.connect(self.url, timeout=timeout)
            try:
                await apply_schema(conn)
            finally:
                await conn.close()
            self.pool = await asyncpg.create_pool(
                self.url, min_size=self._min, max_size=self._max, init=_init_connection, timeout=timeout,
                command_timeout=60, max_inactive_connection_lifetime=60.0,
            )
            self.up = True
            log.info("database_connected", url=redact_url(self.url))

    def mark_down(self, error: BaseException) -> None:
        if self.up:
            log.warning("database_down", error=f"{type(error).__name__}: {error}"[:300])
        self.up = False

    def mark_up(self) -> None:
        if not self.up:
            log.info("database_up")
        self.up = True

    @asynccontextmanager
    async def acquire(self, timeout: float = 5.0) -> AsyncIterator[Any]:
        """A connection, or DatabaseUnavailable; connection failures mark the database down."""
        if self.pool is None:
            try:
                await self.connect(timeout=timeout)
            except CONNECTION_ERRORS as exc:
                self.mark_down(exc)
                raise DatabaseUnavailable(str(exc)) from exc
        assert self.pool is not None
        try:
            async with self.pool.acquire(timeout=timeout) as conn:
                try:
                    yield conn
                except CONNECTION_ERRORS:
                    # A connection that failed mid-operation may be left in an unknown protocol state (seen after a
                    # server restart: "another operation is in progress"); the pool must replace it, not reuse it.
                    conn.terminate()
                    raise
        except CONNECTION_ERRORS as exc:
            self.mark_down(exc)
            raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc
        self.mark_up()

    async def close(self, timeout: float = 5.0) -> None:
        """Closes the pool gracefully, or cuts its connections after `timeout` (a hung server must not hold up
        the daemon's stop)."""
        if self.pool is not None:
            pool, self.pool = self.pool, None
            try:
                await asyncio.wait_for(pool.close(), timeout)
            except CONNECTION_ERRORS:
                pool.terminate()
        self.up = False


async def fetch_info(conn: asyncpg.Connection) -> dict[str, Any]:
    """Server and pgvector versions, for the ready log line and the doctor."""
    row = await conn.fetchrow(
        "SELECT current_setting('server_version') AS server, "
        "(SELECT extversion FROM pg_extension WHERE extname = 'vector') AS pgvector, "
        "(SELECT max(version) FROM schema_version) AS schema_version"
    )
    return dict(row) if row else {}
