"""The settings flags of the command line (`--host`, `--osc-port`, `--http-port`, `--data-dir`, `--database-url`,
`--config`), shared by `oscbridge serve` and every tool that reads the bridge's settings (doctor, db url,
migrate-sqlite, spool, ui); and the smaller set of the commands that only talk to a running bridge (`call`, the
terminal commands, `mcp`), for which `--host` is where the bridge listens and storage flags would mean nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from oscbridge.config import Settings, load_settings


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="the address the bridge listens on (default 127.0.0.1)")
    parser.add_argument("--osc-port", type=int, help="UDP and TCP port (default 8999)")
    parser.add_argument("--http-port", type=int, help="port of the web page (default 8998; 0 = no web page)")
    parser.add_argument("--data-dir", help="where the embedded database, spool and logs live")
    parser.add_argument("--database-url", help="PostgreSQL URL; without it an embedded server is started")
    parser.add_argument("--config", help="TOML settings file")


def add_bridge_client_flags(parser: argparse.ArgumentParser) -> None:
    """What finds a running bridge: the same settings as `serve` reads (flags, OSCBRIDGE_* variables, the TOML
    file), of which only the host and the OSC port are used."""
    parser.add_argument("--host", help="where the bridge listens (default 127.0.0.1; a bridge listening on 0.0.0.0 "
                                       "is reached on 127.0.0.1)")
    parser.add_argument("--osc-port", type=int, help="the bridge's OSC port (default 8999)")
    parser.add_argument("--config", help="the bridge's TOML settings file, to take its host and OSC port from")


def settings_from(ns: argparse.Namespace, **extra: Any) -> Settings:
    """The settings: the flags given (and `extra` ones), then OSCBRIDGE_* variables, the TOML file, defaults."""
    flags = {name: getattr(ns, name, None) for name in ("host", "osc_port", "http_port", "data_dir", "database_url")}
    config = getattr(ns, "config", None)
    return load_settings({**flags, **extra}, config_file=Path(config) if config else None)
