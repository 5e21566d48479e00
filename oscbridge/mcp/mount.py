"""`/mcp` on the web port: what the daemon holds of the MCP server until a client first asks for it.

The MCP SDK is large: importing it took 1.1-1.9 s and added 53 MB to the process (measured on the 2-core
development machine), so `oscbridge serve` does not load it at start. The first request to `/mcp` imports it in a
thread, so that the event loop keeps serving OSC meanwhile (the import holds the GIL in turns, it does not stop
the loop), then starts the session manager; later requests use it at once. The web server checks Host, Origin
and the token before a request gets here (web/server.py).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from oscbridge.api.endpoint import Endpoint
from oscbridge.logs import get_logger

if TYPE_CHECKING:
    from oscbridge.mcp.http import StreamableHttp

log = get_logger("oscbridge.mcp")


def _transport_class() -> type[StreamableHttp]:
    from oscbridge.mcp.http import StreamableHttp

    return StreamableHttp


def _stopping() -> web.Response:
    return web.json_response({"jsonrpc": "2.0", "id": None, "error": {
        "code": -32000, "message": "the bridge is stopping: try again once it runs"}}, status=503)


class McpHttp:
    def __init__(self, endpoints: dict[str, Endpoint], allow_control: bool) -> None:
        self._endpoints = endpoints
        self.allow_control = allow_control
        self._loading: asyncio.Task[StreamableHttp] | None = None
        # Set by `close`: a request that arrives while the daemon stops must not start a session manager that
        # nothing would close again.
        self._closed = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One request to `/mcp` (already allowed): POST and DELETE go to the SDK; GET, the stream for messages
        the server starts, is declined (this server starts none)."""
        if request.method not in ("POST", "DELETE"):
            return web.json_response({"jsonrpc": "2.0", "id": None, "error": {
                "code": -32000, "message": "Method Not Allowed: this server sends no messages of its own, so it "
                                           "offers no GET stream; POST requests"}},
                status=405, headers={"Allow": "POST, DELETE"})
        if self._closed:
            return _stopping()
        if self._loading is None:
            self._loading = asyncio.get_running_loop().create_task(self._load(), name="oscbridge-mcp-load")
        try:
            transport = await asyncio.shield(self._loading)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._closed and current is not None and not current.cancelling():
                return _stopping()  # `close` stopped the loading this request waited for
            raise
        except Exception as exc:
            return web.json_response({"jsonrpc": "2.0", "id": None, "error": {
                "code": -32603, "message": f"the MCP server could not start: {exc}"}}, status=503)
        if self._closed:  # closed while this request waited for the loading to finish
            return _stopping()
        return await transport.handle(request)

    async def _load(self) -> StreamableHttp:
        try:
            transport = (await asyncio.to_thread(_transport_class))(self._endpoints, self.allow_control)
        except Exception as exc:
            log.error("mcp_not_started", error=str(exc)[:300])
            raise
        try:
            await transport.start()
        except BaseException:  # the bridge stopping meanwhile, or the SDK failing to start
            await transport.close()
            raise
        log.info("mcp_started", allow_control=self.allow_control)
        return transport

    async def close(self) -> None:
        """Stops the session manager if it runs; from now on every request is answered 503."""
        self._closed = True
        loading, self._loading = self._loading, None
        if loading is None:
            return
        if not loading.done():
            loading.cancel()  # the import may go on in its thread; nothing is started after it
        elif not loading.cancelled() and loading.exception() is None:
            await loading.result().close()
