"""`serve --record FILE` writes every datagram in and out; `replay` of that file rebuilds the same state."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from oscbridge.app import Bridge
from oscbridge.client import BridgeClient
from oscbridge.tools.replay import replay
from tests.conftest import make_settings


async def test_recorded_session_replays_into_the_same_state(tmp_path: Path, pg: object, database_url: str) -> None:
    recording = tmp_path / "session.jsonl"
    first = Bridge(make_settings(tmp_path / "a", database_url, record=recording))
    await first.start()
    try:
        async with await BridgeClient.connect("127.0.0.1", first.port) as client:
            await client.call("/bridge/project/open", "Replayed Song", "")
            for n, name in ((1, "Kick"), (2, "Snare"), (3, "Bass")):
                await client.call("/bridge/mapping/set", n, name, f"TR{n}")
            client.send_bytes(b"not osc at all")  # malformed input is recorded and replayed as it was
            await client.call("/bridge/ping")
    finally:
        await first.stop()

    lines = [json.loads(line) for line in recording.read_text().splitlines()]
    inbound = [r for r in lines if r["dst"].endswith(f":{first.port}")]
    outbound = [r for r in lines if r["src"].endswith(f":{first.port}")]
    assert [r.get("address") for r in inbound] == [
        "/bridge/project/open", "/bridge/mapping/set", "/bridge/mapping/set", "/bridge/mapping/set", None,
        "/bridge/ping"]
    assert base64.b64decode(inbound[4]["data"]) == b"not osc at all"
    assert [r["address"] for r in outbound] == [
        "/bridge/project/open/reply", "/bridge/mapping/set/reply", "/bridge/mapping/set/reply",
        "/bridge/mapping/set/reply", "/bridge/ping/reply"]
    assert inbound[1]["args"] == [inbound[1]["args"][0], ["i", 1], ["s", "Kick"], ["s", "TR1"]]

    second = Bridge(make_settings(tmp_path / "b", await pg.new_database()))  # type: ignore[attr-defined]
    await second.start()
    try:
        stats = await replay(recording, target=("127.0.0.1", second.port), speed=0, only_to_port=first.port)
        assert (stats.sent, stats.skipped) == (6, 5)
        assert second.router is not None
        async with await BridgeClient.connect("127.0.0.1", second.port) as client:
            assert (await client.call("/bridge/project/current"))[0] == "Replayed Song"
            rows = await client.rows("/bridge/mapping/list")
            assert [r[:3] for r in rows] == [[1, "Kick", "TR1"], [2, "Snare", "TR2"], [3, "Bass", "TR3"]]
        assert second.router.counters["malformed"] == 1
    finally:
        await second.stop()
