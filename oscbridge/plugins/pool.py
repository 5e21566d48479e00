"""The plugin port pool: which port of the range each live instance holds, which are quarantined, lowest free first.

The original app handed the lowest free port to every request, even one another process held, so each later
plugin failed on it in turn (protocol note 6.3). Here a port is tried with a bind before it is handed out: a
port that cannot be bound is quarantined instead, and so is a port a plugin reported `"failed"` on. Quarantine
ends by time; a plugin found listening on a quarantined port (re-adoption) takes it back at once.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass


def port_is_bindable(host: str, port: int) -> bool:
    """True when nobody listens on UDP `port`: bind it for an instant, as a plugin would, and let go."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError:
        return False
    finally:
        sock.close()
    return True


@dataclass(frozen=True, slots=True)
class Quarantine:
    port: int
    reason: str
    since: float  # wall-clock seconds, as stored
    until: float


class PortPool:
    """Owners are instance ids (or the hub's placeholders); times are wall-clock seconds passed by the caller."""

    def __init__(self, start: int, end: int, bindable: Callable[[int], bool]) -> None:
        self.start = start
        self.end = end
        self.bindable = bindable
        self.owner: dict[int, str] = {}
        self.quarantined: dict[int, Quarantine] = {}

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.start <= port <= self.end

    def ports(self) -> range:
        return range(self.start, self.end + 1)

    def owner_of(self, port: int) -> str | None:
        return self.owner.get(port)

    def restore_quarantine(self, entry: Quarantine) -> None:
        """A quarantine stored by the last bridge, still running, for a port nobody holds now."""
        if entry.port in self and entry.port not in self.owner:
            self.quarantined[entry.port] = entry

    def is_quarantined(self, port: int, now: float) -> bool:
        entry = self.quarantined.get(port)
        if entry is None:
            return False
        if entry.until <= now:
            del self.quarantined[port]
            return False
        return True

    def allocate(self, owner: str, now: float, quarantine_for: float,
                 preferred: int | None = None) -> tuple[int | None, list[Quarantine]]:
        """The preferred port if it is usable, else the lowest usable one, now held by `owner`.

        Returns the port (None when the pool is exhausted) and the ports found held by another process on the
        way, which are quarantined for `quarantine_for` seconds (the caller stores them and may probe them).
        """
        found: list[Quarantine] = []
        candidates = range(self.start, self.end + 1)
        if preferred is not None and preferred in self:
            candidates = range(preferred, preferred + 1)  # tried first; the full scan follows if unusable
            port = self._first_usable(candidates, owner, now, quarantine_for, found)
            if port is not None:
                return port, found
            candidates = range(self.start, self.end + 1)
        return self._first_usable(candidates, owner, now, quarantine_for, found), found

    def _first_usable(self, candidates: range, owner: str, now: float, quarantine_for: float,
                      found: list[Quarantine]) -> int | None:
        for port in candidates:
            if port in self.owner or self.is_quarantined(port, now):
                continue
            if not self.bindable(port):
                found.append(self.quarantine(port, "in use by another process", now, quarantine_for))
                continue
            self.owner[port] = owner
            return port
        return None

    def claim(self, port: int, owner: str) -> str | None:
        """Gives `port` to `owner` whatever its state (a plugin was found listening there); returns the previous
        owner, who cannot be on that port any more."""
        self.quarantined.pop(port, None)
        previous = self.owner.get(port)
        self.owner[port] = owner
        return previous if previous != owner else None

    def release(self, port: int, owner: str) -> bool:
        """Frees `port` if `owner` holds it (a stale release never frees someone else's port)."""
        if self.owner.get(port) != owner:
            return False
        del self.owner[port]
        return True

    def quarantine(self, port: int, reason: str, now: float, seconds: float, owner: str | None = None) -> Quarantine:
        """Takes `port` out of use for `seconds`; releases it from `owner` first when given."""
        if owner is not None:
            self.release(port, owner)
        entry = Quarantine(port, reason, now, now + seconds)
        self.quarantined[port] = entry
        return entry

    def stats(self, now: float) -> dict[str, int]:
        return {"pool.held": len(self.owner), "pool.quarantined": len(self.quarantined),
                "pool.free": self.free_count(now)}

    def free_count(self, now: float) -> int:
        return sum(1 for port in range(self.start, self.end + 1)
                   if port not in self.owner and not self.is_quarantined(port, now))
