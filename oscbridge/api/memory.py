"""/bridge/message/*, /bridge/context/search, /bridge/conversation/log and /bridge/snapshot/*.

Writes (`message/save`, `conversation/log`, `snapshot/create`) answer at once with an id made here: the row
goes to the spool, and the writer puts it into PostgreSQL (so they work while the database is down). Embedding
is left to the worker. Reads (`message/recent`, `snapshot/list`, `context/search`) first give the writer a moment
to commit what was accepted before (read-your-writes, `api/reads.py`), then query the current project; with the
database down they answer `unavailable`. Contract extensions (optional trailing arguments, limits) are in
docs/memory.md.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from oscbridge.api.debug import parse_payload
from oscbridge.api.endpoint import Rows, request
from oscbridge.api.params import Bool, Int, Str
from oscbridge.api.reads import reading, settle
from oscbridge.clock import Clock
from oscbridge.memory.search import HybridSearch
from oscbridge.memory.worker import EmbeddingWorker
from oscbridge.projects import Projects
from oscbridge.store.db import Database
from oscbridge.store.writer import Writer
from oscbridge.store.writes import ConversationRow, MessageSave, SnapshotCreate
from oscbridge.typedefs import bad_request

ROLES = ("user", "assistant", "system", "producer", "agent")
CONVERSATION_ROLES = ("user", "producer")
DISPLAY_TYPES = ("chat", "action", "status")
MAX_CONTENT = 1 << 20  # characters; a larger text is refused (its keyword index covers the first 200 kB anyway)
MAX_SUMMARY = 10_000
MAX_QUERY = 20_000


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

    @request("/bridge/message/recent", Int("limit", default=10, min=1, max=1000),
             Bool("session_only", default=False))
    async def recent(self, limit: int, session_only: bool) -> Rows:
        """The project's latest messages; with `session_only` (an extension) only the current session's."""
        project_id, session_id = self._projects.ids()
        async with reading(self._db, self._writer) as conn:
            rows = await conn.fetch(
                "SELECT id::text AS id, role, content, COALESCE(model, '') AS model, created_at, is_key_decision "
                "FROM messages WHERE project_id = $1 AND (NOT $3 OR session_id = $4::uuid) "
                "ORDER BY created_at DESC, id DESC LIMIT $2",
                project_id, limit, session_only, session_id,
            )
        return Rows([(r["id"], r["role"], r["content"], r["model"], iso(r["created_at"]), int(r["is_key_decision"]))
                     for r in rows])

    @request("/bridge/snapshot/list", Int("limit", default=50, min=1, max=1000))
    async def snapshot_list(self, limit: int) -> Rows:
        """The project's snapshots, newest first (an extension, docs/memory.md): snapshot id, name, description,
        created at, session id, how many messages it marks."""
        project_id = self._projects.current.id
        async with reading(self._db, self._writer) as conn:
            rows = await conn.fetch(
                "SELECT id::text AS id, name, COALESCE(description, '') AS description, created_at, "
                "session_id::text AS session_id, cardinality(message_ids) AS messages "
                "FROM context_snapshots WHERE project_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
                project_id, limit,
            )
        return Rows([(r["id"], r["name"], r["description"], iso(r["created_at"]), r["session_id"], r["messages"])
                     for r in rows])

    @request("/bridge/context/search", Str("query", max_len=MAX_QUERY), Int("limit", default=20, min=1, max=100))
    async def search(self, query: str, limit: int) -> Rows:
        """Without a query vector (Ollama down, slow or blocked) the semantic list is simply left out."""
        project_id = self._projects.current.id
        vector, _ = await asyncio.gather(self._worker.embed_query(query), settle(self._db, self._writer))
        async with reading(self._db) as conn:
            hits = await self._search.run(conn, project_id, query, vector, limit)
        return Rows([(h.id, h.role, h.content, iso(h.created_at), h.score, h.why) for h in hits])
