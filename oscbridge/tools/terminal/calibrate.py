"""`oscbridge calibrate`: learn which plugin sits on which Logic track, step by step, saying what happened.

The bridge does the OSC (/bridge/calibrate/*, docs/plugin-hub.md "Calibration"); a person does what only Logic
can, unmuting one track at a time. The steps: the tone on (each bound plugin without a track id plays it), a probe
(the RMS level of each of those plugins, loudest first: the one on the unmuted track stands out), the choice of
the loudest, the assignment of a track id and track to it (the bridge replies once the plugin confirmed that
track id), and the tone off.

* With no step flags, on a terminal: asks for each track in turn, then switches the tone off.
* `--tone on|off`, `--probe`: one step. `--assign TRn --track N [--name NAME]`: tone on, probe, choose the
  loudest (or `--instance ID`, without a probe), assign, tone off (`--no-tone`: leave the tone to the caller).

Each step prints a line (the probe a table); with `--json`, one document `{"steps": [...]}` at the end. When a
step fails the tone is still switched off if this command switched it on, the document (with the failed step)
is still printed, and the error goes to stderr with exit code 1.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from rich.prompt import Confirm, Prompt

from oscbridge.flags import add_bridge_client_flags
from oscbridge.tools.terminal import session
from oscbridge.tools.terminal.columns import LISTS, named
from oscbridge.tools.terminal.output import Output

PROBE = "/bridge/calibrate/probe"
# The bridge waits for the plugin's confirmation, resending about once a second, 3 times (assign_retries).
ASSIGN_TIMEOUT = 15.0
EXIT_USAGE = 2
# The loudest plugin must be this much louder than the next to be taken for the unmuted track. A muted strip is
# not rendered, so its level stays where it was (silence, -100 dBFS, when calibration muted it before the tone);
# the tone plays at -10 dB (about -13 dBFS RMS). Two plugins within 10 dB of each other are two unmuted tracks.
MIN_MARGIN_DB = 10.0

Ask = Callable[[str, str], str]  # (question, default) -> answer
T = TypeVar("T")


class NoChoice(Exception):
    """The probe found no plugin that is clearly the one on the unmuted track."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bridge_client_flags(parser)
    parser.add_argument("--tone", choices=("on", "off"), help="only switch the calibration tone on or off")
    parser.add_argument("--probe", action="store_true", help="only probe: the level of each plugin without a track")
    parser.add_argument("--assign", metavar="TRn", help="give this track id to the loudest plugin (or --instance)")
    parser.add_argument("--track", type=int, help="the Logic track number for --assign")
    parser.add_argument("--name", default="", help="the Logic track name for --assign")
    parser.add_argument("--instance", help="assign to this instance id instead of the loudest of a probe")
    parser.add_argument("--no-tone", dest="tone_around", action="store_false",
                        help="with --assign: do not switch the tone on before and off after")
    parser.add_argument("--frequency", type=float, default=137.0, help="tone frequency in Hz (default 137)")
    parser.add_argument("--level", type=float, default=-10.0, help="tone level in dB (default -10)")
    parser.add_argument("--json", action="store_true", help="print one JSON document with the steps")


def run(ns: argparse.Namespace) -> int:
    steps = [ns.tone is not None, ns.probe, ns.assign is not None]
    if sum(steps) > 1:
        session.fail("calibrate: give one of --tone, --probe or --assign")
        return EXIT_USAGE
    if ns.assign is not None and ns.track is None:
        session.fail("calibrate --assign needs --track N (the Logic track number)")
        return EXIT_USAGE
    if not any(steps) and (ns.json or not sys.stdin.isatty()):
        session.fail("calibrate asks its questions on a terminal; without one, use --tone, --probe or --assign "
                     "(see `oscbridge calibrate --help`)")
        return EXIT_USAGE
    tone = (ns.frequency, ns.level)
    if ns.tone is not None:
        body: session.Body = partial(one_step, step=lambda c: c.tone(ns.tone == "on"), tone=tone)
    elif ns.probe:
        body = partial(one_step, step=lambda c: c.probe(), tone=tone)
    elif ns.assign is not None:
        body = partial(assign_one, plugin=ns.assign, track=ns.track, name=ns.name, instance=ns.instance,
                       tone_around=ns.tone_around, tone=tone)
    else:
        body = partial(interactive, tone=tone)
    return session.run(ns, body)


class Calibration:
    """The steps, each printed as it happens (or kept for the JSON document)."""

    def __init__(self, bridge: session.Session, out: Output, tone: tuple[float, float]) -> None:
        self.bridge = bridge
        self.out = out
        self.frequency, self.level = tone
        self.steps: list[dict[str, Any]] = []
        self.tone_on = False

    def record(self, step: dict[str, Any], text: str = "") -> None:
        """Keeps a step for the JSON document and prints what happened (a failed step is told by whoever catches
        its exception: once, on stderr, or in red between the questions)."""
        self.steps.append(step)
        if text and not self.out.json_mode:
            self.out.line(text)

    async def tone(self, on: bool) -> int:
        args = (1, self.frequency, self.level) if on else (0,)
        try:
            acknowledged, *_ = await self.bridge.call("/bridge/calibrate/tone", *args)
        except session.ReplyError as exc:
            self.failed("tone", exc, on=on)
            raise
        self.tone_on = on
        what = f"tone on ({self.frequency:g} Hz, {self.level:g} dB)" if on else "tone off"
        self.record({"step": "tone", "on": on, "acknowledged": acknowledged},
                    f"{what}: {acknowledged} plugin{'s' if acknowledged != 1 else ''} acknowledged")
        return int(acknowledged)

    async def probe(self) -> list[dict[str, Any]]:
        try:
            rows = [named(PROBE, values) for values in await self.bridge.rows(PROBE)]
        except session.ReplyError as exc:
            self.failed("probe", exc)
            raise
        self.steps.append({"step": "probe", "plugins": rows})
        if not self.out.json_mode:
            table = self.out.table("Probe: plugins without a track id, loudest first", LISTS[PROBE],
                                   right=("port", "rms_dbfs"))
            for row in rows:
                table.add_row(row["instance_id"], str(row["port"]), f"{row['rms_dbfs']:.1f}")
            self.out.show(table)
            if not rows:
                self.out.line("No bound plugin without a track id answered.", style="dim")
        return rows

    def choose(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The loudest plugin, if it stands out by MIN_MARGIN_DB; raises NoChoice otherwise."""
        if not rows:
            self.record({"step": "choose", "error": "not_found"})
            raise NoChoice("no bound plugin without a track id answered the probe (all have a track id, or none "
                           "is running)")
        loudest = rows[0]
        facts = {"step": "choose", "instance_id": loudest["instance_id"], "port": loudest["port"],
                 "rms_dbfs": loudest["rms_dbfs"]}
        where = f"{loudest['instance_id']} on port {loudest['port']} at {loudest['rms_dbfs']:.1f} dBFS"
        if len(rows) == 1:
            self.record({**facts, "margin_db": None}, f"choose: {where}, the only one that answered")
            return loudest
        margin = loudest["rms_dbfs"] - rows[1]["rms_dbfs"]
        if margin < MIN_MARGIN_DB:
            self.record({**facts, "margin_db": margin, "error": "no_clear_loudest"})
            raise NoChoice(f"no plugin stands out: the loudest, {where}, is only {margin:.1f} dB above the next; "
                           "unmute exactly one track (with the tone on), then probe again")
        self.record({**facts, "margin_db": margin}, f"choose: {where}, {margin:.1f} dB above the next")
        return loudest

    async def assign(self, instance: str, plugin: str, track: int, name: str) -> None:
        step = {"step": "assign", "instance_id": instance, "plugin_id": plugin, "track_number": track,
                "track_name": name}
        try:
            await self.bridge.call("/bridge/calibrate/assign", instance, plugin, track, name, timeout=ASSIGN_TIMEOUT)
        except session.ReplyError as exc:
            self.failed("assign", exc, **step)
            raise
        mapped = await self.bridge.call("/bridge/mapping/track", plugin)
        port = named("/bridge/mapping/track", mapped)["port"]
        self.record({**step, "confirmed": True, "port": port},
                    f"assign: {plugin} confirmed by plugin {instance}" + (f" on port {port}" if port != -1 else "")
                    + f"; track {track} {name!r}")

    def failed(self, name: str, exc: session.ReplyError, **facts: Any) -> None:
        self.record({**facts, "step": name, "error": exc.code, "message": exc.message})

    def finish(self) -> None:
        if self.out.json_mode:
            self.out.json({"steps": self.steps})


async def one_step(bridge: session.Session, out: Output, step: Callable[[Calibration], Any],
                   tone: tuple[float, float]) -> int:
    calibration = Calibration(bridge, out, tone)
    try:
        await step(calibration)
    finally:
        calibration.finish()
    return 0


async def assign_one(bridge: session.Session, out: Output, plugin: str, track: int, name: str,
                     instance: str | None, tone_around: bool, tone: tuple[float, float]) -> int:
    calibration = Calibration(bridge, out, tone)
    try:
        if tone_around:
            await calibration.tone(True)
        if instance is None:
            instance = calibration.choose(await calibration.probe())["instance_id"]
        await calibration.assign(instance, plugin, track, name)
        return 0
    except NoChoice as exc:
        session.fail(f"calibrate: {exc}")
        return session.EXIT_FAILED
    finally:
        if calibration.tone_on:
            await calibration.tone(False)
        calibration.finish()


async def interactive(bridge: session.Session, out: Output, tone: tuple[float, float],
                      ask: Ask | None = None, confirm: Callable[[str], bool] | None = None) -> int:
    """Asks for each track in turn; `ask` and `confirm` read the answers (rich's prompts on the terminal)."""
    ask = ask or (lambda question, default: interruptible(partial(
        Prompt.ask, question, default=default, show_default=bool(default), console=out.console)))
    confirm = confirm or (lambda question: interruptible(partial(
        Confirm.ask, question, default=True, console=out.console)))
    calibration = Calibration(bridge, out, tone)
    out.line("Calibration: every plugin without a track id plays a tone. Unmute one track at a time in Logic "
             "(mute the others); the loudest plugin gets that track.", style="bold")
    try:
        await calibration.tone(True)
        track = 1
        while True:
            answer = ask("Track number, or q to finish", str(track)).strip()
            if answer.lower() in ("q", "quit"):
                return 0
            if not answer.isdigit() or int(answer) < 1:
                out.line(f"{answer!r} is not a track number (1, 2, ...)", style="red")
                continue
            track = int(answer)
            name = ask("Track name", "").strip()
            plugin = ask("Track id", f"TR{track}").strip()
            if await _one_track(calibration, ask, confirm, track, name, plugin):
                track += 1
    finally:
        if calibration.tone_on:
            await calibration.tone(False)
        calibration.finish()


def interruptible(prompt: Callable[[], T]) -> T:
    """Runs a blocking prompt with Python's own Ctrl-C handling. asyncio.run's handler only cancels the task at its
    next await, so Ctrl-C at a prompt would be noticed one answer later; this way it ends the prompt at once, and
    the tone is still switched off on the way out."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return prompt()
    finally:
        signal.signal(signal.SIGINT, previous)


async def _one_track(calibration: Calibration, ask: Ask, confirm: Callable[[str], bool], track: int, name: str,
                     plugin: str) -> bool:
    """Probes until one plugin stands out (or the person skips the track), then assigns; True once confirmed."""
    out = calibration.out
    while True:
        answer = ask(f"Unmute track {track} in Logic, mute the others, then press Enter to probe (s to skip)", "")
        if answer.strip().lower() == "s":
            return False
        try:
            loudest = calibration.choose(await calibration.probe())
        except NoChoice as exc:
            out.line(str(exc), style="red")
            continue
        if not confirm(f"Give {plugin} (track {track}) to {loudest['instance_id']}?"):
            return False
        try:
            await calibration.assign(loudest["instance_id"], plugin, track, name)
        except session.ReplyError as exc:
            out.line(f"error {exc.code}: {exc.message}", style="red")
            return False  # the person may try the track again
        return True
