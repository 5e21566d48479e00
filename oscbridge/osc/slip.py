"""OSC 1.1 stream framing (SLIP, RFC 1055, with an END byte on both sides of every packet).

Everything a TCP client sends goes through `SlipDecoder` first, so the decoder is written for hostile input: it
costs O(bytes fed) whatever arrives (each chunk is split on END once, at C speed; bytes already held are never
scanned again), unescaping is two `bytes.replace` calls after a check made with `bytes.count`, and it never holds
more than `max_frame` bytes of an unfinished frame.
"""

from __future__ import annotations

END = 0xC0
ESC = 0xDB
ESC_END = 0xDC
ESC_ESC = 0xDD

_END = bytes([END])
_ESC = bytes([ESC])
_ESCAPED_END = bytes([ESC, ESC_END])
_ESCAPED_ESC = bytes([ESC, ESC_ESC])

# The largest legitimate request is a /bridge/debug/log whose content and payload hold 1,000,000 characters each:
# at most 8,000,000 bytes of UTF-8 (4 bytes a character). Escaping cannot make it longer: 0xC0 never occurs in
# UTF-8 and 0xDB only as the lead byte of a 2-byte character, which becomes 3 bytes. A /bridge/message/save of
# 1 MiB characters is at most ~4.2 MB. 8 MiB (8,388,608 bytes) leaves ~380 kB for the other arguments and OSC.
MAX_FRAME = 8 * 1024 * 1024


def encode(packet: bytes) -> bytes:
    """The packet as one SLIP frame: END, the packet with END and ESC escaped, END."""
    return _END + packet.replace(_ESC, _ESCAPED_ESC).replace(_END, _ESCAPED_END) + _END


class FrameTooLarge(ValueError):
    """A frame grew past the decoder's `max_frame` (the connection should be closed).

    Raised at the end of the `feed` call in which it happened, once per oversized frame. `size` is how many bytes of
    the frame had arrived (more than the limit; an endless frame has no final size). `packets` holds the good
    packets of that same call, in order, so that nothing decoded is lost. The decoder itself stays usable: it
    drops the frame's bytes up to its END and decodes the frames after it.
    """

    def __init__(self, size: int, limit: int, packets: list[bytes]) -> None:
        super().__init__(f"SLIP frame of at least {size} bytes is over the limit of {limit}")
        self.size = size
        self.packets = packets


class SlipDecoder:
    """Splits a TCP byte stream into packets. Keeps the unfinished frame between reads (at most `max_frame` bytes).

    A frame with a bad escape (ESC followed by anything but ESC_END or ESC_ESC, or ESC at the end) is dropped and
    counted in `bad_escapes`, and decoding resumes at the next END, which is the recovery property OSC 1.1 chose
    SLIP for. A frame over `max_frame` bytes (counted before unescaping) raises `FrameTooLarge`; the only error
    `feed` raises.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()  # the unfinished frame
        self._skipping = False  # inside an oversized frame: drop bytes until its END
        self.bad_escapes = 0
        self.frames_too_large = 0

    @property
    def buffered(self) -> int:
        """Bytes held of the unfinished frame."""
        return len(self._buf)

    @property
    def errors(self) -> int:
        """Frames dropped for any reason."""
        return self.bad_escapes + self.frames_too_large

    def feed(self, data: bytes) -> list[bytes]:
        pieces = data.split(_END)
        last = len(pieces) - 1
        packets: list[bytes] = []
        too_large = 0
        for i, piece in enumerate(pieces):
            # The first piece continues the unfinished frame; every END starts a new one; the last is unfinished.
            if i == 0 and self._skipping:
                self._skipping = i == last
                continue
            size = len(piece) + (len(self._buf) if i == 0 else 0)
            if size > self.max_frame:
                self.frames_too_large += 1
                too_large = too_large or size
                self._buf.clear()
                self._skipping = i == last
                continue
            if i == last:
                self._buf += piece
                break
            if i == 0 and self._buf:
                piece = bytes(self._buf) + piece
                self._buf.clear()
            if piece:
                packet = _unescape(piece)
                if packet is None:
                    self.bad_escapes += 1
                else:
                    packets.append(packet)
        if too_large:
            raise FrameTooLarge(too_large, self.max_frame, packets)
        return packets


def _unescape(frame: bytes) -> bytes | None:
    """The frame with its escapes undone, or None when an ESC is not followed by ESC_END or ESC_ESC.

    Every ESC is valid exactly when the ESCs equal the ESC_END pairs plus the ESC_ESC pairs (the pairs cannot
    overlap), so the check is three C-speed counts. Replacing ESC_END pairs first cannot create a new ESC_ESC pair:
    in a valid frame every ESC is followed by its own partner byte.
    """
    escapes = frame.count(_ESC)
    if not escapes:
        return frame
    if escapes != frame.count(_ESCAPED_END) + frame.count(_ESCAPED_ESC):
        return None
    return frame.replace(_ESCAPED_END, _END).replace(_ESCAPED_ESC, _ESC)
