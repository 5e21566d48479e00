"""Decoding and encoding OSC messages.

python-osc does the parsing and building. Around it this module adds what the bridge needs: the type-tag
string of each message (to check argument types and to record traffic), bundles flattened into their messages,
and a refusal of type tags python-osc would silently misparse (`S`, `c`, `I` are skipped without consuming their
bytes, which shifts every later argument).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage, ParseError
from pythonosc.osc_message_builder import BuildError, OscMessageBuilder

# Tags python-osc parses correctly. Anything else makes the datagram malformed for us.
SUPPORTED_TAGS = frozenset("ihfdsbrmtTFN[]")
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class MalformedDatagram(ValueError):
    """The bytes are not an OSC message or bundle the bridge can read; the text says why."""


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded OSC message: address, Python values, and their OSC type tags (without the comma)."""

    address: str
    args: list[Any]
    tags: str


def _tags_of(data: bytes) -> str:
    """Reads the type-tag string that follows the address, without decoding the arguments."""
    end = data.find(b"\0")
    if end < 0:
        raise MalformedDatagram("address is not NUL-terminated")
    start = (end + 4) & ~3
    if start >= len(data):
        return ""
    if data[start : start + 1] != b",":
        raise MalformedDatagram("type tag string does not start with ','")
    stop = data.find(b"\0", start)
    if stop < 0:
        raise MalformedDatagram("type tag string is not NUL-terminated")
    try:
        return data[start + 1 : stop].decode("ascii")
    except UnicodeDecodeError as exc:
        raise MalformedDatagram("type tag string is not ASCII") from exc


def decode_message(data: bytes) -> Message:
    """Decodes one OSC message; raises MalformedDatagram with a reason."""
    if len(data) % 4 != 0:
        raise MalformedDatagram(f"length {len(data)} is not a multiple of 4")
    tags = _tags_of(data)
    bad = set(tags) - SUPPORTED_TAGS
    if bad:
        raise MalformedDatagram(f"unsupported type tag(s) {''.join(sorted(bad))!r}")
    try:
        msg = OscMessage(data)
        args = msg.params
    except (ParseError, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise MalformedDatagram(f"cannot parse message: {exc}") from exc
    if "[" in tags:
        raise MalformedDatagram("array arguments are not accepted")
    return Message(msg.address, args, tags)


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


def tag_for(value: Any) -> str:
    """The OSC type a Python value is sent as: str s, bool T/F, int i (h beyond 32 bits), float f, bytes b."""
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


def encode_message(address: str, args: list[Any] | tuple[Any, ...] = (), tags: str | None = None) -> bytes:
    """Builds one OSC message. `tags` forces types (e.g. 'ff' for the plugin's float32-only arguments)."""
    builder = OscMessageBuilder(address)
    for index, value in enumerate(args):
        tag = tags[index] if tags is not None else tag_for(value)
        if tag == "f" and isinstance(value, int):
            value = float(value)
        builder.add_arg(value, tag)
    try:
        return builder.build().dgram  # type: ignore[no-any-return]
    except BuildError as exc:
        raise ValueError(f"cannot encode {address}: {exc}") from exc


def typed_args(message: Message) -> list[list[Any]]:
    """Arguments as [[tag, value], ...], the readable form used in recordings and debug payloads."""
    out: list[list[Any]] = []
    for tag, value in zip(message.tags, message.args, strict=False):
        if isinstance(value, bytes):
            value = value.hex()
        out.append([tag, value])
    return out
