"""Plugin instances as the bridge knows them, looked up by instance id, by track id (TRn) and by sender.

This is the in-memory side that mapping queries join with: which port and instance a TR id lives on now. A plugin
sends everything from one socket for its whole life (protocol note 1.1 item 6), so the sender address links
its tempID, its TR id and its port. The three indexes change only through the methods below, so they never
disagree; the fields of an `Instance` change only through `Instances` (instances.py), the state machine.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from oscbridge.typedefs import LIVE_STATES, Addr, PluginState

NEVER = -math.inf  # a monotonic time before anything: "never heard", "never probed"

# Every request_port with a new tempID makes an instance, and a failed or gone one is kept for a while
# (`gone_retention`): without a bound, a flood of requests with made-up tempIDs would grow memory for ever. Live
# instances hold a port, so at most the pool's size of them are live; the rest can be forgotten oldest first.
MAX_INSTANCES = 4096


@dataclass(slots=True, eq=False)
class Instance:
    instance_id: str
    first_seen: float  # wall-clock, as stored
    last_heard: float  # monotonic
    changed_at: float  # monotonic: the last change of state, for the retention of gone ones
    port: int | None = None  # the port it holds; for a gone instance, the port it last held
    state: PluginState = PluginState.REQUESTING
    plugin_id: str = ""
    sender: Addr | None = None
    response_port: int | None = None
    assigned_at: float = NEVER
    probe_sent: float = NEVER  # when the outstanding liveness probe went out (NEVER: none outstanding)
    misses: int = 0
    # When the wire last proved where it is: a request from its bootstrap port, a matching `port_confirmed`, an
    # adoption. An answer to a probe sent before that shows where it was, not where it is.
    located_at: float = NEVER
    seen_stored: float = NEVER  # the last_heard value last written to the database

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


class RegistryFull(Exception):
    """Every known instance is live and the registry is at its bound; nothing can be forgotten."""


class InstanceRegistry:
    def __init__(self, max_instances: int = MAX_INSTANCES) -> None:
        self.max_instances = max_instances
        self.by_id: dict[str, Instance] = {}
        self.by_plugin_id: dict[str, Instance] = {}
        self.by_sender: dict[Addr, Instance] = {}

    def __iter__(self) -> Iterator[Instance]:
        return iter(list(self.by_id.values()))

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, instance_id: str) -> Instance | None:
        return self.by_id.get(instance_id)

    def for_plugin(self, plugin_id: str) -> Instance | None:
        """The instance that carries track id `plugin_id`, if any."""
        return self.by_plugin_id.get(plugin_id)

    def from_sender(self, sender: Addr) -> Instance | None:
        return self.by_sender.get(sender)

    def count(self, *states: PluginState) -> int:
        return sum(1 for inst in self.by_id.values() if inst.state in states)

    def add(self, inst: Instance) -> Instance:
        """Adds an instance; at the bound, first forgets the oldest that are not live (raises RegistryFull when
        none can be forgotten)."""
        if len(self.by_id) >= self.max_instances and inst.instance_id not in self.by_id:
            self._forget_oldest_dead(max(1, self.max_instances // 64))
        self.by_id[inst.instance_id] = inst
        if inst.sender is not None:
            self.by_sender[inst.sender] = inst
        if inst.plugin_id:
            self.by_plugin_id[inst.plugin_id] = inst
        return inst

    def set_sender(self, inst: Instance, sender: Addr) -> None:
        if inst.sender == sender:
            return
        if inst.sender is not None and self.by_sender.get(inst.sender) is inst:
            del self.by_sender[inst.sender]
        inst.sender = sender
        self.by_sender[sender] = inst

    def set_plugin(self, inst: Instance, plugin_id: str) -> Instance | None:
        """Gives `inst` track id `plugin_id` ("" = none); returns the instance that carried it before, if any
        (it no longer does: a TR id belongs to one instance)."""
        if inst.plugin_id and self.by_plugin_id.get(inst.plugin_id) is inst:
            del self.by_plugin_id[inst.plugin_id]
        inst.plugin_id = plugin_id
        if not plugin_id:
            return None
        previous = self.by_plugin_id.get(plugin_id)
        self.by_plugin_id[plugin_id] = inst
        if previous is None or previous is inst:
            return None
        previous.plugin_id = ""
        return previous

    def _forget_oldest_dead(self, count: int) -> None:
        """Forgets up to `count` instances that are not live, oldest first (dicts keep insertion order)."""
        dead = []
        for inst in self.by_id.values():
            if not inst.live:
                dead.append(inst)
                if len(dead) == count:
                    break
        if not dead:
            raise RegistryFull(f"{len(self.by_id)} live plugin instances")
        for inst in dead:
            self.drop(inst)

    def drop(self, inst: Instance) -> None:
        """Forgets an instance (a gone one past its retention)."""
        if self.by_id.get(inst.instance_id) is inst:
            del self.by_id[inst.instance_id]
        if inst.sender is not None and self.by_sender.get(inst.sender) is inst:
            del self.by_sender[inst.sender]
        if inst.plugin_id and self.by_plugin_id.get(inst.plugin_id) is inst:
            del self.by_plugin_id[inst.plugin_id]
