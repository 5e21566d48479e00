"""`oscbridge migrate-sqlite`: imports the SQLite-era `track_mappings.db` into a project's track assignments.

The original migration script (storage audit 2.2-2.3) aborted everything on one NULL or zero track number,
targeted a project the app never read, added duplicates on every run, built SQL by string interpolation, and
did not know the sandboxed app's path. This one:

* reads the default path and the sandbox container path (or the file given), read-only;
* reports and skips rows it cannot import (track number NULL, zero, negative, not a whole number, text; an
  id that is not `TRn`; a name over 255 characters) instead of aborting;
* resolves duplicates deterministically: per track number and per plugin id the newest `last_updated` wins
  (then the higher temp_id), and every dropped row is reported;
* compares with what PostgreSQL holds: a mapping already current is left alone, a newer one in PostgreSQL is
  kept, so running it twice changes nothing (and a later run cannot undo newer work);
* writes in one transaction with parameterised SQL only, through the same applier the daemon uses for
  `/bridge/mapping/set`, keeping the legacy `last_updated` as `assigned_at`, under an inactive session of its own;
* targets `--project`, else the most recently opened project, else "Default Project".

It connects to the database in use: `--database-url`, the running embedded server, or it starts the embedded
server itself (the daemon may run meanwhile; see docs/memory.md). The daemon reads mappings when it starts, so a
running daemon must be restarted to see imported ones; the summary says so.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from oscbridge.config import Settings
from oscbridge.flags import add_settings_flags, settings_from
from oscbridge.logs import configure_logging
from oscbridge.projects import DEFAULT_PROJECT, project_id_for
from oscbridge.store.core_ops import apply_mapping_set
from oscbridge.store.db import DatabaseUnavailable
from oscbridge.store.schema import SchemaError
from oscbridge.store.writes import MappingSet
from oscbridge.tools.connect import tool_connection
from oscbridge.tools.progress import SILENT, Progress, progress
from oscbridge.typedefs import plugin_id_problem

APP_SUPPORT = Path("Library/Application Support/ChattyChannels/track_mappings.db")
SANDBOXED = Path("Library/Containers/com.websmithing.ChattyChannels/Data") / APP_SUPPORT
MAX_TRACK = 100_000  # as /bridge/mapping/set
MAX_NAME = 255
OLDEST = datetime.min.replace(tzinfo=UTC)


class MigrationError(Exception):
    """Something the user must fix (an unreadable file, an unreachable database); the message says what."""


def default_paths(home: Path) -> list[Path]:
    """Where the legacy app kept its database: unsandboxed builds, then the sandboxed build's container."""
    return [home / APP_SUPPORT, home / SANDBOXED]


@dataclass(frozen=True)
class LegacyRow:
    source: Path
    temp_id: str
    track_name: str
    track_number: int
    last_updated: datetime | None

    @property
    def when(self) -> datetime:
        return self.last_updated or OLDEST

    def describe(self) -> str:
        stamp = self.last_updated.strftime("%Y-%m-%d %H:%M:%S") if self.last_updated else "no timestamp"
        return f"{self.temp_id} {self.track_name!r} (track {self.track_number}, {stamp})"


@dataclass(frozen=True)
class Skipped:
    source: Path
    temp_id: Any
    track_name: Any
    reason: str


@dataclass(frozen=True)
class Current:
    """A current track assignment in PostgreSQL."""

    track_number: int
    track_name: str
    plugin_id: str
    assigned_at: datetime

    def describe(self) -> str:
        return (f"{self.plugin_id} {self.track_name!r} (track {self.track_number}, "
                f"{self.assigned_at.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S')})")


@dataclass
class Plan:
    project: str
    project_id: str | None  # None: the project does not exist yet and is created
    sources: list[tuple[Path, int]] = field(default_factory=list)  # file and rows read
    skipped: list[Skipped] = field(default_factory=list)
    duplicates: list[tuple[LegacyRow, LegacyRow, str]] = field(default_factory=list)  # kept, dropped, key
    imports: list[LegacyRow] = field(default_factory=list)
    unchanged: list[LegacyRow] = field(default_factory=list)
    kept_newer: list[tuple[LegacyRow, Current]] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return sum(count for _, count in self.sources)


# -- reading the legacy file ---------------------------------------------------------------------------------


def _timestamp(value: Any) -> datetime | None:
    """SQLite's CURRENT_TIMESTAMP text (UTC), or epoch seconds; None when it cannot be read."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return None


def _track_number(value: Any, kind: str) -> int | str:
    """The track number, or the reason it cannot be used."""
    if kind == "null":
        return "missing track number (NULL)"
    if kind == "real":
        if not float(value).is_integer():
            return f"track number {value!r} is not a whole number"
        value = int(value)
    elif kind != "integer":
        return f"non-numeric track number {value!r}"
    if value <= 0:
        return f"track number {value} is not positive"
    if value > MAX_TRACK:
        return f"track number {value} is over {MAX_TRACK}"
    return int(value)


def _check(source: Path, temp_id: Any, name: Any, number: Any, kind: str, updated: Any) -> LegacyRow | Skipped:
    """The row as it will be imported, or why it cannot be."""
    track = _track_number(number, kind)
    if not isinstance(temp_id, str):
        reason = f"temp_id {temp_id!r} is not text"
    elif (problem := plugin_id_problem(temp_id, "temp_id")) is not None:
        reason = problem
    elif not isinstance(name, str):
        reason = f"track name {name!r} is not text"
    elif len(name) > MAX_NAME:
        reason = f"track name is {len(name)} characters long (at most {MAX_NAME})"
    elif isinstance(track, str):
        reason = track
    else:
        return LegacyRow(source, temp_id, name, track, _timestamp(updated))
    return Skipped(source, temp_id, name, reason)


def read_legacy(path: Path) -> tuple[list[LegacyRow], list[Skipped], int]:
    """The usable rows of one file, the skipped ones with reasons, and the number of rows read."""
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise MigrationError(f"cannot open {path}: {exc}") from exc
    try:
        conn.execute("PRAGMA query_only = 1")
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'track_mappings'").fetchone() \
                is None:
            raise MigrationError(f"{path} has no track_mappings table: it is not the legacy Chatty Channels database")
        records = conn.execute(
            "SELECT temp_id, track_name, track_number, typeof(track_number), last_updated FROM track_mappings "
            "ORDER BY rowid"
        ).fetchall()
    except sqlite3.Error as exc:
        raise MigrationError(f"cannot read {path}: {exc} (is it the legacy track_mappings.db?)") from exc
    finally:
        conn.close()
    rows: list[LegacyRow] = []
    skipped: list[Skipped] = []
    for record in records:
        checked = _check(path, *record)
        if isinstance(checked, LegacyRow):
            rows.append(checked)
        else:
            skipped.append(checked)
    return rows, skipped, len(records)


def resolve_duplicates(rows: Sequence[LegacyRow]) -> tuple[list[LegacyRow], list[tuple[LegacyRow, LegacyRow, str]]]:
    """One row per track number and per plugin id: the newest `last_updated` wins, then the higher temp_id."""
    kept: list[LegacyRow] = []
    dropped: list[tuple[LegacyRow, LegacyRow, str]] = []
    by_track: dict[int, LegacyRow] = {}
    by_plugin: dict[str, LegacyRow] = {}
    for row in sorted(rows, key=lambda r: (r.when, r.temp_id, r.track_name), reverse=True):
        winner = by_track.get(row.track_number)
        key = f"track number {row.track_number}"
        if winner is None:
            winner, key = by_plugin.get(row.temp_id), f"plugin id {row.temp_id}"
        if winner is not None:
            dropped.append((winner, row, key))
            continue
        by_track[row.track_number] = by_plugin[row.temp_id] = row
        kept.append(row)
    kept.sort(key=lambda r: r.track_number)
    return kept, dropped


# -- planning against PostgreSQL -----------------------------------------------------------------------------


async def _target(conn: asyncpg.Connection | None, project: str | None) -> tuple[str, str | None, list[Current]]:
    """The project name, its id (None if it does not exist yet) and its current assignments."""
    if conn is None:
        return project or DEFAULT_PROJECT, None, []
    if project is None:
        project = await conn.fetchval(
            "SELECT name FROM projects WHERE deleted_at IS NULL "
            "ORDER BY last_opened_at DESC NULLS LAST, created_at DESC LIMIT 1"
        ) or DEFAULT_PROJECT
    project_id = await conn.fetchval(
        "SELECT id::text FROM projects WHERE name = $1 AND deleted_at IS NULL FOR UPDATE", project)
    if project_id is None:
        return project, None, []
    rows = await conn.fetch(
        "SELECT track_number, track_name, plugin_id, assigned_at FROM track_assignments "
        "WHERE project_id = $1 AND is_current", project_id)
    return project, project_id, [Current(r["track_number"], r["track_name"], r["plugin_id"], r["assigned_at"])
                                 for r in rows]


def plan_against(plan: Plan, rows: Sequence[LegacyRow], current: Sequence[Current]) -> None:
    """Sorts resolved legacy rows into imports, unchanged ones and ones PostgreSQL has newer mappings for."""
    by_track = {c.track_number: c for c in current}
    by_plugin = {c.plugin_id: c for c in current}
    for row in rows:
        same = by_track.get(row.track_number)
        if same is not None and (same.track_name, same.plugin_id) == (row.track_name, row.temp_id):
            plan.unchanged.append(row)
            continue
        conflicts = [c for c in (same, by_plugin.get(row.temp_id)) if c is not None]
        newer = [c for c in conflicts if c.assigned_at > row.when]
        if newer:
            plan.kept_newer.append((row, newer[0]))
        else:
            plan.imports.append(row)


async def _apply(conn: asyncpg.Connection, plan: Plan, progress: Progress) -> None:
    """Creates the project if needed and a closed session for the import, then sets each mapping (one at a
    time, as the applier does anyway, so that `progress` can count them)."""
    if plan.project_id is None:
        plan.project_id = project_id_for(plan.project)
        await conn.execute(
            "INSERT INTO projects (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET deleted_at = NULL",
            plan.project_id, plan.project)
    session_id = str(uuid.uuid4())
    await conn.execute(
        "INSERT INTO sessions (id, project_id, started_at, ended_at, is_active) VALUES ($1, $2, now(), now(), false)",
        session_id, plan.project_id)
    now = time.time()
    progress.start(len(plan.imports))
    for row in plan.imports:
        await apply_mapping_set(conn, [
            MappingSet(str(uuid.uuid4()), plan.project_id, session_id, row.track_number, row.track_name,
                       row.temp_id, row.last_updated.timestamp() if row.last_updated else now)
        ])
        progress.advance()


async def migrate(conn: asyncpg.Connection | None, paths: Sequence[Path], project: str | None,
                  dry_run: bool, progress: Progress = SILENT) -> Plan:
    """Reads the files, plans, and (unless `dry_run`) applies in one transaction. `conn` None: no database
    exists yet (a dry run before the first start of the daemon). `progress` counts the rows imported."""
    legacy: list[LegacyRow] = []
    skipped: list[Skipped] = []
    sources: list[tuple[Path, int]] = []
    for path in paths:
        rows, bad, count = read_legacy(path)
        legacy.extend(rows)
        skipped.extend(bad)
        sources.append((path, count))
    resolved, duplicates = resolve_duplicates(legacy)
    if conn is None:
        name, project_id, current = await _target(None, project)
        plan = Plan(name, project_id, sources, skipped, duplicates)
        plan_against(plan, resolved, current)
        return plan
    async with conn.transaction():
        name, project_id, current = await _target(conn, project)
        plan = Plan(name, project_id, sources, skipped, duplicates)
        plan_against(plan, resolved, current)
        if not dry_run and plan.imports:
            await _apply(conn, plan, progress)
    return plan


# -- the command -----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser)
    parser.add_argument("path", nargs="?", help="the legacy track_mappings.db (default: the app's usual places)")
    parser.add_argument("--project", help="the project to import into (default: the most recently opened one, "
                                          "else \"Default Project\")")
    parser.add_argument("--dry-run", action="store_true", help="show what would change and write nothing")


def report(plan: Plan, dry_run: bool) -> Iterator[str]:
    """The human-readable account of a migration, line by line."""
    for path, count in plan.sources:
        yield f"source {path}: {count} row(s)"
    state = "existing" if plan.project_id else "to be created" if dry_run else "created"
    yield f"target project {plan.project!r} ({state})"
    verb = "would import" if dry_run else "imported"
    for row in plan.imports:
        yield f"  {verb}: {row.describe()}"
    for row in plan.unchanged:
        yield f"  unchanged: {row.describe()} is already current"
    for row, current in plan.kept_newer:
        yield f"  kept newer: PostgreSQL has {current.describe()}, newer than legacy {row.describe()}"
    for kept, dropped, key in plan.duplicates:
        yield f"  duplicate {key}: kept {kept.describe()}, dropped {dropped.describe()}"
    for bad in plan.skipped:
        yield f"  skipped: temp_id {bad.temp_id!r} track name {bad.track_name!r} in {bad.source.name}: {bad.reason}"
    yield (f"summary: {plan.rows_read} row(s) read, {len(plan.imports)} {verb}, {len(plan.unchanged)} unchanged, "
           f"{len(plan.kept_newer)} kept newer, {len(plan.duplicates)} duplicate(s) dropped, "
           f"{len(plan.skipped)} skipped" + (" (dry run: nothing was written)" if dry_run else ""))


async def _bridge_running(settings: Settings) -> bool:
    from oscbridge.client import BridgeClient

    try:
        client = await BridgeClient.connect(settings.host, settings.osc_port, transport="udp")
    except OSError:
        return False
    try:
        await client.call("/bridge/ping", timeout=0.5)
    except (TimeoutError, OSError):
        return False
    finally:
        await client.close()
    return True


async def migrate_command(settings: Settings, path: str | None, project: str | None, dry_run: bool) -> int:
    if path is not None:
        paths = [Path(path).expanduser()]
        if not paths[0].is_file():
            raise MigrationError(f"{paths[0]} does not exist (or is not a file)")
    else:
        paths = [p for p in default_paths(Path.home()) if p.is_file()]
        if not paths:
            print("no legacy database found; looked in:")
            for candidate in default_paths(Path.home()):
                print(f"  {candidate}")
            print("nothing to import (give the file's path if it is elsewhere)")
            return 0
    with progress("importing", "rows") as shown:  # on a terminal, stderr shows the rows imported
        async with tool_connection(settings, read_only=dry_run) as conn:
            plan = await migrate(conn, paths, project, dry_run, shown)
    for line in report(plan, dry_run):
        print(line)
    if plan.imports and not dry_run and await _bridge_running(settings):
        print(f"note: oscbridge is running on {settings.host}:{settings.osc_port}; it reads mappings when it starts, "
              "so restart it to use the imported ones (under launchd: `launchctl kickstart -k` with its label)")
    return 0


def run(ns: argparse.Namespace) -> int:
    configure_logging("warning")
    try:
        return asyncio.run(migrate_command(settings_from(ns), ns.path, ns.project, ns.dry_run))
    except (MigrationError, SchemaError, DatabaseUnavailable) as exc:
        print(f"oscbridge migrate-sqlite: {exc}", file=sys.stderr)
        return 1
