"""Stopping the daemon's background tasks, one way for every part that owns one (the hub, the writer, the
embedding worker, retention, the mapping listener, the web page's feed, mDNS)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancels each task and waits until it has ended (None is skipped). A part's `stop` must not return while its
    task can still touch what the part closes next; an exception the task ended with is raised, not hidden."""
    for task in tasks:
        if task is None:
            continue
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
