"""The `oscbridge` command line (BRIDGE-API.md): serve, call, db url, and the tools around the daemon."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from oscbridge import __version__
from oscbridge.config import ConfigError, Settings, load_settings
from oscbridge.logs import configure_logging, get_logger
from oscbridge.migrate_sqlite import add_arguments as add_migrate_arguments
from oscbridge.migrate_sqlite import main as migrate_main
from oscbridge.osc.transport import PortInUse
from oscbridge.store.db import SchemaError, redact
from oscbridge.store.spool import SpoolError, SpoolLocked
from oscbridge.watchdog import Watchdog, exit_stalled

EXIT_PORT_IN_USE = 3
# A second signal within this many seconds of the first is taken as the same request, not as "stop at once".
SIGNAL_ECHO_WINDOW = 0.2
EXIT_CONFIG = 78  # EX_CONFIG: launchd's `status` shows it, so a bad setting is diagnosable

log = get_logger("oscbridge.cli")


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--osc-port", type=int, help="UDP and TCP port (default 8999)")
    parser.add_argument("--data-dir", help="where the embedded database, spool and logs live")
    parser.add_argument("--database-url", help="PostgreSQL URL; without it an embedded server is started")
    parser.add_argument("--config", help="TOML settings file")


def _settings(ns: argparse.Namespace, **extra: Any) -> Settings:
    flags = {
        "host": getattr(ns, "host", None),
        "osc_port": getattr(ns, "osc_port", None),
        "data_dir": getattr(ns, "data_dir", None),
        "database_url": getattr(ns, "database_url", None),
        **extra,
    }
    config = getattr(ns, "config", None)
    return load_settings(flags, config_file=Path(config) if config else None)


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
    settings = _settings(ns, record=ns.record, log_file=ns.log_file, log_level=ns.log_level)
    configure_logging(settings.log_level, settings.log_file)
    _use_uvloop()
    return asyncio.run(serve(settings))


def cmd_doctor(ns: argparse.Namespace) -> int:
    from oscbridge import doctor

    configure_logging("warning")  # library warnings go to stderr as JSON, never into the report on stdout
    return doctor.run(_settings(ns), as_json=ns.json)


def cmd_db_url(ns: argparse.Namespace) -> int:
    from oscbridge.store.embedded import running_url, socket_url

    settings = _settings(ns)
    if settings.database_url:
        shown = settings.database_url if ns.show_password else redact(settings.database_url)
        print(shown)
        if shown != settings.database_url:
            print("oscbridge: the password is hidden; add --show-password to print it", file=sys.stderr)
        return 0
    url = running_url(settings.embedded_pgdata)
    if url is None:
        print(socket_url(settings.embedded_pgdata), end="\n")
        print("oscbridge: the embedded PostgreSQL is not running now (start `oscbridge serve`)", file=sys.stderr)
        return 1
    print(url)
    return 0


def cmd_spool_retry_rejected(ns: argparse.Namespace) -> int:
    from oscbridge import spool_cli

    configure_logging("warning")
    if not 0 <= ns.wait <= 60:
        print("oscbridge: --wait must be 0..60 seconds", file=sys.stderr)
        return 2
    return spool_cli.run(_settings(ns), ns.wait)


def _parse_call_arg(text: str) -> Any:
    """`i:5`, `f:1.5`, `s:007` force a type; otherwise whole numbers are ints, decimals floats, else strings."""
    if len(text) > 2 and text[1] == ":" and text[0] in "ifs":
        kind, raw = text[0], text[2:]
        return int(raw) if kind == "i" else float(raw) if kind == "f" else raw
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def cmd_call(ns: argparse.Namespace) -> int:
    from oscbridge.client import BridgeClient, BridgeRequestError

    async def run() -> int:
        try:
            client = await BridgeClient.connect(ns.host or "127.0.0.1", ns.osc_port or 8999,
                                                transport="tcp" if ns.tcp else "udp")
        except OSError as exc:
            print(f"oscbridge: cannot reach the bridge: {exc}", file=sys.stderr)
            return 1
        try:
            replies = await client.call_raw(ns.address, *[_parse_call_arg(a) for a in ns.args],
                                            timeout=ns.timeout, is_list=ns.address in LIST_REQUESTS)
        except BridgeRequestError as exc:
            print(f"error {exc.code}: {exc.message}", file=sys.stderr)
            return 1
        except TimeoutError:
            print(f"oscbridge: no reply within {ns.timeout} s (is the bridge running on "
                  f"{ns.host or '127.0.0.1'}:{ns.osc_port or 8999}?)", file=sys.stderr)
            return 1
        finally:
            await client.close()
        for values in replies:
            print("\t".join(str(v) for v in values))
        return 0

    return asyncio.run(run())


def cmd_migrate_sqlite(ns: argparse.Namespace) -> int:
    configure_logging("warning")
    return migrate_main(ns, _settings(ns))


# Requests whose reply is a list (one message per row), from BRIDGE-API.md.
LIST_REQUESTS = frozenset({
    "/bridge/mapping/list", "/bridge/plugins", "/bridge/levels", "/bridge/calibrate/probe",
    "/bridge/message/recent", "/bridge/context/search", "/bridge/stats",
})

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oscbridge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"oscbridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the daemon in the foreground")
    _add_settings_flags(p)
    p.add_argument("--record", help="append every datagram in and out to this JSONL file")
    p.add_argument("--log-file", help="write JSON logs to this size-rotated file instead of stderr")
    p.add_argument("--log-level", help="debug, info, warning or error")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("call", help="send one /bridge/* request and print the reply")
    p.add_argument("address")
    p.add_argument("args", nargs="*", help="arguments after the request id; i:5 f:1.5 s:7 force a type")
    p.add_argument("--host")
    p.add_argument("--osc-port", type=int)
    p.add_argument("--tcp", action="store_true", help="use TCP (no size limit) instead of UDP")
    p.add_argument("--timeout", type=float, default=3.0)
    p.set_defaults(func=cmd_call)

    from oscbridge import launchd, replay
    from oscbridge.sim import cli as sim_cli

    p = sub.add_parser("replay", help="send the datagrams of a recording (JSONL, pcap, pcapng) to a bridge")
    replay.add_arguments(p)
    p.set_defaults(func=replay.run)

    p = sub.add_parser("simulate", help="run simulated AIplayer plugins against a bridge")
    sim_cli.add_arguments(p)
    p.set_defaults(func=sim_cli.run)

    p = sub.add_parser("launchd", help="manage the LaunchAgent (macOS): install, uninstall, status, print")
    launchd.add_arguments(p)
    p.set_defaults(func=launchd.run)

    p = sub.add_parser("migrate-sqlite", help="import the legacy track_mappings.db into a project")
    _add_settings_flags(p)
    add_migrate_arguments(p)
    p.set_defaults(func=cmd_migrate_sqlite)

    p = sub.add_parser("doctor", help="check the database, pgvector, schema, Ollama, the OSC port and launchd")
    _add_settings_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("db", help="database helpers")
    dbsub = p.add_subparsers(dest="db_command", required=True)
    q = dbsub.add_parser("url", help="print the URL of the database in use")
    _add_settings_flags(q)
    q.add_argument("--show-password", action="store_true", help="print the password instead of ***")
    q.set_defaults(func=cmd_db_url)

    p = sub.add_parser("spool", help="the local spool of writes waiting for the database")
    spoolsub = p.add_subparsers(dest="spool_command", required=True)
    q = spoolsub.add_parser("retry-rejected", help="re-apply the writes PostgreSQL refused (rejected.jsonl), "
                            "through the running bridge if there is one")
    _add_settings_flags(q)
    q.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the database (default 10)")
    q.set_defaults(func=cmd_spool_retry_rejected)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        func: Command = ns.func
        return func(ns)
    except ConfigError as exc:
        print(f"oscbridge: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
