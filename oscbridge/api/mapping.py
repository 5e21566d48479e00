"""/bridge/mapping/*: which TRn sits on which Logic track, answered from memory."""

from __future__ import annotations

from oscbridge.api.endpoint import Rows, request
from oscbridge.api.params import Int, Str, plugin_id
from oscbridge.plugins.registry import InstanceRegistry
from oscbridge.projects import Projects
from oscbridge.typedefs import BridgeError, ErrorCode


class MappingApi:
    def __init__(self, projects: Projects, registry: InstanceRegistry) -> None:
        self._projects = projects
        self._registry = registry

    @request("/bridge/mapping/set", Int("track_number", min=1, max=100_000), Str("track_name", max_len=255),
             plugin_id())
    def set(self, track_number: int, track_name: str, plugin: str) -> tuple[()]:
        self._projects.set_mapping(track_number, track_name, plugin)
        return ()

    def _live(self, plugin: str) -> tuple[int, str]:
        """The port and instance id of the live plugin carrying `plugin`, or (-1, "")."""
        inst = self._registry.for_plugin(plugin)
        if inst is None or inst.port is None or not inst.live:
            return -1, ""
        return inst.port, inst.instance_id

    @request("/bridge/mapping/list")
    def list(self) -> Rows:
        return Rows([(m.track_number, m.track_name, m.plugin_id, *self._live(m.plugin_id))
                     for m in self._projects.mappings()])

    @request("/bridge/mapping/track", plugin_id())
    def track(self, plugin: str) -> tuple[str, int, int, str]:
        mapping = self._projects.mapping_for(plugin)
        if mapping is None:
            raise BridgeError(ErrorCode.NOT_FOUND, f"no track is mapped to plugin id {plugin} in this project")
        return (mapping.track_name, mapping.track_number, *self._live(plugin))

    @request("/bridge/mapping/clear")
    def clear(self) -> tuple[int]:
        return (self._projects.clear_mappings(),)
