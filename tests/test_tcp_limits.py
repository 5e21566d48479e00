"""TCP limits (issue 8 item 6): the SLIP decoder under hostile bytes, the frame limit, backpressure on clients that
do not read, the hard cap on unsent replies, and the connection cap, on real loopback sockets and a real bridge."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pythonosc import slip as pythonosc_slip

from oscbridge.app import Bridge
from oscbridge.client import BridgeClient
from oscbridge.config import ConfigError, Settings, load_settings
from oscbridge.osc import slip
from oscbridge.osc.codec import decode_message, encode_message
from oscbridge.osc.transport import TcpLimits, TcpPeer, TcpServer, bind_tcp
from tests.conftest import free_port, make_settings, running, wait_until

END = bytes([slip.END])

# -- the decoder --------------------------------------------------------------------------------------------------


def _feed_all(decoder: slip.SlipDecoder, chunks: list[bytes]) -> tuple[list[bytes], int]:
    """Feeds every chunk; returns the packets (including those carried by FrameTooLarge) and how many raised."""
    packets: list[bytes] = []
    raised = 0
    for chunk in chunks:
        try:
            packets.extend(decoder.feed(chunk))
        except slip.FrameTooLarge as exc:
            raised += 1
            packets.extend(exc.packets)
        assert decoder.buffered <= decoder.max_frame
    return packets, raised


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def test_decoder_gives_the_same_packets_byte_by_byte_and_in_large_chunks() -> None:
    packets = [encode_message("/bridge/ping", ["id-\u06c0"]), bytes([0xC0, 0xDB, 0xDC, 0xDD, 0xDB]),
               b"x" * 200_000, bytes(range(256)) * 3, b"\xdb\xdd\xdc"]
    stream = b"".join(slip.encode(p) for p in packets) + END * 3
    whole = slip.SlipDecoder().feed(stream)
    one_by_one, _ = _feed_all(slip.SlipDecoder(), [stream[i:i + 1] for i in range(len(stream))])
    large, _ = _feed_all(slip.SlipDecoder(), [stream[i:i + 65536] for i in range(0, len(stream), 65536)])
    assert whole == one_by_one == large == packets
    assert slip.encode(packets[1]) == pythonosc_slip.encode(packets[1])


def test_bad_escapes_drop_their_frame_only() -> None:
    decoder = slip.SlipDecoder()
    stream = (b"\xc0ab\xdb\x01\xc0" + slip.encode(b"one") + b"\xc0trailing\xdb\xc0" + b"\xdb\xdb\xdc\xc0"
              + slip.encode(b"two\xc0"))
    assert decoder.feed(stream) == [b"one", b"two\xc0"]
    assert decoder.bad_escapes == 3
    assert decoder.errors == 3


def test_an_endless_frame_is_refused_once_and_never_held_past_the_limit() -> None:
    decoder = slip.SlipDecoder(max_frame=100)
    assert decoder.feed(slip.encode(b"a" * 100)) == [b"a" * 100]  # exactly the limit is fine
    assert decoder.feed(END + b"b" * 60) == []
    assert decoder.feed(b"b" * 40) == []
    assert decoder.buffered == 100
    with pytest.raises(slip.FrameTooLarge) as caught:
        decoder.feed(b"b")
    assert (caught.value.size, caught.value.packets, decoder.buffered) == (101, [], 0)
    for _ in range(50):  # more of the same frame: dropped without holding it or raising again
        assert decoder.feed(b"c" * 1000) == []
        assert decoder.buffered == 0
    assert decoder.feed(b"c" + slip.encode(b"after")) == [b"after"]
    with pytest.raises(slip.FrameTooLarge) as caught:
        decoder.feed(slip.encode(b"ok") + b"x" * 101)  # a good packet, then the next endless frame
    assert caught.value.packets == [b"ok"]
    assert decoder.frames_too_large == 2


def test_an_oversized_frame_between_good_ones_keeps_its_neighbours() -> None:
    decoder = slip.SlipDecoder(max_frame=10)
    with pytest.raises(slip.FrameTooLarge) as caught:
        decoder.feed(slip.encode(b"before") + slip.encode(b"x" * 11) + slip.encode(b"after"))
    assert caught.value.packets == [b"before", b"after"]
    assert caught.value.size == 11


packet_lists = st.lists(st.binary(min_size=1, max_size=300), max_size=20)
cut_lists = st.lists(st.integers(min_value=0, max_value=10_000), max_size=30)


@settings(max_examples=300, deadline=None)
@given(packet_lists, cut_lists)
def test_property_encoded_packets_come_back_exactly_whatever_the_chunking(packets: list[bytes],
                                                                          cuts: list[int]) -> None:
    stream = b"".join(slip.encode(p) for p in packets)
    decoded, raised = _feed_all(slip.SlipDecoder(), _split(stream, cuts))
    assert decoded == packets
    assert raised == 0


def _reference(stream: bytes, limit: int) -> tuple[list[bytes], int, int]:
    """What the whole stream must decode to, with python-osc's SLIP decoder as the oracle for escapes."""
    *complete, tail = stream.split(END)
    packets: list[bytes] = []
    bad = too_large = 0
    for frame in complete:
        if len(frame) > limit:
            too_large += 1
        elif frame:
            try:
                packets.append(pythonosc_slip.decode(frame))
            except pythonosc_slip.ProtocolError:
                bad += 1
    return packets, bad, too_large + (len(tail) > limit)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80) | st.sampled_from([END, b"\xdb", b"\xdb\xdc", b"\xdb\xdd"]), max_size=60),
       cut_lists)
def test_property_random_bytes_raise_only_frame_too_large_and_hold_at_most_the_limit(pieces: list[bytes],
                                                                                    cuts: list[int]) -> None:
    stream = b"".join(pieces)
    decoder = slip.SlipDecoder(max_frame=40)
    decoded, raised = _feed_all(decoder, _split(stream, cuts))  # any other exception fails the test
    packets, bad, too_large = _reference(stream, 40)
    assert decoded == packets
    assert (decoder.bad_escapes, decoder.frames_too_large) == (bad, too_large)
    assert (raised > 0) == (too_large > 0) and raised <= too_large


def test_tcp_limits_are_settings_and_impossible_ones_are_refused() -> None:
    loaded = load_settings(env={"OSCBRIDGE_TCP_MAX_CONNECTIONS": "3", "OSCBRIDGE_TCP_SLOW_CLOSE": "0.5",
                                "HOME": "/tmp"})
    assert (loaded.tcp_max_connections, loaded.tcp_slow_close, loaded.tcp_max_frame) == (3, 0.5, slip.MAX_FRAME)
    with pytest.raises(ConfigError, match="tcp_low_water"):
        Settings(tcp_high_water=1000, tcp_low_water=2000).validate()
    with pytest.raises(ConfigError, match="tcp_max_connections"):
        Settings(tcp_max_connections=0).validate()


# -- the TCP server on its own: a large reply, and replies of requests already running ------------------------


@asynccontextmanager
async def tcp_server(on_packet: Callable[[bytes, TcpPeer], None], sndbuf: int,
                     **limits: Any) -> AsyncIterator[tuple[TcpServer, int]]:
    """A TcpServer alone on a free port. A small `sndbuf` (inherited by accepted sockets) makes the kernel take
    little, so replies wait in the transport as they would for a slow client."""
    values: dict[str, Any] = {"max_connections": 4, "max_frame": 1 << 20, "high_water": 16384,
                              "low_water": 4096, "max_unsent": 65536, "slow_close": 5.0, **limits}
    sock = bind_tcp("127.0.0.1", free_port())
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    port = sock.getsockname()[1]
    server = TcpServer(on_packet, TcpLimits(**values))
    await server.start(sock)
    try:
        yield server, port
    finally:
        await server.close()


async def _read_packets(reader: asyncio.StreamReader, count: int, timeout: float = 5.0) -> list[bytes]:
    decoder = slip.SlipDecoder()
    packets: list[bytes] = []
    async with asyncio.timeout(timeout):
        while len(packets) < count:
            chunk = await reader.read(65536)
            assert chunk, f"connection closed after {len(packets)} of {count} packets"
            packets.extend(decoder.feed(chunk))
    return packets


async def test_one_reply_larger_than_the_cap_reaches_a_client_that_reads() -> None:
    unsent_seen: list[int] = []

    def reply_big(data: bytes, peer: TcpPeer) -> None:
        for i in range(64):  # one reply of 64 rows, 1 MiB in all, written in one go
            peer.send(bytes([i]) * 16384)
        unsent_seen.append(peer.unsent)

    async with tcp_server(reply_big, sndbuf=16384) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(slip.encode(b"give"))
        packets = await _read_packets(reader, 64)
        assert packets == [bytes([i]) * 16384 for i in range(64)]
        assert unsent_seen[0] > server.limits.max_unsent  # the rule was exercised, not dodged by the kernel
        assert server.closed_overfull == 0
        assert server.paused == 1
        writer.close()


async def test_replies_of_requests_already_running_cannot_grow_without_bound() -> None:
    unsent_seen: list[int] = []
    tasks: set[asyncio.Task[None]] = set()

    async def answer_later(peer: TcpPeer) -> None:
        await asyncio.sleep(0.01)
        unsent_seen.append(peer.unsent)
        peer.send(b"r" * 8192)

    def start_request(data: bytes, peer: TcpPeer) -> None:
        task = asyncio.get_running_loop().create_task(answer_later(peer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async with tcp_server(start_request, sndbuf=16384) as (server, port):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(slip.encode(b"q") * 500)  # 500 requests read at once (no reply yet), never a read
        await wait_until(lambda: server.closed_overfull == 1)
        await wait_until(lambda: server.connections == 0 and not tasks)
        assert max(unsent_seen) <= server.limits.max_unsent + 8192 + 8
        sock.close()


# -- a real bridge ------------------------------------------------------------------------------------------------


async def _ping_udp(client: BridgeClient) -> None:
    version, _uptime = await client.call("/bridge/ping", timeout=2.0)
    assert isinstance(version, str)


async def _read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the peer still sends, until it closes (EOF or reset); fails if it stays open."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    received = bytearray()
    async with asyncio.timeout(timeout):
        while True:
            try:
                chunk = await loop.sock_recv(sock, 1 << 20)
            except ConnectionResetError:
                return bytes(received)
            if not chunk:
                return bytes(received)
            received += chunk


async def test_an_endless_frame_closes_its_connection_and_others_are_served(tmp_path: Path,
                                                                           database_url: str) -> None:
    async with running(make_settings(tmp_path, database_url, tcp_max_frame=65536, tcp_slow_close=1.0)) as bridge:
        assert bridge.tcp is not None
        udp = await BridgeClient.connect("127.0.0.1", bridge.port, transport="udp")
        tcp = await BridgeClient.connect("127.0.0.1", bridge.port, transport="tcp")
        loop = asyncio.get_running_loop()
        hostile = socket.create_connection(("127.0.0.1", bridge.port))
        hostile.setblocking(False)
        sent = 0
        try:
            await loop.sock_sendall(hostile, END)
            while sent < 4 << 20:  # 4 MiB without an END; the bridge must hang up after 64 KiB
                await asyncio.wait_for(loop.sock_sendall(hostile, b"a" * 16384), 2.0)
                sent += 16384
        except (ConnectionError, TimeoutError):
            pass
        assert sent < 4 << 20
        await _read_until_closed(hostile)
        hostile.close()
        await wait_until(lambda: bridge.tcp is not None and bridge.tcp.frames_too_large == 1)
        await wait_until(lambda: bridge.tcp is not None and bridge.tcp.connections == 1)
        await _ping_udp(udp)
        assert (await tcp.call("/bridge/ping"))[0] == (await udp.call("/bridge/ping"))[0]
        await udp.close()
        await tcp.close()


async def test_a_client_that_never_reads_is_paused_then_closed(tmp_path: Path, database_url: str) -> None:
    async with running(make_settings(tmp_path, database_url, tcp_high_water=65536, tcp_low_water=16384,
                                     tcp_max_unsent=1 << 20, tcp_slow_close=0.5)) as bridge:
        tcp = bridge.tcp
        assert tcp is not None
        udp = await BridgeClient.connect("127.0.0.1", bridge.port, transport="udp")
        for n in range(1, 101):
            await udp.call("/bridge/mapping/set", n, f"Track {n}", f"TR{n}")
        reader = await BridgeClient.connect("127.0.0.1", bridge.port, transport="tcp")
        assert len(await reader.rows("/bridge/mapping/list")) == 100
        await reader.close()
        await wait_until(lambda: tcp.connections == 0)
        assert bridge.router is not None
        rss_before = psutil.Process().memory_info().rss
        dispatched_before = bridge.router.packets_in

        greedy = socket.create_connection(("127.0.0.1", bridge.port))
        greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        greedy.setblocking(False)
        request = slip.encode(encode_message("/bridge/mapping/list", ["g"]))  # 34 bytes, ~9 kB of reply
        burst = request * 1000
        sent = 0
        pings = 0
        while tcp.closed_slow + tcp.closed_overfull == 0:
            try:
                sent += greedy.send(burst[sent % len(burst):])
            except BlockingIOError:
                pass  # the bridge stopped reading: TCP holds the client back
            except ConnectionError:
                break
            await _ping_udp(udp)  # a well-behaved client is answered throughout
            pings += 1
            assert pings < 500, "the greedy client was never closed"
            await asyncio.sleep(0.01)
        assert tcp.paused >= 1 and tcp.closed_slow == 1 and tcp.closed_overfull == 0
        await _read_until_closed(greedy)
        greedy.close()
        await wait_until(lambda: tcp.connections == 0)
        growth = psutil.Process().memory_info().rss - rss_before
        answered = bridge.router.packets_in - dispatched_before - pings
        # The bridge stopped dispatching long before it had read what the client sent (each answer is ~9 kB, so
        # without backpressure the requests sent would have made hundreds of MB of replies).
        assert answered < sent // len(request) // 2, (answered, sent // len(request))
        assert growth < 40 * 1024 * 1024, f"RSS grew {growth / 1e6:.0f} MB"
        await _ping_udp(udp)
        await udp.close()


async def test_the_connection_over_the_cap_is_refused_cleanly_and_a_freed_slot_serves(tmp_path: Path,
                                                                                     database_url: str) -> None:
    async with running(make_settings(tmp_path, database_url, tcp_max_connections=2)) as bridge:
        tcp = bridge.tcp
        assert tcp is not None
        first = await BridgeClient.connect("127.0.0.1", bridge.port, transport="tcp")
        second = await BridgeClient.connect("127.0.0.1", bridge.port, transport="tcp")
        await first.call("/bridge/ping")
        await second.call("/bridge/ping")

        third = socket.create_connection(("127.0.0.1", bridge.port))
        received = await _read_until_closed(third)
        third.close()
        refusal = decode_message(slip.SlipDecoder().feed(received)[0])
        assert refusal.address == "/bridge/refused"
        assert refusal.args == ["unavailable",
                                "too many connections: at most 2 at a time; close one or try again later"]
        assert tcp.refused == 1 and tcp.connections == 2

        await first.close()
        await wait_until(lambda: tcp.connections == 1)
        fourth = await BridgeClient.connect("127.0.0.1", bridge.port, transport="tcp")
        await fourth.call("/bridge/ping")
        await second.call("/bridge/ping")
        assert tcp.refused == 1 and tcp.accepted == 3
        await second.close()
        await fourth.close()


async def test_frames_with_bad_escapes_are_dropped_and_the_next_frame_is_answered(bridge: Bridge) -> None:
    tcp = bridge.tcp
    assert tcp is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
    ping = encode_message("/bridge/ping", ["id-\u06c0"])  # U+06C0 is 0xDB 0x80 in UTF-8: escaped on the wire
    body = slip.encode(ping)[1:-1]
    writer.write(END + body[:8] + b"\xdb\x01" + body[8:] + END  # ESC followed by a plain byte
                 + END + body + b"\xdb" + END                    # ESC at the end of the frame
                 + slip.encode(ping))
    reply = decode_message((await _read_packets(reader, 1))[0])
    assert reply.address == "/bridge/ping/reply"
    assert reply.args[:2] == ["id-\u06c0", "ok"]
    assert tcp.bad_escapes == 2
    writer.close()
