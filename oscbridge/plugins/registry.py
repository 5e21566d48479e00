"""Live plugin instances as the bridge knows them, looked up by instance id and by track id (TRn).

This is the in-memory side that mapping queries join with: which port and instance a TR id lives on now.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

STATES = ("requesting", "assigned", "bound", "identified", "failed", "gone")


@dataclass
class Instance:
    instance_id: str
    port: int | None = None
    state: str = "requesting"
    plugin_id: str = ""
    sender: tuple[str, int] | None = None
    response_port: int | None = None
    first_seen: float = field(default_factory=time.time)
    last_heard: float = field(default_factory=time.monotonic)


class InstanceRegistry:
    def __init__(self) -> None:
        self.by_id: dict[str, Instance] = {}
        self.by_plugin_id: dict[str, Instance] = {}

    def get(self, instance_id: str) -> Instance | None:
        return self.by_id.get(instance_id)

    def for_plugin(self, plugin_id: str) -> Instance | None:
        """The live instance that carries track id `plugin_id`, if any."""
        return self.by_plugin_id.get(plugin_id)

    def count(self, *states: str) -> int:
        return sum(1 for inst in self.by_id.values() if inst.state in states)
