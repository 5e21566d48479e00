"""A probe answer proves where a plugin was when it read the probe, not where it is now (issue 8 item 9), and the
simulator's message-thread mode that behaves like the real plugin here.

The real plugin handles every OSC callback on its message thread in arrival order (aiplayer-osc-protocol.md,
Appendix B): a `query_rms` read on its old port before it moves is answered after it has moved and confirmed the
new port. On main such a late answer moved the instance back to the old port and released the port it listens
on. Here the plugin receives two port assignments (the first one meant for another instance, as happens when
instances share a bootstrap port), binds the first, moves to its own and confirms it, and only then answers the
bridge's probe of the first port.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from oscbridge.cli import build_parser
from oscbridge.client import BridgeClient
from oscbridge.config import Settings
from oscbridge.plugins.hub import PluginHub
from oscbridge.protocol import (
    PORT_ASSIGNMENT,
    PORT_CONFIRMED,
    QUERY_RMS,
    REQUEST_PORT,
    RMS_RESPONSE,
    TELEMETRY,
    TRACK_UUID_ASSIGNMENT,
)
from oscbridge.tools.sim.cli import config_from_args
from oscbridge.tools.sim.plugin import (
    SimConfig,
    SimulatedPlugin,
    build_message,
)
from tests.conftest import wait_until
from tests.hub_support import (
    Listener,
    RawPlugin,
    free_block,
    hub_settings,
    listener,
    plugins_by_id,
    running,
    sim_config,
)

PLUGIN = "b" * 32
OTHER = "a" * 32  # a validation instance: asks for a port and never binds it


def hub_of(bridge: object) -> PluginHub:
    hub = bridge.hub  # type: ignore[attr-defined]
    assert isinstance(hub, PluginHub)
    return hub


def settings_for(tmp_path: Path, database_url: str) -> Settings:
    # No liveness probe of the unconfirmed assignment within the test: the only probe is the one under test.
    return hub_settings(tmp_path, database_url, plugins=8, assign_expiry=30.0)


async def stats(client: BridgeClient) -> dict[str, int]:
    return dict(await client.rows("/bridge/stats"))


@asynccontextmanager
async def bridge_and_client(settings: Settings) -> AsyncIterator[tuple[PluginHub, BridgeClient]]:
    async with running(settings) as bridge:
        client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
        try:
            yield hub_of(bridge), client
        finally:
            await client.close()


async def assert_a_new_plugin_gets_another_port(settings: Settings, taken: set[int]) -> None:
    """The ports in `taken` are held: a plugin that starts now gets and binds a different one."""
    newcomer = SimulatedPlugin(sim_config(settings))
    await newcomer.start()
    try:
        await newcomer.wait_for(lambda p: p.state in ("bound", "deaf", "failed"), timeout=10)
        assert newcomer.port not in taken, f"port {newcomer.port} was handed out again"
        assert newcomer.state == "bound"
    finally:
        await newcomer.close()


async def test_a_late_answer_to_a_probe_of_the_old_port_does_not_move_the_plugin_back(
    tmp_path: Path, database_url: str
) -> None:
    settings = settings_for(tmp_path, database_url)
    first, second = settings.port_range_start, settings.port_range_start + 1
    async with bridge_and_client(settings) as (hub, client):
        other = RawPlugin(settings.osc_port)
        other.send(REQUEST_PORT, ("s", OTHER), ("i", -1), ("i", await other.listen()))
        await wait_until(lambda: other.received(PORT_ASSIGNMENT))
        assert other.received(PORT_ASSIGNMENT) == [[OTHER, first, "assigned"]]
        plugin = RawPlugin(settings.osc_port)
        plugin.send(REQUEST_PORT, ("s", PLUGIN), ("i", -1), ("i", await plugin.listen()))
        await wait_until(lambda: plugin.received(PORT_ASSIGNMENT))
        assert plugin.received(PORT_ASSIGNMENT) == [[PLUGIN, second, "assigned"]]

        # It took the other instance's assignment first: it binds `first` and says so. That port is not its
        # own, so the bridge refuses the confirmation and asks whoever listens on `first`.
        async with listener_on(first) as old:
            plugin.send(PORT_CONFIRMED, ("s", PLUGIN), ("i", first), ("s", "bound"))
            await wait_until(lambda: old.of(QUERY_RMS))
            [[query_id]] = old.of(QUERY_RMS)
        # Then it moves to its own port and confirms it ...
        async with listener_on(second):
            plugin.send(PORT_CONFIRMED, ("s", PLUGIN), ("i", second), ("s", "bound"))
            await wait_until(lambda: _is(client, PLUGIN, [second, "bound"]))
            # ... and only then answers the probe it read on `first`, from its one sender socket.
            answered = time.monotonic()
            plugin.send(RMS_RESPONSE, ("s", query_id), ("s", PLUGIN), ("f", 0.0))
            counters = await stats(client)  # sent after the answer on loopback: handled after it

            listed = await plugins_by_id(client)
            assert listed[PLUGIN][:2] == [second, "bound"]
            assert listed[OTHER][:2] == [first, "assigned"]  # main displaced it: "gone"
            assert counters.get("hub.stale_probe_answers") == 1
            assert counters.get("hub.adopted", 0) == 0
            assert hub.pool.owner_of(second) == PLUGIN and hub.pool.owner_of(first) == OTHER
            inst = hub.registry.get(PLUGIN)
            assert inst is not None and inst.last_heard >= answered  # still counts as heard
            await assert_a_new_plugin_gets_another_port(settings, {first, second})
        other.close()
        plugin.close()


async def test_the_simulated_plugin_with_a_message_thread_answers_late_and_stays_where_it_is(
    tmp_path: Path, database_url: str
) -> None:
    settings = settings_for(tmp_path, database_url)
    own, stray = settings.port_range_start, settings.port_range_start + 3
    async with bridge_and_client(settings) as (hub, client):
        plugin = SimulatedPlugin(sim_config(settings, message_thread=True))
        plugin.hold()  # the host keeps the message thread busy: datagrams are read and queued, not handled
        await plugin.start()
        assert plugin.ephemeral_port is not None
        # Sent before the bridge has even read the request (nothing awaited since), so it is read first.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as elsewhere:
            elsewhere.sendto(build_message(PORT_ASSIGNMENT, ("s", OTHER), ("i", stray), ("s", "assigned")),
                             ("127.0.0.1", plugin.ephemeral_port))
        await plugin.wait_for(lambda p: [a for a, _ in p.queued] == [PORT_ASSIGNMENT, PORT_ASSIGNMENT])
        assert [args for _, args in plugin.queued] == [[OTHER, stray, "assigned"], [plugin.temp_id, own, "assigned"]]

        plugin.release(1)  # binds `stray`, confirms it; the bridge probes `stray` and the probe is read there
        await plugin.wait_for(lambda p: [a for a, _ in p.queued] == [PORT_ASSIGNMENT, QUERY_RMS])
        assert plugin.listening_port == stray
        plugin.release()  # moves to its own port, confirms, then answers the probe read on `stray`
        await plugin.wait_for(lambda p: bool(p.sent_args(RMS_RESPONSE)))
        counters = await stats(client)

        confirmed = [args[1] for args in plugin.sent_args(PORT_CONFIRMED)]
        assert confirmed == [stray, own] and plugin.listening_port == own
        assert (await plugins_by_id(client))[plugin.temp_id][:2] == [own, "bound"]
        assert counters.get("hub.stale_probe_answers") == 1
        assert hub.pool.owner_of(own) == plugin.temp_id and hub.pool.owner_of(stray) is None
        await assert_a_new_plugin_gets_another_port(settings, {own})
        await plugin.close()


async def test_a_plugin_that_really_moved_is_still_found(tmp_path: Path, database_url: str) -> None:
    """The other order: its own assignment first, then one meant for another instance. It ends up on the
    other port, confirms a port the bridge did not give it, and the probe that follows finds it there."""
    settings = settings_for(tmp_path, database_url)
    own, moved = settings.port_range_start, settings.port_range_start + 1
    async with bridge_and_client(settings) as (hub, client):
        plugin = SimulatedPlugin(sim_config(settings, message_thread=True))
        plugin.hold()
        await plugin.start()
        other = RawPlugin(settings.osc_port)  # shares the plugin's bootstrap port, so its assignment goes there
        other.send(REQUEST_PORT, ("s", OTHER), ("i", -1), ("i", plugin.ephemeral_port or 0))
        await plugin.wait_for(lambda p: [args[1] for _, args in p.queued] == [own, moved])
        plugin.release()
        await plugin.wait_for(lambda p: p.listening_port == moved and not p.queued, timeout=10)
        await wait_until(lambda: _is(client, plugin.temp_id, [moved, "bound"]))
        counters = await stats(client)
        assert counters.get("hub.stale_probe_answers", 0) == 0
        assert counters["hub.adopted"] == 1 and counters["hub.unassigned_port"] == 1
        assert hub.pool.owner_of(moved) == plugin.temp_id and hub.pool.owner_of(own) is None
        await plugin.close()
        other.close()


async def test_a_calibration_probe_answered_after_a_move_still_counts_with_the_port_it_is_on_now(
    tmp_path: Path, database_url: str
) -> None:
    settings = hub_settings(tmp_path, database_url, plugins=8, assign_expiry=30.0, calibrate_window=5.0)
    first, elsewhere = settings.port_range_start, settings.port_range_start + 2
    async with bridge_and_client(settings) as (hub, client):
        plugin = RawPlugin(settings.osc_port)
        plugin.send(REQUEST_PORT, ("s", PLUGIN), ("i", -1), ("i", await plugin.listen()))
        await wait_until(lambda: plugin.received(PORT_ASSIGNMENT))
        assert plugin.receiver is not None
        plugin.receiver.close()
        async with listener_on(first) as old:
            plugin.send(PORT_CONFIRMED, ("s", PLUGIN), ("i", first), ("s", "bound"))
            await wait_until(lambda: _is(client, PLUGIN, [first, "bound"]))
            probe = asyncio.ensure_future(client.rows("/bridge/calibrate/probe", timeout=10))
            await wait_until(lambda: old.of(QUERY_RMS))
            [[calibration_query]] = old.of(QUERY_RMS)
        # Before answering it, the plugin takes an assignment from someone else and moves; the bridge finds it there.
        async with listener_on(elsewhere) as new:
            plugin.send(PORT_CONFIRMED, ("s", PLUGIN), ("i", elsewhere), ("s", "bound"))
            await wait_until(lambda: new.of(QUERY_RMS))
            [[discovery_query]] = new.of(QUERY_RMS)
            plugin.send(RMS_RESPONSE, ("s", discovery_query), ("s", PLUGIN), ("f", 0.1))
            plugin.send(RMS_RESPONSE, ("s", calibration_query), ("s", PLUGIN), ("f", 0.5))
            rows = await probe
            assert [row[:2] for row in rows] == [[PLUGIN, elsewhere]]  # the calibration level, the current port
            assert round(rows[0][2], 1) == -6.0  # 20 log10(0.5)
            counters = await stats(client)
            assert counters["hub.stale_probe_answers"] == 1 and counters["hub.adopted"] == 1
            assert (await plugins_by_id(client))[PLUGIN][:2] == [elsewhere, "bound"]
            assert hub.pool.owner_of(elsewhere) == PLUGIN and hub.pool.owner_of(first) is None
        plugin.close()


@asynccontextmanager
async def listener_on(port: int) -> AsyncIterator[Listener]:
    """A receiver bound to `port` (the plugin's socket there), closed at the end of the block."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(Listener, local_addr=("127.0.0.1", port))
    try:
        yield proto
    finally:
        proto.close()


async def _is(client: BridgeClient, temp_id: str, expected: list[object]) -> bool:
    return (await plugins_by_id(client)).get(temp_id, [])[:2] == expected


# --------------------------------------------------------------------------------------------------------------
# The simulator's message thread on its own, against a bare socket as the bridge
# --------------------------------------------------------------------------------------------------------------


class Control:
    """Sends to the plugin's receivers from one socket, as a bridge would."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def send(self, port: int, address: str, *args: tuple[str, object]) -> None:
        self.sock.sendto(build_message(address, *args), ("127.0.0.1", port))

    def assign(self, port: int, to: int) -> None:
        self.send(port, PORT_ASSIGNMENT, ("s", "whoever"), ("i", to), ("s", "assigned"))


@asynccontextmanager
async def threaded_plugin(**config: Any) -> AsyncIterator[tuple[SimulatedPlugin, Listener, Control, list[int]]]:
    """A plugin with a message thread on its bootstrap port; three free ports to move it to."""
    base = free_block(4)
    async with listener() as bridge:
        plugin = SimulatedPlugin(SimConfig(bridge_port=bridge.port, ephemeral_base=base, ephemeral_count=1,
                                           message_thread=True, **config))
        control = Control()
        await plugin.start()
        try:
            yield plugin, bridge, control, [base + 1, base + 2, base + 3]
        finally:
            await plugin.close()
            control.sock.close()


async def test_a_probe_read_on_the_old_port_is_answered_after_the_move_with_its_query_id() -> None:
    async with threaded_plugin() as (plugin, bridge, control, (first, second, _)):
        control.assign(plugin.ephemeral_port or 0, first)
        await plugin.wait_for(lambda p: p.port == first)
        control.assign(first, second)  # both reach the old socket before the plugin gets to either
        control.send(first, QUERY_RMS, ("s", "Q-OLD"))
        await plugin.wait_for(lambda p: bool(p.sent_args(RMS_RESPONSE)))
        assert [a for a, _ in plugin.sent if a in (PORT_CONFIRMED, RMS_RESPONSE)] == [
            PORT_CONFIRMED, PORT_CONFIRMED, RMS_RESPONSE]
        assert plugin.sent_args(PORT_CONFIRMED)[-1] == [plugin.temp_id, second, "bound"]
        assert plugin.sent_args(RMS_RESPONSE)[0][:2] == ["Q-OLD", plugin.temp_id]
        assert plugin.listening_port == second
        await wait_until(lambda: bridge.of(RMS_RESPONSE))
        # the bridge sees the answer after the confirmation of the new port, from the one sender socket
        assert [m.address for m in bridge.messages][-2:] == [PORT_CONFIRMED, RMS_RESPONSE]


async def test_the_rebind_pause_blocks_the_message_thread() -> None:
    async with threaded_plugin() as (plugin, _bridge, control, (first, _, _)):
        loop = asyncio.get_running_loop()
        began = loop.time()
        control.assign(plugin.ephemeral_port or 0, first)
        control.send(plugin.ephemeral_port or 0, QUERY_RMS, ("s", "Q"))  # read before the move, handled after
        await plugin.wait_for(lambda p: bool(p.sent_args(RMS_RESPONSE)))
        assert loop.time() - began >= plugin.config.rebind_delay  # it waited for the rebind, not beside it
        assert [a for a, _ in plugin.sent][-2:] == [PORT_CONFIRMED, RMS_RESPONSE]
        assert plugin.sent_args(PORT_CONFIRMED) == [[plugin.temp_id, first, "bound"]]


async def test_a_held_message_thread_answers_nothing_and_sends_no_telemetry_until_released() -> None:
    async with threaded_plugin(telemetry_interval=0.01) as (plugin, _bridge, control, (first, _, _)):
        control.assign(plugin.ephemeral_port or 0, first)
        await plugin.wait_for(lambda p: p.port == first)
        control.send(first, TRACK_UUID_ASSIGNMENT, ("i", 1), ("s", plugin.temp_id), ("s", "TR1"))
        await plugin.wait_for(lambda p: len(p.sent_args(TELEMETRY)) >= 2)
        plugin.hold()
        streamed = len(plugin.sent_args(TELEMETRY))
        control.send(first, QUERY_RMS, ("s", "Q"))
        await plugin.wait_for(lambda p: bool(p.queued))
        await asyncio.sleep(0.1)  # ten telemetry periods
        assert plugin.queued == [(QUERY_RMS, ["Q"])]
        assert not plugin.sent_args(RMS_RESPONSE) and len(plugin.sent_args(TELEMETRY)) == streamed
        plugin.release()
        await plugin.wait_for(lambda p: bool(p.sent_args(RMS_RESPONSE)) and len(p.sent_args(TELEMETRY)) > streamed)
        assert not plugin.queued


async def test_only_a_plugin_with_a_message_thread_can_be_held() -> None:
    plugin = SimulatedPlugin()
    with pytest.raises(RuntimeError, match="message_thread"):
        plugin.hold()


def test_simulate_has_a_message_thread_flag() -> None:
    argv = ["simulate", "--message-thread", "--message-delay", "0.01"]
    config = config_from_args(build_parser(argv).parse_args(argv), "127.0.0.1", 8999)
    assert (config.message_thread, config.message_delay) == (True, 0.01)
    assert not config_from_args(build_parser(["simulate"]).parse_args(["simulate"]), "127.0.0.1", 8999).message_thread
