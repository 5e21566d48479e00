"""Progress of long work (`migrate-sqlite`, `replay`) on a terminal, and nothing at all otherwise.

A person who starts a long import or replay at a terminal wants to see that it moves, how fast, and how long it
has left; a script that pipes the command wants exactly the output it got before. So the progress line (Rich's
`rich.progress`) goes to stderr, and only when stderr is a terminal: stdout is the same either way, and a pipe,
a file or launchd gets no progress at all. Rich leaves out colours itself under NO_COLOR.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

# How often the count is handed to Rich at most. Rich takes ~1.4 us an update (a lock, a speed sample); a replay
# at --speed 0 sends a datagram every few microseconds, so updating it on each would slow the replay by a third,
# while checking the clock costs ~0.05 us. Rich redraws ten times a second anyway.
_PUSH_INTERVAL = 0.1


class Progress:
    """Counts work done. This one shows nothing: what a pipe, a file, a script or a library caller gets.

    `shown` says whether anybody sees the count, so that a caller can skip work done only for the display
    (counting a recording's datagrams beforehand, say)."""

    shown = False

    def start(self, total: int) -> None:
        """The work begins: `total` units are to be done."""

    def advance(self, count: int = 1) -> None:
        """`count` more units are done."""


SILENT = Progress()


class _RateColumn(ProgressColumn):
    """Units a second, as Rich measures them over the last half minute ("1,234 rows/s")."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self._unit = unit

    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text(f"{speed:,.0f} {self._unit}/s" if speed is not None else f"? {self._unit}/s",
                    style="progress.data.speed")


class _TimeColumn(ProgressColumn):
    """The time left while the work runs ("0:01:20 left"), the time it took once it is done ("took 0:03:05")."""

    def render(self, task: Task) -> Text:
        if task.finished and task.finished_time is not None:
            return Text(f"took {_clock(task.finished_time)}", style="progress.elapsed")
        left = task.time_remaining
        return Text(f"{_clock(left) if left is not None else '-:--:--'} left", style="progress.remaining")


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class _TerminalProgress(Progress):
    """A Rich progress line on `stream`: description, bar, done/total, rate, and time left (or taken)."""

    shown = True

    def __init__(self, description: str, unit: str, stream: TextIO) -> None:
        # Rich would otherwise redirect stdout through its live display (onto stderr here): stdout must stay
        # exactly what it is without a terminal.
        self._rich = RichProgress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            _RateColumn(unit),
            _TimeColumn(),
            console=Console(file=stream),
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._description = description
        self._task: TaskID | None = None
        self._done = 0
        self._next_push = 0.0

    def start(self, total: int) -> None:
        if self._task is None:
            self._rich.start()  # only now: work that never starts leaves no empty line behind
            self._task = self._rich.add_task(self._description, total=total)
        else:
            self._rich.update(self._task, total=total)

    def advance(self, count: int = 1) -> None:
        self._done += count
        now = time.monotonic()
        if now >= self._next_push:
            self._next_push = now + _PUSH_INTERVAL
            self._push()

    def _push(self) -> None:
        if self._task is not None:
            self._rich.update(self._task, completed=self._done)

    def stop(self) -> None:
        if self._task is not None:
            self._push()
            self._rich.stop()  # the last state stays on the screen: what was done, at what rate


def on_terminal(stream: TextIO) -> bool:
    """Whether a person is likely watching `stream`: it is a terminal."""
    try:
        return stream.isatty()
    except ValueError:  # closed
        return False


@contextmanager
def progress(description: str, unit: str, total: int | None = None,
             stream: TextIO | None = None) -> Iterator[Progress]:
    """A progress line on stderr (or `stream`) if it is a terminal, else `SILENT`. With `total` the line starts
    at once; without, when the caller calls `start(total)` (once it knows how much there is to do)."""
    stream = sys.stderr if stream is None else stream
    if not on_terminal(stream):
        yield SILENT
        return
    shown = _TerminalProgress(description, unit, stream)
    if total is not None:
        shown.start(total)
    try:
        yield shown
    finally:
        shown.stop()
