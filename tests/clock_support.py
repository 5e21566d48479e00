"""A clock that a test moves by hand (oscbridge/clock.py's `Clock`), so timing rules run in milliseconds.

Time moves only when the test says so (`advance`), or when the code under test sleeps or waits: `sleep(s)` and a
`wait(event, s)` that times out move the clock forward by `s` at once. Both first yield to the loop once, so that
what is already scheduled (a reply the test queued with `call_soon`, a task the test woke) runs first; a `wait`
whose event is set by then returns True without moving the clock. Every duration asked for is kept in `asked`,
in order, which is how a test reads a backoff; `asked_at_least(n)` lets it act at the n-th one (the test runs
before the waiting code resumes, so a `wake()` made then cuts that very wait short).

Code that loops on `sleep` forever (the hub's `_run`, the app's reconnect loop) would spin through time with this
clock: tests drive `tick()` themselves instead of starting such loops.
"""

from __future__ import annotations

import asyncio

WALL_START = 1_800_000_000.0  # 2027-01-15: wall-clock seconds, far from the monotonic values


class ManualClock:
    def __init__(self, start: float = 1000.0, wall: float = WALL_START) -> None:
        self._now = start
        self._wall_offset = wall - start  # monotonic and wall clock move together
        self.asked: list[float] = []  # every duration given to sleep or wait, in order
        self._watchers: list[tuple[int, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go back")
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self._asked(seconds)
        await asyncio.sleep(0)
        self.advance(max(0.0, seconds))

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        self._asked(timeout)
        await asyncio.sleep(0)
        if event.is_set():
            return True
        self.advance(max(0.0, timeout))
        return False

    async def asked_at_least(self, count: int) -> None:
        """Returns once `count` sleeps or waits have been asked for (at once if they have)."""
        if len(self.asked) >= count:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.append((count, future))
        await future

    def _asked(self, seconds: float) -> None:
        self.asked.append(seconds)
        for watcher in [w for w in self._watchers if w[0] <= len(self.asked)]:
            self._watchers.remove(watcher)
            if not watcher[1].done():
                watcher[1].set_result(None)
