"""OSC 1.1 stream framing (SLIP, RFC 1055, with an END byte on both sides of every packet)."""

from __future__ import annotations

from pythonosc import slip

END = 0xC0
ESC = 0xDB
ESC_END = 0xDC
ESC_ESC = 0xDD


def encode(packet: bytes) -> bytes:
    return slip.encode(packet)  # type: ignore[no-any-return]


class SlipDecoder:
    """Splits a TCP byte stream into packets. Keeps the unfinished tail between reads.

    A frame with a bad escape is dropped and reported through `errors`, and decoding resumes at the next END,
    which is the recovery property OSC 1.1 chose SLIP for.
    """

    def __init__(self, max_packet: int = 16 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._max = max_packet
        self.errors = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buf.extend(data)
        packets: list[bytes] = []
        while True:
            end = self._buf.find(END)
            if end < 0:
                if len(self._buf) > self._max:
                    self._buf.clear()
                    self.errors += 1
                break
            frame = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if not frame:
                continue
            try:
                packets.append(_unescape(frame))
            except ValueError:
                self.errors += 1
        return packets


def _unescape(frame: bytes) -> bytes:
    if ESC not in frame:
        return frame
    out = bytearray()
    it = iter(frame)
    for byte in it:
        if byte == ESC:
            nxt = next(it, None)
            if nxt == ESC_END:
                out.append(END)
            elif nxt == ESC_ESC:
                out.append(ESC)
            else:
                raise ValueError("bad SLIP escape")
        else:
            out.append(byte)
    return bytes(out)
