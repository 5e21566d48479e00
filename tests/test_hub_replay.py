"""Recorded sessions (tests/data) replayed into a bridge, and the bridge's state afterwards.

The recordings use the app's ports 9000-9002, so the bridge gets exactly that range: the replayed
`port_confirmed` messages then name the ports this bridge handed out. Both files are replayed as one session
(the edge cases after the three-track start-up), so the chat message comes from the Kick plugin's socket.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import asyncpg
import pytest

from oscbridge.client import BridgeClient
from oscbridge.tools.recording import decode_osc, read_recording
from oscbridge.tools.replay import replay
from tests.hub_support import hub_settings, listener, plugins_by_id, port_free, running

DATA = Path(__file__).parent / "data"
KICK = "43440ecde2c040a193edbfc32b76dde4"
SNARE = "fdda8bfa71b04b2794728fc47fe6cecd"
BASS = "755f7d69f93547e489909c25a094826c"
NO_PORT = "0d6c1f4b8a2e4f3c9b7a1e2d3c4b5a69"
DEAF = "5e0a7f19c3d84b2aa6f0d1e2c3b4a596"
STREAM = ("/aiplayer/telemetry", "/aiplayer/rms")


def datagrams_to_bridge(path: Path, stream: bool) -> int:
    """How many datagrams of the recording went to the bridge, telemetry ones or the others."""
    count = 0
    for record in read_recording(path):
        decoded = decode_osc(record.data)
        if record.dst[1] == 8999 and decoded is not None and (decoded[0] in STREAM) == stream:
            count += 1
    return count


async def test_three_tracks_and_edge_cases_replayed(tmp_path: Path, database_url: str) -> None:
    if not all(port_free(p) for p in (9000, 9001, 9002)):
        pytest.skip("the recordings' ports 9000-9002 are in use on this machine")
    session = tmp_path / "session.jsonl"
    session.write_text((DATA / "three_tracks_startup.jsonl").read_text() + (DATA / "edge_cases.jsonl").read_text())
    settings = hub_settings(tmp_path, database_url, plugins=3, port_range_start=9000, plugin_silence=30.0,
                            plugin_probe_interval=30.0, debug_rows_per_second=10_000)
    async with running(settings) as bridge, listener() as events:
        client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
        await client.call("/bridge/subscribe", events.port, "/bridge/event/chat_request")
        stats = await replay(session, target=("127.0.0.1", settings.osc_port), speed=0)
        assert stats.sent == 114 and stats.errors == 0
        await client.call("/bridge/ping")  # the replayed datagrams were all handled before this reply

        # The pool: the three plugins on the recorded ports, identified by their telemetry's track ids (the
        # recorded assignments came from the app, not this bridge); the pool was full for the last two.
        listed = {t: row[:3] for t, row in (await plugins_by_id(client)).items()}
        assert listed == {KICK: [9000, "identified", "TR1"], SNARE: [9001, "identified", "TR2"],
                          BASS: [9002, "identified", "TR3"], NO_PORT: [-1, "failed", ""], DEAF: [-1, "failed", ""]}
        # Levels: the last tick of each track (music levels at 60 s).
        levels = {row[0]: row[1:6] for row in await client.rows("/bridge/levels")}
        expected = {"TR1": (0.0472, -13.2, -38.5, -52.7, -61.9), "TR2": (0.1127, -24.6, -29.8, -34.1, -41.3),
                    "TR3": (0.1409, -17.3, -36.4, -56.2, -71.8)}
        for track, (rms, *bands) in expected.items():
            assert levels[track][0] == pytest.approx(20 * math.log10(rms), abs=1e-4)
            assert levels[track][1:] == pytest.approx(bands, abs=1e-4)
        # The plugin's ,is chat message, which the app dropped, is an event with the Kick's track id.
        assert events.of("/bridge/event/chat_request") == [["TR1", "reduce gain by 3 db"]]
        counters = dict(await client.rows("/bridge/stats"))
        assert counters["hub.unknown_query"] == 9  # the app's probes, not ours: they prove nothing
        assert counters["hub.unmatched_confirmation"] == 3
        assert counters["hub.pool_exhausted"] == 2 and counters["hub.unassigned_port"] == 1
        assert counters["hub.telemetry"] == datagrams_to_bridge(session, stream=True)
        await client.close()

        # PostgreSQL: the instances, and one debug row per control datagram in (none for telemetry), and out.
        assert await bridge.writer.flush(10.0)
        conn = await asyncpg.connect(database_url)
        try:
            stored = {r["instance_id"]: (r["port"], r["state"], r["plugin_id"]) for r in await conn.fetch(
                "SELECT instance_id, port, state, plugin_id FROM plugin_instances")}
            assert stored[KICK] == (9000, "identified", "TR1") and stored[DEAF][1] == "failed"
            rows = await conn.fetch("SELECT message_type, content, payload FROM mission_control_debug "
                                    "WHERE message_type IN ('osc_in', 'osc_out')")
        finally:
            await conn.close()
        inbound = [r for r in rows if r["message_type"] == "osc_in"]
        assert len(inbound) == datagrams_to_bridge(session, stream=False)
        assert not [r for r in inbound if r["content"].split()[0] in STREAM]
        outbound = sorted(r["content"] for r in rows if r["message_type"] == "osc_out")
        assert outbound == sorted([f"/aiplayer/port_assignment ,sis {KICK} 9000 assigned",
                                   f"/aiplayer/port_assignment ,sis {SNARE} 9001 assigned",
                                   f"/aiplayer/port_assignment ,sis {BASS} 9002 assigned",
                                   f"/aiplayer/port_assignment ,sis {NO_PORT} -1 error",
                                   f"/aiplayer/port_assignment ,sis {DEAF} -1 error"])
        chat = next(r for r in inbound if r["content"].startswith("/aiplayer/chat/request"))
        assert json.loads(chat["payload"])["args"] == [["i", 1], ["s", "reduce gain by 3 db"]]
