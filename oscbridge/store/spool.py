"""The local append-only spool: every acknowledged write is here before its "ok" goes out.

One JSON line per operation. The writer reads from a committed offset, applies batches to PostgreSQL, and
advances the offset (kept in a small side file); when everything is committed the file is truncated. A process
crash loses nothing that was acknowledged: each line is handed to the kernel with `os.write` before the reply is
sent. Against power loss the writer fsyncs, off the event loop, at most once a second and only while lines wait
that are not in PostgreSQL yet (`needs_sync`): an fsync makes every append to the same file wait for it (seen as
4 ms p99 on pings under load when it ran after every batch), and lines already committed need no fsync at all.
So a power cut loses at most the last second of acknowledged writes, and only while PostgreSQL is behind or down;
Vector's disk buffer makes the same trade (fsync every 500 ms). Replaying lines that were already committed is
harmless because every operation is idempotent (ids made by the bridge).

A write lands whole or not at all. There is no userspace buffer (a buffered file kept a record whose write
failed and wrote it with the next one, so a write the client was told failed was stored later); a short or
failed `os.write` is undone by truncating the file back to its size before the record, and the client is told
why (`SpoolError`, answered `unavailable`). The disk filling up is therefore temporary: once space is freed,
writes are accepted again and nothing refused turns up later.

The spool has a cap on bytes not yet in PostgreSQL (`spool_max_bytes`). Past three quarters of it, or when the
disk's free space is under `disk_reserve_bytes`, best-effort writes (debug rows of plugin traffic) are dropped
and counted, so they cannot crowd out the writes that matter; at the cap every write is refused.

One process owns a spool: `lock` in the spool dir is held with `flock` for the owner's life and says who it is
(`oscbridge spool retry-rejected` asks that process instead of touching the files).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oscbridge.logs import RateLimitedWarning, get_logger
from oscbridge.private import private_dir, private_opener, tighten_file, write_private_file

log = get_logger("oscbridge.spool")

MIB = 1024 * 1024
BEST_EFFORT_SHARE = 0.75  # of the cap: past it best-effort writes are dropped
# How long a free-space reading is trusted. statvfs costs a system call; the traffic path submits a debug row
# per control message, and free space does not change meaningfully within a second at spool write rates.
FREE_SPACE_TTL = 1.0
OFFSET_WIDTH = 20  # the offset file is always rewritten in place at this width, so it never needs a new block
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class SpoolError(Exception):
    """The spool cannot take this write: the request is refused (`unavailable`) instead of acknowledged.

    The message is for the client: what failed, that nothing was stored, and what to do.
    """

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


class SpoolLocked(SpoolError):
    """Another process owns this spool (a running bridge, or `oscbridge spool retry-rejected`)."""

    def __init__(self, message: str, owner: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.owner = owner


@dataclass(frozen=True)
class SpoolUsage:
    """What the spool holds, read from its files without owning it (for `oscbridge doctor`)."""

    unapplied_bytes: int
    rejected: int


def usage(directory: Path) -> SpoolUsage:
    path = directory / "writes.jsonl"
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    offset = read_offset(directory / "writes.offset", size)
    return SpoolUsage(size - offset, count_lines(directory / "rejected.jsonl"))


def read_offset(path: Path, size: int) -> int:
    """The committed offset from the side file; 0 (replay everything, which is harmless) when it is unusable."""
    try:
        offset = int(path.read_bytes().strip() or 0)
    except (OSError, ValueError):
        return 0
    return offset if 0 <= offset <= size else 0


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return 0


def owner_of(directory: Path) -> dict[str, Any] | None:
    """Who holds the spool's lock, as the holder wrote it (pid, host, port), or None when unknown."""
    try:
        info = json.loads((directory / "lock").read_text() or "null")
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged process may still write on the filesystem holding `path` (or its nearest parent)."""
    while not path.exists() and path.parent != path:
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class TornWrite(OSError):
    """A failed append that could not be undone: the file ends in part of a record until it is truncated."""


def write_whole(fd: int, data: bytes, size_before: int) -> None:
    """Appends `data` to the O_APPEND file `fd` whose size is `size_before`, all of it or none of it.

    `os.write` may write part of the data when the disk fills up; the rest then fails. On any error the file is
    truncated back to `size_before` and the error raised; if even that fails, TornWrite is raised and the caller
    must truncate the file before appending again.
    """
    view = memoryview(data)
    try:
        while view:
            written = os.write(fd, view)
            if written <= 0:  # not expected from a regular file; never loop without progress
                raise OSError(errno.EIO, "the write made no progress")
            view = view[written:]
    except OSError as exc:
        if len(view) != len(data):
            try:
                os.ftruncate(fd, size_before)
            except OSError as undo:
                raise TornWrite(exc.errno, f"{exc.strerror}; undoing it failed too: {undo.strerror}") from exc
        raise


def human(size: int) -> str:
    """A byte count as people read it: '512 MiB', '1.5 GiB', '64 KiB', '101 bytes'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}".replace(".0 ", " ")
    return f"{size} bytes"


def _encode(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class Spool:
    def __init__(self, directory: Path, *, max_bytes: int, reserve_bytes: int,
                 owner: dict[str, Any] | None = None) -> None:
        self.directory = private_dir(directory)
        self.path = directory / "writes.jsonl"
        self._offset_path = directory / "writes.offset"
        self.rejected_path = directory / "rejected.jsonl"
        self.max_bytes = max_bytes
        self.reserve_bytes = reserve_bytes
        self._lock_fd = self._take_lock(owner)
        try:
            self._repair_tail()
            self._fd = private_opener(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            self._reader = open(self.path, "rb")  # noqa: SIM115 - held open for the daemon's life
            self._offset_fd = private_opener(self._offset_path, os.O_RDWR | os.O_CREAT)
        except BaseException:
            os.close(self._lock_fd)  # the files opened so far are closed with the process; the lock must go now
            raise
        tighten_file(self.rejected_path)
        self.size = os.fstat(self._fd).st_size
        self.offset = read_offset(self._offset_path, self.size)
        self.pending = sum(1 for _ in self._lines_from(self.offset))
        self.appended = 0  # sequence number of the last appended op in this process
        self.committed = 0  # sequence number of the last committed op in this process
        self.inherited = self.pending  # ops left by a previous run: they come first and are written first
        self.rejected_count = count_lines(self.rejected_path)
        self.dropped = 0  # best-effort writes not stored (cap, reserve, or a failed write)
        self.refused = 0  # writes refused with SpoolError
        self._torn = False  # a failed write could not be undone: repair before the next append
        self._synced = self.size  # bytes known to be on disk (what a previous run left was synced by its stop)
        self._truncations = 0  # a sync that ran across a truncation must not count the old size as synced
        self._free = 0
        self._free_read_at = -FREE_SPACE_TTL
        self._warn_refused = RateLimitedWarning(log, "spool_write_refused")
        self._warn_dropped = RateLimitedWarning(log, "best_effort_writes_dropped")
        self._warn_io = RateLimitedWarning(log, "spool_io_failed")

    # -- ownership ----------------------------------------------------------------------------------------------

    def _take_lock(self, owner: dict[str, Any] | None) -> int:
        lock_path = self.directory / "lock"
        fd = private_opener(lock_path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = owner_of(self.directory)
            who = f" (pid {holder.get('pid')})" if holder else ""
            raise SpoolLocked(f"the spool {self.directory} is in use by another oscbridge process{who}; one "
                              "process owns a spool at a time", holder) from None
        with contextlib.suppress(OSError):  # who we are, for `spool retry-rejected`; a full disk loses only this
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), **(owner or {})}).encode(), 0)
        return fd

    # -- files ----------------------------------------------------------------------------------------------------

    def _repair_tail(self) -> None:
        """Drops a half-written last line left by a crash in the middle of a write (it was never acknowledged)."""
        try:
            fh = open(self.path, "rb+")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return
        with fh:
            end = fh.seek(0, os.SEEK_END)
            if end == 0:
                return
            fh.seek(end - 1)
            if fh.read(1) == b"\n":
                return
            pos = end
            while pos > 0:  # the last newline, looked for from the end a block at a time
                start = max(0, pos - 65536)
                fh.seek(start)
                newline = fh.read(pos - start).rfind(b"\n")
                if newline >= 0:
                    pos = start + newline + 1
                    break
                pos = start
            fh.truncate(pos)
            log.warning("spool_tail_repaired", dropped_bytes=end - pos)

    def _lines_from(self, offset: int) -> Iterator[bytes]:
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            yield from fh

    @property
    def unapplied_bytes(self) -> int:
        """Bytes of writes accepted but not yet in PostgreSQL (what the cap limits)."""
        return self.size - self.offset

    def free_bytes(self) -> int:
        """Free space on the spool's filesystem, read at most once per FREE_SPACE_TTL seconds."""
        now = time.monotonic()
        if now - self._free_read_at >= FREE_SPACE_TTL:
            with contextlib.suppress(OSError):
                self._free = free_bytes(self.directory)
            self._free_read_at = now
        return self._free

    # -- appending --------------------------------------------------------------------------------------------------

    def append(self, op: dict[str, Any], *, best_effort: bool = False) -> int | None:
        """Writes one operation whole and hands it to the kernel; returns its sequence number.

        Raises SpoolError (nothing stored) when the spool is at its cap or the write fails. A best-effort write
        never raises: it is dropped and counted instead, and also past three quarters of the cap or when the
        disk is nearly full; it then returns None.
        """
        line = _encode(op)
        if best_effort and self._crowded(len(line)):
            self._drop("the spool is past three quarters of its cap (spool_max_bytes), or its disk has less than "
                       "disk_reserve_bytes free")
            return None
        try:
            if self.unapplied_bytes + len(line) > self.max_bytes:
                raise SpoolError(
                    f"cannot store this write: {human(self.unapplied_bytes)} of writes are waiting for the "
                    f"database and the spool's cap is {human(self.max_bytes)} (spool_max_bytes); nothing was "
                    "stored. The database is down or refusing writes (see `oscbridge doctor`); send it again once "
                    "it has caught up", errno.ENOSPC)
            self._append_whole(line)
        except SpoolError as exc:
            if best_effort:
                self._drop(str(exc))
                return None
            self.refused += 1
            self._warn_refused(reason=str(exc), total=self.refused)
            raise
        self.pending += 1
        self.appended += 1
        return self.appended

    def _crowded(self, size: int) -> bool:
        return (self.unapplied_bytes + size > self.max_bytes * BEST_EFFORT_SHARE
                or self.free_bytes() < self.reserve_bytes)

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        self._warn_dropped(reason=reason[:300], total=self.dropped, unapplied_bytes=self.unapplied_bytes)

    def _append_whole(self, data: bytes) -> None:
        """Appends whole lines or raises SpoolError, leaving the file as it was."""
        try:
            if self._torn:
                os.ftruncate(self._fd, self.size)
                self._torn = False
            write_whole(self._fd, data, self.size)
        except OSError as exc:
            self._free_read_at = -FREE_SPACE_TTL  # read the free space again next time
            if isinstance(exc, TornWrite):
                self._torn = True
                log.error("spool_write_not_undone", path=str(self.path), error=exc.strerror)
            raise SpoolError(self._refusal(exc), exc.errno) from exc
        self.size += len(data)

    def _refusal(self, exc: OSError) -> str:
        reason = exc.strerror or str(exc)
        if exc.errno in DISK_FULL:
            return (f"cannot store this write: the disk holding {self.directory} is full ({reason}); nothing was "
                    "stored. Free space on that disk, then send it again")
        return (f"cannot store this write: writing {self.path} failed ({reason}); nothing was stored. See the "
                "bridge's log, then send it again")

    # -- the writer's side -------------------------------------------------------------------------------------

    def read_batch(self, max_ops: int, max_bytes: int = 4 * MIB) -> tuple[list[dict[str, Any]], int]:
        """The next uncommitted operations and the offset just after them. A line that is not JSON (a disk
        error) comes back as a `_skip` operation carrying the line, for the writer to move to rejected.jsonl."""
        self._reader.seek(self.offset)
        ops: list[dict[str, Any]] = []
        end = self.offset
        size = 0
        while len(ops) < max_ops and size < max_bytes:
            line = self._reader.readline()
            if not line or not line.endswith(b"\n"):
                break
            end += len(line)
            size += len(line)
            try:
                ops.append(json.loads(line))
            except json.JSONDecodeError:
                log.error("spool_line_unreadable", offset=end - len(line))
                ops.append({"k": "_skip", "raw": line.decode("utf-8", "replace")})
        return ops, end

    @property
    def needs_sync(self) -> bool:
        """Lines not yet in PostgreSQL were appended since the last fsync."""
        return self.size > self._synced and self.size > self.offset

    def sync(self) -> None:
        """fsync for power loss; may run in a thread. A failure is logged: the lines are still in the kernel, and
        the writer goes on."""
        size, truncations = self.size, self._truncations
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._warn_io(operation="fsync", path=str(self.path), error=exc.strerror)
            return
        if truncations == self._truncations:
            self._synced = max(self._synced, size)

    def commit(self, end: int, count: int) -> None:
        """Marks everything before `end` as written to PostgreSQL; truncates the file once all is written."""
        self.offset = end
        self.pending -= count
        from_before = min(self.inherited, count)
        self.inherited -= from_before
        self.committed += count - from_before
        try:
            if self.offset >= self.size:
                os.ftruncate(self._fd, 0)
                self.size = self.offset = self.pending = self._synced = 0
                self._truncations += 1
                self._torn = False
            # In place at a fixed width: no new block is needed, so this works on a full disk. Should it fail,
            # the next start replays from an older offset, which is harmless.
            os.pwrite(self._offset_fd, f"{self.offset:0{OFFSET_WIDTH}d}\n".encode(), 0)
        except OSError as exc:
            self._warn_io(operation="commit", path=str(self._offset_path), error=exc.strerror)

    def reject(self, refused: list[tuple[dict[str, Any], str]]) -> None:
        """Keeps operations PostgreSQL refused for good, with the reason, instead of dropping them. All or none
        are written; raises SpoolError (the writer then retries the batch) when the disk is full."""
        data = b"".join(_encode({"error": error, "raw": op["raw"]} if op.get("k") == "_skip"
                                else {"error": error, "op": {"k": op.get("k"), "d": op.get("d")}})
                        for op, error in refused)
        try:
            fd = private_opener(self.rejected_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                write_whole(fd, data, os.fstat(fd).st_size)
            finally:
                os.close(fd)
        except OSError as exc:
            raise SpoolError(f"cannot keep refused writes in {self.rejected_path}: {exc.strerror}",
                             exc.errno) from exc
        self.rejected_count += len(refused)

    def requeue_rejected(self) -> int:
        """Moves the operations of rejected.jsonl back to the end of the spool, marked `"r": 1` (a retry) so the
        writer can count the ones refused again; entries that hold no operation (an unreadable line) stay.
        Returns how many were moved. All or nothing: raises SpoolError when the spool cannot take them."""
        try:
            with open(self.rejected_path, "rb") as fh:
                lines = fh.readlines()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise SpoolError(f"cannot read {self.rejected_path}: {exc.strerror}", exc.errno) from exc
        ops: list[dict[str, Any]] = []
        kept: list[bytes] = []
        for line in lines:
            try:
                entry = json.loads(line)
                op = entry["op"]
                ops.append({"k": str(op["k"]), "d": op["d"], "r": 1})
            except (ValueError, KeyError, TypeError):
                kept.append(line if line.endswith(b"\n") else line + b"\n")
        if not ops:
            return 0
        data = b"".join(_encode(op) for op in ops)
        if self.unapplied_bytes + len(data) > self.max_bytes:
            raise SpoolError(f"cannot move {len(ops)} rejected writes back: the spool would pass its cap of "
                             f"{human(self.max_bytes)} (spool_max_bytes)", errno.ENOSPC)
        before = self.size
        self._append_whole(data)
        try:
            self._replace_rejected(kept)
        except OSError as exc:
            os.ftruncate(self._fd, before)  # nothing moved: the entries stay where they were
            self.size = before
            raise SpoolError(f"cannot rewrite {self.rejected_path}: {exc.strerror}", exc.errno) from exc
        self.pending += len(ops)
        self.appended += len(ops)
        self.rejected_count = len(kept)
        return len(ops)

    def _replace_rejected(self, kept: list[bytes]) -> None:
        if not kept:
            os.truncate(self.rejected_path, 0)  # needs no space, unlike a new file
            return
        write_private_file(self.rejected_path, b"".join(kept))  # whole or not at all, no temporary file left

    def close(self) -> None:
        self._reader.close()
        os.close(self._fd)
        os.close(self._offset_fd)
        os.close(self._lock_fd)  # releases the lock
