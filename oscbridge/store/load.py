"""Reading the bridge's state at start: projects, their current mappings, the project to resume."""

from __future__ import annotations

import asyncpg

from oscbridge.state import Project, ProjectState, TrackMapping


async def load_projects(conn: asyncpg.Connection) -> ProjectState:
    """All live projects with their current mappings, and the name of the most recently opened one."""
    state = ProjectState()
    rows = await conn.fetch(
        "SELECT id::text, name, COALESCE(logic_project_path, '') AS path FROM projects "
        "WHERE deleted_at IS NULL ORDER BY last_opened_at DESC NULLS LAST, created_at DESC"
    )
    by_id: dict[str, Project] = {}
    for row in rows:
        project = Project(row["id"], row["name"], row["path"])
        state.projects[project.name] = project
        by_id[project.id] = project
    mappings = await conn.fetch(
        "SELECT project_id::text, track_number, track_name, plugin_id FROM track_assignments WHERE is_current"
    )
    for row in mappings:
        owner = by_id.get(row["project_id"])
        if owner is not None:
            owner.set_mapping(TrackMapping(row["track_number"], row["track_name"], row["plugin_id"]))
    state.latest = rows[0]["name"] if rows else None
    return state
