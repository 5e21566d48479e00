"""Helpers for the plugin hub tests: port blocks nobody uses, fast hub timings, a bridge, simulated plugins and a
subscriber socket. Timings are small so that liveness, expiry and retries happen within a test's second or two."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from oscbridge.client import BridgeClient
from oscbridge.config import Settings
from oscbridge.osc.codec import Message, decode_packet
from oscbridge.tools.ports import free_block as free_block  # the tests import these from here
from oscbridge.tools.ports import port_free as port_free
from oscbridge.tools.sim.plugin import SimConfig, build_message
from tests.conftest import make_settings
from tests.conftest import running as running  # re-exported for the hub tests

FAST = {
    "plugin_silence": 0.4,
    "plugin_probe_interval": 1.0,
    "plugin_probe_timeout": 0.25,
    "plugin_probe_misses": 2,
    "assign_expiry": 0.6,
    "hub_tick": 0.05,
    "calibrate_window": 0.5,
    "assign_retry_interval": 0.25,
    "assign_retries": 3,
}


def hub_settings(tmp_path: Path, database_url: str | None, plugins: int = 40, **overrides: Any) -> Settings:
    """Settings with a private plugin port range and bootstrap range (step 1) and fast timings."""
    pool = overrides.pop("port_range_start", None) or free_block(plugins)
    ephemeral = overrides.pop("ephemeral_base", None) or free_block(plugins)
    values: dict[str, Any] = {**FAST, "port_range_start": pool, "port_range_end": pool + plugins - 1,
                              "ephemeral_base": ephemeral, "ephemeral_step": 1, "ephemeral_count": plugins}
    values.update(overrides)
    return make_settings(tmp_path, database_url, **values)


def sim_config(settings: Settings, **overrides: Any) -> SimConfig:
    """A simulated plugin that talks to this bridge and scans the bridge's bootstrap range."""
    values: dict[str, Any] = {"bridge_port": settings.osc_port, "ephemeral_base": settings.ephemeral_base,
                              "ephemeral_step": settings.ephemeral_step, "ephemeral_count": settings.ephemeral_count}
    values.update(overrides)
    return SimConfig(**values)




class Listener(asyncio.DatagramProtocol):
    """A subscriber: a UDP socket that keeps what it receives (raw and decoded)."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.messages: list[Message] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.raw.append(data)
        self.messages.extend(decode_packet(data))

    def of(self, address: str) -> list[list[Any]]:
        return [m.args for m in self.messages if m.address == address]

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@asynccontextmanager
async def listener() -> AsyncIterator[Listener]:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(Listener, local_addr=("127.0.0.1", 0))
    try:
        yield proto
    finally:
        proto.close()


async def plugins_by_id(client: BridgeClient) -> dict[str, list[Any]]:
    """`/bridge/plugins` as {instance id: [port, state, plugin id, seconds]}."""
    return {row[0]: row[1:] for row in await client.rows("/bridge/plugins")}


class RawPlugin:
    """A hand-driven plugin for bad input and odd sequences: one sender socket (like the plugin's OSCSender) and
    one receiver that records what the bridge sends it."""

    def __init__(self, bridge_port: int) -> None:
        self.bridge = ("127.0.0.1", bridge_port)
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sender.bind(("127.0.0.1", 0))
        self.receiver: Listener | None = None
        self.port: int | None = None  # the assigned port, once the test has bound it

    @property
    def sender_port(self) -> int:
        return int(self.sender.getsockname()[1])

    async def listen(self, port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        _, self.receiver = await loop.create_datagram_endpoint(Listener, local_addr=("127.0.0.1", port))
        return self.receiver.port

    def send(self, address: str, *args: tuple[str, Any]) -> None:
        self.send_bytes(build_message(address, *args))

    def send_bytes(self, data: bytes) -> None:
        self.sender.sendto(data, self.bridge)

    def received(self, address: str) -> list[list[Any]]:
        return self.receiver.of(address) if self.receiver is not None else []

    def close(self) -> None:
        self.sender.close()
        if self.receiver is not None:
            self.receiver.close()
