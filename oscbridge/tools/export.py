"""`oscbridge export`: a project's conversation, snapshots and track history outside the bridge, as JSON Lines
(for programs; enough to rebuild the history) and as Markdown (for people: one file per session and an index).

It reads the database in use (`--database-url`, the running bridge's embedded server, or that server started for
the export: `oscbridge.tools.connect`) in one read-only REPEATABLE READ transaction, so every file describes the
same moment even while the bridge keeps writing, and it never changes the database. Embedding vectors are left
out: they are derived data the bridge recomputes from the text. Files are 0600 in 0700 directories
(`oscbridge.private`): they hold the whole conversation. Format and fields: docs/export.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from oscbridge import __version__
from oscbridge.config import Settings
from oscbridge.flags import add_settings_flags, settings_from
from oscbridge.logs import configure_logging
from oscbridge.private import private_dir, private_opener
from oscbridge.projects import load_projects
from oscbridge.redact import redact_url
from oscbridge.store.db import DatabaseUnavailable
from oscbridge.store.schema import current_version
from oscbridge.tools import export_markdown as md
from oscbridge.tools.connect import tool_connection
from oscbridge.tools.export_markdown import Row

FORMATS = ("jsonl", "markdown")
EXPORT_FORMAT = "oscbridge-export/1"  # manifest.json's `format`: changes when a field changes meaning
# json.dumps(ensure_ascii=False) leaves these raw inside strings; JSON allows that, but readers that split lines the
# Unicode way (Python's str.splitlines) would cut a record in two there. Escaped, a record is one line for all.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


class ExportError(Exception):
    """Something the user must fix (an unknown project, an output directory in use); the message says what."""


@dataclass(frozen=True)
class Kind:
    """One JSON Lines file: a table's rows of the project, with these fields, in this order."""

    file: str
    table: str
    columns: tuple[str, ...]
    order: str


PROJECT = Kind("project.jsonl", "projects", ("id", "name", "created_at", "updated_at", "last_opened_at",
                                             "logic_project_path", "track_count", "sample_rate"), "id")
SESSIONS = Kind("sessions.jsonl", "sessions", ("id", "project_id", "started_at", "ended_at", "is_active",
                                               "bridge_id"), "started_at, id")
MESSAGES = Kind("messages.jsonl", "messages", ("id", "project_id", "session_id", "created_at", "role", "content",
                                               "model", "token_count", "is_key_decision", "decision_summary",
                                               "embedding_model"), "created_at, id")
CONVERSATION = Kind("conversation.jsonl", "mission_control_conversations",
                    ("id", "project_id", "session_id", "created_at", "role", "content", "display_type",
                     "message_id"), "created_at, id")
SNAPSHOTS = Kind("snapshots.jsonl", "context_snapshots", ("id", "project_id", "session_id", "created_at", "name",
                                                          "description", "message_ids", "track_state"),
                 "created_at, id")
TRACKS = Kind("tracks.jsonl", "track_assignments", ("id", "project_id", "session_id", "track_number", "track_name",
                                                    "plugin_id", "assigned_at", "verified_at", "is_current",
                                                    "retired_at"), "assigned_at, id")
KINDS = (PROJECT, SESSIONS, MESSAGES, CONVERSATION, SNAPSHOTS, TRACKS)
SUMMARY = ((SESSIONS, "session"), (MESSAGES, "message"), (CONVERSATION, "Mission Control line"),
           (SNAPSHOTS, "snapshot"), (TRACKS, "track assignment"))


@dataclass(frozen=True)
class History:
    """Everything exported of one project, read in one snapshot of the database."""

    rows: dict[Kind, list[Row]]
    schema_version: int | None
    exported_at: datetime

    @property
    def project(self) -> Row:
        return self.rows[PROJECT][0]


@dataclass(frozen=True)
class Exported:
    project: str
    out: Path
    counts: dict[str, int]  # rows per JSON Lines file name
    files: list[str]


def _plain(value: Any) -> Any:
    """A column value as JSON can hold it: ids as text, times in UTC (written as ISO-8601), arrays as lists."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


async def _rows(conn: asyncpg.Connection, kind: Kind, key: str, value: str) -> list[Row]:
    # Table, column and key names are this module's constants; the value is a parameter.
    records = await conn.fetch(
        f"SELECT {', '.join(kind.columns)} FROM {kind.table} WHERE {key} = $1 ORDER BY {kind.order}", value)
    return [{column: _plain(record[column]) for column in kind.columns} for record in records]


async def read_history(conn: asyncpg.Connection, name: str | None) -> History:
    """The project `name` (default: the one opened last on any bridge) and its rows.

    Raises ExportError naming the known projects when there is no live project of that name."""
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        loaded = await load_projects(conn)
        if not loaded.projects:
            raise ExportError("this database holds no project yet: nothing to export")
        name = name if name is not None else loaded.latest
        project = loaded.projects.get(name or "")
        if project is None:
            known = ", ".join(repr(known) for known in sorted(loaded.projects))
            raise ExportError(f"no project named {name!r}; the known projects are: {known}")
        rows = {PROJECT: await _rows(conn, PROJECT, "id", project.id)}
        for kind in KINDS[1:]:
            rows[kind] = await _rows(conn, kind, "project_id", project.id)
        version = await current_version(conn)
    return History(rows, version, datetime.now(UTC))


# -- writing -----------------------------------------------------------------------------------------------------


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def jsonl_line(row: Row) -> str:
    """One record: a JSON object on one line, UTF-8 as it is (not \\u escapes) except line-breaking characters."""
    return json.dumps(row, ensure_ascii=False, default=_json_default).translate(_LINE_BREAKS) + "\n"


def _write(path: Path, chunks: Iterable[str]) -> None:
    try:
        with open(path, "w", encoding="utf-8", newline="\n", opener=private_opener) as out:
            out.writelines(chunks)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from exc


def check_out(out: Path, force: bool) -> bool:
    """Whether `out` already holds files; refuses a non-directory, and a non-empty directory unless `force`."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    in_use = out.is_dir() and any(out.iterdir())
    if in_use and not force:
        raise ExportError(f"{out} is not empty: choose another --out, or add --force to write into it "
                          "(files of the same names are replaced, others are left alone)")
    return in_use


def default_out(cwd: Path, project: str, when: datetime) -> Path:
    """`<project>-<date>` under `cwd`, with characters that file names do not take replaced by `-`."""
    safe = re.sub(r"[^\w.-]+", "-", project).strip("-.") or "project"
    return cwd / f"{safe}-{when:%Y-%m-%d}"


def _by_session(rows: Sequence[Row]) -> dict[str, list[Row]]:
    grouped: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        grouped[row["session_id"]].append(row)
    return grouped


def session_views(history: History) -> list[md.SessionView]:
    """Each session with its messages, conversation lines, snapshots and the track mapping in effect during it."""
    messages, conversation = _by_session(history.rows[MESSAGES]), _by_session(history.rows[CONVERSATION])
    snapshots, tracks = _by_session(history.rows[SNAPSHOTS]), history.rows[TRACKS]
    views = []
    for session in history.rows[SESSIONS]:
        until = session["ended_at"] or max(history.exported_at, session["started_at"])
        views.append(md.SessionView(history.project, session, messages.get(session["id"], []),
                                    conversation.get(session["id"], []), snapshots.get(session["id"], []),
                                    md.tracks_during(tracks, session["started_at"], until), until))
    return views


def counts(history: History) -> dict[str, int]:
    return {kind.file: len(history.rows[kind]) for kind in KINDS}


def write_export(history: History, out: Path, formats: Sequence[str], in_use: bool) -> list[str]:
    """Writes the files; returns their paths relative to `out`. An existing directory that already held files
    (`--force`) keeps its mode: it may be the user's own (`--out .`); what the export creates is private."""
    private_dir(out, tighten=not in_use)
    jsonl: list[str] = []
    if "jsonl" in formats:
        for kind in KINDS:
            _write(out / kind.file, (jsonl_line(row) for row in history.rows[kind]))
            jsonl.append(kind.file)
    written = list(jsonl)
    if "markdown" in formats:
        private_dir(out / "sessions")
        lines = []
        for view in session_views(history):
            name = md.session_file_name(view.session)
            _write(out / "sessions" / name, [md.render_session(view)])
            written.append(f"sessions/{name}")
            lines.append(md.IndexLine(name, view))
        current = sorted((t for t in history.rows[TRACKS] if t["is_current"]), key=lambda t: t["track_number"])
        _write(out / "index.md", [md.render_index(history.project, lines, current, history.exported_at, __version__,
                                                  jsonl)])
        written.append("index.md")
    manifest = {
        "format": EXPORT_FORMAT, "oscbridge_version": __version__, "schema_version": history.schema_version,
        "exported_at": history.exported_at.isoformat(),
        "project": {"id": history.project["id"], "name": history.project["name"]},
        "formats": list(formats), "counts": counts(history),
    }
    _write(out / "manifest.json", [json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"])
    return [*written, "manifest.json"]


async def export(settings: Settings, project: str | None, out: Path | None, formats: Sequence[str],
                 force: bool = False) -> Exported:
    """Reads the project from the database in use and writes the export; `out` None: `<project>-<date>` in the
    current directory."""
    if out is not None:
        check_out(out, force)  # before a database is reached (or an embedded server started) for nothing
    async with tool_connection(settings, read_only=True) as conn:
        if conn is None:
            where = (f"the database at {redact_url(settings.database_url)}" if settings.database_url
                     else f"{settings.data_dir} (the bridge has not run with this data dir)")
            raise ExportError(f"there is no oscbridge database in {where}: nothing to export")
        history = await read_history(conn, project)
    name = history.project["name"]
    target = out if out is not None else default_out(Path.cwd(), name, history.exported_at)
    in_use = check_out(target, force)
    files = write_export(history, target, formats, in_use)
    return Exported(name, target, counts(history), files)


# -- the command -------------------------------------------------------------------------------------------------


def _formats(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in FORMATS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown format {', '.join(unknown) or repr(text)}: give jsonl, markdown "
                                         "or both, separated by a comma")
    return [f for f in FORMATS if f in chosen]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser)
    parser.add_argument("--project", help="the project to export (default: the most recently opened one)")
    parser.add_argument("--out", type=Path, help="the directory to write (default: <project>-<date> here)")
    parser.add_argument("--format", type=_formats, default=list(FORMATS), dest="formats", metavar="LIST",
                        help="jsonl, markdown or jsonl,markdown (default: both)")
    parser.add_argument("--force", action="store_true", help="write into a directory that is not empty")


def run(ns: argparse.Namespace) -> int:
    configure_logging("warning")
    try:
        done = asyncio.run(export(settings_from(ns), ns.project, ns.out, ns.formats, ns.force))
    except (ExportError, DatabaseUnavailable) as exc:
        print(f"oscbridge export: {exc}", file=sys.stderr)
        return 1
    counts = ", ".join(md.plural(done.counts[kind.file], noun) for kind, noun in SUMMARY)
    print(f"exported project {done.project!r} to {done.out}: {counts} ({len(done.files)} files)")
    return 0
