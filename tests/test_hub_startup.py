"""32 simulated plugins through start-up, calibration and telemetry, with the test playing the Control Room.

The Control Room mutes every track in Logic, asks for the tone, unmutes one track at a time, probes, and assigns
the loudest plugin to that track. Here the test sets the simulators' `muted` flags where the Control Room would
click Mute in Logic; a muted strip is not rendered, so its levels freeze (the simulator models that).
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import asyncpg

from oscbridge.app import Bridge
from oscbridge.client import BridgeClient
from oscbridge.plugins.hub import PluginHub
from oscbridge.tools.sim.plugin import PluginFleet, SimulatedPlugin
from tests.conftest import wait_until
from tests.hub_support import hub_settings, listener, plugins_by_id, running, sim_config

COUNT = 32


async def test_32_plugins_start_calibrate_and_stream(tmp_path: Path, database_url: str) -> None:
    settings = hub_settings(tmp_path, database_url, plugins=COUNT + 8, plugin_silence=2.0,
                            debug_rows_per_second=100_000)
    async with running(settings) as bridge, listener() as events:
        hub = bridge.hub
        assert isinstance(hub, PluginHub)
        client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
        await client.call("/bridge/subscribe", events.port, "/bridge/event/*")
        fleet = PluginFleet(COUNT, sim_config(settings), interval=0.005)
        try:
            await fleet.start()
            await fleet.wait_all(lambda p: p.state == "bound", timeout=5)

            # Start-up: the lowest ports, one each, every instance bound and known by its sender port.
            start = settings.port_range_start
            assert sorted(p.port for p in fleet if p.port) == list(range(start, start + COUNT))
            listed = await plugins_by_id(client)
            assert {temp_id: row[:3] for temp_id, row in listed.items()} == {
                p.temp_id: [p.port, "bound", ""] for p in fleet}
            assert (await client.call("/bridge/status"))[:2] == [COUNT, 0]
            for plugin in fleet:
                assert plugin.sender_port is not None
                assert hub.registry.by_sender[("127.0.0.1", plugin.sender_port)].instance_id == plugin.temp_id

            # Calibration, in a track order that is not the start order.
            assert await client.call("/bridge/calibrate/tone", 1) == [COUNT]
            assert all(p.tone_on for p in fleet)
            order: list[SimulatedPlugin] = random.Random(7).sample(list(fleet), COUNT)
            for number, plugin in enumerate(order, start=1):
                plugin.muted = False
                rows = await client.rows("/bridge/calibrate/probe")
                plugin.muted = True
                assert len(rows) == COUNT - number + 1  # only plugins without a track are probed
                loudest, port, dbfs = rows[0]
                assert (loudest, port) == (plugin.temp_id, plugin.port)
                assert -14 < dbfs < -12 and all(row[2] == -100.0 for row in rows[1:])
                await client.call("/bridge/calibrate/assign", loudest, f"TR{number}", number, f"Track {number}")
                assert plugin.track_id == f"TR{number}"
            assert await client.call("/bridge/calibrate/tone", 0) == [COUNT]
            assert not any(p.tone_on for p in fleet)
            # Every tone and probe went to each plugin's own port, with the plugin's float32 arguments.
            assert all(p.received_args("/aiplayer/start_tone") == [[137.0, -10.0]] for p in fleet)

            # Telemetry: every track streams; levels are the frozen tone (the strips stay muted, as in Logic).
            await wait_until(lambda: len(hub.levels.tracks) == COUNT and all(
                len(p.sent_args("/aiplayer/telemetry")) >= 3 for p in fleet), timeout=5)
            levels = {row[0]: row for row in await client.rows("/bridge/levels")}
            assert set(levels) == {f"TR{n}" for n in range(1, COUNT + 1)}
            assert all(-14 < row[1] < -12 and row[2] == -16.0 and row[6] < 1.0 for row in levels.values())
            mapping = await client.rows("/bridge/mapping/list")
            assert [(m[0], m[2], m[3], m[4]) for m in mapping] == [
                (n, f"TR{n}", p.port, p.temp_id) for n, p in enumerate(order, start=1)]
            assert (await client.call("/bridge/status"))[:2] == [COUNT, COUNT]
            assigned = events.of("/bridge/event/assigned")
            assert [a[:3] for a in assigned] == [[p.temp_id, f"TR{n}", n] for n, p in enumerate(order, start=1)]
            assert {"assigned", "bound", "identified"} == {e[2] for e in events.of("/bridge/event/plugin")}

            await stored_state_matches(bridge, database_url, fleet, order)
        finally:
            await fleet.close()
            await client.close()


async def stored_state_matches(bridge: Bridge, database_url: str, fleet: PluginFleet,
                               order: list[SimulatedPlugin]) -> None:
    """The instances and the control traffic are in PostgreSQL; the telemetry stream is not."""
    assert await bridge.writer.flush(10.0)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT instance_id, port, state, plugin_id FROM plugin_instances")
        assert {r["instance_id"]: (r["port"], r["state"], r["plugin_id"]) for r in rows} == {
            p.temp_id: (p.port, "identified", f"TR{n}") for n, p in enumerate(order, start=1)}
        kinds: dict[str, int] = {r["address"]: r["count"] for r in await conn.fetch(
            "SELECT split_part(content, ' ', 1) AS address, count(*) FROM mission_control_debug "
            "WHERE message_type IN ('osc_in', 'osc_out') GROUP BY 1")}
        assert kinds["/aiplayer/request_port"] == COUNT
        assert kinds["/aiplayer/port_confirmed"] == COUNT
        assert kinds["/aiplayer/track_uuid_assignment"] >= COUNT
        assert kinds["/aiplayer/uuid_assignment_confirmed"] >= COUNT
        assert "/aiplayer/telemetry" not in kinds and "/aiplayer/rms" not in kinds
        row = await conn.fetchrow(
            "SELECT sender, receiver, payload FROM mission_control_debug "
            "WHERE message_type = 'osc_in' AND content LIKE '/aiplayer/request_port%' LIMIT 1")
        assert row is not None
        payload = json.loads(row["payload"])
        assert payload["tags"] == "sii" and payload["args"][1] == ["i", -1]
        assert row["sender"].startswith("127.0.0.1:") and row["receiver"].endswith(f":{bridge.settings.osc_port}")
    finally:
        await conn.close()
    await asyncio.sleep(0)
