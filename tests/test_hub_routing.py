"""Routing to a plugin's own port, plugin chat as events, and fan-out to subscribers (and dropping them).

The end-to-end test keeps its subscriptions for the whole test (a time to live of 30 s: at 1.5 s a loaded machine
let them lapse between two steps); a subscription's lapse is tested with a clock moved by hand (the rig of
tests/test_hub_timing.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from oscbridge.client import BridgeClient, BridgeRequestError
from oscbridge.plugins.hub import PluginHub
from oscbridge.tools.sim.plugin import PluginFleet, build_message
from tests.conftest import wait_until
from tests.hub_support import RawPlugin, hub_settings, listener, running, sim_config
from tests.test_hub_timing import EPS, Rig, settings_for

TTL = 30.0  # seconds: far longer than the test, so that no subscription lapses while it runs


async def test_parameters_chat_and_fanout(tmp_path: Path, database_url: str) -> None:
    settings = hub_settings(tmp_path, database_url, plugins=8, subscriber_max_errors=3, subscription_ttl=TTL,
                            plugin_silence=5.0)
    async with running(settings) as bridge, listener() as meters, listener() as gone, listener() as idle:
        hub = bridge.hub
        assert isinstance(hub, PluginHub)
        client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
        fleet = PluginFleet(2, sim_config(settings), interval=0.0)
        await fleet.start()
        try:
            await fleet.wait_all(lambda p: p.state == "bound", timeout=5)
            await client.call("/bridge/subscribe", meters.port, "/aiplayer/{telemetry,rms}")
            await client.call("/bridge/subscribe", meters.port, "/bridge/event/*")  # a second pattern, same port
            await client.call("/bridge/subscribe", gone.port, "/aiplayer/telemetry")
            await client.call("/bridge/subscribe", idle.port, "/bridge/event/chat_request")
            for number, plugin in enumerate(fleet, start=1):
                await client.call("/bridge/calibrate/assign", plugin.temp_id, f"TR{number}", number, f"T{number}")

            # Parameters and chat go to the plugin of that track id only, with the plugin's argument types.
            await client.call("/bridge/plugin/parameter", "TR2", "GAIN", -3)
            await client.call("/bridge/plugin/chat", "TR1", "OK, reducing GAIN by 3.0 dB.")
            await fleet[1].wait_for(lambda p: "GAIN" in p.parameters)
            await fleet[0].wait_for(lambda p: bool(p.chat_responses))
            assert fleet[1].parameters == {"GAIN": -3.0} and not fleet[0].parameters
            assert fleet[0].chat_responses == ["OK, reducing GAIN by 3.0 dB."] and not fleet[1].chat_responses
            with pytest.raises(BridgeRequestError) as missing:
                await client.call("/bridge/plugin/parameter", "TR9", "GAIN", -3.0)
            assert missing.value.code == "not_found"
            with pytest.raises(BridgeRequestError) as too_long:
                await client.call("/bridge/plugin/chat", "TR1", "é" * 2001, timeout=3)
            assert too_long.value.code == "bad_request"

            # Plugin chat: ,is as the plugin sends it (track id from its sender), and ,ss.
            fleet[1].send_chat("reduce gain by 3 db")
            raw = RawPlugin(settings.osc_port)
            raw.send("/aiplayer/chat/request", ("s", "TR5"), ("s", "louder"))
            await wait_until(lambda: len(meters.of("/bridge/event/chat_request")) == 2)
            assert meters.of("/bridge/event/chat_request") == [["TR2", "reduce gain by 3 db"], ["TR5", "louder"]]
            assert idle.of("/bridge/event/chat_request") == meters.of("/bridge/event/chat_request")

            # Telemetry reaches subscribers byte for byte as the plugin sent it.
            await wait_until(lambda: len(meters.of("/aiplayer/telemetry")) >= 4 and meters.of("/aiplayer/rms"))
            sent = {build_message("/aiplayer/telemetry", ("s", args[0]), *(("f", v) for v in args[1:]))
                    for p in fleet for args in p.sent_args("/aiplayer/telemetry")}
            forwarded = [d for d in meters.raw if d.startswith(b"/aiplayer/telemetry\0")]
            assert forwarded and set(forwarded) <= sent
            assert meters.of("/bridge/event/assigned")[0][:2] == [fleet[0].temp_id, "TR1"]

            # The subscriber whose socket closed is dropped after a few refused sends.
            gone.close()
            await wait_until(lambda: ("127.0.0.1", gone.port) not in hub.fanout.subscribers)
            assert ("127.0.0.1", meters.port) in hub.fanout.subscribers  # not a lapse: the others are still there
            # Unsubscribed: nothing more arrives; an unsubscription is not counted as a drop.
            await client.call("/bridge/unsubscribe", meters.port)
            await asyncio.sleep(0.1)
            count = len(meters.raw)
            await asyncio.sleep(0.2)
            assert len(meters.raw) == count
            assert set(hub.fanout.subscribers) == {("127.0.0.1", idle.port)}
            assert dict(await client.rows("/bridge/stats"))["fanout.dropped"] == 1
            with pytest.raises(BridgeRequestError) as bad:
                await client.call("/bridge/subscribe", idle.port, "/aiplayer/[oops")
            assert bad.value.code == "bad_request"

            # The parameter change is in the debug traffic with its float32 argument.
            assert await bridge.writer.flush(5.0)
            conn = await asyncpg.connect(database_url)
            payload = await conn.fetchval(
                "SELECT payload FROM mission_control_debug WHERE message_type = 'osc_out' "
                "AND content LIKE '/aiplayer/set_parameter%'")
            await conn.close()
            assert json.loads(payload)["args"] == [["s", "GAIN"], ["f", -3.0]]
            raw.close()
        finally:
            await fleet.close()
            await client.close()


async def test_a_subscription_not_renewed_within_its_time_to_live_lapses(tmp_path: Path) -> None:
    """The hub's tick drops a subscription `subscription_ttl` after it was last made or renewed (the default,
    an hour), and counts it in `fanout.dropped`; a renewal (the same subscribe again) starts its time over."""
    rig = Rig(settings_for(tmp_path))
    fanout, ttl = rig.hub.fanout, rig.settings.subscription_ttl
    async with listener() as renewing, listener() as lapsing:
        kept, dropped = ("127.0.0.1", renewing.port), ("127.0.0.1", lapsing.port)
        try:
            for addr in (kept, dropped):
                fanout.subscribe(addr, "/aiplayer/telemetry", rig.clock.monotonic())
            await rig.after(ttl / 2)
            fanout.subscribe(kept, "/aiplayer/telemetry", rig.clock.monotonic())  # renewed, half-way
            await rig.after(ttl / 2)
            assert set(fanout.subscribers) == {kept, dropped}  # at its time to live, not yet past it
            await rig.after(EPS)
            assert set(fanout.subscribers) == {kept} and rig.hub.stats()["fanout.dropped"] == 1
            await rig.after(ttl / 2 - EPS)
            assert set(fanout.subscribers) == {kept}
            await rig.after(EPS)
            assert not fanout.subscribers and rig.hub.stats()["fanout.dropped"] == 2
        finally:
            fanout.close()
