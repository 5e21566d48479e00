"""Recording format (JSONL), the pcap/pcapng reader, and replay over real loopback sockets.

Captures are built here, byte by byte, with small `struct` writers, so every link type, byte order and
timestamp resolution the reader claims to handle is exercised without external files or tools.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from oscbridge.cli import main
from oscbridge.tools.recording import (
    ReadStats,
    RecordedDatagram,
    Recorder,
    decode_osc,
    format_endpoint,
    parse_endpoint,
    parse_host_port,
    read_recording,
)
from oscbridge.tools.replay import detect_bridge_port, replay
from oscbridge.tools.sim.plugin import build_message

LOOPBACK = "127.0.0.1"
DATA_DIR = Path(__file__).resolve().parent / "data"
EPOCH_NS = 1_700_000_000 * 10**9

TELEMETRY = build_message(
    "/aiplayer/telemetry", ("s", "TR1"), ("f", 0.22418), ("f", -16.0), ("f", -53.6), ("f", -100.0), ("f", -100.0)
)
RMS = build_message("/aiplayer/rms", ("s", "TR1"), ("f", 0.22418))
REQUEST = build_message("/aiplayer/request_port", ("s", "43440ecde2c040a193edbfc32b76dde4"), ("i", -1), ("i", 50000))


# --------------------------------------------------------------------------------------------------------------
# Packet and capture writers
# --------------------------------------------------------------------------------------------------------------


def udp_segment(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def ipv4(src: str, dst: str, body: bytes, proto: int = 17, ident: int = 1, frag: int = 0) -> bytes:
    header = struct.pack(
        ">BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(body),
        ident,
        frag,
        64,
        proto,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return header + body


def ipv6(src: str, dst: str, body: bytes, next_header: int = 17) -> bytes:
    addresses = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    return struct.pack(">IHBB", 6 << 28, len(body), next_header, 64) + addresses + body


def udp4(sport: int, dport: int, payload: bytes, src: str = LOOPBACK, dst: str = LOOPBACK) -> bytes:
    return ipv4(src, dst, udp_segment(sport, dport, payload))


def null_frame(ip: bytes, family: int = 2, endian: str = "<") -> bytes:
    return struct.pack(endian + "I", family) + ip


def ether_frame(ip: bytes, ethertype: int = 0x0800, vlan: int | None = None) -> bytes:
    tag = struct.pack(">HH", 0x8100, vlan) if vlan is not None else b""
    frame = b"\x02" * 6 + b"\x04" * 6 + tag + struct.pack(">H", ethertype) + ip
    return frame.ljust(60, b"\x00")  # minimum Ethernet frame: short packets arrive padded


def sll_frame(ip: bytes, protocol: int = 0x0800) -> bytes:
    return struct.pack(">HHH8sH", 0, 772, 0, b"", protocol) + ip


def sll2_frame(ip: bytes, protocol: int = 0x0800) -> bytes:
    return struct.pack(">HHIHBB8s", protocol, 0, 1, 772, 0, 0, b"") + ip


Packet = tuple[int, bytes]  # (timestamp in ns since the epoch, frame)


def pcap_file(
    linktype: int, packets: Sequence[Packet], endian: str = "<", nano: bool = False, snaplen: int = 65535
) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts_ns, frame in packets:
        seconds, rest = divmod(ts_ns, 10**9)
        captured = frame[:snaplen]
        fraction = rest if nano else rest // 1000
        out.append(struct.pack(endian + "IIII", seconds, fraction, len(captured), len(frame)) + captured)
    return b"".join(out)


def ng_block(endian: str, block_type: int, body: bytes) -> bytes:
    body = body + b"\x00" * (-len(body) % 4)
    total = 12 + len(body)
    return struct.pack(endian + "II", block_type, total) + body + struct.pack(endian + "I", total)


def ng_shb(endian: str) -> bytes:
    return ng_block(endian, 0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def ng_idb(endian: str, linktype: int, tsresol: int | None = None, tsoffset: int | None = None) -> bytes:
    options = b""
    if tsresol is not None:
        options += struct.pack(endian + "HH", 9, 1) + bytes([tsresol]) + b"\x00" * 3
    if tsoffset is not None:
        options += struct.pack(endian + "HHq", 14, 8, tsoffset)
    options += struct.pack(endian + "HH", 0, 0)
    return ng_block(endian, 1, struct.pack(endian + "HHI", linktype, 0, 0) + options)


def ng_epb(endian: str, iface: int, units: int, frame: bytes) -> bytes:
    head = struct.pack(endian + "IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(frame), len(frame))
    return ng_block(endian, 6, head + frame)


def ng_spb(endian: str, frame: bytes) -> bytes:
    return ng_block(endian, 3, struct.pack(endian + "I", len(frame)) + frame)


def read_bytes(tmp_path: Path, content: bytes, name: str = "capture") -> tuple[list[RecordedDatagram], ReadStats]:
    path = tmp_path / name
    path.write_bytes(content)
    stats = ReadStats()
    return list(read_recording(path, stats)), stats


# --------------------------------------------------------------------------------------------------------------
# JSONL
# --------------------------------------------------------------------------------------------------------------


def test_recorder_flushes_each_line_and_the_reader_gets_the_same_datagrams(tmp_path: Path) -> None:
    clock = iter([100.0, 100.0, 100.041, 100.5]).__next__
    path = tmp_path / "rec.jsonl"
    recorder = Recorder(path, clock=clock)
    recorder.record((LOOPBACK, 57012), (LOOPBACK, 8999), REQUEST)
    first = json.loads(path.read_text())  # readable before close: nothing waits in a buffer
    assert first == {
        "t": 0.0,
        "src": "127.0.0.1:57012",
        "dst": "127.0.0.1:8999",
        "data": base64.b64encode(REQUEST).decode(),
        "address": "/aiplayer/request_port",
        "args": [["s", "43440ecde2c040a193edbfc32b76dde4"], ["i", -1], ["i", 50000]],
    }
    recorder.record((LOOPBACK, 57012), (LOOPBACK, 8999), TELEMETRY)
    recorder.record(("::1", 4000, 0, 0), ("::1", 8999, 0, 0), b"\x00\x01junk")
    recorder.close()
    recorder.record((LOOPBACK, 1), (LOOPBACK, 2), b"after close is ignored")

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 3
    assert lines[1]["t"] == pytest.approx(0.041)
    assert lines[1]["args"] == [["s", "TR1"], ["f", 0.22418], ["f", -16.0], ["f", -53.6], ["f", -100.0], ["f", -100.0]]
    assert "address" not in lines[2] and lines[2]["src"] == "[::1]:4000"

    records = list(read_recording(path))
    assert [r.data for r in records] == [REQUEST, TELEMETRY, b"\x00\x01junk"]
    assert [r.t for r in records] == pytest.approx([0.0, 0.041, 0.5])
    assert records[0].src == (LOOPBACK, 57012) and records[2].dst == ("::1", 8999)

    with Recorder(path) as again:  # a second run appends
        again.record((LOOPBACK, 1), (LOOPBACK, 8999), RMS)
    assert len(list(read_recording(path))) == 4


def test_jsonl_reader_skips_broken_lines(tmp_path: Path) -> None:
    good = json.dumps({"t": 1.5, "src": "127.0.0.1:1", "dst": "127.0.0.1:8999", "data": base64.b64encode(RMS).decode()})
    content = "\n".join(
        [
            good,
            "",
            '{"t": 2, "src": "127.0.0.1:1", "dst": "127.0.0.1:8999"}',  # no data
            '{"t": 2, "src": "nowhere", "dst": "127.0.0.1:8999", "data": ""}',
            '{"t": 2, "src": "127.0.0.1:1", "dst": "127.0.0.1:8999", "data": "@@"}',
            '{"t": 3, "src": "127.0.0.1:1", "dst": "127.0.0.1:89',  # a crash cut the last line
        ]
    )
    records, stats = read_bytes(tmp_path, content.encode(), "r.jsonl")
    assert records == [RecordedDatagram(1.5, (LOOPBACK, 1), (LOOPBACK, 8999), RMS)]
    assert (stats.format, stats.records, stats.bad_lines, stats.datagrams) == ("jsonl", 5, 4, 1)


def test_decode_osc_names_every_type_and_rejects_what_is_not_a_message() -> None:
    data = build_message(
        "/x",
        ("i", -2),
        ("f", 0.1),
        ("s", "é"),
        ("b", b"\x01\x02"),
        ("h", 2**40),
        ("d", 0.1),
        ("T", True),
        ("F", False),
        ("N", None),
        ("r", 7),
        ("m", (1, 2, 3, 4)),
    )
    assert decode_osc(data) == (
        "/x",
        [
            ["i", -2],
            ["f", 0.1],
            ["s", "é"],
            ["b", "AQI="],
            ["h", 2**40],
            ["d", 0.1],
            ["T", True],
            ["F", False],
            ["N", None],
            ["r", 7],
            ["m", [1, 2, 3, 4]],
        ],
    )
    assert decode_osc(build_message("/aiplayer/stop_tone")) == ("/aiplayer/stop_tone", [])
    assert decode_osc(b"#bundle\x00" + b"\x00" * 8) is None
    assert decode_osc(RMS[:-2]) is None
    assert decode_osc(b"/x\x00\x00,q\x00\x00") is None
    assert decode_osc(build_message("/x", ("f", float("nan")))) == ("/x", [["f", "nan"]])


def test_endpoint_text_round_trips() -> None:
    assert format_endpoint(("::1", 9, 0, 0)) == "[::1]:9"
    assert parse_endpoint("[::1]:9") == ("::1", 9)
    assert parse_endpoint(format_endpoint((LOOPBACK, 8999))) == (LOOPBACK, 8999)
    assert parse_host_port("9000") == (LOOPBACK, 9000)
    assert parse_host_port(":9000") == (LOOPBACK, 9000)
    for bad in ("localhost", "host:99999", "host:x", ":"):
        with pytest.raises(ValueError):
            parse_host_port(bad)


def test_bundled_recordings_hold_the_sample_session() -> None:
    records = list(read_recording(DATA_DIR / "three_tracks_startup.jsonl"))
    assert [r.t for r in records] == sorted(r.t for r in records)
    to_bridge = [r for r in records if r.dst == (LOOPBACK, 8999)]
    assert {r.src[1] for r in to_bridge} == {57012, 63488, 51977}
    decoded = [decode_osc(r.data) for r in to_bridge]
    assert all(d is not None for d in decoded)
    requests = [r for r, d in zip(to_bridge, decoded, strict=True) if d and d[0] == "/aiplayer/request_port"]
    assert [len(r.data) for r in requests] == [76, 76, 76]
    assert [r.data[24:28] for r in requests] == [b",sii"] * 3
    telemetry = [r for r, d in zip(to_bridge, decoded, strict=True) if d and d[0] == "/aiplayer/telemetry"]
    assert len(telemetry) > 30 and {len(r.data) for r in telemetry} == {52}
    others = {r.dst[1] for r in records} - {8999}
    assert others == {50000, 50100, 50200, 9000, 9001, 9002}  # app->plugin datagrams, which replay leaves out
    edge = [decode_osc(r.data) for r in read_recording(DATA_DIR / "edge_cases.jsonl")]
    assert ("/aiplayer/chat/request", [["i", 1], ["s", "reduce gain by 3 db"]]) in edge


# --------------------------------------------------------------------------------------------------------------
# pcap
# --------------------------------------------------------------------------------------------------------------


def test_pcap_bsd_loopback_little_endian_microseconds(tmp_path: Path) -> None:
    packets = [
        (EPOCH_NS + 100_000, null_frame(udp4(57012, 8999, REQUEST))),
        (EPOCH_NS + 41_100_000, null_frame(udp4(57012, 8999, TELEMETRY))),
        (EPOCH_NS + 42_000_000, null_frame(ipv4(LOOPBACK, LOOPBACK, b"\x00" * 20, proto=6))),  # TCP
        (EPOCH_NS + 50_000_000, null_frame(ipv6("::1", "::1", udp_segment(4000, 8999, RMS)), family=30)),
        (EPOCH_NS + 60_000_000, null_frame(udp4(1, 2, b"x"), family=99)),  # unknown address family
    ]
    records, stats = read_bytes(tmp_path, pcap_file(0, packets))
    assert stats.format == "pcap"
    assert [r.data for r in records] == [REQUEST, TELEMETRY, RMS]
    assert [r.t for r in records] == pytest.approx([0.0, 0.041, 0.0499])
    assert records[0].src == (LOOPBACK, 57012) and records[0].dst == (LOOPBACK, 8999)
    assert records[2].src == ("::1", 4000)
    assert (stats.records, stats.not_udp, stats.not_ip, stats.datagrams) == (5, 1, 1, 3)


def test_pcap_big_endian_nanoseconds_ethernet_with_vlan_and_padding(tmp_path: Path) -> None:
    tiny = build_message("/a")  # 8 bytes: the Ethernet frame gets padded, the datagram must not
    packets = [
        (EPOCH_NS, ether_frame(udp4(5000, 8999, tiny, "10.0.0.1", "10.0.0.2"))),
        (EPOCH_NS + 123_456_789, ether_frame(udp4(5000, 8999, RMS), vlan=42)),
        (EPOCH_NS + 200_000_000, ether_frame(b"\x00" * 28, ethertype=0x0806)),  # ARP
        (EPOCH_NS + 300_000_000, ether_frame(ipv6("fe80::1", "fe80::2", udp_segment(1, 2, RMS)), 0x86DD)),
    ]
    records, stats = read_bytes(tmp_path, pcap_file(1, packets, endian=">", nano=True))
    assert [r.data for r in records] == [tiny, RMS, RMS]
    assert records[1].t == pytest.approx(0.123456789, abs=1e-12)
    assert records[0].src == ("10.0.0.1", 5000) and records[2].dst == ("fe80::2", 2)
    assert stats.not_ip == 1


@pytest.mark.parametrize(
    ("linktype", "frame_of"),
    [
        (101, lambda ip: ip),
        (12, lambda ip: ip),
        (228, lambda ip: ip),
        (108, lambda ip: null_frame(ip, endian=">")),
        (113, sll_frame),
        (276, sll2_frame),
    ],
)
def test_pcap_other_link_types(tmp_path: Path, linktype: int, frame_of: Callable[[bytes], bytes]) -> None:
    records, _ = read_bytes(tmp_path, pcap_file(linktype, [(EPOCH_NS, frame_of(udp4(57012, 8999, TELEMETRY)))]))
    assert [(r.src, r.dst, r.data) for r in records] == [((LOOPBACK, 57012), (LOOPBACK, 8999), TELEMETRY)]


def test_pcap_counts_unknown_link_types_and_truncation(tmp_path: Path) -> None:
    _, stats = read_bytes(tmp_path, pcap_file(147, [(EPOCH_NS, b"\x00" * 40)]))
    assert stats.unsupported_linktype == 1
    _, stats = read_bytes(tmp_path, pcap_file(0, [(EPOCH_NS, null_frame(udp4(1, 8999, TELEMETRY)))], snaplen=40))
    assert (stats.truncated, stats.datagrams) == (1, 0)
    whole = pcap_file(0, [(EPOCH_NS, null_frame(udp4(1, 8999, RMS)))] * 2)
    records, stats = read_bytes(tmp_path, whole[:-10])
    assert len(records) == 1 and stats.file_truncated


def fragments_v4(payload: bytes, size: int, ident: int) -> list[bytes]:
    segment = udp_segment(57012, 8999, payload)
    pieces = [segment[i : i + size] for i in range(0, len(segment), size)]
    return [
        ipv4(
            LOOPBACK,
            LOOPBACK,
            piece,
            ident=ident,
            frag=(index * size // 8) | (0x2000 if index < len(pieces) - 1 else 0),
        )
        for index, piece in enumerate(pieces)
    ]


def test_ip_fragments_are_reassembled_and_orphans_counted(tmp_path: Path) -> None:
    big = build_message("/aiplayer/chat/response", ("s", "x" * 3000))
    first, second, third = fragments_v4(big, 1480, ident=7)
    orphan = fragments_v4(big, 1480, ident=8)[1]
    frames = [third, first, orphan, second]  # out of order on purpose
    records, stats = read_bytes(tmp_path, pcap_file(0, [(EPOCH_NS + i, null_frame(f)) for i, f in enumerate(frames)]))
    assert [r.data for r in records] == [big]
    assert (stats.fragments_reassembled, stats.fragments_dropped) == (1, 1)


def test_ipv6_fragments_are_reassembled(tmp_path: Path) -> None:
    big = build_message("/aiplayer/chat/response", ("s", "y" * 2000))
    segment = udp_segment(4000, 8999, big)
    half = 1232  # a multiple of 8
    frames = []
    for offset, more in ((0, 1), (half, 0)):
        frag_header = struct.pack(">BBHI", 17, 0, (offset // 8) << 3 | more, 99)
        frames.append(null_frame(ipv6("::1", "::1", frag_header + segment[offset : offset + half], 44), family=30))
    records, _ = read_bytes(tmp_path, pcap_file(0, [(EPOCH_NS, f) for f in frames]))
    assert [(r.src, r.data) for r in records] == [(("::1", 4000), big)]


# --------------------------------------------------------------------------------------------------------------
# pcapng
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcapng_interfaces_resolutions_and_simple_packets(tmp_path: Path, endian: str) -> None:
    base_us = EPOCH_NS // 1000
    content = b"".join(
        [
            ng_shb(endian),
            ng_idb(endian, 0),  # default resolution: microseconds
            ng_idb(endian, 1, tsresol=9),  # nanoseconds
            ng_idb(endian, 101, tsresol=0x80 | 10, tsoffset=1),  # 2^-10 s units, one second offset
            ng_epb(endian, 0, base_us, null_frame(udp4(57012, 8999, REQUEST), endian=endian)),
            ng_block(endian, 4, b"\x00" * 8),  # name resolution block: skipped
            ng_epb(endian, 1, EPOCH_NS + 41_000_001, ether_frame(udp4(63488, 8999, TELEMETRY))),
            ng_spb(endian, null_frame(udp4(51977, 8999, RMS), endian=endian)),  # no timestamp: the last one
            ng_epb(endian, 2, ((EPOCH_NS // 10**9) - 1) * 1024 + 512, udp4(1, 8999, RMS)),
            ng_block(endian, 5, b"\x00" * 12),  # interface statistics: skipped
        ]
    )
    records, stats = read_bytes(tmp_path, content)
    assert stats.format == "pcapng"
    assert [(r.src[1], r.data) for r in records] == [(57012, REQUEST), (63488, TELEMETRY), (51977, RMS), (1, RMS)]
    assert [r.t for r in records] == pytest.approx([0.0, 0.041000001, 0.041000001, 0.5], abs=1e-9)


def test_pcapng_sections_switch_byte_order_and_reset_interfaces(tmp_path: Path) -> None:
    content = b"".join(
        [
            ng_shb("<"),
            ng_idb("<", 0),
            ng_epb("<", 0, EPOCH_NS // 1000, null_frame(udp4(1, 8999, REQUEST))),
            ng_shb(">"),
            ng_idb(">", 1, tsresol=9),
            ng_epb(">", 0, EPOCH_NS + 2 * 10**9, ether_frame(udp4(2, 8999, RMS))),
            ng_epb(">", 1, EPOCH_NS, ether_frame(udp4(3, 8999, RMS))),  # interface 1 is gone in this section
        ]
    )
    records, stats = read_bytes(tmp_path, content)
    assert [(r.src[1], r.t) for r in records] == [(1, 0.0), (2, 2.0)]
    assert stats.malformed == 1
    records, stats = read_bytes(tmp_path, content[:-6])
    assert len(records) == 2 and stats.file_truncated


# --------------------------------------------------------------------------------------------------------------
# Replay
# --------------------------------------------------------------------------------------------------------------


class Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[bytes, int, float]] = []  # data, source port, arrival time
        self.changed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append((data, addr[1], asyncio.get_running_loop().time()))
        self.changed.set()

    async def wait_count(self, count: int, timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.got) < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def sink() -> AsyncIterator[tuple[Sink, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Sink, local_addr=(LOOPBACK, 0))
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    yield protocol, transport.get_extra_info("sockname")[1]
    transport.close()


def write_jsonl(path: Path, rows: Sequence[tuple[float, int, int, bytes]]) -> Path:
    with Recorder(path) as recorder:
        for t, sport, dport, data in rows:
            recorder.record((LOOPBACK, sport), (LOOPBACK, dport), data, t=t)
    return path


async def test_replay_keeps_bytes_spacing_and_one_socket_per_source(tmp_path: Path, sink: tuple[Sink, int]) -> None:
    receiver, port = sink
    garbage = b"\x00not osc at all"
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            (10.0, 57012, 8999, REQUEST),
            (10.1, 63488, 8999, garbage),  # malformed datagrams replay exactly as recorded
            (10.15, 60211, 50000, RMS),  # app -> plugin: not for the bridge
            (10.25, 57012, 8999, TELEMETRY),
        ],
    )
    stats = await replay(path, target=(LOOPBACK, port), speed=1.0)
    await receiver.wait_count(3)
    assert [data for data, _, _ in receiver.got] == [REQUEST, garbage, TELEMETRY]
    ports = [source for _, source, _ in receiver.got]
    assert ports[0] == ports[2] != ports[1]
    assert stats.source_ports == {"127.0.0.1:57012": ports[0], "127.0.0.1:63488": ports[1]}
    assert (stats.read, stats.sent, stats.skipped, stats.errors, stats.sources) == (4, 3, 1, 0, 2)
    times = [at for _, _, at in receiver.got]
    assert 0.08 <= times[1] - times[0] <= 0.25
    assert 0.12 <= times[2] - times[1] <= 0.3
    assert 0.24 <= stats.duration < 1.0


async def test_replay_of_the_sample_session_at_full_speed(sink: tuple[Sink, int]) -> None:
    receiver, port = sink
    path = DATA_DIR / "three_tracks_startup.jsonl"
    expected = [r for r in read_recording(path) if r.dst[1] == 8999]
    stats = await replay(path, target=(LOOPBACK, port), speed=0)
    await receiver.wait_count(len(expected))
    assert stats.sent == len(expected) and stats.duration < 2.0
    assert [data for data, _, _ in receiver.got] == [r.data for r in expected]
    by_source: dict[int, set[int]] = {}
    for record, (_, new_port, _) in zip(expected, receiver.got, strict=True):
        by_source.setdefault(record.src[1], set()).add(new_port)
    assert all(len(ports) == 1 for ports in by_source.values())  # each original sender keeps one port
    assert len({next(iter(ports)) for ports in by_source.values()}) == 3


async def test_replay_port_filter_and_detection(tmp_path: Path, sink: tuple[Sink, int]) -> None:
    receiver, port = sink
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [(0.0, 40000, 7777, REQUEST), (0.01, 7777, 50000, RMS), (0.02, 40000, 7777, TELEMETRY)],
    )
    assert detect_bridge_port(path) == 7777  # a bridge that ran on --osc-port 7777
    stats = await replay(path, target=(LOOPBACK, port), speed=0)
    await receiver.wait_count(2)
    assert (stats.bridge_port, stats.sent) == (7777, 2)
    stats = await replay(path, target=(LOOPBACK, port), speed=0, only_to_port=50000)
    await receiver.wait_count(3)
    assert stats.sent == 1 and receiver.got[-1][0] == RMS
    with pytest.raises(ValueError):
        await replay(path, target=(LOOPBACK, port), speed=-1)


async def test_replay_from_a_pcap_capture(tmp_path: Path, sink: tuple[Sink, int]) -> None:
    receiver, port = sink
    path = tmp_path / "lo0.pcap"
    frames = [
        (EPOCH_NS, null_frame(udp4(57012, 8999, REQUEST))),
        (EPOCH_NS + 1_000_000, null_frame(udp4(60211, 50000, RMS))),
        (EPOCH_NS + 50_000_000, null_frame(udp4(57012, 8999, TELEMETRY))),
    ]
    path.write_bytes(pcap_file(0, frames))
    stats = await replay(path, target=(LOOPBACK, port), speed=1.0)
    await receiver.wait_count(2)
    assert [data for data, _, _ in receiver.got] == [REQUEST, TELEMETRY]
    assert receiver.got[1][2] - receiver.got[0][2] >= 0.04
    assert stats.reader.format == "pcap" and stats.skipped == 1


def test_replay_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [(0.0, 1, 8999, REQUEST), (0.01, 2, 8999, RMS)])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind((LOOPBACK, 0))
        receiver.settimeout(2)
        port = receiver.getsockname()[1]
        assert main(["replay", str(path), "--speed", "0", "--target", f"{LOOPBACK}:{port}"]) == 0
        assert {receiver.recv(2048), receiver.recv(2048)} == {REQUEST, RMS}
    summary = cast(dict[str, Any], json.loads(capsys.readouterr().out))
    assert (summary["sent"], summary["sources"], summary["bridge_port"]) == (2, 2, 8999)
    assert main(["replay", str(tmp_path / "missing.jsonl")]) == 1
    assert main(["replay", str(path), "--target", "nowhere"]) == 2
