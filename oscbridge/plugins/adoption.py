"""Re-adoption: plugins that were running before this bridge started are known again without reloading them.

Three sources, all using what the v0.8 plugin already does (protocol note section 7):

1. The database: the instances that held a port when the last bridge stopped take their ports back at once
   (nobody else gets them) and are probed; those that do not answer are released by the liveness rules.
2. The pool range: a port nobody is known to hold but that cannot be bound has a listener; it gets a
   `query_rms` with a query id of its own, and the `rms_response` (from the plugin's sender socket) says which
   tempID listens there. The same scan runs later when telemetry comes from a sender the bridge does not know.
   The scan binds every port of the pool for an instant (1,000 ports by default, ~10 ms), so it runs in a thread.
3. The bootstrap ports (50000, 50100, ... 59900): a plugin that asked for a port while no bridge listened waits
   there forever. The plugin takes *any* `port_assignment` that reaches it, whatever tempID it names (note 6.3
   item 6), so an unsolicited one goes only where it is safe: once, at start, only to a bootstrap port that is in
   use (bind test), and not to one whose plugin has a request in flight with this bridge. The port offered is
   held by a placeholder until a `port_confirmed` names it, or released after `assign_expiry`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from oscbridge.clock import Clock
from oscbridge.config import Settings
from oscbridge.logs import get_logger
from oscbridge.plugins.instances import Instances
from oscbridge.plugins.ops import StoredInstance
from oscbridge.plugins.outbound import Outbound
from oscbridge.plugins.pool import PortPool, Quarantine, port_is_bindable
from oscbridge.plugins.probes import Probes
from oscbridge.plugins.registry import InstanceRegistry
from oscbridge.plugins.traffic import Traffic
from oscbridge.protocol import PORT_ASSIGNMENT
from oscbridge.typedefs import PluginState

log = get_logger("oscbridge.plugins.adoption")

READOPT_TEMP_ID = "oscbridge-readopt"  # the plugin ignores the tempID of a port_assignment

StoredPool = tuple[list[StoredInstance], list[Quarantine]]


@dataclass(frozen=True, slots=True)
class Placeholder:
    """A port offered to whoever waits on bootstrap port `ephemeral`."""

    ephemeral: int
    sent: float  # monotonic

    @property
    def owner(self) -> str:
        return f"adopt:{self.ephemeral}"


class Adoption:
    def __init__(self, registry: InstanceRegistry, pool: PortPool, instances: Instances, probes: Probes,
                 outbound: Outbound, traffic: Traffic, load_stored: Callable[[], Awaitable[StoredPool | None]],
                 settings: Settings, clock: Clock) -> None:
        self._registry = registry
        self._pool = pool
        self._instances = instances
        self._probes = probes
        self._outbound = outbound
        self._traffic = traffic
        self._load_stored = load_stored  # None when the database cannot be read now
        self._settings = settings
        self._clock = clock
        self._placeholders: dict[int, Placeholder] = {}
        self._discovery_wanted = False
        self._next_discovery = 0.0
        self.counts = {"readopt_stored": 0, "readopt_probed": 0, "readopt_offered": 0}

    async def readopt(self) -> None:
        """The start-up pass: stored instances, then unknown listeners in the pool, then waiting bootstrap ports.
        The stored instances are probed by the liveness sweep that follows (they were never heard in this run)."""
        loaded = await self._restore()
        probed = await self.probe_busy_ports()
        offered = self._offer_bootstrap_ports()
        self.counts.update(readopt_stored=loaded, readopt_probed=probed, readopt_offered=offered)
        if loaded or probed or offered:
            self._traffic.event(f"re-adoption: {loaded} stored instances, {probed} unknown listeners probed, "
                                f"{offered} bootstrap ports offered a port", loaded=loaded, probed=probed,
                                offered=offered)
        log.info("plugin_readoption", stored=loaded, probed=probed, offered=offered)

    async def _restore(self) -> int:
        """Takes back the ports of the instances stored as live (the database may be down: then nothing)."""
        stored = await self._load_stored()
        if stored is None:
            return 0
        instances, quarantined = stored
        for entry in quarantined:
            self._pool.restore_quarantine(entry)
        loaded = 0
        for row in instances:
            # Whatever happened since this bridge started (plugins already talking to it) wins over stored rows.
            if row.port not in self._pool or self._pool.owner_of(row.port) is not None \
                    or self._registry.get(row.instance_id):
                continue
            self._instances.restore(row)
            loaded += 1
        return loaded

    async def probe_busy_ports(self) -> int:
        """Probes every pool port that has a listener the bridge does not know about; returns how many."""
        candidates = [port for port in self._pool.ports() if not self._held_by_live(port)]
        busy = await asyncio.to_thread(lambda: [port for port in candidates if not self._pool.bindable(port)])
        for port in busy:
            self._probes.send(port)
        return len(busy)

    def _held_by_live(self, port: int) -> bool:
        owner = self._pool.owner_of(port)
        inst = self._registry.get(owner) if owner is not None else None
        return inst is not None and inst.live

    def _offer_bootstrap_ports(self) -> int:
        """Sends an unsolicited `port_assignment` to each bootstrap port where a plugin may wait."""
        settings = self._settings
        in_flight = {inst.response_port for inst in self._registry if inst.state == PluginState.ASSIGNED}
        offered = 0
        now = self._clock.monotonic()
        host = self._outbound.plugin_host
        for index in range(settings.ephemeral_count):
            ephemeral = settings.ephemeral_base + index * settings.ephemeral_step
            if (ephemeral in in_flight or ephemeral == settings.osc_port or ephemeral in self._pool
                    or not 0 < ephemeral < 65536 or port_is_bindable(host, ephemeral)):
                continue
            placeholder = Placeholder(ephemeral, now)
            port = self._instances.allocate(placeholder.owner)
            if port is None:
                break
            self._placeholders[port] = placeholder
            self._outbound.send((host, ephemeral), PORT_ASSIGNMENT, [READOPT_TEMP_ID, port, "assigned"], "sis")
            offered += 1
        return offered

    def take_placeholder(self, port: int) -> Placeholder | None:
        """The offer of `port` to a bootstrap port, if one waits for its `port_confirmed` (once)."""
        return self._placeholders.pop(port, None)

    def want_discovery(self) -> None:
        """Telemetry came from a sender the bridge does not know: scan the pool for its listener (soon)."""
        self._discovery_wanted = True

    async def tick(self, now: float) -> None:
        """Releases offers nobody confirmed in time, and runs a wanted pool scan at most every few seconds."""
        for port, placeholder in list(self._placeholders.items()):
            if now - placeholder.sent > self._settings.assign_expiry:
                del self._placeholders[port]
                self._pool.release(port, placeholder.owner)
        if self._discovery_wanted and now >= self._next_discovery:
            self._discovery_wanted = False
            self._next_discovery = now + 5 * self._settings.plugin_probe_timeout
            await self.probe_busy_ports()

    def stats(self) -> dict[str, int]:
        return {f"hub.{name}": value for name, value in self.counts.items()}
