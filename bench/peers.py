"""The servers the benchmarks measure the bridge against, each run as a process of its own:

    python -m bench.peers NAME PORT

* `echo`: a bare Python UDP echo, a blocking socket in a loop; the floor any Python UDP service sits on.
* `echo-pings`: the same, answering only datagrams that start with `/bridge/ping` (under a hostile storm, echoing
  the storm back would measure the sender's socket, not the server), with a 4 MiB receive buffer.
* `uvloop-echo`: the echo on an asyncio DatagramProtocol under uvloop: what the event loop itself adds.
* `python-osc`: python-osc's stock `AsyncIOOSCUDPServer` with a `Dispatcher`, on asyncio's default loop.
* `liblo`: liblo's C stack through pyliblo3 (a blocking `Server.recv` loop; parsing and dispatch in C, the
  handlers in Python).

The two OSC servers map the same addresses as the bridge: `/bridge/mapping/track` answered like the bridge
(`/bridge/mapping/track/reply [req_id, "ok", name, number, port, instance]`, nothing for an empty request id),
`/bridge/ping` answered `[req_id, "ok"]`, the plugin addresses of `oscbridge.protocol` handled (telemetry and rms
stored in a dict, like the bridge's levels; the others ignored), and `/count PORT`, which sends
`/count [datagrams handled]` to that port on the sender's host, so a benchmark can tell what was received. Their
handlers do the same kind of work as the bridge's (a dict lookup or store), so the difference is the stack.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from typing import Any, cast

from oscbridge.protocol import PLUGIN_SENDS, RMS, RMS_TAGS, TELEMETRY, TELEMETRY_TAGS

LOOPBACK = "127.0.0.1"
TRACK = "/bridge/mapping/track"
PING = "/bridge/ping"
COUNT = "/count"
# What the bridge answers for TR1 after `/bridge/mapping/set 1 Kick TR1`: no plugin has claimed the track yet.
MAPPING = {"TR1": ("Kick", 1, -1, "")}


def _bound(port: int, rcvbuf: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((LOOPBACK, port))
    return sock


def echo(port: int) -> None:
    sock = _bound(port)
    while True:
        data, addr = sock.recvfrom(65536)
        sock.sendto(data, addr)


def echo_pings(port: int) -> None:
    sock, ping = _bound(port, rcvbuf=4 << 20), PING.encode()
    while True:
        data, addr = sock.recvfrom(65536)
        if data.startswith(ping):
            sock.sendto(data, addr)


def uvloop_echo(port: int) -> None:
    import asyncio

    import uvloop

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(data, addr)

    async def serve() -> None:
        await asyncio.get_running_loop().create_datagram_endpoint(Echo, local_addr=(LOOPBACK, port))
        await asyncio.Event().wait()

    uvloop.run(serve())


def python_osc(port: int) -> None:
    import asyncio

    from pythonosc.dispatcher import Dispatcher
    from pythonosc.osc_server import AsyncIOOSCUDPServer
    from pythonosc.udp_client import SimpleUDPClient

    levels: dict[str, tuple[Any, ...]] = {}
    count = 0

    def track(client: tuple[str, int], address: str, *args: Any) -> tuple[Any, ...] | None:
        nonlocal count
        count += 1
        if len(args) != 2:
            return None
        found = MAPPING.get(args[1])
        return (f"{TRACK}/reply", args[0], "ok", *found) if found is not None and args[0] else None

    def level(address: str, *args: Any) -> None:
        nonlocal count
        count += 1
        if args:
            levels[args[0]] = args[1:]

    def ping(client: tuple[str, int], address: str, *args: Any) -> tuple[Any, ...]:
        return (f"{PING}/reply", args[0] if args else "", "ok")

    def report(client: tuple[str, int], address: str, *args: Any) -> None:
        SimpleUDPClient(client[0], int(args[0])).send_message(COUNT, count)

    # Without strict timing: a bundle time-tagged in the future is dispatched at once, as the bridge does.
    dispatcher = Dispatcher(strict_timing=False)
    for plugin_address in PLUGIN_SENDS:
        dispatcher.map(plugin_address, lambda *args: None)
    dispatcher.map(TELEMETRY, level)
    dispatcher.map(RMS, level)
    dispatcher.map(TRACK, track, needs_reply_address=True)
    dispatcher.map(PING, ping, needs_reply_address=True)
    dispatcher.map(COUNT, report, needs_reply_address=True)

    async def serve() -> None:
        loop = cast(asyncio.BaseEventLoop, asyncio.get_running_loop())  # python-osc's hint is narrower than needed
        server = AsyncIOOSCUDPServer((LOOPBACK, port), dispatcher, loop)
        await server.create_serve_endpoint()
        await asyncio.Event().wait()

    asyncio.run(serve())


def liblo(port: int) -> None:
    import pyliblo3

    server = pyliblo3.Server(port, pyliblo3.UDP)
    levels: dict[str, list[Any]] = {}
    count = 0

    def track(path: str, args: list[Any], types: str, src: Any) -> None:
        nonlocal count
        count += 1
        found = MAPPING.get(args[1])
        if found is not None and args[0]:
            server.send(src, f"{TRACK}/reply", args[0], "ok", *found)

    def level(path: str, args: list[Any], types: str, src: Any) -> None:
        nonlocal count
        count += 1
        levels[args[0]] = args[1:]

    def ping(path: str, args: list[Any], types: str, src: Any) -> None:
        server.send(src, f"{PING}/reply", args[0], "ok")

    def report(path: str, args: list[Any], types: str, src: Any) -> None:
        server.send((src.hostname, args[0]), COUNT, count)

    # liblo dispatches on path and type tags, in C; the first matching method wins.
    server.add_method(TELEMETRY, TELEMETRY_TAGS, level)
    server.add_method(RMS, RMS_TAGS, level)
    for plugin_address in PLUGIN_SENDS:
        server.add_method(plugin_address, None, lambda *args: None)
    server.add_method(TRACK, "ss", track)
    server.add_method(PING, "s", ping)
    server.add_method(COUNT, "i", report)
    while True:
        server.recv()


PEERS: dict[str, Callable[[int], None]] = {
    "echo": echo, "echo-pings": echo_pings, "uvloop-echo": uvloop_echo, "python-osc": python_osc, "liblo": liblo,
}


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] not in PEERS:
        raise SystemExit(f"usage: python -m bench.peers {{{','.join(PEERS)}}} PORT")
    PEERS[argv[0]](int(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
