"""Every kind of write the bridge makes, as a type: what the spool holds and what the appliers write to PostgreSQL.

A request handler builds one of these and gives it to `Writer.submit`; the spool keeps it as one JSON line,
`{"v": 2, "k": <KIND>, "d": {<its fields>}}`; the writer reads it back as the same type and hands runs of one
kind to that kind's applier. So the spool's format is defined here and nowhere else.

Versions of the spool format: 1 (the first release) wrote `{"k": ..., "d": ...}` without `v`, with the same
field names; a spool left by it replays unchanged (tests/test_spool_format.py replays one written by that
version). A field added later must have a default, so that older lines still read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

SPOOL_FORMAT = 2
KNOWN_FORMATS = (1, 2)


@dataclass(frozen=True, slots=True)
class BridgeStart:
    """A bridge started: its row in the `bridges` registry (id, name, host, version)."""

    KIND: ClassVar[str] = "bridge_start"
    bridge_id: str
    name: str
    host: str
    version: str
    ts: float


@dataclass(frozen=True, slots=True)
class SessionStart:
    """Upsert the project and start its session, ending the session it replaces."""

    KIND: ClassVar[str] = "session_start"
    project_id: str
    name: str
    logic_path: str
    session_id: str
    previous_session_id: str | None
    ts: float


@dataclass(frozen=True, slots=True)
class ProjectTouch:
    """The current project was opened again: move last_opened_at, maybe set the Logic path."""

    KIND: ClassVar[str] = "project_touch"
    project_id: str
    logic_path: str
    ts: float


@dataclass(frozen=True, slots=True)
class MappingSet:
    KIND: ClassVar[str] = "mapping_set"
    id: str
    project_id: str
    session_id: str
    track_number: int
    track_name: str
    plugin_id: str
    ts: float


@dataclass(frozen=True, slots=True)
class MappingClear:
    KIND: ClassVar[str] = "mapping_clear"
    project_id: str
    ts: float


@dataclass(frozen=True, slots=True)
class DebugRow:
    """A `mission_control_debug` row: the orchestrator's `/bridge/debug/log`, or plugin traffic."""

    KIND: ClassVar[str] = "debug_row"
    id: str
    project_id: str
    session_id: str
    sender: str
    receiver: str | None
    message_type: str
    content: str
    payload: str | None  # JSON text, already checked to be what jsonb takes
    ts: float
    severity: str = "info"
    parent_id: str | None = None


@dataclass(frozen=True, slots=True)
class PluginInstanceRow:
    """The state of a plugin instance as the hub knows it (times are wall-clock seconds)."""

    KIND: ClassVar[str] = "plugin_instance"
    instance_id: str
    port: int | None
    state: str
    plugin_id: str | None
    sender_host: str | None
    sender_port: int | None
    response_port: int | None
    first_seen: float
    last_seen: float
    ts: float


@dataclass(frozen=True, slots=True)
class PortQuarantineRow:
    KIND: ClassVar[str] = "port_quarantine"
    port: int
    reason: str
    since: float
    until: float


@dataclass(frozen=True, slots=True)
class MessageSave:
    """An LLM message; `embedding_model` is the model to embed it with, None when it is not to be embedded."""

    KIND: ClassVar[str] = "message_save"
    id: str
    project_id: str
    session_id: str
    role: str
    content: str
    model: str | None
    key_decision: bool
    decision_summary: str | None
    embedding_model: str | None
    ts: float


@dataclass(frozen=True, slots=True)
class ConversationRow:
    KIND: ClassVar[str] = "conversation_row"
    id: str
    project_id: str
    session_id: str
    role: str
    content: str
    display_type: str
    ts: float


@dataclass(frozen=True, slots=True)
class SnapshotCreate:
    KIND: ClassVar[str] = "snapshot_create"
    id: str
    project_id: str
    session_id: str
    name: str
    description: str | None
    message_ids: list[str]
    track_state: str | None  # JSON text
    ts: float


WriteOp = (BridgeStart | SessionStart | ProjectTouch | MappingSet | MappingClear | DebugRow | PluginInstanceRow
           | PortQuarantineRow | MessageSave | ConversationRow | SnapshotCreate)
WRITE_TYPES: dict[str, type[WriteOp]] = {cls.KIND: cls for cls in (
    BridgeStart, SessionStart, ProjectTouch, MappingSet, MappingClear, DebugRow, PluginInstanceRow, PortQuarantineRow,
    MessageSave, ConversationRow, SnapshotCreate)}


Submit = Callable[[WriteOp], int]
"""What domain code is given to queue a write: `Writer.submit` (raises SpoolError when it cannot keep it)."""


class UnreadableWrite(ValueError):
    """A spool entry that is not a write of a known kind and format; the text says why."""


def encode(op: WriteOp, retry: bool = False) -> dict[str, Any]:
    """The spool entry of `op` (`"r": 1` marks one moved back from rejected.jsonl, see Spool.requeue_rejected)."""
    entry: dict[str, Any] = {"v": SPOOL_FORMAT, "k": op.KIND, "d": {f.name: getattr(op, f.name)
                                                                     for f in dataclasses.fields(op)}}
    if retry:
        entry["r"] = 1
    return entry


def decode(entry: Any) -> WriteOp:
    """The write of a spool entry of any known format; raises UnreadableWrite."""
    if not isinstance(entry, dict):
        raise UnreadableWrite("a spool entry is not a JSON object")
    version = entry.get("v", 1)
    if version not in KNOWN_FORMATS:
        raise UnreadableWrite(f"spool format {version!r} is newer than this oscbridge knows ({SPOOL_FORMAT})")
    kind, data = entry.get("k"), entry.get("d")
    cls = WRITE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise UnreadableWrite(f"unknown write kind {kind!r}")
    if not isinstance(data, dict):
        raise UnreadableWrite(f"the data of a {kind} write is not an object")
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{key: value for key, value in data.items() if key in names})
    except TypeError as exc:
        raise UnreadableWrite(f"a {kind} write lacks a field: {exc}") from exc
