"""Restarts of the bridge and of PostgreSQL: state comes back, and no acknowledged write is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from oscbridge.app import Bridge
from oscbridge.client import BridgeClient, BridgeRequestError
from oscbridge.projects import project_id_for
from oscbridge.store.db import Database
from oscbridge.store.spool import Spool
from oscbridge.store.writer import OpKind, Writer
from oscbridge.store.writes import MappingClear
from tests.conftest import EmbeddedServer, make_settings, wait_until


async def test_state_survives_a_bridge_restart(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url)
    first = Bridge(settings)
    await first.start()
    async with await BridgeClient.connect("127.0.0.1", settings.osc_port) as client:
        project_id, first_session = await client.call("/bridge/project/open", "Album", "/Music/Album.logicx")
        await client.call("/bridge/mapping/set", 1, "Kick", "TR1")
        await client.call("/bridge/mapping/set", 2, "Snare", "TR2")
    await first.stop()

    second = Bridge(settings)
    await second.start()
    try:
        async with await BridgeClient.connect("127.0.0.1", settings.osc_port, transport="tcp") as client:
            name, resumed_id, new_session = await client.call("/bridge/project/current")
            assert (name, resumed_id) == ("Album", project_id)  # the most recently opened project
            assert new_session != first_session  # in a new session
            rows = await client.rows("/bridge/mapping/list")
            assert [r[:3] for r in rows] == [[1, "Kick", "TR1"], [2, "Snare", "TR2"]]
        assert await second.writer.flush(5)
    finally:
        await second.stop()
    conn = await asyncpg.connect(database_url)
    try:
        sessions = await conn.fetch("SELECT id::text, is_active FROM sessions WHERE project_id = $1", project_id)
        assert {r["id"]: r["is_active"] for r in sessions} == {first_session: False, new_session: True}
    finally:
        await conn.close()


async def test_twenty_concurrent_opens_make_one_project_and_one_session(bridge: Bridge, database_url: str) -> None:
    clients = [await BridgeClient.connect("127.0.0.1", bridge.port, transport=("udp", "tcp")[i % 2])
               for i in range(20)]
    try:
        results = await asyncio.gather(*(c.call("/bridge/project/open", "Same Song", "") for c in clients))
    finally:
        for c in clients:
            await c.close()
    assert len({tuple(r) for r in results}) == 1
    assert await bridge.writer.flush(5)
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM projects WHERE name = 'Same Song'") == 1
        assert await conn.fetchval(
            "SELECT count(*) FROM sessions s JOIN projects p ON p.id = s.project_id "
            "WHERE p.name = 'Same Song' AND s.is_active") == 1
        assert await conn.fetchval("SELECT count(*) FROM sessions WHERE is_active") == 1
    finally:
        await conn.close()


async def test_database_restart_under_traffic_loses_no_acknowledged_write(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "own-pg")
    try:
        url = await server.new_database()
        bridge = Bridge(make_settings(tmp_path, url))
        await bridge.start()
        acked: list[str] = []
        mappings: dict[int, str] = {}
        try:
            async with await BridgeClient.connect("127.0.0.1", bridge.port) as client:
                async def traffic(rounds: int) -> None:
                    for i in range(rounds):
                        (row_id,) = await client.call("/bridge/debug/log", "test", "", "log", f"line {len(acked)}",
                                                      "", "info")
                        acked.append(row_id)
                        n = 1 + (i % 16)
                        await client.call("/bridge/mapping/set", n, f"Track {len(acked)}", f"TR{n}")
                        mappings[n] = f"Track {len(acked)}"

                await traffic(50)
                await asyncio.to_thread(server.stop)
                await traffic(100)  # PostgreSQL is down: still acknowledged, answered from memory
                await wait_until(lambda: not bridge.db.up, timeout=10)  # type: ignore[union-attr]
                status = await client.call("/bridge/status")
                assert status[4] == 0 and status[3] > 0  # database down, writes spooled
                await asyncio.to_thread(server.start)
                await traffic(50)
                assert await bridge.writer.flush(30), "spooled writes did not reach the database"
                status = await client.call("/bridge/status")
                assert status[2:5] == [0, 0, 1]
        finally:
            await bridge.stop()
        conn = await asyncpg.connect(url)
        try:
            stored = {r[0] for r in await conn.fetch("SELECT id::text FROM mission_control_debug")}
            assert stored == set(acked) and len(acked) == 200
            current = {r["track_number"]: r["track_name"] for r in await conn.fetch(
                "SELECT track_number, track_name FROM track_assignments WHERE is_current")}
            assert current == mappings
        finally:
            await conn.close()
    finally:
        server.cleanup()


async def test_writes_spooled_while_the_database_is_down_survive_a_bridge_restart(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "own-pg")
    try:
        url = await server.new_database()
        settings = make_settings(tmp_path, url, drain_timeout=0.5)
        bridge = Bridge(settings)
        await bridge.start()
        await asyncio.to_thread(server.stop)
        async with await BridgeClient.connect("127.0.0.1", settings.osc_port) as client:
            ids = [(await client.call("/bridge/debug/log", "t", "", "log", f"n{i}", "", "info"))[0]
                   for i in range(30)]
        await bridge.stop()  # cannot drain: the database is down
        assert (settings.spool_dir / "writes.jsonl").stat().st_size > 0

        await asyncio.to_thread(server.start)
        bridge = Bridge(settings)
        await bridge.start()
        try:
            assert await bridge.writer.flush(20)
        finally:
            await bridge.stop()
        conn = await asyncpg.connect(url)
        try:
            stored = {r[0] for r in await conn.fetch("SELECT id::text FROM mission_control_debug")}
            assert set(ids) <= stored
        finally:
            await conn.close()
    finally:
        server.cleanup()


async def test_bridge_starts_and_serves_when_the_database_is_unreachable(tmp_path: Path) -> None:
    url = f"postgresql://postgres@/oscbridge?host={tmp_path}/nowhere"
    bridge = Bridge(make_settings(tmp_path, url, drain_timeout=0.5))
    await bridge.start()
    try:
        async with await BridgeClient.connect("127.0.0.1", bridge.port) as client:
            assert (await client.call("/bridge/project/current"))[0] == "Default Project"
            await client.call("/bridge/mapping/set", 1, "Kick", "TR1")
            # The bridge's registration, the session start and the mapping are spooled; the database is down.
            assert (await client.call("/bridge/status"))[2:5] == [0, 3, 0]
            try:
                await client.call("/bridge/mapping/track", "TR1")
            except BridgeRequestError as exc:  # pragma: no cover - makes a failure readable
                raise AssertionError(exc) from exc
    finally:
        await bridge.stop()


async def test_the_writer_survives_an_unforeseen_error_and_retries_the_batch(tmp_path: Path, database_url: str) -> None:
    calls: list[int] = []

    async def flaky(conn: asyncpg.Connection, ops: list[MappingClear]) -> None:
        calls.append(len(ops))
        if len(calls) == 1:
            raise RuntimeError("an applier bug or a driver in a state nobody expected")
        await conn.execute("SELECT 1")

    db = Database(database_url)
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, reserve_bytes=0)
    writer = Writer(db, spool, [OpKind(MappingClear, flaky)])
    writer.start()
    try:
        writer.submit(MappingClear(project_id_for("x"), 0.0))
        writer.submit(MappingClear(project_id_for("y"), 0.0))
        assert await writer.flush(10), "the writer stopped after the error"
        assert len(calls) >= 2
    finally:
        await writer.stop(1.0)
        spool.close()
        await db.close()
