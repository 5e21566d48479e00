"""The foundation's /bridge/* requests over UDP and TCP against a running bridge and a real PostgreSQL."""

from __future__ import annotations

import time

import asyncpg
import pytest

from oscbridge.app import Bridge
from oscbridge.client import BridgeClient, BridgeRequestError


async def committed(bridge: Bridge) -> None:
    assert await bridge.writer.flush(5.0), "writes did not reach PostgreSQL"


async def test_ping_and_status(client: BridgeClient) -> None:
    version, uptime = await client.call("/bridge/ping")
    assert version == "0.1.0"
    assert 0.0 <= uptime < 60.0
    status = await client.call("/bridge/status")
    assert len(status) == 10  # BRIDGE-API.md's six, then the disk and spool extension (docs/bridge-api-notes.md)
    bound, identified, queued, spooled, db_up, _ollama_up, free_mib, spool_bytes, rejected, dropped = status
    assert (bound, identified, spooled, db_up, rejected, dropped) == (0, 0, 0, 1, 0, 0)
    assert queued >= 0 and spool_bytes >= 0 and free_mib > 0


async def test_project_open_and_current(client: BridgeClient, bridge: Bridge, database_url: str) -> None:
    name, default_id, first_session = await client.call("/bridge/project/current")
    assert name == "Default Project"

    project_id, session_id = await client.call("/bridge/project/open", "Song A", "/Users/me/Song A.logicx")
    assert project_id != default_id and session_id != first_session
    assert await client.call("/bridge/project/current") == ["Song A", project_id, session_id]
    # Opening the current project again keeps its session.
    assert await client.call("/bridge/project/open", "Song A", "") == [project_id, session_id]

    await committed(bridge)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT id::text, name, logic_project_path FROM projects ORDER BY name")
        assert [(r["name"], r["logic_project_path"]) for r in rows] == [
            ("Default Project", None), ("Song A", "/Users/me/Song A.logicx")]
        active = await conn.fetch("SELECT id::text, project_id::text FROM sessions WHERE is_active")
        assert [(r["id"], r["project_id"]) for r in active] == [(session_id, project_id)]
        ended = await conn.fetchval("SELECT ended_at IS NOT NULL FROM sessions WHERE id = $1", first_session)
        assert ended
    finally:
        await conn.close()


async def test_mapping_set_list_track_clear(client: BridgeClient, bridge: Bridge, database_url: str) -> None:
    assert await client.rows("/bridge/mapping/list") == []
    await client.call("/bridge/mapping/set", 2, "Snare", "TR2")
    await client.call("/bridge/mapping/set", 1, "Kick", "TR1")
    await client.call("/bridge/mapping/set", 3, "Bass", "TR3")
    rows = await client.rows("/bridge/mapping/list")
    assert rows == [[1, "Kick", "TR1", -1, ""], [2, "Snare", "TR2", -1, ""], [3, "Bass", "TR3", -1, ""]]
    assert await client.call("/bridge/mapping/track", "TR2") == ["Snare", 2, -1, ""]

    # Moving TR1 to track 2 retires both the old TR1 row and the old track-2 row (one current row each).
    await client.call("/bridge/mapping/set", 2, "Kick 2", "TR1")
    rows = await client.rows("/bridge/mapping/list")
    assert rows == [[2, "Kick 2", "TR1", -1, ""], [3, "Bass", "TR3", -1, ""]]
    with pytest.raises(BridgeRequestError) as err:
        await client.call("/bridge/mapping/track", "TR2")
    assert err.value.code == "not_found"

    await committed(bridge)
    conn = await asyncpg.connect(database_url)
    try:
        current = await conn.fetch(
            "SELECT track_number, track_name, plugin_id FROM track_assignments WHERE is_current ORDER BY 1")
        assert [tuple(r) for r in current] == [(2, "Kick 2", "TR1"), (3, "Bass", "TR3")]
        assert await conn.fetchval("SELECT count(*) FROM track_assignments") == 4  # history is kept
    finally:
        await conn.close()

    assert await client.call("/bridge/mapping/clear") == [2]
    assert await client.rows("/bridge/mapping/list") == []
    await committed(bridge)
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM track_assignments WHERE is_current") == 0
    finally:
        await conn.close()


async def test_mapping_belongs_to_project(client: BridgeClient) -> None:
    await client.call("/bridge/mapping/set", 1, "Kick", "TR1")
    await client.call("/bridge/project/open", "Other Song", "")
    assert await client.rows("/bridge/mapping/list") == []
    await client.call("/bridge/project/open", "Default Project", "")
    assert await client.rows("/bridge/mapping/list") == [[1, "Kick", "TR1", -1, ""]]


async def test_debug_log_is_stored(client: BridgeClient, bridge: Bridge, database_url: str) -> None:
    (first,) = await client.call("/bridge/debug/log", "orchestrator", "", "command", "analyzing request",
                                 '{"task": "eq", "n": 2}', "info")
    (second,) = await client.call("/bridge/debug/log", "osc_agent", "orchestrator", "status", "3/3 responding",
                                  "", "warning")
    await committed(bridge)
    conn = await asyncpg.connect(database_url)
    try:
        rows = {r["id"]: r for r in await conn.fetch(
            "SELECT id::text, sender, receiver, message_type, content, payload, severity FROM mission_control_debug")}
        assert rows[first]["receiver"] is None  # "" means broadcast
        assert rows[first]["payload"] == '{"n": 2, "task": "eq"}'
        assert rows[second]["receiver"] == "orchestrator" and rows[second]["payload"] is None
        assert rows[second]["severity"] == "warning"
    finally:
        await conn.close()


async def test_debug_rows_read_back_by_page_and_by_tail(client: BridgeClient, bridge: Bridge) -> None:
    for n in range(7):
        await client.call("/bridge/debug/log", "orchestrator" if n % 2 else "osc_agent", "", "log", f"row {n}",
                          "", "warning" if n == 3 else "info")
    # The tail (from memory), oldest first, after a cursor.
    tail = await client.rows("/bridge/debug/tail")
    assert [r[6] for r in tail] == [f"row {n}" for n in range(7)]
    assert [r[0] for r in tail] == list(range(1, 8))
    assert abs(tail[0][1] - time.time()) < 60  # a Unix time to the microsecond: sent as a double, not a float32
    assert [r[6] for r in await client.rows("/bridge/debug/tail", tail[4][0])] == ["row 5", "row 6"]
    assert await client.rows("/bridge/debug/tail", tail[-1][0]) == []
    # Pages from the database, newest first, with filters; a page's last cursor gives the next page.
    first = await client.rows("/bridge/debug/recent", 3)
    assert [r[6] for r in first] == ["row 6", "row 5", "row 4"]
    second = await client.rows("/bridge/debug/recent", 3, first[-1][0])
    assert [r[6] for r in second] == ["row 3", "row 2", "row 1"]
    assert [r[6] for r in await client.rows("/bridge/debug/recent", 10, "", "ROW 3")] == ["row 3"]
    assert [r[6] for r in await client.rows("/bridge/debug/recent", 10, "", "", "orchestrator")] == \
        ["row 5", "row 3", "row 1"]
    assert [r[6] for r in await client.rows("/bridge/debug/recent", 10, "", "", "", "warning")] == ["row 3"]
    # A live row's id pages from just before that row.
    assert [r[6] for r in await client.rows("/bridge/debug/recent", 2, tail[3][7])] == ["row 2", "row 1"]
    with pytest.raises(BridgeRequestError, match="bad_request: before must be"):
        await client.rows("/bridge/debug/recent", 10, "yesterday")


async def test_fire_and_forget_gets_no_reply_unless_it_fails(udp_client: BridgeClient, bridge: Bridge) -> None:
    udp_client.send("/bridge/mapping/set", "", 5, "Keys", "TR5")
    udp_client.send("/bridge/mapping/set", "", 0, "Bad", "TR6")
    # A normal request after both: its reply arrives after anything the two could have caused.
    assert await udp_client.call("/bridge/mapping/track", "TR5") == ["Keys", 5, -1, ""]
    replies = [m for m in udp_client.unmatched if m.address == "/bridge/mapping/set/reply"]
    assert [m.args[:3] for m in replies] == [["", "error", "bad_request"]]
