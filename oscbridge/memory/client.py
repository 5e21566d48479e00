"""Typed client calls for the memory requests, mixed into `oscbridge.client.BridgeClient`.

    message_id = await client.save_message("assistant", text, model="claude-sonnet-4.5")
    for hit in await client.context_search("why did we cut 300 Hz on the bass?"):
        print(hit.score, hit.why, hit.content)

Replies with long messages exceed the UDP limit: the bridge answers `too_large` (raised here as
`BridgeRequestError` with code "too_large"); use a client connected with `transport="tcp"` for those.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol


class _Caller(Protocol):
    async def call(self, address: str, *args: Any, timeout: float = 3.0) -> list[Any]: ...

    async def rows(self, address: str, *args: Any, timeout: float = 3.0) -> list[list[Any]]: ...


@dataclass(frozen=True)
class StoredMessage:
    """A row of /bridge/message/recent."""

    id: str
    role: str
    content: str
    model: str
    created_at: str
    key_decision: bool


@dataclass(frozen=True)
class ContextHit:
    """A row of /bridge/context/search; `reasons` splits `why` ("semantic+keyword" -> ("semantic", "keyword"))."""

    id: str
    role: str
    content: str
    created_at: str
    score: float
    why: str

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(self.why.split("+"))


class MemoryCalls:
    """The memory requests of BRIDGE-API.md as methods (a mixin: needs `call` and `rows`)."""

    async def save_message(self: _Caller, role: str, content: str, model: str = "", key_decision: bool = False,
                           decision_summary: str = "", embed: bool = True, timeout: float = 3.0) -> str:
        (message_id,) = await self.call("/bridge/message/save", role, content, model, int(key_decision),
                                        decision_summary, int(embed), timeout=timeout)
        return str(message_id)

    async def recent_messages(self: _Caller, limit: int = 10, timeout: float = 3.0) -> list[StoredMessage]:
        rows = await self.rows("/bridge/message/recent", limit, timeout=timeout)
        return [StoredMessage(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]

    async def context_search(self: _Caller, query: str, limit: int = 20, timeout: float = 5.0) -> list[ContextHit]:
        rows = await self.rows("/bridge/context/search", query, limit, timeout=timeout)
        return [ContextHit(r[0], r[1], r[2], r[3], float(r[4]), r[5]) for r in rows]

    async def log_conversation(self: _Caller, role: str, content: str, display_type: str = "chat",
                               timeout: float = 3.0) -> str:
        (row_id,) = await self.call("/bridge/conversation/log", role, content, display_type, timeout=timeout)
        return str(row_id)

    async def create_snapshot(self: _Caller, name: str, description: str = "", track_state: Any = None,
                              timeout: float = 3.0) -> str:
        """`track_state` may be JSON text or any JSON-serialisable value (None: no track state)."""
        state = track_state if isinstance(track_state, str) else "" if track_state is None else json.dumps(
            track_state)
        (snapshot_id,) = await self.call("/bridge/snapshot/create", name, description, state, timeout=timeout)
        return str(snapshot_id)
