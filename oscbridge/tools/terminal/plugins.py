"""`oscbridge plugins`: every plugin instance the bridge knows (/bridge/plugins), with the track its track id is
mapped to in the current project (/bridge/mapping/list)."""

from __future__ import annotations

import argparse
from typing import Any

from oscbridge.flags import add_bridge_client_flags
from oscbridge.tools.terminal import session
from oscbridge.tools.terminal.columns import none_for_absent
from oscbridge.tools.terminal.output import Output, cell, styled
from oscbridge.tools.terminal.tracks import with_tracks

STATE_STYLES = {"identified": "green", "bound": "cyan", "requesting": "yellow", "assigned": "yellow",
                "failed": "bold red", "gone": "dim"}
COLUMNS = ("instance_id", "port", "state", "plugin_id", "track_number", "track_name", "seconds_since_heard")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bridge_client_flags(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")


def run(ns: argparse.Namespace) -> int:
    return session.run(ns, show)


async def plugins(bridge: session.Session) -> list[dict[str, Any]]:
    """/bridge/plugins rows by name, with the mapped track; -1 and "" (none) as None."""
    found = []
    for row, track in await with_tracks(bridge, "/bridge/plugins"):
        absent = {name: none_for_absent(row[name]) for name in ("port", "plugin_id", "seconds_since_heard")}
        found.append({**row, **absent,
                      "track_number": track.get("track_number"), "track_name": track.get("track_name")})
    return found


async def show(bridge: session.Session, out: Output) -> int:
    found = await plugins(bridge)
    if out.json_mode:
        out.json({"plugins": [{name: row[name] for name in COLUMNS} for row in found]})
        return 0
    table = out.table("Plugins", COLUMNS, right=("port", "track_number", "seconds_since_heard"))
    for row in found:
        heard = row["seconds_since_heard"]
        table.add_row(row["instance_id"], cell(row["port"]), styled(row["state"], STATE_STYLES),
                      cell(row["plugin_id"]), cell(row["track_number"]), cell(row["track_name"]),
                      "never" if heard is None else f"{heard:.1f}")
    out.show(table)
    if not found and out.terminal:
        out.line("No plugin has contacted the bridge yet.", style="dim")
    return 0
