"""Debug traffic: every plugin control-plane datagram in and out becomes a `mission_control_debug` row.

Telemetry (`/aiplayer/telemetry`, `/aiplayer/rms`) is left out: it is a stream, not a conversation. Rows go
through the writer's `debug_row` kind (COPY in batches, off the receive path); here they are only built and
submitted. A token bucket caps the rows per second, so a flood of control messages is counted, not stored.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

from oscbridge.context import BridgeContext
from oscbridge.osc.codec import Message, typed_args
from oscbridge.store.writer import now_ts

Addr = tuple[str, int]
MAX_CONTENT = 1000


def endpoint(addr: Addr) -> str:
    return f"{addr[0]}:{addr[1]}"


def content_line(message: Message) -> str:
    """`/aiplayer/port_confirmed ,sis 43440ecd… 9000 bound`: what a person scanning the table wants to read."""
    shown = " ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in message.args)
    line = f"{message.address} ,{message.tags} {shown}".rstrip()
    return line[:MAX_CONTENT]


class Traffic:
    def __init__(self, ctx: BridgeContext, per_second: int) -> None:
        self.ctx = ctx
        self.rate = float(per_second)
        self._tokens = self.rate
        self._refilled = time.monotonic()
        self.rows = 0
        self.suppressed = 0

    def _take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.rate, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens < 1.0:
            self.suppressed += 1
            return False
        self._tokens -= 1.0
        return True

    def datagram(self, kind: str, message: Message, src: Addr, dst: Addr, severity: str = "info",
                 **extra: Any) -> None:
        """One `osc_in` / `osc_out` row; `extra` (instance id, reason of a rejection) joins the payload."""
        args = [[tag, v if not isinstance(v, float) or math.isfinite(v) else repr(v)]  # jsonb has no NaN
                for tag, v in typed_args(message)]
        payload = {"address": message.address, "tags": message.tags, "args": args, **extra}
        self._submit(endpoint(src), endpoint(dst), kind, content_line(message), payload, severity)

    def event(self, content: str, severity: str = "info", **payload: Any) -> None:
        """An `event` row for what no datagram shows: a port quarantined, a plugin gone, a re-adoption."""
        self._submit("oscbridge", None, "event", content[:MAX_CONTENT], payload, severity)

    def _submit(self, sender: str, receiver: str | None, kind: str, content: str, payload: dict[str, Any],
                severity: str) -> None:
        if not self._take():
            return
        self.rows += 1
        self.ctx.writer.submit("debug_row", {
            "id": str(uuid.uuid4()), **self.ctx.ids(), "sender": sender[:100], "receiver": receiver,
            "message_type": kind, "content": content, "payload": json.dumps(payload, ensure_ascii=False),
            "severity": severity, "ts": now_ts(),
        })
