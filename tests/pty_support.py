"""`python -m oscbridge ...` with its stderr on a pseudo-terminal (as in a person's shell) or on a pipe (as under
launchd, in a file or in a script), stdout always on a pipe; and everything it wrote to either."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Mapping

# Colour (SGR) and cursor codes, as Rich and structlog write them.
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# What decides, in Rich or here, whether a terminal gets colour or progress: cleared, so that the developer's own
# settings cannot change a test's outcome.
TERMINAL_VARIABLES = ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES")


def terminal_env(env: Mapping[str, str], **extra: str) -> dict[str, str]:
    """`env` without the variables above, as an xterm would have it, plus `extra`."""
    clean = {key: value for key, value in env.items() if key not in TERMINAL_VARIABLES}
    return {**clean, "TERM": "xterm-256color", **extra}


def plain(text: str) -> str:
    """`text` without escape codes, with the terminal's CR LF line ends (and Rich's CR redraws) as LF."""
    return ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "\n")


class Run:
    """One `oscbridge` command in a subprocess; `stderr` on a 160-column pseudo-terminal when `terminal`."""

    def __init__(self, *args: str, env: Mapping[str, str], terminal: bool) -> None:
        self.stdout = b""
        self.stderr = b""
        self._master: int | None = None
        command = [sys.executable, "-m", "oscbridge", *args]
        if terminal:
            master, follower = os.openpty()
            fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=follower, env=dict(env))
            os.close(follower)  # ours; the child's copy closing is the end of its output
            self._master = err_fd = master
        else:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=dict(env))
            assert self.proc.stderr is not None
            err_fd = self.proc.stderr.fileno()
        assert self.proc.stdout is not None
        self._open = {self.proc.stdout.fileno(): "stdout", err_fd: "stderr"}

    @property
    def error_text(self) -> str:
        return self.stderr.decode(errors="replace")

    def _read_some(self, timeout: float) -> None:
        ready, _, _ = select.select(list(self._open), [], [], timeout)
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: every process holding the terminal's other end has closed it
                chunk = b""
            if not chunk:
                del self._open[fd]
            elif self._open[fd] == "stdout":
                self.stdout += chunk
            else:
                self.stderr += chunk

    def read_until(self, pattern: re.Pattern[str], timeout: float = 60) -> None:
        """Reads until `pattern` is in stderr (escape codes removed)."""
        deadline = time.monotonic() + timeout
        while not pattern.search(plain(self.error_text)):
            if not self._open or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"no {pattern.pattern!r} on stderr (exit {self.proc.wait()}): {self.error_text}")
            self._read_some(0.2)

    def finish(self, stop: bool = False, timeout: float = 60) -> int:
        """Sends SIGTERM if `stop`, reads everything to the end, and returns the exit status."""
        if stop:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        try:
            while self._open:
                if time.monotonic() > deadline:
                    raise AssertionError(f"still running after {timeout} s: {self.error_text}")
                self._read_some(0.2)
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
            if self._master is not None:
                os.close(self._master)
