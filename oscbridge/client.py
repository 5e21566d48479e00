"""An async client for the bridge's /bridge/* API over UDP or TCP (SLIP), for tests, scripts and tools.

    client = await BridgeClient.connect()            # UDP to 127.0.0.1:8999
    version, uptime = await client.call("/bridge/ping")
    rows = await client.rows("/bridge/mapping/list")
    await client.close()

`call` returns the values after `"ok"`; `rows` collects a list reply; both raise `BridgeRequestError` with the
bridge's error code and message. Request ids are made here.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable
from typing import Any

from oscbridge.memory.client import MemoryCalls
from oscbridge.osc import slip
from oscbridge.osc.codec import MalformedDatagram, Message, decode_packet, encode_message


class BridgeRequestError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _Pending:
    """Collects the reply (or the rows of a list reply) of one request."""

    def __init__(self, is_list: bool) -> None:
        self.is_list = is_list
        self.future: asyncio.Future[list[list[Any]]] = asyncio.get_running_loop().create_future()
        self.rows: dict[int, list[Any]] = {}

    def feed(self, values: list[Any]) -> None:
        if self.future.done():
            return
        if len(values) >= 2 and values[1] == "error":
            code = str(values[2]) if len(values) > 2 else "internal"
            text = str(values[3]) if len(values) > 3 else ""
            self.future.set_exception(BridgeRequestError(code, text))
            return
        body = values[2:]
        # A list reply is [index, total, ...row]: finish when all rows are there.
        if self.is_list and len(body) >= 2 and isinstance(body[0], int) and isinstance(body[1], int):
            index, total = body[0], body[1]
            if total == 0:
                self.future.set_result([])
                return
            self.rows[index] = body[2:]
            if len(self.rows) >= total:
                self.future.set_result([self.rows[i] for i in sorted(self.rows)])
            return
        self.future.set_result([body])


class BridgeClient(MemoryCalls):
    def __init__(self, host: str, port: int, transport: str) -> None:
        self.host = host
        self.port = port
        self.transport = transport
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        self._prefix = f"c{os.getpid() % 10000}-{id(self) % 10000}-"
        self._udp: asyncio.DatagramTransport | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self.unmatched: list[Message] = []
        self.on_message: Callable[[Message], None] | None = None

    @classmethod
    async def connect(cls, host: str = "127.0.0.1", port: int = 8999, transport: str = "udp") -> BridgeClient:
        client = cls(host, port, transport)
        loop = asyncio.get_running_loop()
        if transport == "udp":
            client._udp, _ = await loop.create_datagram_endpoint(
                lambda: _ClientProtocol(client._on_packet), remote_addr=(host, port))
        elif transport == "tcp":
            reader, client._writer = await asyncio.open_connection(host, port, limit=1 << 24)
            client._reader_task = loop.create_task(client._read_tcp(reader))
        else:
            raise ValueError("transport must be 'udp' or 'tcp'")
        return client

    async def _read_tcp(self, reader: asyncio.StreamReader) -> None:
        decoder = slip.SlipDecoder()
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            for packet in decoder.feed(chunk):
                self._on_packet(packet)

    def _on_packet(self, data: bytes) -> None:
        try:
            messages = decode_packet(data)
        except MalformedDatagram:
            return
        for message in messages:
            args = message.args
            pending = self._pending.get(args[0]) if args and isinstance(args[0], str) else None
            if pending is not None and message.address.endswith("/reply"):
                pending.feed(args)
            else:
                self.unmatched.append(message)
                if self.on_message is not None:
                    self.on_message(message)

    def send(self, address: str, *args: Any) -> None:
        """Sends one raw message (no request id added, no reply expected)."""
        self.send_bytes(encode_message(address, list(args)))

    def send_bytes(self, data: bytes) -> None:
        if self._udp is not None:
            self._udp.sendto(data)
        elif self._writer is not None:
            self._writer.write(slip.encode(data))

    async def call_raw(self, address: str, *args: Any, timeout: float = 3.0,
                       is_list: bool = False) -> list[list[Any]]:
        """Sends a request with a fresh id; returns the reply's values after `[req_id, "ok"]` (one entry), or
        the rows of a list reply when `is_list`."""
        req_id = self._prefix + str(next(self._ids))
        pending = _Pending(is_list)
        self._pending[req_id] = pending
        try:
            self.send(address, req_id, *args)
            return await asyncio.wait_for(asyncio.shield(pending.future), timeout)
        finally:
            self._pending.pop(req_id, None)

    async def call(self, address: str, *args: Any, timeout: float = 3.0) -> list[Any]:
        """A single-reply request: the values after "ok"."""
        replies = await self.call_raw(address, *args, timeout=timeout)
        return replies[0] if replies else []

    async def rows(self, address: str, *args: Any, timeout: float = 3.0) -> list[list[Any]]:
        """A list request: one list of values per row, in index order."""
        return await self.call_raw(address, *args, timeout=timeout, is_list=True)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()

    async def __aenter__(self) -> BridgeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _ClientProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_packet: Callable[[bytes], None]) -> None:
        self._on_packet = on_packet

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._on_packet(data)

    def error_received(self, exc: Exception) -> None:
        pass  # the bridge is not there (ICMP unreachable); the caller's timeout reports it
