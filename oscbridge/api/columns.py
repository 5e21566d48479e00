"""The names of the values in the bridge's replies (BRIDGE-API.md and the extensions in docs/): one table for every
client that names them: the header row of `oscbridge call`, the JSON fields of the terminal commands and the
headers of their tables (tools/terminal/columns.py), and the fields of the MCP tools (oscbridge/mcp/).

Names are snake_case (they are JSON keys).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from oscbridge.store.debug_tail import COLUMNS as DEBUG_TAIL

# Requests whose reply is a list (one message per row): the names of a row's values.
LISTS: dict[str, tuple[str, ...]] = {
    "/bridge/mapping/list": ("track_number", "track_name", "plugin_id", "port", "instance_id"),
    "/bridge/plugins": ("instance_id", "port", "state", "plugin_id", "seconds_since_heard"),
    "/bridge/levels": ("plugin_id", "rms_dbfs", "band_1_db", "band_2_db", "band_3_db", "band_4_db",
                       "seconds_since_update"),
    "/bridge/calibrate/probe": ("instance_id", "port", "rms_dbfs"),
    "/bridge/message/recent": ("message_id", "role", "content", "model", "created_at", "key_decision"),
    "/bridge/context/search": ("message_id", "role", "content", "created_at", "score", "why"),
    "/bridge/snapshot/list": ("snapshot_id", "name", "description", "created_at", "session_id", "messages"),
    "/bridge/session/list": ("session_id", "started_at", "ended_at", "active", "messages", "lines"),
    "/bridge/session/conversation": ("kind", "created_at", "role", "content", "model", "display_type",
                                     "key_decision", "decision_summary"),
    "/bridge/stats": ("name", "value"),
    "/bridge/storage": ("table", "rows", "bytes"),
    "/bridge/health": ("name", "status", "text"),
    "/bridge/debug/recent": ("cursor", "created_at", "sender", "receiver", "type", "severity", "content"),
    "/bridge/debug/tail": DEBUG_TAIL,
}

# Requests with a single reply: the names of its values after "ok".
RESULTS: dict[str, tuple[str, ...]] = {
    "/bridge/ping": ("version", "uptime_seconds"),
    "/bridge/status": ("plugins_bound", "plugins_identified", "queued_writes", "spooled_writes", "database_up",
                       "ollama_up", "free_disk_mib", "spool_bytes", "rejected_writes", "dropped_best_effort_writes"),
    "/bridge/project/open": ("project_id", "session_id"),
    "/bridge/project/current": ("project_name", "project_id", "session_id"),
    "/bridge/mapping/track": ("track_name", "track_number", "port", "instance_id"),
    "/bridge/mapping/clear": ("rows_cleared",),
    "/bridge/calibrate/tone": ("acknowledged",),
    "/bridge/debug/log": ("debug_id",),
    "/bridge/conversation/log": ("conversation_id",),
    "/bridge/message/save": ("message_id",),
    "/bridge/snapshot/create": ("snapshot_id",),
    "/bridge/spool/retry_rejected": ("moved", "reapplied", "refused_again", "still_waiting"),
}


def columns_of(address: str) -> tuple[str, ...] | None:
    """The names of the values of `address`'s reply (a row of a list, or the single reply), if known."""
    return LISTS.get(address) or RESULTS.get(address)


def none_for_absent(value: Any) -> Any:
    """The replies say "none" with -1 (a port, seconds never heard) or "" (an instance or track id): None in JSON.
    Only for values where -1 cannot be a real one."""
    return None if value == -1 or value == "" else value


def named(address: str, values: Sequence[Any]) -> dict[str, Any]:
    """One row or reply as {name: value}. Values past the known names (a newer bridge) are left out; names past
    the values (an older one) are None."""
    names = columns_of(address)
    if names is None:
        raise KeyError(f"no column names known for {address}")
    return {name: values[i] if i < len(values) else None for i, name in enumerate(names)}
