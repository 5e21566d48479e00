"""Small parts on their own: OSC codec, SLIP framing, argument specs, the spool (settings: test_config.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from oscbridge.api.params import Float, Int, Str, convert_args, plugin_id
from oscbridge.osc import slip
from oscbridge.osc.codec import MalformedDatagram, decode_packet, encode_message
from oscbridge.store.spool import Spool
from oscbridge.typedefs import BridgeError


def test_request_port_bytes_match_the_plugin() -> None:
    # The reference encoding of the protocol note (section 2.6): 76 bytes, ",sii".
    data = encode_message("/aiplayer/request_port", ["43440ecde2c040a193edbfc32b76dde4", -1, 50000])
    assert len(data) == 76
    assert data[24:32] == b",sii\x00\x00\x00\x00"
    assert data[-8:] == b"\xff\xff\xff\xff\x00\x00\xc3\x50"
    (msg,) = decode_packet(data)
    assert (msg.address, msg.args, msg.tags) == (
        "/aiplayer/request_port", ["43440ecde2c040a193edbfc32b76dde4", -1, 50000], "sii")


def test_forced_float32_tags() -> None:
    data = encode_message("/aiplayer/start_tone", [137, -10], tags="ff")
    assert len(data) == 36
    (msg,) = decode_packet(data)
    assert msg.tags == "ff" and msg.args == [137.0, -10.0]


@pytest.mark.parametrize("data", [
    b"", b"x", b"/a\x00", b"/a\x00\x00,s\x00\x00ab",
    b"/a\x00\x00,S\x00\x00ab\x00\x00",  # S would be skipped by python-osc without consuming bytes
    b"/a\x00\x00sx\x00\x00",  # tags without a comma
])
def test_malformed(data: bytes) -> None:
    with pytest.raises(MalformedDatagram):
        decode_packet(data)


def test_bundle_is_flattened() -> None:
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder

    inner = OscBundleBuilder(IMMEDIATELY)
    inner.add_content(_msg("/b", 2))
    outer = OscBundleBuilder(IMMEDIATELY)
    outer.add_content(_msg("/a", 1))
    outer.add_content(inner.build())
    messages = decode_packet(outer.build().dgram)
    assert [(m.address, m.args) for m in messages] == [("/a", [1]), ("/b", [2])]


def _msg(address: str, value: int) -> OscMessage:

    builder = OscMessageBuilder(address)
    builder.add_arg(value)
    return builder.build()


def test_slip_stream_split_across_reads_and_bad_escape_recovery() -> None:
    packets = [encode_message("/x", ["a\xc0b"]), bytes([0xC0, 0xDB, 1, 2]), encode_message("/y", [1])]
    stream = b"".join(slip.encode(p) for p in packets)
    decoder = slip.SlipDecoder()
    out: list[bytes] = []
    for i in range(0, len(stream), 3):
        out.extend(decoder.feed(stream[i:i + 3]))
    assert out == packets
    bad = slip.SlipDecoder()
    assert bad.feed(b"\xc0ab\xdb\x01\xc0" + slip.encode(b"ok")) == [b"ok"]
    assert bad.errors == 1


def test_params() -> None:
    specs = (Int("n", min=1), Str("name", max_len=5), plugin_id(), Float("f", default=137.0))
    assert convert_args(specs, [2.0, "abc", "TR9"]) == [2, "abc", "TR9", 137.0]
    assert convert_args(specs, [True and 3, "", "TR1", 1]) == [3, "", "TR1", 1.0]
    cases: list[tuple[list[Any], str]] = [
        ([True, "a", "TR1"], "whole number"), ([1, "abcdef", "TR1"], "at most 5"),
        ([1, "a", "XR1"], "start with 'TR'"), ([1], "expected 3 to 4"), ([1, "a", "TR1", float("nan")], "finite"),
    ]
    for args, words in cases:
        with pytest.raises(BridgeError) as err:
            convert_args(specs, args)
        assert err.value.code == "bad_request" and words in err.value.message


def test_spool_commit_truncate_and_crash_recovery(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, reserve_bytes=0)
    for i in range(5):
        spool.append({"k": "x", "d": {"i": i}})
    ops, end = spool.read_batch(3)
    assert [o["d"]["i"] for o in ops] == [0, 1, 2]
    spool.commit(end, 3)
    assert (spool.pending, spool.committed) == (2, 3)
    spool.close()

    # A crash in the middle of writing the next line: the half line is dropped, the rest is replayed.
    with open(tmp_path / "writes.jsonl", "ab") as fh:
        fh.write(b'{"k":"x","d":{"i":')
    again = Spool(tmp_path, max_bytes=1 << 20, reserve_bytes=0)
    assert again.pending == 2
    ops, end = again.read_batch(10)
    assert [o["d"]["i"] for o in ops] == [3, 4]
    again.commit(end, 2)
    assert (tmp_path / "writes.jsonl").stat().st_size == 0 and again.pending == 0
    again.reject([({"k": "x", "d": {"i": 9}}, "refused")])
    assert json.loads((tmp_path / "rejected.jsonl").read_text())["error"] == "refused"
    again.close()


ORACLE_CASES = [
    ("/bridge/ping/reply", ["req-1", "ok", "0.1.0", 12.5]),
    ("/aiplayer/telemetry", ["TR12", 0.22418, -16.0, -53.6, -100.0, -100.0]),
    # (python-osc sends -2**31 as 'h' although it fits 'i'; that boundary is left out of the comparison.)
    ("/x", [0, -1, 2**31 - 1, -(2**31) + 1, 2**40, "", "abc", "abcd", "ünïcode ✓", True, False, None, b"\x01\x02"]),
    ("/longer/address/here", [1.5, b"1234"]),
]


@pytest.mark.parametrize(("address", "args"), ORACLE_CASES)
def test_encoder_and_decoder_agree_with_python_osc(address: str, args: list[Any]) -> None:
    """python-osc is the oracle for our struct-based codec: same bytes out, same values back."""

    builder = OscMessageBuilder(address)
    for value in args:
        builder.add_arg(value)
    theirs = builder.build().dgram
    ours = encode_message(address, args)
    assert ours == theirs
    (msg,) = decode_packet(theirs)
    assert msg.args == OscMessage(theirs).params
    assert msg.tags == theirs[len(address) + 4 - len(address) % 4:].split(b"\0")[0].decode()[1:]


def test_rare_types_decode_through_python_osc() -> None:

    builder = OscMessageBuilder("/rare")
    builder.add_arg(0x11223344, "r")
    builder.add_arg("x")
    (msg,) = decode_packet(builder.build().dgram)
    assert msg.tags == "rs" and msg.args == [0x11223344, "x"]
