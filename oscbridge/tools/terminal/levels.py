"""`oscbridge levels [--watch]`: the latest level of each track (/bridge/levels), with its Logic track from the
mapping.

With `--watch` the levels are asked again every `--interval` seconds (default 0.25: the plugins send about 24
updates a second, and a meter redrawn four times a second reads as live without costing the bridge anything worth
measuring). On a terminal each track gets a meter bar, redrawn in place with rich's Live display; piped, each round
prints one plain line per track with the time first; with `--json`, one JSON document per round and line.
Ctrl-C ends it (or `--count` rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import datetime
from functools import partial
from typing import Any

from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from oscbridge.flags import add_bridge_client_flags
from oscbridge.tools.terminal import session
from oscbridge.tools.terminal.output import Output, cell
from oscbridge.tools.terminal.tracks import with_tracks

NUMBERS = ("rms_dbfs", "band_1_db", "band_2_db", "band_3_db", "band_4_db", "seconds_since_update")
COLUMNS = ("track_number", "plugin_id", *NUMBERS, "track_name")
METER_FLOOR = -60.0  # dBFS at the meter's left end; the plugin floors at -100, but below -60 is silence to an ear
METER_WIDTH = 30
STALE = 1.0  # seconds without an update after which a row is dimmed (a muted strip, a stopped transport)


def meter_style(dbfs: float) -> str:
    """Green, then yellow from -18 dBFS (the usual mixing reference), red from -6 (close to clipping)."""
    return "red" if dbfs >= -6 else "yellow" if dbfs >= -18 else "green"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bridge_client_flags(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--watch", action="store_true", help="keep showing the levels, live, until Ctrl-C")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between rounds with --watch")
    parser.add_argument("--count", type=int, default=0, help="stop after this many rounds with --watch (0 = never)")


def run(ns: argparse.Namespace) -> int:
    if ns.interval < 0.05:
        session.fail("--interval must be at least 0.05 seconds")
        return 2
    body = partial(watch, interval=ns.interval, count=ns.count) if ns.watch else show
    return session.run(ns, body)


async def levels(bridge: session.Session) -> list[dict[str, Any]]:
    """/bridge/levels rows by name, with the track number and name the mapping gives their track id."""
    return [{name: row.get(name, track.get(name)) for name in COLUMNS}
            for row, track in await with_tracks(bridge, "/bridge/levels")]


async def show(bridge: session.Session, out: Output) -> int:
    rows = await levels(bridge)
    if out.json_mode:
        out.json({"levels": rows})
        return 0
    out.show(plain_table(out, rows, title="Levels"))
    if not rows and out.terminal:
        out.line("No track has sent levels yet.", style="dim")
    return 0


def plain_table(out: Output, rows: list[dict[str, Any]], *, title: str | None = None, header: bool = True,
                stamp: str | None = None) -> Table:
    names = ("time", *COLUMNS) if stamp is not None else COLUMNS
    table = out.table(title, names, right=("track_number", *NUMBERS))
    table.show_header = header
    if stamp is not None:  # rounds after the first have no header, but must line up under it
        for column in table.columns:
            column.min_width = len(str(column.header))
    for row in rows:
        values = [f"{row[name]:.1f}" if name in NUMBERS else cell(row[name]) for name in COLUMNS]
        table.add_row(*([stamp] if stamp is not None else []), *values)
    return table


def meters(rows: list[dict[str, Any]], out: Output) -> Table:
    """A meter bar per track, for the live display."""
    table = out.table(f"Levels at {datetime.now():%H:%M:%S}", ("track", "plugin_id", "meter", "rms_dbfs", "bands_db",
                                                                  "track_name"), right=("track", "rms_dbfs"))
    for row in rows:
        rms = float(row["rms_dbfs"])
        stale = row["seconds_since_update"] > STALE
        bar = ProgressBar(total=-METER_FLOOR, completed=min(max(rms - METER_FLOOR, 0.0), -METER_FLOOR),
                          width=METER_WIDTH, complete_style=meter_style(rms), finished_style="red")
        bands = " ".join(f"{row[f'band_{n}_db']:6.1f}" for n in range(1, 5))
        table.add_row(cell(row["track_number"]), row["plugin_id"], bar, f"{rms:.1f}", bands,
                      cell(row["track_name"]), style="dim" if stale else "")
    if not rows:
        table.add_row("", Text("no levels yet", style="dim"), "", "", "", "")
    return table


async def watch(bridge: session.Session, out: Output, interval: float, count: int) -> int:
    rounds = 0
    if out.terminal and not out.json_mode:
        with Live(meters(await levels(bridge), out), console=out.console, auto_refresh=False) as live:
            while True:
                rounds += 1
                if count and rounds >= count:
                    return 0
                await asyncio.sleep(interval)
                live.update(meters(await levels(bridge), out), refresh=True)
    while not count or rounds < count:
        if rounds:
            await asyncio.sleep(interval)
        rows = await levels(bridge)
        if out.json_mode:
            out.json_line({"time": time.time(), "levels": rows})
        else:
            out.show(plain_table(out, rows, header=rounds == 0, stamp=f"{datetime.now():%H:%M:%S.%f}"[:12]))
        rounds += 1
    return 0
