"""OSCQuery's LISTEN: the values under `/bridge/state` streamed to OSC tools over a WebSocket (docs/oscquery.md).

A tool (ossia score, Chataigne, an OSCQuery browser) opens a WebSocket on the HTTP port's `/` and sends
`{"COMMAND": "LISTEN", "DATA": "/bridge/state/levels/TR1"}`; from then on each change of that value comes as one
binary OSC message with the node's address and TYPE, until `IGNORE` or the end of the connection. Values are
read as the tree reads them (`Namespace.values`, the same open requests), once per tick for all clients and only
while one listens, and a client gets a value only when it changed since the last one it was sent: tools that keep
a meter live no longer poll `?VALUE` every 41 ms.

Outside bytes are bounded: commands are JSON text of at most 4 KiB, a client listens to at most MAX_PATHS paths
of at most MAX_PATH characters, at most MAX_CLIENTS clients listen at once, and a client whose socket holds more
than `max_buffered` unsent bytes skips ticks and is cut after `send_timeout` seconds without room (it reconnects
by itself). Anything else a client sends is counted and ignored, as the proposal leaves it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from oscbridge.jsontext import parse_json
from oscbridge.logs import RateLimitedWarning, get_logger
from oscbridge.osc.codec import encode_message, tag_for
from oscbridge.tasks import cancel_and_wait
from oscbridge.web.calls import WebPeer
from oscbridge.web.oscquery import Namespace

log = get_logger("oscbridge.web.oscquery")

LISTEN_HZ = 10.0  # ticks a second: a meter in a tool moves smoothly, and levels change every 41 ms anyway
MAX_CLIENTS = 8
MAX_PATHS = 64
MAX_PATH = 256
MAX_COMMAND = 4096  # bytes of one command; a LISTEN is about 60


@dataclass(eq=False)
class Listener:
    """One WebSocket: the paths it listens to, the last value it was sent of each, and the tick that wakes its
    sender (each client has its own, so one that does not read holds up nobody else)."""

    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    paths: set[str] = field(default_factory=set)
    sent: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class ValueStreams:
    """The LISTEN side of the OSCQuery server: `serve` runs one client's connection; one task reads the values at
    each tick while anybody listens, and each client's sender sends it what changed."""

    def __init__(self, namespace: Namespace, *, max_buffered: int, send_timeout: float,
                 interval: float = 1 / LISTEN_HZ) -> None:
        self._namespace = namespace
        self._max_buffered = max_buffered
        self._send_timeout = send_timeout
        self._interval = interval
        self._listeners: set[Listener] = set()
        self._values: dict[str, tuple[Any, ...]] = {}
        self._task: asyncio.Task[None] | None = None
        self.values_sent = 0
        self.bad_commands = 0
        self.cut = 0
        self._warn_bad = RateLimitedWarning(log, "oscquery_command_ignored")
        self._warn_failed = RateLimitedWarning(log, "oscquery_values_failed", level="error")

    @property
    def full(self) -> bool:
        return len(self._listeners) >= MAX_CLIENTS

    def stats(self) -> dict[str, int]:
        return {"oscquery.listeners": len(self._listeners), "oscquery.values_sent": self.values_sent,
                "oscquery.bad_commands": self.bad_commands, "oscquery.listeners_cut": self.cut}

    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        """One client, from the upgrade to the close: reads its commands while its sender sends its values."""
        ws = web.WebSocketResponse(heartbeat=20.0, compress=False, max_msg_size=MAX_COMMAND)
        await ws.prepare(request)
        listener = Listener(ws, request.transport)
        self._listeners.add(listener)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._tick(WebPeer((request.remote or "", 0))),
                                                                name="oscbridge-oscquery-listen")
        sender = asyncio.get_running_loop().create_task(self._sender(listener))
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._command(listener, message.data)
                else:
                    self._bad(listener, "a binary message (commands are JSON text)")
        finally:
            self._listeners.discard(listener)
            sender.cancel()
        return ws

    def _command(self, listener: Listener, text: str) -> None:
        try:
            command = parse_json(text)
        except ValueError:
            self._bad(listener, "not JSON")
            return
        if not isinstance(command, dict):
            self._bad(listener, "not a JSON object")
            return
        name, path = command.get("COMMAND"), command.get("DATA")
        if name not in ("LISTEN", "IGNORE") or not isinstance(path, str) or not path.startswith("/") \
                or len(path) > MAX_PATH:
            self._bad(listener, f"COMMAND {str(name)[:20]!r} with DATA {str(path)[:40]!r} (known: LISTEN and "
                                f"IGNORE with an address of at most {MAX_PATH} characters)")
            return
        path = path.rstrip("/") or "/"
        if name == "IGNORE":
            listener.paths.discard(path)
            listener.sent.pop(path, None)
        elif len(listener.paths) < MAX_PATHS:
            listener.paths.add(path)
            listener.wake.set()  # its value now, not at the next tick
        else:
            self._bad(listener, f"more than {MAX_PATHS} paths listened to on one connection")

    def _bad(self, listener: Listener, what: str) -> None:
        self.bad_commands += 1
        self._warn_bad(what=what, listening=len(listener.paths), total=self.bad_commands)

    async def _tick(self, peer: WebPeer) -> None:
        """While somebody listens: the values once a tick, for every client's sender."""
        loop = asyncio.get_running_loop()
        while self._listeners:
            started = loop.time()
            if any(listener.paths for listener in self._listeners):
                try:
                    self._values = await self._namespace.values(peer)
                except Exception as exc:  # a failing read must not end the streams; the next tick tries again
                    self._warn_failed(error=f"{type(exc).__name__}: {exc}"[:300])
                else:
                    for listener in self._listeners:
                        listener.wake.set()
            await asyncio.sleep(max(0.0, self._interval - (loop.time() - started)))

    async def _sender(self, listener: Listener) -> None:
        """Sends `listener` each listened value that changed. While its socket holds more than `max_buffered`
        unsent bytes, ticks are skipped; a send that waits `send_timeout` for room cuts the connection."""
        transport = listener.transport
        while not listener.ws.closed and transport is not None and not transport.is_closing():
            await listener.wake.wait()
            listener.wake.clear()
            if transport.get_write_buffer_size() > self._max_buffered:  # type: ignore[attr-defined]
                continue
            for path in sorted(listener.paths):
                value = self._values.get(path)
                if value is None or listener.sent.get(path) == value:
                    continue
                listener.sent[path] = value
                packet = encode_message(path, value, "".join(tag_for(v) for v in value))
                try:
                    await asyncio.wait_for(listener.ws.send_bytes(packet), self._send_timeout)
                except (TimeoutError, ConnectionError, RuntimeError):
                    self.cut += 1
                    transport.abort()  # type: ignore[attr-defined]  # a close would wait behind the unsent bytes
                    return
                self.values_sent += 1

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
