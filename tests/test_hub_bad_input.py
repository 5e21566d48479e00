"""Every kind of bad plugin input of issue 3: handled without crashing, counted, never corrupting the pool.

One live simulated plugin holds a port throughout; after each bad datagram its counter must move, and at the end
the pool, the instances and the plugin are exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage

from oscbridge.client import BridgeClient
from oscbridge.plugins.hub import PluginHub
from oscbridge.tools.sim.plugin import SimulatedPlugin, build_message
from tests.conftest import wait_until
from tests.hub_support import RawPlugin, hub_settings, plugins_by_id, running, sim_config

STRANGER = "f" * 32


def bundle_of(data: bytes) -> bytes:
    builder = OscBundleBuilder(IMMEDIATELY)
    builder.add_content(OscMessage(data))
    return bytes(builder.build().dgram)


async def test_bad_plugin_input_is_counted_and_changes_nothing(tmp_path: Path, database_url: str) -> None:
    settings = hub_settings(tmp_path, database_url, plugins=8, debug_rows_per_second=30,
                            plugin_probe_interval=60.0)
    start = settings.port_range_start
    async with running(settings) as bridge:
        hub = bridge.hub
        assert isinstance(hub, PluginHub)
        plugin = SimulatedPlugin(sim_config(settings))
        await plugin.start()
        await plugin.wait_for(lambda p: p.state == "bound")
        legit = plugin.temp_id
        raw = RawPlugin(settings.osc_port)
        reply_port = await raw.listen()
        client = await BridgeClient.connect("127.0.0.1", settings.osc_port)

        async def expect(counter: str, send: Callable[[], None], before: int | None = None) -> None:
            stats = dict(await client.rows("/bridge/stats"))
            was = stats.get(counter, 0) if before is None else before
            send()
            await wait_until(lambda: _counter_above(client, counter, was), timeout=5)

        request = build_message("/aiplayer/request_port", ("s", STRANGER), ("i", -1), ("i", reply_port))
        cases: list[tuple[str, Callable[[], None]]] = [
            ("hub.out_of_range_port", lambda: raw.send(
                "/aiplayer/request_port", ("s", STRANGER), ("i", -1), ("i", 70000))),
            ("hub.out_of_range_port", lambda: raw.send(
                "/aiplayer/port_confirmed", ("s", legit), ("i", 70000), ("s", "bound"))),
            ("hub.out_of_range_port", lambda: raw.send(
                "/aiplayer/port_confirmed", ("s", legit), ("i", -5), ("s", "failed"))),
            ("hub.unknown_instance_id", lambda: raw.send(
                "/aiplayer/port_confirmed", ("s", STRANGER), ("i", start + 3), ("s", "bound"))),
            ("hub.unknown_instance_id", lambda: raw.send(
                "/aiplayer/uuid_assignment_confirmed", ("s", STRANGER), ("s", "TR1"), ("s", "confirmed"))),
            ("hub.unassigned_port", lambda: raw.send(
                "/aiplayer/port_confirmed", ("s", legit), ("i", start + 4), ("s", "bound"))),
            ("hub.unassigned_port", lambda: raw.send(
                "/aiplayer/port_confirmed", ("s", legit), ("i", start + 4), ("s", "failed"))),
            ("hub.duplicate_instance_id", lambda: raw.send(
                "/aiplayer/request_port", ("s", legit), ("i", -1), ("i", reply_port))),
            ("hub.bad_status", lambda: raw.send(
                "/aiplayer/port_confirmed", ("s", legit), ("i", plugin.port), ("s", "maybe"))),
            ("hub.bad_type_tags", lambda: raw.send(
                "/aiplayer/request_port", ("s", STRANGER), ("f", -1.0), ("f", float(reply_port)))),
            ("hub.bad_type_tags", lambda: raw.send(
                "/aiplayer/telemetry", ("s", "TR1"), *(("i", 0),) * 5)),
            ("hub.bad_type_tags", lambda: raw.send("/aiplayer/rms", ("s", "TR1"), ("d", 0.5))),
            ("hub.bad_type_tags", lambda: raw.send("/aiplayer/chat/request", ("T", True), ("s", "hi"))),
            ("hub.bundle", lambda: raw.send_bytes(bundle_of(request))),
            ("router.malformed", lambda: raw.send_bytes(request[:30])),  # cut mid-argument, not 4-aligned
            ("router.malformed", lambda: raw.send_bytes(request[:-4])),  # 4-aligned, one int missing
            ("hub.unknown_track", lambda: raw.send(
                "/aiplayer/telemetry", ("s", "TR99"), ("f", 0.1), *(("f", -20.0),) * 4)),
            ("hub.bad_track_id", lambda: raw.send(
                "/aiplayer/telemetry", ("s", "XX1"), ("f", 0.1), *(("f", -20.0),) * 4)),
            ("hub.unknown_query", lambda: raw.send(
                "/aiplayer/rms_response", ("s", "NOT-OURS"), ("s", STRANGER), ("f", 0.5))),
        ]
        pool_before = dict(hub.pool.owner)
        for counter, send in cases:
            try:
                await expect(counter, send)
            except AssertionError as exc:
                raise AssertionError(f"{counter} did not move") from exc

        # The duplicate got "error", the stranger nothing at all (its requests were refused).
        assert raw.received("/aiplayer/port_assignment") == [[legit, -1, "error"]]
        # Telemetry for an unknown track is still shown (meters work after a restart), but creates no instance.
        assert "TR99" in hub.levels.tracks and "XX1" not in hub.levels.tracks
        assert set(hub.registry.by_id) == {legit}
        assert hub.pool.owner == pool_before == {plugin.port: legit}
        assert not hub.pool.quarantined
        stats = dict(await client.rows("/bridge/stats"))
        assert stats.get("router.handler_errors", 0) == 0
        assert stats["router.plugin_rejected"] >= 14
        assert stats["router.bundles"] == 1

        # A flood of control messages is counted, but the debug rows are capped (30 a second here).
        for _ in range(100):
            raw.send("/aiplayer/uuid_assignment_confirmed", ("s", STRANGER), ("s", "TR1"), ("s", "confirmed"))
        await wait_until(lambda: _counter_above(client, "hub.debug_rows_suppressed", 50))

        # The live plugin never noticed: still bound on its port, and it answers.
        assert (await plugins_by_id(client))[legit][:2] == [plugin.port, "bound"]
        assert [row[:2] for row in await client.rows("/bridge/calibrate/probe")] == [[legit, plugin.port]]
        await client.close()
        raw.close()
        await plugin.close()


async def _counter_above(client: BridgeClient, counter: str, value: int) -> bool:
    return bool(dict(await client.rows("/bridge/stats")).get(counter, 0) > value)
