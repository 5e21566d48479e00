"""`oscbridge replay FILE`: sends the datagrams of a recording that were addressed to the bridge, again.

A replay reproduces a musician's session against a test bridge: the same bytes (malformed ones included),
the same spacing (divided by `--speed`), and one sending socket per original source, so the bridge sees as
many distinct source ports as there were plugin instances - its source-port correlation depends on that.
Datagrams the bridge sent, or that went to plugins, are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import socket
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from oscbridge.protocol import PLUGIN_SENDS
from oscbridge.tools.progress import SILENT, Progress, progress
from oscbridge.tools.recording import (
    Endpoint,
    ReadStats,
    RecordedDatagram,
    decode_osc,
    format_endpoint,
    parse_host_port,
    read_recording,
)

DEFAULT_BRIDGE_PORT: Final = 8999
_YIELD_EVERY: Final = 64  # at speed 0, let the loop breathe this often so receivers in the same process run
_SEND_RETRY_DELAY: Final = 0.001

# What plugins send to the bridge; used to find the bridge port of a recording that never used 8999.
PLUGIN_TO_BRIDGE_ADDRESSES: Final = frozenset(PLUGIN_SENDS)


@dataclass(slots=True)
class ReplayStats:
    """What a replay did. `source_ports` maps each original source (`ip:port`) to the local port used for it."""

    bridge_port: int = DEFAULT_BRIDGE_PORT
    read: int = 0
    sent: int = 0
    skipped: int = 0
    errors: int = 0
    duration: float = 0.0
    source_ports: dict[str, int] = field(default_factory=dict)
    reader: ReadStats = field(default_factory=ReadStats)

    @property
    def sources(self) -> int:
        return len(self.source_ports)

    def as_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["sources"] = self.sources
        return result


def detect_bridge_port(path: str | Path) -> int:
    """The port the recording's bridge listened on: 8999 if anything was sent there, else the port that most
    plugin messages went to, else 8999."""
    counts: Counter[int] = Counter()
    for record in read_recording(path):
        if record.dst[1] == DEFAULT_BRIDGE_PORT:
            return DEFAULT_BRIDGE_PORT
        decoded = decode_osc(record.data)
        if decoded is not None and decoded[0] in PLUGIN_TO_BRIDGE_ADDRESSES:
            counts[record.dst[1]] += 1
    return counts.most_common(1)[0][0] if counts else DEFAULT_BRIDGE_PORT


async def replay(
    path: str | Path,
    target: Endpoint = ("127.0.0.1", DEFAULT_BRIDGE_PORT),
    speed: float = 1.0,
    only_to_port: int | None = None,
    progress: Progress = SILENT,
) -> ReplayStats:
    """Sends every datagram of `path` whose destination port is the bridge's (`only_to_port`, else detected)
    to `target`, keeping the original gaps divided by `speed` (0 = as fast as possible). `progress` counts the
    datagrams sent (or failed) of those to send."""
    if not math.isfinite(speed) or speed < 0:
        raise ValueError(f"speed must be a finite number >= 0, got {speed}")
    stats = ReplayStats(bridge_port=only_to_port if only_to_port is not None else detect_bridge_port(path))
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(target[0], target[1], type=socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = infos[0]
    if progress.shown:
        progress.start(count_to_port(path, stats.bridge_port))
    senders = _Senders(family, str(sockaddr[0]))
    started = loop.time()
    elapsed, previous_t = 0.0, None
    try:
        for record in read_recording(path, stats.reader):
            stats.read += 1
            if record.dst[1] != stats.bridge_port:
                stats.skipped += 1
                continue
            if previous_t is not None:
                elapsed += max(0.0, record.t - previous_t)  # appended recordings restart at t=0: no wait
            previous_t = record.t
            await _pace(loop, started, elapsed, speed, stats.sent)
            if await senders.send(record, sockaddr):
                stats.sent += 1
            else:
                stats.errors += 1
            progress.advance()
    finally:
        stats.source_ports = senders.close()
        stats.duration = loop.time() - started
    return stats


def count_to_port(path: str | Path, port: int) -> int:
    """How many datagrams of the recording went to `port`: the total of a progress line. It is a pass of its own
    (15-18 us a datagram of JSONL, where a replay at --speed 0 takes 20-30 us to send one: measured with 50,000
    datagrams on a 2-core Linux VM), so it is made only when somebody watches the progress; at --speed 1 it is
    nothing next to the length of the recording."""
    return sum(1 for record in read_recording(path) if record.dst[1] == port)


async def _pace(loop: asyncio.AbstractEventLoop, started: float, elapsed: float, speed: float, sent: int) -> None:
    """Waits until `elapsed / speed` seconds after the start; deadlines are absolute, so errors do not add up."""
    if speed == 0:
        if sent % _YIELD_EVERY == _YIELD_EVERY - 1:
            await asyncio.sleep(0)
        return
    delay = started + elapsed / speed - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


class _Senders:
    """One UDP socket per original source, bound to loopback when the target is on loopback."""

    def __init__(self, family: int, target_host: str) -> None:
        self._family = family
        loopback = ipaddress.ip_address(target_host.split("%")[0]).is_loopback
        if family == socket.AF_INET6:
            self._bind_host = "::1" if loopback else "::"
        else:
            self._bind_host = "127.0.0.1" if loopback else "0.0.0.0"
        self._sockets: dict[Endpoint, socket.socket] = {}

    def _socket_for(self, source: Endpoint) -> socket.socket:
        sock = self._sockets.get(source)
        if sock is None:
            sock = socket.socket(self._family, socket.SOCK_DGRAM)
            sock.bind((self._bind_host, 0))
            sock.setblocking(False)
            self._sockets[source] = sock
        return sock

    async def send(self, record: RecordedDatagram, sockaddr: tuple[Any, ...]) -> bool:
        sock = self._socket_for(record.src)
        for _ in range(1000):  # a full send buffer clears within milliseconds on loopback
            try:
                sock.sendto(record.data, sockaddr)
                return True
            except BlockingIOError:
                await asyncio.sleep(_SEND_RETRY_DELAY)
            except OSError:
                return False
        return False

    def close(self) -> dict[str, int]:
        ports = {format_endpoint(src): sock.getsockname()[1] for src, sock in self._sockets.items()}
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        return ports


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the replay options to `parser`, so the daemon's CLI can mount them as `oscbridge replay`."""
    parser.add_argument("file", type=Path, help="recording: JSONL (oscbridge serve --record), pcap or pcapng")
    parser.add_argument("--speed", type=float, default=1.0, help="time factor; 2 = twice as fast, 0 = no gaps")
    parser.add_argument("--target", default=f"127.0.0.1:{DEFAULT_BRIDGE_PORT}", help="where to send (host:port)")
    parser.add_argument(
        "--only-to-port",
        type=int,
        default=None,
        help="replay datagrams sent to this port (default: the recording's bridge port, normally 8999)",
    )


def run(args: argparse.Namespace) -> int:
    """Runs a replay from parsed arguments; prints the stats as one JSON line; returns the exit status. On a
    terminal, stderr shows the progress of the long ones."""
    try:
        target = parse_host_port(args.target)
    except ValueError as exc:
        print(f"oscbridge replay: --target: {exc}", file=sys.stderr)
        return 2
    try:
        with progress("replay", "datagrams") as shown:
            stats = asyncio.run(replay(args.file, target, args.speed, args.only_to_port, shown))
    except (OSError, ValueError) as exc:
        print(f"oscbridge replay: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(stats.as_dict()))
    return 0
