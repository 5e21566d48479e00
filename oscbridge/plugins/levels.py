"""The latest levels per track id, fed by `/aiplayer/telemetry` and `/aiplayer/rms` (about 50 datagrams a second
per plugin). Only memory: a small mutable record per track, overwritten in place; nothing is written to the
database per datagram (`/bridge/levels` reads it)."""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_TRACKS = 1024  # bad input must not grow memory without bound: more distinct track ids are refused
DB_FLOOR = -100.0  # the plugin's own floor: digital silence reports rms 1e-5 and bands of -100 dB


@dataclass(slots=True)
class TrackLevel:
    plugin_id: str
    rms: float = 0.0  # linear, as the plugin sends it
    low: float = DB_FLOOR
    low_mid: float = DB_FLOOR
    high_mid: float = DB_FLOOR
    high: float = DB_FLOOR
    updated: float = 0.0  # monotonic


def to_dbfs(rms: float) -> float:
    """Linear RMS to dBFS, floored like the plugin's bands (0.0 before the first audio block counts as floor)."""
    return 20.0 * math.log10(rms) if rms > 1e-5 else DB_FLOOR


def _track_order(plugin_id: str) -> tuple[int, str]:
    """TR2 before TR10 (the original sorted TR ids as strings)."""
    number = plugin_id[2:]
    return (int(number) if number.isdigit() else 1 << 30, plugin_id)


class Levels:
    def __init__(self) -> None:
        self.tracks: dict[str, TrackLevel] = {}

    def track(self, plugin_id: str) -> TrackLevel | None:
        """The record of `plugin_id`, created on first sight; None when the table is full."""
        record = self.tracks.get(plugin_id)
        if record is None and len(self.tracks) < MAX_TRACKS:
            record = self.tracks[plugin_id] = TrackLevel(plugin_id)
        return record

    def expire(self, now: float, age: float) -> None:
        """Forgets tracks not updated for `age` seconds (a project closed, tracks renumbered)."""
        for plugin_id in [p for p, r in self.tracks.items() if now - r.updated > age]:
            del self.tracks[plugin_id]

    def rows(self, now: float) -> list[tuple[str, float, float, float, float, float, float]]:
        """`/bridge/levels` rows: plugin id, rms dBFS, the four band levels in dB, seconds since the update."""
        return [(r.plugin_id, to_dbfs(r.rms), r.low, r.low_mid, r.high_mid, r.high, max(0.0, now - r.updated))
                for r in sorted(self.tracks.values(), key=lambda r: _track_order(r.plugin_id))]
