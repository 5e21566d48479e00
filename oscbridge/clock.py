"""Time as a dependency. The plugin hub, its liveness rules, calibration and the writer read the time and wait
through a `Clock`, so their timing rules (expiry, missed probes, resends, backoff) are tested with a clock a test
moves by hand, in milliseconds instead of seconds (tests/clock_support.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds for durations (never jumps)."""
        ...

    def time(self) -> float:
        """Seconds since the epoch, for what is stored."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Waits until `event` is set or `timeout` seconds passed; True when it was set."""
        ...


class SystemClock:
    """The real clock."""

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return event.is_set()


SYSTEM_CLOCK = SystemClock()


def duration(seconds: float) -> str:
    """A span as people read it: '2 h 14 min', '3 min', '42 s'."""
    minutes, hours = int(seconds // 60) % 60, int(seconds // 3600)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min" if minutes else f"{int(seconds)} s"
