"""What request handlers share: settings, in-memory state, the writer, the database and the plugin registry."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from oscbridge.config import Settings
from oscbridge.osc.transport import Addr
from oscbridge.plugins.registry import InstanceRegistry
from oscbridge.state import ProjectState
from oscbridge.store.db import Database
from oscbridge.store.writer import Writer, now_ts

if TYPE_CHECKING:
    from oscbridge.router import Router


@dataclass
class BridgeContext:
    settings: Settings
    state: ProjectState
    writer: Writer
    db: Database
    instances: InstanceRegistry = field(default_factory=InstanceRegistry)
    started: float = field(default_factory=time.monotonic)
    # Filled in by the embedding worker when it runs; tells /bridge/status whether Ollama answers.
    ollama_up: Callable[[], bool] = lambda: False
    # Sends a datagram from the bridge's own UDP socket (set once the socket is attached).
    send: Callable[[bytes, Addr], None] = lambda data, addr: None
    # The router, for its counters and for replying to requests from components (set at start).
    router: Router | None = None

    def start_session(self, name: str, logic_path: str = "") -> tuple[str, str]:
        """Opens (or re-opens) project `name`; returns (project id, session id). Opening the current project again
        keeps its session. The write is queued first and memory changes only once it was accepted, so a refused
        write (SpoolError: the disk is full) leaves the bridge in the session it was in."""
        state = self.state
        project = state.project(name)
        if state.is_current(project):
            self.writer.submit("project_touch", {"project_id": project.id, "logic_path": logic_path,
                                                 "ts": now_ts()})
        else:
            session_id = str(uuid.uuid4())
            self.writer.submit("session_start", {
                "project_id": project.id, "name": project.name, "logic_path": logic_path or project.logic_path,
                "session_id": session_id, "previous_session_id": state.session_id or None, "ts": now_ts(),
            })
            state.switch(project, session_id)
        if logic_path:
            project.logic_path = logic_path
        return project.id, state.session_id

    def ids(self) -> dict[str, str]:
        """The current project and session ids, which every stored row carries."""
        return {"project_id": self.state.require().id, "session_id": self.state.session_id}
