"""Deeply nested JSON from outside is bad input like any other, wherever it arrives."""

from __future__ import annotations

import json

import pytest

from oscbridge.api.debug import parse_payload
from oscbridge.client import BridgeClient, BridgeRequestError
from oscbridge.jsontext import parse_json
from oscbridge.store.notifications import parse
from oscbridge.typedefs import BridgeError

DEEP = "[" * 100_000


def test_deep_nesting_is_a_decode_error() -> None:
    with pytest.raises(json.JSONDecodeError, match="nested too deeply"):
        parse_json(DEEP)
    with pytest.raises(json.JSONDecodeError, match="nested too deeply"):
        parse_json(DEEP.encode())
    assert parse_json('{"a": [1, 2]}') == {"a": [1, 2]}
    with pytest.raises(ValueError, match="nested too deeply"):
        parse(DEEP)  # a NOTIFY payload


async def test_a_deep_debug_payload_over_osc_is_refused_as_bad_request(client: BridgeClient) -> None:
    """A payload in one datagram (50,000 `[` are 50,000 levels) gets a clear bad_request, not `internal`."""
    with pytest.raises(BridgeError, match="payload is not valid JSON: nested too deeply"):
        parse_payload("[" * 50_000)
    with pytest.raises(BridgeRequestError) as refused:
        await client.call("/bridge/debug/log", "orchestrator", "bridge", "log", "deep", "[" * 50_000, "info")
    assert refused.value.code == "bad_request" and "nested too deeply" in str(refused.value)
    assert (await client.call("/bridge/ping"))[0]
