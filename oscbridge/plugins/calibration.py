"""Calibration as the Control Room drives it: it mutes and unmutes tracks in Logic, the bridge plays the tone,
probes the plugins and hands out track ids (protocol note 3.3, with its gaps closed).

Unlike the original app, tones and probes go to each plugin's own port (not a 9000-9010 broadcast), each probe
carries a query id of its own, and a track-id assignment counts only when the confirmation for that very
(tempID, TRn) pair arrives, with resends every `assign_retry_interval` seconds until then.
"""

from __future__ import annotations

import asyncio
import itertools

from oscbridge.clock import Clock
from oscbridge.config import Settings
from oscbridge.plugins.fanout import Fanout
from oscbridge.plugins.instances import Instances
from oscbridge.plugins.levels import to_dbfs
from oscbridge.plugins.outbound import Outbound
from oscbridge.plugins.probes import Probes, Round
from oscbridge.plugins.registry import Instance, InstanceRegistry
from oscbridge.projects import Projects
from oscbridge.protocol import EVENT_ASSIGNED, START_TONE, STOP_TONE, TONE_STARTED, TONE_STOPPED, TRACK_UUID_ASSIGNMENT
from oscbridge.typedefs import BridgeError, ErrorCode, PluginState


class Calibration:
    def __init__(self, registry: InstanceRegistry, instances: Instances, probes: Probes, outbound: Outbound,
                 fanout: Fanout, projects: Projects, settings: Settings, clock: Clock) -> None:
        self._registry = registry
        self._instances = instances
        self._probes = probes
        self._outbound = outbound
        self._fanout = fanout
        self._projects = projects
        self._settings = settings
        self._clock = clock
        self._acks: dict[str, Round] = {}  # tone_started / tone_stopped -> the round waiting for them
        self._pending: dict[tuple[str, str], asyncio.Event] = {}  # (tempID, TRn) -> confirmed
        self._seq = itertools.count(1)

    def candidates(self) -> list[Instance]:
        """Bound plugins without a track: the ones a calibration pass identifies."""
        return [inst for inst in self._registry
                if inst.state == PluginState.BOUND and inst.port is not None and not inst.plugin_id]

    def acked(self, address: str, temp_id: str) -> None:
        ack_round = self._acks.get(address)
        if ack_round is not None:
            ack_round.add(temp_id, True)

    def confirmed(self, temp_id: str, plugin_id: str) -> bool:
        """A `uuid_assignment_confirmed`; True when an assignment was waiting for exactly this pair."""
        event = self._pending.get((temp_id, plugin_id))
        if event is None:
            return False
        event.set()
        return True

    async def tone(self, on: bool, frequency: float, level_db: float) -> int:
        """Starts the tone on the plugins to identify, or stops it on every plugin with a port (one might have been
        identified meanwhile); returns how many acknowledged within the window."""
        if on:
            targets = self.candidates()
            address, args, tags, ack = START_TONE, [frequency, level_db], "ff", TONE_STARTED
        else:
            targets = [i for i in self._registry
                       if i.state in (PluginState.BOUND, PluginState.IDENTIFIED) and i.port]
            address, args, tags, ack = STOP_TONE, [], "", TONE_STOPPED
        ack_round = self._acks[ack] = Round(inst.instance_id for inst in targets)
        try:
            for inst in targets:
                self._outbound.send(self._outbound.dest(inst), address, args, tags)
            await self._clock.wait(ack_round.done, self._settings.calibrate_window)
        finally:
            if self._acks.get(ack) is ack_round:
                del self._acks[ack]
        return len(ack_round.answers)

    async def probe(self) -> list[tuple[str, int, float]]:
        """One `query_rms` with its own query id to each plugin to identify; rows loudest first."""
        targets = self.candidates()
        probe_round = Round(inst.instance_id for inst in targets)
        for inst in targets:
            assert inst.port is not None
            self._probes.send(inst.port, inst, probe_round)
        await self._clock.wait(probe_round.done, self._settings.calibrate_window)
        rows = [(temp_id, port, to_dbfs(rms)) for temp_id, (port, rms) in probe_round.answers.items()]
        rows.sort(key=lambda row: row[2], reverse=True)
        return rows

    async def assign(self, temp_id: str, plugin_id: str, track_number: int, track_name: str) -> None:
        """Sends `track_uuid_assignment ,iss [seq, tempID, TRn]` until the plugin confirms this pair; then records
        the mapping and tells subscribers. Raises BridgeError `not_found` / `unavailable`."""
        inst = self._registry.get(temp_id)
        if inst is None or inst.state not in (PluginState.BOUND, PluginState.IDENTIFIED) or inst.port is None:
            state = "unknown" if inst is None else inst.state
            raise BridgeError(ErrorCode.NOT_FOUND, f"instance {temp_id} is not a bound plugin (it is {state})")
        key = (temp_id, plugin_id)
        event = self._pending.setdefault(key, asyncio.Event())
        seq = next(self._seq)  # one sequence number for the first send and its resends, as the app did
        sends = 1 + self._settings.assign_retries
        try:
            for _ in range(sends):
                if not inst.live or inst.port is None:
                    break
                self._outbound.send(self._outbound.dest(inst), TRACK_UUID_ASSIGNMENT, [seq, temp_id, plugin_id],
                                    "iss")
                if await self._clock.wait(event, self._settings.assign_retry_interval):
                    break
        finally:
            if self._pending.get(key) is event:
                del self._pending[key]
        if not event.is_set():
            raise BridgeError(ErrorCode.UNAVAILABLE, f"instance {temp_id} did not confirm {plugin_id} after {sends} "
                                                     "sends")
        self._instances.identified(inst, plugin_id)
        self._projects.set_mapping(track_number, track_name, plugin_id)
        self._fanout.emit(EVENT_ASSIGNED, [temp_id, plugin_id, track_number, track_name])
