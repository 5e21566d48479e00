"""A PostgreSQL server seen from outside, by its data directory: whether one runs there, and asking it to stop.

The helper wheel stops the servers it started when its last user exits cleanly; these are for the paths where no
clean exit happens: the second Ctrl-C (`os._exit`) and the clean-up of an upgrade that such an exit cut short.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether process `pid` exists (one of another user, e.g. the server's `pgserver` user, counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def postmaster_pid(datadir: Path) -> int | None:
    """The pid of the server running in `datadir`, from its postmaster.pid, or None when none is running: the file
    names no live process, or one that is not a PostgreSQL server (a file left by a crash, and its pid taken by
    another program since the machine restarted)."""
    try:
        pid = int((datadir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    return pid if alive(pid) and _is_postgres(pid) else None


def _is_postgres(pid: int) -> bool:
    """Whether process `pid` runs PostgreSQL's server, by its command name (`ps`, the same on macOS and Linux).
    Without `ps` to ask, the pid file is believed."""
    try:
        shown = subprocess.run(["ps", "-o", "comm=", "-p", str(pid)], capture_output=True, text=True, timeout=5,
                               check=False)
    except (OSError, subprocess.SubprocessError):
        return True
    return "postgres" in shown.stdout  # "postgres" on Linux, the binary's path on macOS


def ask_to_stop(datadir: Path) -> int | None:
    """Asks the server in `datadir` for a fast shutdown (SIGINT: open transactions are rolled back and a checkpoint
    is written, so its next start needs no crash recovery) without waiting; returns its pid, None when none runs."""
    pid = postmaster_pid(datadir)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return None
    return pid


def stop_and_wait(datadir: Path, timeout: float) -> bool:
    """Asks the server in `datadir` to stop and waits up to `timeout` seconds; True when none runs any more."""
    pid = ask_to_stop(datadir)
    deadline = time.monotonic() + timeout
    while pid is not None and alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return pid is None or not alive(pid)
