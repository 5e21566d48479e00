"""`oscbridge spool retry-rejected`: re-applies the writes PostgreSQL refused (rejected.jsonl), after a fix.

One process owns a spool (its lock file). When a bridge owns it, the command asks that bridge over OSC
(`/bridge/spool/retry_rejected`, which the lock file says where to send) and the daemon's own writer applies
the operations. When none runs, the command takes the lock itself, moves the operations into the spool and
drains it into the database with the same writer code the daemon uses, starting the embedded PostgreSQL if
that is the database in use. Either way, operations refused again go back to rejected.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, TextIO

from oscbridge.app import WRITE_KINDS
from oscbridge.config import Settings
from oscbridge.flags import add_settings_flags, settings_from
from oscbridge.logs import configure_logging
from oscbridge.redact import redact_url
from oscbridge.store.core_ops import repair_parents
from oscbridge.store.db import CONNECTION_ERRORS, Database, DatabaseRefused
from oscbridge.store.embedded import EmbeddedPostgres
from oscbridge.store.identity import load_identity
from oscbridge.store.schema import SchemaError
from oscbridge.store.spool import Spool, SpoolError, SpoolLocked
from oscbridge.store.writer import RetryResult, Writer, retry_rejected

# What a database that cannot be used raises: unreachable, a login or certificate refused, a schema it cannot take.
DB_ERRORS: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, DatabaseRefused, SchemaError)
REPLY_MARGIN = 5.0  # seconds the client waits beyond the bridge's own wait


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="spool_command", required=True)
    retry = actions.add_parser("retry-rejected", help="re-apply the writes PostgreSQL refused (rejected.jsonl), "
                               "through the running bridge if there is one")
    add_settings_flags(retry)
    retry.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the database (default 10)")


def run(ns: argparse.Namespace) -> int:
    configure_logging("warning")
    if not 0 <= ns.wait <= 60:
        print("oscbridge: --wait must be 0..60 seconds", file=sys.stderr)
        return 2
    return retry_rejected_command(settings_from(ns), ns.wait)


def retry_rejected_command(settings: Settings, wait: float, out: TextIO | None = None) -> int:
    """Returns 0 when every moved write is in the database, 1 otherwise (refused again, still waiting, or an
    error, which is printed to stderr)."""
    out = sys.stdout if out is None else out
    try:
        spool = Spool(settings.spool_dir, max_bytes=settings.spool_max_bytes,
                      reserve_bytes=settings.disk_reserve_bytes, owner={"tool": "spool retry-rejected"})
    except SpoolLocked as exc:
        return asyncio.run(_ask_owner(exc.owner, wait, out))
    try:
        return asyncio.run(_drain_here(settings, spool, wait, out))
    finally:
        spool.close()


async def _ask_owner(owner: dict[str, Any] | None, wait: float, out: TextIO) -> int:
    from oscbridge.client import BridgeClient, BridgeRequestError
    from oscbridge.osc.transport import local_target

    pid = (owner or {}).get("pid", "?")
    host, port = (owner or {}).get("host"), (owner or {}).get("port")
    if not isinstance(host, str) or not isinstance(port, int):
        print(f"oscbridge: another process (pid {pid}) is using the spool; try again when it has finished",
              file=sys.stderr)
        return 1
    target = local_target(host)
    try:
        client = await BridgeClient.connect(target, port, transport="tcp")
    except OSError as exc:
        print(f"oscbridge: the bridge (pid {pid}) owns the spool but cannot be reached on {target}:{port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        values = await client.call("/bridge/spool/retry_rejected", float(wait), timeout=wait + REPLY_MARGIN)
    except BridgeRequestError as exc:
        print(f"oscbridge: the bridge refused: {exc.message}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"oscbridge: the bridge (pid {pid}) on {target}:{port} did not answer within "
              f"{wait + REPLY_MARGIN:g} s", file=sys.stderr)
        return 1
    finally:
        await client.close()
    return _report(RetryResult(*values), f"by the running bridge (pid {pid})", out)


async def _drain_here(settings: Settings, spool: Spool, wait: float, out: TextIO) -> int:
    embedded = None
    url = settings.database_url
    try:
        if url is None:
            embedded = EmbeddedPostgres(settings.embedded_pgdata)
            url = await embedded.start_async()
        db = Database(url, direct_url=settings.database_direct_url, pooled=settings.database_pooled)
        try:
            await db.connect()
        except DB_ERRORS as exc:
            print(f"oscbridge: cannot use the database {redact_url(url)}: {exc}; nothing was moved", file=sys.stderr)
            return 1
        # The writes are this data dir's bridge's: its id marks them, as when the bridge writes them itself.
        writer = Writer(db, spool, WRITE_KINDS, bridge_id=load_identity(settings.data_dir).id, repair=repair_parents)
        writer.start()
        try:
            result = await retry_rejected(writer, wait)
        except SpoolError as exc:
            print(f"oscbridge: {exc}", file=sys.stderr)
            return 1
        finally:
            await writer.stop(wait)
            await db.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    return _report(result, "(no bridge is running: applied by this command)", out)


def _report(result: RetryResult, how: str, out: TextIO) -> int:
    if not result.moved:
        print("rejected.jsonl holds no writes to retry", file=out)
        return 0
    print(f"re-applied {result.applied}, refused again {result.refused_again}"
          + (f", still waiting {result.waiting}" if result.waiting else "") + f" {how}", file=out)
    if result.refused_again:
        print("the writes refused again are back in rejected.jsonl with the new reason", file=out)
    if result.waiting:
        print("the database did not take the waiting writes in time; they stay in the spool and are written "
              "when it can", file=out)
    return 0 if result.applied == result.moved else 1
