"""The local append-only spool: every acknowledged write is here before its "ok" goes out.

One JSON line per operation. The writer reads from a committed offset, applies batches to PostgreSQL, and
advances the offset (kept in a small side file); when everything is committed the file is truncated. A process
crash loses nothing that was acknowledged: each line is handed to the kernel (`flush`) before the reply is
sent, and fsync runs once per writer batch for power loss. Replaying lines that were already committed is
harmless because every operation is idempotent (ids made by the bridge).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from oscbridge.logs import get_logger

log = get_logger("oscbridge.spool")


class SpoolError(OSError):
    """The spool cannot be written: the request is refused instead of acknowledged."""


class Spool:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "writes.jsonl"
        self._offset_path = directory / "writes.offset"
        self.rejected_path = directory / "rejected.jsonl"
        self._repair_tail()
        self._writer = open(self.path, "ab")  # noqa: SIM115 - held open for the daemon's life
        self._reader = open(self.path, "rb")  # noqa: SIM115
        self.offset = self._read_offset()
        self.pending = sum(1 for _ in self._lines_from(self.offset))
        self.appended = 0  # sequence number of the last appended op in this process
        self.committed = 0  # sequence number of the last committed op in this process
        self.inherited = self.pending  # ops left by a previous run: they come first and are written first

    def _repair_tail(self) -> None:
        """Drops a half-written last line left by a crash in the middle of a write (it was never acknowledged)."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as fh:
            data = fh.read()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                fh.truncate(cut)
                log.warning("spool_tail_repaired", dropped_bytes=len(data) - cut)

    def _read_offset(self) -> int:
        try:
            offset = int(self._offset_path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0
        return offset if 0 <= offset <= self.path.stat().st_size else 0

    def _lines_from(self, offset: int) -> Iterator[bytes]:
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            yield from fh

    def append(self, op: dict[str, Any]) -> int:
        """Writes one operation and hands it to the kernel; returns its sequence number."""
        line = json.dumps(op, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        try:
            self._writer.write(line)
            self._writer.flush()
        except OSError as exc:
            raise SpoolError(exc.errno, f"cannot write the spool {self.path}: {exc.strerror}") from exc
        self.pending += 1
        self.appended += 1
        return self.appended

    def read_batch(self, max_ops: int, max_bytes: int = 4 * 1024 * 1024) -> tuple[list[dict[str, Any]], int]:
        """The next uncommitted operations and the offset just after them."""
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
                self._reject_raw(line)
                ops.append({"k": "_skip"})
        return ops, end

    def sync(self) -> None:
        os.fsync(self._writer.fileno())

    def commit(self, end: int, count: int) -> None:
        """Marks everything before `end` as written to PostgreSQL; truncates the file once all is written."""
        self.offset = end
        self.pending -= count
        from_before = min(self.inherited, count)
        self.inherited -= from_before
        self.committed += count - from_before
        if self.offset >= self.path.stat().st_size:
            self._writer.truncate(0)
            self.offset = 0
            self.pending = 0
        self._offset_path.write_text(str(self.offset))

    def reject(self, op: dict[str, Any], error: str) -> None:
        """Keeps an operation PostgreSQL refused for good, with the reason, instead of dropping it."""
        with open(self.rejected_path, "ab") as fh:
            fh.write(json.dumps({"error": error, "op": op}, ensure_ascii=False).encode() + b"\n")

    def _reject_raw(self, line: bytes) -> None:
        with open(self.rejected_path, "ab") as fh:
            fh.write(line)

    def close(self) -> None:
        self._writer.close()
        self._reader.close()
