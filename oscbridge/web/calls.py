"""Runs a `/bridge/*` request for the web side through the same endpoint table as OSC: one implementation of
every operation, whichever way it is asked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oscbridge.api.endpoint import Endpoint, Request, Rows
from oscbridge.typedefs import Addr
from oscbridge.web.values import json_values


@dataclass
class WebPeer:
    """Who asked over HTTP. Requests that answer to the sender's host over UDP (`/bridge/subscribe`) are not
    offered over HTTP, so nothing is ever sent to this peer."""

    addr: Addr
    kind: str = "http"

    def send(self, data: bytes) -> None:
        raise RuntimeError("web requests are answered over HTTP")


async def perform(endpoint: Endpoint, args: list[Any], peer: WebPeer) -> Any:
    """Checks the arguments and runs the handler; raises what it raises (BridgeError for an error reply)."""
    values = endpoint.convert(args)
    result = endpoint.call(Request(endpoint.address, "web", peer), values)
    return await result if endpoint.is_async else result


def as_json(result: Any) -> dict[str, Any]:
    """A handler's result as the page reads it: {"rows": [[...], ...]} for a list, {"values": [...]} otherwise."""
    if isinstance(result, Rows):
        return {"rows": [json_values(row) for row in result.rows]}
    return {"values": json_values(result or ())}
