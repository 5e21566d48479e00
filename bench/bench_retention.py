"""What removing old Mission Control debug rows costs the live bridge: write, commit and read latency while a
retention pass runs (oscbridge/store/retention.py).

    .venv/bin/python -m bench.bench_retention [--old 1000000] [--recent 200000] [--rate 200] [--seconds 30]

(from the repository root, after `pip install -e '.[bench]'`; with the defaults, 4.5 to 7.5 minutes on a shared 2-core
VM, 2 to 4.5 of them loading the table)

What it does (numbers only; not a test):

1. Starts an embedded PostgreSQL in a temporary directory, with `track_commit_timestamp` on (so that the commit
   time of every row can be read back afterwards; it costs a few bytes per transaction), and applies the schema.
2. COPYs `--old` debug rows created between `debug_retention_days` + 1 and 3 x `debug_retention_days` days ago
   (31..90 with the default 30) and `--recent` rows of the last `debug_retention_days` days, oldest first, into the
   table with all its indexes, as months of sessions would have written them: plugin traffic built the way
   oscbridge/plugins/traffic.py builds it (query_rms, rms_response, set_parameter, port confirmations, chat) and
   orchestrator commands with their responses, one session a day across three projects. Then VACUUM ANALYZE, as
   autovacuum would have done. Prints the load time and the table's size.
3. Runs a bridge in-process (on uvloop, like `oscbridge serve`; its own retention off; a fake Ollama for the
   embedding worker's health checks) and, from a client in a process of its own, drives an open-loop load over UDP
   as the orchestrator would: `/bridge/debug/log` writes at `--rate` per second, and at `--read-rate` per second
   each of the `--reads`: `/bridge/message/recent 10` and `/bridge/debug/recent 10` (the newest debug rows of the
   current project: the table being purged). Measured per write: the round trip until its acknowledgement
   ("ack"), and the time from sending it until its row was committed in PostgreSQL ("commit":
   `pg_xact_commit_timestamp` of the row minus the client's send time, both on this machine's clock). Per read:
   the round trip until its last row arrived (a read first waits for the writer to commit what was accepted
   before it, then queries). At the end it checks that every acknowledged row is in the table.
4. Three phases under the same load: (a) `--seconds` without retention, (b) while one `Retention.remove_old()`
   pass, run in the bridge's event loop on the bridge's connection pool, removes the old rows (the phase lasts
   exactly as long as the pass), (c) `--seconds` after it. Prints p50/p99/max per phase, requests left
   unanswered, the writer's transactions, the rows deleted, the duration and rows/s of the pass, the time spent in
   its DELETE statements (the duration less its pauses), and the table's size and dead rows after each phase
   (PostgreSQL does not give the space back to the OS; autovacuum makes it reusable).

Everything printed is measured on the machine it runs on; the load average and core count are printed alongside.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import selectors
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import percentile, print_table, run_on_daemon_loop
from oscbridge.app import Bridge
from oscbridge.client import BridgeClient, BridgeRequestError
from oscbridge.config import Settings
from oscbridge.logs import configure_logging
from oscbridge.osc.codec import Message, decode_packet, encode_message, typed_args
from oscbridge.plugins.traffic import content_line
from oscbridge.projects import project_id_for
from oscbridge.protocol import CHAT_REQUEST, PORT_CONFIRMED, QUERY_RMS, RMS_RESPONSE, SET_PARAMETER
from oscbridge.store.core_ops import DEBUG_COLUMNS
from oscbridge.store.embedded import EmbeddedPostgres
from oscbridge.store.retention import BATCH_PAUSE, RETENTION_BATCH, Retention
from oscbridge.store.schema import apply_schema
from oscbridge.store.spool import human
from oscbridge.tools.fake_ollama import FakeOllama
from oscbridge.tools.ports import LOOPBACK, free_port

CHUNK = 10_000  # rows per COPY
PROJECTS = ("Album Song 1", "Album Song 2", "Album Song 3")
TRACKS = 16
BRIDGE_END = f"{LOOPBACK}:8999"
WRITE = "/bridge/debug/log"
# The reads `--reads` chooses from: the newest 10 messages, and the newest 10 debug rows (the table being purged).
READS = {"messages": ("/bridge/message/recent", [10]), "debug": ("/bridge/debug/recent", [10])}
WARMUP = 3.0  # seconds of load before the first phase, not measured
GRACE = 3.0  # seconds a phase waits for replies to its last requests
TABLE = "mission_control_debug"


# -- the history ------------------------------------------------------------------------------------------------

def session_days(days: float) -> int:
    """Days of history (one session each): the oldest rows are 3 x the retention old."""
    return int(3 * days) + 1


class History:
    """Debug rows as the bridge writes them, one session a day, in `DEBUG_COLUMNS` order."""

    def __init__(self, rng: random.Random, now: datetime, sessions: list[tuple[str, str]]) -> None:
        self.rng = rng
        self.now = now
        self.sessions = sessions  # (session id, project id), index = days ago
        self._instances: dict[tuple[str, int], str] = {}  # (session id, track) -> the plugin's instance id

    def _id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _osc(self, kind: str, message: Message, track: int, session: tuple[str, str],
             created: datetime) -> tuple[Any, ...]:
        """An `osc_in`/`osc_out` row as Traffic.datagram builds it."""
        plugin = f"{LOOPBACK}:{9000 + track}" if kind == "osc_out" else f"{LOOPBACK}:{50000 + 100 * track}"
        sender, receiver = (BRIDGE_END, plugin) if kind == "osc_out" else (plugin, BRIDGE_END)
        instance = self._instances.setdefault((session[0], track), self._id())
        payload = {"address": message.address, "tags": message.tags, "args": typed_args(message),
                   "instance_id": instance}
        return (self._id(), session[1], session[0], sender, receiver, kind, content_line(message),
                json.dumps(payload), "info", None, created)

    def rows(self, count: int, oldest: datetime, newest: datetime) -> Iterator[tuple[Any, ...]]:
        """`count` rows evenly spread from `oldest` to `newest`, in time order, as a mix of the traffic of a
        session: RMS queries and their replies (most of it), gain changes, plugin (re)connections, chat, and
        orchestrator commands each followed by a response that points back at it."""
        rng = self.rng
        step = (newest - oldest) / max(count - 1, 1)
        i = 0
        while i < count:
            created = oldest + step * i
            session = self.sessions[min((self.now - created).days, len(self.sessions) - 1)]
            track = rng.randrange(1, TRACKS + 1)
            roll = rng.random()
            if roll < 0.6:  # a query and the plugin's reply
                query = self._id()
                batch = [self._osc("osc_out", Message(QUERY_RMS, [query], "s"), track, session, created),
                         self._osc("osc_in", Message(RMS_RESPONSE, [query, f"TR{track}", rng.random() * 0.5], "ssf"),
                                   track, session, created)]
            elif roll < 0.7:
                gain = round(rng.uniform(-60, 0), 1)
                batch = [self._osc("osc_out", Message(SET_PARAMETER, ["GAIN", gain], "sf"), track, session, created)]
            elif roll < 0.75:
                message = Message(PORT_CONFIRMED, [self._id(), 9000 + track, "bound"], "sis")
                batch = [self._osc("osc_in", message, track, session, created)]
            elif roll < 0.8:
                text = rng.choice(("make the kick punchier", "less reverb on the snare", "what key are we in?"))
                batch = [self._osc("osc_in", Message(CHAT_REQUEST, [f"TR{track}", text], "ss"), track, session,
                                   created)]
            else:
                command = self._id()
                gain = round(rng.uniform(-12, 6), 1)
                batch = [
                    (command, session[1], session[0], "orchestrator", f"TR{track}", "command",
                     f"set GAIN of TR{track} to {gain} dB",
                     json.dumps({"command": "set_parameter", "parameter_id": "GAIN", "value": gain}), "info", None,
                     created),
                    (self._id(), session[1], session[0], f"TR{track}", "orchestrator", "response", "applied",
                     json.dumps({"status": "applied", "value": gain}),
                     "warning" if roll > 0.98 else "info", command, created),
                ]
            for row in batch[:count - i]:
                yield row
                i += 1


async def make_sessions(conn: asyncpg.Connection, now: datetime, days: float) -> list[tuple[str, str]]:
    """The projects, and one ended session a day (index = days ago) rotating through them."""
    for name in PROJECTS:
        await conn.execute("INSERT INTO projects (id, name, last_opened_at) VALUES ($1, $2, $3)",
                           project_id_for(name), name, now - timedelta(days=1))
    sessions = []
    for ago in range(session_days(days)):
        session_id, project_id = str(uuid.uuid4()), project_id_for(PROJECTS[ago % len(PROJECTS)])
        started = now - timedelta(days=ago + 1)
        await conn.execute("INSERT INTO sessions (id, project_id, started_at, ended_at, is_active) "
                           "VALUES ($1, $2, $3, $4, false)", session_id, project_id, started,
                           started + timedelta(days=1))
        sessions.append((session_id, project_id))
    return sessions


async def load(url: str, old: int, recent: int, days: float, seed: int) -> None:
    """Applies the schema and COPYs the history, oldest rows first, into the table with all its indexes."""
    conn = await asyncpg.connect(url)
    try:
        await apply_schema(conn)
        now = datetime.now(UTC)
        history = History(random.Random(seed), now, await make_sessions(conn, now, days))
        spans = ((old, now - timedelta(days=3 * days), now - timedelta(days=days + 1)),
                 (recent, now - timedelta(days=days - 0.5), now - timedelta(minutes=1)))
        print(f"loading {old:,} debug rows {days + 1:g}..{3 * days:g} days old and {recent:,} of the last "
              f"{days:g} days (debug_retention_days {days:g}) with COPY, indexes in place")
        started = time.perf_counter()
        total = 0
        for count, oldest, newest in spans:
            rows = history.rows(count, oldest, newest)
            while chunk := list(islice(rows, CHUNK)):
                await conn.copy_records_to_table(TABLE, records=chunk, columns=DEBUG_COLUMNS)
                total += len(chunk)
                print(f"\r  {total:,} rows ({time.perf_counter() - started:.0f} s)", end="", flush=True)
        loaded = time.perf_counter() - started
        step = time.perf_counter()
        await conn.execute(f"VACUUM ANALYZE {TABLE}")
        print(f"\n  loaded in {loaded:.1f} s ({total / loaded:,.0f} rows/s); VACUUM ANALYZE "
              f"{time.perf_counter() - step:.1f} s")
        print(f"  {TABLE}: {await table_state(conn)}")
    finally:
        await conn.close()


@dataclass(frozen=True)
class TableState:
    heap: int
    indexes: int
    live: int
    dead: int
    autovacuums: int

    def __str__(self) -> str:
        return (f"heap {human(self.heap)}, indexes {human(self.indexes)}, ~{self.live:,} live rows, "
                f"~{self.dead:,} dead, {self.autovacuums} autovacuum runs so far")


async def table_state(conn: asyncpg.Connection) -> TableState:
    """The table's size and PostgreSQL's statistics on it (the counters lag their backends by up to a second)."""
    row = await conn.fetchrow(
        "SELECT pg_relation_size(relid) AS heap, pg_indexes_size(relid) AS indexes, n_live_tup AS live, "
        "n_dead_tup AS dead, autovacuum_count AS autovacuums FROM pg_stat_user_tables WHERE relname = $1", TABLE)
    assert row is not None, f"{TABLE} is missing"
    return TableState(row["heap"], row["indexes"], row["live"], row["dead"], row["autovacuums"])


# -- the client (a process of its own) --------------------------------------------------------------------------

def drive(port: int, rate: float, read_rate: float, reads_sent: list[str], pipe: Connection) -> None:
    """The load client: on "go", sends writes, and each of the `reads_sent` (names of READS), on a fixed schedule
    (open loop: a slow reply does not delay the next request) until "stop", then waits up to GRACE for outstanding
    replies and sends the phase's samples back as builtins. "exit" ends it."""
    writes, reads = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    for sock in (writes, reads):
        sock.connect((LOOPBACK, port))
        sock.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(writes, selectors.EVENT_READ)
    selector.register(reads, selectors.EVENT_READ)
    selector.register(pipe, selectors.EVENT_READ)
    rng = random.Random(1)
    serial = 0
    while (command := pipe.recv()) == "go":
        pipe.send("started")
        sent_writes: dict[str, tuple[float, float]] = {}  # request id -> (wall clock, perf counter) at send
        sent_reads: dict[str, tuple[str, float, int]] = {}  # request id -> (read, perf counter at send, rows got)
        acked: list[tuple[str, float, float]] = []  # row id, wall clock at send, ack seconds
        read_times: dict[str, list[float]] = {name: [] for name in reads_sent}
        errors: list[str] = []
        started = time.perf_counter()
        next_write, next_read = started, started + 0.5 / read_rate
        stop_at: float | None = None
        while True:
            now = time.perf_counter()
            if stop_at is None:
                while next_write <= now:
                    serial += 1
                    req_id, track, gain = f"w{serial}", rng.randrange(1, TRACKS + 1), round(rng.uniform(-12, 6), 1)
                    payload = json.dumps({"command": "set_parameter", "parameter_id": "GAIN", "value": gain})
                    sent_writes[req_id] = (time.time(), time.perf_counter())
                    writes.send(encode_message(WRITE, [req_id, "orchestrator", f"TR{track}", "command",
                                                       f"set GAIN of TR{track} to {gain} dB", payload, "info"]))
                    next_write += 1.0 / rate
                while next_read <= now:
                    for name in reads_sent:
                        serial += 1
                        address, args = READS[name]
                        sent_reads[f"r{serial}"] = (name, time.perf_counter(), 0)
                        reads.send(encode_message(address, [f"r{serial}", *args]))
                    next_read += 1.0 / read_rate
                timeout = max(0.0, min(next_write, next_read) - time.perf_counter())
            elif (not sent_writes and not sent_reads) or now > stop_at + GRACE:
                break
            else:
                timeout = 0.05
            for key, _ in selector.select(timeout):
                if key.fileobj is pipe:
                    pipe.recv()  # "stop"
                    stop_at = time.perf_counter()
                    continue
                while True:
                    try:
                        data = (writes if key.fileobj is writes else reads).recv(65536)
                    except BlockingIOError:
                        break
                    at = time.perf_counter()
                    req_id, status, *rest = decode_packet(data)[0].args
                    if status != "ok":
                        errors.append(f"{req_id}: {rest}")
                        sent_writes.pop(req_id, None)
                        sent_reads.pop(req_id, None)
                    elif req_id in sent_writes:
                        wall, perf = sent_writes.pop(req_id)
                        acked.append((str(rest[0]), wall, at - perf))
                    elif req_id in sent_reads:
                        name, perf, received = sent_reads[req_id]
                        if received + 1 >= int(rest[1]):  # the last row (or the one reply of an empty list)
                            del sent_reads[req_id]
                            read_times[name].append(at - perf)
                        else:
                            sent_reads[req_id] = (name, perf, received + 1)
        unanswered_reads = {name: sum(1 for read, _, _ in sent_reads.values() if read == name) for name in reads_sent}
        pipe.send({"seconds": (stop_at or time.perf_counter()) - started, "acked": acked, "reads": read_times,
                   "errors": errors, "unanswered_writes": len(sent_writes), "unanswered_reads": unanswered_reads})
    if command != "exit":
        raise SystemExit(f"the load client was sent {command!r}")


@dataclass
class Load:
    """One phase's samples from the client."""

    seconds: float
    acked: list[tuple[str, float, float]]
    reads: dict[str, list[float]]  # name in READS -> round trips
    errors: list[str]
    unanswered_writes: int
    unanswered_reads: dict[str, int]


class LoadClient:
    """The load client's process (spawned: a fork would copy the bridge's running event loop and pool)."""

    def __init__(self, port: int, rate: float, read_rate: float, reads: list[str]) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._proc = context.Process(target=drive, args=(port, rate, read_rate, reads, child), daemon=True)
        self._proc.start()
        child.close()

    async def _recv(self) -> Any:
        return await asyncio.to_thread(self._pipe.recv)

    async def start(self) -> None:
        self._pipe.send("go")
        if await self._recv() != "started":
            raise RuntimeError("the load client did not start")

    async def stop(self) -> Load:
        self._pipe.send("stop")
        return Load(**await self._recv())

    def close(self) -> None:
        if self._proc.is_alive():
            self._pipe.send("exit")
            self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)


# -- the phases --------------------------------------------------------------------------------------------------

@dataclass
class Phase:
    name: str
    load: Load
    batches: int  # writer transactions during the phase
    after: TableState
    loadavg: float  # the machine's 1-minute load average at its end: other work shares the cores


async def run_phase(name: str, client: LoadClient, bridge: Bridge, url: str, seconds: float,
                    retention: Retention | None = None) -> tuple[Phase, float, int]:
    """Runs the load for `seconds`, or, with `retention`, for as long as one pass of it takes; returns the phase,
    the pass's duration and the rows it removed."""
    batches = bridge.writer.batches
    await client.start()
    started = time.perf_counter()
    removed = 0
    if retention is None:
        await asyncio.sleep(seconds)
    else:
        removed = await retention.remove_old()
    duration = time.perf_counter() - started
    load = await client.stop()
    conn = await asyncpg.connect(url)
    try:
        state = await table_state(conn)
    finally:
        await conn.close()
    return Phase(name, load, bridge.writer.batches - batches, state, os.getloadavg()[0]), duration, removed


async def commit_times(url: str, phases: Sequence[Phase]) -> tuple[dict[str, float], int]:
    """Commit time (wall clock) of every acknowledged row, and how many acknowledged rows are not in the table."""
    ids = [row_id for phase in phases for row_id, _, _ in phase.load.acked]
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(f"SELECT id::text AS id, pg_xact_commit_timestamp(xmin) AS at FROM {TABLE} "
                                "WHERE id = ANY($1::uuid[])", ids)
    finally:
        await conn.close()
    found = {r["id"]: r["at"].timestamp() for r in rows if r["at"] is not None}
    return found, len(ids) - len(rows)


def spread(seconds: list[float]) -> tuple[str, str, str]:
    """p50, p99 and max in milliseconds."""
    ordered = sorted(seconds)
    if not ordered:
        return ("-", "-", "-")
    p50, p99 = percentile(ordered, 0.5), percentile(ordered, 0.99)
    return f"{p50 * 1000:.1f}", f"{p99 * 1000:.1f}", f"{ordered[-1] * 1000:.1f}"


def report(phases: Sequence[Phase], committed: dict[str, float], missing: int, rate: float, read_rate: float,
           read_names: list[str]) -> None:
    addresses = " and ".join(f"{READS[name][0]} 10" for name in read_names)
    print(f"\nload: {WRITE} at {rate:g}/s and {addresses} at {read_rate:g}/s each over UDP, open loop, from a "
          f"client process, on {os.cpu_count()} cores; milliseconds")
    writes = [("phase", "seconds", "writes/s", "ack p50", "p99", "max", "commit p50", "p99", "max", "unanswered",
               "batches", "load avg")]
    reads = [("phase", "read", "reads", "p50", "p99", "max", "unanswered")]
    for phase in phases:
        load = phase.load
        acks = [ack for _, _, ack in load.acked]
        commits = [committed[row_id] - sent for row_id, sent, _ in load.acked if row_id in committed]
        writes.append((phase.name, f"{load.seconds:.1f}", f"{len(load.acked) / load.seconds:.0f}", *spread(acks),
                       *spread(commits), str(load.unanswered_writes), str(phase.batches), f"{phase.loadavg:.1f}"))
        reads.extend((phase.name, READS[name][0], str(len(times)), *spread(times),
                      str(load.unanswered_reads[name])) for name, times in load.reads.items())
    print_table("writes (ack: round trip of the request; commit: from sending it until its row was committed; "
                "batches: writer transactions; load avg: 1 minute, at the end of the phase)", writes)
    print_table("reads (round trip until the last of up to 10 rows)", reads)
    errors = [error for phase in phases for error in phase.load.errors]
    if errors:
        print(f"\n{len(errors)} error replies, e.g. {errors[:3]}")
    if missing:
        print(f"\n{missing} acknowledged rows are NOT in the database")
    else:
        print("\nevery acknowledged row is in the database")
    if untimed := sum(len(phase.load.acked) for phase in phases) - missing - len(committed):
        print(f"{untimed} rows have no commit timestamp (left out of the commit latencies)")


def report_pass(removed: int, expected: int, duration: float, before: TableState, phases: Sequence[Phase]) -> None:
    pauses = removed // RETENTION_BATCH  # after every full batch; the last, partial one ends the pass
    in_delete = max(duration - pauses * BATCH_PAUSE, 1e-9)
    print(f"\nretention pass (batches of {RETENTION_BATCH:,}, {BATCH_PAUSE:g} s pause between them):")
    note = "" if removed == expected else f" (expected {expected:,})"
    print(f"  removed {removed:,} rows{note} in {duration:.1f} s: {removed / duration:,.0f} rows/s; "
          f"{pauses + 1} DELETE statements, {in_delete:.1f} s in them ({removed / in_delete:,.0f} rows/s, "
          f"{1000 * in_delete / (pauses + 1):.0f} ms each on average)")
    print(f"\n{TABLE} (statistics lag by up to a second):")
    print(f"  before the pass: {before}")
    for phase in phases[1:]:
        print(f"  at the end of {phase.name}: {phase.after}")


async def start_postgres(base: Path) -> tuple[EmbeddedPostgres, str]:
    """The embedded server with `track_commit_timestamp` on (it needs a restart)."""
    # Not inside the bridge's data directory: the bridge makes that private (0700), and pg_ctl, running as the
    # embedded server's user, could no longer reach its cluster to stop it.
    embedded = EmbeddedPostgres(base / "postgres")
    url = await embedded.start_async()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
    finally:
        await conn.close()
    await asyncio.to_thread(embedded.stop)
    embedded = EmbeddedPostgres(base / "postgres")
    return embedded, await embedded.start_async()


async def prepare(port: int, read_names: list[str]) -> None:
    """Opens the project the load writes to, saves some messages for the reads to return, and checks that the
    bridge answers each read."""
    async with await BridgeClient.connect(LOOPBACK, port) as client:
        await client.call("/bridge/project/open", PROJECTS[0], "")
        for i in range(20):
            await client.save_message("user" if i % 2 else "producer", f"bench message {i}", embed=False)
        for name in read_names:
            address, args = READS[name]
            try:
                await client.rows(address, *args)
            except BridgeRequestError as exc:
                raise SystemExit(f"this bridge does not answer {address} ({exc}); leave it out with --reads") from exc


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=int, default=1_000_000, help="debug rows older than the retention")
    parser.add_argument("--recent", type=int, default=200_000, help="debug rows within the retention")
    parser.add_argument("--rate", type=float, default=200.0, help="writes per second")
    parser.add_argument("--read-rate", type=float, default=10.0, help="reads of each kind per second")
    parser.add_argument("--reads", default=",".join(READS),
                        help=f"the reads sent, comma-separated, of: {', '.join(READS)}")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the phases before and after")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    read_names = [name for name in args.reads.split(",") if name]
    if unknown := set(read_names) - set(READS):
        parser.error(f"unknown reads {sorted(unknown)}; choose from {', '.join(READS)}")
    configure_logging("warning")
    days = Settings().debug_retention_days

    with tempfile.TemporaryDirectory(prefix="oscbridge-bench-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)  # the embedded server runs as its own user when we are root
        embedded, url = await start_postgres(base)
        try:
            await load(url, args.old, args.recent, days, args.seed)
            # The bridge's own retention is off (0 days): the pass of phase (b) is the only one, run when it starts.
            # The fake Ollama only answers the embedding worker's health checks: no message asks to be embedded.
            fake = FakeOllama().start()
            settings = Settings(host=LOOPBACK, osc_port=free_port(), data_dir=base / "data", database_url=url,
                                ollama_url=fake.url, debug_retention_days=0)
            bridge = Bridge(settings)
            await bridge.start()
            client = LoadClient(settings.osc_port, args.rate, args.read_rate, read_names)
            try:
                await prepare(settings.osc_port, read_names)
                await client.start()
                await asyncio.sleep(WARMUP)
                await client.stop()
                print(f"\nphase (a): {args.seconds:g} s without retention")
                baseline, _, _ = await run_phase("(a) baseline", client, bridge, url, args.seconds)
                print("phase (b): while the retention pass runs")
                before = baseline.after
                retention = Retention(bridge.db, days, settings.retention_interval, bridge.clock)
                during, duration, removed = await run_phase("(b) retention", client, bridge, url, 0.0, retention)
                print(f"phase (c): {args.seconds:g} s after it")
                after, _, _ = await run_phase("(c) after", client, bridge, url, args.seconds)
            finally:
                client.close()
                await bridge.stop()
                fake.stop()
            phases = (baseline, during, after)
            committed, missing = await commit_times(url, phases)
            report(phases, committed, missing, args.rate, args.read_rate, read_names)
            report_pass(removed, args.old, duration, before, phases)
        finally:
            await asyncio.to_thread(embedded.stop)


if __name__ == "__main__":
    run_on_daemon_loop(main)
