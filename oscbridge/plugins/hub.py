"""The plugin hub: the bridge's side of the AIplayer protocol (aiplayer-osc-protocol.md), as one component.

Receive path: every `/aiplayer/*` handler is synchronous and touches only memory. Telemetry (about 50 datagrams
a second per plugin) updates a small record per track and the sender's "last heard" time, and is forwarded raw
to subscribers; control messages also become debug rows and, when state changes, an instance write, both
queued for the writer.

Identity: a plugin sends everything from one socket, so its sender address links its tempID, its TR id and its
port; instances are indexed by tempID, TR id and sender. Only what the wire proves changes who holds a port: a
`port_confirmed` that matches an assignment, or an `rms_response` to a query id that was sent to that port (only
the plugin listening there can answer it). A probe answer proves where the plugin was when it read the probe: the
real plugin handles datagrams read on its old socket after it has moved (protocol note, Appendix B), so an answer
to a probe sent before a newer proof of the instance's port moves nothing. Anything else that does not fit is
counted, logged now and then, and at most triggers such a probe; it never rewrites the pool.

This module holds the handlers and builds the parts, each owning its state: the instances' state machine
(`instances.py`), the probes in flight (`probes.py`), liveness, re-adoption and calibration, the pool, the levels,
the fan-out and the debug traffic. Time comes from the clock it is given.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from oscbridge.clock import Clock
from oscbridge.config import Settings
from oscbridge.logs import RateLimitedWarning, get_logger
from oscbridge.osc.codec import Message
from oscbridge.plugins.adoption import Adoption, StoredPool
from oscbridge.plugins.calibration import Calibration
from oscbridge.plugins.fanout import Fanout
from oscbridge.plugins.instances import Instances
from oscbridge.plugins.levels import Levels, TrackLevel
from oscbridge.plugins.liveness import Liveness
from oscbridge.plugins.outbound import Outbound
from oscbridge.plugins.pool import PortPool, port_is_bindable
from oscbridge.plugins.probes import Probes, Query
from oscbridge.plugins.registry import MAX_INSTANCES, NEVER, Instance, InstanceRegistry, RegistryFull
from oscbridge.plugins.traffic import Traffic
from oscbridge.projects import Projects
from oscbridge.protocol import (
    CHAT_REQUEST,
    EVENT_CHAT_REQUEST,
    PORT_ASSIGNMENT,
    PORT_CONFIRMED,
    REQUEST_PORT,
    RMS,
    RMS_RESPONSE,
    RMS_TAGS,
    TELEMETRY,
    TELEMETRY_TAGS,
    TONE_STARTED,
    TONE_STOPPED,
    UUID_CONFIRMED,
)
from oscbridge.store.writes import Submit, WriteOp
from oscbridge.tasks import cancel_and_wait
from oscbridge.typedefs import INSTANCE_ID_MAX, PLUGIN_ID_PREFIX, Addr, PluginState, plugin_id_problem

log = get_logger("oscbridge.plugins.hub")

MAX_UNKNOWN_SENDERS = 1024

PluginHandler = Callable[[Message, Addr, bytes], None]
"""A handler of one plugin address: the message, its sender, and the whole datagram it came in (forwarded raw to
subscribers; one that starts with '#' was a bundle)."""


class PluginHub:
    def __init__(self, settings: Settings, clock: Clock, send: Callable[[bytes, Addr], None], projects: Projects,
                 submit: Submit, submit_best_effort: Callable[[WriteOp], int | None],
                 load_stored: Callable[[], Awaitable[StoredPool | None]]) -> None:
        """`send` sends a datagram from the bridge's socket; `submit` queues a write (instance and quarantine rows),
        `submit_best_effort` one that may be dropped (debug rows of the traffic)."""
        self.settings = settings
        self._clock = clock
        plugin_host = "127.0.0.1" if settings.host in ("", "0.0.0.0") else settings.host
        self.local: Addr = (settings.host, settings.osc_port)
        # Live instances hold a port: room for all of them plus as many forgotten ones (see MAX_INSTANCES).
        pool_size = settings.port_range_end - settings.port_range_start + 1
        self.registry = InstanceRegistry(max(MAX_INSTANCES, 2 * pool_size))
        self.pool = PortPool(settings.port_range_start, settings.port_range_end, partial(port_is_bindable, plugin_host))
        self.levels = Levels()
        self.fanout = Fanout(settings.subscription_ttl, settings.subscriber_max_errors)
        self.traffic = Traffic(projects.ids, submit_best_effort, settings.debug_rows_per_second,
                               settings.rejected_rows_per_second, clock)
        self.outbound = Outbound(send, self.traffic, self.local, plugin_host)
        self.probes = Probes(self.outbound, clock)
        self.instances = Instances(self.registry, self.pool, self.probes, self.traffic, self.fanout, submit, settings,
                                   clock)
        self.liveness = Liveness(self.registry, self.instances, settings)
        self.adoption = Adoption(self.registry, self.pool, self.instances, self.probes, self.outbound, self.traffic,
                                 load_stored, settings, clock)
        self.calibration = Calibration(self.registry, self.instances, self.probes, self.outbound, self.fanout,
                                       projects, settings, clock)
        # Telemetry senders not linked to an instance -> (TR id, when last heard): a re-adopted plugin's track id.
        self._unknown_senders: dict[Addr, tuple[str, float]] = {}
        self.counters: Counter[str] = Counter()
        self.rejected = 0
        self.telemetry = 0  # the hot counter, kept out of the Counter
        self._task: asyncio.Task[None] | None = None
        self._warn = RateLimitedWarning(log, "plugin_hub_anomaly")
        self._warn_stale = RateLimitedWarning(log, "plugin_stale_probe_answer")
        self._warn_rejected = RateLimitedWarning(log, "plugin_message_rejected")

    # -- the component's face -------------------------------------------------------------------------------------

    def plugin_handlers(self) -> dict[str, PluginHandler]:
        return {
            REQUEST_PORT: self._on_request_port,
            PORT_CONFIRMED: self._on_port_confirmed,
            UUID_CONFIRMED: self._on_uuid_confirmed,
            TELEMETRY: self._on_telemetry,
            RMS: self._on_rms,
            RMS_RESPONSE: self._on_rms_response,
            TONE_STARTED: self._on_tone_ack,
            TONE_STOPPED: self._on_tone_ack,
            CHAT_REQUEST: self._on_chat_request,
        }

    async def start(self) -> None:
        await self.adoption.readopt()
        await self.tick()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="oscbridge-plugin-hub")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self.fanout.close()

    async def _run(self) -> None:
        while True:
            await self._clock.sleep(self.settings.hub_tick)
            try:
                await self.tick()
            except Exception as exc:  # one bad tick must not end liveness for good
                log.exception("plugin_sweep_failed", error=str(exc))

    async def tick(self) -> None:
        """Liveness, and the expiry of everything that only lives for a while."""
        now = self._clock.monotonic()
        settings = self.settings
        self.liveness.sweep(now)
        self.probes.expire(now - 2 * settings.plugin_probe_timeout - settings.calibrate_window)
        for sender in [a for a, (_, heard) in self._unknown_senders.items() if now - heard > settings.plugin_silence]:
            del self._unknown_senders[sender]
        self.fanout.expire(now)
        self.levels.expire(now, settings.gone_retention)
        await self.adoption.tick(now)

    # -- the telemetry stream (hot) -------------------------------------------------------------------------------

    def _on_telemetry(self, message: Message, addr: Addr, raw: bytes) -> None:
        self._on_level(message, addr, raw, TELEMETRY_TAGS, TELEMETRY)

    def _on_rms(self, message: Message, addr: Addr, raw: bytes) -> None:
        self._on_level(message, addr, raw, RMS_TAGS, RMS)

    def _on_level(self, message: Message, addr: Addr, raw: bytes, shape: str, address: str) -> None:
        """`/aiplayer/telemetry ,sfffff` (rms and four bands) or `/aiplayer/rms ,sf`: the track's latest levels."""
        if not message.tags.startswith(shape) or raw[:1] == b"#":
            self._bad_shape(message, addr, raw, shape)
            return
        args = message.args
        level = self.levels.tracks.get(args[0]) or self._new_track(message, addr)
        if level is None:
            return
        now = self._clock.monotonic()
        level.rms = args[1]
        if len(shape) == 6:
            level.low, level.low_mid, level.high_mid, level.high = args[2], args[3], args[4], args[5]
        level.updated = now
        self._heard(args[0], addr, now)
        subs = self.fanout.route(address)
        if subs:
            self.fanout.send(subs, raw)

    def _heard(self, plugin_id: str, addr: Addr, now: float) -> None:
        self.telemetry += 1
        inst = self.registry.from_sender(addr)
        if inst is not None and inst.state == PluginState.IDENTIFIED and inst.plugin_id == plugin_id:
            inst.last_heard = now
        else:
            self._heard_unexpected(plugin_id, inst, addr, now)

    def _new_track(self, message: Message, addr: Addr) -> TrackLevel | None:
        plugin_id = message.args[0]
        problem = plugin_id_problem(plugin_id, "track id")
        if problem is not None:
            self._reject(message, addr, "bad_track_id", problem)
            return None
        level = self.levels.track(plugin_id)
        if level is None:
            self._reject(message, addr, "levels_full", f"more than {len(self.levels.tracks)} track ids")
        return level

    def _heard_unexpected(self, plugin_id: str, inst: Instance | None, addr: Addr, now: float) -> None:
        """Telemetry that does not come from the identified instance of that TR id: after a restart, from a plugin
        identified elsewhere, or from one the bridge had given up on."""
        if inst is None:
            known = self.registry.for_plugin(plugin_id)
            if known is None or not known.live:
                self.counters["unknown_track"] += 1
                self._warn(problem="telemetry for a track no known plugin carries", plugin_id=plugin_id,
                           sender=f"{addr[0]}:{addr[1]}", total=self.counters["unknown_track"])
            if addr in self._unknown_senders or len(self._unknown_senders) < MAX_UNKNOWN_SENDERS:
                self._unknown_senders[addr] = (plugin_id, now)
            self.adoption.want_discovery()  # find its port: a scan of listeners in the pool
            return
        inst.last_heard = now
        if not inst.live:
            if inst.port is not None and now - inst.probe_sent > self.settings.plugin_probe_timeout:
                self.instances.probe(inst)  # back from the dead? its answer re-adopts it
            return
        self.instances.streaming(inst, plugin_id)

    # -- port negotiation ---------------------------------------------------------------------------------------

    def _on_request_port(self, message: Message, addr: Addr, raw: bytes) -> None:
        args = self._args(message, addr, raw, "si")
        if args is None:
            return
        temp_id, preferred = args[0], args[1]
        response_port = args[2] if message.tags[2:3] == "i" else 0
        if not 0 < len(temp_id) <= INSTANCE_ID_MAX:
            self._reject(message, addr, "bad_instance_id", "the instance id must have 1 to 64 characters", True)
            return
        if response_port > 65535:
            self._reject(message, addr, "out_of_range_port", f"response port {response_port} is out of range", True)
            return
        if response_port <= 0:
            response_port = addr[1]  # what the app did; useless with the real plugin, but harmless
        inst = self.registry.get(temp_id)
        if inst is not None and inst.live:
            if inst.sender is not None and inst.sender != addr:
                # Two live instances with one tempID: the same port would make the second fail to bind and the
                # first lose its port (note 6.5 item 10). The newcomer is refused; the live one keeps its port.
                self._reject(message, addr, "duplicate_instance_id",
                             f"instance id already live on port {inst.port} from another sender", True)
                self._send_assignment(temp_id, -1, "error", (addr[0], response_port))
                return
            self._control_in(message, addr, raw)
            inst.response_port = response_port
            self._send_assignment(temp_id, inst.port or -1, "assigned", (addr[0], response_port))
            return
        if inst is None:
            try:
                inst = self.instances.new(temp_id)
            except RegistryFull as exc:
                self._reject(message, addr, "instances_full", f"no room for another plugin instance ({exc})", True)
                self._send_assignment(temp_id, -1, "error", (addr[0], response_port))
                return
        else:
            self.instances.set_plugin(inst, "")  # a new request means a fresh plugin: no track id yet
        self._control_in(message, addr, raw)
        self._unknown_senders.pop(addr, None)  # a new plugin that reuses a dead one's sender port has no track yet
        port = self.instances.allocate(temp_id, preferred if preferred in self.pool else None)
        self.instances.assigned(inst, addr, response_port, port)
        if port is None:
            self._send_assignment(temp_id, -1, "error", (addr[0], response_port))
        else:
            self._send_assignment(temp_id, port, "assigned", (addr[0], response_port))

    def _send_assignment(self, temp_id: str, port: int, status: str, dest: Addr) -> None:
        self.outbound.send(dest, PORT_ASSIGNMENT, [temp_id, port, status], "sis")

    def _on_port_confirmed(self, message: Message, addr: Addr, raw: bytes) -> None:
        args = self._args(message, addr, raw, "sis")
        if args is None:
            return
        temp_id, port, status = args[0], args[1], args[2]
        if status not in ("bound", "failed"):
            self._reject(message, addr, "bad_status", f"status {status[:40]!r} is neither bound nor failed", True)
            return
        if not 0 < port <= 65535 or not 0 < len(temp_id) <= INSTANCE_ID_MAX:
            self._reject(message, addr, "out_of_range_port", f"port {port} or the instance id is out of range", True)
            return
        placeholder = self.adoption.take_placeholder(port)
        if placeholder is not None:
            # Our unsolicited offer to a bootstrap port: whoever waited there says who it is.
            self._control_in(message, addr, raw)
            if status == "bound":
                self.instances.adopt(temp_id, port, addr, response_port=placeholder.ephemeral,
                                     note="re-adopted from its bootstrap port", carried=self._carried(addr))
            else:
                self.instances.quarantine(port, "a plugin could not bind it", placeholder.owner)
            return
        inst = self.registry.get(temp_id)
        if inst is None or inst.port != port or not inst.live:
            kind = "unknown_instance_id" if inst is None else "unassigned_port"
            self._reject(message, addr, kind, f"no assignment of port {port} to this instance is pending", True)
            if status == "bound" and port in self.pool:
                self.probes.send(port)  # whoever listens there answers with its own id; that answer is proof
            return
        self._control_in(message, addr, raw)
        self.instances.confirmed(inst, addr, status == "bound")

    def _carried(self, sender: Addr) -> str:
        """The track id `sender` streamed telemetry for just now, while it was unknown (a re-adopted plugin)."""
        carried, heard = self._unknown_senders.pop(sender, ("", NEVER))
        return carried if self._clock.monotonic() - heard < self.settings.plugin_silence else ""

    # -- probes and adoption --------------------------------------------------------------------------------------

    def _on_rms_response(self, message: Message, addr: Addr, raw: bytes) -> None:
        args = self._args(message, addr, raw, "ssf")
        if args is None:
            return
        query_id, temp_id, rms = args[0], args[1], args[2]
        if not 0 < len(temp_id) <= INSTANCE_ID_MAX:
            self._reject(message, addr, "bad_instance_id", "the instance id must have 1 to 64 characters", True)
            return
        self._control_in(message, addr, raw)
        query = self.probes.take(query_id)
        if query is None:
            self.counters["unknown_query"] += 1  # late (after the window) or not ours: proves nothing
            self.instances.heard(addr)
            return
        inst = self.registry.get(temp_id)
        if inst is not None and inst.port != query.port and inst.located_at > query.sent:
            self._stale_answer(inst, query, addr)
        else:
            inst = self.instances.adopt(temp_id, query.port, addr, proven_at=query.sent, carried=self._carried(addr))
        if query.round is not None:  # the level is current even when the port in the query is not
            query.round.add(temp_id, (query.port if inst.port is None else inst.port, rms))

    def _stale_answer(self, inst: Instance, query: Query, addr: Addr) -> None:
        """An answer to a probe of `query.port` that went out before the wire proved `inst` elsewhere: the plugin read
        it there and moved since (seen 53 ms after the confirmation of the new port). It is alive; nothing moves."""
        self.counters["stale_probe_answers"] += 1
        self.instances.heard(addr)
        self._warn_stale(instance_id=inst.instance_id, probed_port=query.port, port=inst.port,
                         ms_after_proof=round((self._clock.monotonic() - inst.located_at) * 1000),
                         total=self.counters["stale_probe_answers"])

    # -- identification, calibration acks, chat -------------------------------------------------------------------

    def _on_uuid_confirmed(self, message: Message, addr: Addr, raw: bytes) -> None:
        args = self._args(message, addr, raw, "sss")
        if args is None:
            return
        temp_id, plugin_id = args[0], args[1]
        if self.registry.get(temp_id) is None:
            self._reject(message, addr, "unknown_instance_id", "confirmation from an instance id never seen", True)
            return
        self._control_in(message, addr, raw)
        self.instances.heard(addr)
        if not self.calibration.confirmed(temp_id, plugin_id):
            self.counters["unmatched_confirmation"] += 1  # a late duplicate of a resend, or not ours

    def _on_tone_ack(self, message: Message, addr: Addr, raw: bytes) -> None:
        args = self._args(message, addr, raw, "sf" if message.address == TONE_STARTED else "s")
        if args is None:
            return
        self._control_in(message, addr, raw)
        self.instances.heard(addr)
        self.calibration.acked(message.address, args[0])

    def _on_chat_request(self, message: Message, addr: Addr, raw: bytes) -> None:
        """`,is [1, text]` as the real plugin sends it (the app dropped these), or `,ss [id, text]`."""
        args = self._args(message, addr, raw, "is", "ss")
        if args is None:
            return
        self._control_in(message, addr, raw)
        inst = self.instances.heard(addr)
        first = args[0]
        plugin_id = inst.plugin_id if inst is not None and inst.plugin_id else (
            first if isinstance(first, str) and first.startswith(PLUGIN_ID_PREFIX) else "")
        self.fanout.emit(EVENT_CHAT_REQUEST, [plugin_id, args[1]])

    # -- what the requests of api/plugins.py use ------------------------------------------------------------------

    def live_instance(self, plugin_id: str) -> Instance | None:
        """The live instance with a port that carries track id `plugin_id`."""
        inst = self.registry.for_plugin(plugin_id)
        return inst if inst is not None and inst.live and inst.port is not None else None

    def send_to(self, inst: Instance, address: str, args: list[Any], tags: str) -> None:
        """Sends a message to the port `inst` listens on (its own port, never a broadcast)."""
        self.outbound.send(self.outbound.dest(inst), address, args, tags)

    # -- shared helpers -----------------------------------------------------------------------------------------

    def _args(self, message: Message, addr: Addr, raw: bytes, *shapes: str) -> list[Any] | None:
        """The arguments if the type tags start with one of `shapes` (extra trailing arguments are tolerated, as
        the app did) and the message came alone (plugins never send bundles); else None, counted and logged."""
        if raw[:1] == b"#" or not any(message.tags.startswith(shape) for shape in shapes):
            self._bad_shape(message, addr, raw, "/".join(shapes))
            return None
        return message.args

    def _bad_shape(self, message: Message, addr: Addr, raw: bytes, expected: str) -> None:
        record = message.address not in (TELEMETRY, RMS)
        if raw[:1] == b"#":
            self._reject(message, addr, "bundle", "inside a bundle (plugins never send bundles)", record)
        else:
            self._reject(message, addr, "bad_type_tags", f"type tags ,{message.tags} (the plugin sends ,{expected})",
                         record)

    def _reject(self, message: Message, addr: Addr, kind: str, reason: str, record: bool = False) -> None:
        """Counts a plugin message that was refused, logs it now and then, and (control messages) stores it."""
        self.counters[kind] += 1
        self.rejected += 1
        self._warn_rejected(address=message.address, sender=f"{addr[0]}:{addr[1]}", reason=reason,
                            total=self.rejected)
        if record:
            self.traffic.datagram("osc_in", message, addr, self.local, "warning", rejected=reason)

    def _control_in(self, message: Message, addr: Addr, raw: bytes) -> None:
        """An accepted control message: a debug row, and the raw datagram to matching subscribers."""
        self.traffic.datagram("osc_in", message, addr, self.local)
        subs = self.fanout.route(message.address)
        if subs:
            self.fanout.send(subs, raw)

    def stats(self) -> dict[str, int]:
        """The hub's counters for `/bridge/stats`: what came in and out, what was refused, the pool, the fan-out."""
        values = {f"hub.{k}": v for k, v in (self.counters + self.instances.counters).items()}
        values.update(self.adoption.stats())
        values.update(self.traffic.stats())
        values.update(self.fanout.stats())
        values.update(self.pool.stats(self._clock.time()))
        values.update({
            "router.plugin_rejected": self.rejected, "hub.telemetry": self.telemetry, "hub.sent": self.outbound.sent,
            "hub.queries_in_flight": len(self.probes), "hub.tracks": len(self.levels.tracks),
            "hub.instances": len(self.registry),
        })
        return values
