"""Liveness: nobody sends a heartbeat (protocol note 6.7 item 21), so the hub probes.

A streaming plugin that falls silent, an idle bound plugin now and then, and an assignment nobody confirmed get a
`query_rms` with a query id of their own. Anything heard from the plugin's sender counts as an answer; after
`plugin_probe_misses` unanswered probes in a row the plugin is gone and its port goes back to the pool. A live
instance's last_seen is stored again now and then; a gone one is forgotten after `gone_retention`.
"""

from __future__ import annotations

from oscbridge.config import Settings
from oscbridge.plugins.instances import Instances
from oscbridge.plugins.registry import NEVER, Instance, InstanceRegistry
from oscbridge.typedefs import PluginState

LAST_SEEN_EVERY = 60.0  # seconds between writes of an instance's last_seen while it stays live


class Liveness:
    def __init__(self, registry: InstanceRegistry, instances: Instances, settings: Settings) -> None:
        self._registry = registry
        self._instances = instances
        self._settings = settings

    def sweep(self, now: float) -> None:
        """Probes the plugins that are due, declares gone those that missed too many, forgets old gone ones."""
        for inst in self._registry:
            if inst.live:
                self._check(inst, now)
                if inst.live and inst.last_heard - inst.seen_stored > LAST_SEEN_EVERY:
                    self._instances.persist(inst)
            elif now - inst.changed_at > self._settings.gone_retention:
                self._registry.drop(inst)

    def _check(self, inst: Instance, now: float) -> None:
        settings = self._settings
        if inst.probe_sent != NEVER:
            if inst.last_heard >= inst.probe_sent:
                self._instances.answered(inst)
            elif now - inst.probe_sent >= settings.plugin_probe_timeout:
                misses = self._instances.missed(inst)
                if misses >= settings.plugin_probe_misses:
                    self._instances.gone(inst, f"silent, and no answer to {misses} probes")
                else:
                    self._instances.probe(inst)
            return
        if inst.state == PluginState.IDENTIFIED:
            due = now - inst.last_heard >= settings.plugin_silence
        elif inst.state == PluginState.BOUND:
            due = now - inst.last_heard >= settings.plugin_probe_interval
        else:  # assigned: a validation instance that never confirmed, or a confirmation that got lost
            due = now - inst.assigned_at >= settings.assign_expiry
        if due:
            self._instances.probe(inst)
