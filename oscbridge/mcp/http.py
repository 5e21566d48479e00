"""MCP's streamable HTTP transport inside the daemon: the SDK's session manager, reached from aiohttp through a
small ASGI adapter (docs/mcp.md, "Over HTTP").

The SDK's HTTP side is ASGI (Starlette); the web page's server is aiohttp in the daemon's loop. Rather than run a
second server (uvicorn) on another port, `asgi` turns one aiohttp request into one ASGI call: the scope from the
request line and headers, the body (read whole; aiohttp's 1 MiB limit applies) as the one `http.request` message,
and the `http.response.*` messages back into a streamed aiohttp response. It needs no more because the session
manager runs in JSON mode (`json_response=True`): every POST is answered by one JSON body, and the only stream the
protocol has, the GET for server-initiated messages, is declined with 405 before it gets here (this server sends
none: no sampling, no list changes). Sessions are kept (not stateless) because the initialize request is the only
place a client names itself, and actions are logged under that name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aiohttp import web
from mcp.server.transport_security import TransportSecuritySettings

from oscbridge.api.endpoint import Endpoint
from oscbridge.logs import get_logger
from oscbridge.mcp.link import in_process
from oscbridge.mcp.server import build_server

log = get_logger("oscbridge.mcp")

Message = MutableMapping[str, Any]
Asgi = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                Awaitable[None]]

MAX_SESSIONS = 64  # open MCP sessions at a time; one more is answered 503 by the SDK
SESSION_IDLE = 1800.0  # seconds without a request after which a session is closed (the client starts another)
STOP_TIMEOUT = 2.0


async def asgi(app: Asgi, request: web.Request) -> web.StreamResponse:
    """Runs one aiohttp request through an ASGI application and returns what it answered."""
    body = await request.read()
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{request.version.major}.{request.version.minor}", "method": request.method,
        "scheme": request.scheme, "path": request.path, "raw_path": request.raw_path.encode("latin-1"),
        "root_path": "", "query_string": request.query_string.encode("latin-1"),
        "headers": [(name.lower(), value) for name, value in request.raw_headers],
        "client": (request.remote or "", 0), "server": (request.url.host or "", request.url.port or 0),
    }
    done = asyncio.Event()
    body_given = False
    response: web.StreamResponse | None = None

    async def receive() -> Message:
        nonlocal body_given
        if not body_given:
            body_given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()  # the request has no more body; the exchange is over once the answer is out
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal response
        if message["type"] == "http.response.start":
            response = web.StreamResponse(status=message["status"])
            for name, value in message.get("headers", ()):
                response.headers.add(name.decode("latin-1"), value.decode("latin-1"))
            await response.prepare(request)
        elif message["type"] == "http.response.body" and response is not None:
            await response.write(message.get("body", b""))
            if not message.get("more_body", False):
                await response.write_eof()
                done.set()

    try:
        await app(scope, receive, send)
    finally:
        done.set()
    if response is None:
        raise RuntimeError("the ASGI application sent no response")
    return response


class StreamableHttp:
    """The MCP server on the daemon's endpoint table, behind the SDK's streamable HTTP session manager."""

    def __init__(self, endpoints: dict[str, Endpoint], allow_control: bool) -> None:
        server = build_server(in_process(endpoints), allow_control=allow_control)
        # Builds the session manager (the Starlette app it returns is not used: aiohttp serves the route). Host
        # and Origin are checked by the web server's guard (web/guard.py), as for the page, so not again here.
        server.streamable_http_app(json_response=True, max_sessions=MAX_SESSIONS, session_idle_timeout=SESSION_IDLE,
                                   transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        self._manager = server.session_manager
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Runs the session manager (its task group holds the sessions) until `close`."""
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def run() -> None:
            try:
                async with self._manager.run():
                    started.set_result(None)
                    await self._stop.wait()
            except BaseException as exc:
                if not started.done():
                    started.set_exception(exc)
                raise

        self._task = asyncio.get_running_loop().create_task(run(), name="oscbridge-mcp-sessions")
        await started

    async def handle(self, request: web.Request) -> web.StreamResponse:
        return await asgi(self._manager.handle_request, request)

    async def close(self) -> None:
        """Ends every session (requests in flight are answered with an error) within `STOP_TIMEOUT`."""
        self._stop.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._task, STOP_TIMEOUT)
        except Exception as exc:  # a session that does not end in time is cut; the daemon is stopping anyway
            log.warning("mcp_stop_failed", error=str(exc)[:300])
