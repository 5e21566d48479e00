"""What the MCP tools that act do (only offered with `--allow-control`, or `mcp_allow_control` for HTTP): set a
plugin parameter, switch the calibration tone, save a message or a decision, create a snapshot.

Each checks what the bridge does not (the plugin's parameters and their ranges, which track is meant), acts through
the same `/bridge/*` request as any client, and then logs who did what to the conversation
(`/bridge/conversation/log`, display type `action`), so the musician sees it beside the chat. The log line is
written after the action succeeded; an action the log cannot follow (the spool is full) still stands, and its
result says it was not logged.
"""

from __future__ import annotations

import json
import math

from oscbridge.mcp import studio
from oscbridge.mcp.link import BridgeLink, CallFailed, Problem
from oscbridge.mcp.models import Action
from oscbridge.protocol import PARAMETERS

LOG_ROLE = "producer"  # the conversation's roles are the musician (user) and the AI side (producer)
SHOWN = 200  # characters of a saved text repeated in the log line


async def log_action(link: BridgeLink, text: str) -> bool:
    """Logs `text` to the conversation as an action; False when the bridge could not take it."""
    try:
        await link.call("/bridge/conversation/log", LOG_ROLE, text, "action")
    except CallFailed:
        return False
    return True


def _short(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= SHOWN else line[:SHOWN - 1] + "…"


def check_parameter(parameter: str, value: float) -> str:
    """The plugin's own name of `parameter` (any case), if `value` is in its range; else a `Problem`."""
    name = parameter.strip().upper()
    if name not in PARAMETERS:
        known = ", ".join(f"{p} ({low:g} to {high:g} dB)" for p, (low, high) in PARAMETERS.items())
        raise Problem(f"The AIplayer plugin has no parameter {parameter!r}; it has {known}.")
    low, high = PARAMETERS[name]
    if not (math.isfinite(value) and low <= value <= high):
        raise Problem(f"{name} takes {low:g} to {high:g} dB; {value:g} is out of range. The value is absolute: the "
                      f"plugin sets {name} to it (to lower a track by 3 dB from 0 dB, send -3).")
    return name


async def set_parameter(link: BridgeLink, who: str, track: int | str, parameter: str, value: float) -> Action:
    name = check_parameter(parameter, value)
    target, _ = await studio.find_track(link, track)
    if target.port is None and target.track_number is not None:
        raise Problem(f"{target.label} has no live plugin: it is not loaded, or the bridge has not heard from it. "
                      "list_plugins shows the plugins and their state.")
    # The bridge sends `set_parameter ,sf` to that plugin's own port: float32, the only type the plugin accepts.
    await link.call("/bridge/plugin/parameter", target.plugin_id, name, float(value))
    done = f"{who} set {name} of {target.label} to {value:g} dB"
    return Action(done=done, logged=await log_action(link, done))


async def tone(link: BridgeLink, who: str, on: bool, frequency: float, level_db: float) -> Action:
    (acknowledged,) = await link.call("/bridge/calibrate/tone", int(on), float(frequency), float(level_db))
    if on:
        done = (f"{who} started the calibration tone ({frequency:g} Hz, {level_db:g} dB) in the plugins without a "
                f"track id: {acknowledged} acknowledged")
    else:
        done = f"{who} stopped the calibration tone: {acknowledged} plugins acknowledged"
    return Action(done=done, logged=await log_action(link, done), acknowledged=acknowledged)


async def save_message(link: BridgeLink, who: str, content: str, role: str, decision_summary: str) -> Action:
    decision = bool(decision_summary.strip())
    (message_id,) = await link.call("/bridge/message/save", role, content, "", int(decision), decision_summary, 1)
    done = (f"{who} saved a key decision: {_short(decision_summary)}" if decision
            else f"{who} saved a message as {role}: {_short(content)}")
    return Action(done=done, logged=await log_action(link, done), id=message_id)


async def snapshot(link: BridgeLink, who: str, name: str, description: str) -> Action:
    """A snapshot of the current session's messages, with the tracks and their levels at this moment as its track
    state."""
    tracks = await studio.tracks(link)
    levels = await studio.levels(link, 0.0)
    state = {"project": tracks.project, "taken_by": who, "tracks": [t.model_dump() for t in tracks.tracks],
             "levels": [level.model_dump(exclude={"max_rms_dbfs"}) for level in levels.levels]}
    (snapshot_id,) = await link.call("/bridge/snapshot/create", name, description, json.dumps(state))
    done = f"{who} created the snapshot '{_short(name)}'"
    return Action(done=done, logged=await log_action(link, done), id=snapshot_id)
