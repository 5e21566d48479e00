"""The state machine of plugin instances: every change of who holds which port, which track id and which state
goes through here, and each one is stored (a `plugin_instance` write), told to subscribers
(`/bridge/event/plugin`) and, when no datagram shows it, noted as an `event` debug row.

Only what the wire proves changes who holds a port: a `port_confirmed` that matches an assignment, or an
`rms_response` to a probe of that port (`adopt`). The hub's handlers, liveness, adoption and calibration call the
verbs here; none of them changes an `Instance` or the pool on its own.
"""

from __future__ import annotations

from collections import Counter

from oscbridge.clock import Clock
from oscbridge.config import Settings
from oscbridge.logs import RateLimitedWarning, get_logger
from oscbridge.plugins.fanout import Fanout
from oscbridge.plugins.ops import StoredInstance
from oscbridge.plugins.pool import PortPool, Quarantine
from oscbridge.plugins.probes import Probes
from oscbridge.plugins.registry import NEVER, Instance, InstanceRegistry
from oscbridge.plugins.traffic import Traffic
from oscbridge.protocol import EVENT_PLUGIN
from oscbridge.store.spool import SpoolError
from oscbridge.store.writes import PluginInstanceRow, PortQuarantineRow, Submit, WriteOp
from oscbridge.typedefs import Addr, PluginState

log = get_logger("oscbridge.plugins.instances")


class Instances:
    def __init__(self, registry: InstanceRegistry, pool: PortPool, probes: Probes, traffic: Traffic,
                 fanout: Fanout, submit: Submit, settings: Settings, clock: Clock) -> None:
        self.registry = registry
        self.pool = pool
        self.probes = probes
        self._traffic = traffic
        self._fanout = fanout
        self._submit = submit
        self._settings = settings
        self._clock = clock
        self.counters: Counter[str] = Counter()
        self._warn = RateLimitedWarning(log, "plugin_state_not_stored")

    # -- making and finding ---------------------------------------------------------------------------------------

    def new(self, instance_id: str) -> Instance:
        """A new instance, heard now; raises RegistryFull when there is no room."""
        now = self._clock.monotonic()
        return self.registry.add(Instance(instance_id, first_seen=self._clock.time(), last_heard=now, changed_at=now))

    def restore(self, stored: StoredInstance) -> Instance:
        """An instance the database says held a port when the last bridge stopped (re-adoption takes it back and
        probes it; never heard in this run)."""
        plugin_id = stored.plugin_id if stored.plugin_id and self.registry.for_plugin(stored.plugin_id) is None else ""
        sender = stored.sender if stored.sender is not None and self.registry.from_sender(stored.sender) is None \
            else None  # a newer plugin reuses that sender port
        inst = self.registry.add(Instance(stored.instance_id, first_seen=stored.first_seen, last_heard=NEVER,
                                          changed_at=self._clock.monotonic(), port=stored.port,
                                          state=PluginState(stored.state), plugin_id=plugin_id, sender=sender,
                                          response_port=stored.response_port))
        self.pool.claim(stored.port, stored.instance_id)
        return inst

    def heard(self, sender: Addr) -> Instance | None:
        """Something came from `sender`: its instance (if known) counts as heard now."""
        inst = self.registry.from_sender(sender)
        if inst is not None:
            inst.last_heard = self._clock.monotonic()
        return inst

    # -- ports --------------------------------------------------------------------------------------------------

    def allocate(self, owner: str, preferred: int | None = None) -> int | None:
        """The lowest usable port for `owner`; ports found held by another process are quarantined and probed
        (a plugin this bridge does not know yet may be listening there)."""
        port, busy = self.pool.allocate(owner, self._clock.time(), self._settings.quarantine_seconds, preferred)
        for entry in busy:
            self._quarantined(entry)
            self.probes.send(entry.port)
        return port

    def quarantine(self, port: int, reason: str, owner: str | None) -> None:
        self._quarantined(self.pool.quarantine(port, reason, self._clock.time(), self._settings.quarantine_seconds,
                                               owner))

    def _quarantined(self, entry: Quarantine) -> None:
        self.counters["quarantined"] += 1
        self._store(PortQuarantineRow(entry.port, entry.reason, entry.since, entry.until))
        self._traffic.event(f"port {entry.port} quarantined: {entry.reason}", "warning", port=entry.port,
                            reason=entry.reason, until=entry.until)

    # -- transitions ----------------------------------------------------------------------------------------------

    def assigned(self, inst: Instance, sender: Addr, response_port: int, port: int | None) -> None:
        """A `request_port` got `port` (None: the pool is empty). The plugin listens on its bootstrap port."""
        self.registry.set_sender(inst, sender)
        inst.response_port = response_port
        inst.port = port
        inst.last_heard = inst.assigned_at = inst.located_at = self._clock.monotonic()
        inst.probe_sent, inst.misses = NEVER, 0
        if port is None:
            self.counters["pool_exhausted"] += 1
            inst.state = PluginState.FAILED
            self.commit(inst, "no free port in the pool")
        else:
            inst.state = PluginState.ASSIGNED
            self.commit(inst)

    def confirmed(self, inst: Instance, sender: Addr, bound: bool) -> None:
        """A `port_confirmed` of the port `inst` was assigned: bound there, or failed to bind it."""
        self.registry.set_sender(inst, sender)
        inst.last_heard = self._clock.monotonic()
        if bound:
            inst.located_at = inst.last_heard
            inst.state = PluginState.IDENTIFIED if inst.plugin_id else PluginState.BOUND
            self.commit(inst)
            return
        port = inst.port
        assert port is not None
        # The original app put the port back and handed it to the next plugin, which failed on it too.
        self.quarantine(port, "the plugin could not bind it", inst.instance_id)
        inst.port = None
        inst.state = PluginState.FAILED
        self.commit(inst, f"could not bind port {port}; the plugin is deaf until it is reloaded")

    def adopt(self, temp_id: str, port: int, sender: Addr, *, response_port: int | None = None, note: str = "",
              proven_at: float | None = None, carried: str = "") -> Instance:
        """Records what the wire proved: instance `temp_id` listens on `port` and sends from `sender` (as of
        `proven_at`, monotonic: when the probe it answered went out; default now). `carried` is the track id its
        sender streams telemetry for, if any."""
        now = self._clock.monotonic()
        inst = self.registry.get(temp_id)
        created = inst is None
        if inst is None:
            inst = self.new(temp_id)
        changed = created or inst.port != port or not inst.live or inst.sender != sender
        if port in self.pool:
            if self.pool.is_quarantined(port, self._clock.time()):
                wall = self._clock.time()
                self._store(PortQuarantineRow(port, "re-adopted", wall, wall))
            previous = self.pool.claim(port, temp_id)
            if previous is not None:
                self._displace(previous, port, temp_id)
        if inst.live and inst.port is not None and inst.port != port:
            self.pool.release(inst.port, temp_id)  # it is not there any more
        inst.port = port
        self.registry.set_sender(inst, sender)
        if response_port is not None:
            inst.response_port = response_port
        if carried and carried != inst.plugin_id:
            self.set_plugin(inst, carried)  # it streams telemetry for that track now
            changed = True
        state = PluginState.IDENTIFIED if inst.plugin_id else PluginState.BOUND
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
        other = self.registry.get(owner)
        if other is not None and other.live:
            other.state = PluginState.GONE
            self.commit(other, f"{newcomer} answers on its port {port}")

    def streaming(self, inst: Instance, plugin_id: str) -> None:
        """`inst` (live) streams telemetry for `plugin_id`: the wire says which track id it carries."""
        changed = inst.plugin_id != plugin_id or inst.state == PluginState.BOUND
        if inst.plugin_id != plugin_id:
            self.set_plugin(inst, plugin_id)
        if inst.state == PluginState.BOUND:
            inst.state = PluginState.IDENTIFIED
        if changed:
            self.commit(inst)

    def identified(self, inst: Instance, plugin_id: str) -> None:
        """The plugin confirmed track id `plugin_id`."""
        self.set_plugin(inst, plugin_id)
        if inst.live:
            inst.state = PluginState.IDENTIFIED
        self.commit(inst)

    def set_plugin(self, inst: Instance, plugin_id: str) -> None:
        previous = self.registry.set_plugin(inst, plugin_id)
        if previous is not None:
            if previous.state == PluginState.IDENTIFIED:
                previous.state = PluginState.BOUND
            self.commit(previous, f"{plugin_id} now belongs to {inst.instance_id}")

    def gone(self, inst: Instance, reason: str) -> None:
        """The plugin stopped talking and answers no probe: its port goes back to the pool."""
        if inst.port is not None:
            self.pool.release(inst.port, inst.instance_id)
        inst.state = PluginState.GONE
        inst.probe_sent, inst.misses = NEVER, 0
        self.counters["gone"] += 1
        self.commit(inst, reason)

    def probe(self, inst: Instance) -> None:
        """A liveness probe: counted as missed if nothing is heard from the plugin in time (liveness.py)."""
        if inst.port is not None:
            self.probes.send(inst.port, inst)
            inst.probe_sent = self._clock.monotonic()

    def answered(self, inst: Instance) -> None:
        """Something was heard since the outstanding probe went out."""
        inst.probe_sent, inst.misses = NEVER, 0

    def missed(self, inst: Instance) -> int:
        """The outstanding probe went unanswered; returns how many in a row."""
        inst.probe_sent = NEVER
        inst.misses += 1
        return inst.misses

    # -- storing and telling ------------------------------------------------------------------------------------------

    def commit(self, inst: Instance, note: str = "") -> None:
        """After a change of an instance: store it, tell subscribers, and note what no datagram shows."""
        inst.changed_at = self._clock.monotonic()
        self.persist(inst)
        port = inst.port if inst.port is not None and inst.live else -1
        self._fanout.emit(EVENT_PLUGIN, [inst.instance_id, port, inst.state.value, inst.plugin_id])
        if note:
            self._traffic.event(f"plugin {inst.instance_id} {inst.state}: {note}", instance_id=inst.instance_id,
                                port=inst.port, state=inst.state.value, plugin_id=inst.plugin_id)

    def persist(self, inst: Instance) -> None:
        """Stores the instance as it is now (also its last_seen, which liveness refreshes now and then)."""
        wall, now, heard = self._clock.time(), self._clock.monotonic(), inst.last_heard
        last_seen = inst.first_seen if heard == NEVER else wall - (now - heard)
        inst.seen_stored = heard
        self._store(PluginInstanceRow(
            inst.instance_id, inst.port, inst.state.value, inst.plugin_id or None,
            inst.sender[0] if inst.sender else None, inst.sender[1] if inst.sender else None, inst.response_port,
            inst.first_seen, last_seen, wall))

    def _store(self, op: WriteOp) -> None:
        try:
            self._submit(op)
        except SpoolError as exc:  # memory stays right; the row is lost, which the log says
            self.counters["spool_errors"] += 1
            self._warn(kind=op.KIND, error=str(exc), total=self.counters["spool_errors"])
