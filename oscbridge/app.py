"""Wires the daemon together and runs it: start, serve, drain and stop, in that order.

Start: bind the sockets first (a second bridge fails at once; datagrams wait in the kernel buffer), take the
spool, then the database (embedded or given), the schema and the stored state. Then every part is built complete,
bottom up, each given what it uses: the writer (with every write type, so a spool left by the last run is applied
first), the projects, the plugin hub and the memory, the request handlers, the router; then the sockets are read,
the components start, and `ready` is logged. Stop (SIGTERM/SIGINT): stop reading, finish in-flight requests,
write what is queued, close the pool, stop the embedded server.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from oscbridge import __version__
from oscbridge.api.core import CoreApi
from oscbridge.api.debug import DebugApi
from oscbridge.api.endpoint import Endpoint, collect
from oscbridge.api.health import HealthApi
from oscbridge.api.mapping import MappingApi
from oscbridge.api.memory import MemoryApi
from oscbridge.api.plugins import PluginsApi
from oscbridge.api.project import ProjectApi
from oscbridge.api.sessions import SessionsApi
from oscbridge.api.spool import SpoolApi
from oscbridge.api.storage import StorageApi
from oscbridge.backoff import Backoff
from oscbridge.clock import SYSTEM_CLOCK, Clock
from oscbridge.config import Settings
from oscbridge.logs import RateLimitedWarning, get_logger
from oscbridge.memory.ops import MEMORY_OPS
from oscbridge.memory.search import HybridSearch
from oscbridge.memory.worker import EmbeddingWorker
from oscbridge.osc.transport import TcpLimits, TcpServer, UdpSocket, bind_tcp, bind_udp
from oscbridge.plugins.adoption import StoredPool
from oscbridge.plugins.hub import PluginHub
from oscbridge.plugins.ops import HUB_OPS, load_pool
from oscbridge.private import DIR_MODE, TRAVERSABLE_DIR_MODE, private_dir
from oscbridge.projects import LoadedProjects, Projects, load_projects
from oscbridge.redact import redact_url
from oscbridge.router import Router
from oscbridge.store.backup import BackupSchedule
from oscbridge.store.core_ops import CORE_OPS, repair_parents
from oscbridge.store.db import CONNECTION_ERRORS, Database, DatabaseRefused, fetch_info
from oscbridge.store.debug_tail import DebugTail
from oscbridge.store.embedded import EmbeddedPostgres
from oscbridge.store.identity import BridgeIdentity, IdentityError, first_start, load_identity
from oscbridge.store.notifications import MappingListener
from oscbridge.store.retention import Retention
from oscbridge.store.spool import Spool, SpoolError
from oscbridge.store.writer import Writer
from oscbridge.store.writes import BridgeStart
from oscbridge.web.feed import EventLog, LiveFeed
from oscbridge.web.guard import Guard
from oscbridge.web.server import WebServer
from oscbridge.web.token import load_or_create_token
from oscbridge.web.urls import web_url

log = get_logger("oscbridge.app")

STARTUP_DB_TIMEOUT = 10.0
# Stop: the last part of the drain budget kept for cancelling a stuck writer batch, and how long the pool may
# take to close before its connections are cut.
WRITER_CANCEL_GRACE = 0.5
CLOSE_TIMEOUT = 1.0
COMPONENT_STOP_TIMEOUT = 2.0
# A database that refuses the bridge while it reconnects: its reason is logged at most this often (seconds).
REFUSED_LOG_INTERVAL = 60.0
# Every write type the daemon makes; `oscbridge spool retry-rejected` applies the spool with the same list.
WRITE_KINDS = (*CORE_OPS, *HUB_OPS, *MEMORY_OPS)


class Recorder(Protocol):
    """`tools.recording.Recorder`, as the daemon uses it."""

    def record(self, src: tuple[str, int], dst: tuple[str, int], data: bytes) -> None: ...

    def close(self) -> None: ...


class Advertiser(Protocol):
    """`web.advertise.Advertiser` (mDNS), as the daemon uses it."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class Parts:
    """Everything a started bridge is made of, complete."""

    spool: Spool
    db: Database
    writer: Writer
    projects: Projects
    hub: PluginHub
    memory: EmbeddingWorker
    router: Router
    udp: UdpSocket
    tcp: TcpServer
    retention: Retention
    web: WebServer | None
    embedded: EmbeddedPostgres | None
    recorder: Recorder | None
    listener: MappingListener


class Bridge:
    """One running daemon. `await start()`, then `await stop()`; tests drive it in-process the same way."""

    def __init__(self, settings: Settings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.clock = clock
        self._parts: Parts | None = None
        self.identity: BridgeIdentity | None = None  # known once started
        self._embedded: EmbeddedPostgres | None = None
        self._background: list[asyncio.Task[Any]] = []
        self._advertiser: Advertiser | None = None
        self.stopped = asyncio.Event()

    @property
    def port(self) -> int:
        return self.settings.osc_port

    @property
    def parts(self) -> Parts:
        if self._parts is None:
            raise RuntimeError("the bridge has not started")
        return self._parts

    # The parts tests and tools look at most.
    writer = property(lambda self: self.parts.writer)
    db = property(lambda self: self.parts.db)
    router = property(lambda self: self.parts.router)
    hub = property(lambda self: self.parts.hub)
    projects = property(lambda self: self.parts.projects)
    tcp = property(lambda self: self.parts.tcp)

    @property
    def web_url(self) -> str | None:
        """The web page's address (without the token), or None when it is off."""
        return web_url(self.settings)

    @property
    def embedded(self) -> EmbeddedPostgres | None:
        """The embedded PostgreSQL, once it is started (the second-signal path stops it)."""
        return self._embedded

    async def start(self) -> None:
        settings, clock = self.settings, self.clock
        udp_sock = bind_udp(settings.host, settings.osc_port, settings.udp_rcvbuf)
        sockets = [udp_sock]
        try:
            tcp_sock = bind_tcp(settings.host, settings.osc_port)
            sockets.append(tcp_sock)
            http_sock = _bind_http(settings)
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        if http_sock is not None:
            sockets.append(http_sock)
        # Run as root, the embedded PostgreSQL runs as its own OS user, which must pass through the data dir.
        data_mode = TRAVERSABLE_DIR_MODE if settings.database_url is None and os.geteuid() == 0 else DIR_MODE
        private_dir(settings.data_dir, mode=data_mode)
        try:
            # Owned for the daemon's life (a lock file): taken before the database so that a second process on
            # this data dir stops here, whatever port it was given.
            spool = Spool(settings.spool_dir, max_bytes=settings.spool_max_bytes,
                          reserve_bytes=settings.disk_reserve_bytes,
                          owner={"host": settings.host, "port": settings.osc_port})
        except SpoolError:
            for sock in sockets:
                sock.close()
            raise
        try:
            identity = load_identity(settings.data_dir, settings.bridge_name)  # with the spool's lock held
        except IdentityError:
            spool.close()
            for sock in sockets:
                sock.close()
            raise
        self.identity = identity

        db_kind = "external" if settings.database_url else "embedded"
        url = settings.database_url
        if url is None:
            self._embedded = EmbeddedPostgres(settings.embedded_pgdata)
            url = await self._embedded.start_async()
            private_dir(settings.data_dir, mode=data_mode)  # the helper opens the dirs above its own (as root)
        db = Database(url, direct_url=settings.database_direct_url, pooled=settings.database_pooled)
        try:
            loaded, info = await self._load(db, identity.id)
        except BaseException:  # refused (SchemaError, DatabaseRefused): the port and the data dir are free again
            spool.close()
            for sock in sockets:
                sock.close()
            raise

        recorder = _recorder(settings)
        udp = UdpSocket(udp_sock, recorder.record if recorder is not None else None)
        writer = Writer(db, spool, WRITE_KINDS, clock=clock, bridge_id=identity.id, repair=repair_parents)
        first_write = writer.submit(BridgeStart(identity.id, identity.name, socket.gethostname(), __version__,
                                                clock.time()))
        tail = DebugTail()  # what goes to mission_control_debug, for the web page's traffic view
        projects = Projects(loaded, writer.submit, clock, committed=lambda: spool.committed)
        hub = PluginHub(settings, clock, udp.send, projects, writer.submit, tail.tap(writer.submit_best_effort),
                        _pool_loader(db, writer, identity.id))
        # Mapping changes of the other bridges on this database (docs/bridge-api-notes.md), and events of them all.
        # LISTEN needs a connection straight to PostgreSQL: a transaction pooler does not keep it.
        listener = MappingListener(db.direct_url, identity.id, projects.reload_mappings, lambda: spool.committed,
                                   begin_read=projects.begin_reload, read_failed=projects.reload_failed)
        projects.listeners.append(hub.fanout.emit)
        projects.switched.append(listener.request)
        listener.reload_after(first_write)  # the mapping writes the last run left in the spool come before it
        memory = EmbeddingWorker(settings, db, writer)
        database = str(self._embedded.pgdata) if self._embedded else redact_url(url)
        apis = [CoreApi(clock, hub.registry, writer, db, memory.up, self._stats), ProjectApi(projects),
                MappingApi(projects, hub.registry), DebugApi(projects, tail, clock, db, writer),
                SpoolApi(writer, retried=listener.reload_after), PluginsApi(hub, clock), StorageApi(db),
                HealthApi(clock, database, db, writer, memory, hub.registry, self._stats),
                MemoryApi(projects, writer, db, memory, HybridSearch(settings.hnsw_ef_search), clock),
                SessionsApi(projects, db, writer)]
        endpoints = collect(*apis)
        router = Router(endpoints, hub.plugin_handlers(), udp)
        tcp = TcpServer(router.on_tcp, _tcp_limits(settings))
        retention = Retention(db, settings.debug_retention_days, settings.retention_interval, clock)
        web = None if http_sock is None else _web_server(settings, endpoints, tail, hub, clock)
        self._parts = Parts(spool, db, writer, projects, hub, memory, router, udp, tcp, retention, web,
                            self._embedded, recorder, listener)

        writer.start()
        await udp.start(router.on_udp)
        await tcp.start(tcp_sock)
        if web is not None and http_sock is not None:
            await web.start(http_sock)
        self._advertiser = _advertiser(settings)
        await hub.start()
        memory.start()
        retention.start()
        listener.start()
        if not db.up:
            reconnect = self._reconnect(db, writer)
            self._background.append(asyncio.get_running_loop().create_task(reconnect, name="oscbridge-reconnect"))
        if settings.backup_every > 0:  # docs/backup.md; pg_dump runs as a subprocess, off the receive path
            backups = BackupSchedule(db.direct_url, settings.spool_dir, settings.backups_dir, settings.backup_every,
                                     settings.backup_keep, db_kind, clock, first_start(settings.data_dir))
            self._background.append(asyncio.get_running_loop().create_task(backups.run(), name="oscbridge-backups"))
        # Everything allocated so far (modules, schema text, pools) lives as long as the daemon: moving it out of
        # the collector's reach keeps full collections, which run on the receive path, short.
        gc.freeze()
        log.info("ready", host=settings.host, port=settings.osc_port, web=self.web_url, bridge=identity.name,
                 bridge_id=identity.id, database=db_kind, database_up=db.up, **info)
        if spool.rejected_count:
            log.warning("rejected_writes_waiting", count=spool.rejected_count, kept_in=str(spool.rejected_path),
                        hint="PostgreSQL refused these writes for good: read why in that file, fix the cause, "
                             "then run `oscbridge spool retry-rejected`")

    def _report_background(self) -> None:
        """Says which background task is still running at the end of the stop, or ended with an error no one saw
        (a task's exception is otherwise only a "never retrieved" line at exit, if that)."""
        for task in self._background:
            if not task.done():
                log.warning("component_stop_failed", component=task.get_name(), error="still running at the stop")
            elif not task.cancelled() and (error := task.exception()) is not None:
                log.error("background_task_failed", component=task.get_name(),
                          error=f"{type(error).__name__}: {error}"[:1000])

    def _stats(self) -> dict[str, int]:
        """`/bridge/stats`: every part's own counters."""
        parts = self.parts
        values: dict[str, int] = {}
        for part in (parts.router, parts.udp, parts.tcp, parts.hub, parts.writer, parts.memory, parts.retention,
                     parts.web, parts.listener):
            if part is not None:
                values.update(part.stats())
        return values

    async def _load(self, db: Database, bridge_id: str) -> tuple[LoadedProjects, dict[str, Any]]:
        """Applies the schema and loads projects (and the one bridge `bridge_id` resumes); with the database
        unreachable, starts from memory."""
        try:
            await asyncio.wait_for(db.connect(), STARTUP_DB_TIMEOUT)
            async with db.acquire() as conn:
                info = await fetch_info(conn)
                loaded = await load_projects(conn, bridge_id)
        except CONNECTION_ERRORS as exc:
            db.mark_down(exc)
            log.warning("database_unreachable_at_start", url=redact_url(db.url), error=str(exc)[:300],
                        hint="serving from memory; acknowledged writes are spooled until it is back")
            return LoadedProjects(), {}
        info["resume"] = loaded.resume
        return loaded, info

    async def _reconnect(self, db: Database, writer: Writer) -> None:
        """Keeps trying to reach a database that was down at start, so that schema and writes follow.

        A database that answers but refuses the bridge (a rotated password, an expired certificate, a missing
        GRANT: DatabaseRefused) is fixed by a person while the bridge serves from memory, so it is tried again
        with the same backoff, and its reason logged as `database_refused` at once, then at most once a minute
        (again at once when the reason changes): the bridge connects by itself once the cause is fixed."""
        backoff = Backoff(0.5, 10.0)
        refused: tuple[str, RateLimitedWarning] | None = None
        while not db.up:
            await self.clock.sleep(backoff.next())
            try:
                await db.connect()
            except CONNECTION_ERRORS as exc:
                db.mark_down(exc)
                continue
            except DatabaseRefused as exc:
                reason = str(exc)[:500]
                if refused is None or refused[0] != reason:
                    refused = reason, RateLimitedWarning(log, "database_refused", interval=REFUSED_LOG_INTERVAL)
                refused[1](error=reason, hint="serving from memory; acknowledged writes are spooled, and the "
                                              "bridge connects by itself once this is fixed")
                continue
            except Exception as exc:  # schema refused: say so once, keep serving from memory
                log.error("schema_not_applied", error=str(exc)[:500])
                return
            writer.wake()

    async def stop(self) -> None:
        """Stops within `drain_timeout` seconds (plus stopping the embedded server), whatever the database does.

        SIGTERM must end the process well within 10 s: launchd SIGKILLs after its ExitTimeOut, which would skip
        stopping the embedded server. Components and in-flight requests have small fixed bounds; writing the queue
        gets what is left of `drain_timeout`, less the last `WRITER_CANCEL_GRACE` + `CLOSE_TIMEOUT`, which are kept
        for cancelling a stuck batch and for closing the pool (its connections are cut after that, so a server
        that stopped answering cannot hold the stop up). Writes that do not make it stay in the spool and are
        written at the next start.
        """
        started = time.monotonic()
        parts = self._parts
        if parts is None:
            if self._embedded is not None:
                await asyncio.to_thread(self._embedded.stop)
            self.stopped.set()
            return
        flush_until = started + self.settings.drain_timeout - WRITER_CANCEL_GRACE - CLOSE_TIMEOUT
        if self._advertiser is not None:  # goodbye first: browsers forget the bridge before it stops answering
            await self._advertiser.stop()
        parts.udp.close()
        await parts.tcp.close()
        if parts.web is not None:
            await parts.web.close()
        for name, stop in (("retention", parts.retention.stop), ("memory", parts.memory.stop),
                           ("plugin hub", parts.hub.stop), ("mapping listener", parts.listener.stop)):
            try:
                await asyncio.wait_for(stop(), COMPONENT_STOP_TIMEOUT)
            except Exception as exc:
                log.warning("component_stop_failed", component=name, error=str(exc))
        await parts.router.drain(COMPONENT_STOP_TIMEOUT)
        for task in self._background:
            task.cancel()
        # A batch stuck in a query that the server never answers cannot be cancelled promptly (asyncpg waits for
        # the server to confirm the cancel), so the stop stops waiting for the writer after the grace; closing the
        # pool below cuts its connection.
        # The background tasks end within the same budget (a backup stops its threads at their next MiB and waits
        # for pg_dump to go), before the spool and the database they use are closed.
        flush_for = max(0.0, flush_until - time.monotonic())
        stopping = asyncio.ensure_future(parts.writer.stop(flush_for))
        await asyncio.wait({stopping, *self._background}, timeout=flush_for + WRITER_CANCEL_GRACE)
        drained = stopping.result() if stopping.done() else False
        if not stopping.done():
            log.warning("writer_stop_timed_out", pending=parts.spool.pending)
        self._report_background()
        parts.spool.close()
        if parts.recorder is not None:
            parts.recorder.close()
        await parts.db.close(CLOSE_TIMEOUT)
        if parts.embedded is not None:
            await asyncio.to_thread(parts.embedded.stop)
        log.info("stopped", seconds=round(time.monotonic() - started, 3), drained=drained)
        self.stopped.set()


def _bind_http(settings: Settings) -> socket.socket | None:
    if settings.http_port == 0:
        return None
    return bind_tcp(settings.host, settings.http_port,
                    f"TCP port {settings.http_port} on {settings.host} (the web page) is already in use: another "
                    "oscbridge or another program holds it. Choose another with --http-port (or http_port in the "
                    "config file), or 0 for no web page.")


def _web_server(settings: Settings, endpoints: dict[str, Endpoint], tail: DebugTail, hub: PluginHub,
                clock: Clock) -> WebServer:
    """The web page's server, fed by the debug tail and the hub's events (docs/web.md)."""
    events = EventLog(clock)
    hub.fanout.listeners.append(events.add)
    guard = Guard(settings.host, settings.http_port, load_or_create_token(settings.data_dir))
    return WebServer(endpoints, LiveFeed(endpoints, tail, events), guard, (settings.host, settings.osc_port),
                     mcp_allow_control=settings.mcp_allow_control)


def _advertiser(settings: Settings) -> Advertiser | None:
    """`--advertise`: the mDNS announcements, started (docs/oscquery.md). zeroconf is imported only when asked for."""
    if not settings.advertise:
        return None
    from oscbridge.web import advertise

    advertiser = advertise.Advertiser(settings)
    advertiser.start()
    return advertiser


def _tcp_limits(settings: Settings) -> TcpLimits:
    return TcpLimits(max_connections=settings.tcp_max_connections, max_frame=settings.tcp_max_frame,
                     high_water=settings.tcp_high_water, low_water=settings.tcp_low_water,
                     max_unsent=settings.tcp_max_unsent, slow_close=settings.tcp_slow_close)


def _recorder(settings: Settings) -> Recorder | None:
    """`--record FILE`: every UDP datagram in and out, in BRIDGE-API.md's JSONL format (the recorder is a tool,
    imported only when asked for)."""
    if settings.record is None:
        return None
    from oscbridge.tools.recording import Recorder

    log.info("recording", file=str(settings.record))
    return Recorder(settings.record)


def _pool_loader(db: Database, writer: Writer, bridge_id: str) -> Callable[[], Awaitable[StoredPool | None]]:
    """What re-adoption reads at start: the instances stored as live and the running quarantines, after what the
    previous run spooled has landed (None when the database cannot be read)."""

    async def load() -> StoredPool | None:
        if not db.up:
            return None
        try:
            await writer.flush(2.0)
            async with db.acquire() as conn:
                return await load_pool(conn, bridge_id)
        except CONNECTION_ERRORS as exc:
            log.warning("plugin_pool_not_loaded", error=str(exc)[:300])
            return None

    return load
