"""/bridge/plugins, /bridge/levels, /bridge/subscribe, /bridge/calibrate/*, /bridge/plugin/*: the requests of the
plugin hub (BRIDGE-API.md)."""

from __future__ import annotations

import math

from oscbridge.api.endpoint import Request, Rows, request
from oscbridge.api.params import Bool, Float, Int, Str, plugin_id
from oscbridge.clock import Clock
from oscbridge.plugins.fanout import FanoutFull
from oscbridge.plugins.hub import PluginHub
from oscbridge.plugins.registry import Instance
from oscbridge.protocol import CHAT_RESPONSE, SET_PARAMETER
from oscbridge.typedefs import BridgeError, ErrorCode, bad_request

FLOAT32_MAX = 3.4e38  # the value goes out as float32, the only type the plugin accepts
MAX_CHAT_BYTES = 4000  # older JUCE receivers read datagrams into a 4098-byte buffer (protocol note 1.1 item 7)


def _port(inst: Instance) -> int:
    return inst.port if inst.port is not None and inst.live else -1


class PluginsApi:
    def __init__(self, hub: PluginHub, clock: Clock) -> None:
        self._hub = hub
        self._clock = clock

    @request("/bridge/plugins")
    def plugins(self) -> Rows:
        """Every instance the bridge knows (gone ones for a while); seconds since last heard, -1 if never."""
        now = self._clock.monotonic()
        rows = [(inst.instance_id, _port(inst), inst.state.value, inst.plugin_id,
                 now - inst.last_heard if math.isfinite(inst.last_heard) else -1.0)
                for inst in self._hub.registry]
        rows.sort(key=lambda row: (row[1] < 0, row[1], row[0]))
        return Rows(rows)

    @request("/bridge/levels")
    def levels(self) -> Rows:
        return Rows(list(self._hub.levels.rows(self._clock.monotonic())))

    @request("/bridge/subscribe", Int("port", min=1, max=65535), Str("pattern", min_len=1, max_len=255), context=True)
    def subscribe(self, req: Request, port: int, pattern: str) -> tuple[()]:
        """Traffic matching `pattern` goes to the requester's host at `port`."""
        if not pattern.startswith("/"):
            raise bad_request(f"pattern must be an OSC address pattern starting with '/'; got {pattern[:40]!r}")
        try:
            self._hub.fanout.subscribe((req.sender[0], port), pattern, self._clock.monotonic())
        except ValueError as exc:
            raise bad_request(f"pattern {pattern[:40]!r}: {exc}") from exc
        except FanoutFull as exc:
            raise BridgeError(ErrorCode.UNAVAILABLE, str(exc)) from exc
        except OSError as exc:
            raise BridgeError(ErrorCode.UNAVAILABLE, f"cannot send to port {port}: {exc.strerror or exc}") from exc
        return ()

    @request("/bridge/unsubscribe", Int("port", min=1, max=65535), context=True)
    def unsubscribe(self, req: Request, port: int) -> tuple[()]:
        """Idempotent: unsubscribing a port that holds no subscription is not an error."""
        self._hub.fanout.unsubscribe((req.sender[0], port))
        return ()

    @request("/bridge/calibrate/tone", Bool("on"), Float("frequency", default=137.0, min=1.0, max=24000.0),
             Float("level_db", default=-10.0, min=-120.0, max=0.0))
    async def tone(self, on: bool, frequency: float, level_db: float) -> tuple[int]:
        return (await self._hub.calibration.tone(on, frequency, level_db),)

    @request("/bridge/calibrate/probe")
    async def probe(self) -> Rows:
        return Rows(list(await self._hub.calibration.probe()))

    @request("/bridge/calibrate/assign", Str("instance_id", min_len=1, max_len=64), plugin_id(),
             Int("track_number", min=1, max=100_000), Str("track_name", max_len=255))
    async def assign(self, instance_id: str, plugin: str, track_number: int, track_name: str) -> tuple[()]:
        await self._hub.calibration.assign(instance_id, plugin, track_number, track_name)
        return ()

    def _live(self, plugin: str) -> Instance:
        inst = self._hub.live_instance(plugin)
        if inst is None:
            raise BridgeError(ErrorCode.NOT_FOUND, f"no live plugin carries track id {plugin}")
        return inst

    @request("/bridge/plugin/parameter", plugin_id(), Str("parameter", min_len=1, max_len=64),
             Float("value", min=-FLOAT32_MAX, max=FLOAT32_MAX))
    def parameter(self, plugin: str, parameter: str, value: float) -> tuple[()]:
        self._hub.send_to(self._live(plugin), SET_PARAMETER, [parameter, value], "sf")
        return ()

    @request("/bridge/plugin/chat", plugin_id(), Str("text", max_len=MAX_CHAT_BYTES))
    def chat(self, plugin: str, text: str) -> tuple[()]:
        if len(text.encode("utf-8")) > MAX_CHAT_BYTES:
            raise bad_request(f"text is over {MAX_CHAT_BYTES} bytes in UTF-8; older plugins could not read it")
        self._hub.send_to(self._live(plugin), CHAT_RESPONSE, [text], "s")
        return ()
