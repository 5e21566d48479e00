"""The watchdog: a thread that ends the daemon when its event loop stops making progress.

Everything the bridge does runs on one event loop, so one bug that blocks it (a parser looping without progress,
as a 20-byte bundle once did) makes every plugin deaf, ignores SIGTERM and leaves the musician with nothing but
`kill -9`. The loop stamps a heartbeat every second; this thread checks the stamp, and when it is older than
`timeout` seconds (10 by default: no legitimate step of the daemon takes that long, the longest bounded waits are
a few seconds), it writes the stuck thread's stack to the log and to stderr and exits with `EXIT_STALLED`. launchd
restarts a daemon that exits non-zero (`KeepAlive = {SuccessfulExit: false}`), and the spool makes that safe:
every acknowledged write is on disk and is written at the next start.

The thread only reads a float and sleeps, so it costs nothing measurable; it is a daemon thread and never keeps the
process alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable

from oscbridge.logs import get_logger

log = get_logger("oscbridge.watchdog")

EXIT_STALLED = 70  # EX_SOFTWARE: an internal error; launchd restarts the daemon
HEARTBEAT = 1.0


def stack_of(thread_id: int) -> str:
    """The current stack of another thread, as traceback text (empty when the thread is gone)."""
    frame = sys._current_frames().get(thread_id)
    return "".join(traceback.format_stack(frame)) if frame is not None else ""


class Watchdog:
    """Watches one event loop from a thread. `on_stall(seconds, stack)` runs in the watchdog thread, once."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float = 10.0, *,
                 on_stall: Callable[[float, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._loop = loop
        self.timeout = timeout
        self._on_stall = on_stall or exit_stalled
        self._clock = clock
        self._beat_at = clock()
        self._loop_thread = 0
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="oscbridge-watchdog", daemon=True)
        self.fired = False

    def start(self) -> None:
        """Starts beating on the loop and watching; call from the loop's own thread."""
        self._loop_thread = threading.get_ident()
        self._beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()

    def _beat(self) -> None:
        self._beat_at = self._clock()
        self._handle = self._loop.call_later(min(HEARTBEAT, self.timeout / 4), self._beat)

    def _watch(self) -> None:
        interval = min(HEARTBEAT, self.timeout / 4)
        while not self._stop.wait(interval):
            silent = self._clock() - self._beat_at
            if silent >= self.timeout:
                self.fired = True
                self._on_stall(silent, stack_of(self._loop_thread))
                return


def exit_stalled(seconds: float, stack: str, *, before_exit: Callable[[], None] | None = None) -> None:
    """Reports the stall (log and stderr, without waiting on a log lock the stuck thread may hold) and exits."""
    report = {"event": "event_loop_stalled", "level": "critical", "seconds": round(seconds, 1), "stack": stack,
              "hint": "the bridge stopped making progress and exits so that launchd restarts it; acknowledged "
                      "writes are in the spool and are written at the next start. Please report this stack."}
    logged = threading.Thread(target=lambda: log.critical("event_loop_stalled", seconds=report["seconds"],
                                                          stack=stack, hint=report["hint"]), daemon=True)
    logged.start()
    logged.join(2.0)
    if logged.is_alive():  # the log is stuck too (the stalled thread may hold its lock): stderr at least
        with contextlib.suppress(OSError):
            os.write(2, (json.dumps(report) + "\n").encode())
    if before_exit is not None:
        before_exit()
    os._exit(EXIT_STALLED)
