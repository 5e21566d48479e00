"""Schema upgrades with several bridges on one database (issue 14), with two versions of the schema.

The older oscbridge is this code knowing one migration fewer: `oscbridge.store.schema.migrations` patched to the
shipped list without its last migration, as the previous release's package data was. That is the code of another
version, not a stand-in for the database, which is the tests' real PostgreSQL throughout.

* An older bridge works on a database at version N-1; newer bridges start: they wait while another session holds
  the schema's advisory lock, then one upgrades it to N, and the older bridge keeps working through it all, its
  writes acknowledged before, during and after the upgrade all stored, and heard by the newer ones.
* Afterwards the older code refuses to start on the database, saying which versions (`oscbridge serve`), and
  leaves everything as it was; the same data dir starts again once oscbridge is upgraded.
(tests/test_migrations.py covers one bridge: the upgrade path from the first release, a failing migration,
concurrent upgrades, a database newer than the code.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from oscbridge.app import Bridge
from oscbridge.cli import EXIT_CONFIG, serve
from oscbridge.client import BridgeClient
from oscbridge.config import Settings
from oscbridge.store import schema
from oscbridge.store.schema import SCHEMA_LOCK_KEY, Migration, latest_version, migrations
from tests.conftest import EmbeddedServer, running, wait_until
from tests.hub_support import hub_settings
from tests.memory_support import fetch, fetchval


def older_code(monkeypatch: pytest.MonkeyPatch, shipped: list[Migration]) -> None:
    """From here on this process runs the previous release: the shipped migrations but the last."""
    monkeypatch.setattr(schema, "migrations", lambda: shipped[:-1])


def newer_code(monkeypatch: pytest.MonkeyPatch, shipped: list[Migration]) -> None:
    monkeypatch.setattr(schema, "migrations", lambda: shipped)


def rig(tmp_path: Path, name: str, url: str) -> Settings:
    return hub_settings(tmp_path / name.replace(" ", "-"), url, plugins=2, bridge_name=name)


async def version_of(url: str) -> int:
    return int(await fetchval(url, "SELECT max(version) FROM schema_version"))


async def waiting_for_the_schema_lock(url: str) -> int:
    """Sessions of this database waiting for the advisory lock of schema changes (a bigint key: its high and low
    32 bits are the lock's classid and objid, objsubid 1)."""
    return int(await fetchval(
        url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid::bigint = $1 "
             "AND objid::bigint = $2 AND objsubid = 1 AND database = (SELECT oid FROM pg_database "
             "WHERE datname = current_database())", SCHEMA_LOCK_KEY >> 32, SCHEMA_LOCK_KEY & 0xFFFF_FFFF))


@asynccontextmanager
async def schema_lock_held(url: str) -> AsyncIterator[None]:
    """Another session (a bridge in the middle of an upgrade, say) holds the schema's advisory lock."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK_KEY)
        yield
        await conn.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK_KEY)
    finally:
        await conn.close()


class Writes:
    """An older bridge's client and what it acknowledged."""

    def __init__(self, client: BridgeClient) -> None:
        self.client = client
        self.messages: list[str] = []
        self.debug: list[str] = []

    async def some(self, label: str, count: int = 5) -> None:
        for n in range(count):
            self.messages.append(await self.client.save_message("user", f"{label} {n}", embed=False))
            (row_id,) = await self.client.call("/bridge/debug/log", "older", "", "log", f"{label} {n}", "", "info")
            self.debug.append(str(row_id))

    async def all_stored(self, url: str) -> None:
        messages = {r[0] for r in await fetch(url, "SELECT id::text FROM messages")}
        debug = {r[0] for r in await fetch(url, "SELECT id::text FROM mission_control_debug")}
        assert set(self.messages) <= messages and set(self.debug) <= debug
        assert len(self.messages) == len(set(self.messages)) > 0


async def track_of(client: BridgeClient, plugin: str) -> list[object] | None:
    rows = [row for row in await client.rows("/bridge/mapping/list") if row[2] == plugin]
    return rows[0][:2] if rows else None


async def test_newer_bridges_wait_for_the_schema_lock_and_upgrade_under_a_working_older_one(
        pg: EmbeddedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped, latest = migrations(), latest_version()
    url = await pg.new_database()
    older_code(monkeypatch, shipped)
    async with AsyncExitStack() as stack:
        older = await stack.enter_async_context(running(rig(tmp_path, "Old rig", url)))
        on_older = await stack.enter_async_context(await BridgeClient.connect("127.0.0.1", older.port))
        assert await version_of(url) == latest - 1
        await on_older.call("/bridge/project/open", "Album", "")
        await on_older.call("/bridge/mapping/set", 1, "Kick", "TR1")
        writes = Writes(on_older)
        await writes.some("before")
        assert await older.writer.flush(5.0)

        newer_code(monkeypatch, shipped)
        newer = [Bridge(rig(tmp_path, f"New rig {n}", url)) for n in (1, 2)]
        async with schema_lock_held(url):
            starting = [asyncio.ensure_future(bridge.start()) for bridge in newer]
            for bridge, start in zip(newer, starting, strict=True):
                stack.push_async_callback(_stop_if_started, bridge, start)

            async def both_wait() -> bool:
                return await waiting_for_the_schema_lock(url) == 2

            await wait_until(both_wait, timeout=8)  # Bridge.start gives the database 10 s
            # Meanwhile the older bridge serves and stores as usual: its writes need no schema lock.
            await writes.some("while the newer ones wait")
            assert await older.writer.flush(5.0)
            assert not any(start.done() for start in starting)
            assert await version_of(url) == latest - 1
        await asyncio.wait_for(asyncio.gather(*starting), 15)

        # The database is at the newest version, each migration recorded once, in order; both newer bridges run on
        # it, not from memory.
        versions = await fetch(url, "SELECT version, description FROM schema_version ORDER BY version")
        assert [tuple(v) for v in versions[1:]] == [(m.version, m.name) for m in shipped]
        assert all(bridge.db.up for bridge in newer)

        # The older bridge works on: the newer ones know its mappings and hear its changes, and what it
        # acknowledged before, during and after the upgrade is stored, none refused.
        on_newer = [await stack.enter_async_context(await BridgeClient.connect("127.0.0.1", bridge.port))
                    for bridge in newer]
        for client in on_newer:
            await client.call("/bridge/project/open", "Album", "")
            assert await track_of(client, "TR1") == [1, "Kick"]
        await on_older.call("/bridge/mapping/set", 2, "Snare", "TR2")

        async def heard() -> bool:
            return all([await track_of(client, "TR2") == [2, "Snare"] for client in on_newer])

        await wait_until(heard, timeout=5)
        await writes.some("after the upgrade")
        assert await older.writer.flush(5.0)
        await writes.all_stored(url)
        assert older.writer.rejected == 0 and older.parts.spool.rejected_count == 0


async def test_the_older_code_then_refuses_the_database_and_says_which_versions(
        pg: EmbeddedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    shipped, latest = migrations(), latest_version()
    url = await pg.new_database()
    old_rig = rig(tmp_path, "Old rig", url)
    older_code(monkeypatch, shipped)
    async with running(old_rig) as older, await BridgeClient.connect("127.0.0.1", older.port) as client:
        writes = Writes(client)
        await writes.some("older")
        assert older.identity is not None
        older_id = older.identity.id
    newer_code(monkeypatch, shipped)
    async with running(rig(tmp_path, "New rig", url)) as newer:
        assert await version_of(url) == latest
        before = await fetch(url, "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM sessions), "
                                  "(SELECT count(*) FROM bridges)")

        # `oscbridge serve` of the previous release, on its own data dir, while the newer bridge works on.
        older_code(monkeypatch, shipped)
        capsys.readouterr()
        assert await serve(old_rig, install_signals=False) == EXIT_CONFIG
        said = capsys.readouterr().err
        assert (f"oscbridge: the database has schema version {latest}, newer than this oscbridge ({latest - 1}). "
                "Upgrade oscbridge, or point it at another database.") in said
        # It changed nothing: not the schema, not the data; the newer bridge did not notice.
        assert await version_of(url) == latest
        assert await fetch(url, "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM sessions), "
                                "(SELECT count(*) FROM bridges)") == before
        assert newer.db.up
        await writes.all_stored(url)

        # Upgraded, the same rig starts on the same data dir, as the same bridge.
        newer_code(monkeypatch, shipped)
        async with running(old_rig) as upgraded:
            assert upgraded.db.up and upgraded.identity is not None and upgraded.identity.id == older_id
            assert upgraded.parts.spool.rejected_count == 0


async def _stop_if_started(bridge: Bridge, start: asyncio.Future[None]) -> None:
    if not start.done():
        start.cancel()
    await asyncio.gather(start, return_exceptions=True)
    await bridge.stop()
