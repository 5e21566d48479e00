"""The connection pool, whether the database is up, and applying schema.sql.

The daemon keeps working when PostgreSQL is unreachable: `Database.up` says whether it is, the writer keeps
acknowledged writes in the spool, and a reconnect loop brings the pool back.

Through a transaction pooler (PgBouncer pool_mode = transaction, `database_pooled`; docs/studio.md) each
transaction may run on another server connection, so nothing may outlive one: the pool keeps no prepared statements
(asyncpg then prepares each statement unnamed and parses it again in the round trip that runs it), and what needs a
session of its own (the schema upgrade's advisory lock held across transactions, LISTEN, pg_dump's exported
snapshot) goes to `direct_url`, which reaches PostgreSQL itself. The bridge's own statements need nothing else: the
settings they make are transaction-local (`set_config(..., true)`: the writer's bridge id, the search's hnsw
settings) and the COPY staging table is created, if missing, in the transaction that uses it.

A database that refuses the bridge for a reason that waiting does not fix (a TLS certificate that fails
verification, a refused login, a missing right) raises `DatabaseRefused` at start with a sentence that says which.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any, Literal

import asyncpg
from pgvector.asyncpg import register_vector

from oscbridge.logs import get_logger
from oscbridge.redact import redact_url, scrub
from oscbridge.store.roles import missing_rights
from oscbridge.store.schema import apply_schema
from oscbridge.store.tls import explain_certificate, unreadable_root_cert

log = get_logger("oscbridge.db")


class DatabaseUnavailable(Exception):
    """The database cannot be reached now; requests that need it get the `unavailable` error."""


class DatabaseRefused(Exception):
    """The database will not serve this bridge for a reason that waiting does not fix: its TLS certificate, the
    login, a database that does not exist, a right the bridge's role lacks. The message says which and what to do."""


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


# What makes a request that needs the database answer `unavailable`: the server out of reach, or refusing the bridge
# until someone fixes a setting (the writes wait in the spool meanwhile).
NOT_NOW: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, DatabaseRefused)


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
TEMPORARY_SQLSTATES = {
    "55P03": "lock not available",
    # A missing GRANT is fixed by the database's owner (`oscbridge db upgrade --owner-url`), not by the write.
    "42501": "insufficient privilege",
    # Prepared statements lost or met twice: database_url goes through a transaction pooler without
    # `database_pooled = true`. The write is fine; the connection is not.
    "26000": "prepared statement does not exist (a transaction pooler: set database_pooled)",
    "42P05": "prepared statement exists already (a transaction pooler: set database_pooled)",
}

ErrorKind = Literal["connection", "temporary", "refused", "unknown"]


def classify(exc: BaseException) -> ErrorKind:
    """What a failed write means, for the writer.

    - `connection`: the server cannot be reached (mark the database down, keep the write, retry);
    - `temporary`: PostgreSQL answers but cannot take the write now (TEMPORARY_SQLSTATE_CLASSES and
      TEMPORARY_SQLSTATES: a full disk, memory, a shutdown, a deadlock, a lock timeout, a missing GRANT, prepared
      statements lost to a transaction pooler): keep the write and retry;
    - `refused`: PostgreSQL refuses this write for good: a data error (classes 22, 23) or any other SQLSTATE
      outside the temporary ones (a statement the schema no longer fits, class 42), and the bridge's own
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


async def _session_is_not_ours(conn: asyncpg.Connection) -> None:
    """The pool's reset through a transaction pooler: nothing. asyncpg's default (`RESET ALL`, `UNLISTEN *`,
    `pg_advisory_unlock_all()`, ...) would run on whichever server connection the pooler picks, a session the
    bridge does not own, at the cost of a round trip per release."""


def connect_options(pooled: bool) -> dict[str, Any]:
    """asyncpg's options for a connection through a transaction pooler (`pooled`), or none."""
    return {"statement_cache_size": 0} if pooled else {}


async def open_connection(url: str, *, timeout: float = 10.0, **options: Any) -> asyncpg.Connection:
    """One direct connection to `url` (asyncpg's `options`): DatabaseRefused when the database refuses it for a
    reason that waiting does not fix (see `refusal`), a CONNECTION_ERRORS member when it cannot be reached now."""
    problem = unreadable_root_cert(url)
    if problem is not None:
        raise DatabaseRefused(problem)
    try:
        return await asyncpg.connect(url, timeout=timeout, **options)
    except Exception as exc:
        reason = await refusal(exc, url)
        if reason is None:
            raise
        raise DatabaseRefused(reason) from exc


async def refusal(exc: BaseException, url: str) -> str | None:
    """Why connecting to `url` failed for good, as a sentence that says what to do; None when it may work later
    (the server is down, starting, or full). Passwords are masked."""
    shown = redact_url(url)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return await explain_certificate(exc, url)
    text = " ".join(scrub(str(exc), url).split())  # a server's HINT on the same line
    # PgBouncer refuses a wrong password as a protocol violation (08P01), not as PostgreSQL's 28P01.
    if isinstance(exc, asyncpg.InvalidPasswordError) or (
            isinstance(exc, asyncpg.ProtocolViolationError) and "authentication failed" in str(exc)):
        return (f"{shown} refused the login: {text}. Put the password in ~/.pgpass (mode 0600; PGPASSFILE may name "
                "another file) as host:port:database:user:password, never in a log or a plist")
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return f"{shown} refused the connection: {text}. Check the user name and the server's pg_hba.conf"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return (f"{shown}: {text}. Create it with `oscbridge db init --owner-url ADMIN_URL` (docs/studio.md) or "
                "fix the name in the URL")
    if isinstance(exc, asyncpg.exceptions.ClientConfigurationError):
        return f"{shown}: {text}"
    return None  # other TLS errors too: a handshake cut short by a restarting server is worth another try


class Database:
    """A small asyncpg pool plus an `up` flag kept honest by the writer and a reconnect loop.

    `url` is what the pool uses; `direct_url` (default `url`) reaches PostgreSQL itself and is used for the schema
    upgrade (and, elsewhere, LISTEN and backups); `pooled` says `url` goes through a transaction pooler.
    """

    def __init__(self, url: str, *, direct_url: str | None = None, pooled: bool = False, min_size: int = 1,
                 max_size: int = 4) -> None:
        self.url = url
        self.direct_url = direct_url or url
        self.pooled = pooled
        self._min = min_size
        self._max = max_size
        self.pool: asyncpg.Pool | None = None
        self.up = False
        self._lock = asyncio.Lock()
        self._connecting: asyncio.Task[None] | None = None  # started by a request, outlives its wait

    async def connect(self, timeout: float = 10.0) -> None:
        """Applies the schema on a first plain connection to `direct_url` (the pool's vector codec needs the
        extension), then opens the pool and checks that its role has every right the bridge needs. Raises a
        CONNECTION_ERRORS member when the server is not reachable, SchemaError when it cannot hold our schema,
        DatabaseRefused when it will not serve this bridge (the message says why). One at a time (a lock): a
        caller that comes while another connects waits for it, without bound, as the schema upgrade waits for
        another's; `acquire` bounds that wait for a request."""
        async with self._lock:
            if self.pool is not None:
                return
            conn = await open_connection(self.direct_url, timeout=timeout)
            try:
                await apply_schema(conn)
            finally:
                await conn.close()
            problem = unreadable_root_cert(self.url)
            if problem is not None:
                raise DatabaseRefused(problem)
            try:
                pool = await asyncpg.create_pool(
                    self.url, min_size=self._min, max_size=self._max, init=_init_connection, timeout=timeout,
                    command_timeout=60, max_inactive_connection_lifetime=60.0,
                    reset=_session_is_not_ours if self.pooled else None, **connect_options(self.pooled),
                )
            except Exception as exc:
                reason = await refusal(exc, self.url)
                if reason is None:
                    raise
                raise DatabaseRefused(reason) from exc
            pooled: Any
            try:
                async with pool.acquire() as pooled:
                    missing = await missing_rights(pooled)
                    user = await pooled.fetchval("SELECT current_user")
            except BaseException:
                pool.terminate()
                raise
            if missing:
                pool.terminate()
                raise DatabaseRefused(
                    f"the role {user} lacks rights the bridge needs: {', '.join(missing)}. Grant them as the "
                    f"database's owner: `oscbridge db upgrade --owner-url OWNER_URL --bridge-role {user}` "
                    "(docs/studio.md, Roles)")
            self.pool = pool
            self.up = True
            log.info("database_connected", url=redact_url(self.url), pooled=self.pooled)

    def mark_down(self, error: BaseException) -> None:
        if self.up:
            log.warning("database_down", error=f"{type(error).__name__}: {error}"[:300])
        self.up = False

    def mark_up(self) -> None:
        if not self.up:
            log.info("database_up")
        self.up = True

    def _connect_in_background(self, timeout: float) -> asyncio.Task[None]:
        """The connect in progress that requests wait for, or a new one."""
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self.connect(timeout=timeout))
            # Its failure is each waiting caller's to report; one left without a waiter must not be logged as lost.
            self._connecting.add_done_callback(lambda task: task.cancelled() or task.exception())
        return self._connecting

    @asynccontextmanager
    async def acquire(self, timeout: float = 5.0) -> AsyncIterator[Any]:
        """A connection, or DatabaseUnavailable; connection failures mark the database down.

        Without a pool yet (the database was down at start), the caller connects, or waits for the connect in
        progress, at most `timeout` seconds: `connect` is single-flight and may wait without bound for the schema
        lock that another bridge or `oscbridge db upgrade` holds while migrating, and a request must answer
        `unavailable` meanwhile rather than hang. A connect that takes that long has not failed: it goes on in its
        own task (cutting it would roll back a migration that takes longer than a request may wait, again and
        again), and the database is not marked down for it."""
        if self.pool is None:
            connecting = self._connect_in_background(timeout)
            try:
                await asyncio.wait_for(asyncio.shield(connecting), timeout)
            except NOT_NOW as exc:  # TimeoutError is one (an OSError): the connect's own, or this wait's
                if not connecting.done():
                    raise DatabaseUnavailable(
                        f"the database is being connected or upgraded: no connection within {timeout:g} s (another "
                        "bridge or `oscbridge db upgrade` may be migrating its schema); try again shortly") from exc
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
                    # A proxy already given back to the pool (its holder released it while failing) has nothing
                    # left to cut, and its InterfaceError would hide the real cause in the `database_down` line.
                    with suppress(asyncpg.InterfaceError):
                        conn.terminate()
                    raise
        except CONNECTION_ERRORS as exc:
            self.mark_down(exc)
            raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc
        self.mark_up()

    async def close(self, timeout: float = 5.0) -> None:
        """Closes the pool gracefully, or cuts its connections after `timeout` (a hung server must not hold up
        the daemon's stop)."""
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
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
