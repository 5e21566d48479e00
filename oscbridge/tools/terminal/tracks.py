"""`oscbridge tracks`: which track id sits on which Logic track in the current project (/bridge/mapping/list),
with the port and instance of the live plugin that carries it."""

from __future__ import annotations

import argparse
from typing import Any

from oscbridge.flags import add_bridge_client_flags
from oscbridge.tools.terminal import session
from oscbridge.tools.terminal.columns import LISTS, named, none_for_absent
from oscbridge.tools.terminal.output import Output, cell

COLUMNS = LISTS["/bridge/mapping/list"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bridge_client_flags(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")


def run(ns: argparse.Namespace) -> int:
    return session.run(ns, show)


async def mappings(bridge: session.Session) -> list[dict[str, Any]]:
    """The mapping rows by name; no live plugin (port -1, instance "") as None."""
    rows = [named("/bridge/mapping/list", values) for values in await bridge.rows("/bridge/mapping/list")]
    return [{**row, "port": none_for_absent(row["port"]), "instance_id": none_for_absent(row["instance_id"])}
            for row in rows]


async def with_tracks(bridge: session.Session, address: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each row of the list request `address` by name, beside the mapping row of its `plugin_id` ({} if none)."""
    tracks = {row["plugin_id"]: row for row in await mappings(bridge)}
    rows = [named(address, values) for values in await bridge.rows(address)]
    return [(row, tracks.get(row["plugin_id"], {})) for row in rows]


async def show(bridge: session.Session, out: Output) -> int:
    rows = await mappings(bridge)
    if out.json_mode:
        out.json({"tracks": rows})
        return 0
    table = out.table("Tracks", COLUMNS, right=("track_number", "port"))
    for row in rows:
        table.add_row(*(cell(row[name]) for name in COLUMNS))
    out.show(table)
    if not rows and out.terminal:
        out.line("No track is mapped in this project yet (`oscbridge calibrate`, or /bridge/mapping/set).",
                 style="dim")
    return 0
