"""Benchmark of `oscbridge backup` and `oscbridge restore` on 100,000 messages with 768-d embeddings and 1,000,000
debug rows, and of what a scheduled backup does to the receive path.

    .venv/bin/python -m bench.bench_backup [--messages 100000] [--debug-rows 1000000] [--restore-jobs N]
                                           [--restore-mem 256MB]

(from the repository root; needs nothing beyond the test extras)

What it does (numbers only; not a test):

1. Starts an embedded PostgreSQL in a temporary data dir and loads one project: the messages with their
   embeddings (bench.bench_context_search's structured vectors and texts, binary COPY, then the HNSW and GIN
   indexes built), and the debug rows (plugin traffic: an OSC address, a small JSON payload; binary COPY into
   the table with its indexes in place).
2. Backup: `create_backup`, as `oscbridge backup` and the daemon run it, into a file; its time and size, next to
   the database's size.
3. The receive path during a backup: a bridge runs in-process on that database (on uvloop, like `oscbridge
   serve`); another process sends /bridge/ping one at a time over UDP for as long as the bridge's own
   scheduled-backup code (`BackupSchedule.once`) runs; then while `oscbridge backup` makes the same backup in a
   process of its own (the control: pg_dump and PostgreSQL busy the CPUs either way, so what the bridge's own
   part costs is the difference between the two); then for as long while nothing else runs.
4. Restore: `oscbridge restore` into a new data dir (check of the whole file, a new embedded server, pg_restore
   into a staging database, row counts compared, the swap); its time, and the time of the check alone.
   `--restore-jobs` and `--restore-mem` override the restore's pg_restore jobs and maintenance_work_mem, to
   compare settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.bench_context_search import Corpus, load
from bench.common import percentile, print_table, run_on_daemon_loop
from oscbridge.app import Bridge
from oscbridge.config import Settings
from oscbridge.logs import configure_logging
from oscbridge.osc.codec import encode_message
from oscbridge.store.backup import BackupSchedule, create_backup
from oscbridge.store.embedded import EmbeddedPostgres
from oscbridge.store.spool import human
from oscbridge.tools import restore
from oscbridge.tools.ports import LOOPBACK, free_port

PROJECT = "Backup Bench"
CHUNK = 50_000
SENDERS = [f"TR{n}" for n in range(1, 33)]
ADDRESSES = ["/aiplayer/rms", "/aiplayer/peak", "/aiplayer/status", "/aiplayer/port_assignment"]


def debug_rows(project_id: str, session_id: str, count: int, start: datetime) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(11)
    for i in range(count):
        sender = SENDERS[i % len(SENDERS)]
        address = ADDRESSES[i % len(ADDRESSES)]
        payload = json.dumps({"args": [round(rng.random(), 4)], "port": 9000 + i % 32})
        yield (str(uuid.uuid4()), project_id, session_id, sender, "bridge", "osc_in", address, payload, "debug",
               None, start + timedelta(milliseconds=40 * i))


async def load_debug(url: str, project_id: str, count: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        session_id = await conn.fetchval("SELECT id::text FROM sessions WHERE project_id = $1", project_id)
        columns = ["id", "project_id", "session_id", "sender", "receiver", "message_type", "content", "payload",
                   "severity", "parent_message_id", "created_at"]
        rows = debug_rows(project_id, session_id, count, datetime.now(UTC) - timedelta(days=10))
        started, total = time.perf_counter(), 0
        while chunk := [row for _, row in zip(range(CHUNK), rows, strict=False)]:
            await conn.copy_records_to_table("mission_control_debug", records=chunk, columns=columns)
            total += len(chunk)
            print(f"\r  loaded {total:,} debug rows ({time.perf_counter() - started:.0f} s)", end="", flush=True)
        print()
        await conn.execute("VACUUM ANALYZE mission_control_debug")
    finally:
        await conn.close()


async def sizes(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT relname, pg_total_relation_size(oid) AS bytes FROM pg_class "
                                "WHERE relname IN ('messages', 'mission_control_debug')")
        result = {row["relname"]: row["bytes"] for row in rows}
        result["database"] = await conn.fetchval("SELECT pg_database_size(current_database())")
        return result
    finally:
        await conn.close()


def ping_until(port: int, ready: Any, halt: Any, out: Any) -> None:
    """In a process of its own (so that it takes no GIL from the bridge): /bridge/ping one at a time until
    `halt` is set; puts the round trips (seconds) on `out`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((LOOPBACK, port))
        sock.settimeout(5)
        request = encode_message("/bridge/ping", ["p"])
        samples: list[float] = []
        while not halt.is_set():
            started = time.perf_counter()
            sock.send(request)
            sock.recv(65536)
            samples.append(time.perf_counter() - started)
            ready.set()
            time.sleep(0.002)
    out.put(samples)


class Pinger:
    def __init__(self, port: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.ready, self.halt, self.out = context.Event(), context.Event(), context.Queue()
        self.process = context.Process(target=ping_until, args=(port, self.ready, self.halt, self.out), daemon=True)

    async def start(self) -> None:
        self.process.start()
        await asyncio.to_thread(self.ready.wait, 30)  # the bridge answers meanwhile: this loop is not blocked

    async def stop(self) -> list[float]:
        self.halt.set()
        samples: list[float] = await asyncio.to_thread(self.out.get, True, 30)
        await asyncio.to_thread(self.process.join)
        return sorted(samples)


def latency_row(name: str, samples: list[float]) -> tuple[str, ...]:
    return (name, f"{len(samples):,}", *(f"{percentile(samples, q) * 1000:.2f}" for q in (0.5, 0.99, 0.999)),
            f"{samples[-1] * 1000:.2f}")


async def pings_while(port: int, work: Any) -> tuple[list[float], float]:
    """Ping round trips while the coroutine `work` runs; and how long it ran."""
    pinger = Pinger(port)
    await pinger.start()
    started = time.perf_counter()
    await work
    took = time.perf_counter() - started
    return await pinger.stop(), took


async def receive_path(url: str, data_dir: Path) -> dict[str, tuple[list[float], float]]:
    """Ping round trips while the bridge makes a scheduled backup; while `oscbridge backup` makes the same backup
    in another process (the control: what the machine being busy costs by itself); and while nothing runs."""
    settings = Settings(osc_port=free_port(), http_port=0, data_dir=data_dir, database_url=url, backup_every=0)
    bridge = Bridge(settings)
    await bridge.start()
    try:
        schedule = BackupSchedule(url, settings.spool_dir, settings.backups_dir, 86400, 1, "embedded")

        async def scheduled() -> None:
            assert await schedule.once(), "the scheduled backup failed"

        async def other_process() -> None:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "oscbridge", "backup", str(data_dir / "by-the-tool.tar"), "--database-url",
                url, "--data-dir", str(data_dir), stdout=asyncio.subprocess.DEVNULL)
            assert await proc.wait() == 0, "oscbridge backup failed"

        results = {"the bridge makes a scheduled backup": await pings_while(settings.osc_port, scheduled()),
                   "`oscbridge backup` runs in another process": await pings_while(settings.osc_port,
                                                                                  other_process())}
        took = results["the bridge makes a scheduled backup"][1]
        results["nothing else runs"] = await pings_while(settings.osc_port, asyncio.sleep(took))
    finally:
        await bridge.stop()
    return results


async def main_async(args: argparse.Namespace, root: Path) -> None:
    source = EmbeddedPostgres(root / "source" / "postgres")
    url = await source.start_async()
    try:
        print(f"loading {args.messages:,} messages with {768}-d embeddings and {args.debug_rows:,} debug rows")
        ids = await load(url, Corpus(7, 10, 8), [(PROJECT, args.messages)])
        await load_debug(url, ids[PROJECT], args.debug_rows)
        size = await sizes(url)

        dest = root / "backup.tar"
        started = time.perf_counter()
        manifest = await create_backup(url, root / "source" / "spool", dest, database="embedded")
        backup_seconds = time.perf_counter() - started
        dump_bytes = manifest.files["db.dump"]["bytes"]

        pings = await receive_path(url, root / "bridge")
    finally:
        await asyncio.to_thread(source.stop)

    if args.restore_jobs:
        restore.RESTORE_JOBS = args.restore_jobs
    if args.restore_mem:
        restore.RESTORE_ENV = {"PGOPTIONS": f"-c maintenance_work_mem={args.restore_mem}"}
    target = Settings(data_dir=root / "restored", backup_every=0)
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        await restore.verify(dest, Path(work))
        check_seconds = time.perf_counter() - started
    started = time.perf_counter()
    code = await asyncio.to_thread(restore.restore_command, target, dest)
    restore_seconds = time.perf_counter() - started
    assert code == 0, f"restore failed with exit code {code}"

    print_table("database", [
        ("what", "size"),
        ("messages (with HNSW and GIN indexes)", human(size["messages"])),
        ("mission_control_debug (with indexes)", human(size["mission_control_debug"])),
        ("whole database", human(size["database"])),
    ])
    print_table("backup and restore", [
        ("step", "seconds", "bytes"),
        ("backup (snapshot, counts, pg_dump, archive)", f"{backup_seconds:.1f}", human(dest.stat().st_size)),
        ("  of which the dump (custom format, compressed)", "", human(dump_bytes)),
        ("scheduled backup inside a running bridge", f"{pings['the bridge makes a scheduled backup'][1]:.1f}", ""),
        ("restore: check of the whole file alone", f"{check_seconds:.1f}", ""),
        (f"restore, all of it (jobs {restore.RESTORE_JOBS}, {restore.RESTORE_ENV['PGOPTIONS']})",
         f"{restore_seconds:.1f}", ""),
    ])
    print_table("/bridge/ping round trip (ms) over UDP, one at a time", [
        ("while", "pings", "p50", "p99", "p99.9", "max"),
        *(latency_row(name, samples) for name, (samples, _) in pings.items()),
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--debug-rows", type=int, default=1_000_000)
    parser.add_argument("--restore-jobs", type=int, help="pg_restore --jobs for the restore (default: the tool's)")
    parser.add_argument("--restore-mem", help="maintenance_work_mem for the restore, e.g. 1GB (default: the tool's)")
    args = parser.parse_args()
    configure_logging("warning")
    with tempfile.TemporaryDirectory(prefix="bench-backup-") as root:
        run_on_daemon_loop(lambda: main_async(args, Path(root)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
