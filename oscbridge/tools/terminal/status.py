"""`oscbridge status`: how the running bridge is doing, from /bridge/ping, /bridge/status, /bridge/health,
/bridge/storage and /bridge/stats.

The embedding backlog is the worker's `memory.backlog` counter; its rate is measured by reading `memory.embedded`
twice, `--sample` seconds apart (only when messages are waiting, so a bridge with nothing to embed answers at
once). The time left is the backlog at that rate.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from functools import partial
from typing import Any

from rich.text import Text

from oscbridge.clock import duration
from oscbridge.flags import add_bridge_client_flags
from oscbridge.store.spool import MIB, human
from oscbridge.tools.terminal import session
from oscbridge.tools.terminal.columns import named
from oscbridge.tools.terminal.output import STATUS_STYLES, Output, styled

DEFAULT_SAMPLE = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bridge_client_flags(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument("--sample", type=float, default=DEFAULT_SAMPLE,
                        help="seconds over which to measure the embedding rate when messages wait (0 = do not)")


def run(ns: argparse.Namespace) -> int:
    return session.run(ns, partial(status, sample=max(0.0, ns.sample)))


async def counters(bridge: session.Session) -> dict[str, int]:
    return {str(name): int(value) for name, value in await bridge.rows("/bridge/stats")}


async def embedding(bridge: session.Session, stats: dict[str, int], sample: float) -> dict[str, Any]:
    """The backlog, what was embedded since start, and the rate (None when not measured)."""
    backlog, embedded = stats.get("memory.backlog", 0), stats.get("memory.embedded", 0)
    rate = None
    if backlog and sample > 0:
        started = time.monotonic()
        await asyncio.sleep(sample)
        later = await counters(bridge)
        rate = max(0, later.get("memory.embedded", 0) - embedded) / (time.monotonic() - started)
        backlog, embedded = later.get("memory.backlog", 0), later.get("memory.embedded", 0)
    left = backlog / rate if rate and backlog else None
    return {"backlog": backlog, "embedded_since_start": embedded, "rate_per_second": rate, "seconds_left": left}


async def gather(bridge: session.Session, sample: float) -> dict[str, Any]:
    """The facts of `oscbridge status` as its JSON document."""
    values = named("/bridge/status", await bridge.call("/bridge/status"))
    health = [named("/bridge/health", row) for row in await bridge.rows("/bridge/health")]
    try:
        sizes = [named("/bridge/storage", row) for row in await bridge.rows("/bridge/storage")]
        total = next((row["bytes"] for row in sizes if row["rows"] == -1), None)
        storage: dict[str, Any] = {"tables": [row for row in sizes if row["rows"] != -1], "database_bytes": total}
    except session.ReplyError as exc:  # the database is down: the rest is still worth showing
        storage = {"tables": None, "database_bytes": None, "error": exc.message}
    stats = await counters(bridge)
    return {
        "bridge": {"host": bridge.host, "port": bridge.port, "version": bridge.version,
                   "uptime_seconds": bridge.uptime},
        "plugins": {"bound": values["plugins_bound"], "identified": values["plugins_identified"]},
        "database": {"up": bool(values["database_up"])},
        "ollama": {"up": bool(values["ollama_up"])},
        "writes": {"queued": values["queued_writes"], "spooled": values["spooled_writes"],
                   "spool_bytes": values["spool_bytes"], "rejected": values["rejected_writes"],
                   "dropped_best_effort": values["dropped_best_effort_writes"]},
        "disk": {"free_mib": values["free_disk_mib"]},
        "embedding": await embedding(bridge, stats, sample),
        "health": health,
        "storage": storage,
        "stats": stats,
    }


async def status(bridge: session.Session, out: Output, sample: float) -> int:
    facts = await gather(bridge, sample)
    if out.json_mode:
        out.json(facts)
        return 0
    overview = out.table("Bridge", ("fact", "value"))
    for fact, value in overview_rows(facts):
        overview.add_row(fact, value)
    health = out.table("Health", ("name", "status", "text"))
    for row in facts["health"]:
        health.add_row(row["name"], styled(row["status"], STATUS_STYLES), row["text"])
    out.show(overview, Text(), health, Text())
    storage = facts["storage"]
    if storage["tables"] is None:
        out.line(f"Storage: not available ({storage['error']})", style="yellow")
    else:
        sizes = out.table("Storage", ("table", "rows", "size"), right=("rows", "size"))
        for row in storage["tables"]:
            sizes.add_row(row["table"], f"{row['rows']:,}", human(row["bytes"]))
        if storage["database_bytes"] is not None:
            sizes.add_row(Text("whole database", style="bold"), "", human(storage["database_bytes"]))
        out.show(sizes)
    stats = out.table("Counters", ("name", "value"), right=("value",))
    for name, value in sorted(facts["stats"].items()):
        stats.add_row(name, f"{value:,}")
    out.show(Text(), stats)
    return 0


def overview_rows(facts: dict[str, Any]) -> list[tuple[str, Text | str]]:
    bridge, writes, plugins = facts["bridge"], facts["writes"], facts["plugins"]

    def up(flag: bool) -> Text:
        return Text("up", style="green") if flag else Text("down", style="bold red")

    return [
        ("bridge", f"oscbridge {bridge['version']} on {session.host_port(bridge['host'], bridge['port'])}, "
                   f"up {duration(bridge['uptime_seconds'])}"),
        ("plugins", f"{plugins['bound']} bound, {plugins['identified']} with a track id"),
        ("database", up(facts["database"]["up"])),
        ("ollama", up(facts["ollama"]["up"])),
        ("writes", f"{writes['queued']} queued, {writes['spooled']} spooled"),
        ("spool", f"{human(writes['spool_bytes'])} not yet in PostgreSQL"),
        ("rejected writes", Text(str(writes["rejected"]), style="yellow" if writes["rejected"] else "")),
        ("dropped best-effort writes", str(writes["dropped_best_effort"])),
        ("free disk", human(facts["disk"]["free_mib"] * MIB)),
        ("embedding backlog", backlog_text(facts["embedding"])),
    ]


def backlog_text(embedding: dict[str, Any]) -> str:
    backlog, rate, left = embedding["backlog"], embedding["rate_per_second"], embedding["seconds_left"]
    if not backlog:
        return f"nothing waiting ({embedding['embedded_since_start']:,} embedded since start)"
    text = f"{backlog:,} messages waiting"
    if rate is None:
        return text
    if not rate:
        return text + ", none embedded in the last sample (see the ollama row below)"
    return text + f", {rate:.1f}/s, about {duration(left)} left" if left is not None else text
