"""/bridge/debug/log: the orchestrator's explicit Mission Control debug entries; /bridge/debug/recent and
/bridge/debug/tail (extensions, docs/bridge-api-notes.md): the stored debug traffic of the current project, newest
first, a page at a time, and the live tail of what is being stored."""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime
from typing import Any

from oscbridge.api.endpoint import Rows, request
from oscbridge.api.params import Int, Str
from oscbridge.api.reads import reading
from oscbridge.clock import Clock
from oscbridge.jsontext import parse_json
from oscbridge.projects import Projects
from oscbridge.storable import storable
from oscbridge.store.db import Database
from oscbridge.store.debug_tail import DebugTail
from oscbridge.store.writer import Writer
from oscbridge.store.writes import DebugRow
from oscbridge.typedefs import bad_request

MESSAGE_TYPES = ("command", "response", "status", "error", "log", "event")
SEVERITIES = ("debug", "info", "warning", "error")
MAX_CONTENT = 1_000_000
SHOWN_CONTENT = 1000  # characters of each row's content in /bridge/debug/recent (a page must fit in replies)
# Rows of the current project, older than the cursor, whose content holds the text, from the sender, at or above
# the severity: one pass down the (project_id, created_at) index until the page is full.
_RECENT = """
SELECT id::text AS id, created_at, sender, COALESCE(receiver, '') AS receiver, message_type, severity,
       left(content, $7) AS content
FROM mission_control_debug
WHERE project_id = $1
  AND ($4::uuid IS NULL OR (created_at, id) <
       (COALESCE($3::timestamptz, (SELECT b.created_at FROM mission_control_debug b WHERE b.id = $4::uuid)), $4::uuid))
  AND ($5 = '' OR strpos(lower(content), lower($5)) > 0)
  AND ($6 = '' OR sender = $6)
  AND array_position($8::text[], severity) >= $9
ORDER BY created_at DESC, id DESC
LIMIT $2
"""


def parse_payload(text: str, name: str = "payload") -> str | None:
    """Checks that a JSON argument parses (an empty string means none) and that PostgreSQL's jsonb will take it;
    returns it normalised. Refusing here, not in the writer, means nothing is acknowledged and then rejected."""
    if text == "":
        return None
    try:
        value: Any = parse_json(text)
    except json.JSONDecodeError as exc:
        raise bad_request(f"{name} is not valid JSON: {exc.msg} at character {exc.pos}") from exc
    problem = _jsonb_problem(value)
    if problem is not None:
        raise bad_request(f"{name}: {problem}")
    return json.dumps(value, ensure_ascii=False)


def _jsonb_problem(value: Any) -> str | None:
    """What PostgreSQL's jsonb would refuse although Python's json module accepts it, or None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return "NaN and Infinity (or numbers too large for a double) are not JSON numbers"
        if isinstance(item, str):
            if not storable(item):
                return "text containing \\u0000 or an unpaired surrogate escape (\\ud800-\\udfff) cannot be stored"
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def parse_cursor(cursor: str) -> tuple[datetime | None, str | None]:
    """`created-at|id` of the last row of the previous page, or a row's id alone (the live tail's rows carry it;
    the database knows its time), or "" for the newest page."""
    if cursor == "":
        return None, None
    moment, _, row_id = cursor.rpartition("|")
    try:
        return (datetime.fromisoformat(moment) if moment else None), str(uuid.UUID(row_id))
    except ValueError as exc:
        raise bad_request(f"before must be '', a row id or the cursor of a row from an earlier page, not "
                          f"{cursor[:80]!r}") from exc


class DebugApi:
    def __init__(self, projects: Projects, tail: DebugTail, clock: Clock, db: Database, writer: Writer) -> None:
        self._projects = projects
        self._tail = tail
        self._submit = tail.tap(writer.submit)
        self._clock = clock
        self._db = db
        self._writer = writer

    @request("/bridge/debug/log", Str("sender", max_len=100, min_len=1), Str("receiver", max_len=100),
             Str("message_type", choices=MESSAGE_TYPES), Str("content", max_len=MAX_CONTENT),
             Str("payload", max_len=MAX_CONTENT), Str("severity", choices=SEVERITIES))
    def log(self, sender: str, receiver: str, message_type: str, content: str, payload: str,
            severity: str) -> tuple[str]:
        row_id = str(uuid.uuid4())
        project_id, session_id = self._projects.ids()
        self._submit(DebugRow(row_id, project_id, session_id, sender, receiver or None, message_type, content,
                              parse_payload(payload), self._clock.time(), severity))
        return (row_id,)

    @request("/bridge/debug/recent", Int("limit", default=100, min=1, max=500), Str("before", default="", max_len=100),
             Str("contains", default="", max_len=200), Str("sender", default="", max_len=100),
             Str("severity", default="debug", choices=SEVERITIES))
    async def recent(self, limit: int, before: str, contains: str, sender: str, severity: str) -> Rows:
        """Rows: cursor `s` (pass as `before` for the next page), created at `s`, sender `s`, receiver `s` ("" =
        broadcast), message type `s`, severity `s`, content `s` (its first 1000 characters)."""
        moment, row_id = parse_cursor(before)
        project_id = self._projects.current.id
        async with reading(self._db, self._writer) as conn:
            rows = await conn.fetch(_RECENT, project_id, limit, moment, row_id, contains, sender, SHOWN_CONTENT,
                                    list(SEVERITIES), SEVERITIES.index(severity) + 1)
        return Rows([(f"{r['created_at'].isoformat()}|{r['id']}", r["created_at"].isoformat(), r["sender"],
                      r["receiver"], r["message_type"], r["severity"], r["content"]) for r in rows])

    @request("/bridge/debug/tail", Int("after", default=0, min=0), Int("limit", default=100, min=1, max=500))
    def tail(self, after: int, limit: int) -> Rows:
        """The live tail, from memory (an extension): the debug rows submitted after sequence number `after`, oldest
        first: seq `i`, time `d` (Unix seconds), message type `s`, sender `s`, receiver `s`, severity `s`, content
        `s` (first 1000 characters), row id `s`. A follower passes the last seq it got; one that fell more than 1000
        rows behind misses the oldest."""
        return Rows(self._tail.since(after, limit)[0])
