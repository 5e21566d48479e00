"""Install, remove and inspect the oscbridge LaunchAgent (`oscbridge launchd install|uninstall|status|print`).

The daemon runs next to Logic Pro as a per-user LaunchAgent in the `gui/<uid>` domain, so it starts at login, is
restarted after a crash, and stops at logout. This module writes the property list with `plistlib` (never by
templating XML, so no value can break the document) and talks to `launchctl` through a small seam
(`Launchctl`) so that tests drive it with a recording stand-in on any OS.

Choices made in the plist, and why:

* `KeepAlive = {SuccessfulExit: false}`: restart after a crash or a non-zero exit, but not after a clean exit,
  so `kill -TERM` or a deliberate stop is respected. launchd documents that this implies `RunAtLoad`; it is
  also set explicitly so that readers of the file do not need to know that.
* `ThrottleInterval = 10`: launchd's own default, written down. It is a minimum run time, not a back-off: a
  daemon that dies after 3 s is respawned 7 s later, so a crash loop costs at most one start every 10 s.
* `ExitTimeOut = 15`: SIGTERM to SIGKILL grace. The daemon promises to drain and stop within 10 s
  (BRIDGE-API.md); 15 s leaves room for a slow disk without letting a wedged process block logout for long.
* `ProcessType = Standard` and `Nice = 5`: see `DEFAULT_PROCESS_TYPE` below.
* `LimitLoadToSessionType = Aqua`: the daemon serves Logic Pro, which only runs in a GUI login session. Saying
  so keeps a second copy from being loaded into an SSH (`StandardIO`) or `Background` session, where it would
  fight the GUI copy for UDP/TCP port 8999.
* `StandardOutPath`/`StandardErrorPath` under `~/Library/Logs/oscbridge/`: launchd opens these once at spawn and
  never reopens them, so rename-based rotation would keep writing to the old file. The structured log therefore
  goes to `OSCBRIDGE_LOG_FILE` (rotated inside the daemon by `oscbridge.logs`), and the two launchd files only
  catch what is printed before logging is set up (a traceback at import time, say).
* `WorkingDirectory` = the data directory: launchd runs a job in `/` when it is missing, and a working directory
  that contains an `oscbridge/` folder (a source checkout) would shadow the installed package under `-m`.

Secrets: the plist is a world-readable file in `~/Library/LaunchAgents` and its environment is visible to any
process of the user through `launchctl print`. It therefore never contains a password. A password in
`OSCBRIDGE_DATABASE_URL` (or in any other URL that is copied) is removed from the URL and the user is told; the
daemon gets the password from `~/.pgpass` (mode 0600), which asyncpg reads by itself when the URL has none
(`PGPASSFILE` may point elsewhere). `PGPASSWORD` and anything named like a secret are never copied.
"""

from __future__ import annotations

import argparse
import os
import plistlib
import re
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO, get_args

from oscbridge import config
from oscbridge.redact import strip_password

LABEL = "com.chattychannels.oscbridge"
LAUNCHCTL = "/bin/launchctl"

ProcessType = Literal["Standard", "Background", "Adaptive", "Interactive"]
PROCESS_TYPES: tuple[str, ...] = get_args(ProcessType)

# Why Standard (and not Background, Adaptive or Interactive):
# * Logic Pro renders audio on real-time (time-constraint) threads, which the kernel runs ahead of every ordinary
#   thread whatever the ProcessType of the other process. No ProcessType lets this daemon take CPU from them;
#   what it can disturb is Logic's ordinary threads and its disk streaming.
# * Background would clamp the daemon (and the embedded PostgreSQL it starts) to throttled I/O, efficiency cores
#   and coalesced timers. OSC replies would be late under load, and a burst of datagrams could overflow the
#   socket buffer while the process waits to be scheduled: those drops are silent. Plugins wait for
#   `port_assignment` and friends, so this latency is user-visible.
# * Adaptive switches by XPC activity; this daemon has none, so it would behave like Background.
# * Interactive lifts even the light limits of Standard, which buys nothing for a loopback UDP service and lets
#   an HNSW index build or a vacuum compete with Logic on equal terms.
# Standard plus Nice 5 leaves latency-sensitive work on ordinary scheduling, while Logic's ordinary threads win
# any tie for the CPU. A user who sees System Overload in Logic can install with `--process-type Background`.
DEFAULT_PROCESS_TYPE: ProcessType = "Standard"
NICE = 5
THROTTLE_INTERVAL = 10
EXIT_TIMEOUT = 15
SESSION_TYPE = "Aqua"

# launchd gives jobs PATH=/usr/bin:/bin:/usr/sbin:/sbin; the venv and Homebrew come first so that any helper the
# daemon runs by name is found there.
SYSTEM_PATH = ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")

# libpq variables that asyncpg reads and that hold no secret (host names, file paths, modes).
PASSTHROUGH_PG_VARS = frozenset(
    {
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSFILE",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGSSLCERT",
        "PGSSLKEY",
        "PGSSLCRL",
        "PGTARGETSESSIONATTRS",
    }
)
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|CREDENTIAL|API_?KEY|PRIVATE_?KEY", re.I)


# ------------------------------------------------------------------------------------------------------------
# Paths
# ------------------------------------------------------------------------------------------------------------


def plist_path(home: Path, label: str = LABEL) -> Path:
    """Where a per-user LaunchAgent must live for launchd to load it at login."""
    return home / "Library" / "LaunchAgents" / f"{label}.plist"


def default_log_dir(home: Path) -> Path:
    """The macOS place for a user's application logs; Console.app shows it under 'Log Reports'."""
    return config.default_log_dir({"HOME": str(home)}, "darwin")


def default_working_dir(home: Path) -> Path:
    """The daemon's default data directory on macOS (BRIDGE-API.md); also its working directory."""
    return config.default_data_dir({"HOME": str(home)}, "darwin")


# ------------------------------------------------------------------------------------------------------------
# Keeping secrets out of the plist
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SanitizedEnvironment:
    """The variables that may go into the plist, and what was changed or dropped on the way (for the user)."""

    values: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    stripped_passwords: list[str] = field(default_factory=list)


def sanitize_environment(environ: Mapping[str, str]) -> SanitizedEnvironment:
    """Keeps the `OSCBRIDGE_*` settings and non-secret libpq variables, minus every password.

    Only these are carried over because launchd starts the daemon with an almost empty environment: whatever
    the user set when installing (a database URL, a port) must be written down, but the shell's other variables
    (tokens, SSH agents) do not belong in a file under ~/Library.
    """
    values: dict[str, str] = {}
    warnings: list[str] = []
    stripped: list[str] = []
    for name in sorted(environ):
        value = environ[name]
        if not (name.startswith("OSCBRIDGE_") or name in PASSTHROUGH_PG_VARS):
            if name in ("PGPASSWORD", "PGSSLPASSWORD") and value:
                warnings.append(
                    f"{name} is set but is not copied into the LaunchAgent: launchd would store it in a "
                    "readable file. Put the password in ~/.pgpass (chmod 600) instead."
                )
            continue
        if _SECRET_NAME.search(name):
            warnings.append(f"{name} looks like a secret and is not copied into the LaunchAgent.")
            continue
        if value == "":
            continue
        clean, removed = strip_password(value)
        if removed:
            stripped.append(name)
            warnings.append(
                f"{name} contains a password; it was removed from the URL written to the LaunchAgent "
                f"({clean}). The daemon will read it from ~/.pgpass (chmod 600), or from the file named by "
                "PGPASSFILE."
            )
        values[name] = clean
    return SanitizedEnvironment(values, warnings, stripped)


def sanitize_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Removes passwords from URLs given as `serve` arguments (`--database-url URL` or `--database-url=URL`)."""
    clean: list[str] = []
    warnings: list[str] = []
    for arg in args:
        flag, eq, value = arg.partition("=")
        if eq and flag.startswith("--"):
            stripped, removed = strip_password(value)
            new = f"{flag}={stripped}"
        else:
            new, removed = strip_password(arg)
        if removed:
            warnings.append(
                f"a serve argument contained a password; it was removed ({new}). Put the password in "
                "~/.pgpass (chmod 600) instead."
            )
        clean.append(new)
    return clean, warnings


# ------------------------------------------------------------------------------------------------------------
# The property list
# ------------------------------------------------------------------------------------------------------------


def _agent_path(python: str) -> str:
    """PATH for the job: the interpreter's own bin directory first (a venv's tools), then the usual places."""
    entries = [str(Path(python).parent), *SYSTEM_PATH]
    return ":".join(dict.fromkeys(entries))


def plist_dict(
    python: str,
    args: Sequence[str],
    env: Mapping[str, str],
    log_dir: Path,
    working_dir: Path,
    label: str = LABEL,
    process_type: ProcessType = DEFAULT_PROCESS_TYPE,
) -> dict[str, Any]:
    """The LaunchAgent as a dict; `render_plist` serialises it. Secrets in `env` and `args` are removed here."""
    if not os.path.isabs(python):
        # launchd does no PATH lookup for ProgramArguments[0] and no '~' expansion anywhere.
        raise ValueError(f"the interpreter path must be absolute, not {python!r}")
    for what, path in (("log_dir", log_dir), ("working_dir", working_dir)):
        if not path.is_absolute():
            raise ValueError(f"{what} must be an absolute path (launchd does not expand '~'), not {path}")
    if process_type not in PROCESS_TYPES:
        raise ValueError(f"process_type must be one of {', '.join(PROCESS_TYPES)}, not {process_type!r}")
    clean_args, _ = sanitize_args(args)
    variables = dict(sanitize_environment(env).values)
    variables.setdefault("OSCBRIDGE_LOG_FILE", str(log_dir / "oscbridge.log"))
    variables["PATH"] = _agent_path(python)
    variables["PYTHONUNBUFFERED"] = "1"
    return {
        "Label": label,
        "ProgramArguments": [python, "-m", "oscbridge", "serve", *clean_args],
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": THROTTLE_INTERVAL,
        "ExitTimeOut": EXIT_TIMEOUT,
        "ProcessType": process_type,
        "Nice": NICE,
        "LimitLoadToSessionType": SESSION_TYPE,
        "WorkingDirectory": str(working_dir),
        "StandardOutPath": str(log_dir / "stdout.log"),
        "StandardErrorPath": str(log_dir / "stderr.log"),
        "EnvironmentVariables": dict(sorted(variables.items())),
    }


def render_plist(
    python: str,
    args: list[str],
    env: dict[str, str],
    log_dir: Path,
    working_dir: Path,
    label: str = LABEL,
    process_type: ProcessType = DEFAULT_PROCESS_TYPE,
) -> bytes:
    """The LaunchAgent property list as XML bytes, ready to write to ~/Library/LaunchAgents.

    `args` are extra `oscbridge serve` arguments; `env` is the installing environment, of which only the
    non-secret `OSCBRIDGE_*`/libpq variables are kept (see `sanitize_environment`).
    """
    data = plist_dict(python, args, env, log_dir, working_dir, label, process_type)
    return plistlib.dumps(data, fmt=plistlib.FMT_XML, sort_keys=False)


@dataclass(frozen=True)
class AgentPlan:
    """Everything `install` would do, computed without touching the disk or launchd (used by `print` too)."""

    label: str
    plist_path: Path
    log_dir: Path
    working_dir: Path
    python: str
    plist: bytes
    warnings: list[str]


def plan_agent(
    *,
    home: Path | None = None,
    python: str | None = None,
    serve_args: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    label: str = LABEL,
    process_type: ProcessType = DEFAULT_PROCESS_TYPE,
) -> AgentPlan:
    """Builds the plist for this user and this interpreter, and collects what the user must be told."""
    home = Path.home() if home is None else home
    environ = os.environ if environ is None else environ
    # sys.executable, not its resolved target: in a venv the symlink *is* the venv, its target is not.
    python = os.path.abspath(python or sys.executable)
    env_result = sanitize_environment(environ)
    _, arg_warnings = sanitize_args(serve_args)
    warnings = [*env_result.warnings, *arg_warnings]
    if env_result.stripped_passwords or arg_warnings:
        warnings.extend(_pgpass_advice(home, environ))
    logs = default_log_dir(home)
    working = Path(environ["OSCBRIDGE_DATA_DIR"]).expanduser() if environ.get("OSCBRIDGE_DATA_DIR") else None
    working = working if working is not None and working.is_absolute() else default_working_dir(home)
    plist = render_plist(python, list(serve_args), dict(environ), logs, working, label, process_type)
    return AgentPlan(label, plist_path(home, label), logs, working, python, plist, warnings)


def _pgpass_advice(home: Path, environ: Mapping[str, str]) -> list[str]:
    """Tells the user whether asyncpg will find a password file, since asyncpg ignores a group-readable one."""
    passfile = Path(environ["PGPASSFILE"]).expanduser() if environ.get("PGPASSFILE") else home / ".pgpass"
    if not passfile.exists():
        return [
            f"{passfile} does not exist: create it with one line 'host:port:database:user:password' "
            f"and run 'chmod 600 {passfile}'."
        ]
    mode = passfile.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return [f"{passfile} is readable by others, so asyncpg will ignore it: run 'chmod 600 {passfile}'."]
    return []


# ------------------------------------------------------------------------------------------------------------
# launchctl
# ------------------------------------------------------------------------------------------------------------


class LaunchctlResult(Protocol):
    """What a launchctl call returns; `subprocess.CompletedProcess[str]` fits."""

    @property
    def returncode(self) -> int: ...

    @property
    def stdout(self) -> str: ...

    @property
    def stderr(self) -> str: ...


class Launchctl(Protocol):
    """The seam to launchctl: `run(["bootstrap", "gui/501", path])` runs `launchctl bootstrap gui/501 path`."""

    def run(self, args: list[str]) -> LaunchctlResult: ...


class SystemLaunchctl:
    """Runs the real /bin/launchctl. Never raises for a non-zero exit: callers decide what a failure means."""

    def __init__(self, executable: str = LAUNCHCTL, timeout: float = 60.0) -> None:
        self.executable = executable
        self.timeout = timeout

    def run(self, args: list[str]) -> LaunchctlResult:
        return subprocess.run(
            [self.executable, *args], capture_output=True, text=True, timeout=self.timeout, check=False
        )


class LaunchdError(RuntimeError):
    """A launchctl step failed in a way the user has to act on; the message says what to check."""


def _domain(uid: int | None) -> str:
    return f"gui/{os.getuid() if uid is None else uid}"


def _output(result: LaunchctlResult) -> str:
    return "\n".join(part.strip() for part in (result.stdout or "", result.stderr or "") if part.strip())


def _not_found(result: LaunchctlResult) -> bool:
    """launchctl says 'Could not find service ... in domain' (exit 113) for an agent that is not loaded."""
    text = _output(result).lower()
    return result.returncode == 113 or "could not find" in text or "no such process" in text


@dataclass(frozen=True)
class InstallResult:
    plist_path: Path
    log_dir: Path
    was_loaded: bool
    warnings: list[str]


def install(
    launchctl: Launchctl,
    *,
    home: Path | None = None,
    uid: int | None = None,
    python: str | None = None,
    serve_args: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    label: str = LABEL,
    process_type: ProcessType = DEFAULT_PROCESS_TYPE,
    sleep: Callable[[float], None] = time.sleep,
) -> InstallResult:
    """Writes the plist and (re)loads it into `gui/<uid>`: print, bootout if loaded, enable, bootstrap.

    `enable` clears a `launchctl disable` left from earlier, which would otherwise make bootstrap fail with an
    unhelpful 'Input/output error'. Right after a bootout launchd may still be tearing the old job down (up to
    ExitTimeOut), so bootstrap is retried a few times in that case.
    """
    home = Path.home() if home is None else home
    plan = plan_agent(
        home=home,
        python=python,
        serve_args=serve_args,
        environ=environ,
        label=label,
        process_type=process_type,
    )
    if not os.access(plan.python, os.X_OK):
        raise LaunchdError(
            f"the interpreter {plan.python} does not exist or is not executable; launchd would fail to start "
            "it at every login. Pass --python with the venv's python."
        )
    for directory in (plan.plist_path.parent, plan.log_dir, plan.working_dir):
        directory.mkdir(parents=True, exist_ok=True)
    # launchd refuses a plist that is group- or world-writable; write it whole, then move it into place.
    tmp = plan.plist_path.with_name(plan.plist_path.name + ".tmp")
    tmp.write_bytes(plan.plist)
    tmp.chmod(0o644)
    os.replace(tmp, plan.plist_path)

    domain = _domain(uid)
    target = f"{domain}/{label}"
    was_loaded = launchctl.run(["print", target]).returncode == 0
    if was_loaded:
        launchctl.run(["bootout", target])  # failure is fine: bootstrap below reports what matters
    launchctl.run(["enable", target])
    attempts = 4 if was_loaded else 1
    for attempt in range(attempts):
        result = launchctl.run(["bootstrap", domain, str(plan.plist_path)])
        if result.returncode == 0:
            return InstallResult(plan.plist_path, plan.log_dir, was_loaded, plan.warnings)
        if attempt + 1 < attempts:
            sleep(1.0)
    raise LaunchdError(
        f"launchctl bootstrap {domain} {plan.plist_path} failed (exit {result.returncode}): "
        f"{_output(result) or 'no output'}. The plist was written; check it with 'plutil -lint "
        f"{plan.plist_path}', and see {plan.log_dir} for the daemon's own errors."
    )


@dataclass(frozen=True)
class UninstallResult:
    plist_path: Path
    was_loaded: bool
    removed_file: bool
    warnings: list[str]


def uninstall(
    launchctl: Launchctl,
    *,
    home: Path | None = None,
    uid: int | None = None,
    label: str = LABEL,
) -> UninstallResult:
    """Stops and unloads the agent (bootout), then removes its plist so it does not come back at login.

    The file is removed even if bootout fails for another reason than 'not loaded', so the next login is clean;
    the failure is reported because the job may still run until logout.
    """
    home = Path.home() if home is None else home
    path = plist_path(home, label)
    result = launchctl.run(["bootout", f"{_domain(uid)}/{label}"])
    warnings: list[str] = []
    was_loaded = result.returncode == 0
    if result.returncode != 0 and not _not_found(result):
        warnings.append(
            f"launchctl bootout failed (exit {result.returncode}): {_output(result) or 'no output'}; "
            "the daemon may keep running until you log out."
        )
    removed = False
    if path.exists():
        path.unlink()
        removed = True
    return UninstallResult(path, was_loaded, removed, warnings)


@dataclass(frozen=True)
class AgentStatus:
    """What `launchctl print` says about the agent. Fields are None when launchctl did not say."""

    label: str
    loaded: bool
    state: str | None = None
    pid: int | None = None
    last_exit_code: int | None = None
    last_exit_text: str | None = None
    last_signal: str | None = None
    runs: int | None = None
    path: str | None = None
    spawn_type: str | None = None
    detail: str = ""

    @property
    def running(self) -> bool:
        return self.loaded and (self.state == "running" or (self.state is None and self.pid is not None))

    def describe(self) -> str:
        """A few human-readable lines for the terminal."""
        if not self.loaded:
            extra = f" ({self.detail})" if self.detail else ""
            return f"{self.label}: not loaded{extra}"
        head = f"{self.label}: {self.state or 'unknown state'}"
        if self.pid is not None:
            head += f" (pid {self.pid})"
        lines = [head]
        if self.path:
            lines.append(f"  plist: {self.path}")
        facts = []
        if self.runs is not None:
            facts.append(f"runs: {self.runs}")
        if self.last_exit_text is not None:
            facts.append(f"last exit code: {self.last_exit_text}")
        if self.last_signal:
            facts.append(f"last terminating signal: {self.last_signal}")
        if self.spawn_type:
            facts.append(f"spawn type: {self.spawn_type}")
        if facts:
            lines.append("  " + ", ".join(facts))
        return "\n".join(lines)


_KV = re.compile(r"^\s*([A-Za-z][A-Za-z0-9 ()\-]*?)\s*=(?!>)\s*(.*?)\s*$")


def parse_print_output(text: str, label: str = LABEL) -> AgentStatus:
    """Reads state, pid, runs and the last exit from `launchctl print gui/<uid>/<label>`.

    Apple says this output is not a stable format, so the parser is lenient: it reads `key = value` lines of the
    service's own block (nested blocks such as `environment = {...}` have keys of their own) and falls back to
    the first match anywhere if the block structure is not recognised. Unknown lines are ignored.
    """
    top: dict[str, str] = {}
    anywhere: dict[str, str] = {}
    depth = 0
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("}"):
            depth = max(depth - 1, 0)
            continue
        opens = line.endswith("{")
        match = _KV.match(line)
        if match and not opens:
            key, value = match.group(1).lower(), match.group(2)
            anywhere.setdefault(key, value)
            if depth == 1:
                top.setdefault(key, value)
        if opens:
            depth += 1
    fields = top or anywhere

    def get(key: str) -> str | None:
        return fields.get(key, anywhere.get(key))

    def leading_int(value: str | None) -> int | None:
        found = re.match(r"\s*(-?\d+)", value or "")
        return int(found.group(1)) if found else None

    exit_text = get("last exit code")
    return AgentStatus(
        label=label,
        loaded=True,
        state=get("state"),
        pid=leading_int(get("pid")),
        last_exit_code=leading_int(exit_text),
        last_exit_text=exit_text,
        last_signal=get("last terminating signal"),
        runs=leading_int(get("runs")),
        path=get("path"),
        spawn_type=get("spawn type"),
    )


def status(launchctl: Launchctl, *, uid: int | None = None, label: str = LABEL) -> AgentStatus:
    """Asks launchd about the agent; 'not loaded' is a normal answer, not an error."""
    result = launchctl.run(["print", f"{_domain(uid)}/{label}"])
    if result.returncode != 0:
        detail = "" if _not_found(result) else f"launchctl exit {result.returncode}: {_output(result)}"
        return AgentStatus(label=label, loaded=False, detail=detail)
    return parse_print_output(result.stdout, label)


# ------------------------------------------------------------------------------------------------------------
# Command line: `oscbridge launchd install|uninstall|status|print`
# ------------------------------------------------------------------------------------------------------------

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNSUPPORTED = 2  # not macOS (also argparse's usage error code)
EXIT_NOT_LOADED = 3  # `status`: as LSB init scripts say "not running"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the launchd actions to `parser` (the `launchd` sub-command's parser of the main CLI)."""
    actions = parser.add_subparsers(dest="launchd_action", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--python",
            help="absolute path of the interpreter launchd runs (default: this one, %(default)s)",
            default=sys.executable,
        )
        p.add_argument(
            "--process-type",
            choices=PROCESS_TYPES,
            default=DEFAULT_PROCESS_TYPE,
            help="launchd ProcessType (default %(default)s; Background if Logic reports overloads)",
        )
        p.add_argument(
            "serve_args",
            nargs=argparse.REMAINDER,
            metavar="-- SERVE_ARGS",
            help="extra 'oscbridge serve' arguments, after '--' (OSCBRIDGE_* variables set now are kept too)",
        )

    common(actions.add_parser("install", help="write ~/Library/LaunchAgents/" + LABEL + ".plist and load it (macOS)"))
    actions.add_parser("uninstall", help="stop the agent and remove its plist (macOS)")
    actions.add_parser("status", help="is the agent loaded and running? exit 0 running, 1 stopped, 3 not loaded")
    common(actions.add_parser("print", help="print the plist that install would write (any OS)"))


def run(
    ns: argparse.Namespace,
    *,
    launchctl: Launchctl | None = None,
    platform: str | None = None,
    home: Path | None = None,
    uid: int | None = None,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Carries out a parsed `launchd` command and returns the exit code. Keyword arguments are test seams."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    platform = sys.platform if platform is None else platform
    action: str = ns.launchd_action
    serve_args = list(getattr(ns, "serve_args", []) or [])
    if serve_args[:1] == ["--"]:
        serve_args = serve_args[1:]
    process_type: ProcessType = getattr(ns, "process_type", DEFAULT_PROCESS_TYPE)
    python: str | None = getattr(ns, "python", None)

    if action == "print":
        try:
            plan = plan_agent(
                home=home, python=python, serve_args=serve_args, environ=environ, process_type=process_type
            )
        except ValueError as exc:
            print(f"oscbridge launchd print: {exc}", file=err)
            return EXIT_FAILED
        for warning in plan.warnings:
            print(f"warning: {warning}", file=err)
        out.write(plan.plist.decode("utf-8"))
        return EXIT_OK

    if launchctl is None:
        if platform != "darwin":
            print(
                f"oscbridge launchd {action}: launchd exists only on macOS (this is {platform}). "
                "Run 'oscbridge serve' under your own service manager instead; "
                "'oscbridge launchd print' shows the plist that would be used on a Mac.",
                file=err,
            )
            return EXIT_UNSUPPORTED
        launchctl = SystemLaunchctl()

    try:
        if action == "install":
            result = install(
                launchctl,
                home=home,
                uid=uid,
                python=python,
                serve_args=serve_args,
                environ=environ,
                process_type=process_type,
            )
            for warning in result.warnings:
                print(f"warning: {warning}", file=err)
            verb = "Reloaded" if result.was_loaded else "Loaded"
            print(f"Wrote {result.plist_path}", file=out)
            print(f"{verb} {LABEL} into {_domain(uid)}; it starts at every login.", file=out)
            print(f"Logs: {result.log_dir}/ (oscbridge.log, stderr.log)", file=out)
            return EXIT_OK
        if action == "uninstall":
            removed = uninstall(launchctl, home=home, uid=uid)
            for warning in removed.warnings:
                print(f"warning: {warning}", file=err)
            print(
                f"{'Stopped and unloaded' if removed.was_loaded else 'Was not loaded'}: {LABEL}; "
                + (f"removed {removed.plist_path}" if removed.removed_file else "no plist to remove"),
                file=out,
            )
            return EXIT_FAILED if removed.warnings else EXIT_OK
        if action == "status":
            state = status(launchctl, uid=uid)
            print(state.describe(), file=out)
            if not state.loaded:
                return EXIT_NOT_LOADED
            return EXIT_OK if state.running else EXIT_FAILED
    except (LaunchdError, ValueError, OSError, subprocess.SubprocessError) as exc:
        print(f"oscbridge launchd {action}: {exc}", file=err)
        return EXIT_FAILED
    print(f"oscbridge launchd: unknown action {action!r}", file=err)
    return EXIT_UNSUPPORTED
