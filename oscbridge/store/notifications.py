"""Mapping changes made by the other bridges on the database: LISTEN on a dedicated connection, then reload.

Every change of `track_assignments` sends a notification on `oscbridge_mappings` with the project and the bridge
that made it (schema migration 0004). The listener keeps one connection of its own, outside the pool: a pooler in
transaction mode hands each transaction to any server connection, so a LISTEN made through it is not kept
(docs/bridge-api-notes.md, "Mappings shared between bridges"). On a notification from another bridge (or from a
person in psql) it reads the project's current mappings and hands them to `apply` (`Projects.reload_mappings`);
notifications of this bridge's own writes are ignored, its memory already has them.

Nothing is missed while the channel is down: after every (re)connection, LISTEN comes first and then one full
reload of every project, so a change committed before the LISTEN is in the reload and one committed after it is
notified. Notifications are gathered in a set of projects and answered by one task, one reload at a time, so a
burst of them costs one query per project, not one per notification.

The reload races this bridge's own writes still in the spool: `apply` gets the writer's committed sequence
number read before the query (every write up to it is in the rows) and re-applies the later ones on top. It
answers with the projects where it did so, each with the sequence number of the last one re-applied; each is read
once more when the writer is past that number (see `Projects.reload_mappings` for why).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Collection
from typing import Any, NamedTuple

import asyncpg

from oscbridge.backoff import Backoff
from oscbridge.jsontext import parse_json
from oscbridge.logs import RateLimitedWarning, get_logger
from oscbridge.redact import redact_url
from oscbridge.store.db import open_connection
from oscbridge.tasks import cancel_and_wait

log = get_logger("oscbridge.notifications")

CHANNEL = "oscbridge_mappings"
APPLICATION_NAME = "oscbridge-listen"  # how the connection shows in pg_stat_activity
# Seconds between checks that a quiet connection still answers: a cut that sends nothing (a sleeping laptop, a
# dropped route) is found within this, plus the query timeout; a server that ends the connection is found at once.
PING_INTERVAL = 5.0
QUERY_TIMEOUT = 5.0
CLOSE_TIMEOUT = 1.0  # then the connection is cut: a hung server must not hold up the daemon's stop
RECONNECT_FIRST, RECONNECT_CAP = 0.25, 2.0  # the budget is 1 s: a server back after a restart is heard quickly
RECHECK_INTERVAL = 0.05  # seconds between looks at the writer while a reload waits for this bridge's own writes
MAX_PROJECTS_PENDING = 1000  # beyond this many projects to reload, one full reload instead


class MappingRow(NamedTuple):
    """A current row of `track_assignments`; `assigned_at` in seconds since the epoch."""

    project_id: str
    track_number: int
    track_name: str
    plugin_id: str
    assigned_at: float


async def current_mappings(conn: asyncpg.Connection, project_ids: Collection[str] | None = None,
                           timeout: float | None = None) -> list[MappingRow]:
    """The current mappings of the projects `project_ids`, or of every project (None)."""
    query = ("SELECT project_id::text, track_number, track_name, plugin_id, "
             "extract(epoch FROM assigned_at)::float8 AS assigned_at FROM track_assignments WHERE is_current")
    if project_ids is None:
        rows = await conn.fetch(query, timeout=timeout)
    else:
        rows = await conn.fetch(query + " AND project_id = ANY($1::uuid[])", list(project_ids), timeout=timeout)
    return [MappingRow(*row) for row in rows]


Apply = Callable[[list[MappingRow], Collection[str] | None, int], dict[str, int]]
"""`Projects.reload_mappings`: the rows read, the projects they are for (None: all), and the writer's committed
sequence number read before the query; returns the projects to read again once the writer has committed up to a
sequence number (this bridge's own writes that were re-applied on top of the rows)."""


def parse(payload: str) -> tuple[str | None, str | None]:
    """(project id or None for every project, bridge id or None) of a notification; ValueError when it is not one
    of ours. An empty payload (`NOTIFY oscbridge_mappings` by hand) asks every bridge to reload everything."""
    if not payload.strip():
        return None, None
    data = parse_json(payload)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    project, bridge = data.get("project_id"), data.get("bridge_id")
    if project is not None:
        project = str(uuid.UUID(str(project)))
    return project, None if bridge is None else str(bridge)


class MappingListener:
    """Hears the mapping changes of the other bridges and has `apply` take them in. `url` must reach PostgreSQL
    directly (not through a pooler); `committed` is the writer's committed sequence number."""

    def __init__(self, url: str, bridge_id: str, apply: Apply, committed: Callable[[], int], *,
                 begin_read: Callable[[], int] | None = None, read_failed: Callable[[], None] | None = None,
                 ping_interval: float = PING_INTERVAL) -> None:
        self.url = url
        self.bridge_id = bridge_id
        self._apply = apply
        self._committed = committed
        # `committed`, told that a read of rows for `apply` starts; and told when such a read fails
        self._begin_read = begin_read or committed
        self._read_failed = read_failed
        self._ping_interval = ping_interval
        self._pending: set[str] = set()  # projects to reload
        self._everything = False  # reload every project
        # project (None: every project) -> the sequence number to be committed before it is read again
        self._rechecks: dict[str | None, int] = {}
        self._wake = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(RECONNECT_FIRST, RECONNECT_CAP, jitter=True)
        self.up = False
        self.pid: int | None = None  # the server process of the connection, while up
        self.connects = 0
        self.notified = 0  # notifications of other bridges' changes
        self.own = 0  # notifications of this bridge's writes, ignored
        self.reloads = 0
        self._warn_down = RateLimitedWarning(log, "mapping_listener_down", interval=60.0)
        self._warn_payload = RateLimitedWarning(log, "mapping_notification_unreadable")

    def request(self, project_id: str | None) -> None:
        """Reloads `project_id` (None: every project) soon, e.g. a project that just became current."""
        if project_id is None or len(self._pending) >= MAX_PROJECTS_PENDING:
            self._everything = True
        else:
            self._pending.add(project_id)
        self._wake.set()

    def reload_after(self, seq: int, project_id: str | None = None) -> None:
        """Reloads `project_id` (None: every project) once the writer has committed sequence number `seq`."""
        self._rechecks[project_id] = max(seq, self._rechecks.get(project_id, 0))
        self._wake.set()

    def stats(self) -> dict[str, int]:
        return {"mappings.listener_up": int(self.up), "mappings.listener_connects": self.connects,
                "mappings.notified": self.notified, "mappings.reloads": self.reloads,
                "mappings.rechecks": len(self._rechecks)}

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="oscbridge-mapping-listener")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self._close()

    # -- the task ---------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._connect()
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Down, refused or anything unforeseen: the listener must outlive it, as the writer does.
                self._warn_down(error=f"{type(exc).__name__}: {exc}"[:300], url=redact_url(self.url),
                                hint="mapping changes of other bridges are picked up when it is back")
            await self._close()
            await asyncio.sleep(self._backoff.next())

    async def _connect(self) -> None:
        conn = await open_connection(self.url, timeout=QUERY_TIMEOUT,
                                     server_settings={"application_name": APPLICATION_NAME})
        self._conn = conn
        conn.add_termination_listener(lambda _conn: self._wake.set())
        await conn.add_listener(CHANNEL, self._on_notification)  # first: what commits from now on is heard
        self.request(None)  # then everything, for what was committed while the channel was down
        self.pid = conn.get_server_pid()
        self.up = True
        self.connects += 1
        if self.connects > 1:
            log.info("mapping_listener_reconnected", pid=self.pid)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        self.up, self.pid = False, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT)
            except asyncio.CancelledError:
                conn.terminate()
                raise
            except Exception:
                conn.terminate()

    async def _serve(self) -> None:
        conn = self._conn
        assert conn is not None
        answered = time.monotonic()
        while True:
            timeout = RECHECK_INTERVAL if self._rechecks else self._ping_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if conn.is_closed():
                raise ConnectionError("the server ended the connection")
            self._due_rechecks()
            if self._everything or self._pending:
                await self._reload(conn)
            elif time.monotonic() - answered >= self._ping_interval:
                await conn.fetchval("SELECT 1", timeout=QUERY_TIMEOUT)
            else:
                continue
            answered = time.monotonic()

    def _due_rechecks(self) -> None:
        committed = self._committed()
        for project, seq in list(self._rechecks.items()):
            if committed >= seq:
                del self._rechecks[project]
                self.request(project)

    async def _reload(self, conn: asyncpg.Connection) -> None:
        projects: Collection[str] | None = None if self._everything else self._pending
        self._everything, self._pending = False, set()
        committed = self._begin_read()  # before the query: every write up to here is in the rows
        try:
            rows = await current_mappings(conn, projects, QUERY_TIMEOUT)
        except BaseException:
            if self._read_failed is not None:
                self._read_failed()
            if projects is None:
                self._everything = True
            else:
                self._pending |= set(projects)
            raise
        self.reloads += 1
        self._backoff.reset()
        for project, seq in self._apply(rows, projects, committed).items():
            self.reload_after(seq, project)

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        text = str(payload)
        try:
            project, bridge = parse(text)
        except ValueError as exc:
            self._warn_payload(payload=text[:200], error=str(exc)[:200], hint="reloading every project")
            project, bridge = None, None
        if bridge == self.bridge_id:
            self.own += 1
            return
        self.notified += 1
        self.request(project)
