"""`oscbridge call ADDRESS [ARGS...]`: one /bridge/* request, raw, with its reply printed (tab-separated values,
one line per row of a list reply).

When the names of the reply's values are known (`terminal/columns.py`), a terminal shows the reply as a table
under a header of those names. A script reading a pipe gets the tab-separated values alone, as it always did;
`--header` adds the names (snake_case, as in the JSON of the terminal commands) as a first tab-separated line,
and `--no-header` prints plain values on a terminal too. Reaching the bridge, and saying what went wrong, is
`terminal/session.py`'s job, as for every terminal command.
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

from oscbridge.flags import add_bridge_client_flags
from oscbridge.tools.terminal import session
from oscbridge.tools.terminal.columns import LISTS, columns_of
from oscbridge.tools.terminal.output import Output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address")
    parser.add_argument("args", nargs="*", help="arguments after the request id; i:5 f:1.5 s:7 force a type")
    add_bridge_client_flags(parser)
    parser.add_argument("--tcp", action="store_true", help="use TCP (no size limit) instead of UDP")
    parser.add_argument("--timeout", type=float, default=session.REQUEST_TIMEOUT)
    parser.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                        help="print the names of the values first (default: only when stdout is a terminal)")


def parse_arg(text: str) -> Any:
    """`i:5`, `f:1.5`, `s:007` force a type; otherwise whole numbers are ints, decimals floats, else strings."""
    if len(text) > 2 and text[1] == ":" and text[0] in "ifs":
        kind, raw = text[0], text[2:]
        return int(raw) if kind == "i" else float(raw) if kind == "f" else raw
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def run(ns: argparse.Namespace) -> int:
    return session.run(ns, partial(_call, ns), tcp=ns.tcp)


async def _call(ns: argparse.Namespace, bridge: session.Session, out: Output) -> int:
    replies = await bridge.request(ns.address, *[parse_arg(a) for a in ns.args], timeout=ns.timeout,
                                   is_list=ns.address in LISTS)
    names = columns_of(ns.address)
    header = out.terminal if ns.header is None else ns.header
    if names is not None and header and out.terminal:  # for a person: aligned, under a bold header
        table = out.table(None, names)
        for values in replies:
            table.add_row(*(str(v) for v in values))
        out.show(table)
        return 0
    if names is not None and header:
        out.file.write("\t".join(names) + "\n")
    for values in replies:
        out.file.write("\t".join(str(v) for v in values) + "\n")
    return 0
