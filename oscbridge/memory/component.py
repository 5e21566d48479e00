"""The conversation memory as a bridge component: its requests, its write kinds and its embedding worker."""

from __future__ import annotations

from collections.abc import Sequence

from oscbridge.context import BridgeContext
from oscbridge.memory.api import MemoryApi
from oscbridge.memory.ops import MEMORY_OPS
from oscbridge.memory.worker import EmbeddingWorker
from oscbridge.router import PluginHandler
from oscbridge.store.writer import OpKind


class MemoryComponent:
    def __init__(self, ctx: BridgeContext) -> None:
        self.worker = EmbeddingWorker(ctx)
        self.api = MemoryApi(ctx, self.worker)

    def apis(self) -> Sequence[object]:
        return [self.api]

    def op_kinds(self) -> Sequence[OpKind]:
        return MEMORY_OPS

    def plugin_handlers(self) -> dict[str, PluginHandler]:
        return {}

    async def start(self) -> None:
        """Starts the worker, which checks the embedding column and Ollama in the background (not delaying
        `ready`)."""
        self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()
