"""The plugin hub's timing rules with a clock moved by hand (tests/clock_support.py): liveness probes and missed
probes, expiry, quarantine release, calibration resends and windows. No bridge: the hub is built on its own, its
datagrams are recorded instead of sent, its writes are recorded instead of spooled, and plugin messages are given
straight to its handlers. The settings are the defaults (seconds to minutes of protocol time); each test runs in
milliseconds. The end-to-end versions of these rules, on real sockets, are the other tests/test_hub_*.py."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from oscbridge.api.plugins import PluginsApi
from oscbridge.config import Settings
from oscbridge.osc.codec import Message, decode_message, encode_message
from oscbridge.plugins.adoption import READOPT_TEMP_ID, StoredPool
from oscbridge.plugins.hub import PluginHub
from oscbridge.plugins.registry import Instance
from oscbridge.projects import LoadedProjects, Projects, TrackMapping
from oscbridge.protocol import (
    PORT_ASSIGNMENT,
    PORT_CONFIRMED,
    QUERY_RMS,
    REQUEST_PORT,
    RMS_RESPONSE,
    START_TONE,
    TELEMETRY,
    TONE_STARTED,
    TRACK_UUID_ASSIGNMENT,
    UUID_CONFIRMED,
)
from oscbridge.store.writes import MappingSet, PluginInstanceRow, PortQuarantineRow, WriteOp
from oscbridge.tools.ports import free_block
from oscbridge.typedefs import Addr, BridgeError, ErrorCode, PluginState
from tests.clock_support import ManualClock

EPS = 1 / 64  # exact in binary, so that "just before" and "at" a deadline are what they say
TEMP, OTHER, THIRD = "a" * 32, "b" * 32, "c" * 32
SENDER: Addr = ("127.0.0.1", 41001)  # a plugin's one sender socket (no socket is opened: the hub only records)
SENDER_2: Addr = ("127.0.0.1", 41002)
SENDER_3: Addr = ("127.0.0.1", 41003)
BOOTSTRAP = 50000

W = TypeVar("W", bound=WriteOp)


@dataclass(frozen=True)
class Sent:
    at: float  # monotonic, when it went out
    dest: Addr
    message: Message


class Wire:
    """The hub's `send`: keeps every datagram, decoded, with the time it went out; `reply` plays the plugin."""

    def __init__(self, clock: ManualClock) -> None:
        self._clock = clock
        self.sent: list[Sent] = []
        self.reply: Callable[[Sent], None] | None = None

    def __call__(self, data: bytes, dest: Addr) -> None:
        sent = Sent(self._clock.monotonic(), dest, decode_message(data))
        self.sent.append(sent)
        if self.reply is not None:
            self.reply(sent)

    def of(self, address: str) -> list[Sent]:
        return [s for s in self.sent if s.message.address == address]


class Writes:
    """The hub's `submit`: keeps every write it queued."""

    def __init__(self) -> None:
        self.ops: list[WriteOp] = []

    def __call__(self, op: WriteOp) -> int:
        self.ops.append(op)
        return len(self.ops)

    def of(self, kind: type[W]) -> list[W]:
        return [op for op in self.ops if isinstance(op, kind)]


async def no_stored_pool() -> StoredPool | None:
    return None


class Rig:
    """A hub with a manual clock, a recording wire and recorded writes, and a plugin's side of the protocol."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clock = ManualClock()
        self.wire = Wire(self.clock)
        self.writes = Writes()
        self.projects = Projects(LoadedProjects(), self.writes, self.clock)
        self.hub = PluginHub(settings, self.clock, self.wire, self.projects, self.writes, self.writes,
                             no_stored_pool)
        self._handlers = self.hub.plugin_handlers()
        self._api = PluginsApi(self.hub, self.clock)

    # -- time -----------------------------------------------------------------------------------------------------

    async def after(self, seconds: float) -> None:
        """Moves the clock and runs one tick of the hub."""
        self.clock.advance(seconds)
        await self.hub.tick()

    async def run(self, seconds: float) -> None:
        """Ticks the hub every `hub_tick` for `seconds`, as its own loop does."""
        for _ in range(round(seconds / self.settings.hub_tick)):
            await self.after(self.settings.hub_tick)

    async def run_until_gone(self, temp_id: str, limit: float = 120.0) -> float:
        """Ticks until the instance is gone; returns when (monotonic)."""
        end = self.clock.monotonic() + limit
        while self.inst(temp_id).live:
            assert self.clock.monotonic() < end, f"{temp_id} still {self.inst(temp_id).state} after {limit} s"
            await self.after(self.settings.hub_tick)
        return self.clock.monotonic()

    # -- the plugin's side ----------------------------------------------------------------------------------------

    def deliver(self, address: str, args: list[Any], tags: str, sender: Addr) -> None:
        """A datagram from a plugin, given to the hub's handler as the router would."""
        raw = encode_message(address, args, tags)
        self._handlers[address](decode_message(raw), sender, raw)

    def later(self, address: str, args: list[Any], tags: str, sender: Addr) -> None:
        """The same, arriving on the next turn of the loop (a reply to what the hub just sent)."""
        asyncio.get_running_loop().call_soon(self.deliver, address, args, tags, sender)

    def request(self, temp_id: str, sender: Addr) -> int:
        self.deliver(REQUEST_PORT, [temp_id, -1, BOOTSTRAP], "sii", sender)
        assignment = self.wire.of(PORT_ASSIGNMENT)[-1]
        assert assignment.dest == ("127.0.0.1", BOOTSTRAP)
        assert assignment.message.args[0] == temp_id and assignment.message.args[2] == "assigned", assignment
        port: int = assignment.message.args[1]
        return port

    def bound(self, temp_id: str, sender: Addr) -> int:
        port = self.request(temp_id, sender)
        self.deliver(PORT_CONFIRMED, [temp_id, port, "bound"], "sis", sender)
        return port

    def identified(self, temp_id: str, sender: Addr, plugin_id: str) -> int:
        port = self.bound(temp_id, sender)
        self.telemetry(plugin_id, sender)
        assert self.inst(temp_id).state == PluginState.IDENTIFIED
        return port

    def telemetry(self, plugin_id: str, sender: Addr) -> None:
        self.deliver(TELEMETRY, [plugin_id, 0.1, -20.0, -24.0, -30.0, -40.0], "sfffff", sender)

    def answer(self, probe: Sent, temp_id: str, sender: Addr) -> None:
        """The plugin answers a probe: the query id copied back, from its sender socket."""
        self.deliver(RMS_RESPONSE, [probe.message.args[0], temp_id, 0.1], "ssf", sender)

    # -- what the bridge shows ------------------------------------------------------------------------------------

    def inst(self, temp_id: str) -> Instance:
        inst = self.hub.registry.get(temp_id)
        assert inst is not None, f"{temp_id} is not known"
        return inst

    def plugins(self) -> dict[str, tuple[Any, ...]]:
        """`/bridge/plugins` as {instance id: (port, state, plugin id, seconds since heard)}."""
        return {row[0]: row[1:] for row in self._api.plugins().rows}

    def probes(self) -> list[Sent]:
        return self.wire.of(QUERY_RMS)

    def stored_states(self, temp_id: str) -> list[str]:
        return [op.state for op in self.writes.of(PluginInstanceRow) if op.instance_id == temp_id]


def settings_for(tmp_path: Path, ports: int = 4, **overrides: Any) -> Settings:
    """The default timings; a pool of `ports` ports nobody uses now (the pool's bind test must pass)."""
    base = free_block(ports)
    return Settings(host="127.0.0.1", data_dir=tmp_path / "data", port_range_start=base,
                    port_range_end=base + ports - 1, **overrides)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(settings_for(tmp_path))


# -- liveness ---------------------------------------------------------------------------------------------------


async def test_a_silent_plugin_is_probed_then_gone_after_its_missed_probes(rig: Rig) -> None:
    s = rig.settings
    port = rig.identified(TEMP, SENDER, "TR1")
    start = rig.clock.monotonic()

    await rig.after(s.plugin_silence - EPS)
    assert rig.probes() == []
    await rig.after(EPS)
    probes = rig.probes()
    assert [p.dest for p in probes] == [("127.0.0.1", port)] and probes[0].message.tags == "s"

    for missed in range(1, s.plugin_probe_misses):
        await rig.after(s.plugin_probe_timeout - EPS)
        assert len(rig.probes()) == missed  # not yet missed
        await rig.after(EPS)
        assert len(rig.probes()) == missed + 1  # missed: probed again
        assert rig.plugins()[TEMP][:3] == (port, "identified", "TR1")

    await rig.after(s.plugin_probe_timeout)
    assert rig.plugins()[TEMP][:3] == (-1, "gone", "TR1")
    assert rig.hub.pool.owner_of(port) is None
    assert rig.stored_states(TEMP)[-1] == "gone"
    probes = rig.probes()
    assert [p.at - start for p in probes] == [s.plugin_silence + k * s.plugin_probe_timeout
                                              for k in range(s.plugin_probe_misses)]
    assert len({p.message.args[0] for p in probes}) == len(probes)  # each probe has a query id of its own

    assert rig.request(OTHER, SENDER_2) == port  # the port is back in the pool


@pytest.mark.parametrize("answer", ["telemetry", "rms_response"])
async def test_a_plugin_heard_after_a_probe_starts_over(rig: Rig, answer: str) -> None:
    s = rig.settings
    port = rig.identified(TEMP, SENDER, "TR1")
    await rig.run(s.plugin_silence + s.plugin_probe_timeout)
    assert len(rig.probes()) == 2 and rig.inst(TEMP).misses == 1

    answered_at = rig.clock.monotonic()
    if answer == "telemetry":
        rig.telemetry("TR1", SENDER)  # anything heard from its sender counts
    else:
        rig.answer(rig.probes()[-1], TEMP, SENDER)
    await rig.after(s.hub_tick)
    assert rig.inst(TEMP).misses == 0

    # Silent again: the full silence and every missed probe again, not what was left of them.
    gone_at = await rig.run_until_gone(TEMP)
    assert gone_at - answered_at == s.plugin_silence + s.plugin_probe_misses * s.plugin_probe_timeout
    assert rig.hub.pool.owner_of(port) is None


async def test_a_bound_idle_plugin_is_probed_every_interval(rig: Rig) -> None:
    s = rig.settings
    port = rig.bound(TEMP, SENDER)
    start = rig.clock.monotonic()

    await rig.run(s.plugin_probe_interval - s.hub_tick)
    assert rig.probes() == []  # nothing streams, but it is not yet due
    await rig.run(s.hub_tick)
    rig.answer(rig.probes()[0], TEMP, SENDER)
    await rig.run(s.plugin_probe_interval)
    rig.answer(rig.probes()[1], TEMP, SENDER)
    await rig.run(s.hub_tick)

    probes = rig.probes()
    assert [(p.at - start, p.dest) for p in probes] == [(s.plugin_probe_interval, ("127.0.0.1", port)),
                                                       (2 * s.plugin_probe_interval, ("127.0.0.1", port))]
    assert rig.plugins()[TEMP][:3] == (port, "bound", "")


async def test_an_unconfirmed_assignment_is_probed_after_assign_expiry_then_released(rig: Rig) -> None:
    s = rig.settings
    port = rig.request(TEMP, SENDER)
    start = rig.clock.monotonic()
    assert rig.plugins()[TEMP][:2] == (port, "assigned")

    await rig.after(s.assign_expiry - EPS)
    assert rig.probes() == []
    await rig.after(EPS)
    assert [(p.at - start, p.dest) for p in rig.probes()] == [(s.assign_expiry, ("127.0.0.1", port))]

    gone_at = await rig.run_until_gone(TEMP)
    assert gone_at - start == s.assign_expiry + s.plugin_probe_misses * s.plugin_probe_timeout
    assert rig.hub.pool.owner_of(port) is None and rig.plugins()[TEMP][:2] == (-1, "gone")


async def test_a_gone_instance_is_forgotten_after_gone_retention(rig: Rig) -> None:
    s = rig.settings
    rig.identified(TEMP, SENDER, "TR1")
    gone_at = await rig.run_until_gone(TEMP)

    await rig.after(s.gone_retention)
    assert rig.plugins()[TEMP][1] == "gone"  # kept for `gone_retention`, so /bridge/plugins shows what happened
    await rig.after(EPS)
    assert TEMP not in rig.plugins()
    assert rig.hub.registry.for_plugin("TR1") is None and rig.hub.registry.from_sender(SENDER) is None
    assert rig.clock.monotonic() - gone_at == s.gone_retention + EPS


# -- expiry -----------------------------------------------------------------------------------------------------


async def test_a_probe_in_flight_expires_and_a_late_answer_proves_nothing(rig: Rig) -> None:
    s = rig.settings
    port = rig.settings.port_range_start
    rig.hub.probes.send(port)  # as re-adoption probes an unknown listener
    rig.hub.probes.send(port + 1)
    early, late = rig.probes()
    window = 2 * s.plugin_probe_timeout + s.calibrate_window

    await rig.after(window)
    assert len(rig.hub.probes) == 2
    rig.answer(early, TEMP, SENDER)  # in time: proof that TEMP listens on `port`
    assert rig.plugins()[TEMP][:2] == (port, "bound")

    await rig.after(EPS)
    assert len(rig.hub.probes) == 0
    rig.answer(late, OTHER, SENDER_2)
    assert OTHER not in rig.plugins() and rig.hub.pool.owner_of(port + 1) is None
    assert rig.hub.counters["unknown_query"] == 1


async def test_an_unknown_sender_is_forgotten_after_plugin_silence(rig: Rig) -> None:
    """Telemetry from a sender no instance has is remembered for `plugin_silence`: a plugin found by a probe from
    that sender carries its track id. Later it is dropped (the table is bounded by expiry, not only by size)."""
    s = rig.settings
    port = rig.settings.port_range_start
    rig.telemetry("TR7", SENDER)
    assert rig.hub.counters["unknown_track"] == 1

    await rig.after(s.plugin_silence - EPS)
    rig.hub.probes.send(port)
    rig.answer(rig.probes()[-1], TEMP, SENDER)
    assert rig.plugins()[TEMP][:3] == (port, "identified", "TR7")

    rig.telemetry("TR8", SENDER_2)
    await rig.after(s.plugin_silence)
    assert len(rig.hub._unknown_senders) == 1  # private: no public view of this table
    await rig.after(EPS)
    assert len(rig.hub._unknown_senders) == 0
    rig.hub.probes.send(port + 1)
    rig.answer(rig.probes()[-1], OTHER, SENDER_2)
    assert rig.plugins()[OTHER][:3] == (port + 1, "bound", "")  # its track id is no longer known


async def test_a_readoption_offer_nobody_confirms_releases_its_port_after_assign_expiry(tmp_path: Path) -> None:
    bootstrap = free_block(1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as waiting_plugin:
        waiting_plugin.bind(("127.0.0.1", bootstrap))  # a plugin that asked for a port while no bridge ran
        rig = Rig(settings_for(tmp_path, ephemeral_base=bootstrap, ephemeral_step=1, ephemeral_count=1))
        await rig.hub.adoption.readopt()
    [offer] = rig.wire.of(PORT_ASSIGNMENT)
    port = rig.settings.port_range_start
    assert (offer.dest, offer.message.args) == (("127.0.0.1", bootstrap), [READOPT_TEMP_ID, port, "assigned"])
    assert rig.hub.pool.owner_of(port) is not None

    await rig.after(rig.settings.assign_expiry)
    assert rig.hub.pool.owner_of(port) is not None
    await rig.after(EPS)
    assert rig.hub.pool.owner_of(port) is None

    # A confirmation after that is no answer to the offer: it proves nothing, and only gets the port probed.
    rig.deliver(PORT_CONFIRMED, [TEMP, port, "bound"], "sis", SENDER)
    assert TEMP not in rig.plugins() and rig.hub.counters["unknown_instance_id"] == 1
    assert rig.probes()[-1].dest == ("127.0.0.1", port)


async def test_levels_of_tracks_nobody_streams_expire(rig: Rig) -> None:
    s = rig.settings
    rig.identified(TEMP, SENDER, "TR1")
    rig.identified(OTHER, SENDER_2, "TR2")
    half = s.gone_retention / 2

    rig.clock.advance(half)
    rig.telemetry("TR2", SENDER_2)  # TR2 streams on, TR1 stopped (its project was closed)
    await rig.after(half)
    assert sorted(rig.hub.levels.tracks) == ["TR1", "TR2"]
    await rig.after(EPS)
    assert [row[0] for row in rig.hub.levels.rows(rig.clock.monotonic())] == ["TR2"]


# -- quarantine -------------------------------------------------------------------------------------------------


async def test_a_busy_port_is_quarantined_then_handed_out_again(tmp_path: Path) -> None:
    rig = Rig(settings_for(tmp_path, ports=3))
    s = rig.settings
    first = s.port_range_start
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other_process:
        other_process.bind(("127.0.0.1", first))
        since = rig.clock.time()
        assert rig.request(TEMP, SENDER) == first + 1
    assert rig.writes.of(PortQuarantineRow) == [
        PortQuarantineRow(first, "in use by another process", since, since + s.quarantine_seconds)]
    assert rig.probes()[-1].dest == ("127.0.0.1", first)  # whoever holds it may be a plugin

    # The other process let go of it at once, but the quarantine lasts its time (wall clock).
    rig.clock.advance(s.quarantine_seconds - EPS)
    assert rig.request(OTHER, SENDER_2) == first + 2
    rig.clock.advance(EPS)
    assert rig.request(THIRD, SENDER_3) == first  # the bind test passes again
    assert rig.hub.stats()["pool.quarantined"] == 0


# -- calibration ------------------------------------------------------------------------------------------------


async def test_an_assignment_nobody_confirms_is_resent_then_unavailable(rig: Rig) -> None:
    s = rig.settings
    port = rig.bound(TEMP, SENDER)
    start = rig.clock.monotonic()

    with pytest.raises(BridgeError) as refused:
        await rig.hub.calibration.assign(TEMP, "TR4", 4, "Bass")
    assert refused.value.code == ErrorCode.UNAVAILABLE

    sends = rig.wire.of(TRACK_UUID_ASSIGNMENT)
    assert [s_.at - start for s_ in sends] == [k * s.assign_retry_interval for k in range(1 + s.assign_retries)]
    assert {(s_.dest, s_.message.tags) for s_ in sends} == {(("127.0.0.1", port), "iss")}
    assert len({tuple(s_.message.args) for s_ in sends}) == 1  # one sequence number for all of them
    assert sends[0].message.args[1:] == [TEMP, "TR4"]
    assert rig.clock.monotonic() - start == (1 + s.assign_retries) * s.assign_retry_interval
    assert rig.projects.mappings() == [] and rig.writes.of(MappingSet) == []
    assert rig.plugins()[TEMP][:3] == (port, "bound", "")


async def test_a_confirmation_after_the_second_send_stops_the_resends_and_maps_the_track(rig: Rig) -> None:
    s = rig.settings
    port = rig.bound(TEMP, SENDER)
    start = rig.clock.monotonic()

    def plugin(sent: Sent) -> None:
        if sent.message.address != TRACK_UUID_ASSIGNMENT:
            return
        count = len(rig.wire.of(TRACK_UUID_ASSIGNMENT))
        track = "TR5" if count == 1 else "TR4"  # the first reply confirms another pair: it must not count
        rig.later(UUID_CONFIRMED, [TEMP, track, "confirmed"], "sss", SENDER)

    rig.wire.reply = plugin
    await rig.hub.calibration.assign(TEMP, "TR4", 4, "Bass")

    sends = rig.wire.of(TRACK_UUID_ASSIGNMENT)
    assert [s_.at - start for s_ in sends] == [0.0, s.assign_retry_interval]
    assert sends[0].message.args == sends[1].message.args
    assert rig.clock.monotonic() - start == s.assign_retry_interval  # the second wait ended with the confirmation
    assert rig.hub.counters["unmatched_confirmation"] == 1
    assert rig.plugins()[TEMP][:3] == (port, "identified", "TR4")
    assert rig.projects.mappings() == [TrackMapping(4, "Bass", "TR4")]
    [mapping] = rig.writes.of(MappingSet)
    assert (mapping.project_id, mapping.session_id) == rig.projects.ids()
    assert (mapping.track_number, mapping.track_name, mapping.plugin_id, mapping.ts) == (4, "Bass", "TR4",
                                                                                         rig.clock.time())
    assert rig.stored_states(TEMP)[-1] == "identified"


@pytest.mark.parametrize("acks", [1, 2])
async def test_tone_returns_after_the_window_with_the_acks_it_got(rig: Rig, acks: int) -> None:
    s = rig.settings
    ports = {rig.bound(TEMP, SENDER): (TEMP, SENDER), rig.bound(OTHER, SENDER_2): (OTHER, SENDER_2)}
    acking = sorted(ports)[:acks]

    def plugin(sent: Sent) -> None:
        if sent.message.address == START_TONE and sent.dest[1] in acking:
            temp_id, sender = ports[sent.dest[1]]
            rig.later(TONE_STARTED, [temp_id, 440.0], "sf", sender)

    rig.wire.reply = plugin
    start = rig.clock.monotonic()
    assert await rig.hub.calibration.tone(True, 440.0, -12.0) == acks

    assert sorted(s_.dest[1] for s_ in rig.wire.of(START_TONE)) == sorted(ports)
    assert {tuple(s_.message.args) for s_ in rig.wire.of(START_TONE)} == {(440.0, -12.0)}
    # All in: no need to wait out the window. One missing: the window, and not a moment more.
    assert rig.clock.monotonic() - start == (0.0 if acks == len(ports) else s.calibrate_window)

