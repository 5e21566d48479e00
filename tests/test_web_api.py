"""The web page's HTTP side on real loopback sockets: the same operations as OSC, the Host, Origin and token
checks, live frames, limits for greedy and stalled clients, and hostile request bodies (seeded fuzzing)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from oscbridge import __version__
from oscbridge.app import Bridge
from oscbridge.client import BridgeClient, BridgeRequestError
from oscbridge.osc.transport import PortInUse
from oscbridge.web import feed as feed_module
from oscbridge.web import server as web_server
from oscbridge.web.token import token_path
from tests.conftest import free_port, make_settings, run_cli, running, wait_until


@pytest.fixture
async def web_bridge(tmp_path: Path, database_url: str) -> AsyncIterator[Bridge]:
    async with running(make_settings(tmp_path, database_url, http_port=free_port())) as bridge:
        yield bridge


def base(bridge: Bridge) -> str:
    return f"http://127.0.0.1:{bridge.settings.http_port}"


def token_of(bridge: Bridge) -> str:
    return token_path(bridge.settings.data_dir).read_text().strip()


async def post(session: aiohttp.ClientSession, bridge: Bridge, address: str, *args: Any,
               token: str | None = None, **headers: str) -> tuple[int, dict[str, Any]]:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with session.post(base(bridge) + "/api/request", json={"address": address, "args": list(args)},
                            headers=headers) as response:
        return response.status, await response.json()


async def raw_http(port: int, request: bytes, read: int = 4096) -> bytes:
    """Sends `request` as it is (aiohttp's client always sends a proper Host) and reads the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(read), 5)
    writer.close()
    return answer


async def frames(ws: aiohttp.ClientWebSocketResponse, until: Any, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Frames of the live WebSocket until one satisfies `until` (every frame read so far is returned)."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive()
            assert message.type == aiohttp.WSMsgType.TEXT, message
            for frame in json.loads(message.data):
                seen.append(frame)
                if until(frame):
                    return seen


def mapping_frame(track_name: str) -> Any:
    return lambda f: f.get("address") == "/bridge/mapping/list" and any(r[1] == track_name for r in f["rows"])


# ------------------------------------------------------------------------------------------------------------
# One source of truth: the page changes what OSC reads, and sees what OSC changes
# ------------------------------------------------------------------------------------------------------------


async def test_requests_are_the_osc_operations(web_bridge: Bridge) -> None:
    token = token_of(web_bridge)
    async with aiohttp.ClientSession() as http, await BridgeClient.connect("127.0.0.1", web_bridge.port) as osc:
        status, answer = await post(http, web_bridge, "/bridge/mapping/set", 3, "Bass", "TR7", token=token)
        assert (status, answer) == (200, {"ok": True, "values": []})
        assert await osc.rows("/bridge/mapping/list") == [[3, "Bass", "TR7", -1, ""]]

        await osc.call("/bridge/mapping/set", 4, "Keys", "TR8")
        status, answer = await post(http, web_bridge, "/bridge/mapping/list")  # open: no token needed
        assert status == 200 and answer["rows"] == [[3, "Bass", "TR7", -1, ""], [4, "Keys", "TR8", -1, ""]]

        # The API's own error, in its own words, with an HTTP status that says the same.
        status, answer = await post(http, web_bridge, "/bridge/mapping/set", 0, "Bad", "TR9", token=token)
        assert status == 400 and answer["error"]["code"] == "bad_request"
        with pytest.raises(BridgeRequestError) as over_osc:
            await osc.call("/bridge/mapping/set", 0, "Bad", "TR9")
        assert answer["error"]["message"] == over_osc.value.message
        status, answer = await post(http, web_bridge, "/bridge/mapping/track", "TR99")
        assert status == 404 and answer["error"]["code"] == "not_found"

        status, answer = await post(http, web_bridge, "/bridge/ping")
        assert status == 200 and answer["values"][0] == __version__


async def test_health_rows(web_bridge: Bridge) -> None:
    async with aiohttp.ClientSession() as http:
        status, answer = await post(http, web_bridge, "/bridge/health")
    rows = {name: (state, text) for name, state, text in answer["rows"]}
    assert status == 200 and list(rows) == ["bridge", "database", "pgvector", "schema", "ollama", "writes",
                                           "refused", "disk"]
    assert rows["database"][0] == "ok" and rows["database"][1].startswith("PostgreSQL 18.")
    assert rows["pgvector"] == ("ok", "pgvector 0.8.5")
    assert re.match(r"\d+ writes queued, \d+ bytes in the spool", rows["writes"][1]), rows["writes"]


async def test_live_frames_follow_osc_changes(web_bridge: Bridge, monkeypatch: pytest.MonkeyPatch) -> None:
    """How fast a change shows is bench/'s business (the promise is within 1 s); here: that it shows by itself."""
    monkeypatch.setattr(feed_module, "STATE_EVERY", 1)  # a state frame at every tick, not twice a second
    token = token_of(web_bridge)
    async with aiohttp.ClientSession() as http, await BridgeClient.connect("127.0.0.1", web_bridge.port) as osc, \
            http.ws_connect(base(web_bridge) + "/api/live") as ws:
        await ws.send_str(json.dumps({"token": token}))
        first = await frames(ws, lambda f: f["type"] == "hello")
        assert first[-1] == {"type": "hello", "authorized": True, "version": __version__}
        await frames(ws, lambda f: f.get("address") == "/bridge/mapping/list")

        await osc.call("/bridge/mapping/set", 5, "Drums", "TR2")
        await frames(ws, mapping_frame("Drums"))

        # A datagram that goes to mission_control_debug appears in the traffic tail.
        await osc.call("/bridge/debug/log", "orchestrator", "", "log", "tail me", "", "info")
        seen = await frames(ws, lambda f: f["type"] == "traffic" and any(r["content"] == "tail me"
                                                                          for r in f["rows"]))
        row = next(r for r in seen[-1]["rows"] if r["content"] == "tail me")
        assert (row["sender"], row["type"], row["severity"]) == ("orchestrator", "log", "info")


async def test_page_without_the_token_reads_but_cannot_change_or_see_traffic(web_bridge: Bridge) -> None:
    async with aiohttp.ClientSession() as http, await BridgeClient.connect("127.0.0.1", web_bridge.port) as osc:
        for address, args in [("/bridge/mapping/set", (1, "Kick", "TR1")), ("/bridge/mapping/clear", ()),
                              ("/bridge/calibrate/probe", ()), ("/bridge/message/recent", ()),
                              ("/bridge/context/search", ("kick",)), ("/bridge/debug/recent", ())]:
            for token in (None, "wrong", token_of(web_bridge)[:-1]):
                status, answer = await post(http, web_bridge, address, *args, token=token)
                assert status == 401 and answer["error"]["code"] == "unauthorized", (address, token)
        assert await osc.rows("/bridge/mapping/list") == []

        async with http.ws_connect(base(web_bridge) + "/api/live") as ws:
            await ws.send_str(json.dumps({"token": "guess"}))
            await osc.call("/bridge/debug/log", "orchestrator", "", "log", "secret", "", "info")
            await osc.call("/bridge/mapping/set", 1, "Kick", "TR1")  # a change the page does see
            seen = await frames(ws, mapping_frame("Kick"))
            assert seen[0] == {"type": "hello", "authorized": False, "version": __version__}
            assert all(f["type"] not in ("traffic", "events") for f in seen)

        async with http.get(base(web_bridge) + "/api/session") as response:
            assert (await response.json())["authorized"] is False
        async with http.get(base(web_bridge) + "/api/session",
                            headers={"Authorization": f"Bearer {token_of(web_bridge)}"}) as response:
            assert (await response.json())["authorized"] is True


async def test_text_osc_cannot_carry_is_refused_before_it_is_acknowledged(web_bridge: Bridge) -> None:
    """JSON can hold NUL and unpaired surrogates; OSC and PostgreSQL cannot: refused, never acknowledged."""
    appended = web_bridge.parts.spool.appended
    async with aiohttp.ClientSession() as http:
        for text in ("a\u0000b", "half \ud800 a pair"):
            status, answer = await post(http, web_bridge, "/bridge/message/save", "user", text,
                                        token=token_of(web_bridge))
            assert status == 400 and "argument 2 holds a NUL character or an unpaired surrogate" in \
                answer["error"]["message"]
    assert web_bridge.parts.spool.appended == appended  # nothing was accepted


async def test_subscriptions_are_not_offered_over_http(web_bridge: Bridge) -> None:
    async with aiohttp.ClientSession() as http:
        status, answer = await post(http, web_bridge, "/bridge/subscribe", 9000, "/*", token=token_of(web_bridge))
    assert status == 404 and "OSC only" in answer["error"]["message"]


# ------------------------------------------------------------------------------------------------------------
# Host, Origin, token file
# ------------------------------------------------------------------------------------------------------------


async def test_foreign_host_is_refused(web_bridge: Bridge) -> None:
    port = web_bridge.settings.http_port
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", f"127.0.0.1:{port + 1}"):
        answer = await raw_http(port, f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 421"), (host, answer[:80])
        assert b"DNS rebinding" in answer
    answer = await raw_http(port, b"GET /api/session HTTP/1.1\r\nConnection: close\r\n\r\n")  # no Host at all
    assert answer.split(b" ")[1] in (b"400", b"421")
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        answer = await raw_http(port, f"GET /api/session HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                                .encode())
        assert answer.startswith(b"HTTP/1.1 200"), host
        assert b"Content-Security-Policy: default-src 'none'" in answer


async def test_other_origins_are_refused(web_bridge: Bridge) -> None:
    token = token_of(web_bridge)
    port = web_bridge.settings.http_port
    async with aiohttp.ClientSession() as http:
        status, answer = await post(http, web_bridge, "/bridge/mapping/set", 1, "Kick", "TR1", token=token,
                                    Origin="http://evil.example")
        assert status == 403 and answer["error"]["code"] == "forbidden"
        status, _ = await post(http, web_bridge, "/bridge/mapping/set", 1, "Kick", "TR1", token=token,
                               Origin=f"http://localhost:{port}")
        assert status == 200
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(base(web_bridge) + "/api/live", origin="http://evil.example")
        assert refused.value.status == 403
        # A form post (no JSON) is refused whatever its origin.
        async with http.post(base(web_bridge) + "/api/request", data={"address": "/bridge/mapping/clear"},
                             headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 415


async def test_token_file_is_private_and_kept(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, http_port=free_port())
    async with running(settings):
        path = token_path(settings.data_dir)
        first = path.read_text().strip()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(first) >= 40
    async with running(settings) as bridge:
        assert token_of(bridge) == first


# ------------------------------------------------------------------------------------------------------------
# Greedy and stalled clients: the OSC side does not notice
# ------------------------------------------------------------------------------------------------------------


async def test_connections_over_the_cap_are_refused(web_bridge: Bridge, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_server, "MAX_CONNECTIONS", 8)
    port = web_bridge.settings.http_port
    web = web_bridge.parts.web
    assert web is not None
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(8)]
    try:
        await wait_until(lambda: web.connections == 8)
        answer = await raw_http(port, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 503")
        async with await BridgeClient.connect("127.0.0.1", web_bridge.port) as osc:
            assert (await osc.call("/bridge/ping"))[0] == __version__
    finally:
        for _, writer in held:
            writer.close()
    await wait_until(lambda: web.connections == 0)
    assert web.stats()["web.refused_connections"] == 1
    answer = await raw_http(port, f"GET /api/session HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
                            "\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 200")


async def test_a_stalled_page_skips_ticks_and_others_keep_getting_frames(web_bridge: Bridge,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A page that stops reading: its frames wait in its socket, the feed skips its ticks, the other page and OSC
    are served as before, and after `SEND_TIMEOUT` the stalled page's connection is cut (its bytes freed)."""
    monkeypatch.setattr(feed_module, "STATE_EVERY", 1)  # a state frame at every tick: the stall comes sooner
    # Long enough for the 24 skipped ticks counted below even on a loaded machine (about 1 s of them at 24 Hz):
    # a page cut sooner stops counting, and the test would wait for a count that never comes.
    send_timeout = 5.0
    monkeypatch.setattr(web_server, "SEND_TIMEOUT", send_timeout)
    token = token_of(web_bridge)
    port = web_bridge.settings.http_port
    web = web_bridge.parts.web
    assert web is not None
    # The stalled page: a WebSocket handshake by hand with a small receive buffer, then never a read.
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", port))
    stalled.sendall(f"GET /api/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    try:
        async with aiohttp.ClientSession() as http, \
                await BridgeClient.connect("127.0.0.1", web_bridge.port) as osc, \
                http.ws_connect(base(web_bridge) + "/api/live") as ws:
            await ws.send_str(json.dumps({"token": token}))
            await wait_until(lambda: len(web.feed.pages) == 2)
            stalled_page = next(p for p in web.feed.pages if not p.authorized)
            reading_page = next(p for p in web.feed.pages if p.authorized)
            # Every round renames all 128 tracks: one state frame of ~33 kB to each page at the next tick.
            for round_ in range(400):
                for n in range(1, 129):
                    osc.send("/bridge/mapping/set", "", n, f"{round_}-{n}-" + "x" * 240, f"TR{n}")
                await frames(ws, mapping_frame(f"{round_}-128-" + "x" * 240))
                if stalled_page.skipped_ticks >= 24:
                    break
            assert stalled_page.skipped_ticks >= 24, "the stalled page never held enough unsent bytes"
            assert reading_page.skipped_ticks < stalled_page.skipped_ticks
            # The reading page still gets each change, and OSC still answers (how fast: bench.bench_web).
            await osc.call("/bridge/mapping/set", 1, "after the stall", "TR1")
            await frames(ws, mapping_frame("after the stall"))
            assert (await osc.call("/bridge/ping", timeout=5.0))[0] == __version__
            await wait_until(lambda: web.feed.pages_cut == 1 and stalled_page not in web.feed.pages,
                             timeout=send_timeout + 10)
            await wait_until(lambda: web.connections == 1)  # the reading page's alone: the stalled one is gone
            with pytest.raises(OSError):  # the cut reaches the stalled client as a reset
                for _ in range(100):
                    if not stalled.recv(65536):
                        raise ConnectionResetError
    finally:
        stalled.close()


async def test_web_port_in_use_stops_the_start_and_frees_the_osc_port(tmp_path: Path, database_url: str) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        settings = make_settings(tmp_path, database_url, http_port=holder.getsockname()[1])
        with pytest.raises(PortInUse, match=r"the web page.*--http-port"):
            await Bridge(settings).start()
        async with running(make_settings(tmp_path, database_url, osc_port=settings.osc_port)):
            pass  # the OSC port was let go
    finally:
        holder.close()


async def test_no_web_page_with_port_zero(bridge: Bridge) -> None:
    assert bridge.web_url is None and bridge.parts.web is None
    assert not any(key.startswith("web.") for key in bridge._stats())


# ------------------------------------------------------------------------------------------------------------
# `oscbridge ui`
# ------------------------------------------------------------------------------------------------------------


async def test_ui_print_and_no_bridge(web_bridge: Bridge, tmp_path: Path) -> None:
    settings = web_bridge.settings
    flags = ["--data-dir", str(settings.data_dir), "--http-port", str(settings.http_port)]
    env = {**os.environ, "OSCBRIDGE_HTTP_PORT": ""}
    shown = await asyncio.to_thread(run_cli, "ui", "--print", *flags, env=env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"http://127.0.0.1:{settings.http_port}/#token={token_of(web_bridge)}\n"

    other = ["--data-dir", str(tmp_path / "none"), "--http-port", str(free_port())]
    missing = await asyncio.to_thread(run_cli, "ui", *other, env=env)
    assert missing.returncode == 1 and "no bridge serves a web page at http://127.0.0.1:" in missing.stderr
    assert missing.stdout == ""


# ------------------------------------------------------------------------------------------------------------
# Hostile request bodies (seeded): a clear 4xx, never a 500, never a hang
# ------------------------------------------------------------------------------------------------------------

JSON_SCALARS = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=300)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=20)
ADDRESSES = st.sampled_from(["/bridge/mapping/set", "/bridge/mapping/track", "/bridge/levels", "/bridge/ping",
                             "/bridge/debug/recent", "/bridge/calibrate/assign", "/bridge/nope", ""]) | st.text()
BODIES = (st.binary(max_size=2000)
          | st.builds(lambda a, args: json.dumps({"address": a, "args": args}, allow_nan=True).encode(),
                      ADDRESSES, st.lists(JSON_VALUES, max_size=20) | JSON_VALUES)
          | JSON_VALUES.map(lambda v: json.dumps(v, allow_nan=True).encode()))


async def test_hostile_bodies_get_clear_errors(web_bridge: Bridge) -> None:
    token = token_of(web_bridge)
    seen: list[int] = []

    async with aiohttp.ClientSession() as http:
        async def one(body: bytes) -> None:
            async with asyncio.timeout(5), http.post(
                    base(web_bridge) + "/api/request", data=body,
                    headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"}) as response:
                answer = await response.json()
                assert response.status in (200, 400, 404, 413, 503), (body[:200], response.status, answer)
                assert answer["ok"] is (response.status == 200)
                if not answer["ok"]:
                    assert answer["error"]["message"]
                seen.append(response.status)

        loop = asyncio.get_running_loop()

        @seed(20261201)
        @settings(max_examples=300, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
        @given(BODIES)
        def run(body: bytes) -> None:
            asyncio.run_coroutine_threadsafe(one(body), loop).result(10)

        await asyncio.to_thread(run)
        for deep in (b"[" * 100_000, b'{"address": "/bridge/ping", "args": ' + b"[" * 50_000):  # recursion, not size
            await one(deep)
    assert {400, 404} <= set(seen) and seen[-2:] == [400, 400]
    async with await BridgeClient.connect("127.0.0.1", web_bridge.port) as osc:
        assert (await osc.call("/bridge/ping"))[0] == __version__
