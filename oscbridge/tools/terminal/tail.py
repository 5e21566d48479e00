"""`oscbridge tail [--address PATTERN] [--sender S]`: the control traffic the bridge stores, as it happens, like
`tail -f`.

It follows `/bridge/debug/tail` (docs/bridge-api-notes.md): the bridge keeps its last 1000 debug rows in memory, each
with a sequence number, and answers the rows after the last one a follower got. This command asks every
`--interval` seconds (0.25: a person reading sees no delay, and the bridge answers from memory); a gap in the
sequence numbers (rows that scrolled out of the bridge's memory between two looks) is shown as a line saying how
many were missed. At the start it shows the last `--lines` rows that match. Plugin traffic rows start with the
OSC address (`/aiplayer/port_confirmed ,sis ...`), which `--address` matches as an OSC address pattern
(`/aiplayer/*`, `/aiplayer/{rms,telemetry}`); `--sender` keeps the rows of one sender (`127.0.0.1:57012`, or
the orchestrator's name). A restart of the bridge (its uptime went down) starts the count again.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from rich.table import Table

from oscbridge.flags import add_bridge_client_flags
from oscbridge.osc.pattern import AddressPattern
from oscbridge.tools.terminal import session
from oscbridge.tools.terminal.columns import named
from oscbridge.tools.terminal.output import SEVERITY_STYLES, Output, one_line, styled

ADDRESS = "/bridge/debug/tail"
# The columns of the table (JSON lines carry every value of a row, by its name in columns.py).
SHOWN = ("seq", "time", "type", "sender", "receiver", "severity", "content")
BATCH = 500  # the most rows one /bridge/debug/tail answers
# Widths of the columns on a terminal, so that rows printed in separate batches line up.
WIDTHS = {"seq": 7, "time": 12, "type": 8, "sender": 21, "receiver": 21, "severity": 8}


@dataclass(frozen=True)
class Filter:
    address: AddressPattern | None = None
    sender: str | None = None

    def keeps(self, row: dict[str, Any]) -> bool:
        if self.sender is not None and row["sender"] != self.sender:
            return False
        if self.address is None:
            return True
        first = str(row["content"]).split(" ", 1)[0]
        return first.startswith("/") and self.address.matches(first)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bridge_client_flags(parser)
    parser.add_argument("--address", help="OSC address pattern the row's address must match, e.g. '/aiplayer/*'")
    parser.add_argument("--sender", help="only rows from this sender (e.g. 127.0.0.1:57012)")
    parser.add_argument("-n", "--lines", type=int, default=10, help="rows from before the start to show (default 10)")
    parser.add_argument("--no-follow", dest="follow", action="store_false",
                        help="print the last rows and stop, like tail without -f")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between looks (default 0.25)")
    parser.add_argument("--json", action="store_true", help="one JSON object per row and line")


def run(ns: argparse.Namespace) -> int:
    pattern = None
    if ns.address is not None:
        try:
            if not ns.address.startswith("/"):
                raise ValueError("an OSC address pattern starts with '/'")
            pattern = AddressPattern(ns.address)
        except ValueError as exc:
            session.fail(f"--address {ns.address!r}: {exc}")
            return 2
    if ns.interval < 0.05 or ns.lines < 0:
        session.fail("--interval must be at least 0.05 seconds and --lines at least 0")
        return 2
    return session.run(ns, partial(tail, keep=Filter(pattern, ns.sender), lines=ns.lines, follow=ns.follow,
                                   interval=ns.interval))


class Printer:
    """Prints rows as they come: aligned columns with one header at the top, or JSON lines."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.header = True

    def rows(self, rows: list[dict[str, Any]]) -> None:
        if self.out.json_mode:
            for row in rows:
                self.out.json_line(row)
            return
        if not rows and not self.header:
            return
        table = self._table()
        for row in rows:
            moment = datetime.fromtimestamp(row["time"]).strftime("%H:%M:%S.%f")[:12]
            table.add_row(str(row["seq"]), moment, row["type"], row["sender"], row["receiver"],
                          styled(row["severity"], SEVERITY_STYLES), one_line(row["content"]))
        self.out.show(table)
        self.header = False

    def note(self, text: str, **facts: Any) -> None:
        """Something about the stream itself (missed rows, a restart): a line, or a JSON line with `note`."""
        if self.out.json_mode:
            self.out.json_line({"note": text, **facts})
        else:
            self.out.line(f"... {text}", style="yellow")

    def _table(self) -> Table:
        table = self.out.table(None, SHOWN, right=("seq",))
        table.show_header = self.header
        for column, name in zip(table.columns, SHOWN, strict=True):
            width = WIDTHS.get(name)
            if width is not None:
                column.width = width
            if self.out.terminal or width is not None:
                column.no_wrap = True
                column.overflow = "ellipsis"
        return table


async def tail(bridge: session.Session, out: Output, keep: Filter, lines: int, follow: bool,
               interval: float) -> int:
    printer = Printer(out)
    rows = await fetch(bridge, 0)
    shown = [row for row in rows if keep.keeps(row)]
    printer.rows(shown[-lines:] if lines else [])
    last, uptime = (rows[-1]["seq"] if rows else 0), bridge.uptime
    while follow:
        await asyncio.sleep(interval)
        rows = await fetch(bridge, last)
        if not rows:
            await bridge.ping()
            if bridge.uptime < uptime:  # a new bridge: its sequence numbers start again from 1
                printer.note("the bridge restarted; following the new one", restarted=True)
                last = 0
            uptime = bridge.uptime
            continue
        if rows[0]["seq"] > last + 1:
            missed = rows[0]["seq"] - last - 1
            printer.note(f"{missed} rows missed: they scrolled out of the bridge's memory between two looks",
                         missed=missed)
        last = rows[-1]["seq"]
        printer.rows([row for row in rows if keep.keeps(row)])
    return 0


async def fetch(bridge: session.Session, after: int) -> list[dict[str, Any]]:
    """The rows after sequence number `after` (the newest BATCH of them), oldest first, by name."""
    return [named(ADDRESS, values) for values in await bridge.rows(ADDRESS, after, BATCH)]
