"""Re-adoption: plugins started before the bridge, and a bridge restarted while plugins keep running (with its
database, and without it)."""

from __future__ import annotations

from pathlib import Path

from oscbridge.client import BridgeClient
from oscbridge.plugins.adoption import READOPT_TEMP_ID
from oscbridge.tools.sim.plugin import PluginFleet, SimulatedPlugin
from tests.conftest import make_settings, wait_until
from tests.hub_support import hub_settings, plugins_by_id, running, sim_config


async def test_plugins_started_before_the_bridge_get_a_port(tmp_path: Path, database_url: str) -> None:
    settings = hub_settings(tmp_path, database_url, plugins=8)
    fleet = PluginFleet(3, sim_config(settings), interval=0.0)
    await fleet.start()  # their one request_port goes nowhere: they wait on their bootstrap ports
    try:
        assert [p.state for p in fleet] == ["requesting"] * 3
        async with running(settings):
            await fleet.wait_all(lambda p: p.state == "bound", timeout=5)
            client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
            listed = await plugins_by_id(client)
            stats = dict(await client.rows("/bridge/stats"))
            await client.close()
        assert {t: row[:2] for t, row in listed.items()} == {p.temp_id: [p.port, "bound"] for p in fleet}
        assert len({p.port for p in fleet}) == 3
        for plugin in fleet:
            assert [args[0] for args in plugin.received_args("/aiplayer/port_assignment")] == [READOPT_TEMP_ID]
        assert stats["hub.readopt_offered"] == 3
    finally:
        await fleet.close()


async def identify(client: BridgeClient, plugin: SimulatedPlugin, number: int) -> None:
    await client.call("/bridge/calibrate/assign", plugin.temp_id, f"TR{number}", number, f"Track {number}")
    await plugin.wait_for(lambda p: len(p.sent_args("/aiplayer/telemetry")) > 0)


async def test_restart_keeps_ports_and_readopts_running_plugins(tmp_path: Path, database_url: str) -> None:
    settings = hub_settings(tmp_path, database_url, plugins=8)
    fleet = PluginFleet(4, sim_config(settings), interval=0.0)
    try:
        async with running(settings):
            await fleet.start()
            await fleet.wait_all(lambda p: p.state == "bound", timeout=5)
            client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
            await identify(client, fleet[0], 1)
            await identify(client, fleet[2], 2)
            before = await plugins_by_id(client)
            await client.close()
        # The bridge is down; the plugins keep their ports and keep streaming into the void.
        async with running(settings):
            client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
            await wait_until(lambda: _status_is(client, [4, 2]), timeout=5)
            after = await plugins_by_id(client)
            assert {t: row[:3] for t, row in after.items()} == {t: row[:3] for t, row in before.items()}
            assert (await client.call("/bridge/mapping/track", "TR2"))[2:] == [fleet[2].port, fleet[2].temp_id]
            stats = dict(await client.rows("/bridge/stats"))
            assert (stats["hub.readopt_stored"], stats.get("hub.readopt_probed", 0)) == (4, 0)  # from the database
            newcomer = SimulatedPlugin(sim_config(settings))
            await newcomer.start()
            await newcomer.wait_for(lambda p: p.state == "bound")
            # None of the re-adopted ports (which port exactly depends on what else the machine holds).
            assert newcomer.port is not None and newcomer.port not in {p.port for p in fleet}
            assert settings.port_range_start <= newcomer.port <= settings.port_range_end
            await newcomer.close()
            await client.close()
        # Nobody was moved or asked to rebind: one port_assignment each, in the first bridge's life.
        assert all(len(p.received_args("/aiplayer/port_assignment")) == 1 for p in fleet)
        assert all(p.state == "bound" for p in fleet)
    finally:
        await fleet.close()


async def _status_is(client: BridgeClient, expected: list[int]) -> bool:
    return (await client.call("/bridge/status"))[:2] == expected


async def test_restart_without_the_database_readopts_from_the_wire(tmp_path: Path, database_url: str) -> None:
    settings = hub_settings(tmp_path, database_url, plugins=8)
    fleet = PluginFleet(3, sim_config(settings), interval=0.0)
    try:
        async with running(settings):
            await fleet.start()
            await fleet.wait_all(lambda p: p.state == "bound", timeout=5)
            client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
            await identify(client, fleet[1], 7)
            await client.close()
        # Same ports, no database: nothing is stored to go by, so the pool range is scanned for listeners.
        blind = make_settings(tmp_path / "blind", "postgresql://nobody@127.0.0.1:1/none",
                              **{k: getattr(settings, k) for k in (
                                  "osc_port", "port_range_start", "port_range_end", "ephemeral_base",
                                  "ephemeral_step", "ephemeral_count", "plugin_silence", "plugin_probe_timeout",
                                  "plugin_probe_misses", "hub_tick")}, drain_timeout=1.5)
        async with running(blind) as bridge:
            assert not bridge.db.up
            client = await BridgeClient.connect("127.0.0.1", blind.osc_port)
            await wait_until(lambda: _status_is(client, [3, 1]), timeout=5)
            listed = await plugins_by_id(client)
            assert {t: row[:3] for t, row in listed.items()} == {
                p.temp_id: [p.port, "identified" if p is fleet[1] else "bound", "TR7" if p is fleet[1] else ""]
                for p in fleet}
            stats = dict(await client.rows("/bridge/stats"))
            assert (stats.get("hub.readopt_stored", 0), stats["hub.readopt_probed"]) == (0, 3)  # from the wire
            await client.close()
    finally:
        await fleet.close()
