"""Declaring /bridge/* handlers: a decorator records the address and argument specs on a method.

Handlers are plain methods of small classes (one per API area) that take converted arguments and return the
result values, so tests can call them without sockets. A handler returns a tuple for a single reply, `Rows` for a
list, and raises `BridgeError` for an error reply. Coroutine handlers are run as tasks off the receive path. A
handler that needs to know who asked (`/bridge/subscribe` answers to the requester's host) declares
`context=True` and gets the `Request` as its first argument: the request's context is passed, never read from
shared state.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from oscbridge.api.params import Param, convert_args
from oscbridge.store.spool import SpoolError
from oscbridge.typedefs import Addr, BridgeError, ErrorCode

F = TypeVar("F", bound=Callable[..., Any])
_ATTR = "_bridge_endpoint"


class Peer(Protocol):
    """Where a request came from and how to answer it on the same transport."""

    kind: str  # "udp" or "tcp"
    addr: Addr

    def send(self, data: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class Request:
    """What a request handler may know about the request beyond its arguments."""

    address: str
    req_id: str
    peer: Peer

    @property
    def sender(self) -> Addr:
        return self.peer.addr


@dataclass
class Rows:
    """A list result: sent as one reply message per row, `[req_id, "ok", index, total, *row]`."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass(frozen=True)
class Endpoint:
    address: str
    params: tuple[Param, ...]
    func: Callable[..., Any]
    is_async: bool
    context: bool = False  # the handler takes the Request first
    # Precomputed for the receive path: each argument's converter.
    converters: tuple[Callable[[Any], Any], ...] = ()

    def convert(self, args: list[Any]) -> list[Any]:
        """Checks and converts the arguments after the request id (fast path for the exact count)."""
        if len(args) == len(self.converters):
            return [convert(value) for convert, value in zip(self.converters, args, strict=True)]
        return convert_args(self.params, args)

    def call(self, request: Request, values: list[Any]) -> Any:
        return self.func(request, *values) if self.context else self.func(*values)


def request(address: str, *params: Param, context: bool = False) -> Callable[[F], F]:
    """Marks a method as the handler of `address` with the given argument specs (after the request id)."""

    def mark(func: F) -> F:
        setattr(func, _ATTR, (address, params, context))
        return func

    return mark


def endpoint_of(func: Callable[..., Any]) -> Endpoint | None:
    """The endpoint a function or method was marked as, if any."""
    spec = getattr(func, _ATTR, None)
    if spec is None:
        return None
    address, params, context = spec
    return Endpoint(address, params, func, inspect.iscoroutinefunction(func), context,
                    tuple(p.convert for p in params))


def collect(*handlers: object) -> dict[str, Endpoint]:
    """Builds the dispatch dict from objects whose methods carry @request."""
    table: dict[str, Endpoint] = {}
    for obj in handlers:
        for _, method in inspect.getmembers(obj, inspect.ismethod):
            endpoint = endpoint_of(method)
            if endpoint is None:
                continue
            if endpoint.address in table:
                raise ValueError(f"two handlers for {endpoint.address}")
            table[endpoint.address] = endpoint
    return table


def failure(exc: Exception) -> tuple[ErrorCode, str] | None:
    """The error reply of a request that raised: its own BridgeError, `unavailable` when its write could not be
    made durable (nothing was stored; the client may retry); None for a bug (the caller answers `internal` and
    logs the traceback)."""
    if isinstance(exc, BridgeError):
        return exc.code, exc.message
    if isinstance(exc, SpoolError):
        return ErrorCode.UNAVAILABLE, str(exc)
    return None


def internal_error(exc: Exception) -> str:
    return f"the bridge failed on this request ({type(exc).__name__}); see its log"
