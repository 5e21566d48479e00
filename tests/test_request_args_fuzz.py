"""The argument checks of every /bridge/* request, fuzzed: any decoded OSC values either convert to what the
handler expects or are refused with `bad_request` and a message naming the argument; nothing else escapes.
And a flood of requests that wait (on the database, on plugins) is capped instead of piling up."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import math
import pkgutil
import socket
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import oscbridge.api
from oscbridge.api.endpoint import Endpoint, collect, endpoint_of, request
from oscbridge.api.params import Bool, Float, Int, Param, PluginId, Str
from oscbridge.app import Bridge
from oscbridge.osc.codec import decode_message, encode_message
from oscbridge.osc.transport import UdpSocket
from oscbridge.router import MAX_IN_FLIGHT, Router
from oscbridge.typedefs import BridgeError


def endpoints() -> list[Endpoint]:
    """Every request declared by a class in oscbridge/api, found by walking the package (no bridge needed: only
    the argument specs are used), so a new API class is fuzzed without being listed here."""
    found: list[Endpoint] = []
    for module_info in pkgutil.iter_modules(oscbridge.api.__path__, f"{oscbridge.api.__name__}."):
        module = importlib.import_module(module_info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue  # imported from elsewhere: found in its own module
            for _, func in inspect.getmembers(cls, inspect.isfunction):
                endpoint = endpoint_of(func)
                if endpoint is not None:
                    found.append(endpoint)
    return sorted(found, key=lambda e: e.address)  # a stable order: hypothesis replays the same examples


ENDPOINTS = endpoints()

# What the decoder can hand a handler: every type of decoded OSC value, including odd ones.
VALUE = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.text(max_size=300), st.binary(max_size=20), st.tuples(st.integers(0, 255), st.integers(0, 255)),
    st.sampled_from(["TR1", "TR", "", "user", "info", "log", " ", "{}", "[1]", '{"a": NaN}', "TR" + "9" * 60]),
)


def _ok(param: Param, value: Any) -> None:
    """A converted value obeys the spec it passed."""
    if isinstance(param, Str):
        assert isinstance(value, str) and param.min_len <= len(value) <= param.max_len
        assert not param.choices or value in param.choices
        assert not isinstance(param, PluginId) or value.startswith(param.prefix)
    elif isinstance(param, Int):
        assert type(value) is int
        assert param.min is None or value >= param.min
        assert param.max is None or value <= param.max
    elif isinstance(param, Float):
        assert type(value) is float and math.isfinite(value)
    elif isinstance(param, Bool):
        assert type(value) is bool


@settings(derandomize=True, max_examples=600, deadline=None)
@given(st.sampled_from(ENDPOINTS), st.lists(VALUE, max_size=8))
def test_any_arguments_convert_correctly_or_are_refused_with_a_reason(endpoint: Endpoint, args: list[Any]) -> None:
    try:
        values = endpoint.convert(args)
    except BridgeError as exc:
        assert exc.code == "bad_request"
        assert exc.message and len(exc.message) < 1000
        return
    assert len(values) == len(endpoint.params)
    for param, value in zip(endpoint.params, values, strict=True):
        if param.optional and value is param.default:
            continue
        _ok(param, value)


async def test_every_request_the_daemon_serves_is_fuzzed(bridge: Bridge) -> None:
    """The fuzzed set is exactly the running daemon's endpoint table (the one its router dispatches on)."""
    addresses = [e.address for e in ENDPOINTS]
    assert len(addresses) == len(set(addresses))
    assert set(addresses) == set(bridge.router.endpoints)
    assert {"/bridge/spool/retry_rejected", "/bridge/session/list", "/bridge/health",
            "/bridge/storage"} <= set(addresses)


class _Hanging:
    """A request that waits until released, like a read stuck behind a slow database."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    @request("/bridge/test/slow")
    async def slow(self) -> tuple[str]:
        await self.release.wait()
        return ("done",)


@dataclass
class _Peer:
    kind: str = "tcp"
    addr: tuple[str, int] = ("127.0.0.1", 1)
    sent: list[bytes] = field(default_factory=list)

    def send(self, data: bytes) -> None:
        self.sent.append(data)


async def test_requests_waiting_in_tasks_are_capped_and_the_rest_refused_at_once() -> None:
    api = _Hanging()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    router = Router(collect(api), {}, UdpSocket(sock))
    peer = _Peer()
    for n in range(MAX_IN_FLIGHT + 50):
        router.on_tcp(encode_message("/bridge/test/slow", [f"r{n}"]), peer)
    refused = [decode_message(p).args for p in peer.sent]
    assert len(refused) == 50
    assert all(args[1:3] == ["error", "unavailable"] and "already working on" in args[3] for args in refused)
    api.release.set()
    await router.drain(2.0)
    sock.close()
    answers = [decode_message(p).args for p in peer.sent[50:]]
    assert len(answers) == MAX_IN_FLIGHT and all(a[1:] == ["ok", "done"] for a in answers)
