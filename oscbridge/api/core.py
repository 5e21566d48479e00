"""/bridge/ping and /bridge/status: is the bridge alive, and how is it doing."""

from __future__ import annotations

import time

from oscbridge import __version__
from oscbridge.api.endpoint import request
from oscbridge.context import BridgeContext
from oscbridge.store.spool import MIB

INT32_MAX = 2**31 - 1  # an OSC `i`


class CoreApi:
    def __init__(self, ctx: BridgeContext) -> None:
        self.ctx = ctx

    @request("/bridge/ping")
    def ping(self) -> tuple[str, float]:
        return __version__, time.monotonic() - self.ctx.started

    @request("/bridge/status")
    def status(self) -> tuple[int, ...]:
        """The six results of BRIDGE-API.md, then (an extension, docs/bridge-api-notes.md): free MiB on the
        spool's disk, bytes in the spool not yet in PostgreSQL, writes in rejected.jsonl, and best-effort writes
        (debug rows of plugin traffic) dropped since start."""
        ctx = self.ctx
        spool = ctx.writer.spool
        return (
            ctx.instances.count("bound", "identified"),
            ctx.instances.count("identified"),
            ctx.writer.queued,
            ctx.writer.spooled,
            int(ctx.db.up),
            int(ctx.ollama_up()),
            min(spool.free_bytes() // MIB, INT32_MAX),
            min(spool.unapplied_bytes, INT32_MAX),
            spool.rejected_count,
            spool.dropped,
        )
