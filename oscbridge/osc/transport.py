"""The bridge's sockets: one UDP socket and one TCP listener on the same port, both feeding one callback.

The sockets are bound before anything else starts, so a second bridge fails at once with a clear message and
datagrams that arrive while the database starts wait in the kernel buffer instead of being lost. `UdpSocket` can
send from the moment it is made (the plugin hub and the replies use it) and reads once `start` is called, when
everything that handles datagrams exists.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from oscbridge.logs import RateLimitedWarning, get_logger
from oscbridge.osc import slip
from oscbridge.osc.codec import encode_message
from oscbridge.typedefs import Addr

log = get_logger("oscbridge.transport")


class PortInUse(OSError):
    """Another process holds the bridge's port; the message names the port and what to do."""


Record = Callable[[Addr, Addr, bytes], None]
"""`--record`: (source, destination, datagram), for every datagram in and out."""


@dataclass(slots=True)
class UdpPeer:
    """A UDP requester: replies go back from the bridge's own socket to its address."""

    addr: Addr
    udp: UdpSocket
    kind: str = "udp"

    def send(self, data: bytes) -> None:
        self.udp.send(data, self.addr)


@dataclass(frozen=True, slots=True)
class TcpLimits:
    """What one TCP client may cost the bridge (docs/bridge-api-notes.md, "TCP limits"; defaults in Settings).

    - `max_connections`: connections at a time; one more gets a `/bridge/refused` message and is closed.
    - `max_frame`: the largest SLIP frame in bytes, before unescaping (`slip.MAX_FRAME` says why 8 MiB).
    - `high_water` / `low_water`: unsent reply bytes at which a connection stops being read, and at or below which
      it is read again.
    - `slow_close`: seconds a connection may stay over `high_water` (or take to finish closing) before it is cut.
    - `max_unsent`: unsent bytes at which the next reply closes the connection at once. A reply already begun is
      finished, so a client that reads is never cut in the middle of one large reply.
    """

    max_connections: int
    max_frame: int
    high_water: int
    low_water: int
    max_unsent: int
    slow_close: float


_NO_REPLY = object()  # `TcpPeer._reply_owner` when no reply is being written over `max_unsent`

SNDBUF = 64 * 1024
"""The kernel's send buffer of every TCP connection the bridge accepts (OSC and the web page's). Left to autotuning,
loopback lets it grow to ~4 MiB: a client that never reads had ~2.8 MB (about 420 replies of `/bridge/mapping/list`
with 100 rows) queued in the kernel before asyncio's buffer saw a byte, and building those replies froze the event
loop for ~0.5 s per greedy connection (bench_hostile --phase greedy: 10 of 1,800 UDP pings lost with one, 28 with
four). Fixed, backpressure starts after ~128 KiB (Linux doubles the value)."""


def set_send_buffer(transport: asyncio.BaseTransport) -> None:
    """Fixes the connection's kernel send buffer at `SNDBUF` (a transport without a socket is left alone)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)


class TcpPeer(asyncio.Protocol):
    """One OSC 1.1 connection: SLIP frames in, packets to the server's callback, SLIP frames out, with backpressure.

    Without backpressure a client that sends requests and never reads its replies grew the bridge from 50 to
    204 MB and raised other clients' UDP p99 to 235-460 ms. Here the transport pauses the protocol when its write
    buffer passes `high_water`: the connection stops being read (and stops dispatching the requests already read),
    so a greedy client is held back by TCP itself; if it stays over for `slow_close` seconds it is cut. Replies of
    requests already running (async handlers) cannot be held back; `send` cuts the connection once `max_unsent`
    bytes wait.
    """

    kind = "tcp"

    def __init__(self, server: TcpServer) -> None:
        self.addr: Addr = ("?", 0)
        self._server = server
        self._limits = server.limits
        self._transport: asyncio.Transport | None = None
        self._decoder = slip.SlipDecoder(server.limits.max_frame)
        self._pending: deque[bytes] = deque()  # packets read but not yet dispatched because output is paused
        self._paused = False
        self._deadline: asyncio.TimerHandle | None = None  # cuts the connection if it stays paused or closing
        self._reply_owner: object = _NO_REPLY

    @property
    def unsent(self) -> int:
        """Reply bytes written but not yet taken by the kernel."""
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername") or ("?", 0)
        self.addr = (str(peername[0]), int(peername[1]))
        if not self._server.admit(self):
            self._transport.write(slip.encode(self._server.refusal))
            self._close_within_deadline()
            return
        self._transport.set_write_buffer_limits(high=self._limits.high_water, low=self._limits.low_water)
        set_send_buffer(self._transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.forget(self)
        self._pending.clear()
        self._cancel_deadline()

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        bad_before = self._decoder.bad_escapes
        try:
            self._pending.extend(self._decoder.feed(data))
        except slip.FrameTooLarge as exc:
            self._server.note_frame_too_large(self, exc.size)
            self._pending.extend(exc.packets)
            self._dispatch()
            self._close_within_deadline()
            return
        finally:
            if self._decoder.bad_escapes != bad_before:
                self._server.note_bad_escapes(self, self._decoder.bad_escapes - bad_before)
        self._dispatch()

    def _dispatch(self) -> None:
        """Hands the packets read to the server's callback, one at a time, until output is paused."""
        pending = self._pending
        transport = self._transport
        while pending and not self._paused and transport is not None and not transport.is_closing():
            self._server.on_packet(pending.popleft(), self)

    def pause_writing(self) -> None:
        """Called by the transport (inside a write) when its buffer passed `high_water`: stop reading."""
        self._paused = True
        assert self._transport is not None
        if self._transport.is_closing():
            return
        self._transport.pause_reading()
        self._server.note_paused(self)
        self._cancel_deadline()
        self._deadline = asyncio.get_running_loop().call_later(self._limits.slow_close, self._cut_slow)

    def resume_writing(self) -> None:
        """Called by the transport when its buffer drained to `low_water`: read and dispatch again."""
        self._paused = False
        assert self._transport is not None
        if self._transport.is_closing():
            return
        self._cancel_deadline()
        self._transport.resume_reading()
        if self._pending:
            # Not from inside the transport's write-ready callback: dispatching may write to it.
            asyncio.get_running_loop().call_soon(self._dispatch)

    def send(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        limit = self._limits.max_unsent
        if transport.get_write_buffer_size() > limit and self._reply_owner is not asyncio.current_task():
            self._server.note_overfull(self, transport.get_write_buffer_size())
            transport.abort()
            return
        transport.write(slip.encode(data))
        if self._reply_owner is _NO_REPLY and transport.get_write_buffer_size() > limit:
            # The rest of this reply (the sends of this callback) may still go out; the next reply may not.
            self._reply_owner = asyncio.current_task()
            asyncio.get_running_loop().call_soon(self._end_reply)

    def _end_reply(self) -> None:
        self._reply_owner = _NO_REPLY

    def _cut_slow(self) -> None:
        self._deadline = None
        if self._transport is not None and not self._transport.is_closing():
            self._server.note_slow(self, self._transport.get_write_buffer_size())
            self._transport.abort()

    def _close_within_deadline(self) -> None:
        """Closes after the replies already written are sent, but no later than `slow_close` seconds from now."""
        assert self._transport is not None
        self._transport.close()
        self._cancel_deadline()
        self._deadline = asyncio.get_running_loop().call_later(self._limits.slow_close, self._transport.abort)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def shutdown(self) -> None:
        """At the bridge's stop: close, dropping what a client that does not read has left unsent."""
        if self._transport is not None and not self._transport.is_closing():
            if self._transport.get_write_buffer_size():
                self._transport.abort()
            else:
                self._transport.close()


def _bind(sock: socket.socket, host: str, port: int, in_use: str) -> None:
    """Binds `sock`, or closes it and raises PortInUse (with `in_use` as the message) or the OSError."""
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(exc.errno, in_use) from exc
        raise


def bind_udp(host: str, port: int, rcvbuf: int) -> socket.socket:
    """Binds the UDP socket with a large receive buffer (bursts of telemetry must not overflow it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    except OSError:
        log.warning("udp_rcvbuf_refused", requested=rcvbuf)
    _bind(sock, host, port, f"UDP port {port} on {host} is already in use: another oscbridge (or the Chatty "
                            f"Channels app) is running. Stop it first, or choose another port with --osc-port.")
    sock.setblocking(False)
    return sock


def local_target(host: str) -> str:
    """Where to reach a socket bound to `host` from this machine (a wildcard address is reached on loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host


def bind_tcp(host: str, port: int, in_use: str | None = None) -> socket.socket:
    """A listening TCP socket; `in_use` is the message when the port is taken (by default: the OSC port's)."""
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only for sockets created with it, and a
    # list reply of many small messages would otherwise wait ~40 ms for delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _bind(sock, host, port, in_use or f"TCP port {port} on {host} is already in use: another oscbridge is running.")
    sock.listen(128)
    sock.setblocking(False)
    return sock


class _Reader(asyncio.DatagramProtocol):
    def __init__(self, udp: UdpSocket, on_datagram: Callable[[bytes, Addr], None]) -> None:
        self._udp = udp
        self._on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        if self._udp.record is not None:
            self._udp.record(addr, self._udp.local, data)
        self._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a plugin that went away shows up here on Linux; it is not our failure.
        self._udp.send_errors += 1


class UdpSocket:
    """The bridge's UDP socket. Sends go straight to the non-blocking socket (a datagram the kernel cannot take
    now is dropped and counted, as UDP would drop it anyway); `start` begins reading."""

    def __init__(self, sock: socket.socket, record: Record | None = None) -> None:
        self._sock = sock
        self.local: Addr = sock.getsockname()[:2]
        self.record = record
        self.send_errors = 0
        self._transport: asyncio.BaseTransport | None = None

    def send(self, data: bytes, addr: Addr) -> None:
        try:
            self._sock.sendto(data, addr)
        except OSError:
            self.send_errors += 1
            return
        if self.record is not None:
            self.record(self.local, addr, data)

    def peer(self, addr: Addr) -> UdpPeer:
        return UdpPeer(addr, self)

    async def start(self, on_datagram: Callable[[bytes, Addr], None]) -> None:
        """Hands every datagram, from now on, to `on_datagram(data, sender)`."""
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _Reader(self, on_datagram), sock=self._sock)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        else:
            self._sock.close()

    def stats(self) -> dict[str, int]:
        return {"router.udp_send_errors": self.send_errors}


class TcpServer:
    """Accepts OSC 1.1 (SLIP-framed) connections; each packet goes to `on_packet(data, peer)`.

    The counters below are totals since start (for /bridge/stats); `connections` is the number open now.
    """

    def __init__(self, on_packet: Callable[[bytes, TcpPeer], None], limits: TcpLimits) -> None:
        self.on_packet = on_packet
        self.limits = limits
        self.refusal = encode_message("/bridge/refused", [
            "unavailable", f"too many connections: at most {limits.max_connections} at a time; close one or try "
                           f"again later"])
        self._server: asyncio.Server | None = None
        self._peers: set[TcpPeer] = set()
        self.accepted = 0
        self.refused = 0
        self.frames_too_large = 0
        self.bad_escapes = 0
        self.paused = 0
        self.closed_slow = 0
        self.closed_overfull = 0
        self._warn_refused = RateLimitedWarning(log, "tcp_connection_refused")
        self._warn_frame = RateLimitedWarning(log, "tcp_frame_too_large")
        self._warn_escape = RateLimitedWarning(log, "tcp_bad_escape")
        self._warn_paused = RateLimitedWarning(log, "tcp_peer_paused")
        self._warn_closed = RateLimitedWarning(log, "tcp_peer_closed")

    @property
    def connections(self) -> int:
        return len(self._peers)

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: TcpPeer(self), sock=sock)

    def admit(self, peer: TcpPeer) -> bool:
        """Takes a new connection in, or counts and logs its refusal when `max_connections` are open."""
        if len(self._peers) >= self.limits.max_connections:
            self.refused += 1
            self._warn_refused(peer=_text(peer.addr), open=len(self._peers), total=self.refused)
            return False
        self._peers.add(peer)
        self.accepted += 1
        return True

    def forget(self, peer: TcpPeer) -> None:
        self._peers.discard(peer)

    def note_frame_too_large(self, peer: TcpPeer, size: int) -> None:
        self.frames_too_large += 1
        self._warn_frame(peer=_text(peer.addr), size=size, limit=self.limits.max_frame, total=self.frames_too_large)

    def note_bad_escapes(self, peer: TcpPeer, count: int) -> None:
        self.bad_escapes += count
        self._warn_escape(peer=_text(peer.addr), total=self.bad_escapes)

    def note_paused(self, peer: TcpPeer) -> None:
        self.paused += 1
        self._warn_paused(peer=_text(peer.addr), high_water=self.limits.high_water, total=self.paused)

    def note_slow(self, peer: TcpPeer, unsent: int) -> None:
        self.closed_slow += 1
        self._warn_closed(peer=_text(peer.addr), reason="slow", unsent=unsent, total=self.closed_slow)

    def note_overfull(self, peer: TcpPeer, unsent: int) -> None:
        self.closed_overfull += 1
        self._warn_closed(peer=_text(peer.addr), reason="overfull", unsent=unsent, total=self.closed_overfull)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for peer in list(self._peers):
                peer.shutdown()
            await self._server.wait_closed()

    def stats(self) -> dict[str, int]:
        return {"tcp.connections": self.connections, "tcp.accepted": self.accepted, "tcp.refused": self.refused,
                "tcp.frames_too_large": self.frames_too_large, "tcp.bad_escapes": self.bad_escapes,
                "tcp.paused": self.paused, "tcp.closed_slow": self.closed_slow,
                "tcp.closed_overfull": self.closed_overfull}


def _text(addr: Addr) -> str:
    return f"{addr[0]}:{addr[1]}"
