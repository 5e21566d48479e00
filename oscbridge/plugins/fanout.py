"""Fan-out: subscribers get the plugin traffic and the `/bridge/event/*` events that match their patterns.

A subscriber is (host of the request, port); it may hold several patterns. Each gets its own *connected* UDP
socket: on a connected socket a datagram to a port nobody listens on comes back as ECONNREFUSED on a later send
(ICMP port unreachable), which the shared unconnected socket never reports. So a subscriber that has gone away is
seen, and dropped after `max_errors` refused sends since it last subscribed. A subscription also lapses when it
is not renewed (subscribe again, same arguments) within `ttl` seconds. Which subscribers an address goes to is
computed once per address and cached until the subscriptions change, so the telemetry path is a dict lookup.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oscbridge.osc.codec import encode_message
from oscbridge.osc.pattern import AddressPattern
from oscbridge.typedefs import Addr

_CACHE_LIMIT = 1024
# Each subscriber holds a socket and its patterns are matched on every new address: a local client could
# otherwise open one socket per port of the machine. The Control Room and the orchestrator need a handful.
MAX_SUBSCRIBERS = 64
MAX_PATTERNS = 32


class FanoutFull(Exception):
    """No room for another subscriber or pattern; the message says which limit."""


@dataclass(eq=False)
class Subscriber:
    addr: Addr
    sock: socket.socket
    renewed: float  # monotonic
    patterns: dict[str, AddressPattern] = field(default_factory=dict)
    errors: int = 0
    sent: int = 0

    def matches(self, address: str) -> bool:
        return any(p.matches(address) for p in self.patterns.values())


class Fanout:
    def __init__(self, ttl: float, max_errors: int) -> None:
        self.ttl = ttl
        self.max_errors = max_errors
        self.subscribers: dict[Addr, Subscriber] = {}
        self._routes: dict[str, tuple[Subscriber, ...]] = {}
        self.dropped = 0
        # In-process listeners of every event (the web page's live view): called with the address and arguments.
        self.listeners: list[Callable[[str, list[Any]], None]] = []

    def subscribe(self, addr: Addr, pattern: str, now: float) -> None:
        """Adds `pattern` for `addr` (or renews it); raises ValueError for a bad pattern, OSError for a bad host,
        FanoutFull past `MAX_SUBSCRIBERS` subscribers or `MAX_PATTERNS` patterns of one subscriber."""
        compiled = AddressPattern(pattern)
        sub = self.subscribers.get(addr)
        if sub is not None and pattern not in sub.patterns and len(sub.patterns) >= MAX_PATTERNS:
            raise FanoutFull(f"this subscriber already has {MAX_PATTERNS} patterns; unsubscribe first")
        if sub is None:
            if len(self.subscribers) >= MAX_SUBSCRIBERS:
                raise FanoutFull(f"the bridge already has {MAX_SUBSCRIBERS} subscribers")
            sock = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.connect(addr)
            except OSError:
                sock.close()
                raise
            sub = self.subscribers[addr] = Subscriber(addr, sock, now)
        sub.patterns[pattern] = compiled
        sub.renewed = now
        sub.errors = 0
        self._routes.clear()

    def unsubscribe(self, addr: Addr) -> bool:
        sub = self.subscribers.pop(addr, None)
        if sub is None:
            return False
        sub.sock.close()
        self._routes.clear()
        return True

    def route(self, address: str) -> tuple[Subscriber, ...]:
        """The subscribers whose patterns match `address` (cached per address)."""
        subs = self._routes.get(address)
        if subs is None:
            if len(self._routes) >= _CACHE_LIMIT:
                self._routes.clear()
            subs = self._routes[address] = tuple(s for s in self.subscribers.values() if s.matches(address))
        return subs

    def send(self, subs: tuple[Subscriber, ...], data: bytes) -> None:
        for sub in subs:
            try:
                sub.sock.send(data)
            except OSError:
                # Refused (nobody listens), or its buffer is full (it does not read): both count.
                sub.errors += 1
                if sub.errors >= self.max_errors:
                    self.dropped += 1
                    self.unsubscribe(sub.addr)
                continue
            sub.sent += 1

    def emit(self, address: str, args: list[Any]) -> None:
        """A `/bridge/event/*` to the subscribers whose patterns match (encoded only if someone listens), and to
        every in-process listener."""
        subs = self.route(address)
        if subs:
            self.send(subs, encode_message(address, args))
        for listener in self.listeners:
            listener(address, args)

    def stats(self) -> dict[str, int]:
        return {"fanout.subscribers": len(self.subscribers), "fanout.dropped": self.dropped,
                "fanout.forwarded": sum(s.sent for s in self.subscribers.values())}

    def expire(self, now: float) -> int:
        """Drops subscriptions not renewed within the time to live; returns how many."""
        lapsed = [addr for addr, sub in self.subscribers.items() if now - sub.renewed > self.ttl]
        for addr in lapsed:
            self.unsubscribe(addr)
        self.dropped += len(lapsed)
        return len(lapsed)

    def close(self) -> None:
        for addr in list(self.subscribers):
            self.unsubscribe(addr)
