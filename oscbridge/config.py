"""One settings object for the whole daemon, built from flags, `OSCBRIDGE_*` environment and a TOML file.

Precedence is flags > environment > config file > defaults (BRIDGE-API.md). Everything that differs between a
musician's Mac, CI and a test lives here, so no module reads the environment on its own.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oscbridge.osc.slip import MAX_FRAME

ENV_PREFIX = "OSCBRIDGE_"


def default_data_dir(env: Mapping[str, str] = os.environ, platform: str = sys.platform) -> Path:
    """Where the daemon keeps its embedded database, spool and logs when nothing else is said."""
    home = Path(env.get("HOME") or Path.home())
    if platform == "darwin":
        return home / "Library" / "Application Support" / "oscbridge"
    xdg = env.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else home / ".local" / "share") / "oscbridge"


class ConfigError(ValueError):
    """A setting that cannot work; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Every knob of the daemon. Field names are also the TOML keys and, upper-cased, the env suffixes."""

    host: str = "127.0.0.1"
    osc_port: int = 8999
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None
    ollama_url: str = "http://127.0.0.1:11434"
    embed_model: str = "nomic-embed-text"
    embed_dim: int = 768
    port_range_start: int = 9000
    port_range_end: int = 9999
    record: Path | None = None
    log_level: str = "info"
    log_file: Path | None = None
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
    ephemeral_base: int = 50000
    ephemeral_step: int = 100
    ephemeral_count: int = 100
    # Fan-out: a subscription lapses without renewal after this long, or after this many send errors since it
    # last subscribed.
    subscription_ttl: float = 3600.0
    subscriber_max_errors: int = 20
    # Debug rows of plugin control traffic: at most this many a second (a flood is counted, not stored).
    debug_rows_per_second: int = 1000
    # ... of which rows of refused plugin messages (a flood of bad traffic is counted, a sample of it stored).
    rejected_rows_per_second: int = 20
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
    tcp_high_water: int = 1024 * 1024
    tcp_low_water: int = 256 * 1024
    tcp_max_unsent: int = 8 * 1024 * 1024
    tcp_slow_close: float = 5.0

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def embedded_pgdata(self) -> Path:
        return self.data_dir / "postgres"

    def validate(self) -> None:
        """Refuse settings that cannot work, with a message that says which one and why."""
        if not 0 < self.osc_port < 65536:
            raise ConfigError(f"osc_port must be 1..65535, not {self.osc_port}")
        if not 0 < self.port_range_start <= self.port_range_end < 65536:
            raise ConfigError(
                f"plugin port range {self.port_range_start}-{self.port_range_end} is not a valid port range"
            )
        if self.port_range_start <= self.osc_port <= self.port_range_end:
            raise ConfigError(f"osc_port {self.osc_port} lies inside the plugin port range")
        if self.spool_max_bytes < 64 * 1024:
            raise ConfigError(f"spool_max_bytes must be at least 65536 (64 KiB), not {self.spool_max_bytes}")
        if self.disk_reserve_bytes < 0:
            raise ConfigError(f"disk_reserve_bytes must not be negative, not {self.disk_reserve_bytes}")
        if self.embed_dim < 1 or self.embed_dim > 2000:
            raise ConfigError(f"embed_dim must be 1..2000 (pgvector's HNSW limit), not {self.embed_dim}")
        if not 0 < self.tcp_low_water <= self.tcp_high_water <= self.tcp_max_unsent:
            raise ConfigError(f"TCP limits must satisfy 0 < tcp_low_water ({self.tcp_low_water}) <= tcp_high_water "
                              f"({self.tcp_high_water}) <= tcp_max_unsent ({self.tcp_max_unsent})")
        if self.tcp_max_connections < 1 or self.tcp_max_frame < 1 or self.tcp_slow_close <= 0:
            raise ConfigError("tcp_max_connections, tcp_max_frame and tcp_slow_close must be positive")


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    """Turns a string or TOML value into the field's type, naming the setting when it cannot."""
    kind = _FIELDS[name].type
    if value is None:
        return None
    try:
        if kind in ("int",):
            return int(value)
        if kind in ("float",):
            return float(value)
        if kind in ("Path", "Path | None"):
            return Path(str(value)).expanduser()
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name!r}: cannot use {value!r} ({exc})") from exc


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Builds the settings. `flags` holds only the options the user gave (None means not given)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = config_file or (Path(env[ENV_PREFIX + "CONFIG"]) if env.get(ENV_PREFIX + "CONFIG") else None)
    if path is not None:
        try:
            data = tomllib.loads(Path(path).expanduser().read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        section = data.get("oscbridge", data)
        for key, value in section.items():
            if key not in _FIELDS:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, value)
    for name in _FIELDS:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw not in (None, ""):
            values[name] = _coerce(name, raw)
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = _coerce(name, value)
    if "data_dir" not in values:
        values["data_dir"] = default_data_dir(env)
    settings = Settings(**values)
    settings.validate()
    return settings
