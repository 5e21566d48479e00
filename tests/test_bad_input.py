"""Bad input gets a clear error reply (or a counted log line when there is nobody to answer) and changes
nothing; the bridge keeps serving."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from oscbridge.app import Bridge
from oscbridge.client import BridgeClient, BridgeRequestError
from oscbridge.osc.codec import encode_message


async def error_of(client: BridgeClient, address: str, *args: object) -> tuple[str, str]:
    with pytest.raises(BridgeRequestError) as err:
        await client.call(address, *args)
    return err.value.code, err.value.message


@pytest.mark.parametrize(
    ("address", "args", "code", "words"),
    [
        ("/bridge/mapping/set", (0, "Kick", "TR1"), "bad_request", "track_number must be at least 1"),
        ("/bridge/mapping/set", (-3, "Kick", "TR1"), "bad_request", "track_number must be at least 1"),
        ("/bridge/mapping/set", (1, "Kick", "Kick"), "bad_request", "plugin_id must start with 'TR'"),
        ("/bridge/mapping/set", (1, "Kick", "tr1"), "bad_request", "plugin_id must start with 'TR'"),
        ("/bridge/mapping/set", ("one", "Kick", "TR1"), "bad_request", "track_number must be a whole number"),
        ("/bridge/mapping/set", (1.5, "Kick", "TR1"), "bad_request", "track_number must be a whole number"),
        ("/bridge/mapping/set", (1, 7, "TR1"), "bad_request", "track_name must be a string"),
        ("/bridge/mapping/set", (1, "Kick"), "bad_request", "expected 3 argument(s)"),
        ("/bridge/mapping/set", (1, "Kick", "TR1", "extra"), "bad_request", "expected 3 argument(s)"),
        ("/bridge/mapping/track", ("TR99",), "not_found", "no track is mapped to plugin id TR99"),
        ("/bridge/mapping/track", (), "bad_request", "expected 1 argument(s)"),
        ("/bridge/project/open", ("", ""), "bad_request", "name must not be empty"),
        ("/bridge/debug/log", ("a", "", "gossip", "x", "", "info"), "bad_request", "message_type must be one of"),
        ("/bridge/debug/log", ("a", "", "log", "x", "{oops", "info"), "bad_request", "payload is not valid JSON"),
        ("/bridge/debug/log", ("a", "", "log", "x", "", "loud"), "bad_request", "severity must be one of"),
        ("/bridge/no/such/thing", (), "not_found", "unknown request /bridge/no/such/thing"),
    ],
)
async def test_error_replies(client: BridgeClient, address: str, args: tuple[object, ...], code: str,
                             words: str) -> None:
    got_code, message = await error_of(client, address, *args)
    assert got_code == code
    assert words in message
    assert await client.rows("/bridge/mapping/list") == []  # nothing changed


async def test_whole_floats_and_booleans_are_accepted_where_numbers_are_meant(client: BridgeClient) -> None:
    await client.call("/bridge/mapping/set", 4.0, "Pad", "TR4")
    assert await client.call("/bridge/mapping/track", "TR4") == ["Pad", 4, -1, ""]


async def test_huge_strings_over_tcp(bridge: Bridge) -> None:
    tcp = await BridgeClient.connect("127.0.0.1", bridge.port, transport="tcp")
    try:
        code, message = await error_of(tcp, "/bridge/mapping/set", 1, "x" * 100_000, "TR1")
        assert code == "bad_request" and "100000 characters" in message
        code, message = await error_of(tcp, "/bridge/mapping/track", "TR" + "9" * 100_000)
        assert code == "bad_request"
        assert await tcp.rows("/bridge/mapping/list") == []
    finally:
        await tcp.close()


async def test_huge_string_over_udp(udp_client: BridgeClient) -> None:
    code, message = await error_of(udp_client, "/bridge/mapping/set", 1, "y" * 60_000, "TR1")
    assert code == "bad_request" and "60000 characters" in message


async def test_request_id_rules(udp_client: BridgeClient) -> None:
    reply: asyncio.Future[list[object]] = asyncio.get_running_loop().create_future()
    udp_client.on_message = lambda m: reply.set_result(m.args) if not reply.done() else None
    udp_client.send("/bridge/ping", 42)  # request id must be a string
    args = await asyncio.wait_for(reply, 2)
    assert args[:3] == ["", "error", "bad_request"] and "request id" in str(args[3])

    reply = asyncio.get_running_loop().create_future()
    udp_client.send("/bridge/ping", "r" * 65)
    args = await asyncio.wait_for(reply, 2)
    assert args[1:3] == ["error", "bad_request"] and "at most 64" in str(args[3])


def _raw_udp(port: int, payloads: list[bytes]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for payload in payloads:
            sock.sendto(payload, ("127.0.0.1", port))
    finally:
        sock.close()


MALFORMED = [
    b"",
    b"garbage that is not osc",
    b"/bridge/ping\x00\x00\x00\x00",  # no type tags: fine for OSC, but no request id -> error reply, counted ok
    b"/bridge/ping",  # not NUL-terminated / not padded
    b"/bridge/ping\x00\x00\x00\x00,s\x00\x00abc",  # truncated string
    b"/bridge/ping\x00\x00\x00\x00,i\x00\x00\x00\x01",  # truncated int
    encode_message("/bridge/ping", ["x"]).replace(b",s", b",S"),  # a tag python-osc would misparse
    b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", 400) + b"/x",  # bundle element longer than the data
    b"/aiplayer/telemetry\x00,sfffff\x00\x00TR1",  # truncated telemetry
    bytes(range(256)) * 4,
]


async def test_malformed_datagrams_are_counted_and_bridge_keeps_serving(udp_client: BridgeClient,
                                                                        bridge: Bridge) -> None:
    assert bridge.router is not None
    before = bridge.router.counters["malformed"]
    await asyncio.to_thread(_raw_udp, bridge.port, MALFORMED * 20)
    assert (await udp_client.call("/bridge/ping"))[0] == "0.1.0"
    assert bridge.router.counters["malformed"] - before >= 8 * 20
    # Unknown addresses outside /bridge/ have nobody to answer: counted.
    udp_client.send("/somewhere/else", 1, 2.0, "x")
    await udp_client.call("/bridge/ping")
    assert bridge.router.counters["unknown_address"] >= 1


async def test_bundles_are_unpacked(udp_client: BridgeClient, bridge: Bridge) -> None:
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
    from pythonosc.osc_message_builder import OscMessageBuilder

    bundle = OscBundleBuilder(IMMEDIATELY)
    for number, name in ((1, "Kick"), (2, "Snare")):
        msg = OscMessageBuilder("/bridge/mapping/set")
        for value in ("", number, name, f"TR{number}"):
            msg.add_arg(value)
        bundle.add_content(msg.build())
    udp_client.send_bytes(bundle.build().dgram)
    rows = await udp_client.rows("/bridge/mapping/list")
    assert [r[:3] for r in rows] == [[1, "Kick", "TR1"], [2, "Snare", "TR2"]]


async def test_json_that_postgres_would_refuse_is_refused_before_it_is_acknowledged(client: BridgeClient) -> None:
    for payload, words in (('{"x": NaN}', "NaN"), ('{"x": 1e999}', "NaN and Infinity"),
                           ('{"x": "a\\u0000b"}', "\\u0000"), ('["\\ud800"]', "surrogate")):
        code, message = await error_of(client, "/bridge/debug/log", "a", "", "log", "x", payload, "info")
        assert code == "bad_request" and words in message
