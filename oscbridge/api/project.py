"""/bridge/project/*: which Logic project (and session) the bridge stores things under."""

from __future__ import annotations

from oscbridge.api.endpoint import request
from oscbridge.api.params import Str
from oscbridge.context import BridgeContext


class ProjectApi:
    def __init__(self, ctx: BridgeContext) -> None:
        self.ctx = ctx

    @request("/bridge/project/open", Str("name", max_len=255, min_len=1), Str("logic_project_path", max_len=4096))
    def open(self, name: str, logic_path: str) -> tuple[str, str]:
        """Opening the current project again keeps its session; opening another one starts a new session."""
        return self.ctx.start_session(name, logic_path)

    @request("/bridge/project/current")
    def current(self) -> tuple[str, str, str]:
        project = self.ctx.state.require()
        return project.name, project.id, self.ctx.state.session_id
