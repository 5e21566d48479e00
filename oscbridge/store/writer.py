"""The one writer task: drains the spool into PostgreSQL in batches, one transaction per batch.

Request handlers call `submit` with a typed write (`store/writes.py`), which only appends it to the spool and
wakes this task, so the receive path never waits on the database. Each write type has an applier (`OpKind`) that
writes a run of consecutive writes of that type (COPY through a staging table for append-only rows, plain
statements for the rest). Writes keep their order, which the foreign keys rely on (a project before its session
before its rows). The writer is complete when built: every write type the daemon makes is given to it then, so a
spool left by the previous run (in any known format) is applied before anything new.

Failures are sorted by `store.db.classify`. When the server is unreachable, or answers but cannot take writes
now (a full disk, a shutdown, a deadlock), the batch stays in the spool and is retried with capped backoff, with
a rate-limited warning rather than a traceback per attempt. When PostgreSQL refuses an operation for good (a
constraint, a bad value) the batch is retried one operation at a time and only the refused one is moved to
`rejected.jsonl`, with the reason logged; `retry_rejected` moves such operations back after a fix. Before a write
is given up, `repair` may make what it refers to (a project or session row whose creation was refused): an
acknowledged write is not dropped because another write was.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import asyncpg

from oscbridge.backoff import Backoff
from oscbridge.clock import SYSTEM_CLOCK, Clock
from oscbridge.logs import RateLimitedWarning, get_logger
from oscbridge.store.db import Database, classify
from oscbridge.store.spool import Spool, SpoolError
from oscbridge.store.writes import UnreadableWrite, WriteOp, decode, encode
from oscbridge.tasks import cancel_and_wait, thread_to_the_end

log = get_logger("oscbridge.writer")

SYNC_INTERVAL = 1.0  # seconds between fsyncs of spool lines not yet in PostgreSQL: the power-loss window
BACKOFF_FIRST, BACKOFF_CAP = 0.25, 5.0  # seconds between tries of a batch the database cannot take now

W = TypeVar("W", bound=WriteOp)


@dataclass(frozen=True)
class OpKind(Generic[W]):
    """A write type and how to apply a run of them inside the batch's transaction."""

    type: type[W]
    apply: Callable[[asyncpg.Connection, list[W]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Entry:
    """One spool line as read back: the write (None when it cannot be read), and the raw entry for rejected.jsonl."""

    op: WriteOp | None
    raw: dict[str, Any]
    problem: str = ""


def ts_to_dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


Repair = Callable[[asyncpg.Connection, WriteOp, BaseException], Awaitable[bool]]
"""Given a write PostgreSQL refused and why, makes what it was missing (a parent row); True to try it again."""


class Writer:
    """`bridge_id` is set as the transaction setting `oscbridge.bridge_id` in every transaction, so the rows this
    bridge writes carry it (schema migration 0003); `repair` is asked about each refused write before it is given
    up (core_ops.repair_parents).

    A batch takes up to `batch_size` writes (and 4 MiB) of what waits, in one transaction: with nothing queued that
    is one write, under load many. 500 rather than 50: an orchestrator logging 2,000 debug rows a second beside 128
    plugins (bench_studio) was stored at 1,708 rows/s with 50, its backlog growing (ack to commit p50 1.2 s), and
    kept up with 500 (1,997 rows/s, p50 70 ms)."""

    def __init__(self, db: Database, spool: Spool, kinds: Sequence[OpKind[Any]], batch_size: int = 500,
                 clock: Clock = SYSTEM_CLOCK, *, bridge_id: str | None = None, repair: Repair | None = None) -> None:
        self.db = db
        self.spool = spool
        self.kinds: dict[str, OpKind[Any]] = {k.type.KIND: k for k in kinds}
        self.batch_size = batch_size
        self._clock = clock
        self.bridge_id = bridge_id
        self._repair = repair
        self.repaired = 0
        self.backoff = Backoff(BACKOFF_FIRST, BACKOFF_CAP)
        self._wake = asyncio.Event()
        self._committed = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._syncer: asyncio.Task[None] | None = None
        self.batches = 0
        self.rejected = 0
        self.rejected_again = 0  # of the operations moved back by retry_rejected
        self._warn_temporary = RateLimitedWarning(log, "database_cannot_take_writes_now")
        self._warn_spool = RateLimitedWarning(log, "writer_cannot_keep_rejected")
        self._warn_rejected = RateLimitedWarning(log, "write_rejected")
        self._warn_repaired = RateLimitedWarning(log, "write_parent_repaired")

    # -- producer side (receive path) -------------------------------------------------------------------------

    def submit(self, op: WriteOp) -> int:
        """Makes the write durable locally and schedules it; returns its sequence number. Raises SpoolError
        (nothing stored; the client is told `unavailable`)."""
        seq = self.spool.append(self._entry(op))
        assert seq is not None  # only a best-effort append returns None
        self.wake()
        return seq

    def submit_best_effort(self, op: WriteOp) -> int | None:
        """Like `submit`, for writes that may be lost (a debug row of plugin traffic): never raises; when the spool
        is crowded (three quarters of its cap, or the disk nearly full) or cannot be written, the write is dropped,
        counted in `spool.dropped`, and None is returned."""
        seq = self.spool.append(self._entry(op), best_effort=True)
        if seq is not None:
            self.wake()
        return seq

    def _entry(self, op: WriteOp) -> dict[str, Any]:
        if op.KIND not in self.kinds:
            raise KeyError(f"no applier for {op.KIND} writes")
        return encode(op)

    def stats(self) -> dict[str, int]:
        return {"writer.batches": self.batches, "writer.rejected": self.rejected, "writer.repaired": self.repaired,
                "writer.queued": self.queued,
                "writer.spooled": self.spooled,
                "spool.unapplied_bytes": self.spool.unapplied_bytes, "spool.dropped": self.spool.dropped,
                "spool.refused": self.spool.refused}

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
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="oscbridge-writer")
        self._syncer = loop.create_task(self._sync_every(SYNC_INTERVAL), name="oscbridge-spool-sync")

    async def stop(self, timeout: float) -> bool:
        """Writes what is queued (up to `timeout` seconds), then stops. True if nothing was left behind."""
        drained = await self.flush(timeout) if self.spool.pending else True
        self._stopping = True
        self._wake.set()
        await cancel_and_wait(self._task, self._syncer)
        if self.spool.needs_sync:
            self.spool.sync()  # what stays behind is on disk for the next start
        if not drained:
            log.warning("writer_stopped_with_pending", pending=self.spool.pending, spool=str(self.spool.path))
        return drained

    async def _sync_every(self, interval: float) -> None:
        """fsyncs the spool in a thread while it holds lines that PostgreSQL does not have (see spool.py)."""
        while True:
            await asyncio.sleep(interval)
            if self.spool.needs_sync:
                await thread_to_the_end(self.spool.sync)  # never still running when stop() closes the spool

    async def _run(self) -> None:
        while not self._stopping:
            if not self.spool.pending:
                self._wake.clear()
                if not self.spool.pending:
                    await self._wake.wait()
                continue
            raw, end = self.spool.read_batch(self.batch_size)
            if not raw:
                await self._clock.sleep(0.05)
                continue
            entries = [self._read(entry) for entry in raw]
            try:
                refused = await self._write_batch(entries)
                if refused:
                    self._reject(refused)
            except Exception as exc:
                self._note_failure(exc, len(entries))
                await self._sleep(self.backoff.next())
                continue
            self.backoff.reset()
            self.spool.commit(end, len(entries))
            self.batches += 1
            self._committed.set()
            self._committed = asyncio.Event()

    def _read(self, raw: dict[str, Any]) -> Entry:
        if raw.get("k") == "_skip":
            return Entry(None, raw, "the spool line is not JSON")
        try:
            op = decode(raw)
        except UnreadableWrite as exc:
            return Entry(None, raw, str(exc))
        if op.KIND not in self.kinds:
            return Entry(None, raw, f"no applier for {op.KIND} writes")
        return Entry(op, raw)

    def _note_failure(self, exc: Exception, ops: int) -> None:
        """Says why a batch stays in the spool: once per cause and interval, with a traceback only for a bug."""
        kind = classify(exc)
        error = f"{type(exc).__name__}: {exc}"[:300]
        if isinstance(exc, SpoolError):
            self._warn_spool(error=str(exc), ops=ops)
        elif kind == "connection":
            self.db.mark_down(exc)
        elif kind == "temporary":
            self._warn_temporary(sqlstate=getattr(exc, "sqlstate", None), error=error, ops=ops,
                                 hint="the writes stay in the spool and are retried")
        else:
            # The writer must outlive anything unforeseen (a driver state, a bug in an applier): the batch
            # stays in the spool and is tried again after the backoff.
            log.exception("writer_batch_failed", error=error, ops=ops)

    async def _sleep(self, seconds: float) -> None:
        """Waits `seconds`, or less when something wakes the writer (the database came back)."""
        self._wake.clear()
        await self._clock.wait(self._wake, seconds)

    async def _write_batch(self, entries: list[Entry]) -> list[tuple[Entry, str]]:
        """Writes a batch in one transaction; returns the writes PostgreSQL refused for good (and the lines that
        could not be read), with the reason. Raises what is not the writes' fault (the batch is then retried)."""
        refused = [(entry, entry.problem) for entry in entries if entry.op is None]
        ops = [entry for entry in entries if entry.op is not None]
        async with self.db.acquire() as conn:
            try:
                async with conn.transaction():
                    await self._as_this_bridge(conn)
                    for kind, run in _runs(ops):
                        await self.kinds[kind].apply(conn, run)
                return refused
            except Exception as exc:
                if classify(exc) != "refused":
                    raise
                if len(ops) > 1:
                    log.warning("writer_batch_refused", error=str(exc)[:300], ops=len(ops))
            # Isolate the refused write(s): one transaction each, and a repair of what a refused one lacked.
            for entry in ops:
                problem = await self._write_one(conn, entry)
                if problem is not None:
                    refused.append((entry, problem))
        return refused

    async def _write_one(self, conn: asyncpg.Connection, entry: Entry) -> str | None:
        """Applies one write in its own transaction; when it is refused and `repair` makes what it lacked, applies
        it once more, in the repair's transaction (a write refused even then leaves no repaired parent behind, such
        as a "Recovered project" every bridge would list). Returns why it was refused for good, or None."""
        op = entry.op
        assert op is not None
        try:
            async with conn.transaction():
                await self._as_this_bridge(conn)
                await self.kinds[op.KIND].apply(conn, [op])
            return None
        except Exception as exc:
            if classify(exc) != "refused":
                raise
            if self._repair is None:
                return _reason(exc)
            refused = exc
        try:
            async with conn.transaction():
                await self._as_this_bridge(conn)
                if not await self._repair(conn, op, refused):
                    return _reason(refused)
                await self.kinds[op.KIND].apply(conn, [op])
        except Exception as exc:
            if classify(exc) != "refused":
                raise
            return _reason(exc)
        self.repaired += 1
        self._warn_repaired(kind=op.KIND, id=getattr(op, "id", None), error=str(refused)[:300],
                            hint="what the write refers to was missing and was made; the write is applied")
        return None

    async def _as_this_bridge(self, conn: asyncpg.Connection) -> None:
        """Marks the transaction as this bridge's (rows it inserts take the id from their column default)."""
        if self.bridge_id is not None:
            await conn.execute("SELECT set_config('oscbridge.bridge_id', $1, true)", self.bridge_id)

    def _reject(self, refused: list[tuple[Entry, str]]) -> None:
        """Moves refused writes to rejected.jsonl (SpoolError when the disk is full: the batch is retried)."""
        self.spool.reject([(entry.raw, error) for entry, error in refused])
        self.rejected += len(refused)
        self.rejected_again += sum(1 for entry, _ in refused if entry.raw.get("r"))
        for entry, error in refused:
            op = entry.op
            self._warn_rejected(kind=op.KIND if op is not None else entry.raw.get("k"),
                                id=getattr(op, "id", None), error=error, kept_in=str(self.spool.rejected_path),
                                total=self.rejected)


def _reason(exc: BaseException) -> str:
    state = getattr(exc, "sqlstate", None)
    return (f"{type(exc).__name__}" + (f" ({state})" if state else "") + f": {exc}")[:500]


@dataclass(frozen=True)
class RetryResult:
    """What `retry_rejected` did: operations moved back from rejected.jsonl, and of those, how many are now in
    the database, were refused again (back in rejected.jsonl), or are still waiting in the spool."""

    moved: int
    applied: int
    refused_again: int
    waiting: int


async def retry_rejected(writer: Writer, timeout: float) -> RetryResult:
    """Moves the operations of rejected.jsonl back into the spool and waits (up to `timeout` s) until the writer
    has applied them, or refused them again. Raises SpoolError when the spool cannot take them (nothing moved).

    Callers serialise calls (one retry at a time), so `rejected_again` counts only this retry's refusals."""
    before = writer.rejected_again
    moved = writer.spool.requeue_rejected()
    if not moved:
        return RetryResult(0, 0, 0, 0)
    writer.wake()
    if not await writer.wait_committed(writer.spool.appended, timeout):
        return RetryResult(moved, 0, 0, moved)
    refused = writer.rejected_again - before
    return RetryResult(moved, moved - refused, refused, 0)


def _runs(entries: list[Entry]) -> list[tuple[str, list[WriteOp]]]:
    """Groups consecutive writes of the same type, keeping order."""
    runs: list[tuple[str, list[WriteOp]]] = []
    for entry in entries:
        op = entry.op
        assert op is not None
        if runs and runs[-1][0] == op.KIND:
            runs[-1][1].append(op)
        else:
            runs.append((op.KIND, [op]))
    return runs


SMALL_RUN = 8
"""Rows below which a run is inserted with one pipelined INSERT instead of COPY. A run of one debug row cost 4-5
round trips through the staging table (create if missing, COPY, insert, truncate) against 2 for the INSERT; mixed
traffic (a mapping change, a message, a debug row in turn) is mostly runs of one: 1,500 such writes drained in
2.3 s before and 0.4-0.5 s after on a direct connection, in 4.3 s before and 1.8-2.0 s after through PgBouncer."""


async def copy_idempotent(conn: asyncpg.Connection, table: str, columns: Sequence[str],
                          records: list[tuple[Any, ...]]) -> None:
    """Appends rows, skipping ids already present (a spool replay after a crash must never duplicate a row).

    Large runs go through binary COPY into a temporary staging table: COPY straight into the table would fail a
    whole batch on one duplicate id after a replay, and the staging table keeps COPY's speed and makes the insert
    idempotent. Runs shorter than `SMALL_RUN` take a pipelined `INSERT ... ON CONFLICT DO NOTHING`. `table` and
    `columns` come from code, never from input.

    The staging table lives as long as the server session, which through a transaction pooler outlives the bridge
    (docs/studio.md): its name carries a checksum of `columns`, so that a bridge that stages a column more never
    meets a table an older bridge made without it.
    """
    cols = ", ".join(columns)
    if len(records) < SMALL_RUN:
        values = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
        await conn.executemany(f"INSERT INTO {table} ({cols}) VALUES ({values}) ON CONFLICT (id) DO NOTHING", records)
        return
    stage = f"_stage_{table}_{zlib.crc32(','.join(columns).encode()):08x}"
    create = f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    await conn.execute(create)
    await conn.copy_records_to_table(stage, records=records, columns=list(columns))
    insert = f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT (id) DO NOTHING"
    await conn.execute(insert)
    await conn.execute(f"TRUNCATE {stage}")
