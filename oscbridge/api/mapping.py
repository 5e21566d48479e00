"""/bridge/mapping/*: which TRn sits on which Logic track, answered from memory."""

from __future__ import annotations

import uuid

from oscbridge.api.endpoint import Rows, request
from oscbridge.api.params import BridgeError, Int, Str, plugin_id
from oscbridge.context import BridgeContext
from oscbridge.state import TrackMapping
from oscbridge.store.writer import now_ts


def set_mapping(ctx: BridgeContext, track_number: int, track_name: str, plugin: str) -> None:
    """Maps track `track_number` ("name") to plugin id `plugin` in the current project: queued, then in memory.
    Shared by /bridge/mapping/set and by calibration, which records the mapping once a plugin confirmed it."""
    state = ctx.state
    project = state.require()
    ctx.writer.submit("mapping_set", {
        "id": str(uuid.uuid4()), "project_id": project.id, "session_id": state.session_id,
        "track_number": track_number, "track_name": track_name, "plugin_id": plugin, "ts": now_ts(),
    })
    project.set_mapping(TrackMapping(track_number, track_name, plugin))


class MappingApi:
    def __init__(self, ctx: BridgeContext) -> None:
        self.ctx = ctx

    @request("/bridge/mapping/set", Int("track_number", min=1, max=100_000), Str("track_name", max_len=255),
             plugin_id())
    def set(self, track_number: int, track_name: str, plugin: str) -> tuple[()]:
        set_mapping(self.ctx, track_number, track_name, plugin)
        return ()

    def _live(self, plugin: str) -> tuple[int, str]:
        inst = self.ctx.instances.for_plugin(plugin)
        if inst is None or inst.port is None or inst.state in ("gone", "failed"):
            return -1, ""
        return inst.port, inst.instance_id

    @request("/bridge/mapping/list")
    def list(self) -> Rows:
        return Rows([(m.track_number, m.track_name, m.plugin_id, *self._live(m.plugin_id))
                     for m in self.ctx.state.require().mappings()])

    @request("/bridge/mapping/track", plugin_id())
    def track(self, plugin: str) -> tuple[str, int, int, str]:
        mapping = self.ctx.state.require().by_plugin.get(plugin)
        if mapping is None:
            raise BridgeError("not_found", f"no track is mapped to plugin id {plugin} in this project")
        return (mapping.track_name, mapping.track_number, *self._live(plugin))

    @request("/bridge/mapping/clear")
    def clear(self) -> tuple[int]:
        project = self.ctx.state.require()
        self.ctx.writer.submit("mapping_clear", {"project_id": project.id, "ts": now_ts()})
        return (project.clear(),)
