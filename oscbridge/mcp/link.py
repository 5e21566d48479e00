"""How the MCP tools reach the bridge: a `BridgeLink` runs one `/bridge/*` request and returns its values (a single
reply) or its rows (a list), or raises a `Problem` whose words a model can act on.

`Connect` opens a link for the length of one tool call. Over stdio it is a session with the running bridge over
OSC (oscbridge/tools/mcp.py); inside the daemon it is `in_process`: the request goes through the same endpoint table
and argument checks as an OSC or web request (`web.calls.perform`), without a socket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from oscbridge.api.endpoint import Endpoint, Rows, failure, internal_error
from oscbridge.logs import get_logger
from oscbridge.storable import WHY, first_unstorable
from oscbridge.typedefs import ErrorCode
from oscbridge.web.calls import WebPeer, perform

log = get_logger("oscbridge.mcp")

DOCTOR = "ask the user to run `oscbridge doctor`, which says what to fix"


class BridgeLink(Protocol):
    async def call(self, address: str, *args: Any) -> list[Any]:
        """A single-reply request: the values after "ok"."""
        ...

    async def rows(self, address: str, *args: Any) -> list[list[Any]]:
        """A list request: one list of values per row."""
        ...


Connect = Callable[[], AbstractAsyncContextManager[BridgeLink]]


class Problem(Exception):
    """A failure the model can act on: the message says what went wrong and what to do (never a traceback)."""


class Unreachable(Problem):
    """No bridge answers, or it stopped answering."""


class CallFailed(Problem):
    """The bridge answered a request with an error reply (BRIDGE-API.md's code and words)."""

    def __init__(self, address: str, code: str, message: str) -> None:
        super().__init__(explain(code, message))
        self.address = address
        self.code = code
        self.bridge_message = message


def explain(code: str, message: str) -> str:
    """The bridge's error in words for a model: what was wrong, and what to do about it."""
    message = message.rstrip(".")
    if code == ErrorCode.BAD_REQUEST:
        return f"The bridge refused this: {message}."
    if code == ErrorCode.NOT_FOUND:
        return f"Not found: {message}."
    if code == ErrorCode.UNAVAILABLE:
        return (f"The bridge cannot do this right now: {message}. Tracks, levels and plugins are answered from its "
                f"memory and still work; if this persists, {DOCTOR}.")
    if code == ErrorCode.TOO_LARGE:
        return f"The answer is too large: {message}. Ask for fewer rows."
    return f"The bridge failed on this request ({message}); {DOCTOR} and look at the bridge's log."


def refuse_unstorable(address: str, args: Sequence[Any]) -> None:
    """A tool's arguments came as JSON, which can carry a NUL or half a surrogate pair: such a text is refused
    here, on both transports, before anything is sent or stored (`oscbridge.storable`, as the web page does)."""
    if first_unstorable(args) is not None:
        raise CallFailed(address, ErrorCode.BAD_REQUEST, f"a text must be valid Unicode without NUL; this one holds "
                                                         f"{WHY}")


class InProcess:
    """Requests run through the daemon's endpoint table, as the web page's are (no socket, no token: the HTTP side
    checked who asks before the MCP server was reached)."""

    PEER = WebPeer(("mcp", 0), kind="mcp")

    def __init__(self, endpoints: dict[str, Endpoint]) -> None:
        self._endpoints = endpoints

    async def _perform(self, address: str, args: Sequence[Any]) -> Any:
        refuse_unstorable(address, args)
        endpoint = self._endpoints[address]  # the tools ask only for requests the bridge has
        try:
            return await perform(endpoint, list(args), self.PEER)
        except Exception as exc:
            known = failure(exc)
            if known is None:
                log.exception("mcp_request_failed", address=address, error=str(exc)[:300])
                known = ErrorCode.INTERNAL, internal_error(exc)
            raise CallFailed(address, known[0], known[1]) from None

    async def call(self, address: str, *args: Any) -> list[Any]:
        result = await self._perform(address, args)
        return list(result or ())

    async def rows(self, address: str, *args: Any) -> list[list[Any]]:
        result = await self._perform(address, args)
        assert isinstance(result, Rows), f"{address} is not a list request"
        return [list(row) for row in result.rows]


def in_process(endpoints: dict[str, Endpoint]) -> Connect:
    """A `Connect` for the daemon's own endpoint table."""
    link = InProcess(endpoints)

    @asynccontextmanager
    async def connect() -> AsyncIterator[BridgeLink]:
        yield link

    return connect
