"""/bridge/message/*, /bridge/context/search, /bridge/conversation/log and /bridge/snapshot/create.

Writes (`message/save`, `conversation/log`, `snapshot/create`) answer at once with an id made here: the row
goes to the spool, and the writer puts it into PostgreSQL (so they work while the database is down). Embedding
is left to the worker. Reads (`message/recent`, `context/search`) first give the writer a moment to commit what
was accepted before (read-your-writes), then query the current project; with the database down they answer
`unavailable`. Contract extensions (optional trailing arguments, limits) are in docs/memory.md.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg

from oscbridge.api.debug import parse_payload
from oscbridge.api.endpoint import Rows, request
from oscbridge.api.params import Bool, BridgeError, Int, Str, bad_request
from oscbridge.context import BridgeContext
from oscbridge.memory.search import HybridSearch
from oscbridge.memory.worker import EmbeddingWorker
from oscbridge.store.db import DatabaseUnavailable
from oscbridge.store.writer import now_ts

ROLES = ("user", "assistant", "system", "producer", "agent")
CONVERSATION_ROLES = ("user", "producer")
DISPLAY_TYPES = ("chat", "action", "status")
MAX_CONTENT = 1 << 20  # characters; a larger text is refused (its keyword index covers the first 200 kB anyway)
MAX_SUMMARY = 10_000
MAX_QUERY = 20_000
FLUSH_TIMEOUT = 1.0


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def require_text(name: str, text: str) -> None:
    """The schema only refuses "" (char_length > 0); a blank text is as empty to a reader, so it is refused too."""
    if not text.strip():
        raise bad_request(f"{name} must not be empty or only whitespace")


class MemoryApi:
    def __init__(self, ctx: BridgeContext, worker: EmbeddingWorker) -> None:
        self.ctx = ctx
        self.worker = worker
        self.search_engine = HybridSearch(ctx.settings.hnsw_ef_search)
        self._last_ts = 0.0
        # Ids of the messages saved in the current session, for snapshots. Sessions are started by this process
        # (every start, every project switch), so every message of the current session passed through here.
        self._session = ""
        self._session_ids: list[str] = []

    def _ts(self) -> float:
        """Strictly increasing timestamps, so that created_at order is arrival order."""
        self._last_ts = max(now_ts(), self._last_ts + 1e-6)
        return self._last_ts

    async def _flush(self) -> None:
        """Read-your-writes: give the writer a moment to commit what was accepted before this read."""
        if self.ctx.db.up:
            await self.ctx.writer.flush(FLUSH_TIMEOUT)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, or the `unavailable` error reply when the database cannot be reached."""
        try:
            async with self.ctx.db.acquire() as conn:
                yield conn
        except DatabaseUnavailable as exc:
            raise BridgeError("unavailable", "the database is unreachable right now; accepted writes are kept "
                                             "and stored when it is back, but this read cannot be answered") from exc

    # -- writes ------------------------------------------------------------------------------------------------

    @request("/bridge/message/save", Str("role", choices=ROLES), Str("content", max_len=MAX_CONTENT),
             Str("model", default="", max_len=100), Bool("key_decision", default=False),
             Str("decision_summary", default="", max_len=MAX_SUMMARY), Bool("embed", default=True))
    def save(self, role: str, content: str, model: str, key_decision: bool, decision_summary: str,
             embed: bool) -> tuple[str]:
        require_text("content", content)
        message_id = str(uuid.uuid4())
        ids = self.ctx.ids()
        seq = self.ctx.writer.submit("message_save", {
            "id": message_id, **ids, "role": role, "content": content, "model": model or None,
            "key_decision": key_decision, "decision_summary": decision_summary or None,
            "embedding_model": self.worker.model if embed else None, "ts": self._ts(),
        })
        if ids["session_id"] != self._session:
            self._session, self._session_ids = ids["session_id"], []
        self._session_ids.append(message_id)
        if embed:
            self.worker.notify(seq)
        return (message_id,)

    @request("/bridge/conversation/log", Str("role", choices=CONVERSATION_ROLES),
             Str("content", max_len=MAX_CONTENT), Str("display_type", default="chat", choices=DISPLAY_TYPES))
    def conversation_log(self, role: str, content: str, display_type: str) -> tuple[str]:
        require_text("content", content)
        row_id = str(uuid.uuid4())
        self.ctx.writer.submit("conversation_row", {
            "id": row_id, **self.ctx.ids(), "role": role, "content": content, "display_type": display_type,
            "ts": self._ts(),
        })
        return (row_id,)

    @request("/bridge/snapshot/create", Str("name", min_len=1, max_len=255),
             Str("description", default="", max_len=MAX_SUMMARY),
             Str("track_state", default="", max_len=MAX_CONTENT))
    def snapshot_create(self, name: str, description: str, track_state: str) -> tuple[str]:
        require_text("name", name)
        state = parse_payload(track_state, "track_state")
        ids = self.ctx.ids()
        if ids["session_id"] != self._session or not self._session_ids:
            raise bad_request("there is nothing to snapshot: no message was saved in the current session yet "
                              "(a snapshot marks a moment of a conversation; save a message first)")
        snapshot_id = str(uuid.uuid4())
        self.ctx.writer.submit("snapshot_create", {
            "id": snapshot_id, **ids, "name": name, "description": description or None,
            "message_ids": list(self._session_ids), "track_state": state, "ts": self._ts(),
        })
        return (snapshot_id,)

    # -- reads -------------------------------------------------------------------------------------------------

    @request("/bridge/message/recent", Int("limit", default=10, min=1, max=1000))
    async def recent(self, limit: int) -> Rows:
        project_id = self.ctx.ids()["project_id"]
        await self._flush()
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT id::text AS id, role, content, COALESCE(model, '') AS model, created_at, is_key_decision "
                "FROM messages WHERE project_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
                project_id, limit,
            )
        return Rows([(r["id"], r["role"], r["content"], r["model"], iso(r["created_at"]), int(r["is_key_decision"]))
                     for r in rows])

    @request("/bridge/context/search", Str("query", max_len=MAX_QUERY), Int("limit", default=20, min=1, max=100))
    async def search(self, query: str, limit: int) -> Rows:
        """Without a query vector (Ollama down, slow or blocked) the semantic list is simply left out."""
        project_id = self.ctx.ids()["project_id"]
        vector, _ = await asyncio.gather(self.worker.embed_query(query), self._flush())
        async with self._connection() as conn:
            hits = await self.search_engine.run(conn, project_id, query, vector, limit)
        return Rows([(h.id, h.role, h.content, iso(h.created_at), h.score, h.why) for h in hits])
