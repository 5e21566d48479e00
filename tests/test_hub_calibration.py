"""Calibration details with a hand-driven plugin: the exact argument types on the wire, and track-id assignment
that counts only the confirmation of that very (tempID, TRn) pair, retried about once a second (faster here)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from oscbridge.client import BridgeClient, BridgeRequestError
from oscbridge.config import Settings
from tests.conftest import wait_until
from tests.hub_support import RawPlugin, hub_settings, plugins_by_id, running

TEMP = "0123456789abcdef0123456789abcdef"


async def bound_raw_plugin(settings: Settings, temp_id: str = TEMP) -> RawPlugin:
    """Negotiates a port like the plugin does, then listens on the assigned port."""
    raw = RawPlugin(settings.osc_port)
    bootstrap = await raw.listen()
    raw.send("/aiplayer/request_port", ("s", temp_id), ("i", -1), ("i", bootstrap))
    await wait_until(lambda: raw.received("/aiplayer/port_assignment"))
    port = raw.received("/aiplayer/port_assignment")[0][1]
    assert raw.receiver is not None
    raw.receiver.close()
    raw.port = await raw.listen(port)
    raw.send("/aiplayer/port_confirmed", ("s", temp_id), ("i", port), ("s", "bound"))
    return raw


def tags_of(raw: RawPlugin, address: str) -> list[str]:
    assert raw.receiver is not None
    return [m.tags for m in raw.receiver.messages if m.address == address]


async def test_assignment_waits_for_its_own_confirmation(tmp_path: Path, database_url: str) -> None:
    settings = hub_settings(tmp_path, database_url, plugins=4, assign_retry_interval=0.2, assign_retries=3)
    async with running(settings):
        raw = await bound_raw_plugin(settings)
        client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
        await wait_until(lambda: _state(client, "bound"))
        assign = asyncio.ensure_future(client.call("/bridge/calibrate/assign", TEMP, "TR4", 4, "Bass", timeout=5))
        # Wrong answers first: another track id, another instance's confirmation. Neither may count.
        await wait_until(lambda: len(raw.received("/aiplayer/track_uuid_assignment")) == 1)
        raw.send("/aiplayer/uuid_assignment_confirmed", ("s", TEMP), ("s", "TR5"), ("s", "confirmed"))
        raw.send("/aiplayer/uuid_assignment_confirmed", ("s", "e" * 32), ("s", "TR4"), ("s", "confirmed"))
        await wait_until(lambda: len(raw.received("/aiplayer/track_uuid_assignment")) == 3, timeout=10)
        assert not assign.done()
        raw.send("/aiplayer/uuid_assignment_confirmed", ("s", TEMP), ("s", "TR4"), ("s", "confirmed"))
        assert await assign == []
        sends = raw.received("/aiplayer/track_uuid_assignment")
        assert len(sends) == 3 and len({args[0] for args in sends}) == 1  # resends keep their sequence number
        assert sends[0][1:] == [TEMP, "TR4"] and set(tags_of(raw, "/aiplayer/track_uuid_assignment")) == {"iss"}
        assert (await plugins_by_id(client))[TEMP][:3] == [raw.port, "identified", "TR4"]
        assert (await client.call("/bridge/mapping/track", "TR4"))[:2] == ["Bass", 4]
        await client.close()
        raw.close()


async def _state(client: BridgeClient, state: str) -> bool:
    return bool((await plugins_by_id(client)).get(TEMP, [None, None])[1] == state)


async def test_an_unconfirmed_assignment_is_unavailable_and_records_nothing(tmp_path: Path,
                                                                           database_url: str) -> None:
    settings = hub_settings(tmp_path, database_url, plugins=4, assign_retry_interval=0.1, assign_retries=2)
    async with running(settings):
        raw = await bound_raw_plugin(settings)
        client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
        await wait_until(lambda: _state(client, "bound"))
        with pytest.raises(BridgeRequestError) as silent:
            await client.call("/bridge/calibrate/assign", TEMP, "TR1", 1, "Kick")
        assert silent.value.code == "unavailable"
        assert len(raw.received("/aiplayer/track_uuid_assignment")) == 3
        assert await client.rows("/bridge/mapping/list") == []
        assert (await plugins_by_id(client))[TEMP][1:3] == ["bound", ""]
        with pytest.raises(BridgeRequestError) as unknown:
            await client.call("/bridge/calibrate/assign", "d" * 32, "TR1", 1, "Kick")
        assert unknown.value.code == "not_found"
        with pytest.raises(BridgeRequestError) as bad:
            await client.call("/bridge/calibrate/assign", TEMP, "Kick", 1, "Kick")
        assert bad.value.code == "bad_request"
        await client.close()
        raw.close()


async def test_tone_and_probe_use_the_plugins_types_and_ports(tmp_path: Path, database_url: str) -> None:
    settings = hub_settings(tmp_path, database_url, plugins=4)
    async with running(settings):
        raw = await bound_raw_plugin(settings)
        client = await BridgeClient.connect("127.0.0.1", settings.osc_port)
        await wait_until(lambda: _state(client, "bound"))

        async def answer_tone() -> None:
            await wait_until(lambda: raw.received("/aiplayer/start_tone"))
            raw.send("/aiplayer/tone_started", ("s", TEMP), ("f", 440.0))

        answering = asyncio.ensure_future(answer_tone())
        assert await client.call("/bridge/calibrate/tone", 1, 440, -20) == [1]  # ints from the client...
        await answering
        assert raw.received("/aiplayer/start_tone") == [[440.0, -20.0]]
        assert tags_of(raw, "/aiplayer/start_tone") == ["ff"]  # ...float32 on the wire, or the plugin ignores it
        assert await client.call("/bridge/calibrate/tone", 0) == [0]  # nobody said tone_stopped in the window
        assert tags_of(raw, "/aiplayer/stop_tone") == [""]

        async def answer_probe() -> None:
            await wait_until(lambda: raw.received("/aiplayer/query_rms"))
            query = raw.received("/aiplayer/query_rms")[-1][0]
            raw.send("/aiplayer/rms_response", ("s", query), ("s", TEMP), ("f", 0.1))

        answering = asyncio.ensure_future(answer_probe())
        rows = await client.rows("/bridge/calibrate/probe")
        await answering
        assert rows == [[TEMP, raw.port, pytest.approx(-20.0, abs=1e-3)]]
        assert tags_of(raw, "/aiplayer/query_rms") == ["s"]
        await client.close()
        raw.close()
