"""The plugin hub: the bridge's side of the AIplayer protocol (aiplayer-osc-protocol.md), as one Component.

Receive path: every `/aiplayer/*` handler is synchronous and touches only memory. Telemetry (about 50 datagrams
a second per plugin) updates a small record per track and the sender's "last heard" time, and is forwarded raw
to subscribers; control messages also become debug rows and, when state changes, an instance upsert, both
queued for the writer.

Identity: a plugin sends everything from one socket, so its sender address links its tempID, its TR id and its
port; instances are indexed by tempID, TR id and sender. Only what the wire proves changes who holds a port: a
`port_confirmed` that matches an assignment, or an `rms_response` to a query id that was sent to that port (only
the plugin listening there can answer it). Anything else that does not fit is counted, logged now and then,
and at most triggers such a probe; it never rewrites the pool. A probe answer proves where the plugin was when it
read the probe: the real plugin handles datagrams read on its old socket after it has moved (protocol note,
Appendix B), so an answer to a probe sent before a newer proof of the instance's port moves nothing.

Liveness, re-adoption and calibration live in their own modules; this one holds the state and its transitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from oscbridge.context import BridgeContext
from oscbridge.logs import RateLimitedWarning, get_logger
from oscbridge.osc.codec import Message, encode_message
from oscbridge.plugins import liveness
from oscbridge.plugins.adoption import Placeholder, readopt
from oscbridge.plugins.calibration import TONE_STARTED, TONE_STOPPED, Calibration, Round
from oscbridge.plugins.fanout import Fanout
from oscbridge.plugins.levels import Levels, TrackLevel
from oscbridge.plugins.ops import HUB_OPS, instance_op, quarantine_op
from oscbridge.plugins.pool import PortPool, Quarantine, port_is_bindable
from oscbridge.plugins.registry import MAX_INSTANCES, NEVER, Addr, Instance, RegistryFull
from oscbridge.plugins.traffic import Traffic
from oscbridge.router import PluginHandler
from oscbridge.store.spool import SpoolError
from oscbridge.store.writer import OpKind

log = get_logger("oscbridge.plugins.hub")

REQUEST_PORT = "/aiplayer/request_port"
PORT_ASSIGNMENT = "/aiplayer/port_assignment"
PORT_CONFIRMED = "/aiplayer/port_confirmed"
UUID_CONFIRMED = "/aiplayer/uuid_assignment_confirmed"
TELEMETRY = "/aiplayer/telemetry"
RMS = "/aiplayer/rms"
QUERY_RMS = "/aiplayer/query_rms"
RMS_RESPONSE = "/aiplayer/rms_response"
CHAT_REQUEST = "/aiplayer/chat/request"
SET_PARAMETER = "/aiplayer/set_parameter"
CHAT_RESPONSE = "/aiplayer/chat/response"
EVENT_PLUGIN = "/bridge/event/plugin"
EVENT_CHAT = "/bridge/event/chat_request"

MAX_INSTANCE_ID = 64  # plugin_instances.instance_id; the real tempID has 32
MAX_PLUGIN_ID = 50
MAX_UNKNOWN_SENDERS = 1024


@dataclass(slots=True)
class Query:
    """A `query_rms` in flight: the port it went to (its answer proves who listens there)."""

    port: int
    sent: float
    round: Round | None = None


class PluginHub:
    def __init__(self, ctx: BridgeContext) -> None:
        self.ctx = ctx
        self.settings = settings = ctx.settings
        self.registry = ctx.instances
        # Live instances hold a port: room for all of them plus as many forgotten ones (see MAX_INSTANCES).
        self.registry.max_instances = max(MAX_INSTANCES, 2 * (settings.port_range_end - settings.port_range_start + 1))
        self.plugin_host = "127.0.0.1" if settings.host in ("", "0.0.0.0") else settings.host
        self.local: Addr = (settings.host, settings.osc_port)
        self.pool = PortPool(settings.port_range_start, settings.port_range_end,
                             partial(port_is_bindable, self.plugin_host))
        self.levels = Levels()
        self.fanout = Fanout(settings.subscription_ttl, settings.subscriber_max_errors)
        self.traffic = Traffic(ctx, settings.debug_rows_per_second, settings.rejected_rows_per_second)
        self.calibration = Calibration(self)
        self.queries: dict[str, Query] = {}
        self.placeholders: dict[int, Placeholder] = {}
        # Telemetry senders not linked to an instance -> (TR id, when last heard): a re-adopted plugin's track id.
        self.unknown_senders: dict[Addr, tuple[str, float]] = {}
        self.counters: Counter[str] = Counter()
        self.telemetry = 0  # the hot counter, kept out of the Counter
        self.sent = 0
        self.discover_wanted = False  # telemetry from an unknown sender: scan the pool for listeners
        self.next_discovery = 0.0
        self._task: asyncio.Task[None] | None = None
        self._warn = RateLimitedWarning(log, "plugin_hub_anomaly")
        self._warn_stale = RateLimitedWarning(log, "plugin_stale_probe_answer")

    # -- Component ----------------------------------------------------------------------------------------------

    def apis(self) -> Sequence[object]:
        from oscbridge.api.plugins import PluginsApi

        return [PluginsApi(self)]

    def op_kinds(self) -> Sequence[OpKind]:
        return HUB_OPS

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
        await readopt(self)
        liveness.sweep(self)
        self._task = asyncio.get_running_loop().create_task(liveness.run(self), name="oscbridge-plugin-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.fanout.close()

    # -- the telemetry stream (hot) --------------------------------------------------------------------------

    def _on_telemetry(self, message: Message, addr: Addr) -> None:
        self._on_level(message, addr, "sfffff", TELEMETRY)

    def _on_rms(self, message: Message, addr: Addr) -> None:
        self._on_level(message, addr, "sf", RMS)

    def _on_level(self, message: Message, addr: Addr, shape: str, address: str) -> None:
        """`/aiplayer/telemetry ,sfffff` (rms and four bands) or `/aiplayer/rms ,sf`: the track's latest levels."""
        if not message.tags.startswith(shape) or self._in_bundle():
            self._bad_shape(message, addr, shape)
            return
        args = message.args
        level = self.levels.tracks.get(args[0]) or self._new_track(message, addr)
        if level is None:
            return
        now = time.monotonic()
        level.rms = args[1]
        if len(shape) == 6:
            level.low, level.low_mid, level.high_mid, level.high = args[2], args[3], args[4], args[5]
        level.updated = now
        self._heard(args[0], addr, now)
        subs = self.fanout.route(address)
        if subs:
            self.fanout.send(subs, self._raw())

    def _heard(self, plugin_id: str, addr: Addr, now: float) -> None:
        self.telemetry += 1
        inst = self.registry.by_sender.get(addr)
        if inst is not None and inst.state == "identified" and inst.plugin_id == plugin_id:
            inst.last_heard = now
        else:
            self._heard_unexpected(plugin_id, inst, addr, now)

    def _new_track(self, message: Message, addr: Addr) -> TrackLevel | None:
        plugin_id = message.args[0]
        if not plugin_id.startswith("TR") or len(plugin_id) > MAX_PLUGIN_ID:
            self._reject(message, addr, "bad_track_id", f"track id {plugin_id[:60]!r} does not start with 'TR'")
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
            if addr in self.unknown_senders or len(self.unknown_senders) < MAX_UNKNOWN_SENDERS:
                self.unknown_senders[addr] = (plugin_id, now)
            self.discover_wanted = True  # find its port: a scan of listeners in the pool
            return
        inst.last_heard = now
        if not inst.live:
            if inst.port is not None and now - inst.probe_sent > self.settings.plugin_probe_timeout:
                self.probe_instance(inst)  # back from the dead? its answer re-adopts it
            return
        changed = inst.plugin_id != plugin_id or inst.state == "bound"
        if inst.plugin_id != plugin_id:
            self._set_plugin(inst, plugin_id)  # the plugin says which track id it carries: the wire wins
        if inst.state == "bound":
            inst.state = "identified"
        if changed:
            self.commit(inst)

    # -- port negotiation -------------------------------------------------------------------------------------

    def _on_request_port(self, message: Message, addr: Addr) -> None:
        args = self._args(message, addr, "si")
        if args is None:
            return
        temp_id, preferred = args[0], args[1]
        response_port = args[2] if message.tags[2:3] == "i" else 0
        if not 0 < len(temp_id) <= MAX_INSTANCE_ID:
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
            self._control_in(message, addr)
            inst.response_port = response_port
            self._send_assignment(temp_id, inst.port or -1, "assigned", (addr[0], response_port))
            return
        if inst is None:
            try:
                inst = self.registry.add(Instance(temp_id))
            except RegistryFull as exc:
                self._reject(message, addr, "instances_full", f"no room for another plugin instance ({exc})", True)
                self._send_assignment(temp_id, -1, "error", (addr[0], response_port))
                return
        else:
            self._set_plugin(inst, "")  # a new request means a fresh plugin: no track id yet
        self._control_in(message, addr)
        self.unknown_senders.pop(addr, None)  # a new plugin that reuses a dead one's sender port has no track yet
        port = self.allocate(temp_id, preferred if preferred in self.pool else None)
        self.registry.set_sender(inst, addr)
        inst.response_port = response_port
        inst.port = port
        inst.last_heard = inst.assigned_at = inst.located_at = time.monotonic()  # it listens on its bootstrap port
        inst.probe_sent, inst.misses = NEVER, 0
        if port is None:
            self.counters["pool_exhausted"] += 1
            inst.state = "failed"
            self.commit(inst, "no free port in the pool")
            self._send_assignment(temp_id, -1, "error", (addr[0], response_port))
            return
        inst.state = "assigned"
        self.commit(inst)
        self._send_assignment(temp_id, port, "assigned", (addr[0], response_port))

    def _send_assignment(self, temp_id: str, port: int, status: str, dest: Addr) -> None:
        self.send_plugin(dest, PORT_ASSIGNMENT, [temp_id, port, status], "sis")

    def _on_port_confirmed(self, message: Message, addr: Addr) -> None:
        args = self._args(message, addr, "sis")
        if args is None:
            return
        temp_id, port, status = args[0], args[1], args[2]
        if status not in ("bound", "failed"):
            self._reject(message, addr, "bad_status", f"status {status[:40]!r} is neither bound nor failed", True)
            return
        if not 0 < port <= 65535 or not 0 < len(temp_id) <= MAX_INSTANCE_ID:
            self._reject(message, addr, "out_of_range_port", f"port {port} or the instance id is out of range", True)
            return
        placeholder = self.placeholders.pop(port, None)
        if placeholder is not None:
            # Our unsolicited offer to a bootstrap port: whoever waited there says who it is.
            self._control_in(message, addr)
            if status == "bound":
                self.adopt(temp_id, port, addr, placeholder.ephemeral, "re-adopted from its bootstrap port")
            else:
                self.quarantine(port, "a plugin could not bind it", placeholder.owner)
            return
        inst = self.registry.get(temp_id)
        if inst is None or inst.port != port or not inst.live:
            kind = "unknown_instance_id" if inst is None else "unassigned_port"
            self._reject(message, addr, kind, f"no assignment of port {port} to this instance is pending", True)
            if status == "bound" and port in self.pool:
                self.probe(port)  # whoever listens there answers with its own id; that answer is proof
            return
        self._control_in(message, addr)
        self.registry.set_sender(inst, addr)
        inst.last_heard = time.monotonic()
        if status == "bound":
            inst.located_at = inst.last_heard
            inst.state = "identified" if inst.plugin_id else "bound"
            self.commit(inst)
        else:
            # The original app put the port back and handed it to the next plugin, which failed on it too.
            self.quarantine(port, "the plugin could not bind it", temp_id)
            inst.port = None
            inst.state = "failed"
            self.commit(inst, f"could not bind port {port}; the plugin is deaf until it is reloaded")

    def allocate(self, owner: str, preferred: int | None = None) -> int | None:
        """The lowest usable port for `owner`; ports found held by another process are quarantined and probed
        (a plugin this bridge does not know yet may be listening there)."""
        port, busy = self.pool.allocate(owner, time.time(), self.settings.quarantine_seconds, preferred)
        for entry in busy:
            self._quarantined(entry)
            self.probe(entry.port)
        return port

    def quarantine(self, port: int, reason: str, owner: str | None) -> None:
        self._quarantined(self.pool.quarantine(port, reason, time.time(), self.settings.quarantine_seconds, owner))

    def _quarantined(self, entry: Quarantine) -> None:
        self.counters["quarantined"] += 1
        self._submit("port_quarantine", quarantine_op(entry))
        self.traffic.event(f"port {entry.port} quarantined: {entry.reason}", "warning", port=entry.port,
                           reason=entry.reason, until=entry.until)

    # -- probes and adoption ----------------------------------------------------------------------------------

    def probe(self, port: int, inst: Instance | None = None, probe_round: Round | None = None) -> str:
        """Sends `query_rms` with a query id of its own to `port`; the answer says which tempID listens there."""
        query_id = str(uuid.uuid4()).upper()  # the app's format; the plugin copies it back unchanged
        self.queries[query_id] = Query(port, time.monotonic(), probe_round)
        self.send_plugin(self.dest(inst, port), QUERY_RMS, [query_id], "s")
        return query_id

    def probe_instance(self, inst: Instance) -> None:
        """A liveness probe: the sweep counts it as missed if nothing is heard from the plugin in time."""
        if inst.port is not None:
            self.probe(inst.port, inst)
            inst.probe_sent = time.monotonic()

    def _on_rms_response(self, message: Message, addr: Addr) -> None:
        args = self._args(message, addr, "ssf")
        if args is None:
            return
        query_id, temp_id, rms = args[0], args[1], args[2]
        if not 0 < len(temp_id) <= MAX_INSTANCE_ID:
            self._reject(message, addr, "bad_instance_id", "the instance id must have 1 to 64 characters", True)
            return
        self._control_in(message, addr)
        query = self.queries.pop(query_id, None)
        if query is None:
            self.counters["unknown_query"] += 1  # late (after the window) or not ours: proves nothing
            self._touch(addr)
            return
        inst = self.registry.get(temp_id)
        if inst is not None and inst.port != query.port and inst.located_at > query.sent:
            self._stale_answer(inst, query, addr)
        else:
            inst = self.adopt(temp_id, query.port, addr, proven_at=query.sent)
        if query.round is not None:  # the level is current even when the port in the query is not
            query.round.add(temp_id, (query.port if inst.port is None else inst.port, rms))

    def _stale_answer(self, inst: Instance, query: Query, addr: Addr) -> None:
        """An answer to a probe of `query.port` that went out before the wire proved `inst` elsewhere: the plugin read
        it there and moved since (seen 53 ms after the confirmation of the new port). It is alive; nothing moves."""
        self.counters["stale_probe_answers"] += 1
        self._touch(addr)
        self._warn_stale(instance_id=inst.instance_id, probed_port=query.port, port=inst.port,
                         ms_after_proof=round((time.monotonic() - inst.located_at) * 1000),
                         total=self.counters["stale_probe_answers"])

    def adopt(self, temp_id: str, port: int, sender: Addr, response_port: int | None = None,
              note: str = "", proven_at: float | None = None) -> Instance:
        """Records what the wire proved: instance `temp_id` listens on `port` and sends from `sender` (as of
        `proven_at`, monotonic: when the probe it answered went out; default now)."""
        now = time.monotonic()
        inst = self.registry.get(temp_id)
        created = inst is None
        if inst is None:
            inst = self.registry.add(Instance(temp_id))
        changed = created or inst.port != port or not inst.live or inst.sender != sender
        if port in self.pool:
            if port in self.pool.quarantined:
                now = time.time()
                self._submit("port_quarantine", quarantine_op(Quarantine(port, "re-adopted", now, now)))
            previous = self.pool.claim(port, temp_id)
            if previous is not None:
                self._displace(previous, port, temp_id)
        if inst.live and inst.port is not None and inst.port != port:
            self.pool.release(inst.port, temp_id)  # it is not there any more
        inst.port = port
        self.registry.set_sender(inst, sender)
        if response_port is not None:
            inst.response_port = response_port
        carried, heard = self.unknown_senders.pop(sender, ("", NEVER))
        if carried and carried != inst.plugin_id and now - heard < self.settings.plugin_silence:
            self._set_plugin(inst, carried)  # it streams telemetry for that track now
            changed = True
        state = "identified" if inst.plugin_id else "bound"
        changed = changed or inst.state != state
        inst.state = state
        inst.last_heard = now
        inst.located_at = max(inst.located_at, now if proven_at is None else proven_at)
        inst.probe_sent, inst.misses = NEVER, 0
        if changed:
            self.counters["adopted"] += 1
            self.commit(inst, note or f"found listening on port {port}")
        return inst

    def _displace(self, owner: str, port: int, newcomer: str) -> None:
        """`owner` held `port`, but `newcomer` proved it listens there: the owner cannot be there any more."""
        if owner.startswith("adopt:"):
            self.placeholders.pop(port, None)
            return
        other = self.registry.get(owner)
        if other is not None and other.live:
            other.state = "gone"
            self.commit(other, f"{newcomer} answers on its port {port}")

    def gone(self, inst: Instance, reason: str) -> None:
        """The plugin stopped talking and answers no probe: its port goes back to the pool."""
        if inst.port is not None:
            self.pool.release(inst.port, inst.instance_id)
        inst.state = "gone"
        inst.probe_sent, inst.misses = NEVER, 0
        self.counters["gone"] += 1
        self.commit(inst, reason)

    # -- identification, calibration acks, chat ---------------------------------------------------------------

    def _on_uuid_confirmed(self, message: Message, addr: Addr) -> None:
        args = self._args(message, addr, "sss")
        if args is None:
            return
        temp_id, plugin_id = args[0], args[1]
        if self.registry.get(temp_id) is None:
            self._reject(message, addr, "unknown_instance_id", "confirmation from an instance id never seen", True)
            return
        self._control_in(message, addr)
        self._touch(addr)
        if not self.calibration.confirmed(temp_id, plugin_id):
            self.counters["unmatched_confirmation"] += 1  # a late duplicate of a resend, or not ours

    def identified(self, inst: Instance, plugin_id: str) -> None:
        """The plugin confirmed track id `plugin_id`."""
        self._set_plugin(inst, plugin_id)
        if inst.live:
            inst.state = "identified"
        self.commit(inst)

    def _set_plugin(self, inst: Instance, plugin_id: str) -> None:
        previous = self.registry.set_plugin(inst, plugin_id)
        if previous is not None:
            if previous.state == "identified":
                previous.state = "bound"
            self.commit(previous, f"{plugin_id} now belongs to {inst.instance_id}")

    def _on_tone_ack(self, message: Message, addr: Addr) -> None:
        args = self._args(message, addr, "sf" if message.address == TONE_STARTED else "s")
        if args is None:
            return
        self._control_in(message, addr)
        self._touch(addr)
        self.calibration.acked(message.address, args[0])

    def _on_chat_request(self, message: Message, addr: Addr) -> None:
        """`,is [1, text]` as the real plugin sends it (the app dropped these), or `,ss [id, text]`."""
        args = self._args(message, addr, "is", "ss")
        if args is None:
            return
        self._control_in(message, addr)
        inst = self._touch(addr)
        first = args[0]
        plugin_id = inst.plugin_id if inst is not None and inst.plugin_id else (
            first if isinstance(first, str) and first.startswith("TR") else "")
        self.emit(EVENT_CHAT, [plugin_id, args[1]])

    # -- shared helpers ---------------------------------------------------------------------------------------

    def dest(self, inst: Instance | None, port: int | None = None) -> Addr:
        """Where a plugin listens: its sender's host, its port (or `port`)."""
        host = inst.sender[0] if inst is not None and inst.sender is not None else self.plugin_host
        target = port if port is not None else inst.port if inst is not None else None
        assert target is not None, "no port to send to"
        return host, target

    def send_plugin(self, dest: Addr, address: str, args: list[Any], tags: str) -> None:
        """Sends one message to a plugin with exactly the plugin's argument types, and logs it as debug traffic."""
        self.ctx.send(encode_message(address, args, tags), dest)
        self.sent += 1
        self.traffic.datagram("osc_out", Message(address, args, tags), self.local, dest)

    def emit(self, address: str, args: list[Any]) -> None:
        """A `/bridge/event/*` to the subscribers whose patterns match (encoded only if someone listens)."""
        subs = self.fanout.route(address)
        if subs:
            self.fanout.send(subs, encode_message(address, args))

    def commit(self, inst: Instance, note: str = "") -> None:
        """After a change of an instance: store it, tell subscribers, and note what no datagram shows."""
        inst.changed_at = time.monotonic()
        self.persist(inst)
        port = inst.port if inst.port is not None and inst.live else -1
        self.emit(EVENT_PLUGIN, [inst.instance_id, port, inst.state, inst.plugin_id])
        if note:
            self.traffic.event(f"plugin {inst.instance_id} {inst.state}: {note}", instance_id=inst.instance_id,
                               port=inst.port, state=inst.state, plugin_id=inst.plugin_id)

    def persist(self, inst: Instance) -> None:
        wall, heard = time.time(), inst.last_heard
        last_seen = inst.first_seen if heard == NEVER else wall - (time.monotonic() - heard)
        inst.seen_stored = heard
        self._submit("plugin_instance", instance_op(inst, wall, last_seen))

    def _submit(self, kind: str, data: dict[str, Any]) -> None:
        try:
            self.ctx.writer.submit(kind, data)
        except SpoolError as exc:  # memory stays right; the row is lost, which the log says
            self.counters["spool_errors"] += 1
            self._warn(problem="cannot queue a write", kind=kind, error=str(exc))

    def _touch(self, addr: Addr) -> Instance | None:
        inst = self.registry.by_sender.get(addr)
        if inst is not None:
            inst.last_heard = time.monotonic()
        return inst

    def _raw(self) -> bytes:
        router = self.ctx.router
        return router.datagram if router is not None else b""

    def _in_bundle(self) -> bool:
        return self._raw()[:1] == b"#"

    def _args(self, message: Message, addr: Addr, *shapes: str) -> list[Any] | None:
        """The arguments if the type tags start with one of `shapes` (extra trailing arguments are tolerated, as
        the app did) and the message came alone (plugins never send bundles); else None, counted and logged."""
        if self._in_bundle() or not any(message.tags.startswith(shape) for shape in shapes):
            self._bad_shape(message, addr, "/".join(shapes))
            return None
        return message.args

    def _bad_shape(self, message: Message, addr: Addr, expected: str) -> None:
        if self._in_bundle():
            self._reject(message, addr, "bundle", "inside a bundle (plugins never send bundles)",
                         message.address not in (TELEMETRY, RMS))
        else:
            self._reject(message, addr, "bad_type_tags", f"type tags ,{message.tags} (the plugin sends ,{expected})",
                         message.address not in (TELEMETRY, RMS))

    def _reject(self, message: Message, addr: Addr, kind: str, reason: str, record: bool = False) -> None:
        """Counts a plugin message that was refused, logs it now and then, and (control messages) stores it."""
        self.counters[kind] += 1
        router = self.ctx.router
        if router is not None:
            router.note_plugin_rejection(message.address, addr, reason)
        if record:
            self.traffic.datagram("osc_in", message, addr, self.local, "warning", rejected=reason)

    def _control_in(self, message: Message, addr: Addr) -> None:
        """An accepted control message: a debug row, and the raw datagram to matching subscribers."""
        self.traffic.datagram("osc_in", message, addr, self.local)
        subs = self.fanout.route(message.address)
        if subs:
            self.fanout.send(subs, self._raw())

    def stats(self) -> list[tuple[str, int]]:
        """Counters for `/bridge/stats`: what came in and out, what was refused, the pool, the writer."""
        values: dict[str, int] = {}
        router = self.ctx.router
        if router is not None:
            values.update((f"router.{k}", v) for k, v in router.counters.items())
            values["router.packets_in"] = router.packets_in
            if router.udp is not None:
                values["router.udp_send_errors"] = router.udp.send_errors
        values.update((f"hub.{k}", v) for k, v in self.counters.items())
        now = time.time()
        writer = self.ctx.writer
        values.update({
            "hub.telemetry": self.telemetry, "hub.sent": self.sent, "hub.queries_in_flight": len(self.queries),
            "hub.debug_rows": self.traffic.rows, "hub.debug_rows_suppressed": self.traffic.suppressed,
            "hub.tracks": len(self.levels.tracks), "hub.instances": len(self.registry.by_id),
            "fanout.subscribers": len(self.fanout.subscribers), "fanout.dropped": self.fanout.dropped,
            "fanout.forwarded": sum(s.sent for s in self.fanout.subscribers.values()),
            "pool.held": len(self.pool.owner), "pool.quarantined": len(self.pool.quarantined),
            "pool.free": self.pool.free_count(now),
            "writer.batches": writer.batches, "writer.rejected": writer.rejected,
            "writer.queued": writer.queued, "writer.spooled": writer.spooled,
        })
        return sorted(values.items())
