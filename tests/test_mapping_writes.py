"""How the writer applies mapping changes and session starts of several bridges on one database: two bridges
changing one track at once both succeed, a change that waited in a spool does not undo another bridge's newer one,
a session start is not refused after this bridge's clock stepped back, and a replayed start ends nothing new."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from oscbridge.projects import project_id_for
from oscbridge.store.core_ops import CORE_OPS
from oscbridge.store.writes import BridgeStart, MappingSet, SessionStart
from tests.conftest import wait_until

APPLY = {kind.type: kind.apply for kind in CORE_OPS}
PROJECT = project_id_for("Shared Song")
T0 = 1_780_000_000.0  # seconds since the epoch, 2026


class Rig:
    """One bridge's side of the database: its own connection, and its id set in each transaction as the writer
    sets it."""

    def __init__(self, conn: asyncpg.Connection, name: str) -> None:
        self.conn = conn
        self.id = str(uuid.uuid4())
        self.name = name
        self.session = str(uuid.uuid4())

    async def apply(self, *ops: Any) -> None:
        async with self.conn.transaction():
            await self.as_this_bridge()
            for op in ops:
                await APPLY[type(op)](self.conn, [op])

    async def as_this_bridge(self) -> None:
        await self.conn.execute("SELECT set_config('oscbridge.bridge_id', $1, true)", self.id)

    async def start(self, session: str, ts: float, previous: str | None = None) -> None:
        self.session = session
        await self.apply(SessionStart(PROJECT, "Shared Song", "", session, previous, ts))

    def mapping(self, track: int, name: str, plugin: str, ts: float) -> MappingSet:
        return MappingSet(str(uuid.uuid4()), PROJECT, self.session, track, name, plugin, ts)


@pytest.fixture
async def rigs(database_url: str) -> AsyncIterator[tuple[Rig, Rig]]:
    conns = [await asyncpg.connect(database_url) for _ in range(2)]
    a, b = Rig(conns[0], "Rig A"), Rig(conns[1], "Rig B")
    try:
        for rig in (a, b):
            await rig.apply(BridgeStart(rig.id, rig.name, "host", "test", T0))
            await rig.start(rig.session, T0)
        yield a, b
    finally:
        for conn in conns:
            await conn.close()


async def current(conn: asyncpg.Connection) -> list[tuple[int, str, str]]:
    rows = await conn.fetch("SELECT track_number, track_name, plugin_id FROM track_assignments "
                            "WHERE project_id = $1 AND is_current ORDER BY track_number", PROJECT)
    return [tuple(r) for r in rows]


async def test_two_bridges_setting_one_track_at_once_both_apply(rigs: tuple[Rig, Rig]) -> None:
    """Without the project's mapping lock, B's UPDATE waited for A, skipped the row A retired, never saw A's new
    row, and B's INSERT was refused by the one-current-row index."""
    a, b = rigs
    await a.apply(a.mapping(1, "Kick", "TR1", T0 + 1))
    tx = a.conn.transaction()
    await tx.start()
    await a.as_this_bridge()
    await APPLY[MappingSet](a.conn, [a.mapping(1, "Kick In", "TR1", T0 + 2)])  # uncommitted
    later = asyncio.ensure_future(b.apply(b.mapping(1, "Kick Out", "TR1", T0 + 3)))
    await asyncio.sleep(0.3)
    assert not later.done(), "B waits for A's transaction"
    await tx.commit()
    await asyncio.wait_for(later, 10)
    assert await current(a.conn) == [(1, "Kick Out", "TR1")]
    assert await a.conn.fetchval("SELECT count(*) FROM track_assignments WHERE project_id = $1", PROJECT) == 3


async def test_a_change_that_waited_in_a_spool_does_not_undo_a_newer_one(rigs: tuple[Rig, Rig]) -> None:
    a, b = rigs
    notified: list[dict[str, Any]] = []
    await b.conn.add_listener("oscbridge_mappings", lambda *args: notified.append(json.loads(args[3])))
    await b.apply(b.mapping(2, "Snare", "TR2", T0 + 20))  # B's change, made later ...
    await a.apply(a.mapping(2, "Old Snare", "TR2", T0 + 10))  # ... than A's, which reaches the database after it
    assert await current(a.conn) == [(2, "Snare", "TR2")]
    kept = await a.conn.fetchrow("SELECT is_current, retired_at FROM track_assignments WHERE track_name = "
                                 "'Old Snare'")
    assert kept is not None and not kept["is_current"] and kept["retired_at"] is not None  # kept as history
    # Every bridge, A too, reads the project's mappings again.
    await wait_until(lambda: {"project_id": PROJECT, "bridge_id": None} in notified)
    await a.apply(a.mapping(2, "New Snare", "TR2", T0 + 30))  # a newer change of A's own replaces B's
    assert await current(a.conn) == [(2, "New Snare", "TR2")]
    await a.apply(a.mapping(2, "Snare again", "TR2", T0 + 25))  # A's own rows: its spool's order wins, not the time
    assert await current(a.conn) == [(2, "Snare again", "TR2")]


async def test_a_session_start_after_the_clock_stepped_back_ends_this_bridges_previous_one(
        rigs: tuple[Rig, Rig]) -> None:
    a, b = rigs
    first, second = a.session, str(uuid.uuid4())
    await a.start(second, T0 - 3600, previous=first)  # the wall clock went back an hour
    active = await a.conn.fetch("SELECT id::text, bridge_id::text FROM sessions WHERE project_id = $1 AND "
                                "is_active ORDER BY bridge_id", PROJECT)
    assert sorted((r["id"], r["bridge_id"]) for r in active) == sorted([(second, a.id), (b.session, b.id)])


async def test_a_replayed_session_start_ends_nothing_started_after_it(rigs: tuple[Rig, Rig]) -> None:
    a, _ = rigs
    first = a.session
    second, third = str(uuid.uuid4()), str(uuid.uuid4())
    await a.start(second, T0 + 10, previous=first)
    await a.start(third, T0 + 20, previous=second)
    await a.apply(SessionStart(PROJECT, "Shared Song", "", second, first, T0 + 10))  # a replay after a crash
    assert await a.conn.fetchval("SELECT is_active FROM sessions WHERE id = $1", uuid.UUID(third))
    assert not await a.conn.fetchval("SELECT is_active FROM sessions WHERE id = $1", uuid.UUID(second))
