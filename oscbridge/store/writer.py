"""The one writer task: drains the spool into PostgreSQL in batches, one transaction per batch.

Request handlers call `submit`, which only appends to the spool and wakes this task, so the receive path never
waits on the database. Each operation kind registers an applier that writes a run of consecutive operations of
that kind (COPY through a staging table for append-only rows, plain statements for the rest). Operations keep
their order, which the foreign keys rely on (a project before its session before its rows).

Failures: when the server is unreachable the batch stays in the spool and is retried with capped backoff; when
PostgreSQL refuses an operation for good (a constraint, a bad value) the batch is retried one operation at a
time and only the refused one is moved to `rejected.jsonl`, with the reason logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from oscbridge.logs import get_logger
from oscbridge.store.db import CONNECTION_ERRORS, Database
from oscbridge.store.spool import Spool

log = get_logger("oscbridge.writer")

Applier = Callable[[asyncpg.Connection, list[dict[str, Any]]], Awaitable[None]]


@dataclass(frozen=True)
class OpKind:
    """A kind of write: its name in the spool and how to apply a run of them inside a transaction."""

    name: str
    apply: Applier


def now_ts() -> float:
    return time.time()


def ts_to_dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Writer:
    def __init__(self, db: Database, spool: Spool, kinds: Sequence[OpKind], batch_size: int = 500) -> None:
        self.db = db
        self.spool = spool
        self.kinds = {k.name: k for k in kinds}
        self.batch_size = batch_size
        self._wake = asyncio.Event()
        self._committed = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.rejected = 0
        self.failures_in_a_row = 0

    def register(self, *kinds: OpKind) -> None:
        for kind in kinds:
            self.kinds[kind.name] = kind

    # -- producer side (receive path) -------------------------------------------------------------------------

    def submit(self, kind: str, data: dict[str, Any]) -> int:
        """Makes the write durable locally and schedules it; returns its sequence number. Raises SpoolError."""
        if kind not in self.kinds:
            raise KeyError(f"unknown write kind {kind}")
        seq = self.spool.append({"k": kind, "d": data})
        self.wake()
        return seq

    def wake(self) -> None:
        """Makes the writer look at the spool now (the database came back)."""
        self._wake.set()

    @property
    def queued(self) -> int:
        """Accepted writes waiting for the writer while the database is up."""
        return self.spool.pending if self.db.up else 0

    @property
    def spooled(self) -> int:
        """Accepted writes held in the spool because the database is unreachable."""
        return 0 if self.db.up else self.spool.pending

    async def wait_committed(self, seq: int, timeout: float) -> bool:
        """Waits until the write with sequence `seq` and all before it, including those a previous run left in
        the spool, are in PostgreSQL."""
        deadline = time.monotonic() + timeout
        while self.spool.committed < seq or self.spool.inherited:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._wake.set()
            try:
                await asyncio.wait_for(self._committed.wait(), remaining)
            except TimeoutError:
                return self.spool.committed >= seq and not self.spool.inherited
        return True

    async def flush(self, timeout: float) -> bool:
        """Waits until every accepted write is committed (read-your-writes for database queries)."""
        return await self.wait_committed(self.spool.appended, timeout)

    # -- the task ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="oscbridge-writer")

    async def stop(self, timeout: float) -> bool:
        """Writes what is queued (up to `timeout` seconds), then stops. True if nothing was left behind."""
        drained = await self.flush(timeout) if self.spool.pending else True
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not drained:
            log.warning("writer_stopped_with_pending", pending=self.spool.pending, spool=str(self.spool.path))
        return drained

    async def _run(self) -> None:
        backoff = 0.25
        while not self._stopping:
            if not self.spool.pending:
                self._wake.clear()
                if not self.spool.pending:
                    await self._wake.wait()
                continue
            ops, end = self.spool.read_batch(self.batch_size)
            if not ops:
                await asyncio.sleep(0.05)
                continue
            try:
                await self._write_batch(ops)
            except Exception as exc:
                if isinstance(exc, CONNECTION_ERRORS):
                    self.db.mark_down(exc)
                else:
                    # The writer must outlive anything unforeseen (a driver state, a bug in an applier): the batch
                    # stays in the spool and is tried again after the backoff.
                    log.exception("writer_batch_failed", error=f"{type(exc).__name__}: {exc}"[:300], ops=len(ops))
                self.failures_in_a_row += 1
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.25
            self.failures_in_a_row = 0
            self.spool.sync()
            self.spool.commit(end, len(ops))
            self.batches += 1
            self._committed.set()
            self._committed = asyncio.Event()

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _write_batch(self, ops: list[dict[str, Any]]) -> None:
        async with self.db.acquire() as conn:
            try:
                async with conn.transaction():
                    for kind, run in _runs(ops):
                        await self.kinds[kind].apply(conn, run)
                return
            except CONNECTION_ERRORS:
                raise
            except (asyncpg.PostgresError, ValueError, KeyError, TypeError) as exc:
                if len(ops) == 1:
                    self._reject(ops[0], exc)
                    return
                log.warning("writer_batch_refused", error=str(exc)[:300], ops=len(ops))
            # Isolate the refused operation(s): one transaction each.
            for op in ops:
                if op.get("k") == "_skip":
                    continue
                try:
                    async with conn.transaction():
                        await self.kinds[op["k"]].apply(conn, [op["d"]])
                except CONNECTION_ERRORS:
                    raise
                except (asyncpg.PostgresError, ValueError, KeyError, TypeError) as exc:
                    self._reject(op, exc)

    def _reject(self, op: dict[str, Any], exc: BaseException) -> None:
        self.rejected += 1
        error = f"{type(exc).__name__}: {exc}"[:500]
        log.error("write_rejected", kind=op.get("k"), id=(op.get("d") or {}).get("id"), error=error,
                  kept_in=str(self.spool.rejected_path))
        self.spool.reject(op, error)


def _runs(ops: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Groups consecutive operations of the same kind, keeping order."""
    runs: list[tuple[str, list[dict[str, Any]]]] = []
    for op in ops:
        kind = op["k"]
        if kind == "_skip":
            continue
        if runs and runs[-1][0] == kind:
            runs[-1][1].append(op["d"])
        else:
            runs.append((kind, [op["d"]]))
    return runs


async def copy_idempotent(conn: asyncpg.Connection, table: str, columns: Sequence[str],
                          records: list[tuple[Any, ...]]) -> None:
    """Appends rows with binary COPY through a temporary staging table, skipping ids already present.

    COPY straight into the table would fail a whole batch on one duplicate id after a replay; the staging table
    keeps COPY's speed and makes the insert idempotent. `table` and `columns` come from code, never from input.
    """
    stage = f"_stage_{table}"
    cols = ", ".join(columns)
    create = f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    await conn.execute(create)
    await conn.copy_records_to_table(stage, records=records, columns=list(columns))
    insert = f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT (id) DO NOTHING"
    await conn.execute(insert)
    await conn.execute(f"TRUNCATE {stage}")
