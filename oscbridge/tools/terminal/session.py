"""Reaching the running bridge from a command: the one place where that can fail, and where it says so.

Every terminal command and `oscbridge call` runs through `run`. It finds the bridge from the settings (`--host`,
`--osc-port`, `--config`, `OSCBRIDGE_*`; a bridge on a wildcard address is reached on loopback), connects over
UDP (or TCP with `tcp=True`) and sends `/bridge/ping`: no answer within a second means no bridge. What can go
wrong ends as one line on stderr and exit code 1, never a traceback:

* no bridge answers: where it was looked for, and how to start one;
* the bridge answers a request with an error: the request, the error code and the bridge's message;
* the bridge answers pings but not a request within its timeout.

Single replies come over UDP. List replies come over TCP (one connection per command, opened when first needed):
a list is one datagram per row, sent back to back, and a burst of a few hundred overflows a client's UDP receive
buffer (Linux's default 208 KiB: 200 rows of /bridge/debug/tail lost rows and timed out, 100 arrived whole), while
TCP loses nothing. A single reply too large for a datagram (`too_large`, BRIDGE-API.md) is asked again over TCP.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from oscbridge.client import BridgeClient, BridgeRequestError
from oscbridge.flags import settings_from
from oscbridge.osc.transport import local_target
from oscbridge.tools.terminal.output import Output

PING_TIMEOUT = 1.0  # the bridge answers a ping in well under a millisecond; a second is plenty on a busy machine
REQUEST_TIMEOUT = 3.0
EXIT_FAILED = 1
HOW_TO_START = "start it with `oscbridge serve`, or as a service with `oscbridge launchd install`"


class NoBridge(Exception):
    """Nothing answers /bridge/ping where the settings say the bridge is."""


class NoAnswer(Exception):
    """The bridge answers pings, but not this request within its timeout."""


class ReplyError(BridgeRequestError):
    """An error reply, with the request it answered."""

    def __init__(self, address: str, code: str, message: str) -> None:
        super().__init__(code, message)
        self.address = address


class Session:
    """Requests to one bridge: single replies over UDP (TCP when one does not fit a datagram), lists over TCP."""

    def __init__(self, host: str, port: int, client: BridgeClient) -> None:
        self.host = host
        self.port = port
        self._client = client
        self._tcp: BridgeClient | None = client if client.transport == "tcp" else None
        self.version = ""
        self.uptime = 0.0

    @property
    def where(self) -> str:
        return host_port(self.host, self.port)

    async def ping(self) -> None:
        """Sets `version` and `uptime`; raises NoBridge when nothing answers within PING_TIMEOUT."""
        try:
            version, uptime, *_ = await self._client.call("/bridge/ping", timeout=PING_TIMEOUT)
        except TimeoutError:
            raise NoBridge(f"no reply to /bridge/ping within {PING_TIMEOUT:g} s") from None
        self.version, self.uptime = str(version), float(uptime)

    async def request(self, address: str, *args: Any, is_list: bool = False,
                      timeout: float = REQUEST_TIMEOUT) -> list[list[Any]]:
        """The values after "ok" (one entry), or the rows of a list reply when `is_list` (over TCP)."""
        client = await self._tcp_client() if is_list else self._client
        try:
            try:
                return await client.call_raw(address, *args, timeout=timeout, is_list=is_list)
            except BridgeRequestError as exc:
                if exc.code != "too_large" or client is self._tcp:
                    raise
            return await (await self._tcp_client()).call_raw(address, *args, timeout=timeout, is_list=is_list)
        except BridgeRequestError as exc:
            raise ReplyError(address, exc.code, exc.message) from None
        except TimeoutError:
            await self.ping()  # NoBridge if it has gone away meanwhile
            raise NoAnswer(f"the bridge on {self.where} did not answer {address} within {timeout:g} s") from None

    async def call(self, address: str, *args: Any, timeout: float = REQUEST_TIMEOUT) -> list[Any]:
        replies = await self.request(address, *args, timeout=timeout)
        return replies[0] if replies else []

    async def rows(self, address: str, *args: Any, timeout: float = REQUEST_TIMEOUT) -> list[list[Any]]:
        return await self.request(address, *args, is_list=True, timeout=timeout)

    async def _tcp_client(self) -> BridgeClient:
        if self._tcp is None:
            try:
                self._tcp = await BridgeClient.connect(self.host, self.port, transport="tcp")
            except OSError as exc:
                raise NoBridge(f"the reply needs TCP, which cannot be reached: {reason(exc)}") from exc
        return self._tcp

    async def close(self) -> None:
        await self._client.close()
        if self._tcp is not None and self._tcp is not self._client:
            await self._tcp.close()


@asynccontextmanager
async def connect(host: str, port: int, *, tcp: bool = False) -> AsyncIterator[Session]:
    """A session with the bridge at host:port, checked with a ping."""
    try:
        client = await BridgeClient.connect(host, port, transport="tcp" if tcp else "udp")
    except OSError as exc:
        raise NoBridge(f"cannot reach the bridge: {reason(exc)}") from exc
    session = Session(host, port, client)
    try:
        await session.ping()
        yield session
    finally:
        await session.close()


Body = Callable[[Session, Output], Awaitable[int]]


def run(ns: argparse.Namespace, body: Body, *, tcp: bool = False) -> int:
    """Runs `body` with a session with the bridge the settings name and the command's output (`--json` if the
    command has it); returns its exit code, or 1 with one line on stderr when the bridge cannot be used."""
    settings = settings_from(ns)
    host, port = local_target(settings.host), settings.osc_port
    out = Output(sys.stdout, json_mode=bool(getattr(ns, "json", False)))

    async def main() -> int:
        async with connect(host, port, tcp=tcp) as session:
            return await body(session, out)

    try:
        return asyncio.run(main())
    except NoBridge as exc:
        fail(f"no bridge answers on {host_port(host, port)} ({exc}): {HOW_TO_START}")
    except ReplyError as exc:
        fail(f"{exc.address} failed: error {exc.code}: {exc.message}")
    except NoAnswer as exc:
        fail(str(exc))
    return EXIT_FAILED


def reason(exc: OSError) -> str:
    """"Connection refused" rather than asyncio's "Connect call failed ('127.0.0.1', 8999)"."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def fail(message: str) -> None:
    """One line on stderr, as every command reports what went wrong."""
    print(f"oscbridge: {message}", file=sys.stderr, flush=True)
