"""`oscbridge search TEXT [--limit N]`: what the bridge's context search (/bridge/context/search) finds for TEXT in
the current project, best first, with its score and why each message was chosen (`semantic`, `keyword`, `recent`,
`decision`, or several joined by `+`; docs/memory.md). Replies with long messages do not fit UDP: the session
asks again over TCP by itself."""

from __future__ import annotations

import argparse
from datetime import datetime
from functools import partial

from oscbridge.flags import add_bridge_client_flags
from oscbridge.tools.terminal import session
from oscbridge.tools.terminal.columns import named
from oscbridge.tools.terminal.output import Output, one_line

ADDRESS = "/bridge/context/search"
SHOWN = ("score", "why", "role", "created_at", "content")
SEARCH_TIMEOUT = 10.0  # the query's embedding (when Ollama answers) and the hybrid SQL; 13-18 ms measured


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="+", help="what to look for (several words are one query)")
    add_bridge_client_flags(parser)
    parser.add_argument("--limit", type=int, default=10, help="how many messages, 1-100 (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")


def run(ns: argparse.Namespace) -> int:
    return session.run(ns, partial(search, query=" ".join(ns.text), limit=ns.limit))


async def search(bridge: session.Session, out: Output, query: str, limit: int) -> int:
    rows = [named(ADDRESS, values) for values in await bridge.rows(ADDRESS, query, limit, timeout=SEARCH_TIMEOUT)]
    if out.json_mode:
        out.json({"query": query, "results": rows})
        return 0
    table = out.table(f"Context for {query!r}", SHOWN, right=("score",))
    for row in rows:
        created = datetime.fromisoformat(row["created_at"]).astimezone().strftime("%Y-%m-%d %H:%M")
        content = row["content"] if out.terminal else one_line(row["content"])
        table.add_row(f"{row['score']:.3f}", row["why"], row["role"], created, content)
    out.show(table)
    if not rows and out.terminal:
        out.line("Nothing found in this project.", style="dim")
    return 0
