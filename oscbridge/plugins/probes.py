"""RMS probes: `query_rms` with a query id of the bridge's own, sent to one port. Only the plugin listening there
can answer it (from its sender socket, with the id copied back), so the answer proves which tempID holds the port.
This object owns the probes in flight; liveness, adoption and calibration all probe through it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from oscbridge.clock import Clock
from oscbridge.plugins.outbound import Outbound
from oscbridge.plugins.registry import Instance
from oscbridge.protocol import QUERY_RMS


class Round:
    """Collects one answer per expected instance (a calibration step); `done` is set when all are in."""

    def __init__(self, expected: Iterable[str]) -> None:
        self.expected = set(expected)
        self.answers: dict[str, Any] = {}
        self.done = asyncio.Event()
        if not self.expected:
            self.done.set()

    def add(self, temp_id: str, value: Any) -> None:
        if temp_id in self.expected and temp_id not in self.answers:
            self.answers[temp_id] = value
            if len(self.answers) == len(self.expected):
                self.done.set()


@dataclass(slots=True)
class Query:
    """A `query_rms` in flight: the port it went to (its answer proves who listens there) and when."""

    port: int
    sent: float  # monotonic
    round: Round | None = field(default=None)


class Probes:
    def __init__(self, outbound: Outbound, clock: Clock) -> None:
        self._outbound = outbound
        self._clock = clock
        self._queries: dict[str, Query] = {}

    def __len__(self) -> int:
        return len(self._queries)

    def send(self, port: int, inst: Instance | None = None, round_: Round | None = None) -> str:
        """Probes `port` (at the host of `inst` if given); returns the query id."""
        query_id = str(uuid.uuid4()).upper()  # the app's format; the plugin copies it back unchanged
        self._queries[query_id] = Query(port, self._clock.monotonic(), round_)
        self._outbound.send(self._outbound.dest(inst, port), QUERY_RMS, [query_id], "s")
        return query_id

    def take(self, query_id: str) -> Query | None:
        """The probe this answers, once (None: late, after expiry, or not ours)."""
        return self._queries.pop(query_id, None)

    def expire(self, sent_before: float) -> None:
        for query_id in [q for q, query in self._queries.items() if query.sent < sent_before]:
            del self._queries[query_id]
