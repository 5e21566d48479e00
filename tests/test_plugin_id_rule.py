"""One rule for what a track ("plugin") id is, applied by the /bridge/* requests, the plugin hub's telemetry and
the SQLite import, each refusing with the actual problem: too long, or not starting with TR."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from oscbridge.app import Bridge
from oscbridge.client import BridgeClient, BridgeRequestError
from oscbridge.osc.codec import encode_message
from oscbridge.tools.migrate_sqlite import read_legacy
from oscbridge.typedefs import plugin_id_problem
from tests.conftest import wait_until
from tests.test_migrate_sqlite import legacy_db

TOO_LONG = "TR" + "1" * 49  # starts with TR: only its length (51) is wrong
NOT_TR = "XR1"  # a fine length: only its start is wrong
BAD = [(TOO_LONG, "is 51 characters long; at most 50 are allowed"), (NOT_TR, "must start with 'TR'; got 'XR1'")]


def test_the_rule() -> None:
    assert [plugin_id_problem(ok) for ok in ("TR1", "TR10", "TR" + "9" * 48)] == [None, None, None]
    assert plugin_id_problem(TOO_LONG) == "plugin_id is 51 characters long; at most 50 are allowed"
    assert plugin_id_problem("tr1", "track id") == "track id must start with 'TR'; got 'tr1'"
    assert plugin_id_problem("") == "plugin_id must start with 'TR'; got ''"
    assert plugin_id_problem("TR") == "plugin_id needs at least 3 characters: 'TR' and a track number"


@pytest.mark.parametrize(("bad", "why"), BAD)
async def test_requests_refuse_it(client: BridgeClient, bad: str, why: str) -> None:
    with pytest.raises(BridgeRequestError) as err:
        await client.call("/bridge/mapping/set", 1, "Kick", bad)
    assert (err.value.code, err.value.message) == ("bad_request", f"plugin_id {why}")
    assert await client.rows("/bridge/mapping/list") == []


@pytest.mark.parametrize(("bad", "why"), BAD)
async def test_the_hub_refuses_it_in_telemetry(bridge: Bridge, bad: str, why: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    async with await BridgeClient.connect("127.0.0.1", bridge.port) as client:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plugin:
            plugin.sendto(encode_message("/aiplayer/telemetry", [bad, 0.1, -20.0, -20.0, -20.0, -20.0]),
                          ("127.0.0.1", bridge.port))

            async def counted() -> bool:
                return bool(dict(await client.rows("/bridge/stats")).get("hub.bad_track_id", 0) == 1)

            await wait_until(counted, timeout=5)
    lines = [r.getMessage() for r in caplog.records if "plugin_message_rejected" in r.getMessage()]
    assert len(lines) == 1 and f"track id {why}" in lines[0], lines
    assert bad not in bridge.hub.levels.tracks


def test_the_sqlite_import_skips_it(tmp_path: Path) -> None:
    source = legacy_db(tmp_path / "track_mappings.db", [(bad, bad, "Kick", n, None) for n, (bad, _) in
                                                        enumerate(BAD, 1)] + [("TR3", "TR3", "Bass", 3, None)])
    rows, skipped, read = read_legacy(source)
    assert read == 3 and [r.temp_id for r in rows] == ["TR3"]
    assert {s.temp_id: s.reason for s in skipped} == {bad: f"temp_id {why}" for bad, why in BAD}
