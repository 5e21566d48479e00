"""Liveness: nobody sends a heartbeat (protocol note 6.7 item 21), so the hub probes.

A streaming plugin that falls silent, an idle bound plugin now and then, and an assignment nobody confirmed get a
`query_rms` with a query id of their own. Anything heard from the plugin's sender counts as an answer; after
`plugin_probe_misses` unanswered probes in a row the plugin is gone and its port goes back to the pool. The sweep
also expires what only lives for a while: re-adoption placeholders, queries, unknown senders, subscriptions,
levels of tracks nobody streams any more.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from oscbridge.logs import get_logger
from oscbridge.plugins.adoption import probe_busy_ports
from oscbridge.plugins.registry import NEVER, Instance

if TYPE_CHECKING:
    from oscbridge.plugins.hub import PluginHub

log = get_logger("oscbridge.plugins.liveness")

LAST_SEEN_EVERY = 60.0  # seconds between writes of an instance's last_seen while it stays live


async def run(hub: PluginHub) -> None:
    while True:
        await asyncio.sleep(hub.settings.hub_tick)
        try:
            sweep(hub)
        except Exception as exc:  # one bad sweep must not end liveness for good
            log.exception("plugin_sweep_failed", error=str(exc))


def sweep(hub: PluginHub) -> None:
    """Probes the plugins that are due, declares gone those that missed too many, drops old state."""
    now = time.monotonic()
    settings = hub.settings
    for inst in list(hub.registry.by_id.values()):
        if inst.live:
            _check(hub, inst, now)
            if inst.live and inst.last_heard - inst.seen_stored > LAST_SEEN_EVERY:
                hub.persist(inst)
        elif now - inst.changed_at > settings.gone_retention:
            hub.registry.drop(inst)
    for port, placeholder in list(hub.placeholders.items()):
        if now - placeholder.sent > settings.assign_expiry:
            del hub.placeholders[port]
            hub.pool.release(port, placeholder.owner)
    stale = now - 2 * settings.plugin_probe_timeout - settings.calibrate_window
    for query_id in [q for q, query in hub.queries.items() if query.sent < stale]:
        del hub.queries[query_id]
    for sender in [a for a, (_, heard) in hub.unknown_senders.items() if now - heard > settings.plugin_silence]:
        del hub.unknown_senders[sender]
    hub.fanout.expire(now)
    hub.levels.expire(now, settings.gone_retention)
    if hub.discover_wanted and now >= hub.next_discovery:
        hub.discover_wanted = False
        hub.next_discovery = now + 5 * settings.plugin_probe_timeout
        probe_busy_ports(hub)


def _check(hub: PluginHub, inst: Instance, now: float) -> None:
    settings = hub.settings
    if inst.probe_sent != NEVER:
        if inst.last_heard >= inst.probe_sent:
            inst.probe_sent, inst.misses = NEVER, 0
        elif now - inst.probe_sent >= settings.plugin_probe_timeout:
            inst.misses += 1
            inst.probe_sent = NEVER
            if inst.misses >= settings.plugin_probe_misses:
                hub.gone(inst, f"silent, and no answer to {inst.misses} probes")
            else:
                hub.probe_instance(inst)
        return
    if inst.state == "identified":
        due = now - inst.last_heard >= settings.plugin_silence
    elif inst.state == "bound":
        due = now - inst.last_heard >= settings.plugin_probe_interval
    else:  # assigned: a validation instance that never confirmed, or a confirmation that got lost
        due = now - inst.assigned_at >= settings.assign_expiry
    if due:
        hub.probe_instance(inst)
