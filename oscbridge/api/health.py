"""/bridge/health (an extension, docs/bridge-api-notes.md): the facts `oscbridge doctor` checks, as the running
bridge sees them, one row per fact: name `s`, status `s` (ok, warn, fail), text `s` in plain words.

For the web page's Health view and for scripts. It answers when PostgreSQL is down (the database row then says
so), reads PostgreSQL with one short query (versions), and everything else from memory (the embedding backlog is
the worker's count, `memory.backlog`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from oscbridge import __version__
from oscbridge.api.endpoint import Rows, request
from oscbridge.api.reads import reading
from oscbridge.clock import Clock, duration
from oscbridge.memory.worker import EmbeddingWorker
from oscbridge.plugins.registry import InstanceRegistry
from oscbridge.store.db import Database
from oscbridge.store.levels import disk_level, spool_level
from oscbridge.store.spool import human
from oscbridge.store.writer import Writer
from oscbridge.typedefs import BridgeError, PluginState

QUERY_TIMEOUT = 2.0
_FACTS = """
SELECT current_setting('server_version') AS server,
       (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS pgvector,
       (SELECT max(version) FROM schema_version) AS schema_version
"""
# Counters of input the bridge refused or could not keep, from /bridge/stats.
REFUSED = {"router.malformed": "malformed datagrams", "router.unknown_address": "unknown addresses",
           "router.busy": "requests refused as busy", "tcp.refused": "TCP connections refused",
           "tcp.frames_too_large": "TCP frames too large", "hub.debug_rows_suppressed": "debug rows over the rate",
           "spool.dropped": "debug rows dropped (disk)", "fanout.dropped": "subscribers dropped"}

Row = tuple[str, str, str]


class HealthApi:
    def __init__(self, clock: Clock, database: str, db: Database, writer: Writer, worker: EmbeddingWorker,
                 registry: InstanceRegistry, stats: Callable[[], dict[str, int]]) -> None:
        self._clock = clock
        self._started = clock.monotonic()
        self._database = database  # where it is, without a password
        self._db = db
        self._writer = writer
        self._worker = worker
        self._registry = registry
        self._stats = stats

    @request("/bridge/health")
    async def health(self) -> Rows:
        facts = await self._facts()
        counters = self._stats()
        return Rows([self._bridge(), *self._database_rows(facts), self._ollama(), self._writes(),
                     self._refused(counters), self._disk()])

    async def _facts(self) -> dict[str, Any] | None:
        """Versions, or None while the database cannot answer."""
        if not self._db.up:
            return None
        try:
            async with asyncio.timeout(QUERY_TIMEOUT), reading(self._db) as conn:
                row = await conn.fetchrow(_FACTS)
        except (BridgeError, TimeoutError):
            return None
        return dict(row) if row else None

    def _bridge(self) -> Row:
        up = self._clock.monotonic() - self._started
        bound = self._registry.count(PluginState.BOUND, PluginState.IDENTIFIED)
        named = self._registry.count(PluginState.IDENTIFIED)
        return ("bridge", "ok", f"oscbridge {__version__}, up {duration(up)}; {bound} plugins bound, {named} with "
                                "a track id")

    def _database_rows(self, facts: dict[str, Any] | None) -> list[Row]:
        if facts is None:
            return [("database", "fail", f"{self._database}: not reachable; accepted writes wait in the spool"),
                    ("pgvector", "warn", "not known while the database is down"),
                    ("schema", "warn", "not known while the database is down")]
        vector = facts["pgvector"]
        return [("database", "ok", f"PostgreSQL {facts['server']}, {self._database}"),
                ("pgvector", "ok" if vector else "fail", f"pgvector {vector}" if vector else "not installed"),
                ("schema", "ok", f"version {facts['schema_version']}")]

    def _ollama(self) -> Row:
        worker = self._worker
        backlog = f"; {worker.backlog} messages waiting for an embedding"
        if worker.status == "up":
            return ("ollama", "ok", f"{worker.model} ({worker.dim} dimensions) answers{backlog}")
        why = f": {worker.last_error}" if worker.last_error else ""
        state = {"down": "not reachable", "blocked": "needs a person", "unknown": "not asked yet"}[worker.status]
        return ("ollama", "warn" if worker.status != "blocked" else "fail", f"{state}{why}{backlog}"[:1000])

    def _writes(self) -> Row:
        spool = self._writer.spool
        held = spool.unapplied_bytes
        text = (f"{self._writer.queued} writes queued, {human(held)} in the spool not yet in PostgreSQL, "
                f"{spool.rejected_count} refused by PostgreSQL (rejected.jsonl)")
        return ("writes", spool_level(held, spool.max_bytes, spool.rejected_count), text)

    def _refused(self, counters: dict[str, int]) -> Row:
        seen = [f"{counters[key]} {text}" for key, text in REFUSED.items() if counters.get(key)]
        return ("refused", "ok", "; ".join(seen) if seen else "nothing refused since start")

    def _disk(self) -> Row:
        spool = self._writer.spool
        free = spool.free_bytes()
        return ("disk", disk_level(free, spool.reserve_bytes), f"{human(free)} free next to the spool")

