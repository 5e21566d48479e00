"""The two ways the daemon's parts end background work: tasks cancelled and waited for, and threads that a
cancelled caller still waits for (a thread cannot be cancelled)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from oscbridge.tasks import cancel_and_wait, thread_to_the_end


async def test_a_cancelled_caller_waits_for_its_thread_and_can_ask_it_to_stop() -> None:
    started, stop, ended = threading.Event(), threading.Event(), threading.Event()

    def work() -> str:
        started.set()
        stop.wait(10)
        ended.set()
        return "done"

    caller = asyncio.ensure_future(thread_to_the_end(work, on_cancel=stop.set))
    await asyncio.to_thread(started.wait, 10)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert ended.is_set()  # the thread's work was over before the cancellation reached the caller's caller


async def test_a_thread_that_is_not_asked_to_stop_is_waited_for_to_the_end() -> None:
    release = threading.Event()
    finished: list[int] = []

    def work(n: int) -> int:
        release.wait(10)
        finished.append(n)
        return n

    caller = asyncio.ensure_future(thread_to_the_end(work, 7))
    await asyncio.sleep(0.05)
    caller.cancel()
    await asyncio.sleep(0.05)
    assert not caller.done()  # still waiting for the thread
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert finished == [7]
    assert await thread_to_the_end(work, 8) == 8  # not cancelled: the thread's result


async def test_cancel_and_wait_ends_tasks_and_raises_what_a_task_failed_with() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    async def fails_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = asyncio.ensure_future(forever())
    await asyncio.sleep(0)
    await cancel_and_wait(task, None)
    assert task.cancelled()
    failing = asyncio.ensure_future(fails_on_cancel())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await cancel_and_wait(failing)
