"""Hostile datagrams for the bridge: the attacks of issue 8 and random mutations of real traffic, seeded.

Used by the live test (tests/test_hostile_traffic.py) and the fuzz-rate benchmark (bench/bench_hostile.py): the
same generator, so the benchmark measures what the test proves harmless. Every datagram fits one UDP datagram on
macOS (at most 9,216 bytes). Nothing here changes state that a test relies on: no valid mapping or project
request is made on purpose (a mutation may produce one by chance, which is legitimate traffic).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterator

from oscbridge.osc.codec import encode_message
from oscbridge.protocol import (
    CHAT_REQUEST,
    PORT_CONFIRMED,
    REQUEST_PORT,
    RMS,
    RMS_RESPONSE,
    TELEMETRY,
    TONE_STARTED,
    TONE_STOPPED,
    UUID_CONFIRMED,
)

MAX_DATAGRAM = 9216
HANG_BUNDLE = bytes.fromhex("2362756e646c65000000000000000000fffffffc")  # issue 8 item 1


def _bundle(elements: list[bytes]) -> bytes:
    return b"#bundle\0" + struct.pack(">Q", 1) + b"".join(struct.pack(">i", len(e)) + e for e in elements)


def _nested(depth: int, inner: bytes) -> bytes:
    for _ in range(depth):
        inner = _bundle([inner])
    return inner


def _timetag_message(rng: random.Random) -> bytes:
    address = rng.choice([TONE_STARTED, TONE_STOPPED, RMS_RESPONSE, CHAT_REQUEST, "/bridge/ping"])
    head = encode_message(address, [])[:-4]  # the address, then our own type tags
    tags = rng.choice([",st", ",t", ",sst", ",ist"])
    body = b"".join(b"abc\0" if tag == "s" else struct.pack(">i", 1) if tag == "i"
                    else struct.pack(">Q", rng.getrandbits(64)) for tag in tags[1:])
    raw_tags = tags.encode() + b"\0" * (4 - len(tags) % 4)
    return head + raw_tags + body


def corpus() -> list[bytes]:
    """Well-formed datagrams of every kind the bridge reads: the mutation seeds."""
    temp_id = "43440ecde2c040a193edbfc32b76dde4"
    return [
        encode_message(REQUEST_PORT, [temp_id, -1, 50000], "sii"),
        encode_message(PORT_CONFIRMED, [temp_id, 9000, "bound"], "sis"),
        encode_message(UUID_CONFIRMED, [temp_id, "TR1", "confirmed"], "sss"),
        encode_message(TELEMETRY, ["TR1", 0.2, -20.0, -30.0, -40.0, -50.0], "sfffff"),
        encode_message(RMS, ["TR1", 0.2], "sf"),
        encode_message(RMS_RESPONSE, ["A1B2C3D4-0000-0000-0000-000000000000", temp_id, 0.3], "ssf"),
        encode_message(TONE_STARTED, [temp_id, 137.0], "sf"),
        encode_message(CHAT_REQUEST, [1, "make it louder"], "is"),
        encode_message("/bridge/ping", ["r1"]),
        encode_message("/bridge/status", ["r2"]),
        encode_message("/bridge/mapping/track", ["r3", "TR1"]),
        encode_message("/bridge/mapping/list", ["r4"]),
        encode_message("/bridge/levels", ["r5"]),
        encode_message("/bridge/debug/log", ["", "fuzz", "", "log", "x", "{}", "info"]),
        _bundle([encode_message("/bridge/ping", ["r6"]), encode_message("/bridge/status", ["r7"])]),
    ]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not buf:
            break
        at = rng.randrange(len(buf))
        choice = rng.random()
        if choice < 0.4:
            buf[at] = rng.getrandbits(8)
        elif choice < 0.55:
            del buf[at:]
        elif choice < 0.7:
            buf[at:at] = bytes(rng.getrandbits(8) for _ in range(rng.choice((1, 4))))
        elif choice < 0.85:
            buf[at:at + 4] = struct.pack(">i", rng.choice((-4, -1, 0, 3, 1 << 30, -(1 << 31))))
        else:
            buf[at:at] = bytes(rng.randrange(1, 256) for _ in range(rng.randint(1, 7)))  # junk in padding
    return bytes(buf[:MAX_DATAGRAM])


def hostile_datagrams(seed: int, count: int) -> Iterator[bytes]:
    """`count` hostile datagrams, the same ones for the same seed."""
    rng = random.Random(seed)
    seeds = corpus()
    ping = encode_message("/bridge/ping", ["deep"])
    makers: list[tuple[float, Callable[[], bytes]]] = [
        (0.02, lambda: HANG_BUNDLE),
        (0.04, lambda: _nested(rng.randint(2, 400), ping)[:MAX_DATAGRAM]),
        (0.02, lambda: b"#bundle\0" + b"\0" * 8 + (struct.pack(">i", 4) + b"xxxx") * rng.randint(1, 1000)),
        (0.05, lambda: _timetag_message(rng)),
        (0.06, lambda: encode_message("/bridge/project/open", ["", "Kick", "x"]).replace(
            b"Kick\0\0\0\0", b"Kick\0'; DROP TABLE sessions; --\0\0")),
        (0.05, lambda: rng.randbytes(rng.randint(0, 2048))),
        (0.04, lambda: b"/" + rng.randbytes(rng.randint(0, 600))),
        (0.04, lambda: encode_message(rng.choice(["/bridge/mapping/set", "/bridge/message/save", "/bridge/nope"]),
                                      ["", rng.choice([1, 2.5, "x" * rng.randint(0, 8000), None, b"\0"])])),
        (0.03, lambda: encode_message(TELEMETRY, ["XX" + str(rng.random()), 0.1, 1.0, 1.0, 1.0, 1.0], "sfffff")),
        (0.65, lambda: _mutate(rng, rng.choice(seeds))),
    ]
    weights = [w for w, _ in makers]
    for _ in range(count):
        (make,) = rng.choices([m for _, m in makers], weights)
        yield make()
