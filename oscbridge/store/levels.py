"""When free disk space and the spool's backlog are worth a warning or a failure.

One rule for `oscbridge doctor` (disk and spool checks) and /bridge/health (disk and writes rows), so the two
never disagree about the same disk and the same spool. The levels follow what the spool does: under
`disk_reserve_bytes` free, or past BEST_EFFORT_SHARE of `spool_max_bytes`, it drops debug rows of plugin traffic;
at the cap (or a full disk) it refuses writes.
"""

from __future__ import annotations

from typing import Literal

from oscbridge.store.spool import BEST_EFFORT_SHARE, MIB

Level = Literal["ok", "warn", "fail"]

DISK_WARN_BYTES = 1024 * MIB  # free space under this is worth a warning, well before the reserve is reached


def disk_level(free: int, reserve: int) -> Level:
    """fail under the reserve (debug rows are dropped, writes refused once full); warn under DISK_WARN_BYTES."""
    if free < reserve:
        return "fail"
    return "warn" if free < DISK_WARN_BYTES else "ok"


def backlog_level(unapplied: int, cap: int) -> Level:
    """fail at the cap (writes are refused); warn past BEST_EFFORT_SHARE of it (debug rows are dropped)."""
    if unapplied >= cap:
        return "fail"
    return "warn" if unapplied >= cap * BEST_EFFORT_SHARE else "ok"


def spool_level(unapplied: int, cap: int, rejected: int) -> Level:
    """The backlog's level, at least warn while writes PostgreSQL refused wait in rejected.jsonl for a person."""
    level = backlog_level(unapplied, cap)
    return "warn" if level == "ok" and rejected else level
