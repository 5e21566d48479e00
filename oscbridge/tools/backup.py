"""`oscbridge backup [FILE]`: one file with a consistent dump of the bridge's database, the spool's writes not yet
in it, and a manifest (docs/backup.md; the format is store/archive.py, the dump store/backup.py).

It works whether the bridge runs or not. The database is the one of `--database-url`, else the embedded server
of the data dir: attached to when the bridge runs it, started for the backup and stopped after when not (the
helper stops a server only when its last user leaves, so a bridge that starts meanwhile keeps it). The spool's
files are read, never written, so the running bridge keeps owning them.

Exit codes: 0 written; 1 not written (the message says why and what to do; nothing is left behind).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TextIO

import asyncpg

from oscbridge.config import Settings
from oscbridge.flags import add_settings_flags, settings_from
from oscbridge.logs import configure_logging
from oscbridge.private import private_dir
from oscbridge.redact import redact_url, scrub
from oscbridge.store.archive import Manifest
from oscbridge.store.backup import MANUAL, BackupError, create_backup, new_backup_path
from oscbridge.store.db import CONNECTION_ERRORS
from oscbridge.store.embedded import EmbeddedPostgres
from oscbridge.store.spool import human

EXIT_FAILED = 1
# What a backup or restore can run into that the user can act on; anything else is a bug, shown as a traceback.
FAILURES: tuple[type[Exception], ...] = (BackupError, asyncpg.PostgresError, *CONNECTION_ERRORS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser)
    parser.add_argument("file", nargs="?", help="the backup file to write (must not exist; default: "
                        "<data dir>/backups/backup-<UTC time>.tar)")


def run(ns: argparse.Namespace) -> int:
    configure_logging("warning")
    return asyncio.run(backup_command(settings_from(ns), Path(ns.file) if ns.file else None))


@asynccontextmanager
async def bridge_database(settings: Settings) -> AsyncIterator[tuple[str, str]]:
    """The URL of the bridge's database and its kind ("embedded" or "external"); an embedded server that is
    not running is started for the block. Raises BackupError when there is no database to back up."""
    if settings.direct_database_url:  # pg_dump's snapshot needs PostgreSQL itself, not a transaction pooler
        yield settings.direct_database_url, "external"
        return
    pgdata = settings.embedded_pgdata
    if not (pgdata / "PG_VERSION").exists():
        raise BackupError(f"there is no embedded database in {pgdata}, so nothing to back up. Is --data-dir "
                          "right? For a bridge on another PostgreSQL, give its --database-url")
    embedded = EmbeddedPostgres(pgdata)
    try:
        try:
            url = await embedded.start_async()
        except Exception as exc:  # the helper's errors: a version mismatch, pg_ctl failing, a refused upgrade
            raise BackupError(f"cannot start the embedded PostgreSQL in {pgdata}: {exc} (its log: {pgdata / 'log'})"
                              ) from exc
        yield url, "embedded"
    finally:
        await asyncio.to_thread(embedded.stop)


def explain(exc: BaseException, url: str | None) -> str:
    """A database or file error as a sentence that says what to do (passwords masked)."""
    text = scrub(str(exc), url) if url else str(exc)
    if isinstance(exc, BackupError):
        return text
    if isinstance(exc, asyncpg.PostgresError):
        return f"the database refused: {text}"
    if isinstance(exc, OSError) and exc.filename:
        return f"cannot write {exc.filename}: {exc.strerror}. Free some space or choose another place"
    if isinstance(exc, CONNECTION_ERRORS):
        where = redact_url(url) if url else "the database"
        return (f"cannot reach {where}: {type(exc).__name__}: {text}. Is PostgreSQL running? `oscbridge doctor` "
                "says more")
    return f"{type(exc).__name__}: {text}"


async def backup_command(settings: Settings, file: Path | None, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    dest = file.expanduser().absolute() if file is not None else None
    if dest is not None and not dest.parent.is_dir():
        print(f"oscbridge: cannot write {dest}: the folder {dest.parent} does not exist", file=sys.stderr)
        return EXIT_FAILED
    url: str | None = settings.direct_database_url
    try:
        async with bridge_database(settings) as (url, kind):
            dest = dest or new_backup_path(private_dir(settings.backups_dir), MANUAL)
            manifest = await create_backup(url, settings.spool_dir, dest, database=kind)
    except FAILURES as exc:
        print(f"oscbridge: no backup was written: {explain(exc, url)}", file=sys.stderr)
        return EXIT_FAILED
    report(manifest, dest, out)
    return 0


def report(manifest: Manifest, dest: Path, out: TextIO) -> None:
    print(f"backup written to {dest} ({human(dest.stat().st_size)}, mode 0600)", file=out)
    print(f"  database: {manifest.database} PostgreSQL {manifest.server_version}, schema version "
          f"{manifest.schema_version}: {manifest.describe()}", file=out)
    print(f"  spool: {manifest.spool_writes} writes not yet in the database, {manifest.spool_rejected} refused "
          "writes", file=out)
    print(f"restore it with: oscbridge restore {dest} --data-dir NEW_EMPTY_DIR", file=out)
