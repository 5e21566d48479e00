"""`oscbridge mcp`: the bridge as an MCP server on stdio, the way desktop assistants launch one (docs/mcp.md).

A separate process that holds no state: each tool call opens a session with the running bridge over OSC (TCP, so
that no reply is too large; the same session, ping and error words as the terminal commands,
tools/terminal/session.py) and closes it. A bridge that is not running, or restarts, is a tool error that says so,
never the end of this server. Nothing but the protocol goes to stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from oscbridge.flags import add_bridge_client_flags, settings_from
from oscbridge.logs import configure_logging
from oscbridge.mcp.link import BridgeLink, CallFailed, Connect, Unreachable, refuse_unstorable
from oscbridge.osc.transport import local_target
from oscbridge.tools.terminal import session

DESCRIPTION = """\
Serve the running bridge to an MCP client (Claude Desktop, an IDE agent, a local model runner) over stdin and
stdout. The client starts this command itself; you only add it to the client's configuration, for example:

  {"mcpServers": {"oscbridge": {"command": "oscbridge", "args": ["mcp"]}}}

Tools: list_tracks, get_levels, list_plugins, search_context, recent_messages, track_traffic (they only read);
with --allow-control also set_plugin_parameter, calibration_tone, save_message and create_snapshot, each logged
to the conversation. Resources: the track map, the sessions and their conversations, the snapshots. The bridge
must be running (`oscbridge serve`); the same --host/--osc-port/--config as for it find it. See docs/mcp.md."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Only what finds the bridge, and control: not `serve`'s settings flags, whose --host means the address to
    listen on and whose --http-port, --data-dir and --database-url this command would take and ignore."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_bridge_client_flags(parser)
    parser.add_argument("--allow-control", action="store_true",
                        help="also offer the tools that act: set a plugin's GAIN, switch the calibration tone, "
                             "save messages and decisions, create snapshots (off: the client can only read)")


class OscLink:
    """A `BridgeLink` over a terminal session: the bridge's error replies and silences as `Problem`s."""

    def __init__(self, bridge: session.Session) -> None:
        self._bridge = bridge

    async def _request(self, address: str, args: tuple[Any, ...], *, is_list: bool) -> list[list[Any]]:
        refuse_unstorable(address, args)
        try:
            return await self._bridge.request(address, *args, is_list=is_list)
        except session.ReplyError as exc:
            raise CallFailed(address, exc.code, exc.message) from None
        except session.NoAnswer as exc:
            raise Unreachable(f"{exc}. It may be overloaded: try again in a moment; if it keeps happening, ask the "
                              "user to run `oscbridge doctor`.") from None
        except session.NoBridge as exc:
            raise Unreachable(_not_running(self._bridge.where, str(exc))) from None

    async def call(self, address: str, *args: Any) -> list[Any]:
        replies = await self._request(address, args, is_list=False)
        return replies[0] if replies else []

    async def rows(self, address: str, *args: Any) -> list[list[Any]]:
        return await self._request(address, args, is_list=True)


def _not_running(where: str, why: str) -> str:
    return (f"The oscbridge bridge is not running: nothing answers on {where} ({why}). Ask the user to start it "
            f"({session.HOW_TO_START}), then try again.")


def osc_connect(host: str, port: int) -> Connect:
    """A `Connect` that opens a session with the bridge at host:port for each tool call."""

    @asynccontextmanager
    async def connect() -> AsyncIterator[BridgeLink]:
        try:
            async with session.connect(host, port, tcp=True) as bridge:
                yield OscLink(bridge)
        except session.NoBridge as exc:  # from the ping: OscLink turns its own into Unreachable
            raise Unreachable(_not_running(session.host_port(host, port), str(exc))) from None

    return connect


def run(ns: argparse.Namespace) -> int:
    from oscbridge.mcp.server import build_server  # the MCP SDK: loaded when the command runs, not for --help

    settings = settings_from(ns)
    configure_logging("warning")  # on stderr: stdout carries the protocol
    connect = osc_connect(local_target(settings.host), settings.osc_port)
    server = build_server(connect, allow_control=bool(ns.allow_control))
    asyncio.run(server.run_stdio_async())
    return 0
