"""What the read-only MCP tools and the resources answer, built from `/bridge/*` replies (named by api/columns.py).

Every function takes a `BridgeLink` and returns a model of models.py (or text for a resource); a failure a model
can act on is a `Problem` (an unknown track says which tracks there are).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from oscbridge.api.columns import named, none_for_absent
from oscbridge.mcp.link import BridgeLink, CallFailed, Problem
from oscbridge.mcp.models import (
    Found,
    HealthFact,
    Level,
    Levels,
    Message,
    Messages,
    Plugin,
    Plugins,
    Search,
    Track,
    Tracks,
    Traffic,
    TrafficRow,
)
from oscbridge.typedefs import LIVE_STATES, PLUGIN_ID_PREFIX, ErrorCode

MAPPING = "/bridge/mapping/list"
PLUGINS = "/bridge/plugins"
LEVELS = "/bridge/levels"
TAIL = "/bridge/debug/tail"
RECENT = "/bridge/debug/recent"

FRESH_SECONDS = 1.0  # the plugins send every 41 ms; a second without an update means they stopped
SILENT_DBFS = -90.0  # digital silence reads -100 (sqrt(1e-10)); any real signal, even a quiet tail, is above
NEAR_FULL_SCALE_DBFS = -6.0  # a sine's peak is 3 dB above its RMS and music's 10-20 dB: no room left for peaks
LEVELS_EVERY = 0.05  # seconds between reads while watching the levels (the plugins update every 41 ms)
PAGE = 500  # rows per /bridge/debug/tail or /bridge/debug/recent request (their maximum)
MAX_PAGES = 4  # pages of stored traffic read for one track_traffic call (2,000 rows)
LEVELS_NOTE = (
    "rms_dbfs is 20*log10 of the RMS the plugin measured over its last audio block, after its GAIN (-100 = digital "
    "silence); the four bands are FFT levels in dB (20-250 Hz, 250-2000 Hz, 2-8 kHz, 8-20 kHz). The plugins measure "
    "no sample peak, so clipping can only be inferred: max_rms_dbfs is the highest RMS read while watching, and "
    "near_full_scale flags an RMS within 6 dB of full scale. Values that are not fresh are frozen: the host stopped "
    "processing that track (stopped transport, muted strip) or the plugin is gone.")
TRAFFIC_NOTE = (
    "Control traffic only: what the bridge sent the plugin (osc_out), what it sent back (osc_in), events about it and "
    "entries that clients logged naming it. Level telemetry (about 49 datagrams a second per plugin) is not stored "
    "here; get_levels reads it.")


@dataclass(frozen=True)
class Target:
    """The track a tool acts on or asks about."""

    plugin_id: str
    track_number: int | None = None
    track_name: str | None = None
    port: int | None = None

    @property
    def label(self) -> str:
        if self.track_number is None:
            return f"{self.plugin_id} (not mapped to a track)"
        return f"track {self.track_number} '{self.track_name}' ({self.plugin_id})"


def iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat()


async def _named_rows(link: BridgeLink, address: str, *args: Any) -> list[dict[str, Any]]:
    return [named(address, row) for row in await link.rows(address, *args)]


async def project_name(link: BridgeLink) -> str:
    return str(named("/bridge/project/current", await link.call("/bridge/project/current"))["project_name"])


# -- tracks ----------------------------------------------------------------------------------------------------


def _instance_for(plugin_id: str, instance_id: str | None, plugins: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The plugin instance that carries a track id: the live one the mapping names, else any (a gone one)."""
    carrying = [p for p in plugins if p["plugin_id"] == plugin_id]
    live = [p for p in carrying if p["instance_id"] == instance_id or p["state"] in LIVE_STATES]
    return next(iter(live or carrying), None)


async def tracks(link: BridgeLink) -> Tracks:
    """`/bridge/mapping/list` with the state of the plugin on each track (`/bridge/plugins`)."""
    project = await project_name(link)
    mapping = await _named_rows(link, MAPPING)
    plugins = await _named_rows(link, PLUGINS)
    listed = []
    for row in mapping:
        instance = _instance_for(row["plugin_id"], none_for_absent(row["instance_id"]), plugins)
        listed.append(Track(track_number=row["track_number"], track_name=row["track_name"],
                            plugin_id=row["plugin_id"], plugin_state=instance["state"] if instance else "none",
                            port=none_for_absent(row["port"]), instance_id=none_for_absent(row["instance_id"]),
                            seconds_since_heard=none_for_absent(instance["seconds_since_heard"]) if instance else None))
    return Tracks(project=project, tracks=listed)


def _list_of(mapping: list[dict[str, Any]]) -> str:
    shown = ", ".join(f"{m['track_number']} '{m['track_name']}' ({m['plugin_id']})" for m in mapping[:20])
    return shown + (f" and {len(mapping) - 20} more" if len(mapping) > 20 else "")


def resolve(track: int | str, mapping: list[dict[str, Any]], plugins: list[dict[str, Any]]) -> Target:
    """The track meant by a number (3, "3"), a track id ("TR3", "tr3") or a name ("Kick", any case); a `Problem`
    naming the project's tracks when there is none such (or several of that name)."""
    text = str(track).strip()
    if isinstance(track, int) or text.isdigit():
        number = track if isinstance(track, int) else int(text)
        found = [m for m in mapping if m["track_number"] == number]
    elif re.fullmatch(f"{PLUGIN_ID_PREFIX}\\d+", text, re.IGNORECASE):
        plugin_id = text.upper()
        found = [m for m in mapping if m["plugin_id"] == plugin_id]
        if not found and any(p["plugin_id"] == plugin_id and p["state"] in LIVE_STATES for p in plugins):
            return Target(plugin_id)  # a live plugin carries it, but no track is mapped to it
    else:
        found = [m for m in mapping if m["track_name"].casefold() == text.casefold()]
        if len(found) > 1:
            raise Problem(f"Several tracks are named {text!r}: {_list_of(found)}. Give the track number instead.")
    if not found:
        if not mapping:
            raise Problem(f"There is no track {text!r}: no track of this project is mapped to a plugin yet. The "
                          "plugins must be calibrated first: ask the user to run `oscbridge calibrate` or use the "
                          "Calibration view of Mission Control (`oscbridge ui`).")
        raise Problem(f"There is no track {text!r} in this project. Its tracks are {_list_of(mapping)}. Give a "
                      "track number, a track id (TRn) or a track name from list_tracks.")
    row = found[0]
    return Target(row["plugin_id"], row["track_number"], row["track_name"], none_for_absent(row["port"]))


async def find_track(link: BridgeLink, track: int | str) -> tuple[Target, list[dict[str, Any]]]:
    """The track meant by `track`, and `/bridge/plugins` as read for it."""
    mapping = await _named_rows(link, MAPPING)
    plugins = await _named_rows(link, PLUGINS)
    return resolve(track, mapping, plugins), plugins


# -- levels ----------------------------------------------------------------------------------------------------


async def levels(link: BridgeLink, window: float, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> Levels:
    """`/bridge/levels` with the track of each, read once, or every 50 ms for `window` seconds (the last read is
    reported, with the highest RMS seen)."""
    mapping = {m["plugin_id"]: m for m in await _named_rows(link, MAPPING)}
    current = await _named_rows(link, LEVELS)
    highest = {row["plugin_id"]: row["rms_dbfs"] for row in current}
    deadline = clock() + window
    while clock() < deadline:
        await sleep(min(LEVELS_EVERY, max(0.0, deadline - clock())))
        current = await _named_rows(link, LEVELS)
        for row in current:
            highest[row["plugin_id"]] = max(highest.get(row["plugin_id"], row["rms_dbfs"]), row["rms_dbfs"])
    listed = []
    for row in current:
        track = mapping.get(row["plugin_id"], {})
        loudest = highest[row["plugin_id"]]
        listed.append(Level(**row, track_number=track.get("track_number"), track_name=track.get("track_name"),
                            max_rms_dbfs=loudest, fresh=row["seconds_since_update"] < FRESH_SECONDS,
                            silent=loudest <= SILENT_DBFS, near_full_scale=loudest >= NEAR_FULL_SCALE_DBFS))
    return Levels(levels=listed, window_seconds=window, note=LEVELS_NOTE)


# -- plugins ---------------------------------------------------------------------------------------------------


def plugin_health(state: str, seconds: float | None) -> str:
    """What a plugin's state means, and what to do about it."""
    if state == "identified":
        if seconds is not None and seconds < 3.0:
            return "ok: on its track and streaming levels"
        heard = "never heard since the bridge started" if seconds is None else f"silent for {seconds:.0f} s"
        return (f"{heard}: Logic may be busy or the plugin removed; the bridge probes it and marks it gone after "
                "missed probes")
    if state == "bound":
        return "waiting for calibration: it has a port but no track id yet (run the calibration)"
    if state in ("requesting", "assigned"):
        return "negotiating its port with the bridge (takes well under a second)"
    if state == "failed":
        return "failed: it could not bind the port it was given and is deaf; reload the plugin in Logic"
    return "gone: not heard from for several probes; it was removed or its project closed (listed for 10 minutes)"


async def plugins(link: BridgeLink) -> Plugins:
    """`/bridge/plugins` with the track each plugin's track id is mapped to, and `/bridge/health`."""
    mapping = {m["plugin_id"]: m for m in await _named_rows(link, MAPPING)}
    listed = []
    for row in await _named_rows(link, PLUGINS):
        track = mapping.get(row["plugin_id"], {})
        seconds = none_for_absent(row["seconds_since_heard"])
        listed.append(Plugin(instance_id=row["instance_id"], port=none_for_absent(row["port"]), state=row["state"],
                             plugin_id=none_for_absent(row["plugin_id"]), track_number=track.get("track_number"),
                             track_name=track.get("track_name"), seconds_since_heard=seconds,
                             health=plugin_health(row["state"], seconds)))
    health = [HealthFact(**row) for row in await _named_rows(link, "/bridge/health")]
    return Plugins(plugins=listed, bridge=health)


# -- the conversation ------------------------------------------------------------------------------------------


async def search(link: BridgeLink, query: str, limit: int) -> Search:
    """`/bridge/context/search`, and whether Ollama answered (without it the search matches words, not meaning)."""
    found = [Found(**row) for row in await _named_rows(link, "/bridge/context/search", query, limit)]
    semantic = bool(named("/bridge/status", await link.call("/bridge/status"))["ollama_up"])
    note = None if semantic else (
        "Ollama (the embedding model) is not answering, so this search matched keywords, recent messages and key "
        "decisions only, not meaning: try other words for the same thing. For search by meaning, ask the user to "
        "start Ollama (`ollama serve`).")
    return Search(query=query, results=found, semantic=semantic, note=note)


async def messages(link: BridgeLink, limit: int, whole_project: bool) -> Messages:
    rows = await _named_rows(link, "/bridge/message/recent", limit, int(not whole_project))
    return Messages(scope="project" if whole_project else "session",
                    messages=[Message(**{**row, "key_decision": bool(row["key_decision"])}) for row in rows])


# -- traffic ---------------------------------------------------------------------------------------------------


def _concerns(row: dict[str, Any], target: Target, instances: set[str], ports: set[int]) -> bool:
    """Whether a debug row is about the track: it names its track id or one of its plugin instances, or was sent
    to (or from) its plugin's port."""
    words = set(re.split(r"[\s,]+", row["content"]))
    ends = {f":{port}" for port in ports}
    return (target.plugin_id in words or target.plugin_id in (row["sender"], row["receiver"])
            or any(instance in row["content"] for instance in instances)
            or any(row[side].endswith(end) for side in ("sender", "receiver") for end in ends))


async def _stored_before(link: BridgeLink, cursor: str, start: float) -> tuple[list[dict[str, Any]], str]:
    """Rows older than the live tail's, from the database, back to `start`; and a note when not all were read."""
    older: list[dict[str, Any]] = []
    try:
        for _ in range(MAX_PAGES):
            page = await _named_rows(link, RECENT, PAGE, cursor)
            for row in page:
                row["time"] = datetime.fromisoformat(row["created_at"]).timestamp()
            older += [row for row in page if row["time"] >= start]
            if len(page) < PAGE or page[-1]["time"] < start:
                return older, ""
            cursor = page[-1]["cursor"]
    except CallFailed as exc:
        if exc.code != ErrorCode.UNAVAILABLE:
            raise
        return older, " Older rows of this window are in the database, which cannot be read right now."
    return older, f" Only the newest {PAGE * (MAX_PAGES + 1)} rows of all tracks were searched; ask for fewer seconds."


async def traffic(link: BridgeLink, track: int | str, seconds: float, limit: int,
                  clock: Callable[[], float] = time.time) -> Traffic:
    """The control traffic of one track in the last `seconds`: the live tail (`/bridge/debug/tail`, the newest
    rows, from memory) and, when the window reaches further back, the stored rows before it
    (`/bridge/debug/recent`, paged from the tail's oldest row)."""
    target, plugins = await find_track(link, track)
    carrying = [p for p in plugins if p["plugin_id"] == target.plugin_id]
    instances = {p["instance_id"] for p in carrying}
    ports = {p["port"] for p in carrying if p["port"] != -1} | ({target.port} if target.port else set())
    start = clock() - seconds
    rows = await _named_rows(link, TAIL, 0, PAGE)
    window = [row for row in rows if row["time"] >= start]
    note = ""
    if len(rows) == PAGE and rows[0]["time"] >= start:  # the window reaches past the tail
        older, note = await _stored_before(link, rows[0]["id"], start)
        window = older[::-1] + window
    matching = [row for row in window if _concerns(row, target, instances, ports)]
    if len(matching) > limit:
        note += f" {len(matching) - limit} older matching rows were left out (limit {limit})."
        matching = matching[-limit:]
    return Traffic(track=target.label, seconds=seconds, note=TRAFFIC_NOTE + note,
                   rows=[TrafficRow(time=iso(row["time"]), type=row["type"], sender=row["sender"],
                                    receiver=row["receiver"], severity=row["severity"], content=row["content"])
                         for row in matching])


# -- resources -------------------------------------------------------------------------------------------------


async def sessions(link: BridgeLink) -> list[dict[str, Any]]:
    """The current project's sessions in which something was said (and the running one), newest first."""
    rows = await _named_rows(link, "/bridge/session/list", 1000)
    return [{**row, "active": bool(row["active"]), "ended_at": row["ended_at"] or None,
             "conversation": f"oscbridge://sessions/{row['session_id']}/conversation"}
            for row in rows if row["messages"] or row["lines"] or row["active"]]


def _entry(row: dict[str, Any]) -> str:
    when = row["created_at"][:19].replace("T", " ")
    if row["kind"] == "message":
        who = row["role"] + (f" ({row['model']})" if row["model"] else "")
        if row["key_decision"]:
            who += " [key decision" + (f": {row['decision_summary']}" if row["decision_summary"] else "") + "]"
    else:
        who = f"{row['role']}, {row['display_type']}"
    body = row["content"].replace("\n", "\n  ")
    return f"- {when} UTC · {who}: {body}"


async def transcript(link: BridgeLink, session_id: str) -> str:
    """One session's conversation as Markdown: the messages of the conversation memory and the lines the user saw
    (chat, actions, status), in time order."""
    rows = await _named_rows(link, "/bridge/session/conversation", session_id, 5000)
    head = f"# Session {session_id} of {await project_name(link)}\n\n"
    if not rows:
        return head + "Nothing was said in this session.\n"
    return head + "\n".join(_entry(row) for row in rows) + "\n"


async def snapshots(link: BridgeLink) -> list[dict[str, Any]]:
    return await _named_rows(link, "/bridge/snapshot/list", 1000)
