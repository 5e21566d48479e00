"""Wires the daemon together and runs it: start, serve, drain and stop, in that order.

Start: bind the sockets first (a second bridge fails at once; datagrams wait in the kernel buffer), then the
database (embedded or given), the schema and the stored state, then the writer, then read the sockets and log
`ready`. Stop (SIGTERM/SIGINT): stop reading, finish in-flight requests, write what is queued, close the pool,
stop the embedded server.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from pathlib import Path
from typing import Any

from oscbridge.api.core import CoreApi
from oscbridge.api.debug import DebugApi
from oscbridge.api.endpoint import collect
from oscbridge.api.mapping import MappingApi
from oscbridge.api.project import ProjectApi
from oscbridge.api.spool import SpoolApi
from oscbridge.component import Component
from oscbridge.config import Settings
from oscbridge.context import BridgeContext
from oscbridge.logs import get_logger
from oscbridge.memory.component import MemoryComponent
from oscbridge.osc.transport import TcpLimits, TcpServer, UdpServer, bind_tcp, bind_udp
from oscbridge.plugins.hub import PluginHub
from oscbridge.private import DIR_MODE, TRAVERSABLE_DIR_MODE, private_dir
from oscbridge.recording import Recorder
from oscbridge.router import PluginHandler, Router
from oscbridge.state import DEFAULT_PROJECT, ProjectState
from oscbridge.store.core_ops import CORE_OPS
from oscbridge.store.db import CONNECTION_ERRORS, Database, fetch_info, redact
from oscbridge.store.embedded import EmbeddedPostgres
from oscbridge.store.load import load_projects
from oscbridge.store.spool import Spool, SpoolError
from oscbridge.store.writer import Writer

log = get_logger("oscbridge.app")

STARTUP_DB_TIMEOUT = 10.0
# Stop: the last part of the drain budget kept for cancelling a stuck writer batch, and how long the pool may
# take to close before its connections are cut.
WRITER_CANCEL_GRACE = 0.5
CLOSE_TIMEOUT = 1.0


class Bridge:
    """One running daemon. `await start()`, then `await stop()`; tests drive it in-process the same way."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded: EmbeddedPostgres | None = None
        self.db: Database | None = None
        self.ctx: BridgeContext | None = None
        self.router: Router | None = None
        self.udp: UdpServer | None = None
        self.tcp: TcpServer | None = None
        self.spool: Spool | None = None
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._background: list[asyncio.Task[Any]] = []
        self.components: list[Component] = []
        self.recorder: Recorder | None = None
        self.stopped = asyncio.Event()

    @property
    def port(self) -> int:
        return self.settings.osc_port

    async def start(self) -> None:
        settings = self.settings
        udp_sock = bind_udp(settings.host, settings.osc_port, settings.udp_rcvbuf)
        try:
            tcp_sock = bind_tcp(settings.host, settings.osc_port)
        except OSError:
            udp_sock.close()
            raise
        # Run as root, the embedded PostgreSQL runs as its own OS user, which must pass through the data dir.
        data_mode = TRAVERSABLE_DIR_MODE if settings.database_url is None and os.geteuid() == 0 else DIR_MODE
        private_dir(settings.data_dir, mode=data_mode)
        try:
            # Owned for the daemon's life (a lock file): taken before the database so that a second process on
            # this data dir stops here, whatever port it was given.
            self.spool = Spool(settings.spool_dir, max_bytes=settings.spool_max_bytes,
                               reserve_bytes=settings.disk_reserve_bytes,
                               owner={"host": settings.host, "port": settings.osc_port})
        except SpoolError:
            udp_sock.close()
            tcp_sock.close()
            raise

        db_kind = "external" if settings.database_url else "embedded"
        url = settings.database_url
        if url is None:
            self.embedded = EmbeddedPostgres(settings.embedded_pgdata)
            url = await self.embedded.start_async()
            private_dir(settings.data_dir, mode=data_mode)  # the helper opens the dirs above its own (as root)
        self.db = Database(url)
        state, info = await self._load_state(self.db)

        writer = Writer(self.db, self.spool, CORE_OPS)
        self.ctx = ctx = BridgeContext(settings=settings, state=state, writer=writer, db=self.db)
        self.components = self._components(ctx)
        apis: list[object] = [CoreApi(ctx), ProjectApi(ctx), MappingApi(ctx), DebugApi(ctx), SpoolApi(ctx)]
        plugin_handlers: dict[str, PluginHandler] = {}
        for component in self.components:
            writer.register(*component.op_kinds())
            apis.extend(component.apis())
            plugin_handlers.update(component.plugin_handlers())
        self._resume_project(state)
        writer.start()

        self.router = router = Router(collect(*apis), plugin_handlers)
        ctx.router = router
        router.local_addr = (settings.host, settings.osc_port)
        self.udp = udp = UdpServer(router.on_udp)
        router.udp = udp
        ctx.send = udp.send
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: udp, sock=udp_sock)
        self._udp_transport = transport
        if settings.record is not None:
            self._start_recording(settings.record)
        self.tcp = TcpServer(router.on_tcp, TcpLimits(
            max_connections=settings.tcp_max_connections, max_frame=settings.tcp_max_frame,
            high_water=settings.tcp_high_water, low_water=settings.tcp_low_water,
            max_unsent=settings.tcp_max_unsent, slow_close=settings.tcp_slow_close))
        await self.tcp.start(tcp_sock)
        for component in self.components:
            await component.start()
        if not self.db.up:
            self._background.append(loop.create_task(self._reconnect_loop()))
        # Everything allocated so far (modules, schema text, pools) lives as long as the daemon: moving it out of
        # the collector's reach keeps full collections, which run on the receive path, short.
        gc.freeze()
        log.info("ready", host=settings.host, port=settings.osc_port, database=db_kind,
                 database_up=self.db.up, **info)

    def _start_recording(self, path: Path) -> None:
        """`--record FILE`: every UDP datagram in and out, in BRIDGE-API.md's JSONL format."""
        assert self.router is not None and self.udp is not None
        recorder = self.recorder = Recorder(path)
        local = self.router.local_addr
        self.router.recorder = recorder.record
        self.udp.sent_hook = lambda data, addr: recorder.record(local, addr, data)
        log.info("recording", file=str(path))

    def _components(self, ctx: BridgeContext) -> list[Component]:
        """The parts beyond the foundation, in start order (stopped in reverse)."""
        return [PluginHub(ctx), MemoryComponent(ctx)]

    async def _load_state(self, db: Database) -> tuple[ProjectState, dict[str, Any]]:
        """Applies the schema and loads projects; with the database unreachable, starts from memory."""
        try:
            await asyncio.wait_for(db.connect(), STARTUP_DB_TIMEOUT)
            async with db.acquire() as conn:
                info = await fetch_info(conn)
                state = await load_projects(conn)
        except CONNECTION_ERRORS as exc:
            db.mark_down(exc)
            log.warning("database_unreachable_at_start", url=redact(db.url), error=str(exc)[:300],
                        hint="serving from memory; acknowledged writes are spooled until it is back")
            return ProjectState(), {}
        info["resume"] = state.latest
        return state, info

    def _resume_project(self, state: ProjectState) -> None:
        """Resumes the most recently opened project in a new session, or creates "Default Project"."""
        assert self.ctx is not None
        self.ctx.start_session(state.latest or DEFAULT_PROJECT)

    async def _reconnect_loop(self) -> None:
        """Keeps trying to reach a database that was down at start, so that schema and writes follow."""
        assert self.db is not None
        delay = 0.5
        while not self.db.up:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            try:
                await self.db.connect()
            except CONNECTION_ERRORS as exc:
                self.db.mark_down(exc)
                continue
            except Exception as exc:  # schema refused: say so once, keep serving from memory
                log.error("schema_not_applied", error=str(exc)[:500])
                return
            if self.ctx is not None:
                self.ctx.writer.wake()

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
        flush_until = started + self.settings.drain_timeout - WRITER_CANCEL_GRACE - CLOSE_TIMEOUT
        if self._udp_transport is not None:
            self._udp_transport.close()
        if self.tcp is not None:
            await self.tcp.close()
        for component in reversed(self.components):
            try:
                await asyncio.wait_for(component.stop(), 2.0)
            except Exception as exc:
                log.warning("component_stop_failed", component=type(component).__name__, error=str(exc))
        if self.router is not None:
            await self.router.drain(2.0)
        for task in self._background:
            task.cancel()
        drained = True
        if self.ctx is not None:
            # A batch stuck in a query that the server never answers cannot be cancelled promptly (asyncpg waits
            # for the server to confirm the cancel), so the stop stops waiting for the writer after the grace;
            # closing the pool below cuts its connection.
            flush_for = max(0.0, flush_until - time.monotonic())
            stopping = asyncio.ensure_future(self.ctx.writer.stop(flush_for))
            done, _ = await asyncio.wait({stopping}, timeout=flush_for + WRITER_CANCEL_GRACE)
            drained = stopping.result() if done else False
            if not done:
                log.warning("writer_stop_timed_out", pending=self.ctx.writer.spool.pending)
        if self.spool is not None:
            self.spool.close()
        if self.recorder is not None:
            self.recorder.close()
        if self.db is not None:
            await self.db.close(CLOSE_TIMEOUT)
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        log.info("stopped", seconds=round(time.monotonic() - started, 3), drained=drained)
        self.stopped.set()
