"""Debug traffic: every plugin control-plane datagram in and out becomes a `mission_control_debug` row.

Telemetry (`/aiplayer/telemetry`, `/aiplayer/rms`) is left out: it is a stream, not a conversation. Rows go
through the writer's `debug_row` kind (COPY in batches, off the receive path); here they are only built and
submitted. A token bucket caps the rows per second, so a flood of control messages is counted, not stored.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from typing import Any

from oscbridge.clock import Clock
from oscbridge.osc.codec import Message, typed_args
from oscbridge.ratelimit import TokenBucket
from oscbridge.store.writes import DebugRow, WriteOp
from oscbridge.typedefs import Addr

MAX_CONTENT = 1000


def endpoint(addr: Addr) -> str:
    return f"{addr[0]}:{addr[1]}"


def content_line(message: Message) -> str:
    """`/aiplayer/port_confirmed ,sis 43440ecd… 9000 bound`: what a person scanning the table wants to read."""
    shown = " ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in message.args)
    line = f"{message.address} ,{message.tags} {shown}".rstrip()
    return line[:MAX_CONTENT]


class Traffic:
    """Builds and submits the rows. Two token buckets: all rows, and rows of refused datagrams, which a flood of
    hostile traffic makes (each row costs ~70 µs of the receive path: a payload, a spool line)."""

    def __init__(self, ids: Callable[[], tuple[str, str]], submit: Callable[[WriteOp], int | None], per_second: int,
                 rejected_per_second: int, clock: Clock) -> None:
        self._ids = ids  # the current project and session
        self._submit_op = submit
        self._clock = clock
        self._all = TokenBucket(per_second, clock=clock.monotonic)
        self._rejected = TokenBucket(rejected_per_second, clock=clock.monotonic)
        self.rows = 0

    @property
    def suppressed(self) -> int:
        return self._all.refused + self._rejected.refused

    def datagram(self, kind: str, message: Message, src: Addr, dst: Addr, severity: str = "info",
                 **extra: Any) -> None:
        """One `osc_in` / `osc_out` row; `extra` (instance id, reason of a rejection) joins the payload."""
        if "rejected" in extra and not self._rejected.take():
            return
        if not self._all.take():
            return
        args = [[tag, v if not isinstance(v, float) or math.isfinite(v) else repr(v)]  # jsonb has no NaN
                for tag, v in typed_args(message)]
        payload = {"address": message.address, "tags": message.tags, "args": args, **extra}
        self._submit(endpoint(src), endpoint(dst), kind, content_line(message), payload, severity)

    def event(self, content: str, severity: str = "info", **payload: Any) -> None:
        """An `event` row for what no datagram shows: a port quarantined, a plugin gone, a re-adoption."""
        if self._all.take():
            self._submit("oscbridge", None, "event", content[:MAX_CONTENT], payload, severity)

    def _submit(self, sender: str, receiver: str | None, kind: str, content: str, payload: dict[str, Any],
                severity: str) -> None:
        self.rows += 1
        project_id, session_id = self._ids()
        self._submit_op(DebugRow(str(uuid.uuid4()), project_id, session_id, sender[:100], receiver, kind, content,
                                 json.dumps(payload, ensure_ascii=False), self._clock.time(), severity))

    def stats(self) -> dict[str, int]:
        return {"hub.debug_rows": self.rows, "hub.debug_rows_suppressed": self.suppressed}
