"""A token bucket: at most `rate` events a second on average, bursts of up to `burst`.

Used where outside traffic decides how often the bridge does work worth limiting (debug rows of plugin traffic).
The clock is passed in so the arithmetic is tested without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = float(rate if burst is None else burst)
        self._clock = clock
        self._tokens = self.burst
        self._refilled = clock()
        self.refused = 0

    def take(self) -> bool:
        """True when an event may happen now (and counts it); False when over the rate (counted in `refused`)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens < 1.0:
            self.refused += 1
            return False
        self._tokens -= 1.0
        return True
