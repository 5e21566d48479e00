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
from oscbridge.api.params import Bool, Int, Str
from oscbridge.clock import Clock
from oscbridge.memory.search import HybridSearch
from oscbridge.memory.worker import EmbeddingWorker
from oscbridge.projects import Projects
from oscbridge.store.db import Database, DatabaseUnavailable
from oscbridge.store.writer import Writer
from oscbridge.store.writes import ConversationRow, MessageSave, SnapshotCreate
from oscbridge.typedefs import BridgeError, ErrorCode, bad_request

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
    def __init__(self, projects: Projects, writer: Writer, db: Database, worker: EmbeddingWorker,
                 search: HybridSearch, clock: Clock) -> None:
        self._projects = projects
        self._writer = writer
        self._db = db
        self._worker = worker
        self._search = search
        self._clock = clock
        self._last_ts = 0.0
        # Ids of the messages saved in the current session, for snapshots. Sessions are started by this process
        # (every start, every project switch), so every message of the current session passed through here.
        self._session = ""
        self._session_ids: list[str] = []

    def _ts(self) -> float:
        """Strictly increasing timestamps, so that created_at order is arrival order."""
        self._last_ts = max(self._clock.time(), self._last_ts + 1e-6)
        return self._last_ts

    async def _flush(self) -> None:
        """Read-your-writes: give the writer a moment to commit what was accepted before this read."""
        if self._db.up:
            await self._writer.flush(FLUSH_TIMEOUT)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, or the `unavailable` error reply when the database cannot be reached."""
        try:
            async with self._db.acquire() as conn:
                yield conn
        except DatabaseUnavailable as exc:
            raise BridgeError(ErrorCode.UNAVAILABLE, "the database is unreachable right now; accepted writes are kept "
                                             "and stored when it is back, but this read cannot be answered") from exc

    # -- writes ------------------------------------------------------------------------------------------------

    @request("/bridge/message/save", Str("role", choices=ROLES), Str("content", max_len=MAX_CONTENT),
             Str("model", default="", max_len=100), Bool("key_decision", default=False),
             Str("decision_summary", default="", max_len=MAX_SUMMARY), Bool("embed", default=True))
    def save(self, role: str, content: str, model: str, key_decision: bool, decision_summary: str,
             embed: bool) -> tuple[str]:
        require_text("content", content)
        message_id = str(uuid.uuid4())
        project_id, session_id = self._projects.ids()
        seq = self._writer.submit(MessageSave(message_id, project_id, session_id, role, content, model or None,
                                              key_decision, decision_summary or None,
                                              self._worker.model if embed else None, self._ts()))
        if session_id != self._session:
            self._session, self._session_ids = session_id, []
        self._session_ids.append(message_id)
        if embed:
            self._worker.notify(seq)
        return (message_id,)

    @request("/bridge/conversation/log", Str("role", choices=CONVERSATION_ROLES),
             Str("content", max_len=MAX_CONTENT), Str("display_type", default="chat", choices=DISPLAY_TYPES))
    def conversation_log(self, role: str, content: str, display_type: str) -> tuple[str]:
        require_text("content", content)
        row_id = str(uuid.uuid4())
        project_id, session_id = self._projects.ids()
        self._writer.submit(ConversationRow(row_id, project_id, session_id, role, content, display_type, self._ts()))
        return (row_id,)

    @request("/bridge/snapshot/create", Str("name", min_len=1, max_len=255),
             Str("description", default="", max_len=MAX_SUMMARY),
             Str("track_state", default="", max_len=MAX_CONTENT))
    def snapshot_create(self, name: str, description: str, track_state: str) -> tuple[str]:
        require_text("name", name)
        state = parse_payload(track_state, "track_state")
        project_id, session_id = self._projects.ids()
        if session_id != self._session or not self._session_ids:
            raise bad_request("there is nothing to snapshot: no message was saved in the current session yet "
                              "(a snapshot marks a moment of a conversation; save a message first)")
        snapshot_id = str(uuid.uuid4())
        self._writer.submit(SnapshotCreate(snapshot_id, project_id, session_id, name, description or None,
                                           list(self._session_ids), state, self._ts()))
        return (snapshot_id,)

    # -- reads -------------------------------------------------------------------------------------------------

    @request("/bridge/message/recent", Int("limit", default=10, min=1, max=1000))
    async def recent(self, limit: int) -> Rows:
        project_id = self._projects.current.id
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
        project_id = self._projects.current.id
        vector, _ = await asyncio.gather(self._worker.embed_query(query), self._flush())
        async with self._connection() as conn:
            hits = await self._search.run(conn, project_id, query, vector, limit)
        return Rows([(h.id, h.role, h.content, iso(h.created_at), h.score, h.why) for h in hits])
