"""The bridge's sockets: one UDP socket and one TCP listener on the same port, both feeding one callback.

The sockets are bound before anything else starts, so a second bridge fails at once with a clear message and
datagrams that arrive while the database starts wait in the kernel buffer instead of being lost. Reading only
begins when `start_reading` is called.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

from oscbridge.logs import get_logger
from oscbridge.osc import slip

Addr = tuple[str, int]
log = get_logger("oscbridge.transport")


class PortInUse(OSError):
    """Another process holds the bridge's port; the message names the port and what to do."""


class Peer(Protocol):
    """Where a request came from and how to answer it on the same transport."""

    kind: str  # "udp" or "tcp"
    addr: Addr

    def send(self, data: bytes) -> None: ...


@dataclass(slots=True)
class UdpPeer:
    kind: str
    addr: Addr
    transport: asyncio.DatagramTransport
    sent_hook: Callable[[bytes, Addr], None] | None = None

    def send(self, data: bytes) -> None:
        self.transport.sendto(data, self.addr)
        if self.sent_hook is not None:
            self.sent_hook(data, self.addr)


@dataclass(slots=True)
class TcpPeer:
    kind: str
    addr: Addr
    writer: asyncio.StreamWriter

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(slip.encode(data))




def bind_udp(host: str, port: int, rcvbuf: int) -> socket.socket:
    """Binds the UDP socket with a large receive buffer (bursts of telemetry must not overflow it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    except OSError:
        log.warning("udp_rcvbuf_refused", requested=rcvbuf)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                exc.errno,
                f"UDP port {port} on {host} is already in use: another oscbridge (or the Chatty Channels app) "
                f"is running. Stop it first, or choose another port with --osc-port.",
            ) from exc
        raise
    sock.setblocking(False)
    return sock


def bind_tcp(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only for sockets created with it, and a
    # list reply of many small messages would otherwise wait ~40 ms for delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                exc.errno, f"TCP port {port} on {host} is already in use: another oscbridge is running."
            ) from exc
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


class UdpServer(asyncio.DatagramProtocol):
    """Hands every datagram to `on_datagram(data, addr)`; sends with `send(data, addr)`."""

    def __init__(self, on_datagram: Callable[[bytes, Addr], None]) -> None:
        self._on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None
        self.send_errors = 0
        self.sent_hook: Callable[[bytes, Addr], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport, but has the same interface.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a plugin that went away shows up here on Linux; it is not our failure.
        self.send_errors += 1

    def send(self, data: bytes, addr: Addr) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        try:
            self.transport.sendto(data, addr)
        except OSError:
            self.send_errors += 1
            return
        if self.sent_hook is not None:
            self.sent_hook(data, addr)

    def peer(self, addr: Addr) -> UdpPeer:
        assert self.transport is not None
        return UdpPeer("udp", addr, self.transport, self.sent_hook)


class TcpServer:
    """Accepts OSC 1.1 (SLIP-framed) connections; each packet goes to `on_packet(data, peer)`."""

    def __init__(self, on_packet: Callable[[bytes, TcpPeer], None]) -> None:
        self._on_packet = on_packet
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._serve, sock=sock, limit=1 << 20)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername") or ("?", 0)
        peer = TcpPeer("tcp", (str(peername[0]), int(peername[1])), writer)
        decoder = slip.SlipDecoder()
        self._writers.add(writer)
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                for packet in decoder.feed(chunk):
                    self._on_packet(packet, peer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
