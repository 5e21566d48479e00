"""The port pool on the wire: a port held by another process, a port a plugin could not bind, plugins reloaded
and validation instances that vanish (no leaked ports), and an exhausted pool."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import asyncpg

from oscbridge.client import BridgeClient
from oscbridge.plugins.hub import PluginHub
from oscbridge.tools.sim.plugin import PluginFleet, SimulatedPlugin
from tests.conftest import wait_until
from tests.hub_support import RawPlugin, hub_settings, plugins_by_id, running, sim_config

QUICK = {"plugin_silence": 0.2, "plugin_probe_timeout": 0.1, "plugin_probe_misses": 2,
         "plugin_probe_interval": 0.3, "assign_expiry": 0.3, "hub_tick": 0.02}


def hub_of(bridge: object) -> PluginHub:
    hub = bridge.hub  # type: ignore[attr-defined]
    assert isinstance(hub, PluginHub)
    return hub


async def test_a_port_held_by_another_process_is_quarantined_not_handed_out(tmp_path: Path,
                                                                            database_url: str) -> None:
    settings = hub_settings(tmp_path, database_url, plugins=8)
    start = settings.port_range_start
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", start))
        holder.setblocking(False)
        async with running(settings) as bridge:
            fleet = PluginFleet(2, sim_config(settings), interval=0.0)
            await fleet.start()
            try:
                await fleet.wait_all(lambda p: p.state == "bound", timeout=10)
                assert sorted(p.port for p in fleet if p.port) == [start + 1, start + 2]
                assert start in hub_of(bridge).pool.quarantined
                probe = holder.recv(1024)  # the holder was asked who it is (it might have been a lost plugin)
                assert probe.startswith(b"/aiplayer/query_rms\0")
                assert await bridge.writer.flush(5.0)
                conn = await asyncpg.connect(database_url)
                reason = await conn.fetchval("SELECT reason FROM port_quarantine WHERE port = $1", start)
                await conn.close()
                assert reason == "in use by another process"
            finally:
                await fleet.close()


async def test_a_port_a_plugin_could_not_bind_goes_to_quarantine(tmp_path: Path, database_url: str) -> None:
    settings = hub_settings(tmp_path, database_url, plugins=8)
    start = settings.port_range_start
    async with running(settings) as bridge:
        raw = RawPlugin(settings.osc_port)
        response_port = await raw.listen()
        raw.send("/aiplayer/request_port", ("s", "a" * 32), ("i", -1), ("i", response_port))
        await wait_until(lambda: raw.received("/aiplayer/port_assignment"))
        assert raw.received("/aiplayer/port_assignment") == [["a" * 32, start, "assigned"]]
        raw.send("/aiplayer/port_confirmed", ("s", "a" * 32), ("i", start), ("s", "failed"))
        client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
        await wait_until(lambda: _state_of(client, "a" * 32, [-1, "failed"]))
        plugin = SimulatedPlugin(sim_config(settings))
        await plugin.start()
        await plugin.wait_for(lambda p: p.state == "bound")
        assert plugin.port == start + 1  # the original app handed the failed port to the next plugin
        assert start in hub_of(bridge).pool.quarantined
        await plugin.close()
        await client.close()
        raw.close()
    async with running(settings) as restarted:  # the quarantine is stored: a restart does not forget it
        assert start in hub_of(restarted).pool.quarantined


async def _state_of(client: BridgeClient, temp_id: str, expected: list[object]) -> bool:
    return (await plugins_by_id(client)).get(temp_id, [])[:2] == expected


async def test_reloaded_plugins_and_validation_instances_do_not_leak_ports(tmp_path: Path,
                                                                           database_url: str) -> None:
    settings = hub_settings(tmp_path, database_url, plugins=8, **QUICK)
    start = settings.port_range_start
    async with running(settings) as bridge:
        hub = hub_of(bridge)
        client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
        used: list[int] = []
        temp_ids: list[str] = []
        for reload in range(5):
            # Logic's validation instance: asks for a port and is destroyed before it binds.
            validation = SimulatedPlugin(sim_config(settings))
            await validation.start()
            await validation.close()
            plugin = SimulatedPlugin(sim_config(settings))
            await plugin.start()
            await plugin.wait_for(lambda p: p.state == "bound")
            assert plugin.port is not None
            used.append(plugin.port)
            temp_ids += [validation.temp_id, plugin.temp_id]
            if reload % 2 == 0:  # identified ones stream telemetry; the others are silent until probed
                await client.call("/bridge/calibrate/assign", plugin.temp_id, "TR1", 1, "Kick")
            await asyncio.sleep(0.1)
            await plugin.close()
            await wait_until(lambda: not hub.pool.owner, timeout=10)  # everything came back
        listed = await plugins_by_id(client)
        assert {t: listed[t][:2] for t in temp_ids} == {t: [-1, "gone"] for t in temp_ids}
        assert set(used) <= {start, start + 1}  # ports are reused, not leaked
        assert (await client.call("/bridge/mapping/track", "TR1"))[2:] == [-1, ""]
        await client.close()


async def test_an_exhausted_pool_says_error_and_changes_nothing(tmp_path: Path, database_url: str) -> None:
    settings = hub_settings(tmp_path, database_url, plugins=2)
    async with running(settings) as bridge:
        fleet = PluginFleet(3, sim_config(settings), interval=0.0)
        await fleet.start()
        try:
            await fleet[2].wait_for(lambda p: p.state == "failed")
            await fleet[0].wait_for(lambda p: p.state == "bound")
            await fleet[1].wait_for(lambda p: p.state == "bound")
            assert fleet[2].received_args("/aiplayer/port_assignment") == [[fleet[2].temp_id, -1, "error"]]
            client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
            assert (await plugins_by_id(client))[fleet[2].temp_id][:2] == [-1, "failed"]
            stats = dict(await client.rows("/bridge/stats"))
            assert stats["hub.pool_exhausted"] == 1 and stats["pool.held"] == 2
            await client.close()
            assert sorted(hub_of(bridge).pool.owner) == sorted(p.port for p in (fleet[0], fleet[1]) if p.port)
        finally:
            await fleet.close()
