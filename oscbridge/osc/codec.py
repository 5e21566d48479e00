"""Decoding and encoding OSC messages and bundles, with `struct`, refusing anything that is not exactly OSC.

Every datagram that reaches the bridge is outside input, so the decoder trusts nothing: a message must be exactly
what its type tags say (strict NUL padding after strings and blobs, no bytes left after the last argument, a
length that is a multiple of 4), and a bundle is walked once, iteratively, with every element size checked
(positive, a multiple of 4, within the bundle) and at most `MAX_BUNDLE_DEPTH` bundles inside each other. So a
malformed datagram costs time and memory in proportion to its size and is refused with a `MalformedDatagram`
whose `kind` names the class of problem (for counting and rate-limited logging) and whose text says what was
wrong.

python-osc is the oracle in the tests (anything accepted here decodes to exactly what python-osc decodes), but it
does not parse untrusted bytes on the receive path: its bundle parser loops forever on a negative element size,
re-parses every nesting level (320 nested bundles in 6.4 kB cost 170-470 ms and ~110 MB), logs one line per
unknown element through the root logger, and skips `S`, `c` and `I` without consuming their bytes. Its message
decoder also costs about three times ours on the hot path (~6,000 telemetry datagrams a second).
"""

from __future__ import annotations

import base64
import math
import struct
from datetime import datetime, timedelta
from typing import Any, NamedTuple

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# Bundles inside bundles: nothing in this system nests them at all; 8 levels leave room for a tool that wraps a
# bundle it was given, and bound the walk's stack.
MAX_BUNDLE_DEPTH = 8
BUNDLE_HEAD = b"#bundle\0"
NTP_EPOCH = datetime(1900, 1, 1)


class MalformedDatagram(ValueError):
    """The bytes are not an OSC message or bundle the bridge can read.

    `kind` is a short name of the class of problem (`truncated`, `padding`, `bundle_element`, ...), one counter and
    one rate-limited log line each; the text says what exactly was wrong.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class Message(NamedTuple):
    """One decoded OSC message: address, Python values, and their OSC type tags (without the comma)."""

    address: str
    args: list[Any]
    tags: str


_INT = struct.Struct(">i")
_UINT = struct.Struct(">I")
_INT64 = struct.Struct(">q")
_UINT64 = struct.Struct(">Q")
_FLOAT = struct.Struct(">f")
_DOUBLE = struct.Struct(">d")


def _string_at(data: bytes, index: int) -> tuple[str, int]:
    """An OSC-string at `index`: its text and the index after its NUL padding, which must be all NUL."""
    end = data.find(b"\0", index)
    if end < 0:
        raise MalformedDatagram("string", "a string is not NUL-terminated")
    next_index = (end + 4) & ~3
    if next_index > len(data):
        raise MalformedDatagram("string", "a string's NUL padding runs past the end")
    if data.count(b"\0", end, next_index) != next_index - end:
        raise MalformedDatagram("padding", f"non-zero padding after the string at byte {index}")
    try:
        return data[index:end].decode("utf-8"), next_index
    except UnicodeDecodeError as exc:
        raise MalformedDatagram("utf8", f"the string at byte {index} is not UTF-8") from exc


def _timetag(raw: int) -> tuple[datetime, int]:
    """An OSC time tag as python-osc gives it: (UTC datetime of its whole seconds, fraction of 2**32)."""
    return NTP_EPOCH + timedelta(seconds=raw >> 32), raw & 0xFFFFFFFF


# A run of fixed-size numbers is read with one precompiled Struct; `r` is unsigned, `t` is read raw and converted.
_FIXED = {"i": "i", "f": "f", "h": "q", "d": "d", "r": "I"}
_CONSTANT = {"T": True, "F": False, "N": None}
_HEAD_CACHE_MAX = 512


class _Plan(NamedTuple):
    """How to read the arguments of one type-tag string: a tuple of steps, each a Struct for a run of fixed-size
    numbers, or one tag letter (s b t m, and T F N which carry no bytes)."""

    steps: tuple[struct.Struct | str, ...]


def _plan_for(tags: str) -> _Plan:
    steps: list[struct.Struct | str] = []
    run = ""
    for tag in tags:
        if tag in _FIXED:
            run += _FIXED[tag]
            continue
        if run:
            steps.append(struct.Struct(">" + run))
            run = ""
        if tag not in "sbtmTFN":
            raise MalformedDatagram("unsupported_type", f"unsupported type tag {tag!r}")
        steps.append(tag)
    if run:
        steps.append(struct.Struct(">" + run))
    return _Plan(tuple(steps))


# Validated heads (address and type tags, with their padding) of the datagrams seen most: telemetry repeats the same
# 28-36 bytes ~6,000 times a second. Only heads that passed every check are kept; the table is cleared when full,
# so traffic of many addresses costs the full check, never a wrong answer.
_HEADS_IN: dict[bytes, tuple[str, str, _Plan]] = {}


def _head(data: bytes, size: int) -> tuple[str, str, _Plan, int]:
    """The address, the type tags (without the comma), their plan, and where the arguments begin."""
    address_end = data.find(b"\0")
    tags_start = (address_end + 4) & ~3
    tags_end = data.find(b"\0", tags_start) if address_end >= 0 and tags_start < size else -1
    if tags_end >= 0:
        head_end = (tags_end + 4) & ~3
        cached = _HEADS_IN.get(data[:head_end])
        if cached is not None:
            return cached[0], cached[1], cached[2], head_end
    address, index = _string_at(data, 0)
    if index == size:
        return address, "", _Plan(()), index
    if data[index] != 0x2C:  # ","
        raise MalformedDatagram("type_tags", "the type tag string does not start with ','")
    tag_string, index = _string_at(data, index)
    tags = tag_string[1:]
    plan = _plan_for(tags)
    if len(_HEADS_IN) >= _HEAD_CACHE_MAX:
        _HEADS_IN.clear()
    _HEADS_IN[data[:index]] = (address, tags, plan)
    return address, tags, plan, index


def decode_message(data: bytes) -> Message:
    """Decodes one OSC message (the whole of `data`); raises MalformedDatagram with the reason.

    Tags read: i h f d s b t r m T F N. Anything else (`S`, `c`, `I`, arrays, unknown letters) makes the datagram
    malformed: the plugins never send them, and OSC 1.0 says to discard a message with a tag one cannot read.
    This is the receive path of ~6,000 telemetry datagrams a second: a validated head is looked up rather than
    checked again, and runs of numbers are read with one `struct` call (4.1 -> 2.9 µs for `/aiplayer/telemetry`).
    """
    size = len(data)
    if size % 4:
        raise MalformedDatagram("length", f"length {size} is not a multiple of 4")
    address, tags, plan, index = _head(data, size)
    args: list[Any] = []
    append = args.append
    try:
        for step in plan.steps:
            if isinstance(step, str):
                if step == "s":
                    end = data.find(b"\0", index)
                    if end < 0:
                        raise MalformedDatagram("string", "a string argument is not NUL-terminated")
                    next_index = (end + 4) & ~3
                    if next_index > size:
                        raise MalformedDatagram("string", "a string argument's NUL padding runs past the end")
                    if data.count(b"\0", end, next_index) != next_index - end:
                        raise MalformedDatagram("padding", f"non-zero padding after the string at byte {index}")
                    append(data[index:end].decode("utf-8"))
                    index = next_index
                elif step == "b":
                    length = _INT.unpack_from(data, index)[0]
                    start = index + 4
                    next_index = start + ((length + 3) & ~3)
                    if length < 0 or next_index > size:
                        raise MalformedDatagram("blob", f"the blob at byte {index} runs past the end")
                    if data.count(b"\0", start + length, next_index) != next_index - start - length:
                        raise MalformedDatagram("padding", f"non-zero padding after the blob at byte {index}")
                    append(data[start : start + length])
                    index = next_index
                elif step == "t":
                    append(_timetag(_UINT64.unpack_from(data, index)[0]))
                    index += 8
                elif step == "m":
                    if index + 4 > size:
                        raise MalformedDatagram("truncated", "a MIDI argument is cut off")
                    append(tuple(data[index : index + 4]))
                    index += 4
                else:
                    append(_CONSTANT[step])
            else:
                args += step.unpack_from(data, index)
                index += step.size
    except struct.error as exc:
        raise MalformedDatagram("truncated", f"the arguments are cut off ({len(args)} of {len(tags)} read)") from exc
    except UnicodeDecodeError as exc:
        raise MalformedDatagram("utf8", f"string argument {len(args) + 1} is not UTF-8") from exc
    if index != size:
        raise MalformedDatagram("trailing_bytes", f"{size - index} bytes follow the last argument")
    return Message(address, args, tags)


def _bundle_body(data: bytes, start: int, end: int) -> int:
    """Checks a bundle's header (`#bundle`, a time tag) in data[start:end]; returns where its elements begin."""
    if end - start < 16 or not data.startswith(BUNDLE_HEAD, start):
        raise MalformedDatagram("bundle_header", "a bundle is shorter than its '#bundle' and time tag")
    return start + 16


def decode_packet(data: bytes) -> list[Message]:
    """Decodes a datagram into its messages: one for a message, all of them, in order, for a bundle.

    Bundles are walked once, without recursion: a stack holds where each enclosing bundle goes on. Time tags are
    ignored: nobody in this system schedules messages, and waiting on them would stall the receive path.
    """
    if not data:
        raise MalformedDatagram("empty", "empty datagram")
    if data[:1] == b"/":
        return [decode_message(data)]
    if not data.startswith(BUNDLE_HEAD):
        raise MalformedDatagram("not_osc", "does not start with '/' or '#bundle'")
    size = len(data)
    if size % 4:
        raise MalformedDatagram("length", f"length {size} is not a multiple of 4")
    out: list[Message] = []
    outer: list[int] = []  # where each enclosing bundle ends
    end = size
    index = _bundle_body(data, 0, size)
    while True:
        if index == end:
            if not outer:
                return out
            end = outer.pop()
            continue
        if end - index < 4:
            raise MalformedDatagram("bundle_element", f"{end - index} stray bytes where an element size should be")
        length = _INT.unpack_from(data, index)[0]
        index += 4
        if length <= 0 or length % 4 or length > end - index:
            raise MalformedDatagram("bundle_element", f"bundle element size {length} at byte {index - 4} is not "
                                                      f"a positive multiple of 4 within the bundle")
        if data[index] == 0x2F:  # "/"
            out.append(decode_message(data[index : index + length]))
            index += length
        elif data.startswith(BUNDLE_HEAD, index):
            if len(outer) + 1 >= MAX_BUNDLE_DEPTH:
                raise MalformedDatagram("bundle_depth", f"bundles nested deeper than {MAX_BUNDLE_DEPTH}")
            outer.append(end)
            end = index + length
            index = _bundle_body(data, index, end)
        else:
            raise MalformedDatagram("bundle_element", f"the bundle element at byte {index} is neither a message "
                                                      "nor a bundle")


class Double(float):
    """A float sent as a 64-bit `d`, where float32's 24 bits are not enough: a Unix time in float32 steps by 128 s."""


# Exact types only (bool is not int here); ints go through tag_for for the 32-bit range check.
_TAG_BY_TYPE: dict[type, str] = {str: "s", float: "f", Double: "d", bytes: "b", bytearray: "b", type(None): "N"}


def tag_for(value: Any) -> str:
    """The OSC type a Python value is sent as: str s, bool T/F, int i (h beyond 32 bits), float f (Double d),
    bytes b."""
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


def timetag_text(value: tuple[datetime, int]) -> str:
    """An OSC time tag for people and JSON: ISO-8601 UTC to the microsecond, or "immediately" (the value 1)."""
    moment, fraction = value
    if moment == NTP_EPOCH and fraction == 1:
        return "immediately"
    return (moment + timedelta(microseconds=fraction * 1_000_000 // 2**32)).isoformat() + "Z"


def typed_args(message: Message) -> list[list[Any]]:
    """Arguments as [[tag, value], ...], the readable JSON form used in recordings and debug payloads: float32
    as its shortest decimal, time tags as ISO-8601 text, blobs as base64, MIDI as a list of its four bytes."""
    out: list[list[Any]] = []
    for tag, value in zip(message.tags, message.args, strict=False):
        if tag == "f":
            value = short_float32(value)
        elif tag == "t":
            value = timetag_text(value)
        elif isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        elif isinstance(value, tuple):  # MIDI (m) comes from python-osc as a tuple
            value = list(value)
        out.append([tag, value])
    return out
