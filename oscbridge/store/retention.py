"""Retention: Mission Control debug traffic older than `debug_retention_days` is removed, in the background.

Debug rows are the bridge's own record of control traffic: useful for weeks, noise after months, and the one table
that grows without a user doing anything (a 128-track session writes thousands an hour). Conversations, messages,
snapshots and track history are never removed automatically.

Removal runs every `retention_interval` seconds, oldest rows first, in batches of `RETENTION_BATCH` rows, each batch
its own short statement through the `created_at` index (migration 0002), with a pause between batches. A batch locks
only the old rows it deletes, which nobody writes any more, so the writer's inserts never wait on it; the pause
leaves the database to the writer and the searches (bench/bench_retention.py measures the effect on write latency).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from oscbridge.clock import Clock
from oscbridge.logs import RateLimitedWarning, get_logger
from oscbridge.store.db import CONNECTION_ERRORS, Database
from oscbridge.tasks import cancel_and_wait

log = get_logger("oscbridge.retention")

RETENTION_BATCH = 5000
BATCH_PAUSE = 0.2  # seconds between batches
_DELETE = """
DELETE FROM mission_control_debug
WHERE id IN (SELECT id FROM mission_control_debug WHERE created_at < $1 ORDER BY created_at LIMIT $2)
"""


class Retention:
    def __init__(self, db: Database, days: float, interval: float, clock: Clock) -> None:
        self._db = db
        self._days = days
        self._interval = interval
        self._clock = clock
        self.deleted = 0
        self.runs = 0
        self.failures = 0
        self.batches = 0  # DELETE statements run
        self._task: asyncio.Task[None] | None = None
        self._warn = RateLimitedWarning(log, "retention_failed", interval=600.0)

    def start(self) -> None:
        if self._days > 0:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="oscbridge-retention")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            try:
                await self.remove_old()
            except CONNECTION_ERRORS as exc:  # the database is down: next time
                self._warn(error=str(exc)[:200])
            except Exception as exc:  # refused (a revoked DELETE, a changed schema): next time, never silently ended
                self.failures += 1
                self._warn(error=f"{type(exc).__name__}: {exc}"[:300],
                           hint="debug rows are kept meanwhile; removal is tried again at the next interval")
            await self._clock.sleep(self._interval)

    async def remove_old(self) -> int:
        """Removes debug rows older than the retention, batch by batch; returns how many."""
        cutoff = datetime.fromtimestamp(self._clock.time(), UTC) - timedelta(days=self._days)
        removed = 0
        while True:
            async with self._db.acquire() as conn:
                result = await conn.execute(_DELETE, cutoff, RETENTION_BATCH)
            count = int(result.split()[-1])
            self.batches += 1
            removed += count
            self.deleted += count
            if count < RETENTION_BATCH:
                break
            await self._clock.sleep(BATCH_PAUSE)
        self.runs += 1
        if removed:
            log.info("debug_rows_removed", rows=removed, older_than=cutoff.isoformat())
        return removed

    def stats(self) -> dict[str, int]:
        return {"retention.deleted": self.deleted, "retention.runs": self.runs, "retention.failures": self.failures}
