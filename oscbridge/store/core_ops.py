"""Write operations of the daemon foundation: projects and sessions, track mappings, debug log rows.

Each applier runs inside the writer's batch transaction and is idempotent, because after a crash the spool may
replay operations that were already committed.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from oscbridge.store.writer import OpKind, copy_idempotent, ts_to_dt
from oscbridge.store.writes import (
    BridgeStart,
    DebugRow,
    MappingClear,
    MappingSet,
    ProjectTouch,
    SessionStart,
    WriteOp,
)


async def _apply_bridge_start(conn: asyncpg.Connection, ops: list[BridgeStart]) -> None:
    for op in ops:
        await conn.execute(
            """
            INSERT INTO bridges (id, name, host, version, first_seen, last_seen) VALUES ($1, $2, $3, $4, $5, $5)
            ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, host = EXCLUDED.host, version = EXCLUDED.version,
                   last_seen = greatest(bridges.last_seen, EXCLUDED.last_seen)
            """,
            op.bridge_id, op.name, op.host, op.version, ts_to_dt(op.ts),
        )


async def _apply_session_start(conn: asyncpg.Connection, ops: list[SessionStart]) -> None:
    """Upserts the project and starts this bridge's session in it, ending the bridge's previous session and its
    other active session of this project (and one made without a bridge that started earlier). Sessions of other
    bridges on the same project are theirs: each bridge has its own active session per project.

    This bridge's own sessions are ended whatever their start time: the spool's order is the order of its starts,
    and a wall clock stepped back (NTP) must not leave the older session active and the new one refused by the
    one-active-session index. A start already applied is skipped as a whole, so a replay never ends what came
    after it."""
    for op in ops:
        if await conn.fetchval("SELECT 1 FROM sessions WHERE id = $1", op.session_id):
            continue  # applied before a crash: ending sessions again would end the ones this bridge started since
        at = ts_to_dt(op.ts)
        await conn.execute(
            """
            INSERT INTO projects (id, name, logic_project_path, last_opened_at)
            VALUES ($1, $2, NULLIF($3, ''), $4)
            ON CONFLICT (id) DO UPDATE
               SET last_opened_at = greatest(projects.last_opened_at, EXCLUDED.last_opened_at),
                   logic_project_path = COALESCE(EXCLUDED.logic_project_path, projects.logic_project_path),
                   deleted_at = NULL,
                   name = CASE WHEN projects.name = recovered_name(projects.id) THEN EXCLUDED.name
                               ELSE projects.name END
            """,
            op.project_id, op.name, op.logic_path, at,
        )
        await conn.execute(
            """
            UPDATE sessions SET is_active = false, ended_at = greatest(started_at, $3)
            WHERE is_active AND id <> $2 AND (project_id = $1 OR id = $4)
              AND (bridge_id = oscbridge_current_bridge() OR (bridge_id IS NULL AND started_at <= $3))
            """,
            op.project_id, op.session_id, at, op.previous_session_id,
        )
        await conn.execute(
            "INSERT INTO sessions (id, project_id, started_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
            op.session_id, op.project_id, at,
        )


async def _apply_project_touch(conn: asyncpg.Connection, ops: list[ProjectTouch]) -> None:
    """Re-opening the current project only moves last_opened_at (and may set the Logic path)."""
    for op in ops:
        await conn.execute(
            """
            UPDATE projects SET last_opened_at = greatest(last_opened_at, $2),
                   logic_project_path = COALESCE(NULLIF($3, ''), logic_project_path)
            WHERE id = $1
            """,
            op.project_id, ts_to_dt(op.ts), op.logic_path,
        )


MAPPING_LOCK_CLASS = 0x05CB_0003
"""Two-integer advisory key (class, hashtext(project id)) serialising the mapping writes of one project between
bridges (schema.sql's get_or_create_project uses 0x05CB0002 the same way)."""


async def _lock_mappings(conn: asyncpg.Connection, project_id: str) -> None:
    """Takes the project's mapping lock until the transaction ends.

    Without it, two bridges changing one project's track 1 at once collide under READ COMMITTED: the second's UPDATE
    waits for the first, skips the row the first retired, never sees the row the first inserted, and its INSERT is
    refused by the one-current-row index. After the lock, each statement's snapshot has the other's commit."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2::text))", MAPPING_LOCK_CLASS, project_id)


async def apply_mapping_set(conn: asyncpg.Connection, ops: list[MappingSet]) -> None:
    """Makes each mapping current, retiring what it replaces, unless another bridge's current mapping of that track
    or plugin was made later: a write that waited in a spool (its database was out of reach for an hour) does not
    undo a newer change from another rig. It is then kept as history only, and a notification without a bridge
    makes every bridge, this one too, read the project's mappings again. This bridge's own rows are replaced
    whatever their time: its spool's order is the order of its changes."""
    for op in ops:
        await _lock_mappings(conn, op.project_id)
        if await conn.fetchval("SELECT 1 FROM track_assignments WHERE id = $1", op.id):
            continue  # already applied before a crash
        at = ts_to_dt(op.ts)
        superseded = await conn.fetchval(
            """
            SELECT max(t.assigned_at) FROM track_assignments t JOIN sessions s ON s.id = t.session_id
            WHERE t.project_id = $1 AND t.is_current AND (t.track_number = $2 OR t.plugin_id = $3)
              AND t.assigned_at > $4 AND s.bridge_id IS DISTINCT FROM oscbridge_current_bridge()
            """,
            op.project_id, op.track_number, op.plugin_id, at,
        )
        if superseded is None:
            await conn.execute(
                """
                UPDATE track_assignments SET is_current = false, retired_at = $4
                WHERE project_id = $1 AND is_current AND (track_number = $2 OR plugin_id = $3)
                """,
                op.project_id, op.track_number, op.plugin_id, at,
            )
        await conn.execute(
            """
            INSERT INTO track_assignments (id, project_id, session_id, track_number, track_name, plugin_id,
                                           assigned_at, is_current, retired_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            """,
            op.id, op.project_id, op.session_id, op.track_number, op.track_name,
            op.plugin_id, at, superseded is None, superseded,
        )
        if superseded is not None:
            await conn.execute("SELECT pg_notify('oscbridge_mappings', "
                               "json_build_object('project_id', $1::uuid, 'bridge_id', NULL)::text)", op.project_id)


async def _apply_mapping_clear(conn: asyncpg.Connection, ops: list[MappingClear]) -> None:
    for op in ops:
        await _lock_mappings(conn, op.project_id)
        at = ts_to_dt(op.ts)
        await conn.execute(
            """
            UPDATE track_assignments SET is_current = false, retired_at = $2
            WHERE project_id = $1 AND is_current AND assigned_at <= $2
            """,
            op.project_id, at,
        )


FOREIGN_KEY_VIOLATION = "23503"
DEBUG_COLUMNS = ("id", "project_id", "session_id", "sender", "receiver", "message_type", "content", "payload",
                 "severity", "parent_message_id", "created_at")


async def _apply_debug_rows(conn: asyncpg.Connection, ops: list[DebugRow]) -> None:
    records = [
        (op.id, op.project_id, op.session_id, op.sender, op.receiver, op.message_type,
         op.content, op.payload, op.severity, op.parent_id,
         ts_to_dt(op.ts))
        for op in ops
    ]
    await copy_idempotent(conn, "mission_control_debug", DEBUG_COLUMNS, records)


async def repair_parents(conn: asyncpg.Connection, op: WriteOp, exc: BaseException) -> bool:
    """When `op` was refused because its project or session row is missing (a foreign key), makes them: the
    project under its recovered name, the session as an ended one of this bridge. True when something was made,
    so that the writer applies `op` again; False when this is not such a refusal (or nothing was missing)."""
    project_id, session_id = getattr(op, "project_id", None), getattr(op, "session_id", None)
    if getattr(exc, "sqlstate", None) != FOREIGN_KEY_VIOLATION or project_id is None or session_id is None:
        return False
    at = ts_to_dt(getattr(op, "ts", 0.0))
    made_project = await conn.fetchval(
        "INSERT INTO projects (id, name) VALUES ($1, recovered_name($1)) ON CONFLICT (id) DO NOTHING RETURNING true",
        project_id)
    made_session = await conn.fetchval(
        """
        INSERT INTO sessions (id, project_id, started_at, ended_at, is_active) VALUES ($1, $2, $3, $3, false)
        ON CONFLICT (id) DO NOTHING RETURNING true
        """,
        session_id, project_id, at)
    return bool(made_project or made_session)


CORE_OPS: tuple[OpKind[Any], ...] = (
    OpKind(BridgeStart, _apply_bridge_start),
    OpKind(SessionStart, _apply_session_start),
    OpKind(ProjectTouch, _apply_project_touch),
    OpKind(MappingSet, apply_mapping_set),
    OpKind(MappingClear, _apply_mapping_clear),
    OpKind(DebugRow, _apply_debug_rows),
)
