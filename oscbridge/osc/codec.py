"""Decoding and encoding OSC messages.

Messages of the common types are decoded and encoded here with `struct` (the receive path is hot and
python-osc's per-message cost is several times ours); python-osc parses bundles and the rare types. Around that
this module gives the bridge the type-tag string of each message (to check argument types and to record
traffic), bundles flattened into their messages, and a refusal of type tags python-osc would silently misparse
(`S`, `c`, `I` are skipped without consuming their bytes, which shifts every later argument).
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any, NamedTuple

from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage, ParseError

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class MalformedDatagram(ValueError):
    """The bytes are not an OSC message or bundle the bridge can read; the text says why."""


class Message(NamedTuple):
    """One decoded OSC message: address, Python values, and their OSC type tags (without the comma)."""

    address: str
    args: list[Any]
    tags: str


_INT = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_FLOAT = struct.Struct(">f")
_DOUBLE = struct.Struct(">d")


def _string_at(data: bytes, index: int) -> tuple[str, int]:
    """An OSC-string at `index`: its text and the index after its NUL padding."""
    end = data.find(b"\0", index)
    if end < 0:
        raise MalformedDatagram("string is not NUL-terminated")
    next_index = (end + 4) & ~3
    if next_index > len(data):
        raise MalformedDatagram("string padding runs past the end")
    try:
        return data[index:end].decode("utf-8"), next_index
    except UnicodeDecodeError as exc:
        raise MalformedDatagram("string is not UTF-8") from exc


def decode_message(data: bytes) -> Message:
    """Decodes one OSC message; raises MalformedDatagram with a reason.

    The common tags (i h f d s b T F N) are decoded here with `struct`: this is the receive path of ~6,000
    datagrams/s and python-osc's parser costs about three times as much. The rare ones (t r m) go to python-osc.
    Tags python-osc would misparse (S c I, arrays) make the datagram malformed.
    """
    if len(data) % 4 != 0:
        raise MalformedDatagram(f"length {len(data)} is not a multiple of 4")
    address, index = _string_at(data, 0)
    size = len(data)
    if index >= size:
        return Message(address, [], "")
    if data[index] != 0x2C:  # ","
        raise MalformedDatagram("type tag string does not start with ','")
    tag_string, index = _string_at(data, index)
    tags = tag_string[1:]
    args: list[Any] = []
    append = args.append
    try:
        for tag in tags:
            if tag == "s":
                end = data.find(b"\0", index)
                if end < 0:
                    raise MalformedDatagram("string is not NUL-terminated")
                append(data[index:end].decode("utf-8"))
                index = (end + 4) & ~3
                if index > size:
                    raise MalformedDatagram("string padding runs past the end")
            elif tag == "f":
                append(_FLOAT.unpack_from(data, index)[0])
                index += 4
            elif tag == "i":
                append(_INT.unpack_from(data, index)[0])
                index += 4
            elif tag in "TFN":
                append(True if tag == "T" else False if tag == "F" else None)
            elif tag == "h":
                append(_INT64.unpack_from(data, index)[0])
                index += 8
            elif tag == "d":
                append(_DOUBLE.unpack_from(data, index)[0])
                index += 8
            elif tag == "b":
                length = _INT.unpack_from(data, index)[0]
                if length < 0 or index + 4 + length > size:
                    raise MalformedDatagram("blob runs past the end")
                append(data[index + 4 : index + 4 + length])
                index += 4 + ((length + 3) & ~3)
            elif tag in "trm":
                return _decode_with_python_osc(data, address, tags)
            else:
                raise MalformedDatagram(f"unsupported type tag {tag!r}")
    except struct.error as exc:
        raise MalformedDatagram(f"argument data is truncated: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise MalformedDatagram("string is not UTF-8") from exc
    return Message(address, args, tags)


def _decode_with_python_osc(data: bytes, address: str, tags: str) -> Message:
    try:
        return Message(address, OscMessage(data).params, tags)
    except (ParseError, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise MalformedDatagram(f"cannot parse message: {exc}") from exc


def decode_packet(data: bytes) -> list[Message]:
    """Decodes a datagram into its messages: one for a message, all of them (flattened) for a bundle.

    Bundle time tags are ignored: nobody in this system schedules messages, and waiting on them would stall the
    receive path.
    """
    if not data:
        raise MalformedDatagram("empty datagram")
    first = data[:1]
    if first == b"/":
        return [decode_message(data)]
    if data.startswith(b"#bundle\0"):
        try:
            bundle = OscBundle(data)
        except Exception as exc:  # python-osc raises several types for a broken bundle
            raise MalformedDatagram(f"cannot parse bundle: {exc}") from exc
        out: list[Message] = []
        for item in bundle:
            if isinstance(item, OscBundle):
                out.extend(decode_packet(item.dgram))
            else:
                out.append(decode_message(item.dgram))
        return out
    raise MalformedDatagram("does not start with '/' or '#bundle'")


# Exact types only (bool is not int here); ints go through tag_for for the 32-bit range check.
_TAG_BY_TYPE: dict[type, str] = {str: "s", float: "f", bytes: "b", bytearray: "b", type(None): "N"}


def tag_for(value: Any) -> str:
    """The OSC type a Python value is sent as: str s, bool T/F, int i (h beyond 32 bits), float f, bytes b."""
    tag = _TAG_BY_TYPE.get(type(value))
    if tag is not None:
        return tag
    if isinstance(value, str):
        return "s"
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, int):
        return "i" if INT32_MIN <= value <= INT32_MAX else "h"
    if isinstance(value, float):
        return "f"
    if isinstance(value, bytes | bytearray):
        return "b"
    if value is None:
        return "N"
    raise TypeError(f"cannot send {type(value).__name__} over OSC")


# NUL padding after a string of length n: _NULS[n % 4] (always at least one NUL).
_NULS = (b"\0\0\0\0", b"\0\0\0", b"\0\0", b"\0")
# Encoded address + type tags of the messages the bridge sends again and again (replies, plugin messages).
# Bounded, because a client can make the bridge answer on addresses of its choosing.
_HEADS: dict[tuple[str, str], bytes] = {}
_HEADS_MAX = 512


def _pad(raw: bytes) -> bytes:
    return raw + _NULS[len(raw) & 3]


def encode_message(address: str, args: list[Any] | tuple[Any, ...] = (), tags: str | None = None) -> bytes:
    """Builds one OSC message. `tags` forces types (e.g. 'ff' for the plugin's float32-only arguments).

    Written with `struct` rather than python-osc's builder, which re-parses every message it builds and costs
    ~14 µs a reply; tests check the bytes against python-osc's builder for every type used.
    """
    if tags is None:
        tags = "".join([_TAG_BY_TYPE.get(type(value)) or tag_for(value) for value in args])
    elif len(tags) != len(args):
        raise ValueError(f"cannot encode {address}: {len(tags)} tags for {len(args)} arguments")
    head = _HEADS.get((address, tags))
    if head is None:
        head = _pad(address.encode()) + _pad(("," + tags).encode())
        if len(_HEADS) < _HEADS_MAX:
            _HEADS[(address, tags)] = head
    parts = [head]
    for tag, value in zip(tags, args, strict=True):
        try:
            if tag == "s":
                raw = str(value).encode()
                parts += (raw, _NULS[len(raw) & 3])
            elif tag == "i":
                parts.append(_INT.pack(value))
            elif tag == "f":
                parts.append(_FLOAT.pack(value))
            elif tag == "h":
                parts.append(_INT64.pack(value))
            elif tag == "d":
                parts.append(_DOUBLE.pack(value))
            elif tag == "b":
                parts.append(_INT.pack(len(value)) + bytes(value) + b"\0" * (-len(value) % 4))
            elif tag not in "TFN":
                raise ValueError(f"unsupported tag {tag!r}")
        except struct.error as exc:
            raise ValueError(f"cannot encode {address}: {value!r} as {tag!r}: {exc}") from exc
    return b"".join(parts)


def short_float32(value: float) -> float | str:
    """The shortest decimal that is the same float32, so 0.22418 reads as 0.22418 and not 0.2241799980..."""
    if math.isnan(value) or math.isinf(value):
        return repr(value)  # 'nan', 'inf', '-inf': JSON has no literal for them
    exact = _FLOAT.pack(value)
    for digits in (6, 7, 8):
        candidate = float(f"{value:.{digits}g}")
        if _FLOAT.pack(candidate) == exact:
            return candidate
    return float(f"{value:.9g}")


def typed_args(message: Message) -> list[list[Any]]:
    """Arguments as [[tag, value], ...], the readable JSON form used in recordings and debug payloads: float32
    as its shortest decimal, blobs as base64."""
    out: list[list[Any]] = []
    for tag, value in zip(message.tags, message.args, strict=False):
        if tag == "f":
            value = short_float32(value)
        elif isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        elif isinstance(value, tuple):  # MIDI (m) comes from python-osc as a tuple
            value = list(value)
        out.append([tag, value])
    return out
