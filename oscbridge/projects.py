"""Projects, their sessions and their track mappings: held in memory, changed only through `Projects`' verbs.

PostgreSQL is the truth that survives restarts: at start the bridge loads the projects and their current mappings
(`load_projects`); afterwards every change is first queued for the writer and only then made in memory, so a
change the spool refuses (SpoolError: the disk is full) leaves memory as it was and the client is told so.
Mapping queries are answered from memory. Project ids are derived from the name (uuid5, the same function as the
SQL interface's `get_or_create_project`), so the bridge knows a project's id even while the database is down.

Several bridges may share the database: the mapping changes of the others come in through
`store/notifications.py`, which reads the current rows again and hands them to `reload_mappings`. This bridge's own
mapping changes that the writer has not committed yet are kept here, with their spool sequence numbers, and are
re-applied on top of those rows, in order, so that a reload never undoes a change a client was told is done. Every
mapping that changes, here or elsewhere, is told to `listeners` as `/bridge/event/mapping`.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from oscbridge.clock import Clock
from oscbridge.protocol import EVENT_MAPPING
from oscbridge.store.notifications import MappingRow, current_mappings
from oscbridge.store.writes import MappingClear, MappingSet, ProjectTouch, SessionStart, Submit

PROJECT_NAMESPACE = uuid.UUID("6f1c1f7e-5c1b-4d5e-9a57-0b6d2f3c4e11")
DEFAULT_PROJECT = "Default Project"
# This bridge's mapping changes kept until the writer has committed them. Beyond this many (a writer held up for
# long under a flood of /bridge/mapping/set), the oldest are let go and reloads wait until the writer is past them.
MAX_UNSAVED = 10_000

MappingOp = MappingSet | MappingClear
Emit = Callable[[str, list[Any]], None]


def project_id_for(name: str) -> str:
    return str(uuid.uuid5(PROJECT_NAMESPACE, name))


@dataclass
class TrackMapping:
    track_number: int
    track_name: str
    plugin_id: str
    # When it was assigned (seconds since the epoch): a clear retires what was assigned up to its own time, as the
    # database does (core_ops._apply_mapping_clear). Not part of what the mapping is.
    assigned_at: float = field(default=0.0, compare=False)


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

    def clear(self, until: float = math.inf) -> int:
        """Removes the mappings assigned up to `until`; returns how many."""
        gone = [m for m in self.by_track.values() if m.assigned_at <= until]
        for mapping in gone:
            del self.by_track[mapping.track_number]
            del self.by_plugin[mapping.plugin_id]
        return len(gone)

    def apply(self, op: MappingOp) -> None:
        """A mapping write, as the writer applies it to the database (core_ops)."""
        if isinstance(op, MappingSet):
            self.set_mapping(TrackMapping(op.track_number, op.track_name, op.plugin_id, op.ts))
        else:
            self.clear(op.ts)

    def mappings(self) -> list[TrackMapping]:
        return [self.by_track[n] for n in sorted(self.by_track)]


@dataclass
class LoadedProjects:
    """What the database holds at start: every live project by name, the one opened last on any bridge, and the
    one this bridge resumes (None: "Default Project")."""

    projects: dict[str, Project] = field(default_factory=dict)
    latest: str | None = None
    resume: str | None = None


async def load_projects(conn: asyncpg.Connection, bridge_id: str | None = None) -> LoadedProjects:
    """All live projects with their current mappings, the name of the most recently opened one and, for the bridge
    `bridge_id`, the project it resumes (`resume_for`)."""
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
    for mapping in await current_mappings(conn):
        owner = by_id.get(mapping.project_id)
        if owner is not None:
            owner.set_mapping(_mapping(mapping))
    loaded.latest = rows[0]["name"] if rows else None
    if bridge_id is not None:
        loaded.resume = await resume_for(conn, bridge_id)
    return loaded


async def resume_for(conn: asyncpg.Connection, bridge_id: str) -> str | None:
    """The live project of this bridge's newest session: the song this rig had open when it stopped, whatever the
    other bridges on the database opened since. With none, the newest session made without a bridge (before schema
    version 3 there was one bridge per database, and a person in SQL makes such sessions), as plugin rows without
    a bridge are taken as its own. A bridge new to a shared database gets None and starts in "Default Project",
    as on a new database, rather than sending its calibration and traffic into the song another rig opened last."""
    name: str | None = await conn.fetchval(
        """
        SELECT p.name FROM sessions s JOIN projects p ON p.id = s.project_id
        WHERE p.deleted_at IS NULL AND (s.bridge_id = $1::uuid OR s.bridge_id IS NULL)
        ORDER BY s.bridge_id IS NULL, s.started_at DESC, p.last_opened_at DESC NULLS LAST
        LIMIT 1
        """,
        bridge_id,
    )
    return name


def _mapping(row: MappingRow) -> TrackMapping:
    return TrackMapping(row.track_number, row.track_name, row.plugin_id, row.assigned_at)


class Projects:
    """The known projects, the current one and its session. Complete when built: it resumes the project this
    bridge had open last (`resume_for`; or "Default Project") in a new session at once, so there is always a
    current project.

    `committed` gives the writer's committed sequence number (the spool's); with it, this bridge's mapping changes
    are kept until they are committed, for `reload_mappings`. `listeners` are told each mapping that changes
    (`/bridge/event/mapping`), `switched` the id of each project that becomes current."""

    def __init__(self, loaded: LoadedProjects, submit: Submit, clock: Clock,
                 committed: Callable[[], int] | None = None) -> None:
        self._projects = loaded.projects
        self._submit = submit
        self._clock = clock
        self._committed = committed
        self._unsaved: deque[tuple[int, MappingOp]] = deque()  # (spool sequence number, write), oldest first
        self._unsaved_lost = 0  # the newest sequence number let go past MAX_UNSAVED
        self._reading_from: int | None = None  # `committed` of a reload whose rows are being read (begin_reload)
        self.listeners: list[Emit] = []
        self.switched: list[Callable[[str], None]] = []
        self.session_id = ""
        self._current = self._project(loaded.resume or DEFAULT_PROJECT)
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
        for hook in self.switched:
            hook(project.id)

    def set_mapping(self, track_number: int, track_name: str, plugin_id: str) -> None:
        """Maps track `track_number` ("name") to `plugin_id` in the current project: queued, then in memory. Used by
        /bridge/mapping/set and by calibration once a plugin confirmed its track id."""
        project = self._current
        self._change(project, MappingSet(str(uuid.uuid4()), project.id, self.session_id, track_number, track_name,
                                         plugin_id, self._clock.time()))

    def clear_mappings(self) -> int:
        """Retires the current project's mappings; returns how many there were."""
        project = self._current
        count = len(project.by_track)
        self._change(project, MappingClear(project.id, self._clock.time()))
        return count - len(project.by_track)

    def _change(self, project: Project, op: MappingOp) -> None:
        seq = self._submit(op)  # SpoolError: nothing stored, memory stays as it was
        if self._committed is not None:
            committed = self._committed()
            # A reload in flight re-applies what is past its own `committed`: what was committed since may be
            # missing from the rows it reads, so it is kept until that reload is over.
            self._forget(committed if self._reading_from is None else min(committed, self._reading_from))
            self._unsaved.append((seq, op))
            if len(self._unsaved) > MAX_UNSAVED:
                self._unsaved_lost = self._unsaved.popleft()[0]
        before = dict(project.by_track) if self.listeners else {}
        project.apply(op)
        self._emit(project, before)

    def _forget(self, committed: int) -> None:
        """Lets go of the changes the writer has committed."""
        while self._unsaved and self._unsaved[0][0] <= committed:
            self._unsaved.popleft()

    def _emit(self, project: Project, before: dict[int, TrackMapping]) -> None:
        """`/bridge/event/mapping` (project id, track number, track name, plugin id) for each track whose mapping
        changed; a track left without one gives "" as name and plugin id."""
        after = project.by_track
        for number in sorted(before.keys() | after.keys()) if self.listeners else ():
            old, new = before.get(number), after.get(number)
            if old != new:
                args = [project.id, number, new.track_name if new else "", new.plugin_id if new else ""]
                for listener in self.listeners:
                    listener(EVENT_MAPPING, args)

    def begin_reload(self) -> int:
        """The writer's committed sequence number, read just before the rows of a reload: the changes after it are
        kept for `reload_mappings` (or until `reload_failed`) even if they are committed while the rows are read."""
        if self._committed is None:
            raise RuntimeError("reloads need the writer's committed sequence number (Projects(committed=...))")
        self._reading_from = self._committed()
        return self._reading_from

    def reload_failed(self) -> None:
        """The read begun by `begin_reload` did not finish: committed changes are let go again."""
        self._reading_from = None

    def reload_mappings(self, rows: list[MappingRow], project_ids: Collection[str] | None,
                        committed: int) -> dict[str, int]:
        """Takes the current mappings read from the database for `project_ids` (None: every project) and makes
        them the known projects' mappings, with this bridge's changes after sequence number `committed` (read
        before the rows, so every earlier one is in them) applied on top in order. Projects not known here are
        left alone; they are read when they become current (`switched`).

        Returns the projects whose mappings include re-applied changes, each with the sequence number of the last
        one: such a change may have been committed while the rows were read, after a change of another bridge
        that it now hides, so the project is to be read once more when the writer has committed that far."""
        self._reading_from = None
        self._forget(committed)
        by_id = {project.id: project for project in self._projects.values()}
        targets = list(by_id.values()) if project_ids is None else [by_id[i] for i in project_ids if i in by_id]
        if committed < self._unsaved_lost:  # changes let go are not in the rows yet: keep what memory has
            return {project.id: self._unsaved_lost for project in targets}
        fresh: dict[str, list[MappingRow]] = {}
        for row in rows:
            fresh.setdefault(row.project_id, []).append(row)
        unsaved: dict[str, list[tuple[int, MappingOp]]] = {}
        for seq, op in self._unsaved:
            unsaved.setdefault(op.project_id, []).append((seq, op))
        again: dict[str, int] = {}
        for project in targets:
            rebuilt = Project(project.id, project.name)
            for row in fresh.get(project.id, ()):
                rebuilt.set_mapping(_mapping(row))
            for seq, op in unsaved.get(project.id, ()):
                rebuilt.apply(op)
                again[project.id] = seq
            before = project.by_track
            project.by_track, project.by_plugin = rebuilt.by_track, rebuilt.by_plugin
            self._emit(project, before)
        return again

    def mapping_for(self, plugin_id: str) -> TrackMapping | None:
        return self._current.by_plugin.get(plugin_id)

    def mappings(self) -> list[TrackMapping]:
        return self._current.mappings()
