"""Everything the bridge sends to a plugin goes through here: with the plugin's exact argument types, to the port
the plugin listens on, counted, and recorded as an `osc_out` debug row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oscbridge.osc.codec import Message, encode_message
from oscbridge.plugins.registry import Instance
from oscbridge.plugins.traffic import Traffic
from oscbridge.typedefs import Addr


class Outbound:
    def __init__(self, send: Callable[[bytes, Addr], None], traffic: Traffic, local: Addr, plugin_host: str) -> None:
        self._send = send
        self._traffic = traffic
        self.local = local
        self.plugin_host = plugin_host  # where plugins listen when nothing says otherwise (loopback)
        self.sent = 0

    def dest(self, inst: Instance | None, port: int | None = None) -> Addr:
        """Where a plugin listens: its sender's host, its port (or `port`)."""
        host = inst.sender[0] if inst is not None and inst.sender is not None else self.plugin_host
        target = port if port is not None else inst.port if inst is not None else None
        if target is None:
            raise ValueError("no port to send to")
        return host, target

    def send(self, dest: Addr, address: str, args: list[Any], tags: str) -> None:
        """Sends one message to a plugin with exactly the plugin's argument types, and logs it as debug traffic."""
        self._send(encode_message(address, args, tags), dest)
        self.sent += 1
        self._traffic.datagram("osc_out", Message(address, args, tags), self.local, dest)
