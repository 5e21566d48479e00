"""The receive path: decode a datagram, dispatch it by address, answer /bridge/* requests.

Nothing here waits on the database or the network. Plugin messages go to synchronous handlers that update
memory, with the message, its sender and the raw datagram as arguments; /bridge/* requests are answered inline
when their handler is synchronous, or from a task when it is a coroutine (a database read, a calibration that
waits for plugins). Each packet's context travels as arguments: the router keeps no per-packet state.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from typing import Any

from oscbridge.api.endpoint import Endpoint, Peer, Request, Rows, failure, internal_error
from oscbridge.logs import RateLimitedWarning, get_logger
from oscbridge.osc.codec import MalformedDatagram, Message, decode_packet, encode_message
from oscbridge.osc.transport import UdpSocket
from oscbridge.plugins.hub import PluginHandler
from oscbridge.typedefs import MAX_UDP_REPLY, REQ_ID_MAX, Addr, BridgeError, ErrorCode

log = get_logger("oscbridge.router")

# Requests answered from a task (database reads, calibration) at once: each waits on a pool of 4 connections or on
# plugins, so a flood of them would only pile up memory and time out; past this they are refused at once.
MAX_IN_FLIGHT = 256


class Router:
    """Owns the dispatch tables and the counters of what came in."""

    def __init__(self, endpoints: dict[str, Endpoint], plugin_handlers: dict[str, PluginHandler],
                 udp: UdpSocket) -> None:
        self._endpoints = endpoints
        self._plugin_handlers = plugin_handlers
        self._udp = udp
        self.counters: Counter[str] = Counter()  # rare events by name
        self.packets_in = 0  # every datagram or TCP packet; a plain int because it is bumped per datagram
        self._tasks: set[asyncio.Task[None]] = set()
        self._warn_malformed: dict[str, RateLimitedWarning] = {}  # one per kind of problem (a fixed, small set)
        self._warn_unknown = RateLimitedWarning(log, "unknown_address")
        # A bug hit by every datagram must not write a traceback per datagram: one per address and 10 s, counted.
        self._handler_failed: dict[str, RateLimitedWarning] = {}
        self._request_failed: dict[str, RateLimitedWarning] = {}

    @property
    def endpoints(self) -> Mapping[str, Endpoint]:
        """The `/bridge/*` requests this router answers (the table the web page and /mcp share)."""
        return self._endpoints

    # -- entry points from the transports -------------------------------------------------------------------

    def on_udp(self, data: bytes, addr: Addr) -> None:
        self._dispatch(data, addr, None)

    def on_tcp(self, data: bytes, peer: Peer) -> None:
        self._dispatch(data, peer.addr, peer)

    # -- dispatch ---------------------------------------------------------------------------------------------

    def _dispatch(self, data: bytes, addr: Addr, peer: Peer | None) -> None:
        self.packets_in += 1
        try:
            messages = decode_packet(data)
        except MalformedDatagram as exc:
            self._malformed(exc, data, addr)
            return
        if data[:1] == b"#":
            self.counters["bundles"] += 1
        for message in messages:
            handler = self._plugin_handlers.get(message.address)
            if handler is not None:
                try:
                    handler(message, addr, data)
                except Exception as exc:
                    # A bug in one handler must not take the receive path down with it.
                    self.counters["handler_errors"] += 1
                    _failure_log(self._handler_failed, "plugin_handler_failed", message.address)(
                        address=message.address, error=str(exc), exc_info=True)
                continue
            if message.address.startswith("/bridge/"):
                self._request(message, peer or self._udp.peer(addr))
                continue
            self.counters["unknown_address"] += 1
            self._warn_unknown(sender=f"{addr[0]}:{addr[1]}", address=message.address[:200],
                               total=self.counters["unknown_address"])

    def _malformed(self, exc: MalformedDatagram, data: bytes, addr: Addr) -> None:
        """Counts a refused datagram by kind and logs at most one line per kind every 10 s."""
        self.counters["malformed"] += 1
        key = "malformed." + exc.kind
        self.counters[key] += 1
        warn = self._warn_malformed.get(exc.kind)
        if warn is None:
            warn = self._warn_malformed[exc.kind] = RateLimitedWarning(log, "malformed_datagram")
        warn(kind=exc.kind, sender=f"{addr[0]}:{addr[1]}", reason=str(exc), size=len(data), total=self.counters[key])

    # -- /bridge/* requests -----------------------------------------------------------------------------------

    def _request(self, message: Message, peer: Peer) -> None:
        reply_address = message.address + "/reply"
        args = message.args
        if not args or not isinstance(args[0], str):
            self._send_error(peer, reply_address, "", ErrorCode.BAD_REQUEST,
                             "the first argument must be the request id (a string of at most 64 characters)")
            return
        req_id: str = args[0]
        if len(req_id) > REQ_ID_MAX:
            self._send_error(peer, reply_address, req_id[:REQ_ID_MAX], ErrorCode.BAD_REQUEST,
                             f"the request id is {len(req_id)} characters long; at most {REQ_ID_MAX} are allowed")
            return
        endpoint = self._endpoints.get(message.address)
        if endpoint is None:
            self._send_error(peer, reply_address, req_id, ErrorCode.NOT_FOUND,
                             f"unknown request {message.address[:100]}; see BRIDGE-API.md for the list")
            return
        request = Request(message.address, req_id, peer)
        try:
            values = endpoint.convert(args[1:])
            if endpoint.is_async:
                if len(self._tasks) >= MAX_IN_FLIGHT:
                    self.counters["busy"] += 1
                    raise BridgeError(ErrorCode.UNAVAILABLE, f"the bridge is already working on {MAX_IN_FLIGHT} "
                                                             "requests that wait on the database or the plugins; "
                                                             "try again shortly")
                task = asyncio.get_running_loop().create_task(self._run_async(endpoint, values, request))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return
            result = endpoint.call(request, values)
        except Exception as exc:
            self._failed(request, exc)
            return
        self.send_result(peer, reply_address, req_id, result)

    async def _run_async(self, endpoint: Endpoint, values: list[Any], request: Request) -> None:
        try:
            result = await endpoint.call(request, values)
        except Exception as exc:
            self._failed(request, exc)
            return
        self.send_result(request.peer, request.address + "/reply", request.req_id, result)

    def _failed(self, request: Request, exc: Exception) -> None:
        reply_address = request.address + "/reply"
        known = failure(exc)
        if known is None:
            self.counters["internal_errors"] += 1
            _failure_log(self._request_failed, "request_failed", request.address)(
                address=request.address, error=str(exc), exc_info=True)
            known = ErrorCode.INTERNAL, internal_error(exc)
        self._send_error(request.peer, reply_address, request.req_id, *known)

    def send_result(self, peer: Peer, reply_address: str, req_id: str, result: Any) -> None:
        """Sends an ok reply (one message, or one per row for a list), refusing UDP replies over 8 KB."""
        if isinstance(result, Rows):
            total = len(result.rows)
            packets = [encode_message(reply_address, [req_id, "ok", i, total, *row])
                       for i, row in enumerate(result.rows)] or [encode_message(reply_address,
                                                                                [req_id, "ok", 0, 0])]
        elif req_id == "":
            return  # fire and forget: no reply unless it failed
        else:
            packet = encode_message(reply_address, [req_id, "ok", *result] if result else [req_id, "ok"])
            if len(packet) <= MAX_UDP_REPLY or peer.kind != "udp":
                peer.send(packet)
                return
            packets = [packet]
        biggest = max(len(p) for p in packets)
        if peer.kind == "udp" and biggest > MAX_UDP_REPLY:
            self._send_error(peer, reply_address, req_id, ErrorCode.TOO_LARGE,
                             f"the reply needs {biggest} bytes in one datagram, over the UDP limit of "
                             f"{MAX_UDP_REPLY}; repeat the request over TCP")
            return
        if req_id == "":
            return  # fire and forget: no reply unless it failed
        for packet in packets:
            peer.send(packet)

    def _send_error(self, peer: Peer, reply_address: str, req_id: str, code: ErrorCode, message: str) -> None:
        self.counters["error_replies"] += 1
        peer.send(encode_message(reply_address, [req_id, "error", code.value, message[:1000]]))

    async def drain(self, timeout: float) -> None:
        """Waits for in-flight async requests (used at shutdown), then cancels what is left."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()

    def stats(self) -> dict[str, int]:
        return {**{f"router.{k}": v for k, v in self.counters.items()}, "router.packets_in": self.packets_in}


def _failure_log(by_address: dict[str, RateLimitedWarning], event: str, address: str) -> RateLimitedWarning:
    """The rate-limited error line for failures at `address` (only addresses with a handler get one, so the
    dictionary is as small as the dispatch tables)."""
    warn = by_address.get(address)
    if warn is None:
        warn = by_address[address] = RateLimitedWarning(log, event, level="error")
    return warn
