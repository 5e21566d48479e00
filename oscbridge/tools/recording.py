"""Recordings of OSC traffic: the JSONL format of BRIDGE-API.md, and a reader for it and for pcap/pcapng captures.

A recording lets a bug seen in a musician's session be replayed against a test bridge (`oscbridge replay`). The
bridge writes JSONL with `Recorder`; people also bring tcpdump or Wireshark captures of lo0, so `read_recording`
accepts classic pcap and pcapng as well and turns every UDP datagram in them into the same `RecordedDatagram`.
The capture parser is written here (a few hundred lines of `struct`) so that the bridge needs no packet library.
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Final

from oscbridge.jsontext import parse_json
from oscbridge.osc.codec import MalformedDatagram, decode_message, typed_args
from oscbridge.private import private_opener

Endpoint = tuple[str, int]
"""An IP address (as text) and a UDP port."""

SockAddr = tuple[str, int] | tuple[str, int, int, int]
"""What asyncio hands to `datagram_received`: IPv4 pairs or IPv6 quadruples."""

OscArgs = list[list[Any]]
"""Decoded OSC arguments for people to read: `[["s", "TR1"], ["f", 0.22]]`."""


# --------------------------------------------------------------------------------------------------------------
# Endpoint text ("127.0.0.1:8999", "[::1]:8999")
# --------------------------------------------------------------------------------------------------------------


def format_endpoint(addr: SockAddr | Endpoint) -> str:
    """`ip:port`, with brackets around IPv6 addresses so the port separator stays unambiguous."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_endpoint(text: str) -> Endpoint:
    """Reads `ip:port` or `[ipv6]:port` as written by `format_endpoint`; raises ValueError on anything else."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


def parse_host_port(text: str, default_host: str = "127.0.0.1") -> Endpoint:
    """Command-line form of an endpoint: `host:port`, `[v6]:port`, `:port` or a bare `port`."""
    if text.isdigit():
        return parse_endpoint(f"{default_host}:{text}")
    if text.startswith(":"):
        return parse_endpoint(f"{default_host}{text}")
    return parse_endpoint(text)


# --------------------------------------------------------------------------------------------------------------
# OSC decoding for the human-readable `address`/`args` fields
# --------------------------------------------------------------------------------------------------------------


def decode_osc(data: bytes) -> tuple[str, OscArgs] | None:
    """`(address, [[tag, value], ...])` for a single OSC message, or None for bundles and anything the bridge
    cannot decode (the recording then keeps only `data`, which is what replay uses)."""
    if data[:1] != b"/":
        return None
    try:
        message = decode_message(data)
    except MalformedDatagram:
        return None
    return message.address, typed_args(message)


# --------------------------------------------------------------------------------------------------------------
# Writing JSONL
# --------------------------------------------------------------------------------------------------------------


class Recorder:
    """Appends one JSON line per datagram to a file (the `--record FILE` of `oscbridge serve`).

    It sits on the receive path, so it does only what is needed: one small dict, base64, an optional decode for
    human readers, one `write` and one `flush`. The flush hands every line to the kernel at once, so a crash of
    the daemon loses nothing already recorded (an OS crash may, since there is no fsync per line).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        decode: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        # Datagrams carry conversation text: the recording is private (0600) whatever the umask.
        self._file: IO[str] | None = open(self.path, "a", encoding="utf-8", opener=private_opener)  # noqa: SIM115
        self._decode = decode
        self._clock = clock
        self._start = clock()
        self.count = 0

    def record(self, src: SockAddr | Endpoint, dst: SockAddr | Endpoint, data: bytes, t: float | None = None) -> None:
        """Writes one line. `t` defaults to seconds since the recorder was made; give it to write synthetic files.

        Calls after `close()` are ignored: during shutdown a last datagram may still arrive.
        """
        if self._file is None:
            return
        when = self._clock() - self._start if t is None else t
        entry: dict[str, Any] = {
            "t": round(when, 6),
            "src": format_endpoint(src),
            "dst": format_endpoint(dst),
            "data": base64.b64encode(data).decode("ascii"),
        }
        if self._decode:
            decoded = decode_osc(data)
            if decoded is not None:
                entry["address"], entry["args"] = decoded
        self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        """Closes the file; safe to call twice."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------------------
# Reading: common types
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedDatagram:
    """One UDP datagram of a recording. `t` is seconds since the start of the recording (the first datagram
    of a capture), `data` the UDP payload byte for byte."""

    t: float
    src: Endpoint
    dst: Endpoint
    data: bytes


@dataclass(slots=True)
class ReadStats:
    """What the reader saw and skipped, so a tool can say why a capture replays fewer datagrams than it holds."""

    format: str = ""
    records: int = 0  # lines (JSONL) or captured packets (pcap/pcapng)
    datagrams: int = 0  # RecordedDatagram objects produced
    bad_lines: int = 0  # JSONL lines that are not a valid record
    not_ip: int = 0  # frames that carry something other than IPv4/IPv6 (ARP, unknown address family, ...)
    not_udp: int = 0  # IP packets that carry TCP, ICMP, ...
    unsupported_linktype: int = 0
    truncated: int = 0  # packets cut short by the capture's snap length
    malformed: int = 0  # headers that do not add up
    fragments_reassembled: int = 0  # datagrams rebuilt from IP fragments
    fragments_dropped: int = 0  # fragments whose datagram never became complete
    file_truncated: bool = False  # the file ends in the middle of a record or block


def read_recording(path: str | Path, stats: ReadStats | None = None) -> Iterator[RecordedDatagram]:
    """Every datagram of a JSONL recording, a pcap or a pcapng file, in file order. The format is chosen by
    the first bytes of the file. Pass a `ReadStats` to learn what was skipped."""
    stats = stats if stats is not None else ReadStats()
    with Path(path).open("rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        if magic in _PCAP_MAGICS:
            stats.format = "pcap"
            yield from _read_pcap(fh, stats)
        elif magic == _PCAPNG_SHB:
            stats.format = "pcapng"
            yield from _read_pcapng(fh, stats)
        else:
            stats.format = "jsonl"
            yield from _read_jsonl(fh, stats)


def _read_jsonl(fh: BinaryIO, stats: ReadStats) -> Iterator[RecordedDatagram]:
    for raw in fh:
        line = raw.strip()
        if not line:
            continue
        stats.records += 1
        try:
            obj = parse_json(line)
            record = RecordedDatagram(
                t=float(obj["t"]),
                src=parse_endpoint(obj["src"]),
                dst=parse_endpoint(obj["dst"]),
                data=base64.b64decode(obj["data"], validate=True),
            )
        except (ValueError, KeyError, TypeError, binascii.Error):  # a crash can leave half a last line
            stats.bad_lines += 1
            continue
        stats.datagrams += 1
        yield record


# --------------------------------------------------------------------------------------------------------------
# Reading: link, IP and UDP layers shared by pcap and pcapng
# --------------------------------------------------------------------------------------------------------------

LINKTYPE_NULL: Final = 0  # BSD loopback, 4-byte address family in the capturing host's byte order (macOS lo0)
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW_DLT12: Final = 12  # DLT_RAW as most BSDs and old libpcap write it
LINKTYPE_RAW: Final = 101
LINKTYPE_LOOP: Final = 108  # OpenBSD loopback, family in network byte order
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229
LINKTYPE_LINUX_SLL2: Final = 276

_AF_INET: Final = 2
_AF_INET6_VALUES: Final = frozenset({10, 23, 24, 28, 30})  # Linux, Windows, NetBSD/OpenBSD, FreeBSD, macOS
_ETHERTYPE_IPV4: Final = 0x0800
_ETHERTYPE_IPV6: Final = 0x86DD
_ETHERTYPE_VLAN: Final = frozenset({0x8100, 0x88A8, 0x9100})
_IPPROTO_UDP: Final = 17
_IPV6_EXTENSIONS: Final = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
_IPV6_FRAGMENT: Final = 44
_MAX_PENDING_FRAGMENTS: Final = 256

_U16 = struct.Struct(">H")


def _network_layer(linktype: int, frame: bytes) -> tuple[int, bytes] | None:
    """(IP version, IP packet) from a link-layer frame, or None when the frame does not carry IP.

    Raises ValueError for a link type this reader does not know.
    """
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(frame) < 4:
            return None
        little, big = struct.unpack_from("<I", frame)[0], struct.unpack_from(">I", frame)[0]
        family = little if little <= 0xFFFF else big  # families are small, so only one reading is plausible
        if family == _AF_INET:
            return 4, frame[4:]
        return (6, frame[4:]) if family in _AF_INET6_VALUES else None
    if linktype == LINKTYPE_ETHERNET:
        return _ethernet_payload(frame)
    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_DLT12, LINKTYPE_IPV4, LINKTYPE_IPV6):
        version = frame[0] >> 4 if frame else 0
        return (version, frame) if version in (4, 6) else None
    if linktype == LINKTYPE_LINUX_SLL:
        return _by_ethertype(frame, 14, 16)
    if linktype == LINKTYPE_LINUX_SLL2:
        return _by_ethertype(frame, 0, 20)
    raise ValueError(f"unsupported link type {linktype}")


def _by_ethertype(frame: bytes, type_offset: int, payload_offset: int) -> tuple[int, bytes] | None:
    if len(frame) < payload_offset:
        return None
    ethertype = _U16.unpack_from(frame, type_offset)[0]
    if ethertype == _ETHERTYPE_IPV4:
        return 4, frame[payload_offset:]
    if ethertype == _ETHERTYPE_IPV6:
        return 6, frame[payload_offset:]
    return None


def _ethernet_payload(frame: bytes) -> tuple[int, bytes] | None:
    offset = 12
    for _ in range(3):  # the untagged type, or up to two 802.1Q/802.1ad tags in front of it
        if len(frame) < offset + 2:
            return None
        if _U16.unpack_from(frame, offset)[0] not in _ETHERTYPE_VLAN:
            return _by_ethertype(frame, offset, offset + 2)
        offset += 4
    return None


@dataclass(slots=True)
class _FragmentBuffer:
    parts: dict[int, bytes]
    total: int | None = None

    def add(self, offset: int, more: bool, payload: bytes) -> bytes | None:
        """Stores one fragment; returns the whole IP payload once every byte from 0 to the end is present."""
        self.parts[offset] = payload
        if not more:
            self.total = offset + len(payload)
        if self.total is None:
            return None
        covered = 0
        for start in sorted(self.parts):
            if start > covered:
                return None
            covered = max(covered, start + len(self.parts[start]))
        if covered < self.total:
            return None
        whole = bytearray(self.total)
        for start in sorted(self.parts):
            whole[start : start + len(self.parts[start])] = self.parts[start]
        return bytes(whole)


_Packet = tuple[bytes, bytes, bytes]  # source address, destination address, UDP segment (header included)


class _PacketDecoder:
    """Turns captured frames into datagrams: link layer, IPv4/IPv6 (with fragment reassembly), UDP.

    Fragments are reassembled rather than skipped: the first fragment alone would replay as a cut-off OSC
    message, and lo0 does fragment datagrams above its 16 KB MTU.
    """

    def __init__(self, stats: ReadStats) -> None:
        self._stats = stats
        self._first_ns: int | None = None
        self._fragments: OrderedDict[tuple[object, ...], _FragmentBuffer] = OrderedDict()

    def packet(self, linktype: int, ts_ns: int, frame: bytes) -> RecordedDatagram | None:
        stats = self._stats
        stats.records += 1
        try:
            network = _network_layer(linktype, frame)
        except ValueError:
            stats.unsupported_linktype += 1
            return None
        if network is None:
            stats.not_ip += 1
            return None
        version, ip_packet = network
        try:
            parts = self._ipv4(ip_packet) if version == 4 else self._ipv6(ip_packet)
        except (struct.error, IndexError):
            stats.malformed += 1
            return None
        if parts is None:
            return None
        return self._udp(ts_ns, socket.AF_INET if version == 4 else socket.AF_INET6, *parts)

    def finish(self) -> None:
        """Counts the fragments of datagrams that never became whole."""
        for buffer in self._fragments.values():
            self._stats.fragments_dropped += len(buffer.parts)
        self._fragments.clear()

    def _ipv4(self, ip: bytes) -> _Packet | None:
        header_len = (ip[0] & 0x0F) * 4
        total_len, ident, flags_offset = struct.unpack_from(">HHH", ip, 2)
        if ip[0] >> 4 != 4 or header_len < 20 or total_len < header_len:
            self._stats.malformed += 1
            return None
        if len(ip) < total_len:
            self._stats.truncated += 1
            return None
        if ip[9] != _IPPROTO_UDP:
            self._stats.not_udp += 1
            return None
        src, dst, payload = ip[12:16], ip[16:20], ip[header_len:total_len]
        more, offset = bool(flags_offset & 0x2000), (flags_offset & 0x1FFF) * 8
        if more or offset:
            whole = self._reassemble((4, src, dst, ident), offset, more, payload)
            return None if whole is None else (src, dst, whole)
        return src, dst, payload

    def _ipv6(self, ip: bytes) -> _Packet | None:
        if ip[0] >> 4 != 6 or len(ip) < 40:
            self._stats.malformed += 1
            return None
        payload_len = _U16.unpack_from(ip, 4)[0]
        end = 40 + payload_len if payload_len else len(ip)  # 0 means a jumbogram: trust the capture
        if len(ip) < end:
            self._stats.truncated += 1
            return None
        next_header, pos, fragment = ip[6], 40, None
        while next_header in _IPV6_EXTENSIONS or next_header == _IPV6_FRAGMENT:
            if next_header == _IPV6_FRAGMENT:
                offset_flags, ident = struct.unpack_from(">HI", ip, pos + 2)
                fragment = ((offset_flags >> 3) * 8, bool(offset_flags & 1), ident)
                next_header, pos = ip[pos], pos + 8
            else:
                next_header, pos = ip[pos], pos + (ip[pos + 1] + 1) * 8
            if pos > end:
                self._stats.malformed += 1
                return None
        if next_header != _IPPROTO_UDP:
            self._stats.not_udp += 1
            return None
        src, dst, payload = ip[8:24], ip[24:40], ip[pos:end]
        if fragment is not None and (fragment[0] or fragment[1]):
            offset, more, ident = fragment
            whole = self._reassemble((6, src, dst, ident), offset, more, payload)
            return None if whole is None else (src, dst, whole)
        return src, dst, payload

    def _reassemble(self, key: tuple[object, ...], offset: int, more: bool, payload: bytes) -> bytes | None:
        buffer = self._fragments.get(key)
        if buffer is None:
            if len(self._fragments) >= _MAX_PENDING_FRAGMENTS:
                _, oldest = self._fragments.popitem(last=False)
                self._stats.fragments_dropped += len(oldest.parts)
            buffer = self._fragments[key] = _FragmentBuffer(parts={})
        whole = buffer.add(offset, more, payload)
        if whole is not None:
            del self._fragments[key]
            self._stats.fragments_reassembled += 1
        return whole

    def _udp(self, ts_ns: int, family: int, src: bytes, dst: bytes, segment: bytes) -> RecordedDatagram | None:
        if len(segment) < 8:
            self._stats.malformed += 1
            return None
        sport, dport, length = struct.unpack_from(">HHH", segment)
        if length < 8:
            self._stats.malformed += 1
            return None
        if length > len(segment):
            self._stats.truncated += 1
            return None
        if self._first_ns is None:
            self._first_ns = ts_ns
        self._stats.datagrams += 1
        return RecordedDatagram(
            t=(ts_ns - self._first_ns) / 1e9,
            src=(socket.inet_ntop(family, src), sport),
            dst=(socket.inet_ntop(family, dst), dport),
            data=segment[8:length],  # the UDP length drops Ethernet padding of short frames
        )


# --------------------------------------------------------------------------------------------------------------
# Reading: classic pcap
# --------------------------------------------------------------------------------------------------------------

_PCAP_MICRO_LE: Final = b"\xd4\xc3\xb2\xa1"
_PCAP_MICRO_BE: Final = b"\xa1\xb2\xc3\xd4"
_PCAP_NANO_LE: Final = b"\x4d\x3c\xb2\xa1"
_PCAP_NANO_BE: Final = b"\xa1\xb2\x3c\x4d"
_PCAP_MAGICS: Final = frozenset({_PCAP_MICRO_LE, _PCAP_MICRO_BE, _PCAP_NANO_LE, _PCAP_NANO_BE})
_MAX_RECORD: Final = 256 * 1024 * 1024  # a larger length means the file is corrupt, not that a packet is huge


def _read_pcap(fh: BinaryIO, stats: ReadStats) -> Iterator[RecordedDatagram]:
    header = fh.read(24)
    if len(header) < 24:
        stats.file_truncated = True
        return
    magic = header[:4]
    endian = "<" if magic in (_PCAP_MICRO_LE, _PCAP_NANO_LE) else ">"
    frac_ns = 1 if magic in (_PCAP_NANO_LE, _PCAP_NANO_BE) else 1000
    linktype = struct.unpack_from(endian + "I", header, 20)[0] & 0xFFFF  # upper bits: FCS length flags
    record = struct.Struct(endian + "IIII")
    decoder = _PacketDecoder(stats)
    while True:
        head = fh.read(16)
        if not head:
            break
        if len(head) < 16:
            stats.file_truncated = True
            break
        seconds, fraction, captured, _original = record.unpack(head)
        if captured > _MAX_RECORD:
            stats.malformed += 1
            break
        frame = fh.read(captured)
        if len(frame) < captured:
            stats.file_truncated = True
            break
        datagram = decoder.packet(linktype, seconds * 1_000_000_000 + fraction * frac_ns, frame)
        if datagram is not None:
            yield datagram
    decoder.finish()


# --------------------------------------------------------------------------------------------------------------
# Reading: pcapng
# --------------------------------------------------------------------------------------------------------------

_PCAPNG_SHB: Final = b"\x0a\x0d\x0d\x0a"
_BLOCK_IDB: Final = 1
_BLOCK_OPB: Final = 2  # obsolete Packet Block, still written by old tools
_BLOCK_SPB: Final = 3
_BLOCK_EPB: Final = 6
_OPT_END: Final = 0
_OPT_IF_TSRESOL: Final = 9
_OPT_IF_TSOFFSET: Final = 14


@dataclass(frozen=True, slots=True)
class _Interface:
    linktype: int
    snaplen: int
    tsresol: int = 6  # the default: microseconds
    tsoffset_s: int = 0

    def to_ns(self, units: int) -> int:
        """Timestamp units of this interface to nanoseconds since the epoch."""
        if self.tsresol & 0x80:
            ns = (units * 1_000_000_000) >> (self.tsresol & 0x7F)
        else:
            exponent = self.tsresol
            ns = units * 10 ** (9 - exponent) if exponent <= 9 else units // 10 ** (exponent - 9)
        return ns + self.tsoffset_s * 1_000_000_000


def _parse_idb(body: bytes, endian: str) -> _Interface:
    linktype, _reserved, snaplen = struct.unpack_from(endian + "HHI", body)
    tsresol, tsoffset, pos = 6, 0, 8
    while pos + 4 <= len(body):
        code, length = struct.unpack_from(endian + "HH", body, pos)
        value = body[pos + 4 : pos + 4 + length]
        if code == _OPT_END:
            break
        if code == _OPT_IF_TSRESOL and length >= 1:
            tsresol = value[0]
        elif code == _OPT_IF_TSOFFSET and length >= 8:
            tsoffset = struct.unpack_from(endian + "q", value)[0]
        pos += 4 + ((length + 3) & ~3)
    return _Interface(linktype, snaplen, tsresol, tsoffset)


class _PcapngSection:
    """State of one pcapng section: its byte order and its interfaces (both reset at every SHB)."""

    def __init__(self, endian: str, stats: ReadStats, decoder: _PacketDecoder) -> None:
        self.endian = endian
        self.interfaces: list[_Interface] = []
        self.last_ns = 0
        self._stats = stats
        self._decoder = decoder

    def block(self, block_type: int, body: bytes) -> RecordedDatagram | None:
        endian = self.endian
        if block_type == _BLOCK_IDB:
            self.interfaces.append(_parse_idb(body, endian))
            return None
        if block_type == _BLOCK_EPB:
            iface_id, high, low, captured, _orig = struct.unpack_from(endian + "IIIII", body)
            return self._packet(iface_id, (high << 32) | low, body[20 : 20 + captured])
        if block_type == _BLOCK_OPB:
            iface_id, _drops, high, low, captured, _orig = struct.unpack_from(endian + "HHIIII", body)
            return self._packet(iface_id, (high << 32) | low, body[20 : 20 + captured])
        if block_type == _BLOCK_SPB:
            original = struct.unpack_from(endian + "I", body)[0]
            snaplen = self.interfaces[0].snaplen if self.interfaces else 0
            captured = min(original, snaplen or original, len(body) - 4)
            return self._packet(0, None, body[4 : 4 + captured])  # SPBs carry no timestamp
        return None  # name resolution, statistics, secrets, custom blocks

    def _packet(self, iface_id: int, units: int | None, frame: bytes) -> RecordedDatagram | None:
        if iface_id >= len(self.interfaces):
            self._stats.records += 1
            self._stats.malformed += 1
            return None
        iface = self.interfaces[iface_id]
        if units is not None:
            self.last_ns = iface.to_ns(units)
        return self._decoder.packet(iface.linktype, self.last_ns, frame)


def _read_pcapng(fh: BinaryIO, stats: ReadStats) -> Iterator[RecordedDatagram]:
    decoder = _PacketDecoder(stats)
    section: _PcapngSection | None = None
    while True:
        head = fh.read(8)
        if not head:
            break
        if len(head) < 8:
            stats.file_truncated = True
            break
        if head[:4] == _PCAPNG_SHB:
            byte_order = fh.read(4)
            endian = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}.get(byte_order)
            if endian is None:
                stats.malformed += 1
                break
            section = _PcapngSection(endian, stats, decoder)
            body_len = struct.unpack_from(endian + "I", head, 4)[0] - 12
        elif section is None:
            stats.malformed += 1
            break
        else:
            body_len = struct.unpack_from(section.endian + "I", head, 4)[0] - 8
        if body_len < 4 or body_len % 4 or body_len > _MAX_RECORD:
            stats.malformed += 1
            break
        body = fh.read(body_len)
        if len(body) < body_len:
            stats.file_truncated = True
            break
        if head[:4] == _PCAPNG_SHB:
            continue
        block_type = struct.unpack_from(section.endian + "I", head)[0]
        try:
            datagram = section.block(block_type, body[:-4])  # the last 4 bytes repeat the block length
        except struct.error:
            stats.malformed += 1
            continue
        if datagram is not None:
            yield datagram
    decoder.finish()
