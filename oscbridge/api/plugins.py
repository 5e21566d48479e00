"""/bridge/plugins, /bridge/levels, /bridge/subscribe, /bridge/calibrate/*, /bridge/plugin/*, /bridge/stats:
the requests of the plugin hub (BRIDGE-API.md; `/bridge/stats` is an extension, see docs/plugin-hub.md)."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from oscbridge.api.endpoint import Rows, request
from oscbridge.api.params import Bool, BridgeError, Float, Int, Str, bad_request, plugin_id
from oscbridge.plugins.fanout import FanoutFull
from oscbridge.plugins.registry import Instance

if TYPE_CHECKING:
    from oscbridge.plugins.hub import PluginHub

FLOAT32_MAX = 3.4e38  # the value goes out as float32, the only type the plugin accepts
MAX_CHAT_BYTES = 4000  # older JUCE receivers read datagrams into a 4098-byte buffer (protocol note 1.1 item 7)


def _port(inst: Instance) -> int:
    return inst.port if inst.port is not None and inst.live else -1


class PluginsApi:
    def __init__(self, hub: PluginHub) -> None:
        self.hub = hub

    @request("/bridge/plugins")
    def plugins(self) -> Rows:
        """Every instance the bridge knows (gone ones for a while); seconds since last heard, -1 if never."""
        now = time.monotonic()
        rows = [(inst.instance_id, _port(inst), inst.state, inst.plugin_id,
                 now - inst.last_heard if math.isfinite(inst.last_heard) else -1.0)
                for inst in self.hub.registry.by_id.values()]
        rows.sort(key=lambda row: (row[1] < 0, row[1], row[0]))
        return Rows(rows)

    @request("/bridge/levels")
    def levels(self) -> Rows:
        return Rows(list(self.hub.levels.rows(time.monotonic())))

    @request("/bridge/stats")
    def stats(self) -> Rows:
        return Rows(list(self.hub.stats()))

    def _requester_host(self) -> str:
        router = self.hub.ctx.router
        assert router is not None
        return router.source[0]

    @request("/bridge/subscribe", Int("port", min=1, max=65535), Str("pattern", min_len=1, max_len=255))
    def subscribe(self, port: int, pattern: str) -> tuple[()]:
        """Synchronous on purpose: the router's `source` is the requester only while the request is dispatched."""
        if not pattern.startswith("/"):
            raise bad_request(f"pattern must be an OSC address pattern starting with '/'; got {pattern[:40]!r}")
        try:
            self.hub.fanout.subscribe((self._requester_host(), port), pattern, time.monotonic())
        except ValueError as exc:
            raise bad_request(f"pattern {pattern[:40]!r}: {exc}") from exc
        except FanoutFull as exc:
            raise BridgeError("unavailable", str(exc)) from exc
        except OSError as exc:
            raise BridgeError("unavailable", f"cannot send to port {port}: {exc.strerror or exc}") from exc
        return ()

    @request("/bridge/unsubscribe", Int("port", min=1, max=65535))
    def unsubscribe(self, port: int) -> tuple[()]:
        """Idempotent: unsubscribing a port that holds no subscription is not an error."""
        self.hub.fanout.unsubscribe((self._requester_host(), port))
        return ()

    @request("/bridge/calibrate/tone", Bool("on"), Float("frequency", default=137.0, min=1.0, max=24000.0),
             Float("level_db", default=-10.0, min=-120.0, max=0.0))
    async def tone(self, on: bool, frequency: float, level_db: float) -> tuple[int]:
        return (await self.hub.calibration.tone(on, frequency, level_db),)

    @request("/bridge/calibrate/probe")
    async def probe(self) -> Rows:
        return Rows(list(await self.hub.calibration.probe()))

    @request("/bridge/calibrate/assign", Str("instance_id", min_len=1, max_len=64), plugin_id(),
             Int("track_number", min=1, max=100_000), Str("track_name", max_len=255))
    async def assign(self, instance_id: str, plugin: str, track_number: int, track_name: str) -> tuple[()]:
        await self.hub.calibration.assign(instance_id, plugin, track_number, track_name)
        return ()

    def _live(self, plugin: str) -> Instance:
        inst = self.hub.registry.for_plugin(plugin)
        if inst is None or not inst.live or inst.port is None:
            raise BridgeError("not_found", f"no live plugin carries track id {plugin}")
        return inst

    @request("/bridge/plugin/parameter", plugin_id(), Str("parameter", min_len=1, max_len=64),
             Float("value", min=-FLOAT32_MAX, max=FLOAT32_MAX))
    def parameter(self, plugin: str, parameter: str, value: float) -> tuple[()]:
        inst = self._live(plugin)
        self.hub.send_plugin(self.hub.dest(inst), "/aiplayer/set_parameter", [parameter, value], "sf")
        return ()

    @request("/bridge/plugin/chat", plugin_id(), Str("text", max_len=MAX_CHAT_BYTES))
    def chat(self, plugin: str, text: str) -> tuple[()]:
        if len(text.encode("utf-8")) > MAX_CHAT_BYTES:
            raise bad_request(f"text is over {MAX_CHAT_BYTES} bytes in UTF-8; older plugins could not read it")
        inst = self._live(plugin)
        self.hub.send_plugin(self.hub.dest(inst), "/aiplayer/chat/response", [text], "s")
        return ()
