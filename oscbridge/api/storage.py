"""/bridge/storage: how much room the bridge's tables take, for `oscbridge status`, the doctor and people (an
extension of BRIDGE-API.md, docs/bridge-api-notes.md)."""

from __future__ import annotations

from oscbridge.api.endpoint import Rows, request
from oscbridge.store.db import Database, DatabaseUnavailable
from oscbridge.typedefs import BridgeError, ErrorCode

# Every table of the bridge's schema, with its rows (PostgreSQL's estimate, exact after ANALYZE) and its bytes on
# disk with indexes and TOAST; the biggest first.
TABLE_SIZES = """
SELECT c.relname AS name, greatest(c.reltuples, 0)::bigint AS rows, pg_total_relation_size(c.oid) AS bytes
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
ORDER BY bytes DESC, name
"""


class StorageApi:
    def __init__(self, db: Database) -> None:
        self._db = db

    @request("/bridge/storage")
    async def storage(self) -> Rows:
        """List rows: table `s`, rows `h` (an estimate), bytes `h`; then a last row `database`, -1, its total."""
        try:
            async with self._db.acquire() as conn:
                tables = await conn.fetch(TABLE_SIZES)
                total = await conn.fetchval("SELECT pg_database_size(current_database())")
        except DatabaseUnavailable as exc:
            raise BridgeError(ErrorCode.UNAVAILABLE, "the database is unreachable right now") from exc
        return Rows([*((r["name"], r["rows"], r["bytes"]) for r in tables), ("database", -1, total)])
