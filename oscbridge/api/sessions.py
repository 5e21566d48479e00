"""/bridge/session/list and /bridge/session/conversation (extensions, docs/mcp.md): the current project's sessions
and what was said in one of them, so that a client of the OSC API (the MCP server, `oscbridge mcp`) can read a
past session's conversation without reaching into the database itself.

A session's conversation is two tables: the messages of the conversation memory (`message/save`) and the lines the
user saw (`conversation/log`: chat, actions, status). Both are read through their `(session_id, created_at)`
indexes and merged by time.
"""

from __future__ import annotations

import uuid

from oscbridge.api.endpoint import Rows, request
from oscbridge.api.memory import iso
from oscbridge.api.params import Int, Str
from oscbridge.api.reads import reading
from oscbridge.projects import Projects
from oscbridge.store.db import Database
from oscbridge.store.writer import Writer
from oscbridge.typedefs import BridgeError, ErrorCode, bad_request

# The project's sessions, newest first, with how much was said in each (counted through the session indexes).
_SESSIONS = """
SELECT s.id::text AS id, s.started_at, s.ended_at, s.is_active,
       (SELECT count(*) FROM messages m WHERE m.session_id = s.id) AS messages,
       (SELECT count(*) FROM mission_control_conversations c WHERE c.session_id = s.id) AS lines
FROM sessions s
WHERE s.project_id = $1
ORDER BY s.started_at DESC, s.id DESC
LIMIT $2
"""
# The newest `limit` entries of one session, both kinds; returned oldest first.
_CONVERSATION = """
(SELECT 'message' AS kind, created_at, id, role, content, COALESCE(model, '') AS model, '' AS display_type,
        is_key_decision, COALESCE(decision_summary, '') AS decision_summary
 FROM messages WHERE session_id = $1 AND project_id = $2
 ORDER BY created_at DESC, id DESC LIMIT $3)
UNION ALL
(SELECT 'line', created_at, id, role, content, '', display_type, false, ''
 FROM mission_control_conversations WHERE session_id = $1 AND project_id = $2
 ORDER BY created_at DESC, id DESC LIMIT $3)
ORDER BY created_at DESC, id DESC
LIMIT $3
"""


class SessionsApi:
    def __init__(self, projects: Projects, db: Database, writer: Writer) -> None:
        self._projects = projects
        self._db = db
        self._writer = writer

    @request("/bridge/session/list", Int("limit", default=50, min=1, max=1000))
    async def list(self, limit: int) -> Rows:
        """The current project's sessions, newest first: session id s, started at s, ended at s ("" while it runs),
        active i, messages i, conversation lines i."""
        async with reading(self._db, self._writer) as conn:
            rows = await conn.fetch(_SESSIONS, self._projects.current.id, limit)
        return Rows([(r["id"], iso(r["started_at"]), iso(r["ended_at"]) if r["ended_at"] else "", int(r["is_active"]),
                      r["messages"], r["lines"]) for r in rows])

    @request("/bridge/session/conversation", Str("session_id", min_len=1, max_len=36),
             Int("limit", default=500, min=1, max=5000))
    async def conversation(self, session_id: str, limit: int) -> Rows:
        """One session of the current project, its newest `limit` entries oldest first: kind s (`message`: the
        conversation memory; `line`: what the user saw), created at s, role s, content s, model s, display type s
        (chat, action, status for a line), key decision i, decision summary s."""
        try:
            session = uuid.UUID(session_id)
        except ValueError:
            raise bad_request(f"session_id must be a session's id (a UUID), not {session_id[:40]!r}") from None
        project_id = self._projects.current.id
        async with reading(self._db, self._writer) as conn:
            known = await conn.fetchval("SELECT true FROM sessions WHERE id = $1 AND project_id = $2", session,
                                        project_id)
            rows = await conn.fetch(_CONVERSATION, session, project_id, limit) if known else []
        if not known:
            raise BridgeError(ErrorCode.NOT_FOUND, f"the current project has no session {session_id}; "
                                                   "/bridge/session/list names its sessions")
        return Rows([(r["kind"], iso(r["created_at"]), r["role"], r["content"], r["model"], r["display_type"],
                      int(r["is_key_decision"]), r["decision_summary"]) for r in reversed(rows)])
