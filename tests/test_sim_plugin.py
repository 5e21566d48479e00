"""The simulated AIplayer plugin against a tiny fake bridge, over real loopback UDP sockets.

The point is byte-level fidelity to the real plugin (aiplayer-osc-protocol.md): sizes and type tags of what it
sends, which socket it sends from, what it ignores, and its failure modes (deaf after a failed bind, no retry).
Where a test must show that the plugin ignored something, it sends a `query_rms` afterwards as a barrier: the
plugin handles datagrams in order, so once the answer is back the earlier datagram has been dealt with.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage

from oscbridge.cli import main
from oscbridge.protocol import (
    CHAT_REQUEST,
    CHAT_RESPONSE,
    PORT_ASSIGNMENT,
    PORT_CONFIRMED,
    QUERY_RMS,
    REQUEST_PORT,
    RMS,
    RMS_RESPONSE,
    SET_PARAMETER,
    START_TONE,
    STOP_TONE,
    TELEMETRY,
    TONE_STARTED,
    TONE_STOPPED,
    TRACK_UUID_ASSIGNMENT,
    UUID_CONFIRMED,
)
from oscbridge.tools.ports import LOOPBACK, free_block, free_port, port_free
from oscbridge.tools.sim import PluginFleet, SimConfig, SimulatedPlugin, build_message
from oscbridge.tools.sim.plugin import (
    parse_like_juce,
)

STEP = 7
ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------------------------


def hold_port(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, port))
    return sock


# --------------------------------------------------------------------------------------------------------------
# A fake bridge: records everything, answers request_port if told how
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Datagram:
    data: bytes
    addr: tuple[str, int]
    at: float
    address: str
    params: list[Any]


class FakeBridge(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[Datagram] = []
        self.assign: Callable[[str], tuple[int, str]] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self._changed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # the selector transport is not a subclass
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = OscMessage(data)
        item = Datagram(data, addr, asyncio.get_running_loop().time(), message.address, list(message.params))
        self.received.append(item)
        if item.address == REQUEST_PORT and self.assign is not None:
            temp_id, _preferred, response_port = item.params
            port, status = self.assign(temp_id)
            self.send_to(response_port, PORT_ASSIGNMENT, ("s", temp_id), ("i", port), ("s", status))
        self._changed.set()
        self._changed = asyncio.Event()

    def send_to(self, port: int, address: str, *args: tuple[str, Any]) -> None:
        self.send_raw(port, build_message(address, *args))

    def send_raw(self, port: int, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (LOOPBACK, port))

    def of(self, address: str) -> list[Datagram]:
        return [d for d in self.received if d.address == address]

    async def wait_for(self, predicate: Callable[[FakeBridge], bool], timeout: float = 2.0) -> None:
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                if predicate(self):
                    return
                await changed.wait()

    async def wait_count(self, address: str, count: int = 1, timeout: float = 2.0) -> list[Datagram]:
        await self.wait_for(lambda b: len(b.of(address)) >= count, timeout)
        return self.of(address)

    async def barrier(self, port: int) -> None:
        """Returns once the plugin listening on `port` has handled everything sent to it before."""
        query_id = uuid.uuid4().hex
        self.send_to(port, QUERY_RMS, ("s", query_id))
        await self.wait_for(lambda b: any(d.params[0] == query_id for d in b.of(RMS_RESPONSE)))


def type_tags(data: bytes) -> str:
    """The type tag string of a datagram, read straight from the bytes."""
    start = (data.index(b"\x00") + 4) & ~3
    return data[start : data.index(b"\x00", start)].decode()


@pytest.fixture
async def fake_bridge() -> AsyncIterator[FakeBridge]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(FakeBridge, local_addr=(LOOPBACK, 0))
    yield protocol
    transport.close()


@pytest.fixture
def config(fake_bridge: FakeBridge) -> SimConfig:
    """Three bootstrap candidates STEP apart, all free: the start of a free block that spans them (below the OS's
    ephemeral range, so nothing else is handed these ports while the test runs)."""
    return SimConfig(bridge_port=fake_bridge.port, ephemeral_base=free_block(2 * STEP + 1), ephemeral_step=STEP,
                     ephemeral_count=3)


def assign_free_ports(fake_bridge: FakeBridge) -> dict[str, int]:
    """Makes the bridge answer every request with a new free port; returns tempID -> port as it fills."""
    ports: dict[str, int] = {}

    def assign(temp_id: str) -> tuple[int, str]:
        ports.setdefault(temp_id, free_port())
        return ports[temp_id], "assigned"

    fake_bridge.assign = assign
    return ports


@pytest.fixture
async def bound_plugin(fake_bridge: FakeBridge, config: SimConfig) -> AsyncIterator[SimulatedPlugin]:
    assign_free_ports(fake_bridge)
    plugin = SimulatedPlugin(config)
    await plugin.start()
    await plugin.wait_for(lambda p: p.state == "bound")
    yield plugin
    await plugin.close()


async def identify(fake_bridge: FakeBridge, plugin: SimulatedPlugin, track: str = "TR1") -> None:
    assert plugin.port is not None
    fake_bridge.send_to(plugin.port, TRACK_UUID_ASSIGNMENT, ("i", 1), ("s", plugin.temp_id), ("s", track))
    await plugin.wait_for(lambda p: p.track_id == track)


# --------------------------------------------------------------------------------------------------------------
# Start-up and port negotiation
# --------------------------------------------------------------------------------------------------------------


async def test_request_port_is_a_single_76_byte_sii_datagram_from_the_sender_socket(
    fake_bridge: FakeBridge, config: SimConfig
) -> None:
    async with SimulatedPlugin(config) as plugin:
        (request,) = await fake_bridge.wait_count(REQUEST_PORT)
        assert re.fullmatch(r"[0-9a-f]{32}", plugin.temp_id)
        assert len(request.data) == 76
        assert request.data[24:32] == b",sii\x00\x00\x00\x00"
        assert request.params == [plugin.temp_id, -1, config.ephemeral_base]
        assert request.addr == (LOOPBACK, plugin.sender_port)
        assert plugin.sender_port not in (None, config.ephemeral_base)
        assert (plugin.state, plugin.listening_port) == ("requesting", config.ephemeral_base)
        await asyncio.sleep(0.15)  # no retry, ever
        assert len(fake_bridge.received) == 1


async def test_assignment_moves_the_receiver_after_50ms_and_confirms_bound(
    fake_bridge: FakeBridge, config: SimConfig
) -> None:
    ports = assign_free_ports(fake_bridge)
    async with SimulatedPlugin(config) as plugin:
        (confirm,) = await fake_bridge.wait_count(PORT_CONFIRMED)
        assigned = ports[plugin.temp_id]
        assert len(confirm.data) == 84 and type_tags(confirm.data) == ",sis"
        assert confirm.params == [plugin.temp_id, assigned, "bound"]
        assert confirm.addr == (LOOPBACK, plugin.sender_port)
        assert confirm.at - fake_bridge.of(REQUEST_PORT)[0].at >= 0.05
        assert (plugin.state, plugin.port, plugin.listening_port) == ("bound", assigned, assigned)
        assert port_free(config.ephemeral_base)  # the bootstrap socket is closed
        assert not port_free(assigned)
        await fake_bridge.barrier(assigned)  # and the plugin really answers on its new port


async def test_assignment_is_taken_whatever_tempid_it_carries(fake_bridge: FakeBridge, config: SimConfig) -> None:
    async with SimulatedPlugin(config) as plugin:
        await fake_bridge.wait_count(REQUEST_PORT)
        target = free_port()
        fake_bridge.send_to(
            config.ephemeral_base, PORT_ASSIGNMENT, ("s", "someone-else"), ("i", target), ("s", "assigned")
        )
        (confirm,) = await fake_bridge.wait_count(PORT_CONFIRMED)
        assert confirm.params == [plugin.temp_id, target, "bound"]


async def test_malformed_assignments_are_ignored(fake_bridge: FakeBridge, config: SimConfig) -> None:
    async with SimulatedPlugin(config) as plugin:
        await fake_bridge.wait_count(REQUEST_PORT)
        port, tid = free_port(), plugin.temp_id
        for args in (
            (("s", tid), ("i", port), ("i", 1)),
            (("s", tid), ("i", port)),
            (("s", tid), ("f", float(port)), ("s", "assigned")),
            (("s", tid), ("i", port), ("s", "assigned"), ("s", "extra")),
        ):
            fake_bridge.send_to(config.ephemeral_base, PORT_ASSIGNMENT, *args)
        await fake_bridge.barrier(config.ephemeral_base)
        assert len(plugin.received_args(PORT_ASSIGNMENT)) == 4
        assert (plugin.state, plugin.listening_port) == ("requesting", config.ephemeral_base)
        assert not fake_bridge.of(PORT_CONFIRMED)


async def test_error_status_keeps_the_bootstrap_port_and_a_later_assignment_still_works(
    fake_bridge: FakeBridge, config: SimConfig
) -> None:
    fake_bridge.assign = lambda temp_id: (-1, "error")
    async with SimulatedPlugin(config) as plugin:
        await plugin.wait_for(lambda p: p.state == "failed")
        assert plugin.listening_port == config.ephemeral_base
        await fake_bridge.barrier(config.ephemeral_base)  # still answers there
        # A bridge can re-adopt it by sending an unsolicited assignment to the bootstrap port.
        target = free_port()
        fake_bridge.send_to(config.ephemeral_base, PORT_ASSIGNMENT, ("s", "x"), ("i", target), ("s", "assigned"))
        await plugin.wait_for(lambda p: p.state == "bound")
        assert plugin.port == target
        assert len(fake_bridge.of(REQUEST_PORT)) == 1


async def test_failed_bind_reports_failed_and_leaves_the_plugin_deaf(
    fake_bridge: FakeBridge, config: SimConfig
) -> None:
    taken = free_port()
    with hold_port(taken) as holder:
        fake_bridge.assign = lambda temp_id: (taken, "assigned")
        async with SimulatedPlugin(config) as plugin:
            (confirm,) = await fake_bridge.wait_count(PORT_CONFIRMED)
            assert len(confirm.data) == 84
            assert confirm.params == [plugin.temp_id, taken, "failed"]
            assert (plugin.state, plugin.port, plugin.listening_port) == ("deaf", None, None)
            assert port_free(config.ephemeral_base)  # nothing listens on the bootstrap port any more
            fake_bridge.send_to(config.ephemeral_base, QUERY_RMS, ("s", "anyone?"))
            await asyncio.sleep(0.15)
            assert [d.address for d in fake_bridge.received] == [REQUEST_PORT, PORT_CONFIRMED]  # no answer, no retry
        holder.settimeout(0)
        with pytest.raises(BlockingIOError):
            holder.recv(100)  # and the holder of the port got nothing either


async def test_scan_takes_the_next_candidate_and_goes_deaf_when_none_is_free(
    fake_bridge: FakeBridge, config: SimConfig
) -> None:
    first = config.ephemeral_base
    with hold_port(first):
        async with SimulatedPlugin(config) as plugin:
            (request,) = await fake_bridge.wait_count(REQUEST_PORT)
            assert plugin.ephemeral_port == first + STEP
            assert request.params[2] == first + STEP
    candidates = list(config.ephemeral_candidates())
    held = [hold_port(port) for port in candidates]
    try:
        async with SimulatedPlugin(config) as plugin:
            assert (plugin.state, plugin.ephemeral_port, plugin.listening_port) == ("deaf", None, None)
            assert not plugin.sent and not plugin.sent_counts
    finally:
        for sock in held:
            sock.close()
    await asyncio.sleep(0.05)
    assert len(fake_bridge.of(REQUEST_PORT)) == 1  # only the first plugin asked


# --------------------------------------------------------------------------------------------------------------
# Identification and telemetry
# --------------------------------------------------------------------------------------------------------------


async def test_track_assignment_is_confirmed_every_time_and_starts_52_byte_telemetry(
    fake_bridge: FakeBridge, bound_plugin: SimulatedPlugin
) -> None:
    plugin = bound_plugin
    await identify(fake_bridge, plugin, "TR1")
    (confirm,) = await fake_bridge.wait_count(UUID_CONFIRMED)
    assert len(confirm.data) == 96 and type_tags(confirm.data) == ",sss"
    assert confirm.params == [plugin.temp_id, "TR1", "confirmed"]

    telemetry = await fake_bridge.wait_count(TELEMETRY, 11, timeout=5.0)
    for tick in telemetry:
        assert len(tick.data) == 52 and type_tags(tick.data) == ",sfffff"
        assert tick.addr == (LOOPBACK, plugin.sender_port)
        assert tick.params[0] == "TR1"
        assert tick.params[1] == pytest.approx(1e-5)  # muted, nothing rendered yet: silence
        assert tick.params[2:] == [-100.0] * 4
        following = fake_bridge.received[fake_bridge.received.index(tick) + 1 :]
        if following:  # each telemetry message is followed straight away by the legacy /aiplayer/rms
            assert following[0].address == RMS and len(following[0].data) == 28
            assert following[0].params == [pytest.approx(x) for x in tick.params[:2]]
    # 41 ms apart (JUCE's 24 Hz timer). Only a lower bound: a busy machine makes ticks late, never early. The ten
    # periods are timed where they arrive, so a stall of the receiving side just after the first tick shortens
    # them by its length; six periods out of ten leave room for a stall of 160 ms and still fail a timer at twice
    # the rate.
    span = telemetry[10].at - telemetry[0].at
    assert span > 6 * plugin.config.telemetry_interval, f"ten ticks in {span:.3f} s"

    fake_bridge.send_to(
        plugin.listening_port or 0, TRACK_UUID_ASSIGNMENT, ("i", 1), ("s", plugin.temp_id), ("s", "TR1")
    )
    await fake_bridge.wait_count(UUID_CONFIRMED, 2)  # duplicates (app retries) are confirmed again


async def test_identification_before_binding_starts_telemetry_once_bound(
    fake_bridge: FakeBridge, config: SimConfig
) -> None:
    async with SimulatedPlugin(config) as plugin:
        await fake_bridge.wait_count(REQUEST_PORT)
        fake_bridge.send_to(config.ephemeral_base, TRACK_UUID_ASSIGNMENT, ("s", plugin.temp_id), ("s", "TR7"))
        await fake_bridge.wait_count(UUID_CONFIRMED)
        await asyncio.sleep(0.12)
        assert not fake_bridge.of(TELEMETRY)  # identified but not bound: silent
        target = free_port()
        fake_bridge.send_to(
            config.ephemeral_base, PORT_ASSIGNMENT, ("s", plugin.temp_id), ("i", target), ("s", "assigned")
        )
        (tick, *_) = await fake_bridge.wait_count(TELEMETRY)
        assert tick.params[0] == "TR7"


async def test_track_assignment_needs_two_args_and_a_string_starting_with_tr(
    fake_bridge: FakeBridge, bound_plugin: SimulatedPlugin
) -> None:
    port = bound_plugin.listening_port or 0
    fake_bridge.send_to(port, TRACK_UUID_ASSIGNMENT, ("s", "TR1"))
    fake_bridge.send_to(port, TRACK_UUID_ASSIGNMENT, ("i", 1), ("s", "tr1"), ("s", "xTR1"))
    await fake_bridge.barrier(port)
    assert bound_plugin.track_id is None and not fake_bridge.of(UUID_CONFIRMED)
    fake_bridge.send_to(port, TRACK_UUID_ASSIGNMENT, ("i", 3), ("s", "TR2"), ("s", "TR3"))
    (confirm,) = await fake_bridge.wait_count(UUID_CONFIRMED)
    assert confirm.params[1] == "TR2" and bound_plugin.track_id == "TR2"


async def test_moving_a_bound_plugin_keeps_telemetry_and_a_failed_move_leaves_it_deaf_but_streaming(
    fake_bridge: FakeBridge, bound_plugin: SimulatedPlugin
) -> None:
    plugin = bound_plugin
    await identify(fake_bridge, plugin)
    old, new = plugin.port or 0, free_port()
    fake_bridge.send_to(old, PORT_ASSIGNMENT, ("s", plugin.temp_id), ("i", new), ("s", "assigned"))
    await fake_bridge.wait_count(PORT_CONFIRMED, 2)
    assert (plugin.state, plugin.port) == ("bound", new) and port_free(old)
    taken = free_port()
    with hold_port(taken):
        fake_bridge.send_to(new, PORT_ASSIGNMENT, ("s", plugin.temp_id), ("i", taken), ("s", "assigned"))
        confirms = await fake_bridge.wait_count(PORT_CONFIRMED, 3)
        assert confirms[-1].params == [plugin.temp_id, taken, "failed"]
        assert plugin.state == "deaf"
        before = len(fake_bridge.of(TELEMETRY))
        await fake_bridge.wait_count(TELEMETRY, before + 2)  # nothing stops the telemetry timer


async def test_close_stops_telemetry_and_frees_both_ports(
    fake_bridge: FakeBridge, bound_plugin: SimulatedPlugin
) -> None:
    await identify(fake_bridge, bound_plugin)
    await fake_bridge.wait_count(TELEMETRY, 2)
    port = bound_plugin.port or 0
    await bound_plugin.close()
    count = len(fake_bridge.received)
    await asyncio.sleep(0.1)
    assert len(fake_bridge.received) == count
    assert port_free(port)


# --------------------------------------------------------------------------------------------------------------
# Calibration: tone, RMS probes, the levels model
# --------------------------------------------------------------------------------------------------------------


async def probe(fake_bridge: FakeBridge, port: int) -> float:
    query_id = str(uuid.uuid4()).upper()
    fake_bridge.send_to(port, QUERY_RMS, ("s", query_id))
    await fake_bridge.wait_for(lambda b: any(d.params[0] == query_id for d in b.of(RMS_RESPONSE)))
    (reply,) = [d for d in fake_bridge.of(RMS_RESPONSE) if d.params[0] == query_id]
    assert len(reply.data) == 112 and type_tags(reply.data) == ",ssf"
    value: float = reply.params[2]
    return value


async def test_start_tone_needs_two_float32_and_both_tone_commands_reply(
    fake_bridge: FakeBridge, bound_plugin: SimulatedPlugin
) -> None:
    port, tid = bound_plugin.port or 0, bound_plugin.temp_id
    fake_bridge.send_to(port, START_TONE, ("i", 137), ("i", -10))  # what python-osc sends for Python ints
    fake_bridge.send_to(port, START_TONE, ("f", 137.0))
    await fake_bridge.barrier(port)
    assert not bound_plugin.tone_on and not fake_bridge.of(TONE_STARTED)
    fake_bridge.send_to(port, START_TONE, ("f", 137.0), ("f", -10.0))
    (started,) = await fake_bridge.wait_count(TONE_STARTED)
    assert len(started.data) == 68 and started.params == [tid, 137.0] and bound_plugin.tone_on
    fake_bridge.send_to(port, STOP_TONE)
    fake_bridge.send_to(port, STOP_TONE, ("i", 5))  # any arguments will do
    stopped = await fake_bridge.wait_count(TONE_STOPPED, 2)
    assert len(stopped[0].data) == 64 and stopped[0].params == [tid] and not bound_plugin.tone_on


async def test_levels_follow_the_tone_only_while_unmuted_and_freeze_when_muted(
    fake_bridge: FakeBridge, bound_plugin: SimulatedPlugin
) -> None:
    plugin, port = bound_plugin, bound_plugin.port or 0
    assert plugin.muted
    fake_bridge.send_to(port, START_TONE, ("f", 137.0), ("f", -10.0))
    await fake_bridge.wait_count(TONE_STARTED)
    assert await probe(fake_bridge, port) == pytest.approx(1e-5)  # muted before the tone: frozen silence
    plugin.muted = False
    assert await probe(fake_bridge, port) == pytest.approx(0.2236, abs=0.002)
    assert plugin.levels()[1] == pytest.approx((-16.0, -53.6, -100.0, -100.0), abs=0.05)
    plugin.muted = True
    fake_bridge.send_to(port, STOP_TONE)
    await fake_bridge.wait_count(TONE_STOPPED)
    assert await probe(fake_bridge, port) == pytest.approx(0.2236, abs=0.002)  # frozen at the tone
    plugin.muted = False
    assert await probe(fake_bridge, port) == pytest.approx(1e-5)  # rendering again: silence


async def test_gain_parameter_needs_a_float_and_scales_the_signal(
    fake_bridge: FakeBridge, bound_plugin: SimulatedPlugin
) -> None:
    plugin, port = bound_plugin, bound_plugin.port or 0
    plugin.muted, plugin.signal_rms = False, 0.1
    fake_bridge.send_to(port, SET_PARAMETER, ("s", "GAIN"), ("i", -6))
    fake_bridge.send_to(port, SET_PARAMETER, ("s", "GAIN"), ("f", -6.0), ("f", 1.0))
    await fake_bridge.barrier(port)
    assert plugin.parameters == {}
    fake_bridge.send_to(port, SET_PARAMETER, ("s", "GAIN"), ("f", -6.0))
    await fake_bridge.barrier(port)
    assert plugin.parameters == {"GAIN": -6.0}
    assert await probe(fake_bridge, port) == pytest.approx(0.1 * 10 ** (-6 / 20), rel=1e-3)


# --------------------------------------------------------------------------------------------------------------
# Chat, and datagrams that JUCE would drop
# --------------------------------------------------------------------------------------------------------------


async def test_chat_request_is_int_one_then_text_and_responses_need_exactly_one_string(
    fake_bridge: FakeBridge, bound_plugin: SimulatedPlugin
) -> None:
    assert bound_plugin.send_chat("reduce gain by 3 db")
    (request,) = await fake_bridge.wait_count(CHAT_REQUEST)
    assert type_tags(request.data) == ",is" and request.params == [1, "reduce gain by 3 db"]
    assert request.addr == (LOOPBACK, bound_plugin.sender_port)
    port = bound_plugin.port or 0
    fake_bridge.send_to(port, CHAT_RESPONSE, ("s", "OK"), ("s", "extra"))
    fake_bridge.send_to(port, CHAT_RESPONSE, ("i", 3))
    fake_bridge.send_to(port, CHAT_RESPONSE, ("s", "OK, reducing GAIN by 3.0 dB."))
    await fake_bridge.barrier(port)
    assert bound_plugin.chat_responses == ["OK, reducing GAIN by 3.0 dB."]


async def test_bundles_and_malformed_datagrams_are_dropped(
    fake_bridge: FakeBridge, bound_plugin: SimulatedPlugin
) -> None:
    port = bound_plugin.port or 0
    query = build_message(QUERY_RMS, ("s", "bad"))  # address 20 bytes, ",s\0\0" at 20..23, "bad\0"
    assert query[20:24] == b",s\x00\x00"
    bundle = OscBundleBuilder(IMMEDIATELY)
    bundle.add_content(OscMessage(query))
    bad = [
        bundle.build().dgram,  # JUCE parses bundles, but the plugin only handles plain messages
        query[:-4],  # truncated
        query + b"\x00" * 4,  # trailing bytes: JUCE wants the message to fill the datagram exactly
        query[:23] + b"\x01" + query[24:],  # non-zero padding after the type tags
        query[:20] + b";s\x00\x00" + query[24:],  # type tags not starting with ','
        build_message(QUERY_RMS, ("s", "bad"), ("d", 1.0)),  # 'd' is outside JUCE's i f s b r
        b"/aiplayer/query_rms\x00",  # no type tag string at all
        b"\xff\xfe garbage",
    ]
    for data in bad:
        fake_bridge.send_raw(port, data)
    await fake_bridge.barrier(port)
    assert bound_plugin.dropped == len(bad)
    assert bound_plugin.received_args(QUERY_RMS)[:-1] == []  # only the barrier's query got through
    assert all(d.params[0] != "bad" for d in fake_bridge.of(RMS_RESPONSE))


def test_parse_like_juce_reads_the_types_the_plugin_checks() -> None:
    assert parse_like_juce(build_message(START_TONE, ("f", 137.0), ("f", -10.0))) == (
        START_TONE,
        [("f", 137.0), ("f", -10.0)],
    )
    assert parse_like_juce(build_message(START_TONE, ("i", 137), ("i", -10))) == (START_TONE, [("i", 137), ("i", -10)])
    blob = parse_like_juce(build_message("/x", ("b", b"\x01\x02\x03"), ("r", 0x11223344)))
    assert blob == ("/x", [("b", b"\x01\x02\x03"), ("r", 0x11223344)])
    assert parse_like_juce(build_message("/x", ("T", True))) is None
    assert parse_like_juce(struct.pack(">4s", b"/x\x00\x00") + b",s\x00\x00" + b"abc") is None  # string unterminated


# --------------------------------------------------------------------------------------------------------------
# Fleet and command line
# --------------------------------------------------------------------------------------------------------------


async def test_fleet_instances_take_successive_bootstrap_ports_and_own_sender_ports(
    fake_bridge: FakeBridge, config: SimConfig
) -> None:
    async with PluginFleet(3, config, interval=0.0) as fleet:
        requests = await fake_bridge.wait_count(REQUEST_PORT, 3)
        assert [p.ephemeral_port for p in fleet] == list(config.ephemeral_candidates())
        assert len({p.sender_port for p in fleet}) == 3
        assert {(r.addr[1], r.params[0], r.params[2]) for r in requests} == {
            (p.sender_port, p.temp_id, p.ephemeral_port) for p in fleet
        }


async def test_fleet_instances_reuse_the_bootstrap_port_once_the_previous_one_moved(
    fake_bridge: FakeBridge, config: SimConfig
) -> None:
    ports = assign_free_ports(fake_bridge)
    async with PluginFleet(3, config, interval=0.15) as fleet:
        await fleet.wait_all(lambda p: p.state == "bound")
        assert [p.ephemeral_port for p in fleet] == [config.ephemeral_base] * 3
        assert sorted(p.port or 0 for p in fleet) == sorted(ports.values())


def test_cli_rejects_a_bad_bridge_address() -> None:
    assert main(["simulate", "--bridge", "nowhere", "--duration", "0"]) == 2


async def test_cli_runs_plugins_against_a_bridge(fake_bridge: FakeBridge, config: SimConfig) -> None:
    assign_free_ports(fake_bridge)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "oscbridge",
        "simulate",
        "--plugins",
        "2",
        "--bridge",
        f"{LOOPBACK}:{fake_bridge.port}",
        "--duration",
        "0.4",
        "--ephemeral-base",
        str(config.ephemeral_base),
        "--ephemeral-step",
        str(STEP),
        "--ephemeral-count",
        "3",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, stderr.decode()
    lines = [json.loads(line) for line in stdout.decode().splitlines()]
    assert [line["state"] for line in lines] == ["bound", "bound"]
    assert {line["temp_id"] for line in lines} == {d.params[0] for d in fake_bridge.of(PORT_CONFIRMED)}
