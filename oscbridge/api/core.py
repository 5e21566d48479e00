"""/bridge/ping, /bridge/status and /bridge/stats: is the bridge alive, how is it doing, and its counters."""

from __future__ import annotations

from collections.abc import Callable

from oscbridge import __version__
from oscbridge.api.endpoint import Rows, request
from oscbridge.clock import Clock
from oscbridge.plugins.registry import InstanceRegistry
from oscbridge.store.db import Database
from oscbridge.store.spool import MIB
from oscbridge.store.writer import Writer
from oscbridge.typedefs import PluginState

INT32_MAX = 2**31 - 1  # an OSC `i`


class CoreApi:
    def __init__(self, clock: Clock, registry: InstanceRegistry, writer: Writer, db: Database,
                 ollama_up: Callable[[], bool], stats: Callable[[], dict[str, int]]) -> None:
        self._clock = clock
        self._started = clock.monotonic()
        self._registry = registry
        self._writer = writer
        self._db = db
        self._ollama_up = ollama_up
        self._stats = stats  # every part's counters, gathered when asked

    @request("/bridge/ping")
    def ping(self) -> tuple[str, float]:
        return __version__, self._clock.monotonic() - self._started

    @request("/bridge/status")
    def status(self) -> tuple[int, ...]:
        """The six results of BRIDGE-API.md, then (an extension, docs/bridge-api-notes.md): free MiB on the
        spool's disk, bytes in the spool not yet in PostgreSQL, writes in rejected.jsonl, and best-effort writes
        (debug rows of plugin traffic) dropped since start."""
        spool = self._writer.spool
        return (
            self._registry.count(PluginState.BOUND, PluginState.IDENTIFIED),
            self._registry.count(PluginState.IDENTIFIED),
            self._writer.queued,
            self._writer.spooled,
            int(self._db.up),
            int(self._ollama_up()),
            min(spool.free_bytes() // MIB, INT32_MAX),
            min(spool.unapplied_bytes, INT32_MAX),
            spool.rejected_count,
            spool.dropped,
        )

    @request("/bridge/stats")
    def stats(self) -> Rows:
        """Every component's counters by name, sorted (an extension, docs/plugin-hub.md)."""
        return Rows(sorted(self._stats().items()))
