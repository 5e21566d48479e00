"""One settings object for the whole daemon, built from flags, `OSCBRIDGE_*` environment and a TOML file.

Precedence is flags > environment > config file > defaults (BRIDGE-API.md). Everything that differs between a
musician's Mac, CI and a test lives here, so no module reads the environment on its own.

Each value is converted by the type of its `Settings` field (resolved with `typing.get_type_hints`, never by
reading annotation text), one explicit converter per type, as Starlette's `config.py` does:

* text (an environment variable, a flag, or a quoted TOML value) is parsed the same way whatever its source:
  `int` takes a whole number, `float` a finite number, `bool` one of true/false, yes/no, on/off, 1/0 (any case),
  `Path` a non-empty path (`~` expanded), `str` any text;
* a typed TOML value (or a typed flag) must already be of the field's type: an integer is fine for a `float`
  field, but `true` is not a number, `1` is not a boolean and `8999.0` is not a whole number;
* for an optional field (`X | None`) an empty value means None, so `--database-url ""` or `record = ""` says
  "none"; an *empty environment variable* counts as not set at all (shells and plists leave empty ones behind),
  so the config file or the default applies.

Anything else is refused with a `ConfigError` that names the setting and where the value came from; `validate()`
then refuses values of the right type that cannot work (ports, ranges, timings), naming the source as well.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePath
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from oscbridge.logs import LOG_FORMATS
from oscbridge.osc.slip import MAX_FRAME
from oscbridge.protocol import EPHEMERAL_BASE, EPHEMERAL_COUNT, EPHEMERAL_STEP

ENV_PREFIX = "OSCBRIDGE_"


# ------------------------------------------------------------------------------------------------------------
# Platform paths
# ------------------------------------------------------------------------------------------------------------
# BRIDGE-API.md fixes the default data dir, so the rule is spelled out here rather than taken from platformdirs,
# for two reasons: platformdirs reads only the process environment (tests and `launchd` ask for another HOME),
# and since 4.x its macOS answer follows $XDG_DATA_HOME when that is set, which the contract does not. Where the
# contract and platformdirs agree (macOS without XDG variables; Linux), tests/test_config.py checks that both
# give the same path.


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or Path.home())


def _xdg_base(env: Mapping[str, str], variable: str, fallback: str) -> Path:
    """An XDG base directory: the variable when it holds an absolute path (the XDG spec ignores relative ones)."""
    value = env.get(variable, "")
    return Path(value) if os.path.isabs(value) else _home(env) / fallback


def default_data_dir(env: Mapping[str, str] = os.environ, platform: str = sys.platform) -> Path:
    """Where the daemon keeps its embedded database and spool when nothing else is said: macOS
    `~/Library/Application Support/oscbridge`, elsewhere `$XDG_DATA_HOME/oscbridge` or `~/.local/share/oscbridge`."""
    if platform == "darwin":
        return _home(env) / "Library" / "Application Support" / "oscbridge"
    return _xdg_base(env, "XDG_DATA_HOME", ".local/share") / "oscbridge"


def default_log_dir(env: Mapping[str, str] = os.environ, platform: str = sys.platform) -> Path:
    """Where a user's logs of the daemon belong: macOS `~/Library/Logs/oscbridge` (Console.app lists it under
    'Log Reports'), elsewhere `$XDG_STATE_HOME/oscbridge/log` or `~/.local/state/oscbridge/log` (platformdirs'
    answers)."""
    if platform == "darwin":
        return _home(env) / "Library" / "Logs" / "oscbridge"
    return _xdg_base(env, "XDG_STATE_HOME", ".local/state") / "oscbridge" / "log"


class ConfigError(ValueError):
    """A setting that cannot work; the message names it. `keys` are the settings at fault, so that the loader
    can add where their values came from."""

    def __init__(self, message: str, keys: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.keys = keys


@dataclass(frozen=True)
class Settings:
    """Every knob of the daemon. Field names are also the TOML keys and, upper-cased, the env suffixes."""

    host: str = "127.0.0.1"
    osc_port: int = 8999
    # The web page (docs/web.md), on the OSC host; 0 turns it off.
    http_port: int = 8998
    # Announce the OSCQuery server (`_oscjson._tcp`, on http_port) and the OSC port (`_osc._udp`) over mDNS, on
    # the interfaces `host` covers (docs/oscquery.md); off by default, and LAN discovery needs host 0.0.0.0.
    advertise: bool = False
    # The MCP server at /mcp on the web port (docs/mcp.md) offers the tools that act (set a plugin's GAIN, the
    # calibration tone, save messages, snapshots) only when this is true; it only reads otherwise. `oscbridge mcp`
    # on stdio has its own flag, --allow-control.
    mcp_allow_control: bool = False
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None
    # A studio's shared PostgreSQL (docs/studio.md). `database_direct_url` reaches PostgreSQL itself, for schema
    # changes, change notifications (LISTEN) and backups; it is needed when database_url goes through a
    # transaction pooler, which `database_pooled` says (PgBouncer pool_mode = transaction: no prepared statements,
    # no session state). Without it, database_url serves for everything.
    database_direct_url: str | None = None
    database_pooled: bool = False
    # This bridge's readable name among the bridges that share a database (docs/studio.md); the host name when
    # not given. Its id is made at the first start and kept in <data_dir>/bridge.json.
    bridge_name: str | None = None
    ollama_url: str = "http://127.0.0.1:11434"
    embed_model: str = "nomic-embed-text"
    embed_dim: int = 768
    port_range_start: int = 9000
    port_range_end: int = 9999
    record: Path | None = None
    log_level: str = "info"
    log_file: Path | None = None
    # Log lines as JSON, as readable "console" lines, or "auto": console when stderr is a terminal (oscbridge/logs.py).
    log_format: str = "auto"
    # How long the receive-side UDP socket may buffer bursts; macOS caps usable buffers near 7.4 MB.
    udp_rcvbuf: int = 4 * 1024 * 1024
    # Seconds SIGTERM may take to drain queued writes before the daemon gives up waiting (launchd kills later).
    drain_timeout: float = 8.0
    # The watchdog (oscbridge/watchdog.py): an event loop silent this many seconds ends the daemon with exit code 70
    # so that launchd restarts it; 0 turns it off.
    watchdog_timeout: float = 10.0
    # Conversation memory (docs/memory.md): texts per /api/embed request of the backfill, its deadline, the cap
    # of the backoff while Ollama is down, how long a search may wait for its query embedding before it answers
    # without the semantic part, and pgvector's hnsw.ef_search for that part (bench/bench_context_search.py).
    embed_batch_size: int = 32
    embed_timeout: float = 30.0
    embed_retry_max: float = 60.0
    query_embed_timeout: float = 1.0
    hnsw_ef_search: int = 200
    # Plugin hub (docs/plugin-hub.md). Liveness: a streaming plugin silent for `plugin_silence` seconds, an idle
    # bound plugin every `plugin_probe_interval` seconds, and an assignment unconfirmed after `assign_expiry`
    # seconds get an RMS probe; `plugin_probe_misses` unanswered probes (`plugin_probe_timeout` s each) = gone.
    plugin_silence: float = 3.0
    plugin_probe_interval: float = 30.0
    plugin_probe_timeout: float = 2.0
    plugin_probe_misses: int = 3
    assign_expiry: float = 10.0
    quarantine_seconds: float = 600.0
    gone_retention: float = 600.0
    hub_tick: float = 0.5
    # Calibration: how long tone acks and probe answers are awaited; track-id assignment retries.
    calibrate_window: float = 0.5
    assign_retry_interval: float = 1.0
    assign_retries: int = 3
    # The bootstrap ports of plugins (re-adoption of plugins stuck waiting for a port_assignment).
    ephemeral_base: int = EPHEMERAL_BASE
    ephemeral_step: int = EPHEMERAL_STEP
    ephemeral_count: int = EPHEMERAL_COUNT
    # Fan-out: a subscription lapses without renewal after this long, or after this many send errors since it
    # last subscribed.
    subscription_ttl: float = 3600.0
    subscriber_max_errors: int = 20
    # Debug rows of plugin control traffic: at most this many a second (a flood is counted, not stored).
    debug_rows_per_second: int = 1000
    # ... of which rows of refused plugin messages (a flood of bad traffic is counted, a sample of it stored).
    rejected_rows_per_second: int = 20
    # Retention (oscbridge/store/retention.py): debug rows older than this many days are removed every
    # `retention_interval` seconds; 0 keeps them for ever. Conversations are never removed automatically.
    debug_retention_days: float = 30.0
    retention_interval: float = 3600.0
    # Scheduled backups (docs/backup.md): every `backup_every` seconds (daily; 0 = none) the daemon writes one
    # into <data_dir>/backups (0600 files in a 0700 dir) and keeps the newest `backup_keep` of them.
    backup_every: float = 86400.0
    backup_keep: int = 7
    # The spool (docs/bridge-api-notes.md, Durability): at most this many bytes of writes not yet in PostgreSQL
    # (512 MiB: about 900,000 debug rows of plugin traffic at ~600 bytes each, a quarter of an hour even at the
    # `debug_rows_per_second` cap); past three quarters of it, or with less than `disk_reserve_bytes` free on its
    # disk, those debug rows are dropped; at the cap writes are refused with `unavailable`. The doctor warns
    # under 1 GiB free and fails under the reserve.
    spool_max_bytes: int = 512 * 1024 * 1024
    disk_reserve_bytes: int = 64 * 1024 * 1024
    # TCP (OSC 1.1 SLIP) limits, docs/bridge-api-notes.md "TCP limits": connections at a time (one more is
    # refused), the largest SLIP frame (slip.MAX_FRAME: room for the largest legitimate request), unsent reply bytes
    # at which a connection stops being read and at or below which it is read again, the unsent bytes at which the
    # next reply closes it at once, and the seconds it may stay paused (or take to close) before it is cut.
    tcp_max_connections: int = 32
    tcp_max_frame: int = MAX_FRAME
    tcp_high_water: int = 256 * 1024
    tcp_low_water: int = 64 * 1024
    tcp_max_unsent: int = 8 * 1024 * 1024
    tcp_slow_close: float = 5.0

    @property
    def direct_database_url(self) -> str | None:
        """The URL that reaches PostgreSQL itself (not through a pooler): database_direct_url, else database_url;
        None for the embedded server."""
        return self.database_direct_url or self.database_url

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def embedded_pgdata(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def backups_dir(self) -> Path:
        return self.data_dir / "backups"

    def validate(self) -> None:
        """Refuse settings that cannot work, with a message that says which one and why (and, via `keys`, lets
        `load_settings` say where the value came from)."""
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, not {getattr(self, name)}", (name,))
        for name in _NOT_NEGATIVE:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, not {getattr(self, name)}", (name,))
        if not 0 < self.osc_port < 65536:
            raise ConfigError(f"osc_port must be 1..65535, not {self.osc_port}", ("osc_port",))
        if not 0 <= self.http_port < 65536 or self.http_port == self.osc_port:
            raise ConfigError(f"http_port must be 0 (off) or 1..65535 and not the osc_port, not {self.http_port}",
                              ("http_port", "osc_port"))
        if not 0 < self.port_range_start <= self.port_range_end < 65536:
            raise ConfigError(
                f"plugin port range {self.port_range_start}-{self.port_range_end} is not a valid port range",
                ("port_range_start", "port_range_end"),
            )
        for name in ("osc_port", "http_port"):
            if self.port_range_start <= getattr(self, name) <= self.port_range_end:
                raise ConfigError(f"{name} {getattr(self, name)} lies inside the plugin port range",
                                  (name, "port_range_start", "port_range_end"))
        last_bootstrap = self.ephemeral_base + self.ephemeral_step * (self.ephemeral_count - 1)
        if not 0 < self.ephemeral_base <= last_bootstrap < 65536:
            raise ConfigError(f"plugin bootstrap ports {self.ephemeral_base}..{last_bootstrap} (ephemeral_base, "
                              "every ephemeral_step, ephemeral_count of them) must lie in 1..65535",
                              ("ephemeral_base", "ephemeral_step", "ephemeral_count"))
        if (self.database_pooled or self.database_direct_url) and not self.database_url:
            raise ConfigError("database_pooled and database_direct_url apply to a database_url; the embedded server "
                              "needs neither", ("database_pooled", "database_direct_url", "database_url"))
        if self.database_pooled and not self.database_direct_url:
            raise ConfigError("database_pooled = true needs database_direct_url, the URL that reaches PostgreSQL "
                              "itself: through a transaction pooler the schema changes (a session-level lock), change "
                              "notifications (LISTEN) and backups (pg_dump) do not work (docs/studio.md)",
                              ("database_pooled", "database_direct_url"))
        if self.spool_max_bytes < 64 * 1024:
            raise ConfigError(f"spool_max_bytes must be at least 65536 (64 KiB), not {self.spool_max_bytes}",
                              ("spool_max_bytes",))
        if self.embed_dim < 1 or self.embed_dim > 2000:
            raise ConfigError(f"embed_dim must be 1..2000 (pgvector's HNSW limit), not {self.embed_dim}",
                              ("embed_dim",))
        if not 1 <= self.hnsw_ef_search <= 1000:
            raise ConfigError(f"hnsw_ef_search must be 1..1000 (pgvector's limit), not {self.hnsw_ef_search}",
                              ("hnsw_ef_search",))
        if not 0 < self.tcp_low_water <= self.tcp_high_water <= self.tcp_max_unsent:
            raise ConfigError(f"TCP limits must satisfy 0 < tcp_low_water ({self.tcp_low_water}) <= tcp_high_water "
                              f"({self.tcp_high_water}) <= tcp_max_unsent ({self.tcp_max_unsent})",
                              ("tcp_low_water", "tcp_high_water", "tcp_max_unsent"))
        if self.log_level.upper() not in logging.getLevelNamesMapping():
            raise ConfigError(f"log_level must be debug, info, warning or error, not {self.log_level!r}",
                              ("log_level",))
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format must be {', '.join(LOG_FORMATS)}, not {self.log_format!r}",
                              ("log_format",))


# Values at or below zero cannot work: a count of nothing, a timeout that has always passed, a loop that spins.
_POSITIVE = (
    "udp_rcvbuf", "embed_batch_size", "embed_timeout", "embed_retry_max", "query_embed_timeout",
    "plugin_silence", "plugin_probe_interval", "plugin_probe_timeout", "plugin_probe_misses", "assign_expiry",
    "hub_tick", "calibrate_window", "assign_retry_interval", "ephemeral_step", "ephemeral_count",
    "subscription_ttl", "subscriber_max_errors", "tcp_max_connections", "tcp_max_frame", "tcp_slow_close",
    "backup_keep", "retention_interval",
)
# Zero means "none" or "off" here (no drain wait, no watchdog, no quarantine, no retry, no debug rows, no reserve).
_NOT_NEGATIVE = (
    "drain_timeout", "watchdog_timeout", "quarantine_seconds", "gone_retention", "assign_retries",
    "debug_rows_per_second", "rejected_rows_per_second", "disk_reserve_bytes", "backup_every",
    "debug_retention_days",
)


# ------------------------------------------------------------------------------------------------------------
# Conversion: one explicit converter per field type
# ------------------------------------------------------------------------------------------------------------

Converter = Callable[[object], Any]

_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _to_str(value: object) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"{value!r} is not text")


def _to_int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not a whole number")


def _to_float(value: object) -> float:
    number = math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
        return _BOOLEANS[value.strip().lower()]
    raise ValueError(f"{value!r} is not a boolean (true/false, yes/no, on/off, 1/0)")


def _to_path(value: object) -> Path:
    if isinstance(value, (str, PurePath)) and str(value):
        return Path(value).expanduser()
    raise ValueError(f"{value!r} is not a path")


_CONVERTERS: dict[object, Converter] = {str: _to_str, int: _to_int, float: _to_float, bool: _to_bool, Path: _to_path}


def converter_for(target: object) -> Converter:
    """The function that turns a raw value (text, or a TOML/flag value) into `target`, raising ValueError with
    the reason; `X | None` maps None and "" to None. TypeError for a type no converter exists for, so a new field
    of another type fails at import, not on a user's machine."""
    if get_origin(target) in (Union, UnionType):
        inner = [arg for arg in get_args(target) if arg is not NoneType]
        if len(inner) == 1 and len(get_args(target)) == 2:
            convert = converter_for(inner[0])
            return lambda value: None if value is None or value == "" else convert(value)
    if target in _CONVERTERS:
        return _CONVERTERS[target]
    raise TypeError(f"no conversion for settings of type {target!r}")


def _field_converters() -> dict[str, Converter]:
    hints = get_type_hints(Settings)
    return {f.name: converter_for(hints[f.name]) for f in fields(Settings)}


_FIELDS = _field_converters()


def _read_config_file(path: Path) -> dict[str, Any]:
    """The settings table of a TOML file: `[oscbridge]` if the file has one, else the top level."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    section = data.get("oscbridge", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: 'oscbridge' must be a table of settings")
    for key in section:
        if key not in _FIELDS:
            near = difflib.get_close_matches(key, _FIELDS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"config file {path}: unknown setting {key!r}{hint}", (key,))
    return section


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Builds the settings. `flags` holds only the options the user gave (None means not given), keyed by field
    name. Every value given is converted, even one a higher source overrides: a broken file stays an error."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def take(name: str, value: object, source: str) -> None:
        try:
            values[name] = _FIELDS[name](value)
        except ValueError as exc:
            raise ConfigError(f"setting {name!r} {source}: {exc}", (name,)) from None
        sources[name] = source

    path = config_file or (Path(env[ENV_PREFIX + "CONFIG"]) if env.get(ENV_PREFIX + "CONFIG") else None)
    if path is not None:
        path = Path(path).expanduser()
        for name, value in _read_config_file(path).items():
            take(name, value, f"from the config file {path}")
    for name in _FIELDS:
        variable = ENV_PREFIX + name.upper()
        if env.get(variable):  # an empty variable counts as not set
            take(name, env[variable], f"from the environment ({variable})")
    for name, value in (flags or {}).items():
        if name not in _FIELDS:
            raise TypeError(f"load_settings: no setting named {name!r}")
        if value is not None:
            take(name, value, f"from the flag --{name.replace('_', '-')}")
    if "data_dir" not in values:
        values["data_dir"] = default_data_dir(env)
    settings = Settings(**values)
    try:
        settings.validate()
    except ConfigError as exc:
        given = "; ".join(f"{key} came {sources[key]}" for key in exc.keys if key in sources)
        if not given:
            raise
        raise ConfigError(f"{exc}; {given}", exc.keys) from None
    return settings
