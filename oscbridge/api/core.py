"""/bridge/ping and /bridge/status: is the bridge alive, and how is it doing."""

from __future__ import annotations

import time

from oscbridge import __version__
from oscbridge.api.endpoint import request
from oscbridge.context import BridgeContext


class CoreApi:
    def __init__(self, ctx: BridgeContext) -> None:
        self.ctx = ctx

    @request("/bridge/ping")
    def ping(self) -> tuple[str, float]:
        return __version__, time.monotonic() - self.ctx.started

    @request("/bridge/status")
    def status(self) -> tuple[int, int, int, int, int, int]:
        ctx = self.ctx
        return (
            ctx.instances.count("bound", "identified"),
            ctx.instances.count("identified"),
            ctx.writer.queued,
            ctx.writer.spooled,
            int(ctx.db.up),
            int(ctx.ollama_up()),
        )
