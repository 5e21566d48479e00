"""/bridge/storage: how much room the bridge's tables take, for `oscbridge status`, the doctor and people (an
extension of BRIDGE-API.md, docs/bridge-api-notes.md)."""

from __future__ import annotations

from oscbridge.api.endpoint import Rows, request
from oscbridge.api.reads import reading
from oscbridge.store.db import Database
from oscbridge.store.sizes import measure


class StorageApi:
    def __init__(self, db: Database) -> None:
        self._db = db

    @request("/bridge/storage")
    async def storage(self) -> Rows:
        """List rows: table `s`, rows `h` (an estimate), bytes `h`; then a last row `database`, -1, its total."""
        async with reading(self._db) as conn:
            sizes = await measure(conn)
        return Rows([*((t.name, t.rows, t.bytes) for t in sizes.tables), ("database", -1, sizes.database_bytes)])
