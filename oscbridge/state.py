"""The project, session and track mappings in memory: mapping queries are answered from here.

PostgreSQL is the truth that survives restarts; at start the bridge loads the projects and their current
mappings, and afterwards every change is made here first and queued for the writer. Project ids are derived from
the project name (uuid5), so the same name gets the same id even when the database was unreachable at start.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

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
class ProjectState:
    """All known projects by name, the current one and its session."""

    projects: dict[str, Project] = field(default_factory=dict)
    current: Project | None = None
    session_id: str = ""
    latest: str | None = None  # the most recently opened project when the state was loaded

    def project(self, name: str) -> Project:
        """The project called `name`, made (in memory only) on first use."""
        project = self.projects.get(name)
        if project is None:
            project = self.projects[name] = Project(project_id_for(name), name)
        return project

    def is_current(self, project: Project) -> bool:
        return self.current is project and bool(self.session_id)

    def switch(self, project: Project, session_id: str) -> None:
        """Makes `project` current in session `session_id` (after its write was accepted)."""
        self.current = project
        self.session_id = session_id

    def require(self) -> Project:
        assert self.current is not None, "no current project"
        return self.current
