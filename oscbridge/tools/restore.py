"""`oscbridge restore FILE`: puts a backup (`oscbridge backup`, or one the daemon made) back, into an empty data dir
(its embedded server is created there) or into the database of `--database-url` (docs/backup.md).

Order, so that a bad file or a wrong target changes nothing:

1. The whole file is checked first, in a private temp dir (TMPDIR; it needs room for the dump): every member and
   checksum, the manifest, a schema this bridge knows, and `pg_restore --list` of the dump.
2. The data dir's spool is taken (its lock: a bridge running there, or one starting meanwhile, is refused).
3. The target must be empty, unless `--force`: no rows in the database, no writes in the spool.
4. The dump is restored. Embedded: into a staging database, whose row counts must equal the manifest's before it
   replaces `oscbridge` (so a failure leaves the old database as it was). A named database: by one pg_restore
   transaction (`--single-transaction`; with `--clean` when it has tables already), then the counts are checked.
5. The backup's spool writes go into the target's spool, so that the next start writes them; its refused writes
   go to rejected.jsonl. With `--force`, writes the target's spool still held are moved to rejected.jsonl first
   (kept, not applied: they were made after the backup, against the database being replaced).

Exit codes: 0 restored; 1 failed (the message says what to do); 3 a bridge (or another tool) uses that data dir;
4 the target is not empty (add --force to replace it); 65 the file is not a whole oscbridge backup.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Protocol, TextIO
from urllib.parse import urlsplit

import asyncpg

from oscbridge.config import Settings
from oscbridge.flags import add_settings_flags, settings_from
from oscbridge.jsontext import parse_json
from oscbridge.logs import configure_logging
from oscbridge.private import DIR_MODE, TRAVERSABLE_DIR_MODE, private_dir, private_opener
from oscbridge.redact import redact_url
from oscbridge.store.archive import (
    DUMP,
    SPOOL_REJECTED,
    SPOOL_WRITES,
    DamagedBackup,
    Manifest,
    member_path,
    read_archive,
)
from oscbridge.store.backup import BackupError, count_rows, major_of, pg_tool, run_pg
from oscbridge.store.embedded import DATABASE, EmbeddedPostgres
from oscbridge.store.schema import latest_version
from oscbridge.store.spool import Spool, SpoolError, SpoolLocked, human
from oscbridge.tools.backup import FAILURES, explain

EXIT_FAILED = 1
EXIT_IN_USE = 3
EXIT_NOT_EMPTY = 4
EXIT_DAMAGED = 65  # EX_DATAERR
STAGING = "oscbridge_restore"
RESTORE_ARGS = ("--no-owner", "--no-privileges", "--exit-on-error")
# Restoring is mostly building indexes, the messages' HNSW index above all; its graph must fit in
# maintenance_work_mem or the build slows down: 100,000 768-d messages and 1,000,000 debug rows restored in 146 s
# with 1 GB, 199 s with 256 MB (bench/bench_backup.py, 2 cores). 1 GB fits the graph of about 300,000 messages.
# Two jobs build two tables' indexes side by side; on 2 cores that made no difference (144 s with one).
RESTORE_JOBS = 2
RESTORE_ENV = {"PGOPTIONS": "-c maintenance_work_mem=1GB"}
SET_ASIDE_BATCH = 1000
RESTORE_FAILURES: tuple[type[Exception], ...] = (*FAILURES, SpoolError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser)
    parser.add_argument("file", help="a backup file made by `oscbridge backup` or by the daemon")
    parser.add_argument("--force", action="store_true", help="replace what the target database holds (writes "
                        "its spool still holds are kept in rejected.jsonl, not applied)")


def run(ns: argparse.Namespace) -> int:
    configure_logging("warning")
    return restore_command(settings_from(ns), Path(ns.file), force=ns.force)


def restore_command(settings: Settings, file: Path, *, force: bool = False, out: TextIO | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="oscbridge-restore-") as work:
        return asyncio.run(_restore(settings, file.expanduser().absolute(), force, Path(work),
                                    sys.stdout if out is None else out))


class Refused(Exception):
    """The restore does not start; `code` is the exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


async def _restore(settings: Settings, file: Path, force: bool, work: Path, out: TextIO) -> int:
    try:
        manifest, pg_restore = await verify(file, work)
    except DamagedBackup as exc:
        print(f"oscbridge: cannot restore {file}: {exc}. Nothing was changed; restore another backup (the daemon "
              f"keeps its own in {settings.backups_dir})", file=sys.stderr)
        return EXIT_DAMAGED
    url = settings.direct_database_url  # pg_restore needs PostgreSQL itself, not a transaction pooler
    target: Target = UrlTarget(url) if url else EmbeddedTarget(settings)
    try:
        spool = _take_spool(settings, manifest)
    except Refused as exc:
        print(f"oscbridge: {exc}", file=sys.stderr)
        return exc.code
    restored = False
    try:
        held = await target.rows_held()
        if not force and (held or spool.pending or spool.rejected_count):
            print(f"oscbridge: {_not_empty(target, held, spool)}", file=sys.stderr)
            return EXIT_NOT_EMPTY
        counts = await target.restore(member_path(work, DUMP), pg_restore, manifest)
        restored = True
        set_aside = _set_aside(spool, f"set aside by `oscbridge restore --force` of {file.name}; these writes "
                               "were made against the database it replaced") if force else 0
        spooled = _install_spool(spool, member_path(work, SPOOL_WRITES), member_path(work, SPOOL_REJECTED))
    except RESTORE_FAILURES as exc:
        if restored:
            print(f"oscbridge: the database was restored, but the backup's spool could not be added to "
                  f"{settings.spool_dir}: {explain(exc, url)}. Fix that and restore again with "
                  "--force", file=sys.stderr)
        else:
            print(f"oscbridge: the restore failed: {explain(exc, url)}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        spool.close()
        await target.close()
    print(f"restored {file} into {target.name}", file=out)
    print(f"  made {manifest.created_at} by oscbridge {manifest.bridge_version} from PostgreSQL "
          f"{manifest.server_version} (schema version {manifest.schema_version})", file=out)
    print(f"  rows, the same as the backup's manifest: {manifest.describe()}"
          + (f" ({sum(counts.values())} in all)" if counts else ""), file=out)
    print(f"  spool: {spooled} writes wait in {settings.spool_dir} and are written when the bridge starts; "
          f"{manifest.spool_rejected} refused writes added to rejected.jsonl", file=out)
    if set_aside:
        print(f"  {set_aside} writes the spool held before are kept in {spool.rejected_path}, not applied "
              "(`oscbridge spool retry-rejected` applies them)", file=out)
    print("start the bridge with: oscbridge serve"
          + (f" --database-url {redact_url(settings.database_url)}" if settings.database_url else "")
          + f" --data-dir {settings.data_dir}", file=out)
    return 0


async def verify(file: Path, work: Path) -> tuple[Manifest, Path]:
    """Checks the whole backup, copying its members into `work`; returns its manifest and the pg_restore that
    reads its dump. Raises DamagedBackup."""
    if not file.is_file():
        raise DamagedBackup("there is no such file")
    manifest = await asyncio.to_thread(read_archive, file, work)
    latest = latest_version()
    if manifest.schema_version is not None and manifest.schema_version > latest:
        raise DamagedBackup(f"it was made by a newer oscbridge ({manifest.bridge_version}, schema version "
                            f"{manifest.schema_version}; this one knows up to {latest}): restore it with that "
                            "version or a newer one")
    try:
        pg_restore = pg_tool("pg_restore", major_of(manifest.pg_dump_version))
        listing = await run_pg(pg_restore, ["--list", str(member_path(work, DUMP))])
    except BackupError as exc:
        raise DamagedBackup(f"pg_restore cannot read its database dump ({exc})") from None
    dumped = {f"{schema}.{table}" for schema, table in re.findall(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ",
                                                                   listing, re.M)}
    missing = sorted(name for name, rows in manifest.row_counts.items() if rows and name not in dumped)
    if missing:
        raise DamagedBackup(f"its database dump has no data for {', '.join(missing)}, which its manifest counts")
    return manifest, pg_restore


def _take_spool(settings: Settings, manifest: Manifest) -> Spool:
    """The target's spool, owned until the restore ends, so that no bridge starts on it meanwhile."""
    size = manifest.files[SPOOL_WRITES]["bytes"]
    if size > settings.spool_max_bytes:
        raise Refused(EXIT_FAILED, f"the backup's spool holds {human(size)} of writes, more than spool_max_bytes "
                      f"({human(settings.spool_max_bytes)}); raise it (--config or OSCBRIDGE_SPOOL_MAX_BYTES) for "
                      "the restore and the first start. Nothing was changed")
    # Run as root, the embedded PostgreSQL runs as its own OS user, which must pass through the data dir.
    embedded = settings.database_url is None and os.geteuid() == 0
    try:
        private_dir(settings.data_dir, mode=TRAVERSABLE_DIR_MODE if embedded else DIR_MODE)
        return Spool(settings.spool_dir, max_bytes=settings.spool_max_bytes,
                     reserve_bytes=settings.disk_reserve_bytes, owner={"tool": "restore"})
    except SpoolLocked as exc:
        owner = exc.owner or {}
        who = (f"a bridge (pid {owner.get('pid')}, port {owner['port']})" if "port" in owner
               else f"another oscbridge process (pid {owner.get('pid', '?')})")
        raise Refused(EXIT_IN_USE, f"{who} is using {settings.data_dir}. Stop it first (Ctrl-C where it runs; "
                      "when launchd runs it, `oscbridge launchd uninstall`, and `install` again after the "
                      "restore). Nothing was changed") from None
    except (SpoolError, OSError) as exc:
        raise Refused(EXIT_FAILED, f"cannot use {settings.data_dir}: {exc}") from None


def _not_empty(target: Target, held: dict[str, int], spool: Spool) -> str:
    parts = []
    if held:
        parts.append(f"{target.name} holds " + ", ".join(f"{name.removeprefix('public.')} {count}"
                                                          for name, count in sorted(held.items())))
    if spool.pending or spool.rejected_count:
        parts.append(f"the spool {spool.directory} holds {spool.pending} writes not yet in a database and "
                     f"{spool.rejected_count} refused writes")
    return ("the target is not empty: " + "; ".join(parts) + ". Nothing was changed. Restore into an empty data "
            "dir (--data-dir NEW_DIR), or add --force to replace the database (the spool's writes are then kept "
            "in rejected.jsonl, not applied)")


# ------------------------------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------------------------------


class Target(Protocol):
    name: str

    async def rows_held(self) -> dict[str, int]:
        """The tables that hold rows now, with their counts (empty: nothing to lose)."""
        ...

    async def restore(self, dump: Path, pg_restore: Path, manifest: Manifest) -> dict[str, int]:
        """Restores `dump`, checks the row counts against the manifest, returns them; raises BackupError."""
        ...

    async def close(self) -> None: ...


def _check_counts(counts: dict[str, int], manifest: Manifest) -> None:
    wrong = [f"{name} {counts.get(name, 'missing')} instead of {rows}" for name, rows in
             sorted(manifest.row_counts.items()) if counts.get(name) != rows]
    if wrong:
        raise BackupError("the restored database does not hold what the backup's manifest counts: "
                          + ", ".join(wrong))


async def _rows(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await count_rows(conn)
    finally:
        await conn.close()


def _database_url(admin_url: str, database: str) -> str:
    return urlsplit(admin_url)._replace(path="/" + database).geturl()


class EmbeddedTarget:
    """The embedded server of the data dir, created there when there is none yet."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pgdata = settings.embedded_pgdata
        self.name = f"the embedded database in {self.pgdata}"
        self._embedded: EmbeddedPostgres | None = None
        self._admin: str | None = None

    async def _start(self) -> str:
        if self._admin is None:
            self._embedded = EmbeddedPostgres(self.pgdata)
            try:
                self._admin = await asyncio.to_thread(self._embedded.start)
            except Exception as exc:  # the helper's errors: initdb or pg_ctl failing, a refused upgrade
                raise BackupError(f"cannot start the embedded PostgreSQL in {self.pgdata}: {exc}") from exc
            if os.geteuid() == 0:  # the helper opens the dirs above its own (as the app does after it)
                private_dir(self.settings.data_dir, mode=TRAVERSABLE_DIR_MODE)
        return self._admin

    async def rows_held(self) -> dict[str, int]:
        if not (self.pgdata / "PG_VERSION").exists():
            return {}  # nothing there yet: no server is started just to find that out
        admin = await self._start()
        conn = await asyncpg.connect(admin, timeout=10)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
        finally:
            await conn.close()
        if not exists:
            return {}
        return {name: rows for name, rows in (await _rows(_database_url(admin, DATABASE))).items() if rows}

    async def restore(self, dump: Path, pg_restore: Path, manifest: Manifest) -> dict[str, int]:
        admin = await self._start()
        assert self._embedded is not None
        await self._drop(admin, STAGING)
        staging = await self._embedded.ensure_database(admin, STAGING)
        try:
            # Not one transaction: the staging database is thrown away on failure anyway, and parallel jobs
            # build the indexes side by side (bench/bench_backup.py).
            await run_pg(pg_restore, [*RESTORE_ARGS, f"--jobs={RESTORE_JOBS}", str(dump)], staging,
                         env=RESTORE_ENV)
            counts = await _rows(staging)
            _check_counts(counts, manifest)
        except BaseException:
            await self._drop(admin, STAGING)
            raise
        conn = await asyncpg.connect(admin, timeout=10)
        try:  # database names cannot be parameters; both are our constants
            await conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
            await conn.execute(f'ALTER DATABASE "{STAGING}" RENAME TO "{DATABASE}"')
        finally:
            await conn.close()
        return counts

    @staticmethod
    async def _drop(admin: str, database: str) -> None:
        conn = await asyncpg.connect(admin, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await conn.close()

    async def close(self) -> None:
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)


class UrlTarget:
    """A database named by `--database-url` (it must exist; the restore does not create databases)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = f"the database {redact_url(url)}"
        self._has_tables = False

    async def rows_held(self) -> dict[str, int]:
        try:
            counts = await _rows(self.url)
        except asyncpg.InvalidCatalogNameError:
            raise BackupError(f"{self.name} does not exist: create it (`createdb NAME`, or CREATE DATABASE as "
                              "its owner) and run the restore again") from None
        self._has_tables = bool(counts)
        return {name: rows for name, rows in counts.items() if rows}

    async def restore(self, dump: Path, pg_restore: Path, manifest: Manifest) -> dict[str, int]:
        clean = ("--clean", "--if-exists") if self._has_tables else ()
        await run_pg(pg_restore, [*RESTORE_ARGS, "--single-transaction", *clean, str(dump)], self.url,
                     env=RESTORE_ENV)
        counts = await _rows(self.url)
        try:
            _check_counts(counts, manifest)
        except BackupError as exc:
            raise BackupError(f"{exc}. The restore has been committed; look at the database before using it"
                              ) from None
        return counts

    async def close(self) -> None:
        return None


# ------------------------------------------------------------------------------------------------------------
# The spool
# ------------------------------------------------------------------------------------------------------------


def _set_aside(spool: Spool, reason: str) -> int:
    """Moves the writes the target's spool holds to its rejected.jsonl (with `reason`); returns how many."""
    moved = 0
    while spool.pending:
        ops, end = spool.read_batch(SET_ASIDE_BATCH)
        if not ops:
            break
        spool.reject([(op, reason) for op in ops])
        spool.commit(end, len(ops))
        moved += len(ops)
    return moved


def _install_spool(spool: Spool, writes: Path, rejected: Path) -> int:
    """Appends the backup's spool writes to the target's spool and its refused writes to rejected.jsonl;
    returns how many writes wait to be applied."""
    added = 0
    with open(writes, "rb") as fh:
        for line in fh:
            try:
                op = parse_json(line)
            except ValueError:
                op = None
            if isinstance(op, dict):
                spool.append(op)
                added += 1
            else:  # as the writer does with a line it cannot read: kept, not applied
                spool.reject([({"k": "_skip", "raw": line.decode("utf-8", "replace")},
                               "unreadable line in the backup's spool")])
    if rejected.stat().st_size:
        with open(rejected, "rb") as src, open(spool.rejected_path, "ab", opener=private_opener) as dst:
            shutil.copyfileobj(src, dst)
    return added
