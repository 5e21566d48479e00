"""The web page's HTTP server: static files, `/api/request` for the `/bridge/*` operations, `/api/live` for live
frames, the OSC namespace as OSCQuery JSON for OSC tools (`/` and every address, docs/oscquery.md), and `/mcp`, the
MCP server's streamable HTTP transport (docs/mcp.md), all in the daemon's own event loop (docs/web.md).

aiohttp's server is used because it runs inside an existing asyncio loop as a plain set of coroutines (no second
thread, no server framework taking over the process), serves files and WebSockets from one small dependency, and
exposes the connection's transport, which the live feed needs to see a browser falling behind. It gets the socket
the bridge bound at start, next to the OSC sockets, so a port in use stops the start at once.

Limits: at most `MAX_CONNECTIONS` connections (more are answered 503 and closed before aiohttp sees them, so a
greedy local client costs file descriptors up to this number, never the OSC side's), `MAX_PAGES` live pages,
request bodies of at most 1 MiB (large texts belong on OSC over TCP), no access log.
"""

from __future__ import annotations

import asyncio
import socket
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from oscbridge import __version__
from oscbridge.api.endpoint import Endpoint, failure, internal_error
from oscbridge.jsontext import parse_json
from oscbridge.logs import get_logger
from oscbridge.mcp.mount import McpHttp
from oscbridge.osc.transport import set_send_buffer
from oscbridge.storable import WHY, first_unstorable
from oscbridge.typedefs import ErrorCode
from oscbridge.web.calls import WebPeer, as_json, perform
from oscbridge.web.feed import OUTPUT, LiveFeed, Page
from oscbridge.web.guard import OPEN_REQUESTS, Guard
from oscbridge.web.oscquery import Namespace, service_name
from oscbridge.web.oscquery_listen import MAX_CLIENTS, ValueStreams

log = get_logger("oscbridge.web")

STATIC = Path(str(resources.files("oscbridge.web") / "static"))
MAX_CONNECTIONS = 64
MAX_PAGES = 16
MAX_BODY = 1024 * 1024
MAX_ARGS = 16
MAX_BUFFERED = 64 * 1024  # bytes waiting in a page's socket (asyncio's high-water mark): its ticks are skipped
SEND_TIMEOUT = 10.0  # a page that takes no frame for this long is closed (it reconnects by itself)
HELLO_TIMEOUT = 2.0  # a page sends its token (or an empty one) first
HTTP_STATUS = {ErrorCode.BAD_REQUEST: 400, ErrorCode.NOT_FOUND: 404, ErrorCode.UNAVAILABLE: 503,
               ErrorCode.TOO_LARGE: 413, ErrorCode.INTERNAL: 500}
SECURITY_HEADERS = {
    # Only our own files, and connections back to this bridge; no frames, no forms, no plugins, no Referer.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_REFUSED = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": {"code": code, "message": message}}, status=status,
                             dumps=OUTPUT)


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class _Refuse(asyncio.Protocol):
    """Answers a connection over the cap with 503 and closes it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_REFUSED)
        transport.close()


class WebServer:
    def __init__(self, endpoints: dict[str, Endpoint], feed: LiveFeed, guard: Guard, osc: tuple[str, int],
                 mcp_allow_control: bool = False) -> None:
        self._endpoints = endpoints
        self._mcp = McpHttp(endpoints, mcp_allow_control)
        self.feed = feed
        self._guard = guard
        self._osc = osc
        self._namespace = Namespace(endpoints, service_name(socket.gethostname()), osc)
        self._streams = ValueStreams(self._namespace, max_buffered=MAX_BUFFERED, send_timeout=SEND_TIMEOUT)
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self.refused_connections = 0
        self.refused_hosts = 0

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._check_host])
        app.router.add_get("/", self._index)
        app.router.add_get("/api/session", self._session)
        app.router.add_post("/api/request", self._request)
        app.router.add_get("/api/live", self._live)
        app.router.add_route("*", "/mcp", self._mcp_request)
        for root in self._namespace.roots:  # /bridge..., /aiplayer...: OSCQuery
            app.router.add_get(f"/{root}{{tail:(?:/.*)?}}", self._oscquery)
        app.router.add_static("/static/", STATIC, follow_symlinks=False)
        app.on_response_prepare.append(self._headers)
        return app

    async def start(self, sock: socket.socket) -> None:
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        self._server = await asyncio.get_running_loop().create_server(self._protocol, sock=sock)

    def _protocol(self) -> asyncio.BaseProtocol:
        assert self._runner is not None and self._runner.server is not None
        server = self._runner.server
        if len(server.connections) >= MAX_CONNECTIONS:
            self.refused_connections += 1
            return _Refuse()
        return server()

    async def close(self) -> None:
        """Stops accepting, closes the live pages, then the connections (within about a second)."""
        if self._server is not None:
            self._server.close()
        await self.feed.stop()
        await self._streams.stop()
        await self._mcp.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- checks on every request --------------------------------------------------------------------------------

    @web.middleware
    async def _check_host(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not self._guard.host_allowed(request.host):
            self.refused_hosts += 1
            return web.Response(status=421, text="This bridge answers only to its own address (requests naming "
                                                 "another host are refused, against DNS rebinding). Open "
                                                 f"http://127.0.0.1:{self._guard.port}/ instead.\n")
        response: web.StreamResponse = await handler(request)
        return response

    @staticmethod
    async def _headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(SECURITY_HEADERS)

    # -- routes -------------------------------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        """The page for a browser (it asks for text/html); the OSCQuery tree for an OSC tool (they do not), and its
        WebSocket for LISTEN."""
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._listen(request)
        if "text/html" in request.headers.get("Accept", "") and not request.query_string:
            response: web.StreamResponse = web.FileResponse(STATIC / "index.html")
        else:
            response = await self._oscquery(request)
        response.headers["Vary"] = "Accept"
        return response

    async def _oscquery(self, request: web.Request) -> web.Response:
        """`GET /<address>[?ATTRIBUTE]` and `?HOST_INFO`: the namespace as OSCQuery JSON (docs/oscquery.md)."""
        status, body = await self._namespace.answer(request.path, request.query_string,
                                                    WebPeer((request.remote or "", 0)))
        if body is None:
            return web.Response(status=status)
        return web.json_response(body, status=status, dumps=OUTPUT)

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        """OSCQuery's LISTEN (oscquery_listen.py): open values, so no token; other web pages are refused."""
        if not self._guard.origin_allowed(request.headers.get("Origin")):
            return _error(403, "forbidden", "WebSockets from other web pages are refused")
        if self._streams.full:
            return _error(503, ErrorCode.UNAVAILABLE, f"{MAX_CLIENTS} OSCQuery clients listen already")
        return await self._streams.serve(request)

    async def _session(self, request: web.Request) -> web.Response:
        """What the page needs to start: versions, where OSC listens, whether its token is right."""
        return web.json_response({"version": __version__, "osc": {"host": self._osc[0], "port": self._osc[1]},
                                  "authorized": self._guard.authorized(_bearer(request)),
                                  "open_requests": sorted(OPEN_REQUESTS), "levels_hz": 1 / self.feed.period},
                                 dumps=OUTPUT)

    async def _request(self, request: web.Request) -> web.Response:
        """POST {"address": "/bridge/...", "args": [...]}: the same operation as the OSC request."""
        if not self._guard.origin_allowed(request.headers.get("Origin")):
            return _error(403, "forbidden", "requests from other web pages are refused")
        if request.content_type != "application/json":
            return _error(415, ErrorCode.BAD_REQUEST, "send the request as application/json")
        try:
            body = await request.json(loads=parse_json)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, ErrorCode.BAD_REQUEST, f"the body is not JSON: {str(exc)[:200]}")
        except web.HTTPRequestEntityTooLarge:
            return _error(413, ErrorCode.TOO_LARGE, f"the body is over {MAX_BODY} bytes; send large texts over "
                                                    "OSC (TCP)")
        address, args = (body.get("address"), body.get("args", [])) if isinstance(body, dict) else (None, None)
        if not isinstance(address, str) or not isinstance(args, list) or len(args) > MAX_ARGS or any(
                isinstance(a, (dict, list)) for a in args):
            return _error(400, ErrorCode.BAD_REQUEST, 'the body must be {"address": "/bridge/...", "args": [...]} '
                                                      f"with at most {MAX_ARGS} text, number or boolean arguments")
        unstorable = first_unstorable(args)
        if unstorable is not None:
            return _error(400, ErrorCode.BAD_REQUEST, f"argument {unstorable + 1} holds {WHY}")
        endpoint = self._endpoints.get(address)
        if endpoint is None or endpoint.context:
            return _error(404, ErrorCode.NOT_FOUND, f"{address[:100]} is not a request offered over HTTP "
                                                    "(subscriptions are OSC only); see BRIDGE-API.md")
        if self._guard.needs_token(address) and not self._guard.authorized(_bearer(request)):
            return _error(401, "unauthorized", f"{address} needs this installation's token: open the page with "
                                               "`oscbridge ui`")
        peer = WebPeer((request.remote or "", 0))
        try:
            result = await perform(endpoint, args, peer)
        except Exception as exc:
            known = failure(exc)
            if known is None:
                log.exception("web_request_failed", address=address, error=str(exc))
                known = ErrorCode.INTERNAL, internal_error(exc)
            return _error(HTTP_STATUS[known[0]], known[0], known[1])
        return web.json_response({"ok": True, **as_json(result)}, dumps=OUTPUT)

    async def _mcp_request(self, request: web.Request) -> web.StreamResponse:
        """MCP over streamable HTTP (docs/mcp.md): the page's Origin check, and the token on every request."""
        if not self._guard.origin_allowed(request.headers.get("Origin")):
            return _error(403, "forbidden", "MCP requests from other web pages are refused")
        if not self._guard.authorized(_bearer(request)):
            response = _error(401, "unauthorized", "/mcp needs this installation's token as Authorization: Bearer "
                                                   "(`oscbridge mcp` on stdio needs none; see docs/mcp.md)")
            response.headers["WWW-Authenticate"] = 'Bearer realm="oscbridge"'
            return response
        return await self._mcp.handle(request)

    async def _live(self, request: web.Request) -> web.StreamResponse:
        """The live frames (feed.py) over a WebSocket; the page's first message is {"token": "..."}."""
        if not self._guard.origin_allowed(request.headers.get("Origin")):
            return _error(403, "forbidden", "live views from other web pages are refused")
        if len(self.feed.pages) >= MAX_PAGES:
            return _error(503, ErrorCode.UNAVAILABLE, f"{MAX_PAGES} pages are open already; close one")
        ws = web.WebSocketResponse(heartbeat=20.0, compress=False, max_msg_size=4096)
        await ws.prepare(request)
        if request.transport is not None:  # a stalled page is noticed after ~128 KiB (bench_web: 2.8 MB before)
            set_send_buffer(request.transport)
        authorized = await self._hello(ws)
        page = self.feed.open(authorized)
        sender = asyncio.get_running_loop().create_task(self._send(ws, page, request))
        try:
            await ws.send_str(OUTPUT([{"type": "hello", "authorized": authorized, "version": __version__}]))
            async for _ in ws:  # the page says nothing more; reading handles pings and the close
                pass
        finally:
            self.feed.close(page)
            sender.cancel()
        return ws

    async def _hello(self, ws: web.WebSocketResponse) -> bool:
        try:
            first = await ws.receive(timeout=HELLO_TIMEOUT)
        except TimeoutError:
            return False
        if first.type != WSMsgType.TEXT:
            return False
        try:
            token = parse_json(first.data).get("token")
        except (ValueError, AttributeError):
            return False
        return isinstance(token, str) and self._guard.authorized(token)

    async def _send(self, ws: web.WebSocketResponse, page: Page, request: web.Request) -> None:
        """Sends `page` what is new at every tick. While its socket holds more than `MAX_BUFFERED` unsent bytes,
        ticks are skipped (a send that finds the socket full waits for it to drain, and the feed counts the ticks
        that pass meanwhile); a page whose socket has not drained for `SEND_TIMEOUT` seconds is cut."""
        loop = asyncio.get_running_loop()
        drained = loop.time()  # when the page last had room for a frame
        while page in self.feed.pages and not ws.closed:
            await page.wake.wait()
            page.wake.clear()
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            if transport.get_write_buffer_size() > MAX_BUFFERED:
                page.skipped_ticks += 1
                self.feed.ticks_skipped += 1
                if loop.time() - drained > SEND_TIMEOUT:
                    break
                continue
            drained = loop.time()
            message = self.feed.message_for(page)
            if message is None:
                continue
            try:
                await asyncio.wait_for(ws.send_str(message), SEND_TIMEOUT)
            except (TimeoutError, ConnectionError, RuntimeError):
                break
        else:
            return
        # Cut, not closed: a polite close would queue behind the unsent frames and keep them (and the connection)
        # for as long as the page does not read. The page reconnects by itself.
        self.feed.pages_cut += 1
        if request.transport is not None:
            request.transport.abort()

    @property
    def connections(self) -> int:
        """HTTP connections open now."""
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0

    def stats(self) -> dict[str, int]:
        return {**self.feed.stats(), **self._streams.stats(), "web.connections": self.connections,
                "web.refused_connections": self.refused_connections, "web.refused_hosts": self.refused_hosts}
