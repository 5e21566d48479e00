"""/bridge/debug/log: the orchestrator's explicit Mission Control debug entries."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from oscbridge.api.endpoint import request
from oscbridge.api.params import Str
from oscbridge.clock import Clock
from oscbridge.projects import Projects
from oscbridge.store.writes import DebugRow, Submit
from oscbridge.typedefs import bad_request

MESSAGE_TYPES = ("command", "response", "status", "error", "log", "event")
SEVERITIES = ("debug", "info", "warning", "error")
MAX_CONTENT = 1_000_000


def parse_payload(text: str, name: str = "payload") -> str | None:
    """Checks that a JSON argument parses (an empty string means none) and that PostgreSQL's jsonb will take it;
    returns it normalised. Refusing here, not in the writer, means nothing is acknowledged and then rejected."""
    if text == "":
        return None
    try:
        value: Any = json.loads(text)
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
            if "\x00" in item:
                return "text containing \\u0000 cannot be stored"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "text containing an unpaired surrogate escape (\\ud800-\\udfff) cannot be stored"
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


class DebugApi:
    def __init__(self, projects: Projects, submit: Submit, clock: Clock) -> None:
        self._projects = projects
        self._submit = submit
        self._clock = clock

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
