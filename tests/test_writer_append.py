"""The writer's append of rows (`copy_idempotent`): short runs take a pipelined INSERT, long ones COPY through a
staging table; both store every row as given and skip ids already present, so a spool replayed after a crash never
duplicates a row."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from oscbridge.projects import project_id_for
from oscbridge.store.core_ops import DEBUG_COLUMNS
from oscbridge.store.writer import SMALL_RUN, copy_idempotent


def debug_rows(project: uuid.UUID, session: uuid.UUID, count: int) -> list[tuple[Any, ...]]:
    at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    return [(uuid.uuid4(), project, session, "orchestrator", None, "log", f"row {n} 'quoted' \u00e9",
             json.dumps({"n": n}), "info", None, at) for n in range(count)]


@pytest.mark.parametrize("count", [1, SMALL_RUN - 1, SMALL_RUN, 3 * SMALL_RUN])
async def test_rows_are_stored_as_given_and_a_replay_adds_none_twice(database_url: str, count: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        project = uuid.UUID(project_id_for(f"Append {count}"))
        await conn.execute("INSERT INTO projects (id, name, last_opened_at) VALUES ($1, $2, now())", project,
                           f"Append {count}")
        session = await conn.fetchval("SELECT start_session($1)", project)
        rows = debug_rows(project, session, count)
        async with conn.transaction():
            await copy_idempotent(conn, "mission_control_debug", DEBUG_COLUMNS, rows)
        more = debug_rows(project, session, 2)
        async with conn.transaction():  # the same rows again (a replay) with two new ones among them
            await copy_idempotent(conn, "mission_control_debug", DEBUG_COLUMNS, rows[:1] + more + rows[1:])
        stored = await conn.fetch(f"SELECT {', '.join(DEBUG_COLUMNS)} FROM mission_control_debug "
                                  "WHERE project_id = $1", project)
    finally:
        await conn.close()
    assert sorted(tuple(r) for r in stored) == sorted(rows + more)
