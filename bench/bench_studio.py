"""A studio: three bridges with 128 simulated plugins each on one PostgreSQL, beside one bridge alone (issue 14).

    .venv/bin/python -m bench.bench_studio [--bridges 3] [--plugins 128] [--seconds 20] [--debug-rate 200]

(from the repository root, after `pip install -e '.[bench]'`; 1.5 to 2 minutes with the defaults on a 2-core VM)

What it does (numbers only; not a test):

1. Starts one embedded PostgreSQL in a temporary directory with `track_commit_timestamp` on (bench_retention's
   `start_postgres`), so that the commit time of every stored row can be read back afterwards.
2. Runs two set-ups one after the other on that database: A) one bridge, B) `--bridges` bridges. Each bridge is an
   `oscbridge serve` process of its own (`BridgeProcess`) with its own data dir, OSC port, plugin port range,
   bootstrap ports and `--bridge-name`, all with `--database-url` of the one server. Each bridge gets
   `--plugins` simulated plugins from an `oscbridge simulate` process of its own (`oscbridge/tools/sim`, which
   behaves as the real plugin does: port negotiation, then `/aiplayer/telemetry` + `/aiplayer/rms` every 41 ms,
   about 49 datagrams/s per plugin, 6,244/s per 128). The plugins are calibrated in the rig's own project
   (`/bridge/calibrate/assign`: a plugin streams once it has a track id), then every bridge opens the shared
   project "Studio", where the mapping changes below happen (so `/bridge/mapping/list` answers a few rows, not
   one per plugin of the studio).
3. Plugin telemetry is not stored: `plugins/traffic.py` keeps only the control plane in `mission_control_debug`
   (a stream is not a conversation). So the debug rows come from an orchestrator per bridge, as Mission Control
   logs its commands: `/bridge/debug/log` at `--debug-rate` per second, open loop, from a process of its own
   (bench_retention's `LoadClient`), plus whatever plugin control traffic happens (probes of a plugin that fell
   silent). `--debug-rate 0` leaves the orchestrators out.
4. Measures for `--seconds`, after a short warm-up:
   * telemetry datagrams the bridges' hubs counted (`hub.telemetry` of `/bridge/stats`) per second, against the
     real plugins' rate; and over the whole run, what the simulators sent against what the hubs counted;
   * debug rows acknowledged per second, and debug rows committed in PostgreSQL during the window (by commit
     timestamp), per bridge (through the bridge id of the row's session) and in all;
   * writer lag as the bridge reports it, sampled every second: queued writes (`/bridge/status` result 3:
     accepted, waiting for the writer) and spool bytes not yet in PostgreSQL (result 8), p50 and max; and, from
     the rows themselves, ack to commit (commit timestamp minus the row's `created_at`, the time the bridge
     accepted it) of every debug row accepted in the window;
   * mapping round trip: `--changes` times, evenly over the window, `/bridge/mapping/set` on the first bridge,
     then from its acknowledgement until every other bridge's `/bridge/mapping/list` answers the new value (a
     change travels: spool, writer, commit, NOTIFY, the other bridge's reload); with one bridge, set then list on
     that bridge;
   * each bridge process's CPU share (of one core) and its largest RSS, the simulators' CPU share, and all of the
     PostgreSQL server's processes' CPU share.
   After the window: every acknowledged debug row is looked up once the bridges have stopped (they drain their
   spools on SIGTERM).

The benchmark's own requests (status, stats, mappings, calibration) go over TCP: in a first run a `/bridge/stats`
over UDP to one of three saturated bridges was lost (the request datagram dropped with the telemetry), and a lost
poll would have added its 3 s timeout to a mapping round trip. The orchestrators stay on UDP (bench_retention's
client); their unanswered requests are counted.

On a 2-core machine the simulators, the bridges and PostgreSQL share the cores: the table says what rate the
plugins reached rather than assuming it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg
import psutil

from bench.bench_plugins import wait_identified
from bench.bench_retention import Load, LoadClient, start_postgres
from bench.common import ROOT, Requests, cpu_seconds, percentile, print_table
from oscbridge.client import BridgeClient
from oscbridge.store.embedded import EmbeddedPostgres
from oscbridge.store.identity import load_identity
from oscbridge.tools.bridge_process import BridgeProcess
from oscbridge.tools.ports import LOOPBACK, free_block
from oscbridge.tools.sim import SimConfig

SPARE_PORTS = 8  # plugin ports beyond one per plugin, as bench_plugins gives its pool
BOOTSTRAP_PORTS = 16  # instances start 20 ms apart and leave their bootstrap port after 50 ms: a few at once
REAL_RATE = 2 / SimConfig().telemetry_interval  # datagrams per plugin per second: telemetry + rms, every 41 ms
WARMUP = 2.0  # seconds of full load before the window
POLL = 0.002  # seconds between two /bridge/mapping/list of one bridge while a change is awaited
CHANGE_TIMEOUT = 5.0  # a change no other bridge answers within this is counted as unanswered
SHARED_PROJECT = "Studio"
TRACKS_CHANGED = 4  # the mapping changes rename tracks 1..4 of the shared project in turn

# Rows committed in the window, and ack-to-commit of the rows accepted in it, per bridge (the session's bridge).
_STORED = """
SELECT s.bridge_id::text AS bridge, count(*) AS n
FROM mission_control_debug d JOIN sessions s ON s.id = d.session_id
WHERE s.bridge_id = ANY($1::uuid[])
  AND pg_xact_commit_timestamp(d.xmin) >= to_timestamp($2) AND pg_xact_commit_timestamp(d.xmin) < to_timestamp($3)
GROUP BY 1
"""
_LAG = """
SELECT s.bridge_id::text AS bridge,
       percentile_disc(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY x.lag) AS p, max(x.lag) AS worst
FROM (SELECT d.session_id, extract(epoch FROM pg_xact_commit_timestamp(d.xmin) - d.created_at)::float8 AS lag
      FROM mission_control_debug d
      WHERE d.created_at >= to_timestamp($2) AND d.created_at < to_timestamp($3)) x
JOIN sessions s ON s.id = x.session_id
WHERE s.bridge_id = ANY($1::uuid[])
GROUP BY 1
"""


# --------------------------------------------------------------------------------------------------------------
# A rig: one bridge, its simulated plugins and its orchestrator
# --------------------------------------------------------------------------------------------------------------


@dataclass
class RigResult:
    name: str
    identified: int = 0
    received: int = 0  # telemetry datagrams the hub counted in the window
    sent_total: int = 0  # telemetry datagrams the simulator sent, whole run
    send_errors: int = 0  # sends the simulator saw fail
    received_total: int = 0  # and the hub counted, whole run
    acked: float = 0.0  # debug rows acknowledged per second
    errors: int = 0
    unanswered: int = 0
    stored: int = 0  # debug rows committed in the window
    lag_ms: tuple[float, float, float] = (float("nan"),) * 3  # ack to commit p50, p95, max
    queued: list[int] = field(default_factory=list)  # /bridge/status samples
    spool_bytes: list[int] = field(default_factory=list)
    cpu: float = 0.0  # share of one core
    rss: int = 0  # largest sample
    sim_cpu: float = 0.0


class Rig:
    """A bridge process, its TCP client, and the processes that load it: the simulator and the orchestrator.
    After `start_bridge`, `start_plugins` and `calibrate`, its plugins stream and it works in SHARED_PROJECT."""

    def __init__(self, number: int, name: str, url: str, plugins: int, first_port: int, scratch: Path) -> None:
        self.number = number
        self.name = name
        self.plugins = plugins
        pool_end = first_port + plugins + SPARE_PORTS - 1
        self.bootstrap = pool_end + 1
        self.env = {"OSCBRIDGE_PORT_RANGE_START": str(first_port), "OSCBRIDGE_PORT_RANGE_END": str(pool_end),
                    "OSCBRIDGE_EPHEMERAL_BASE": str(self.bootstrap), "OSCBRIDGE_EPHEMERAL_STEP": "1",
                    "OSCBRIDGE_EPHEMERAL_COUNT": str(BOOTSTRAP_PORTS)}
        self.url = url
        self.scratch = scratch
        self.bridge: BridgeProcess | None = None
        self.client: BridgeClient | None = None  # over TCP (module docstring)
        self.sim: subprocess.Popen[str] | None = None
        self._sim_log: IO[str] | None = None
        self.load: LoadClient | None = None
        self.bridge_id = ""
        self.result = RigResult(name)

    @property
    def sim_log_path(self) -> Path:
        return self.scratch / f"{self.name}-simulate.log"

    @staticmethod
    def ports_needed(plugins: int) -> int:
        return plugins + SPARE_PORTS + BOOTSTRAP_PORTS

    async def start_bridge(self) -> None:
        self.bridge = BridgeProcess("--database-url", self.url, "--bridge-name", self.name, extra_env=self.env)
        self.bridge_id = load_identity(self.bridge.data_dir, self.name).id
        self.client = await BridgeClient.connect(LOOPBACK, self.bridge.port, transport="tcp")

    @property
    def api(self) -> BridgeClient:
        assert self.client is not None, "the bridge is not running"
        return self.client

    def start_plugins(self) -> None:
        """The simulator as a user runs it: `oscbridge simulate`, its plugins started 20 ms apart."""
        assert self.bridge is not None
        self._sim_log = self.sim_log_path.open("w")
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "oscbridge", "simulate", "--plugins", str(self.plugins),
             "--bridge", f"{LOOPBACK}:{self.bridge.port}", "--ephemeral-base", str(self.bootstrap),
             "--ephemeral-step", "1", "--ephemeral-count", str(BOOTSTRAP_PORTS), "--log-level", "error"],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._sim_log, text=True)

    async def calibrate(self) -> None:
        """Gives every plugin a track id in the rig's own project (TR numbers the other rigs do not use), then
        opens the shared project. A plugin streams once it has its track id."""
        assert self.bridge is not None
        await self.api.call("/bridge/project/open", f"Calibration {self.name}", "")
        requests = Requests(self.bridge.port)  # bench_plugins' wait, over UDP: nothing streams to this bridge yet
        try:
            wait_identified(requests, self.plugins)
        finally:
            requests.close()
        unassigned = [row[0] for row in await self.api.rows("/bridge/plugins") if row[2] == "bound"]
        first = self.number * self.plugins + 1
        for offset, instance in enumerate(unassigned):
            track = first + offset
            await self.api.call("/bridge/calibrate/assign", instance, f"TR{track}", track, f"{self.name} {track}")
        await self.api.call("/bridge/project/open", SHARED_PROJECT, "")
        if (identified := await self.identified()) < self.plugins:
            raise RuntimeError(f"{self.name}: {identified} of {self.plugins} plugins identified")

    async def identified(self) -> int:
        return int((await self.api.call("/bridge/status"))[1])

    def start_orchestrator(self, rate: float) -> None:
        if rate > 0:
            assert self.bridge is not None
            self.load = LoadClient(self.bridge.port, rate, 1.0, [])  # no reads: only /bridge/debug/log

    async def telemetry_received(self) -> int:
        """The hub's count of telemetry datagrams (`/aiplayer/telemetry` and `/aiplayer/rms`) since start."""
        return next((int(value) for name, value in await self.api.rows("/bridge/stats") if name == "hub.telemetry"),
                    0)

    def stop_plugins(self) -> None:
        """SIGTERM: the simulator closes its plugins and prints one JSON line each, with what it sent."""
        if self.sim is None:
            return
        if self.sim.poll() is None:
            self.sim.send_signal(signal.SIGTERM)
        try:
            out, _ = self.sim.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.sim.kill()
            out, _ = self.sim.communicate()
        self.sim = None
        if self._sim_log is not None:
            self._sim_log.close()
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        # Each tick sends /aiplayer/telemetry, then /aiplayer/rms unless that send failed: the simulator logs each
        # failed send (at error level, the level it runs at).
        self.result.sent_total = 2 * sum(int(line["telemetry_sent"]) for line in lines)
        self.result.send_errors = self.sim_log_path.read_text().count("sim_send_failed")

    async def close(self) -> None:
        """Stops whatever still runs (also after an error or Ctrl-C): orchestrator, simulator, bridge."""
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.load is not None:
            self.load.close()
            self.load = None
        if self.sim is not None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self.sim.kill()
                self.sim.wait(5)
            self.sim = None
        if self._sim_log is not None:
            self._sim_log.close()
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None


# --------------------------------------------------------------------------------------------------------------
# Sampling during the window
# --------------------------------------------------------------------------------------------------------------


async def sample_writer(rig: Rig, end: float) -> None:
    """Every second: the bridge's queued writes and spool bytes, and its RSS."""
    assert rig.bridge is not None
    proc = psutil.Process(rig.bridge.pid)
    while time.monotonic() < end:
        next_at = time.monotonic() + 1.0
        status = await rig.api.call("/bridge/status")
        rig.result.queued.append(int(status[2]))
        rig.result.spool_bytes.append(int(status[7]))
        rig.result.rss = max(rig.result.rss, proc.memory_info().rss)
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def answered(client: BridgeClient, row: tuple[int, str, str], deadline: float) -> float | None:
    """When `client`'s bridge first lists `row` in /bridge/mapping/list (monotonic), or None by `deadline`."""
    while time.monotonic() < deadline:
        if row in {(r[0], r[1], r[2]) for r in await client.rows("/bridge/mapping/list")}:
            return time.monotonic()
        await asyncio.sleep(POLL)
    return None


async def change_mappings(label: str, clients: Sequence[BridgeClient], start: float, seconds: float, changes: int,
                          round_trips: list[float]) -> int:
    """`changes` renames on the first bridge, evenly over the window; appends the seconds from each `ok` until
    every other bridge (or, alone, the same one) lists it. Returns how many were not answered in time."""
    watchers = clients[1:] or clients[:1]
    missed = 0
    for i in range(changes):
        await asyncio.sleep(max(0.0, start + (i + 0.5) * seconds / changes - time.monotonic()))
        track = 1 + i % TRACKS_CHANGED
        row = (track, f"{label} take {i + 1}", f"TR{track}")
        await clients[0].call("/bridge/mapping/set", *row)
        acked = time.monotonic()
        seen = await asyncio.gather(*(answered(c, row, acked + CHANGE_TIMEOUT) for c in watchers))
        if any(at is None for at in seen):
            missed += 1
        else:
            round_trips.append(max(at for at in seen if at is not None) - acked)
    return missed


def postgres_cpu(pgdata: Path) -> dict[int, float]:
    """CPU seconds so far of the PostgreSQL server's processes (postmaster, backends, background workers)."""
    try:
        postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0]))
        procs = [postmaster, *postmaster.children(recursive=True)]
    except (OSError, ValueError, psutil.Error):
        return {}
    seconds = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            seconds[proc.pid] = cpu_seconds(proc.pid)
    return seconds


# --------------------------------------------------------------------------------------------------------------
# One set-up
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Phase:
    label: str
    seconds: float
    rigs: list[RigResult]
    round_trips: list[float]
    unanswered_changes: int
    missing_acked: int
    postgres_cpu: float
    loadavg: float


async def run_phase(label: str, count: int, url: str, pgdata: Path, ns: argparse.Namespace, scratch: Path) -> Phase:
    first = free_block(count * Rig.ports_needed(ns.plugins))
    rigs = [Rig(n, f"{label}-rig-{n + 1}", url, ns.plugins, first + n * Rig.ports_needed(ns.plugins), scratch)
            for n in range(count)]
    tasks: list[asyncio.Task[Any]] = []
    try:
        print(f"\n{label}: starting {count} bridge(s) with {ns.plugins} simulated plugins each", flush=True)
        for rig in rigs:
            await rig.start_bridge()
            rig.start_plugins()
        for rig in rigs:
            await rig.calibrate()
            rig.start_orchestrator(ns.debug_rate)
        loads = [rig.load for rig in rigs if rig.load is not None]
        for load in loads:  # the warm-up: the orchestrators' first rows, the writers' first batches
            await load.start()
        await asyncio.sleep(WARMUP)
        for load in loads:
            await load.stop()

        print(f"{label}: measuring for {ns.seconds:g} s", flush=True)
        for load in loads:
            await load.start()
        received = [await rig.telemetry_received() for rig in rigs]
        cpu = [cpu_seconds(rig.bridge.pid) for rig in rigs if rig.bridge is not None]
        sim_cpu = [cpu_seconds(rig.sim.pid) for rig in rigs if rig.sim is not None]
        pg_cpu = postgres_cpu(pgdata)
        wall, start = time.time(), time.monotonic()
        end = start + ns.seconds
        round_trips: list[float] = []
        tasks = [asyncio.create_task(sample_writer(rig, end)) for rig in rigs]
        mapper = asyncio.create_task(change_mappings(label, [rig.api for rig in rigs], start, ns.seconds,
                                                     ns.changes, round_trips))
        tasks.append(mapper)
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        elapsed, wall_end = time.monotonic() - start, time.time()
        for n, rig in enumerate(rigs):
            assert rig.bridge is not None and rig.sim is not None
            rig.result.received = await rig.telemetry_received() - received[n]
            rig.result.cpu = (cpu_seconds(rig.bridge.pid) - cpu[n]) / elapsed
            rig.result.sim_cpu = (cpu_seconds(rig.sim.pid) - sim_cpu[n]) / elapsed
            rig.result.identified = await rig.identified()
        pg_used = sum(s - pg_cpu.get(pid, 0.0) for pid, s in postgres_cpu(pgdata).items()) / elapsed
        loadavg = os.getloadavg()[0]
        acked_ids: list[str] = []
        for rig in rigs:
            if rig.load is not None:
                load_result: Load = await rig.load.stop()
                rig.result.acked = len(load_result.acked) / load_result.seconds
                rig.result.errors = len(load_result.errors)
                rig.result.unanswered = load_result.unanswered_writes
                acked_ids += [row_id for row_id, _, _ in load_result.acked]
        unanswered_changes = await mapper
        await asyncio.gather(*tasks)

        for rig in rigs:  # the plugins stop first, so that the hubs have counted all they were sent
            rig.stop_plugins()
        await asyncio.sleep(0.5)
        for rig in rigs:
            rig.result.received_total = await rig.telemetry_received()
        for rig in rigs:
            await rig.close()  # SIGTERM: the bridge drains its spool before it exits
        missing = await store_results(url, rigs, wall, wall_end, acked_ids)
        return Phase(label, elapsed, [rig.result for rig in rigs], round_trips, unanswered_changes, missing,
                     pg_used, loadavg)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for rig in rigs:
            await rig.close()


async def store_results(url: str, rigs: Sequence[Rig], start: float, end: float, acked_ids: list[str]) -> int:
    """Fills in the rows each bridge stored in the window and their ack-to-commit; returns how many acknowledged
    debug rows are not in the table."""
    ids = [rig.bridge_id for rig in rigs]
    conn = await asyncpg.connect(url)
    try:
        stored = {r["bridge"]: int(r["n"]) for r in await conn.fetch(_STORED, ids, start, end)}
        lag = {r["bridge"]: (r["p"][0], r["p"][1], r["worst"]) for r in await conn.fetch(_LAG, ids, start, end)}
        found = await conn.fetchval("SELECT count(*) FROM mission_control_debug WHERE id = ANY($1::uuid[])", acked_ids)
    finally:
        await conn.close()
    for rig in rigs:
        rig.result.stored = stored.get(rig.bridge_id, 0)
        if rig.bridge_id in lag:
            rig.result.lag_ms = tuple(1000 * v for v in lag[rig.bridge_id])  # type: ignore[assignment]
    return len(acked_ids) - int(found)


# --------------------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------------------


def spread(values: Iterable[float], fmt: Callable[[float], str], total: bool) -> str:
    """One bridge: its value. Several: the total (when `total`) and each bridge's, or each bridge's alone."""
    values = list(values)
    if len(values) == 1:
        return fmt(values[0])
    each = " / ".join(fmt(v) for v in values)
    return f"{fmt(sum(values))} ({each})" if total else each


def count(v: float) -> str:
    return f"{v:,.0f}"


def quantiles(sorted_values: Sequence[float], scale: float = 1.0) -> str:
    if not sorted_values:
        return "-"
    p50, p95 = percentile(sorted_values, 0.5), percentile(sorted_values, 0.95)
    return f"{scale * p50:,.0f} / {scale * p95:,.0f} / {scale * sorted_values[-1]:,.0f}"


def column(phase: Phase, plugins: int) -> list[str]:
    rigs, n = phase.rigs, len(phase.rigs)
    target = REAL_RATE * plugins
    received = [r.received / phase.seconds for r in rigs]
    lost = sum(r.sent_total - r.received_total for r in rigs)
    sent = sum(r.sent_total for r in rigs)
    trips = sorted(phase.round_trips)
    return [
        spread((r.identified for r in rigs), count, True),
        f"{spread(received, count, True)}: {100 * sum(received) / (n * target):.0f} % of the real rate",
        f"{count(sent)} / {count(sent - lost)}: {count(lost)} lost ({100 * lost / max(sent, 1):.2f} %), "
        f"{sum(r.send_errors for r in rigs)} send errors",
        spread((r.acked for r in rigs), count, True),
        spread((r.stored / phase.seconds for r in rigs), count, True),
        " / ".join(f"{percentile(sorted(r.queued), 0.5):,.0f}, {max(r.queued, default=0):,}" for r in rigs),
        " / ".join(f"{max(r.spool_bytes, default=0) / 1024:,.0f}" for r in rigs),
        " / ".join("{:,.0f}, {:,.0f}, {:,.0f}".format(*r.lag_ms) for r in rigs),
        f"{quantiles(trips, 1000)} ({len(trips)} changes, {phase.unanswered_changes} unanswered in "
        f"{CHANGE_TIMEOUT:g} s)",
        spread((100 * r.cpu for r in rigs), lambda v: f"{v:.0f} %", False),
        spread((r.rss / 2**20 for r in rigs), lambda v: f"{v:.0f}", False),
        spread((100 * r.sim_cpu for r in rigs), lambda v: f"{v:.0f} %", False),
        f"{100 * phase.postgres_cpu:.0f} %",
        f"{sum(r.errors for r in rigs)} / {sum(r.unanswered for r in rigs)}",
        str(phase.missing_acked),
        f"{phase.loadavg:.1f}",
    ]


MEASURES = (
    "plugins identified",
    "telemetry datagrams received /s",
    "telemetry sent / received, whole run",
    "debug rows acknowledged /s",
    "debug rows committed in PostgreSQL /s",
    "queued writes p50, max (/bridge/status)",
    "spool KiB not in PostgreSQL, max",
    "debug row ack to commit p50, p95, max ms",
    "mapping round trip p50 / p95 / max ms",
    "bridge CPU (share of one core)",
    "bridge RSS, largest MB",
    "simulator CPU (share of one core)",
    "PostgreSQL CPU (all its processes)",
    "debug/log errors / unanswered",
    "acknowledged rows missing after drain",
    "load average (1 min) at the end",
)


def report(phases: Sequence[Phase], ns: argparse.Namespace) -> None:
    columns = [column(phase, ns.plugins) for phase in phases]
    header = ("measure", *(f"{p.label}: {len(p.rigs)} bridge{'s' if len(p.rigs) > 1 else ''}" for p in phases))
    print_table(
        f"{ns.plugins} simulated plugins per bridge (real rate {REAL_RATE * ns.plugins:,.0f} datagrams/s each), "
        f"orchestrator /bridge/debug/log at {ns.debug_rate:g}/s per bridge, {ns.seconds:g} s, one PostgreSQL, "
        f"{os.cpu_count()} cores. Several bridges: total (each) or each, in start order",
        [header, *zip(MEASURES, *columns, strict=True)])
    print("\n  mapping round trip: from the `ok` of /bridge/mapping/set on the first bridge until every other bridge's "
          "/bridge/mapping/list\n  answers it (one bridge: until its own list does); ack to commit: commit timestamp "
          "minus the time the bridge\n  accepted the row, for every debug row accepted in the window; telemetry is "
          "not stored (plugins/traffic.py).")


async def main_async(ns: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="oscbridge-bench-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)  # the embedded server runs as its own user when we are root
        embedded: EmbeddedPostgres | None = None
        try:
            embedded, url = await start_postgres(base)
            phases = [await run_phase("A", 1, url, base / "postgres", ns, base)]
            if ns.bridges > 1:
                phases.append(await run_phase("B", ns.bridges, url, base / "postgres", ns, base))
            report(phases, ns)
        finally:
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bridges", type=int, default=3, help="bridges of set-up B (A is always one)")
    parser.add_argument("--plugins", type=int, default=128, help="simulated plugins per bridge")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measuring window")
    parser.add_argument("--debug-rate", type=float, default=200.0,
                        help="/bridge/debug/log per second per bridge (0: none)")
    parser.add_argument("--changes", type=int, default=20, help="mapping changes per window")
    ns = parser.parse_args()
    if ns.bridges < 1 or ns.plugins < 1 or ns.seconds <= 0 or ns.changes < 1 or ns.debug_rate < 0:
        parser.error("--bridges, --plugins and --changes must be at least 1, --seconds above 0, --debug-rate >= 0")
    try:
        asyncio.run(main_async(ns))
    except KeyboardInterrupt:
        print("\ninterrupted; every process this benchmark started has been stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
