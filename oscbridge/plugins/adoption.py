"""Re-adoption: plugins that were running before this bridge started are known again without reloading them.

Three sources, all using what the v0.8 plugin already does (protocol note section 7):

1. The database: the instances that held a port when the last bridge stopped take their ports back at once
   (nobody else gets them) and are probed; those that do not answer are released by the liveness rules.
2. The pool range: a port nobody is known to hold but that cannot be bound has a listener; it gets a
   `query_rms` with a query id of its own, and the `rms_response` (from the plugin's sender socket) says which
   tempID listens there. The same scan runs later when telemetry comes from a sender the bridge does not know.
3. The bootstrap ports (50000, 50100, ... 59900): a plugin that asked for a port while no bridge listened waits
   there forever. The plugin takes *any* `port_assignment` that reaches it, whatever tempID it names (note 6.3
   item 6), so an unsolicited one goes only where it is safe: once, at start, only to a bootstrap port that is in
   use (bind test), and not to one whose plugin has a request in flight with this bridge. The port offered is
   held by a placeholder until a `port_confirmed` names it, or released after `assign_expiry`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oscbridge.logs import get_logger
from oscbridge.plugins.ops import load_pool
from oscbridge.plugins.pool import port_is_bindable
from oscbridge.plugins.registry import NEVER, Instance
from oscbridge.store.db import CONNECTION_ERRORS

if TYPE_CHECKING:
    from oscbridge.plugins.hub import PluginHub

log = get_logger("oscbridge.plugins.adoption")

READOPT_TEMP_ID = "oscbridge-readopt"  # the plugin ignores the tempID of a port_assignment


@dataclass(frozen=True, slots=True)
class Placeholder:
    """A port offered to whoever waits on bootstrap port `ephemeral`."""

    ephemeral: int
    sent: float  # monotonic

    @property
    def owner(self) -> str:
        return f"adopt:{self.ephemeral}"


async def load_stored(hub: PluginHub) -> int:
    """Takes back the ports of the instances stored as live (the database may be down: then nothing)."""
    db = hub.ctx.db
    if not db.up:
        return 0
    try:
        await hub.ctx.writer.flush(2.0)  # what the previous run spooled lands first
        async with db.acquire() as conn:
            stored, quarantined = await load_pool(conn)
    except CONNECTION_ERRORS as exc:
        log.warning("plugin_pool_not_loaded", error=str(exc)[:300])
        return 0
    pool, registry = hub.pool, hub.registry
    for entry in quarantined:
        if entry.port in pool and pool.owner_of(entry.port) is None:
            pool.quarantined[entry.port] = entry
    loaded = 0
    for row in stored:
        # Whatever happened since this bridge started (plugins already talking to it) wins over the stored rows.
        if row.port not in pool or pool.owner_of(row.port) is not None or registry.get(row.instance_id):
            continue
        plugin_id = row.plugin_id if row.plugin_id and registry.for_plugin(row.plugin_id) is None else ""
        sender = row.sender if row.sender not in registry.by_sender else None  # reused by a newer plugin
        registry.add(Instance(row.instance_id, port=row.port, state=row.state, plugin_id=plugin_id,
                              sender=sender, response_port=row.response_port, first_seen=row.first_seen,
                              last_heard=NEVER))
        pool.claim(row.port, row.instance_id)
        loaded += 1
    return loaded


def probe_busy_ports(hub: PluginHub) -> int:
    """Probes every pool port that has a listener the bridge does not know about; returns how many."""
    probed = 0
    for port in range(hub.pool.start, hub.pool.end + 1):
        owner = hub.pool.owner_of(port)
        if owner is not None and owner in hub.registry.by_id and hub.registry.by_id[owner].live:
            continue
        if not hub.pool.bindable(port):
            hub.probe(port)
            probed += 1
    return probed


def offer_bootstrap_ports(hub: PluginHub) -> int:
    """Sends an unsolicited `port_assignment` to each bootstrap port where a plugin may wait; returns how many."""
    settings = hub.ctx.settings
    in_flight = {inst.response_port for inst in hub.registry.by_id.values() if inst.state == "assigned"}
    offered = 0
    now = time.monotonic()
    for index in range(settings.ephemeral_count):
        ephemeral = settings.ephemeral_base + index * settings.ephemeral_step
        if (ephemeral in in_flight or ephemeral == settings.osc_port or ephemeral in hub.pool
                or not 0 < ephemeral < 65536 or port_is_bindable(hub.plugin_host, ephemeral)):
            continue
        placeholder = Placeholder(ephemeral, now)
        port = hub.allocate(placeholder.owner)
        if port is None:
            break
        hub.placeholders[port] = placeholder
        hub.send_plugin((hub.plugin_host, ephemeral), "/aiplayer/port_assignment",
                        [READOPT_TEMP_ID, port, "assigned"], "sis")
        offered += 1
    return offered


async def readopt(hub: PluginHub) -> None:
    """The start-up pass: stored instances, then unknown listeners in the pool, then waiting bootstrap ports.
    The stored instances are probed by the liveness sweep that follows (they were never heard in this run)."""
    loaded = await load_stored(hub)
    probed = probe_busy_ports(hub)
    offered = offer_bootstrap_ports(hub)
    hub.counters.update(readopt_stored=loaded, readopt_probed=probed, readopt_offered=offered)
    if loaded or probed or offered:
        hub.traffic.event(f"re-adoption: {loaded} stored instances, {probed} unknown listeners probed, "
                          f"{offered} bootstrap ports offered a port", loaded=loaded, probed=probed, offered=offered)
    log.info("plugin_readoption", stored=loaded, probed=probed, offered=offered)
