"""Private files: the data dir, spool and logs hold conversation text, so they are 0700 dirs and 0600 files.

The modes are given explicitly (not left to the umask, which is 022 for most users, so everything would be
world-readable) and existing dirs and files the bridge owns are tightened when it opens them, so an install made
before this rule gets fixed at the next start. Every place that creates a private file or dir goes through here.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import structlog

log = structlog.get_logger("oscbridge.private")

DIR_MODE = 0o700
FILE_MODE = 0o600
OTHERS = 0o077  # any permission for the group or for everyone else
READ_WRITE_OTHERS = 0o066
# The data dir when the embedded PostgreSQL runs as its own OS user (the helper does that when run as root): its
# pg_ctl must pass through the data dir to reach <data_dir>/postgres, so others may traverse it, not list it.
TRAVERSABLE_DIR_MODE = 0o711


def private_dir(path: Path, *, tighten: bool = True, mode: int = DIR_MODE) -> Path:
    """Creates `path` (and missing parents, 0700) with `mode` whatever the umask; with `tighten`, an existing
    `path` gets exactly `mode` too. Returns `path`.

    Leave `tighten` off for a directory the user chose that may be shared (the parent of `--log-file` could be
    /tmp): only what the bridge creates there is then made private.
    """
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made by another process meanwhile
        os.chmod(directory, mode if directory == path else DIR_MODE)  # mkdir's mode is filtered by the umask
    if tighten and not missing:
        try:
            if stat.S_IMODE(path.stat().st_mode) != mode:
                os.chmod(path, mode)
        except OSError as exc:
            log.warning("cannot_make_private", path=str(path), error=exc.strerror)
    return path


def private_opener(path: str | os.PathLike[str], flags: int) -> int:
    """An `opener` for `open()` (and a plain `os.open`): the file is created 0600, and an existing one that
    others may read is made 0600."""
    fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    try:
        if os.fstat(fd).st_mode & OTHERS:
            os.fchmod(fd, FILE_MODE)
    except OSError as exc:  # a file of another user: still usable, and the doctor points at it
        log.warning("cannot_make_private", path=str(path), error=exc.strerror)
    return fd


def write_private_file(path: Path, data: bytes) -> None:
    """Makes `data` the content of `path`, 0600 whatever the umask, whole or not at all, and durable.

    The data goes to a new temporary file beside `path` (a unique name: two writers never share one), which is
    fsynced and then renamed over `path`; then the directory is fsynced. Without the file's fsync the rename can
    reach the disk before the data (ext4's delayed allocation, APFS alike), so after a power cut `path` is empty:
    an empty bridge.json stopped the bridge's start, or made it a new bridge whose spool replayed under another id.
    Without the directory's fsync the rename itself may be lost. A reader sees the old content or the new, never a
    part. The files written so are small and written seldom (an identity, a token, passwords), so two fsyncs cost
    nothing that matters.
    """
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, FILE_MODE)  # mkstemp's 0600 is filtered by the umask (0277 would leave it 0400)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    sync_dir(path.parent)


def sync_dir(directory: Path) -> None:
    """Makes a rename in `directory` survive a power cut (not possible on every filesystem; then skipped)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def tighten_file(path: Path) -> None:
    """Makes an existing file 0600 if others may use it; a missing file is fine."""
    try:
        if path.stat().st_mode & OTHERS:
            os.chmod(path, FILE_MODE)
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("cannot_make_private", path=str(path), error=exc.strerror)


def open_to_others(path: Path) -> bool:
    """True when `path` exists and its group or other users may read or write it (passing through a directory
    whose entries they cannot list is not reading it)."""
    try:
        return bool(path.stat().st_mode & READ_WRITE_OTHERS)
    except OSError:
        return False
