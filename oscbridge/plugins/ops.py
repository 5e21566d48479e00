"""The plugin hub's writes: instance rows (the pool as handed out) and port quarantine, and their load at start.

Debug traffic rows use the foundation's `debug_row` kind (COPY, idempotent by id). Both appliers here are
idempotent upserts keyed by instance id or by (bridge, port), and an older operation never overwrites a newer row,
so a spool replay after a crash is harmless. Rows are this bridge's (their `bridge_id` comes from the writer's
transaction setting, schema migration 0003); rows from before bridge ids (NULL) are taken as this bridge's too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from oscbridge.plugins.pool import Quarantine
from oscbridge.store.writer import OpKind, ts_to_dt
from oscbridge.store.writes import PluginInstanceRow, PortQuarantineRow
from oscbridge.typedefs import LIVE_STATES, Addr


async def _apply_instances(conn: asyncpg.Connection, ops: list[PluginInstanceRow]) -> None:
    for op in ops:
        at = ts_to_dt(op.ts)
        if op.state in LIVE_STATES and op.port is not None:
            # A port belongs to one live instance: whoever held it before is not on it any more.
            await conn.execute(
                """
                UPDATE plugin_instances SET state = 'gone', updated_at = $3
                WHERE port = $1 AND instance_id <> $2 AND state IN ('assigned', 'bound', 'identified')
                  AND (bridge_id = oscbridge_current_bridge() OR bridge_id IS NULL)
                """,
                op.port, op.instance_id, at,
            )
        await conn.execute(
            """
            INSERT INTO plugin_instances (instance_id, port, state, plugin_id, sender_host, sender_port,
                                          response_port, first_seen, last_seen, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (instance_id) DO UPDATE
               SET bridge_id = EXCLUDED.bridge_id, port = EXCLUDED.port, state = EXCLUDED.state,
                   plugin_id = EXCLUDED.plugin_id,
                   sender_host = EXCLUDED.sender_host, sender_port = EXCLUDED.sender_port,
                   response_port = EXCLUDED.response_port,
                   last_seen = greatest(plugin_instances.last_seen, EXCLUDED.last_seen),
                   updated_at = EXCLUDED.updated_at
             WHERE plugin_instances.updated_at <= EXCLUDED.updated_at
            """,
            op.instance_id, op.port, op.state, op.plugin_id, op.sender_host, op.sender_port,
            op.response_port, ts_to_dt(op.first_seen), ts_to_dt(op.last_seen), at,
        )


async def _apply_quarantine(conn: asyncpg.Connection, ops: list[PortQuarantineRow]) -> None:
    await conn.executemany(
        """
        INSERT INTO port_quarantine (port, reason, since, until) VALUES ($1, $2, $3, $4)
        ON CONFLICT (bridge_id, port) DO UPDATE
           SET reason = EXCLUDED.reason, since = EXCLUDED.since, until = EXCLUDED.until
         WHERE port_quarantine.since <= EXCLUDED.since
        """,
        [(op.port, op.reason, ts_to_dt(op.since), ts_to_dt(op.until)) for op in ops],
    )


HUB_OPS: tuple[OpKind[Any], ...] = (
    OpKind(PluginInstanceRow, _apply_instances),
    OpKind(PortQuarantineRow, _apply_quarantine),
)


@dataclass(frozen=True, slots=True)
class StoredInstance:
    instance_id: str
    port: int
    state: str
    plugin_id: str
    sender: Addr | None
    response_port: int | None
    first_seen: float


async def load_pool(conn: asyncpg.Connection, bridge_id: str) -> tuple[list[StoredInstance], list[Quarantine]]:
    """This bridge's instances that held a port when it last stopped, and its quarantines still running (other
    bridges' plugins on the same database are on other machines)."""
    rows = await conn.fetch(
        """
        SELECT instance_id, port, state, COALESCE(plugin_id, '') AS plugin_id, sender_host, sender_port,
               response_port, extract(epoch FROM first_seen)::float8 AS first_seen
        FROM plugin_instances
        WHERE state IN ('assigned', 'bound', 'identified') AND port IS NOT NULL
          AND (bridge_id = $1 OR bridge_id IS NULL)
        ORDER BY updated_at
        """,
        bridge_id,
    )
    instances = [
        StoredInstance(r["instance_id"], r["port"], r["state"], r["plugin_id"],
                       (r["sender_host"], r["sender_port"]) if r["sender_host"] and r["sender_port"] else None,
                       r["response_port"], r["first_seen"])
        for r in rows
    ]
    quarantine = [
        Quarantine(r["port"], r["reason"], r["since"], r["until"])
        for r in await conn.fetch(
            "SELECT port, reason, extract(epoch FROM since)::float8 AS since, extract(epoch FROM until)::float8 "
            "AS until FROM port_quarantine WHERE until > now() AND (bridge_id = $1 OR bridge_id IS NULL)",
            bridge_id,
        )
    ]
    return instances, quarantine
