"""A simulated AIplayer plugin that speaks the v0.8 OSC protocol exactly as the real JUCE plugin does.

The bridge must cope with the real plugin, bugs included, so this simulator copies its behaviour rather than
the protocol's intent (see `aiplayer-osc-protocol.md`, sections 1-3 and 6):

* one sender socket on an OS-chosen port, used for everything the plugin sends, and that never reads;
* one receiver: first the first free port of 50000, 50100, ... 59900, then the assigned port;
* exactly one `request_port`, never retried;
* `port_assignment` is taken whoever it was meant for (the plugin does not look at the tempID); the old
  receiver is closed, 50 ms pass, and if the new port cannot be bound the plugin says "failed" and is deaf;
* telemetry every 41 ms once it is both bound and identified, `/aiplayer/telemetry` then `/aiplayer/rms`;
  nothing but closing the plugin stops it;
* strict argument checks (`start_tone` with ints, `set_parameter` with an int value are ignored), a parser
  as strict as JUCE's (zero padding, only `i f s b r` tags), bundles dropped;
* optionally (`SimConfig.message_thread`) one message thread, as in the real plugin (Appendix B): whatever the
  receivers read waits in one queue and is handled in arrival order, the 50 ms rebind pause blocks that thread,
  and what was read on the old socket before a move is handled after it (a probe of the old port is answered
  once the plugin listens on the new one). `hold()` / `release()` block that thread like a busy host.

A small levels model (tone, mute, signal, GAIN) makes calibration testable: a muted strip is not rendered by
the host, so its RMS and bands freeze at the last values it rendered.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import struct
import uuid
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

from pythonosc.osc_message import OscMessage, ParseError
from pythonosc.osc_message_builder import OscMessageBuilder

from oscbridge.logs import get_logger
from oscbridge.protocol import (  # the addresses of the plugin's Constants.h
    CHAT_REQUEST,
    CHAT_RESPONSE,
    EPHEMERAL_BASE,
    EPHEMERAL_COUNT,
    EPHEMERAL_STEP,
    PARAMETERS,
    PORT_ASSIGNMENT,
    PORT_CONFIRMED,
    QUERY_RMS,
    REQUEST_PORT,
    RMS,
    RMS_RESPONSE,
    SET_PARAMETER,
    START_TONE,
    STOP_TONE,
    TELEMETRY,
    TONE_STARTED,
    TONE_STATUS,
    TONE_STOPPED,
    TRACK_UUID_ASSIGNMENT,
    UUID_CONFIRMED,
)

log = get_logger(__name__)

SENT_KEPT: Final = 4096  # latest sent messages a plugin keeps (about 3 minutes of telemetry)
SILENCE_RMS: Final = 1e-5  # sqrt(0 + 1e-10): what AudioMetrics reports for digital silence
BAND_FLOOR_DB: Final = -100.0
SILENCE_BANDS: Final = (BAND_FLOOR_DB,) * 4
BAND_EDGES_HZ: Final = (250.0, 2000.0, 8000.0)  # upper edges of bands 0-2; band 3 runs to 20 kHz
GAIN_RANGE_DB: Final = PARAMETERS["GAIN"]
# The 137 Hz / -10 dB reference tone gives about [-16.0, -53.6, -100, -100]: the tone's own band sits 6 dB below
# its level (Hann window, magnitude/512), and window leakage puts the next band up 43.6 dB below it.
_TONE_MAIN_BAND_OFFSET_DB: Final = -6.0
_TONE_LEAK_BAND_OFFSET_DB: Final = -43.6
_JUCE_TAGS: Final = frozenset("ifsbr")
# How long the message thread spends on each datagram: the real plugin handles back-to-back assignments about
# 54 ms apart, the 50 ms rebind pause plus about 4 ms (Appendix B).
MESSAGE_DELAY: Final = 0.004

PluginState = Literal["new", "requesting", "assigned", "bound", "failed", "deaf"]
Bands = tuple[float, float, float, float]
TypedArg = tuple[str, Any]


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Where a simulated plugin sends and listens, and its timings. Defaults are the real plugin's."""

    bridge_host: str = "127.0.0.1"
    bridge_port: int = 8999
    listen_host: str = "127.0.0.1"  # the real receiver binds all interfaces; loopback keeps tests private
    ephemeral_base: int = EPHEMERAL_BASE
    ephemeral_step: int = EPHEMERAL_STEP
    ephemeral_count: int = EPHEMERAL_COUNT
    telemetry_interval: float = 0.041  # JUCE startTimerHz(24)
    rebind_delay: float = 0.05  # OSCManager::bindReceiver sleeps this long after closing the old receiver
    start_muted: bool = True  # calibration mutes every track before the tone starts
    signal_rms: float = SILENCE_RMS
    # The real plugin's message thread (see the module docstring). Off: each datagram is handled as it arrives.
    message_thread: bool = False
    message_delay: float = MESSAGE_DELAY

    def ephemeral_candidates(self) -> Iterator[int]:
        """The bootstrap ports in the order the plugin tries them."""
        for index in range(self.ephemeral_count):
            yield self.ephemeral_base + index * self.ephemeral_step


# --------------------------------------------------------------------------------------------------------------
# Wire format
# --------------------------------------------------------------------------------------------------------------


def build_message(address: str, *args: TypedArg) -> bytes:
    """One OSC datagram with explicit type tags, so a Python int can never turn a float32 field into `i`."""
    builder = OscMessageBuilder(address=address)
    for tag, value in args:
        builder.add_arg(value, tag)
    data: bytes = builder.build().dgram
    return data


def _padded_string_end(data: bytes, pos: int) -> int | None:
    """End of the OSC string at `pos` if it is null-terminated and zero-padded to 4 bytes, as JUCE demands."""
    try:
        nul = data.index(b"\x00", pos)
    except ValueError:
        return None
    end = (nul + 4) & ~3
    if end > len(data) or any(data[nul:end]):
        return None
    return end


def _juce_type_tags(data: bytes) -> str | None:
    """The type tags of a datagram that JUCE's OSCInputStream would accept, else None.

    JUCE throws (and the receiver silently drops the datagram) on a missing or non-zero pad, a missing type tag
    string, a tag outside `i f s b r`, an argument that runs past the end, or bytes left over after the last
    argument (`readMessageWithCheckedSize` wants the message to fill the datagram exactly).
    """
    if not data.startswith(b"/"):
        return None
    pos = _padded_string_end(data, 0)
    if pos is None or data[pos : pos + 1] != b",":
        return None
    end = _padded_string_end(data, pos)
    if end is None:
        return None
    tags = data[pos + 1 : data.index(b"\x00", pos)].decode("ascii", "replace")
    pos = end
    for tag in tags:
        if tag not in _JUCE_TAGS:
            return None
        if tag == "s":
            next_pos = _padded_string_end(data, pos)
        elif tag == "b":
            if pos + 4 > len(data):
                return None
            size = struct.unpack_from(">i", data, pos)[0]
            next_pos = pos + 4 + ((size + 3) & ~3) if size >= 0 else None
        else:
            next_pos = pos + 4
        if next_pos is None or next_pos > len(data):
            return None
        pos = next_pos
    return tags if pos == len(data) else None


def parse_like_juce(data: bytes) -> tuple[str, list[TypedArg]] | None:
    """`(address, [(tag, value), ...])` for a datagram the real plugin would hand to its handlers, else None.

    Bundles are parsed by JUCE but ignored by the plugin (it only overrides `oscMessageReceived`), so they are
    dropped here too.
    """
    if data.startswith(b"#bundle"):
        return None
    tags = _juce_type_tags(data)
    if tags is None:
        return None
    try:
        message = OscMessage(data)
    except (ParseError, ValueError):
        return None
    params = list(message.params)
    if len(params) != len(tags):
        return None
    return str(message.address), list(zip(tags, params, strict=True))


# --------------------------------------------------------------------------------------------------------------
# Levels model
# --------------------------------------------------------------------------------------------------------------


def _power_sum_db(a: float, b: float) -> float:
    if a <= BAND_FLOOR_DB:
        return b
    if b <= BAND_FLOOR_DB:
        return a
    return 10.0 * math.log10(10.0 ** (a / 10.0) + 10.0 ** (b / 10.0))


def tone_bands(frequency: float, level_db: float) -> Bands:
    """Band energies of a sine as the plugin's 4-band analyser reports them (approximation around the
    137 Hz / -10 dB reference; frequencies outside 20 Hz-20 kHz give nothing)."""
    bands = [BAND_FLOOR_DB] * 4
    if 20.0 <= frequency <= 20000.0:
        index = sum(1 for edge in BAND_EDGES_HZ if frequency >= edge)
        bands[index] = level_db + _TONE_MAIN_BAND_OFFSET_DB
        if index < 3:
            bands[index + 1] = level_db + _TONE_LEAK_BAND_OFFSET_DB
    floored = [max(BAND_FLOOR_DB, b) for b in bands]
    return floored[0], floored[1], floored[2], floored[3]


# --------------------------------------------------------------------------------------------------------------
# The plugin
# --------------------------------------------------------------------------------------------------------------


class _ReceiverProtocol(asyncio.DatagramProtocol):
    def __init__(self, plugin: SimulatedPlugin) -> None:
        self._plugin = plugin

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._plugin._on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        log.debug("sim_receiver_error", error=str(exc))


class SimulatedPlugin:
    """One AIplayer instance. `await start()` binds and sends `request_port`; `await close()` ends it silently
    (the real plugin sends no goodbye).

    Public attributes are meant to be read (and the levels ones set) by tests:
    `temp_id`, `state`, `port` (assigned port once bound), `ephemeral_port`, `listening_port` (None = deaf),
    `track_id`, `sender_port`, `received` / `sent` (lists of (address, args)), `datagrams` (the bytes of every
    datagram its receivers read, parsed or not), `dropped` (datagrams JUCE would
    not parse), `parameters`, `chat_responses`, `tone_on`, `muted`, `signal_rms`, `signal_bands`, and with a
    message thread `queued` (read, not handled yet; `received` lists what was handled).
    """

    def __init__(self, config: SimConfig | None = None, *, temp_id: str | None = None) -> None:
        self.config = config if config is not None else SimConfig()
        self.temp_id = temp_id if temp_id is not None else uuid.uuid4().hex  # like juce::Uuid().toString()
        self.state: PluginState = "new"
        self.port: int | None = None
        self.ephemeral_port: int | None = None
        self.listening_port: int | None = None
        self.track_id: str | None = None
        self.sender_port: int | None = None
        self.sender_connected = False
        self.closed = False
        self.received: list[tuple[str, list[Any]]] = []
        self.datagrams: list[bytes] = []
        # Telemetry alone is 24 messages a second: a plugin keeps its latest sends for tests to inspect and counts
        # the rest, so an `oscbridge simulate` left running for hours stays the same size.
        self.sent: deque[tuple[str, list[Any]]] = deque(maxlen=SENT_KEPT)
        self.sent_counts: Counter[str] = Counter()
        self.dropped = 0
        self.parameters: dict[str, float] = {}
        self.chat_responses: list[str] = []
        self.tone_on = False
        self.tone_frequency = 0.0
        self.tone_level_db = 0.0
        self.signal_rms = self.config.signal_rms
        self.signal_bands: Bands = SILENCE_BANDS
        self._muted = self.config.start_muted
        self._frozen: tuple[float, Bands] = (SILENCE_RMS, SILENCE_BANDS)
        self._sender: socket.socket | None = None
        self._bridge_addr: tuple[Any, ...] = (self.config.bridge_host, self.config.bridge_port)
        self._receiver: asyncio.DatagramTransport | None = None
        self._receiver_sock: socket.socket | None = None
        self._telemetry: asyncio.Task[None] | None = None
        # The message thread: what the receivers read, the messages it may still handle (None: no limit), whether
        # it is handling one now, and the port the assignment it is handling moves to.
        self._inbox: deque[tuple[str, list[TypedArg]]] = deque()
        self._allowance: int | None = None
        self._handling = False
        self._rebind_to: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._handlers: dict[str, Callable[[list[TypedArg]], None]] = {
            PORT_ASSIGNMENT: self._on_port_assignment,
            TRACK_UUID_ASSIGNMENT: self._on_track_assignment,
            SET_PARAMETER: self._on_set_parameter,
            QUERY_RMS: self._on_query_rms,
            START_TONE: self._on_start_tone,
            STOP_TONE: self._on_stop_tone,
            TONE_STATUS: lambda args: None,  # routed to parseToneControl, which does nothing for it
            CHAT_RESPONSE: self._on_chat_response,
        }

    def __repr__(self) -> str:
        return (
            f"SimulatedPlugin({self.temp_id[:8]}, state={self.state}, port={self.port}, "
            f"ephemeral={self.ephemeral_port}, track={self.track_id})"
        )

    # ---- life cycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """What the plugin constructor does: open the sender, bind the first free bootstrap port, ask once."""
        if self.state != "new":
            raise RuntimeError("a simulated plugin starts only once")
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.config.bridge_host, self.config.bridge_port, type=socket.SOCK_DGRAM)
        family, _, _, _, self._bridge_addr = infos[0]
        if self.config.message_thread:
            self._spawn(self._message_thread())
        sender = socket.socket(family, socket.SOCK_DGRAM)
        sender.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        sender.setblocking(False)
        self._sender, self.sender_port, self.sender_connected = sender, sender.getsockname()[1], True
        for candidate in self.config.ephemeral_candidates():
            if await self._listen(candidate):
                self.ephemeral_port = candidate
                break
        else:
            log.error("sim_no_ephemeral_port", temp_id=self.temp_id)  # "Failed to bind to ephemeral port"
            self._set_state("deaf")
            return
        self._set_state("requesting")
        self._send(REQUEST_PORT, ("s", self.temp_id), ("i", -1), ("i", self.ephemeral_port), fatal=True)

    async def close(self) -> None:
        """Destroys the instance: telemetry stops, both sockets close. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        tasks = [t for t in (self._telemetry, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._close_receiver()
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        self.sender_connected = False
        await asyncio.sleep(0)  # let the transport release its socket before the caller reuses the port
        self._notify()

    async def __aenter__(self) -> SimulatedPlugin:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- things a test or a user does ------------------------------------------------------------------------

    def hold(self) -> None:
        """Blocks the message thread (a busy host): datagrams are still read and queued, none is handled, no
        telemetry goes out. Needs `SimConfig(message_thread=True)`."""
        self._need_message_thread()
        self._allowance = 0

    def release(self, count: int | None = None) -> None:
        """Lets the message thread run again: `count` more messages (then it is held again), or all."""
        self._need_message_thread()
        self._allowance = count
        self._notify()

    @property
    def queued(self) -> list[tuple[str, list[Any]]]:
        """What the receivers read that the message thread has not handled yet, oldest first."""
        return [(address, [value for _, value in args]) for address, args in self._inbox]

    def _need_message_thread(self) -> None:
        if not self.config.message_thread:
            raise RuntimeError("only a plugin with SimConfig(message_thread=True) has a message thread to hold")

    def send_chat(self, text: str) -> bool:
        """The user pressed send in the plugin editor: `,is [1, text]` (the app expects `,ss` and drops it)."""
        return self._send(CHAT_REQUEST, ("i", 1), ("s", text))

    async def wait_for(self, predicate: Callable[[SimulatedPlugin], bool], timeout: float = 2.0) -> None:
        """Waits until `predicate(self)` holds; re-checked after every datagram in or out and every state change.
        Raises TimeoutError naming the plugin's state."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self._changed
            if predicate(self):
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout}s: {self!r}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def received_args(self, address: str) -> list[list[Any]]:
        """The argument lists of every received message with this address, oldest first."""
        return [args for addr, args in self.received if addr == address]

    def sent_args(self, address: str) -> list[list[Any]]:
        """The argument lists of the latest `SENT_KEPT` messages this plugin sent with this address, oldest first."""
        return [args for addr, args in self.sent if addr == address]

    # ---- levels ----------------------------------------------------------------------------------------------

    @property
    def muted(self) -> bool:
        """Whether the channel strip is muted. The host stops rendering a muted strip, so its levels freeze."""
        return self._muted

    @muted.setter
    def muted(self, value: bool) -> None:
        if value and not self._muted:
            self._frozen = self._live_levels()
        self._muted = value

    @property
    def gain_db(self) -> float:
        """The GAIN parameter as the plugin applies it, clamped to -60..0 dB."""
        low, high = GAIN_RANGE_DB
        return min(high, max(low, self.parameters.get("GAIN", 0.0)))

    def levels(self) -> tuple[float, Bands]:
        """(linear RMS, four band energies in dB) as the plugin would report them right now."""
        return self._frozen if self._muted else self._live_levels()

    @property
    def rms(self) -> float:
        return self.levels()[0]

    def _live_levels(self) -> tuple[float, Bands]:
        gain_db = self.gain_db
        gain = 10.0 ** (gain_db / 20.0)
        mean_square = max(self.signal_rms**2 - 1e-10, 0.0) * gain * gain
        bands = [b + gain_db if b > BAND_FLOOR_DB else BAND_FLOOR_DB for b in self.signal_bands]
        if self.tone_on:
            amplitude = 10.0 ** (self.tone_level_db / 20.0)
            mean_square += amplitude * amplitude / 2.0
            tone = tone_bands(self.tone_frequency, self.tone_level_db)
            bands = [_power_sum_db(a, b) for a, b in zip(bands, tone, strict=True)]
        b0, b1, b2, b3 = (max(BAND_FLOOR_DB, b) for b in bands)
        return math.sqrt(mean_square + 1e-10), (b0, b1, b2, b3)

    # ---- receiving -------------------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes) -> None:
        if self._receiver is None:
            return
        self.datagrams.append(data)
        parsed = parse_like_juce(data)
        if parsed is None:
            self.dropped += 1
        elif self.config.message_thread:
            self._inbox.append(parsed)
        else:
            self._handle(*parsed)
        self._notify()

    def _handle(self, address: str, args: list[TypedArg]) -> None:
        self.received.append((address, [value for _, value in args]))
        handler = self._handlers.get(address)
        if handler is None:
            log.warning("sim_unhandled_message", temp_id=self.temp_id, address=address)
        else:
            handler(args)

    @property
    def _thread_busy(self) -> bool:
        return self.config.message_thread and (self._handling or self._allowance == 0)

    async def _message_thread(self) -> None:
        """One message at a time, in the order the receivers read them, whichever socket that was."""
        while True:
            changed = self._changed
            if not self._inbox or self._allowance == 0:
                await changed.wait()
                continue
            if self._allowance is not None:
                self._allowance -= 1
            self._handling = True
            try:
                await asyncio.sleep(self.config.message_delay)
                self._handle(*self._inbox.popleft())
                if self._rebind_to is not None:
                    port, self._rebind_to = self._rebind_to, None
                    await self._move_to(port)  # bindReceiver sleeps on the message thread: nothing else runs
            finally:
                self._handling = False
            self._notify()

    def _on_port_assignment(self, args: list[TypedArg]) -> None:
        if [tag for tag, _ in args] != ["s", "i", "s"]:
            log.warning("sim_invalid_port_assignment", temp_id=self.temp_id)
            return
        # args[0] (the tempID) is not checked: PluginProcessor passes its own id to PortManager.
        port, status = int(args[1][1]), str(args[2][1])
        if status == "assigned" and port > 0:
            self._set_state("assigned")
            self._close_receiver()
            if self.config.message_thread:
                self._rebind_to = port  # the message thread moves once this handler returns
            else:
                self._spawn(self._move_to(port))
        else:
            log.error("sim_port_assignment_failed", temp_id=self.temp_id, status=status)
            self._set_state("failed")  # the receiver stays where it is

    async def _move_to(self, port: int) -> None:
        await asyncio.sleep(self.config.rebind_delay)
        if self.closed:
            return
        if await self._listen(port):
            self.port = port
            self._set_state("bound")
            self._send(PORT_CONFIRMED, ("s", self.temp_id), ("i", port), ("s", "bound"))
            if self.track_id:
                self._start_telemetry()
            return
        self._send(PORT_CONFIRMED, ("s", self.temp_id), ("i", port), ("s", "failed"))
        self.port = None  # PortManager::reset(); the bootstrap socket is already gone, so nothing listens now
        log.error("sim_deaf", temp_id=self.temp_id, port=port)
        self._set_state("deaf")

    def _on_track_assignment(self, args: list[TypedArg]) -> None:
        track = next((v for tag, v in args if tag == "s" and str(v).startswith("TR")), None)
        if len(args) < 2 or track is None:
            log.warning("sim_unparsed_track_assignment", temp_id=self.temp_id)
            return
        self.track_id = str(track)
        self._send(UUID_CONFIRMED, ("s", self.temp_id), ("s", self.track_id), ("s", "confirmed"))
        if self.state == "bound":
            self._start_telemetry()

    def _on_set_parameter(self, args: list[TypedArg]) -> None:
        if [tag for tag, _ in args] != ["s", "f"]:
            return
        name, value = str(args[0][1]), float(args[1][1])
        if name != "GAIN":
            log.error("sim_unknown_parameter", temp_id=self.temp_id, parameter=name)  # kept anyway, for tests
        self.parameters[name] = value

    def _on_query_rms(self, args: list[TypedArg]) -> None:
        if [tag for tag, _ in args] == ["s"]:
            self._send(RMS_RESPONSE, ("s", args[0][1]), ("s", self.temp_id), ("f", self.rms))

    def _on_start_tone(self, args: list[TypedArg]) -> None:
        if [tag for tag, _ in args] != ["f", "f"]:
            return  # ints are rejected without a reply
        self.tone_frequency, self.tone_level_db = float(args[0][1]), float(args[1][1])
        self.tone_on = True
        self._send(TONE_STARTED, ("s", self.temp_id), ("f", self.tone_frequency))

    def _on_stop_tone(self, args: list[TypedArg]) -> None:
        self.tone_on = False
        self._send(TONE_STOPPED, ("s", self.temp_id))

    def _on_chat_response(self, args: list[TypedArg]) -> None:
        if [tag for tag, _ in args] == ["s"]:
            self.chat_responses.append(str(args[0][1]))

    # ---- telemetry -------------------------------------------------------------------------------------------

    def _start_telemetry(self) -> None:
        """(Re)starts the 41 ms timer; like JUCE's startTimerHz, the first tick comes one period later."""
        if self._telemetry is not None:
            self._telemetry.cancel()
        self._telemetry = asyncio.get_running_loop().create_task(self._telemetry_loop())

    async def _telemetry_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.telemetry_interval
        due = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            while self._thread_busy:  # a JUCE timer fires on the message thread, late if that is busy
                await self._changed.wait()
            self._send_telemetry_now()
            due += interval
            if due < loop.time():  # a late timer does not fire the missed ticks
                due = loop.time() + interval

    def _send_telemetry_now(self) -> None:
        if not self.track_id:
            return  # TelemetryData::isValid refuses a message without a track id
        rms, bands = self.levels()
        sent = self._send(TELEMETRY, ("s", self.track_id), ("f", rms), *(("f", b) for b in bands), fatal=True)
        if sent:
            self._send(RMS, ("s", self.track_id), ("f", rms))

    # ---- sockets ---------------------------------------------------------------------------------------------

    async def _listen(self, port: int) -> bool:
        """Binds the receiver to `port` (no SO_REUSEADDR, so a port in use fails as it does for JUCE)."""
        host = self.config.listen_host
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            return False
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _ReceiverProtocol(self), sock=sock)
        self._receiver, self._receiver_sock, self.listening_port = transport, sock, port
        return True

    def _close_receiver(self) -> None:
        if self._receiver is None:
            return
        if self.config.message_thread and not self.closed:
            self._drain_receiver()
        self._receiver.close()
        self._receiver, self._receiver_sock, self.listening_port = None, None, None

    def _drain_receiver(self) -> None:
        """Queues what already arrived on the receiver about to close: JUCE's receiver thread reads each datagram
        as it arrives, so the message thread handles it later even though the socket is gone by then."""
        assert self._receiver_sock is not None
        while True:
            try:
                data = self._receiver_sock.recv(65536)
            except OSError:  # BlockingIOError: nothing left
                return
            self._on_datagram(data)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send(self, address: str, *args: TypedArg, fatal: bool = False) -> bool:
        """Sends from the one sender socket. A failed send of a port request or telemetry message leaves the
        sender 'disconnected' for good, as OSCManager does; every later send is then refused."""
        if self._sender is None or not self.sender_connected:
            return False
        data = build_message(address, *args)
        try:
            self._sender.sendto(data, self._bridge_addr)
        except OSError as exc:
            log.error("sim_send_failed", temp_id=self.temp_id, address=address, error=str(exc))
            if fatal:
                self.sender_connected = False
            return False
        self.sent.append((address, [value for _, value in args]))
        self.sent_counts[address] += 1
        self._notify()
        return True

    def _set_state(self, state: PluginState) -> None:
        self.state = state
        log.info("sim_state", temp_id=self.temp_id, state=state, port=self.listening_port)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class PluginFleet:
    """N simulated plugins created one after another, as Logic creates the instances of a project.

    The spacing matters: each new instance takes the first bootstrap port that is still free, so instances
    started before the previous one moved to its assigned port end up on 50000, 50100, 50200, ...
    """

    def __init__(self, count: int, config: SimConfig | None = None, *, interval: float = 0.02) -> None:
        self.config = config if config is not None else SimConfig()
        self.interval = interval
        self.plugins = [SimulatedPlugin(self.config) for _ in range(count)]

    async def start(self) -> None:
        for index, plugin in enumerate(self.plugins):
            if index and self.interval > 0:
                await asyncio.sleep(self.interval)
            await plugin.start()

    async def close(self) -> None:
        await asyncio.gather(*(plugin.close() for plugin in self.plugins))

    async def wait_all(self, predicate: Callable[[SimulatedPlugin], bool], timeout: float = 2.0) -> None:
        """Waits until every plugin satisfies `predicate`, within one shared timeout."""
        await asyncio.gather(*(plugin.wait_for(predicate, timeout) for plugin in self.plugins))

    async def __aenter__(self) -> PluginFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __iter__(self) -> Iterator[SimulatedPlugin]:
        return iter(self.plugins)

    def __len__(self) -> int:
        return len(self.plugins)

    def __getitem__(self, index: int) -> SimulatedPlugin:
        return self.plugins[index]
