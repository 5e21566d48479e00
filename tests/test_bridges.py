"""Several bridges on one database: each has an identity, its own active session per project, its own plugins and
port pool; no acknowledged write is lost because another write was refused (the writer repairs missing parents)."""

from __future__ import annotations

import asyncio
import json
import stat
import uuid
from pathlib import Path

import asyncpg
import pytest

from oscbridge.app import WRITE_KINDS, Bridge
from oscbridge.client import BridgeClient
from oscbridge.plugins.ops import load_pool
from oscbridge.projects import project_id_for
from oscbridge.store.db import Database
from oscbridge.store.identity import IdentityError, load_identity
from oscbridge.store.spool import Spool
from oscbridge.store.writer import Writer
from oscbridge.store.writes import DebugRow, PluginInstanceRow, PortQuarantineRow
from oscbridge.tools.sim.plugin import PluginFleet
from tests.conftest import running, wait_until
from tests.hub_support import hub_settings, sim_config


async def committed(bridge: Bridge) -> None:
    assert await bridge.writer.flush(5.0)


async def rows(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def test_identity_is_made_once_kept_private_and_renamed_on_request(tmp_path: Path) -> None:
    first = load_identity(tmp_path, None)
    path = tmp_path / "bridge.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_identity(tmp_path, None) == first
    renamed = load_identity(tmp_path, "Studio B")
    assert (renamed.id, renamed.name) == (first.id, "Studio B")
    assert load_identity(tmp_path, None).name == "Studio B"  # the name given last is kept
    path.write_text("{not json")
    with pytest.raises(IdentityError, match=r"bridge\.json is not a bridge identity"):
        load_identity(tmp_path, None)


async def test_two_bridges_open_one_project_at_once_and_keep_every_write(tmp_path: Path, database_url: str) -> None:
    """The studio's first loss: the second bridge's session was refused by the one-active-session index, and every
    write of that bridge after it went to rejected.jsonl while its clients were told ok."""
    a = hub_settings(tmp_path / "a", database_url, plugins=4, bridge_name="Rig A")
    b = hub_settings(tmp_path / "b", database_url, plugins=4, bridge_name="Rig B")
    async with running(a) as bridge_a, running(b) as bridge_b:
        clients = [await BridgeClient.connect("127.0.0.1", s.osc_port) for s in (a, b)]
        await asyncio.gather(*(c.call("/bridge/project/open", "Album", "") for c in clients))
        for n in range(20):
            await clients[n % 2].call("/bridge/message/save", "user", f"take {n}")
        await clients[0].call("/bridge/mapping/set", 1, "Kick", "TR1")
        await clients[1].call("/bridge/mapping/set", 2, "Snare", "TR2")
        for bridge in (bridge_a, bridge_b):
            await committed(bridge)
            assert bridge.writer.rejected == 0 and bridge.parts.spool.rejected_count == 0
        for client in clients:
            await client.close()
        album = project_id_for("Album")
        active = await rows(database_url, "SELECT bridge_name FROM active_sessions WHERE project_id = $1 "
                                          "ORDER BY bridge_name", album)
        assert [r["bridge_name"] for r in active] == ["Rig A", "Rig B"]
        saved = await rows(database_url, "SELECT count(*) AS n FROM messages WHERE project_id = $1", album)
        assert saved[0]["n"] == 20
        history = await rows(database_url, "SELECT track_name, bridge_name FROM track_assignment_history "
                                           "WHERE project_id = $1 ORDER BY track_number", album)
        assert [(r["track_name"], r["bridge_name"]) for r in history] == [("Kick", "Rig A"), ("Snare", "Rig B")]
        known = await rows(database_url, "SELECT id::text, name FROM bridges ORDER BY name")
        assert [(r["id"], r["name"]) for r in known] == [(bridge_a.identity.id, "Rig A"),  # type: ignore[union-attr]
                                                         (bridge_b.identity.id, "Rig B")]  # type: ignore[union-attr]

    # A restart keeps the identity and ends only its own session.
    async with running(a) as again:
        assert again.identity is not None and again.identity.id == bridge_a.identity.id  # type: ignore[union-attr]
        await committed(again)
        active = await rows(database_url, "SELECT bridge_name, project_name FROM active_sessions ORDER BY 1")
        assert [(r["bridge_name"], r["project_name"]) for r in active] == [("Rig A", "Album"), ("Rig B", "Album")]


async def test_plugin_rows_and_quarantine_are_each_bridges_own(tmp_path: Path, database_url: str) -> None:
    """Two Macs both hand out port 9000: each bridge's row for it is kept, and each loads only its own (and the
    rows from before bridge ids)."""
    db = Database(database_url)
    await db.connect()
    try:
        ids = []
        for name in ("mac-a", "mac-b"):
            (tmp_path / name).mkdir()
            ids.append(load_identity(tmp_path / name, name).id)
        for n, bridge_id in enumerate(ids):
            writer = Writer(db, Spool(tmp_path / f"spool{n}", max_bytes=1 << 20, reserve_bytes=0), WRITE_KINDS,
                            bridge_id=bridge_id)
            writer.start()
            writer.submit(PluginInstanceRow(f"{n}" * 32, 9000, "bound", None, "127.0.0.1", 50000 + n, None,
                                            1.0e9, 1.0e9, 1.0e9 + n))
            writer.submit(PortQuarantineRow(9001, "failed bind", 1.0e9, 4.0e9))
            assert await writer.stop(5.0) and writer.rejected == 0
        async with db.acquire() as conn:
            await conn.execute("INSERT INTO plugin_instances (instance_id, port, state) VALUES ($1, 9002, 'bound')",
                               "legacy" * 5)
            for n, bridge_id in enumerate(ids):
                instances, quarantine = await load_pool(conn, bridge_id)
                assert sorted(i.instance_id for i in instances) == sorted([f"{n}" * 32, "legacy" * 5])
                assert [q.port for q in quarantine] == [9001]
            live = await conn.fetch("SELECT bridge_id::text FROM plugin_instances WHERE port = 9000 AND state = "
                                    "'bound' ORDER BY bridge_id")
            assert [r["bridge_id"] for r in live] == sorted(ids)
    finally:
        await db.close()


async def test_a_missing_session_is_repaired_and_the_writes_applied(tmp_path: Path, database_url: str) -> None:
    """A session row deleted under the bridge (as when its creation was refused): the writes that refer to it
    are not thrown away; the writer recreates the session (and the project) and applies them."""
    settings = hub_settings(tmp_path, database_url, plugins=2)
    async with running(settings) as bridge:
        client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
        await client.call("/bridge/project/open", "Fragile", "")
        await committed(bridge)
        project, session = bridge.projects.ids()
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("DELETE FROM projects WHERE id = $1", project)  # cascades to its sessions
        finally:
            await conn.close()
        (message_id,) = await client.call("/bridge/message/save", "user", "keep me")
        await client.call("/bridge/mapping/set", 3, "Bass", "TR3")
        await client.call("/bridge/debug/log", "orchestrator", "", "log", "still here", "", "info")
        await committed(bridge)
        await client.close()
        assert bridge.writer.rejected == 0 and bridge.writer.repaired >= 1
        kept = await rows(database_url, "SELECT m.content, p.name, s.id::text AS session FROM messages m "
                                        "JOIN projects p ON p.id = m.project_id JOIN sessions s ON s.id = m.session_id "
                                        "WHERE m.id = $1", message_id)
        assert [(r["content"], r["session"]) for r in kept] == [("keep me", session)]
        assert kept[0]["name"] == f"Recovered project {project}"
        assert (await rows(database_url, "SELECT count(*) AS n FROM track_assignments WHERE project_id = $1",
                           project))[0]["n"] == 1

    # Opening the project by its name again gives it its name back.
    async with running(settings) as bridge:
        client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
        await client.call("/bridge/project/open", "Fragile", "")
        await committed(bridge)
        await client.close()
    assert (await rows(database_url, "SELECT name FROM projects WHERE id = $1", project))[0]["name"] == "Fragile"


async def test_a_write_refused_even_after_the_repair_leaves_nothing_repaired_behind(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A debug row naming a project that does not exist and another project's session: the repair makes the
    project, the write is refused all the same (the session is not in that project), and the repaired project is
    rolled back with it instead of staying as a "Recovered project" that every bridge would list."""
    settings = hub_settings(tmp_path, database_url, plugins=2)
    async with running(settings) as bridge:
        client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
        await client.call("/bridge/project/open", "Elsewhere", "")
        await committed(bridge)
        await client.close()
        _, session = bridge.projects.ids()
        nowhere = str(uuid.uuid4())
        bridge.writer.submit(DebugRow(str(uuid.uuid4()), nowhere, session, "orchestrator", None, "log", "lost?",
                                      None, 1_780_000_000.0))
        await committed(bridge)
        assert bridge.writer.rejected == 1 and bridge.writer.repaired == 0
        assert bridge.parts.spool.rejected_count == 1  # kept in rejected.jsonl with the reason, not dropped
        async with await BridgeClient.connect("127.0.0.1", settings.osc_port, transport="tcp") as client:
            assert (await client.call("/bridge/status"))[8] == 1  # result 9: rejected writes (docs/bridge-api-notes.md)
            health = {row[0]: row[1:] for row in await client.rows("/bridge/health")}
            assert health["writes"][0] == "warn" and "1 refused by PostgreSQL" in health["writes"][1]
    assert await rows(database_url, "SELECT 1 FROM projects WHERE id = $1", nowhere) == []
    async with running(settings):  # and the next start says so, with what to do
        assert "rejected_writes_waiting" in caplog.text and "spool retry-rejected" in caplog.text


async def test_bridges_list_only_their_own_plugins(tmp_path: Path, database_url: str) -> None:
    a = hub_settings(tmp_path / "a", database_url, plugins=4)
    b = hub_settings(tmp_path / "b", database_url, plugins=4)
    fleets = [PluginFleet(2, sim_config(a), interval=0.0), PluginFleet(3, sim_config(b), interval=0.0)]
    try:
        async with running(a) as bridge_a, running(b) as bridge_b:
            for fleet in fleets:
                await fleet.start()
                await fleet.wait_all(lambda p: p.state == "bound", timeout=10)
            for bridge, fleet in ((bridge_a, fleets[0]), (bridge_b, fleets[1])):
                client = await BridgeClient.connect("127.0.0.1", bridge.port)
                listed = await client.rows("/bridge/plugins")
                await client.close()
                assert sorted(r[0] for r in listed) == sorted(p.temp_id for p in fleet)
                await committed(bridge)
            stored = await rows(database_url, "SELECT instance_id, bridge_id::text FROM plugin_instances")
            owner = {r["instance_id"]: r["bridge_id"] for r in stored}
            assert {owner[p.temp_id] for p in fleets[0]} == {bridge_a.identity.id}  # type: ignore[union-attr]
            assert {owner[p.temp_id] for p in fleets[1]} == {bridge_b.identity.id}  # type: ignore[union-attr]
        # A restart of bridge a re-adopts its two, never b's three.
        async with running(a):
            client = await BridgeClient.connect("127.0.0.1", a.osc_port)
            await wait_until(lambda: _listed(client, 2), timeout=10)
            assert sorted(r[0] for r in await client.rows("/bridge/plugins")) == sorted(p.temp_id for p in fleets[0])
            await client.close()
    finally:
        for fleet in fleets:
            await fleet.close()


async def _listed(client: BridgeClient, count: int) -> bool:
    return len(await client.rows("/bridge/plugins")) == count


def test_identity_file_is_json_with_id_and_name(tmp_path: Path) -> None:
    identity = load_identity(tmp_path, "Rig")
    assert json.loads((tmp_path / "bridge.json").read_text()) == {"id": identity.id, "name": "Rig"}
