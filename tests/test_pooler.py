"""A bridge through PgBouncer in transaction pooling mode (Debian's pgbouncer 1.18, which keeps no prepared
statements in that mode), with `database_direct_url` for what needs a session of its own: it serves mappings,
saves and searches messages, stores debug rows (COPY through a staging table), and loses no acknowledged write when
PgBouncer restarts. PgBouncer has fewer server connections than the bridge's pool, so transactions of different
client connections share server connections, as they do in a studio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from oscbridge.app import Bridge
from oscbridge.client import BridgeClient
from oscbridge.config import ConfigError, Settings, load_settings
from oscbridge.store.db import classify
from oscbridge.tools.fake_ollama import FakeOllama
from tests.conftest import EmbeddedServer, wait_until
from tests.memory_support import fetchval, memory_settings, running, wait_embedded, wait_ready
from tests.pg_support import PgBouncer, socket_of


@pytest.fixture
async def bouncer(pg: EmbeddedServer) -> AsyncIterator[PgBouncer]:
    socket_dir, port = socket_of(pg.admin_url)
    server = PgBouncer(socket_dir, port, {"postgres": ""}, pool_size=2)
    server.start()
    yield server
    server.close()


def pooled_settings(tmp_path: Path, database_url: str, bouncer: PgBouncer, fake: FakeOllama) -> Settings:
    name = urlsplit(database_url).path.lstrip("/")
    return memory_settings(tmp_path, bouncer.url(name), fake, database_direct_url=database_url,
                           database_pooled=True, debug_retention_days=0)


async def committed(bridge: Bridge) -> None:
    assert await bridge.writer.flush(10.0)


async def test_a_bridge_through_pgbouncer_serves_mappings_messages_search_and_debug_rows(
        tmp_path: Path, database_url: str, bouncer: PgBouncer, fake: FakeOllama) -> None:
    async with running(pooled_settings(tmp_path, database_url, bouncer, fake)) as bridge:
        assert bridge.parts.db.pooled and bridge.parts.db.url.startswith(f"postgresql://postgres@127.0.0.1:"
                                                                          f"{bouncer.port}/")
        clients = [await BridgeClient.connect("127.0.0.1", bridge.port, transport=t) for t in ("udp", "tcp")]
        try:
            await clients[0].call("/bridge/project/open", "Pooled", "")
            await asyncio.gather(*(clients[n % 2].call("/bridge/mapping/set", n, f"Track {n}", f"TR{n}")
                                   for n in range(1, 9)))
            wanted = await clients[1].save_message("user", "Compress the snare with a fast attack and slow release")
            await asyncio.gather(*(clients[n % 2].save_message("assistant", f"take {n}: the bass sits well")
                                   for n in range(12)))
            await asyncio.gather(*(clients[n % 2].call("/bridge/debug/log", "orchestrator", "", "log", f"row {n}",
                                                       "", "info") for n in range(40)))
            await committed(bridge)
            await wait_embedded(database_url, 13)
            await wait_ready(bridge)
            hits = await clients[0].context_search("snare compression attack", limit=5)
            assert hits[0].id == wanted and "semantic" in hits[0].reasons
            assert await clients[1].call("/bridge/mapping/track", "TR5") == ["Track 5", 5, -1, ""]
            assert len(await clients[0].rows("/bridge/mapping/list")) == 8
            assert len(await clients[1].rows("/bridge/debug/tail")) >= 40
        finally:
            for client in clients:
                await client.close()
        assert bridge.writer.rejected == 0 and bridge.parts.spool.rejected_count == 0
    assert await fetchval(database_url, "SELECT count(*) FROM track_assignments WHERE is_current") == 8
    assert await fetchval(database_url, "SELECT count(*) FROM messages") == 13
    assert await fetchval(database_url, "SELECT count(*) FROM mission_control_debug WHERE content LIKE 'row %'") == 40


async def test_a_pgbouncer_restart_loses_no_acknowledged_write(tmp_path: Path, database_url: str,
                                                                 bouncer: PgBouncer, fake: FakeOllama) -> None:
    async with running(pooled_settings(tmp_path, database_url, bouncer, fake)) as bridge:
        client = await BridgeClient.connect("127.0.0.1", bridge.port, transport="tcp")
        try:
            for n in range(20):
                await client.save_message("user", f"before {n}", embed=False)
            await committed(bridge)
            bouncer.stop()  # every connection of the bridge's pool is cut
            for n in range(20):
                await client.save_message("user", f"while the pooler is down {n}", embed=False)
                await client.call("/bridge/debug/log", "orchestrator", "", "log", f"down {n}", "", "info")
            await wait_until(lambda: not bridge.parts.db.up, timeout=10)
            bouncer.start()

            async def all_written() -> bool:
                return int(await fetchval(database_url, "SELECT count(*) FROM messages")) == 40

            await wait_until(all_written, timeout=30, interval=0.1)
            await committed(bridge)
        finally:
            await client.close()
        assert bridge.writer.rejected == 0 and bridge.parts.spool.rejected_count == 0
    assert await fetchval(database_url, "SELECT count(*) FROM mission_control_debug WHERE content LIKE 'down %'") == 20


async def test_a_mapping_change_reaches_another_bridge_through_the_direct_url(
        tmp_path: Path, database_url: str, bouncer: PgBouncer, fake: FakeOllama) -> None:
    """LISTEN cannot work through a transaction pooler: the bridges hear each other on `database_direct_url`."""
    settings = [pooled_settings(tmp_path / name, database_url, bouncer, fake) for name in ("a", "b")]
    async with running(settings[0]) as one, running(settings[1]) as two:
        clients = [await BridgeClient.connect("127.0.0.1", b.port, transport="tcp") for b in (one, two)]
        try:
            for client in clients:
                await client.call("/bridge/project/open", "Shared", "")
            await clients[0].call("/bridge/mapping/set", 3, "Bass", "TR3")

            async def heard() -> bool:
                return await clients[1].rows("/bridge/mapping/list") == [[3, "Bass", "TR3", -1, ""]]

            await wait_until(heard, timeout=10, interval=0.05)
        finally:
            for client in clients:
                await client.close()


async def test_a_lost_prepared_statement_keeps_the_write(database_url: str) -> None:
    """Through a transaction pooler without `database_pooled`, asyncpg's named statements go missing (SQLSTATE
    26000): that says nothing against the write, which must stay in the spool rather than go to rejected.jsonl."""
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.InvalidSQLStatementNameError) as missing:
            await conn.execute("EXECUTE __asyncpg_stmt_1__")
        await conn.execute("PREPARE twice AS SELECT 1")
        with pytest.raises(asyncpg.DuplicatePreparedStatementError) as duplicate:
            await conn.execute("PREPARE twice AS SELECT 1")
    finally:
        await conn.close()
    assert classify(missing.value) == classify(duplicate.value) == "temporary"


def test_pooled_needs_a_direct_url() -> None:
    env = {"HOME": "/nowhere", "OSCBRIDGE_DATABASE_URL": "postgresql://bridge@pooler:6432/oscbridge",
           "OSCBRIDGE_DATABASE_POOLED": "true"}
    with pytest.raises(ConfigError, match=r"database_pooled = true needs database_direct_url.*LISTEN.*pg_dump"):
        load_settings({}, env=env)
    direct = "postgresql://bridge@db:5432/oscbridge"
    settings = load_settings({}, env={**env, "OSCBRIDGE_DATABASE_DIRECT_URL": direct})
    assert (settings.database_pooled, settings.direct_database_url) == (True, direct)
    with pytest.raises(ConfigError, match="apply to a database_url"):
        load_settings({}, env={"HOME": "/nowhere", "OSCBRIDGE_DATABASE_DIRECT_URL": direct})
