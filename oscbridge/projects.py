"""Projects, their sessions and their track mappings: held in memory, changed only through `Projects`' verbs.

PostgreSQL is the truth that survives restarts: at start the bridge loads the projects and their current mappings
(`load_projects`); afterwards every change is first queued for the writer and only then made in memory, so a
change the spool refuses (SpoolError: the disk is full) leaves memory as it was and the client is told so.
Mapping queries are answered from memory. Project ids are derived from the name (uuid5, the same function as the
SQL interface's `get_or_create_project`), so the bridge knows a project's id even while the database is down.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import asyncpg

from oscbridge.clock import Clock
from oscbridge.store.writes import MappingClear, MappingSet, ProjectTouch, SessionStart, Submit

PROJECT_NAMESPACE = uuid.UUID("6f1c1f7e-5c1b-4d5e-9a57-0b6d2f3c4e11")
DEFAULT_PROJECT = "Default Project"


def project_id_for(name: str) -> str:
    return str(uuid.uuid5(PROJECT_NAMESPACE, name))


@dataclass
class TrackMapping:
    track_number: int
    track_name: str
    plugin_id: str


@dataclass
class Project:
    id: str
    name: str
    logic_path: str = ""
    by_track: dict[int, TrackMapping] = field(default_factory=dict)
    by_plugin: dict[str, TrackMapping] = field(default_factory=dict)

    def set_mapping(self, mapping: TrackMapping) -> None:
        """One current row per track number and per plugin id: whatever held either is replaced."""
        old_track = self.by_track.pop(mapping.track_number, None)
        if old_track is not None:
            self.by_plugin.pop(old_track.plugin_id, None)
        old_plugin = self.by_plugin.pop(mapping.plugin_id, None)
        if old_plugin is not None:
            self.by_track.pop(old_plugin.track_number, None)
        self.by_track[mapping.track_number] = mapping
        self.by_plugin[mapping.plugin_id] = mapping

    def clear(self) -> int:
        count = len(self.by_track)
        self.by_track.clear()
        self.by_plugin.clear()
        return count

    def mappings(self) -> list[TrackMapping]:
        return [self.by_track[n] for n in sorted(self.by_track)]


@dataclass
class LoadedProjects:
    """What the database holds at start: every live project by name, and the one opened last."""

    projects: dict[str, Project] = field(default_factory=dict)
    latest: str | None = None


async def load_projects(conn: asyncpg.Connection) -> LoadedProjects:
    """All live projects with their current mappings, and the name of the most recently opened one."""
    loaded = LoadedProjects()
    rows = await conn.fetch(
        "SELECT id::text, name, COALESCE(logic_project_path, '') AS path FROM projects "
        "WHERE deleted_at IS NULL ORDER BY last_opened_at DESC NULLS LAST, created_at DESC"
    )
    by_id: dict[str, Project] = {}
    for row in rows:
        project = Project(row["id"], row["name"], row["path"])
        loaded.projects[project.name] = project
        by_id[project.id] = project
    mappings = await conn.fetch(
        "SELECT project_id::text, track_number, track_name, plugin_id FROM track_assignments WHERE is_current"
    )
    for row in mappings:
        owner = by_id.get(row["project_id"])
        if owner is not None:
            owner.set_mapping(TrackMapping(row["track_number"], row["track_name"], row["plugin_id"]))
    loaded.latest = rows[0]["name"] if rows else None
    return loaded


class Projects:
    """The known projects, the current one and its session. Complete when built: it resumes the project opened
    last (or "Default Project") in a new session at once, so there is always a current project."""

    def __init__(self, loaded: LoadedProjects, submit: Submit, clock: Clock) -> None:
        self._projects = loaded.projects
        self._submit = submit
        self._clock = clock
        self.session_id = ""
        self._current = self._project(loaded.latest or DEFAULT_PROJECT)
        self._start_session(self._current, "")

    @property
    def current(self) -> Project:
        return self._current

    def ids(self) -> tuple[str, str]:
        """The current project and session ids, which every stored row carries."""
        return self._current.id, self.session_id

    def _project(self, name: str) -> Project:
        project = self._projects.get(name)
        if project is None:
            project = self._projects[name] = Project(project_id_for(name), name)
        return project

    def open(self, name: str, logic_path: str = "") -> tuple[str, str]:
        """Opens (or re-opens) project `name`; returns (project id, session id). Opening the current project
        again keeps its session; another project starts a new one."""
        project = self._project(name)
        if project is self._current:
            self._submit(ProjectTouch(project.id, logic_path, self._clock.time()))
        else:
            self._start_session(project, logic_path)
        if logic_path:
            project.logic_path = logic_path
        return project.id, self.session_id

    def _start_session(self, project: Project, logic_path: str) -> None:
        session_id = str(uuid.uuid4())
        self._submit(SessionStart(project.id, project.name, logic_path or project.logic_path, session_id,
                                  self.session_id or None, self._clock.time()))
        self._current, self.session_id = project, session_id

    def set_mapping(self, track_number: int, track_name: str, plugin_id: str) -> None:
        """Maps track `track_number` ("name") to `plugin_id` in the current project: queued, then in memory. Used by
        /bridge/mapping/set and by calibration once a plugin confirmed its track id."""
        project = self._current
        self._submit(MappingSet(str(uuid.uuid4()), project.id, self.session_id, track_number, track_name, plugin_id,
                                self._clock.time()))
        project.set_mapping(TrackMapping(track_number, track_name, plugin_id))

    def clear_mappings(self) -> int:
        project = self._current
        self._submit(MappingClear(project.id, self._clock.time()))
        return project.clear()

    def mapping_for(self, plugin_id: str) -> TrackMapping | None:
        return self._current.by_plugin.get(plugin_id)

    def mappings(self) -> list[TrackMapping]:
        return self._current.mappings()
