"""The `oscbridge` command line (BRIDGE-API.md): serve, call, db url, and the tools around the daemon."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from oscbridge import __version__
from oscbridge.config import ConfigError, Settings
from oscbridge.flags import add_settings_flags, settings_from
from oscbridge.logs import configure_logging, get_logger
from oscbridge.osc.transport import PortInUse
from oscbridge.store.db import DatabaseRefused
from oscbridge.store.schema import SchemaError
from oscbridge.store.spool import SpoolError, SpoolLocked
from oscbridge.watchdog import Watchdog, exit_stalled

EXIT_PORT_IN_USE = 3
# A second signal within this many seconds of the first is taken as the same request, not as "stop at once".
SIGNAL_ECHO_WINDOW = 0.2
EXIT_CONFIG = 78  # EX_CONFIG: launchd's `status` shows it, so a bad setting is diagnosable

log = get_logger("oscbridge.cli")


def _use_uvloop() -> None:
    """uvloop takes UDP bursts that the stock loop drops (ecosystem notes §0.4); fall back where missing."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(settings: Settings, install_signals: bool = True) -> int:
    """Runs the daemon until SIGTERM/SIGINT. A second signal stops at once (the spool keeps what was
    acknowledged, so nothing is corrupted)."""
    from oscbridge.app import Bridge

    bridge = Bridge(settings)
    stop = asyncio.Event()
    first_signal_at: float | None = None

    def on_signal(signum: int) -> None:
        nonlocal first_signal_at
        now = time.monotonic()
        if first_signal_at is None:
            first_signal_at = now
            log.info("stopping", signal=signal.Signals(signum).name)
            stop.set()
        elif now - first_signal_at < SIGNAL_ECHO_WINDOW:
            # The same event delivered twice (a wrapper such as `timeout` forwarding the signal it got, or a
            # terminal's Ctrl-C reaching the process group): not a person asking a second time.
            log.info("signal_repeated", signal=signal.Signals(signum).name)
        else:
            log.warning("stopping_now", signal=signal.Signals(signum).name)
            if bridge.embedded is not None:
                bridge.embedded.stop_now()  # os._exit skips the clean stop; PostgreSQL must not outlive us
            os._exit(1)

    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
    try:
        await bridge.start()
    except PortInUse as exc:
        log.error("port_in_use", port=settings.osc_port, error=exc.strerror)
        print(f"oscbridge: {exc.strerror}", file=sys.stderr)
        return EXIT_PORT_IN_USE
    except SpoolError as exc:  # another process owns this data dir's spool (SpoolLocked), or its disk is full
        log.error("spool_unusable", error=str(exc))
        print(f"oscbridge: {exc}", file=sys.stderr)
        await bridge.stop()
        return EXIT_PORT_IN_USE if isinstance(exc, SpoolLocked) else 1
    except SchemaError as exc:
        log.error("schema_refused", error=str(exc))
        print(f"oscbridge: {exc}", file=sys.stderr)
        await bridge.stop()
        return EXIT_CONFIG
    except DatabaseRefused as exc:  # a TLS certificate, a refused login, a missing right: docs/studio.md
        log.error("database_refused", error=str(exc))
        print(f"oscbridge: {exc}", file=sys.stderr)
        await bridge.stop()
        return EXIT_CONFIG
    embedded = bridge.embedded
    watchdog = _start_watchdog(settings.watchdog_timeout, embedded.stop_now if embedded is not None else None)
    await stop.wait()
    await bridge.stop()
    if watchdog is not None:
        watchdog.stop()
    return 0


def _start_watchdog(timeout: float, before_exit: Callable[[], None] | None) -> Watchdog | None:
    """Ends the daemon (exit 70, launchd restarts it) if its event loop makes no progress for `timeout` seconds;
    `before_exit` stops the embedded PostgreSQL, which must not outlive the daemon."""
    if timeout <= 0:
        return None
    watchdog = Watchdog(asyncio.get_running_loop(), timeout, on_stall=partial(exit_stalled, before_exit=before_exit))
    watchdog.start()
    return watchdog


def cmd_serve(ns: argparse.Namespace) -> int:
    settings = settings_from(ns, record=ns.record, log_file=ns.log_file, log_level=ns.log_level,
                             advertise=ns.advertise, log_format=ns.log_format, bridge_name=ns.bridge_name)
    configure_logging(settings.log_level, settings.log_file, settings.log_format)
    _use_uvloop()
    return asyncio.run(serve(settings))


@dataclass(frozen=True)
class Tool:
    """A command that lives in `oscbridge.tools`: its module is imported only when the command runs (or shows its
    help), so `oscbridge serve` never loads the simulator, the recorder, launchd or the doctor."""

    module: str  # defines add_arguments(parser) and run(ns) -> int
    help: str


TOOLS: dict[str, Tool] = {
    "call": Tool("oscbridge.tools.call", "send one /bridge/* request and print the reply"),
    "replay": Tool("oscbridge.tools.replay", "send the datagrams of a recording (JSONL, pcap, pcapng) to a bridge"),
    "simulate": Tool("oscbridge.tools.sim.cli", "run simulated AIplayer plugins against a bridge"),
    "launchd": Tool("oscbridge.tools.launchd", "manage the LaunchAgent (macOS): install, uninstall, status, print"),
    "migrate-sqlite": Tool("oscbridge.tools.migrate_sqlite", "import the legacy track_mappings.db into a project"),
    "export": Tool("oscbridge.tools.export", "write a project's conversation, snapshots and track history as JSON "
                   "Lines and Markdown"),
    "doctor": Tool("oscbridge.tools.doctor", "check the database, pgvector, schema, Ollama, the OSC port, disk, "
                   "spool, file permissions and launchd"),
    "db": Tool("oscbridge.tools.db", "database helpers: `db url`, `db init` (roles for a shared PostgreSQL), "
               "`db upgrade` (schema migrations as the owner)"),
    "backup": Tool("oscbridge.tools.backup", "write a backup of the database and the spool to one file, while the "
                   "bridge runs or not"),
    "restore": Tool("oscbridge.tools.restore", "restore a backup into an empty data dir or a named database"),
    "ui": Tool("oscbridge.tools.ui", "open the running bridge's web page (Mission Control) in your browser"),
    "spool": Tool("oscbridge.tools.spool", "the spool of writes waiting for the database: `spool retry-rejected`"),
    # Commands for people at a terminal (docs/terminal.md): tables, or JSON with --json, from the running bridge.
    "status": Tool("oscbridge.tools.terminal.status", "how the running bridge is doing: plugins, database, "
                   "Ollama, writes, embedding backlog, health, storage, counters"),
    "plugins": Tool("oscbridge.tools.terminal.plugins", "the plugin instances the bridge knows, with their tracks"),
    "tracks": Tool("oscbridge.tools.terminal.tracks", "which track id sits on which Logic track (the mapping)"),
    "levels": Tool("oscbridge.tools.terminal.levels", "the level of each track; --watch for live meters"),
    "tail": Tool("oscbridge.tools.terminal.tail", "follow the control traffic the bridge stores, like tail -f"),
    "search": Tool("oscbridge.tools.terminal.search", "search the conversation for context, with why each "
                   "message was found"),
    "calibrate": Tool("oscbridge.tools.terminal.calibrate", "tone, probe, assign: learn which plugin is on which "
                      "track, step by step"),
    "mcp": Tool("oscbridge.tools.mcp", "serve the running bridge to an AI assistant as an MCP server on stdio "
                "(docs/mcp.md)"),
}


def _command_in(argv: Sequence[str]) -> str | None:
    """The command named on the command line (the first argument that is not an option), if any."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser; only the tool named in `argv` (if any) is imported to add its options."""
    parser = argparse.ArgumentParser(prog="oscbridge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"oscbridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the daemon in the foreground")
    add_settings_flags(p)
    p.add_argument("--record", help="append every datagram in and out to this JSONL file")
    p.add_argument("--log-file", help="write JSON logs to this size-rotated file instead of stderr")
    p.add_argument("--log-level", help="debug, info, warning or error")
    p.add_argument("--log-format", help="json, console (readable lines) or auto (the default: console when stderr "
                                        "is a terminal, else json)")
    p.add_argument("--advertise", action="store_true", default=None,
                   help="announce OSCQuery (_oscjson._tcp) and OSC (_osc._udp) over mDNS; the network hears it only "
                        "with --host 0.0.0.0")
    p.add_argument("--bridge-name", help="this bridge's name among the bridges sharing a database (default: the "
                   "host name; docs/studio.md)")
    p.set_defaults(func=cmd_serve)

    chosen = _command_in(argv)
    for name, tool in TOOLS.items():
        p = sub.add_parser(name, help=tool.help)
        if name == chosen:
            module = importlib.import_module(tool.module)
            module.add_arguments(p)
            p.set_defaults(func=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    ns = build_parser(args).parse_args(args)
    try:
        func: Callable[[argparse.Namespace], int] = ns.func
        return func(ns)
    except ConfigError as exc:
        print(f"oscbridge: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
