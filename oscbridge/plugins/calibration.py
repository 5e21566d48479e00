"""Calibration as the Control Room drives it: it mutes and unmutes tracks in Logic, the bridge plays the tone,
probes the plugins and hands out track ids (protocol note 3.3, with its gaps closed).

Unlike the original app, tones and probes go to each plugin's own port (not a 9000-9010 broadcast), each probe
carries a query id of its own, and a track-id assignment counts only when the confirmation for that very
(tempID, TRn) pair arrives, with resends about once a second until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from oscbridge.api.mapping import set_mapping
from oscbridge.api.params import BridgeError
from oscbridge.plugins.levels import to_dbfs
from oscbridge.plugins.registry import Instance

if TYPE_CHECKING:
    from oscbridge.plugins.hub import PluginHub

START_TONE = "/aiplayer/start_tone"
STOP_TONE = "/aiplayer/stop_tone"
TONE_STARTED = "/aiplayer/tone_started"
TONE_STOPPED = "/aiplayer/tone_stopped"
TRACK_ASSIGNMENT = "/aiplayer/track_uuid_assignment"
EVENT_ASSIGNED = "/bridge/event/assigned"


class Round:
    """Collects one answer per expected instance; `wait` returns when all are in or the window closes."""

    def __init__(self, expected: Iterable[str]) -> None:
        self.expected = set(expected)
        self.answers: dict[str, Any] = {}
        self._done = asyncio.Event()

    def add(self, temp_id: str, value: Any) -> None:
        if temp_id in self.expected and temp_id not in self.answers:
            self.answers[temp_id] = value
            if len(self.answers) == len(self.expected):
                self._done.set()

    async def wait(self, timeout: float) -> None:
        if self.expected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), timeout)


class Calibration:
    def __init__(self, hub: PluginHub) -> None:
        self.hub = hub
        self.settings = hub.ctx.settings
        self.acks: dict[str, Round] = {}  # tone_started / tone_stopped -> the round waiting for them
        self.pending: dict[tuple[str, str], asyncio.Event] = {}  # (tempID, TRn) -> confirmed
        self._seq = itertools.count(1)

    def candidates(self) -> list[Instance]:
        """Bound plugins without a track: the ones a calibration pass identifies."""
        return [inst for inst in self.hub.registry.by_id.values()
                if inst.state == "bound" and inst.port is not None and not inst.plugin_id]

    def acked(self, address: str, temp_id: str) -> None:
        ack_round = self.acks.get(address)
        if ack_round is not None:
            ack_round.add(temp_id, True)

    def confirmed(self, temp_id: str, plugin_id: str) -> bool:
        """A `uuid_assignment_confirmed`; True when an assignment was waiting for exactly this pair."""
        event = self.pending.get((temp_id, plugin_id))
        if event is None:
            return False
        event.set()
        return True

    async def tone(self, on: bool, frequency: float, level_db: float) -> int:
        """Starts the tone on the plugins to identify, or stops it on every plugin with a port (one might have been
        identified meanwhile); returns how many acknowledged within the window."""
        hub = self.hub
        if on:
            targets = self.candidates()
            address, args, tags, ack = START_TONE, [frequency, level_db], "ff", TONE_STARTED
        else:
            targets = [i for i in hub.registry.by_id.values() if i.state in ("bound", "identified") and i.port]
            address, args, tags, ack = STOP_TONE, [], "", TONE_STOPPED
        ack_round = self.acks[ack] = Round(inst.instance_id for inst in targets)
        try:
            for inst in targets:
                hub.send_plugin(hub.dest(inst), address, args, tags)
            await ack_round.wait(self.settings.calibrate_window)
        finally:
            if self.acks.get(ack) is ack_round:
                del self.acks[ack]
        return len(ack_round.answers)

    async def probe(self) -> list[tuple[str, int, float]]:
        """One `query_rms` with its own query id to each plugin to identify; rows loudest first."""
        targets = self.candidates()
        probe_round = Round(inst.instance_id for inst in targets)
        for inst in targets:
            assert inst.port is not None
            self.hub.probe(inst.port, inst, probe_round)
        await probe_round.wait(self.settings.calibrate_window)
        rows = [(temp_id, port, to_dbfs(rms)) for temp_id, (port, rms) in probe_round.answers.items()]
        rows.sort(key=lambda row: row[2], reverse=True)
        return rows

    async def assign(self, temp_id: str, plugin_id: str, track_number: int, track_name: str) -> None:
        """Sends `track_uuid_assignment ,iss [seq, tempID, TRn]` until the plugin confirms this pair; then records
        the mapping and tells subscribers. Raises BridgeError `not_found` / `unavailable`."""
        hub = self.hub
        inst = hub.registry.get(temp_id)
        if inst is None or inst.state not in ("bound", "identified") or inst.port is None:
            state = "unknown" if inst is None else inst.state
            raise BridgeError("not_found", f"instance {temp_id} is not a bound plugin (it is {state})")
        key = (temp_id, plugin_id)
        event = self.pending.setdefault(key, asyncio.Event())
        seq = next(self._seq)  # one sequence number for the first send and its resends, as the app did
        try:
            for _ in range(1 + self.settings.assign_retries):
                if not inst.live or inst.port is None:
                    break
                hub.send_plugin(hub.dest(inst), TRACK_ASSIGNMENT, [seq, temp_id, plugin_id], "iss")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), self.settings.assign_retry_interval)
                if event.is_set():
                    break
        finally:
            if self.pending.get(key) is event:
                del self.pending[key]
        if not event.is_set():
            raise BridgeError("unavailable", f"instance {temp_id} did not confirm {plugin_id} after "
                                             f"{1 + self.settings.assign_retries} sends")
        hub.identified(inst, plugin_id)
        set_mapping(hub.ctx, track_number, track_name, plugin_id)
        hub.emit(EVENT_ASSIGNED, [temp_id, plugin_id, track_number, track_name])
