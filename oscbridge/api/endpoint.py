"""Declaring /bridge/* handlers: a decorator records the address and argument specs on a method.

Handlers are plain methods of small classes (one per API area) that take converted arguments and return the
result values, so tests can call them without sockets. A handler returns a tuple for a single reply, `Rows` for a
list, and raises `BridgeError` for an error reply. Coroutine handlers are run as tasks off the receive path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from oscbridge.api.params import Param, convert_args

F = TypeVar("F", bound=Callable[..., Any])
_ATTR = "_bridge_endpoint"


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
    # Precomputed for the receive path: how many arguments are required, and each one's converter.
    required: int = 0
    converters: tuple[Callable[[Any], Any], ...] = ()

    def convert(self, args: list[Any]) -> list[Any]:
        """Checks and converts the arguments after the request id (fast path for the exact count)."""
        if len(args) == len(self.converters):
            return [convert(value) for convert, value in zip(self.converters, args, strict=True)]
        return convert_args(self.params, args)


def request(address: str, *params: Param) -> Callable[[F], F]:
    """Marks a method as the handler of `address` with the given argument specs (after the request id)."""

    def mark(func: F) -> F:
        setattr(func, _ATTR, (address, params))
        return func

    return mark


def collect(*handlers: object) -> dict[str, Endpoint]:
    """Builds the dispatch dict from objects whose methods carry @request."""
    table: dict[str, Endpoint] = {}
    for obj in handlers:
        for _, method in inspect.getmembers(obj, inspect.ismethod):
            spec = getattr(method, _ATTR, None)
            if spec is None:
                continue
            address, params = spec
            if address in table:
                raise ValueError(f"two handlers for {address}")
            table[address] = Endpoint(address, params, method, inspect.iscoroutinefunction(method),
                                      sum(1 for p in params if not p.optional), tuple(p.convert for p in params))
    return table
