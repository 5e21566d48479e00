"""How much room the bridge's tables take: one query shared by `/bridge/storage` and `oscbridge doctor`."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

# Every table of the bridge's schema, with its rows (PostgreSQL's estimate, exact after ANALYZE) and its bytes on
# disk with indexes and TOAST; the biggest first.
_TABLE_SIZES = """
SELECT c.relname AS name, greatest(c.reltuples, 0)::bigint AS rows, pg_total_relation_size(c.oid) AS bytes
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
ORDER BY bytes DESC, name
"""


@dataclass(frozen=True)
class TableSize:
    name: str
    rows: int  # an estimate: counting exactly would read the whole table
    bytes: int


@dataclass(frozen=True)
class Sizes:
    tables: list[TableSize]
    database_bytes: int


async def measure(conn: asyncpg.Connection) -> Sizes:
    """Sizes of every table and of the whole database, read from the catalog (milliseconds, no table scans)."""
    tables = [TableSize(r["name"], r["rows"], r["bytes"]) for r in await conn.fetch(_TABLE_SIZES)]
    total = await conn.fetchval("SELECT pg_database_size(current_database())")
    return Sizes(tables, int(total))
