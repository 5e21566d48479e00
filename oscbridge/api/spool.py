"""/bridge/spool/retry_rejected: re-applies the writes PostgreSQL refused, after the cause was fixed.

An extension of BRIDGE-API.md (docs/bridge-api-notes.md, Durability). `oscbridge spool retry-rejected` sends it
when a bridge owns the spool, so that the daemon's own writer applies the operations (two processes never write
one spool).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from oscbridge.api.endpoint import request
from oscbridge.api.params import Float
from oscbridge.store.writer import Writer, retry_rejected


class SpoolApi:
    """`retried(seq)` is told, after writes were moved back, the sequence number of the last of them, so that what
    the writer re-applies (mappings the bridge's memory dropped when they were refused) is read back from the
    database once it is committed."""

    def __init__(self, writer: Writer, retried: Callable[[int], None] | None = None) -> None:
        self._writer = writer
        self._retried = retried
        self._one_at_a_time = asyncio.Lock()

    @request("/bridge/spool/retry_rejected", Float("wait", default=10.0, min=0.0, max=60.0))
    async def retry_rejected(self, wait: float) -> tuple[int, int, int, int]:
        """Moves rejected.jsonl back into the spool and waits up to `wait` s for the writer: returns moved,
        re-applied, refused again, still waiting."""
        async with self._one_at_a_time:
            result = await retry_rejected(self._writer, wait)  # SpoolError: the router answers `unavailable`
        if result.moved and self._retried is not None:
            self._retried(self._writer.spool.appended)
        return result.moved, result.applied, result.refused_again, result.waiting
