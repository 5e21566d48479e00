"""Stopping the daemon's background tasks, one way for every part that owns one (the hub, the writer, the
embedding worker, retention, the mapping listener, the web page's feed, mDNS)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancels each task and waits until it has ended (None is skipped). A part's `stop` must not return while its
    task can still touch what the part closes next; an exception the task ended with is raised, not hidden."""
    for task in tasks:
        if task is None:
            continue
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def thread_to_the_end(func: Callable[..., T], *args: Any, on_cancel: Callable[[], None] | None = None) -> T:
    """Runs `func(*args)` in a thread; when the caller is cancelled, calls `on_cancel` (which may ask the thread to
    stop early) and waits for the thread before the cancellation goes on (unless cancelled once more meanwhile:
    the stop's own deadline must still win). A thread cannot be cancelled, and one
    still running after its caller gave up would change files after the caller's clean-up looked at them (a
    backup completed, or old ones deleted, after the daemon said it had stopped)."""
    work = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        if on_cancel is not None:
            on_cancel()
        with contextlib.suppress(Exception):
            await work
        raise
