"""The newest Mission Control debug rows, kept in memory for live views (the web page's traffic tail).

Every debug row the bridge stores passes through a submit function tapped here (`tap`), so the tail shows exactly
what goes to `mission_control_debug`, the plugin traffic and the orchestrator's `/bridge/debug/log` alike, without
a query. The cost on the receive path is one deque append per stored row (rows are already capped per second by
the traffic's token bucket). Readers keep their own cursor (`since`), so a reader that falls behind the ring's
size skips rows and is told how many, and no reader holds anything for another.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import TypeVar

from oscbridge.osc.codec import Double
from oscbridge.store.writes import DebugRow, WriteOp

TAIL_ROWS = 1000  # a few seconds of a busy session's control traffic, at most about 1 MB of text
SHOWN = 1000  # characters of a row's content a reader gets (a /bridge/debug/log content may hold a megabyte)
COLUMNS = ("seq", "time", "type", "sender", "receiver", "severity", "content", "id")
TailRow = tuple[int, Double, str, str, str, str, str, str]

R = TypeVar("R", int, int | None)


class DebugTail:
    def __init__(self, size: int = TAIL_ROWS) -> None:
        self._rows: deque[tuple[int, DebugRow]] = deque(maxlen=size)
        self.last = 0  # the sequence number of the newest row; 0 before the first

    def tap(self, submit: Callable[[WriteOp], R]) -> Callable[[WriteOp], R]:
        """`submit`, which also keeps the debug rows it accepted (a best-effort submit returns None when it drops
        one: a dropped row is not shown, as it will not be stored)."""

        def submit_and_keep(op: WriteOp) -> R:
            accepted = submit(op)
            if accepted is not None and isinstance(op, DebugRow):
                self.last += 1
                self._rows.append((self.last, op))
            return accepted

        return submit_and_keep

    def since(self, seq: int, limit: int) -> tuple[list[TailRow], int]:
        """The rows after `seq` (at most `limit`, the newest) as `COLUMNS`, and how many after `seq` are not among
        them (fell out of the ring, or over the limit)."""
        newer = self.last - seq
        if newer <= 0:
            return [], 0
        kept = list(islice(reversed(self._rows), min(newer, limit, len(self._rows))))
        kept.reverse()
        rows = [(n, Double(row.ts), row.message_type, row.sender, row.receiver or "", row.severity, row.content[:SHOWN],
                 row.id) for n, row in kept]
        return rows, newer - len(rows)
