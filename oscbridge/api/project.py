"""/bridge/project/*: which Logic project (and session) the bridge stores things under."""

from __future__ import annotations

from oscbridge.api.endpoint import request
from oscbridge.api.params import Str
from oscbridge.projects import Projects


class ProjectApi:
    def __init__(self, projects: Projects) -> None:
        self._projects = projects

    @request("/bridge/project/open", Str("name", max_len=255, min_len=1), Str("logic_project_path", max_len=4096))
    def open(self, name: str, logic_path: str) -> tuple[str, str]:
        """Opening the current project again keeps its session; opening another one starts a new session."""
        return self._projects.open(name, logic_path)

    @request("/bridge/project/current")
    def current(self) -> tuple[str, str, str]:
        project = self._projects.current
        return project.name, project.id, self._projects.session_id
