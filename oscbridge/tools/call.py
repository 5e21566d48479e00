"""`oscbridge call ADDRESS [ARGS...]`: one /bridge/* request, raw, with its reply printed (tab-separated values,
one line per row of a list reply)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from oscbridge.client import BridgeClient, BridgeRequestError

# Requests whose reply is a list (one message per row), from BRIDGE-API.md and its documented extensions.
LIST_REQUESTS = frozenset({
    "/bridge/mapping/list", "/bridge/plugins", "/bridge/levels", "/bridge/calibrate/probe",
    "/bridge/message/recent", "/bridge/context/search", "/bridge/stats", "/bridge/storage",
})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address")
    parser.add_argument("args", nargs="*", help="arguments after the request id; i:5 f:1.5 s:7 force a type")
    parser.add_argument("--host")
    parser.add_argument("--osc-port", type=int)
    parser.add_argument("--tcp", action="store_true", help="use TCP (no size limit) instead of UDP")
    parser.add_argument("--timeout", type=float, default=3.0)


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
    return asyncio.run(_call(ns))


async def _call(ns: argparse.Namespace) -> int:
    host, port = ns.host or "127.0.0.1", ns.osc_port or 8999
    try:
        client = await BridgeClient.connect(host, port, transport="tcp" if ns.tcp else "udp")
    except OSError as exc:
        print(f"oscbridge: cannot reach the bridge: {exc}", file=sys.stderr)
        return 1
    try:
        replies = await client.call_raw(ns.address, *[parse_arg(a) for a in ns.args], timeout=ns.timeout,
                                        is_list=ns.address in LIST_REQUESTS)
    except BridgeRequestError as exc:
        print(f"error {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"oscbridge: no reply within {ns.timeout} s (is the bridge running on {host}:{port}?)", file=sys.stderr)
        return 1
    finally:
        await client.close()
    for values in replies:
        print("\t".join(str(v) for v in values))
    return 0
