"""Capped exponential backoff, the one retry pace of the bridge (writer, database reconnect, embedding worker).

`Backoff(first, cap)` gives first, 2*first, 4*first ... up to `cap`; `reset()` after a success. With `jitter`, each
delay is drawn from [delay/2, delay], so that several waiters do not retry in step (Fluent Bit's scheduler does the
same). The random source is passed in, so tests see fixed numbers; by default it is a generator of this module's
own, not the `random` module's shared one, whose state other code (a property-based test's generator, say) may
rely on not being moved by the daemon.
"""

from __future__ import annotations

import random
from collections.abc import Callable

_JITTER = random.Random()


class Backoff:
    def __init__(self, first: float, cap: float, *, jitter: bool = False,
                 rand: Callable[[], float] = _JITTER.random) -> None:
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self._rand = rand
        self.failures = 0

    def next(self) -> float:
        """The delay before the next try; counts a failure."""
        delay: float = min(self.cap, self.first * 2.0 ** min(self.failures, 30))
        self.failures += 1
        return delay * (0.5 + self._rand() / 2) if self.jitter else delay

    def reset(self) -> None:
        self.failures = 0
