"""The MCP server (docs/mcp.md) as an MCP client sees it: the official SDK's own client (`ClientSession` over
`stdio_client` and `streamable_http_client`, code we did not write) against `python -m oscbridge mcp` and against
`/mcp` on the web port of a bridge running in-process with simulated plugins.

What the tools answer is checked against the `/bridge/*` requests they stand for, an action against the bytes the
simulated plugin received; refusals (read-only, bad arguments, unknown tracks, no bridge, a foreign Host, a
missing or wrong token) must be tool errors or HTTP refusals with words, never tracebacks.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
from aiohttp import web
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, Implementation, TextContent, TextResourceContents

from oscbridge.app import Bridge
from oscbridge.client import BridgeClient, BridgeRequestError
from oscbridge.mcp import studio
from oscbridge.mcp.actions import check_parameter
from oscbridge.mcp.http import asgi
from oscbridge.mcp.link import Problem
from oscbridge.protocol import SET_PARAMETER
from oscbridge.tools.sim.plugin import PluginFleet, build_message
from oscbridge.web.token import token_path
from tests.conftest import free_port, running, wait_until
from tests.hub_support import hub_settings, sim_config
from tests.test_cli import LOADED_TOOLS, Daemon

READ_TOOLS = {"list_tracks", "get_levels", "list_plugins", "search_context", "recent_messages", "track_traffic"}
ACT_TOOLS = {"set_plugin_parameter", "calibration_tone", "save_message", "create_snapshot"}
CLIENT = Implementation(name="test-assistant", title="Test Assistant", version="2.0")
TRACKS = ((1, "Kick"), (2, "Snare"), (3, "Hat"))


def no_ollama() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there: Ollama is down


@asynccontextmanager
async def studio_bridge(tmp_path: Path, database_url: str, **settings: Any) -> AsyncIterator[tuple[Bridge,
                                                                                                 PluginFleet]]:
    """A bridge with three simulated plugins on tracks 1-3: Kick loud (-4.4 dBFS), Snare muted (silent), Hat at
    -26 dBFS."""
    config = hub_settings(tmp_path, database_url, plugins=8, ollama_url=no_ollama(), **settings)
    async with running(config) as bridge, PluginFleet(3, sim_config(config), interval=0.0) as fleet:
        await fleet.wait_all(lambda p: p.state == "bound", timeout=5)
        client = await BridgeClient.connect("127.0.0.1", config.osc_port)
        for plugin, (number, name) in zip(fleet, TRACKS, strict=True):
            await client.call("/bridge/calibrate/assign", plugin.temp_id, f"TR{number}", number, name, timeout=5)
        fleet[0].signal_rms, fleet[2].signal_rms = 0.6, 0.05
        fleet[0].muted = fleet[2].muted = False
        await wait_until(lambda: _levels_of(client, {"TR1": -7.0, "TR3": -27.0}))
        await client.close()
        yield bridge, fleet


async def _levels_of(client: BridgeClient, above: dict[str, float]) -> bool:
    rows = {row[0]: row[1] for row in await client.rows("/bridge/levels")}
    return all(rows.get(plugin_id, -100.0) > level for plugin_id, level in above.items())


@asynccontextmanager
async def over_stdio(port: int, *flags: str) -> AsyncIterator[ClientSession]:
    """`python -m oscbridge mcp` as a desktop assistant launches it, with the SDK's client."""
    server = StdioServerParameters(command=sys.executable, args=["-m", "oscbridge", "mcp", "--osc-port", str(port),
                                                                 *flags])
    async with stdio_client(server) as (read, write), ClientSession(read, write, client_info=CLIENT) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def over_http(url: str, headers: dict[str, str]) -> AsyncIterator[ClientSession]:
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http, \
            streamable_http_client(url, http_client=http) as (read, write), \
            ClientSession(read, write, client_info=CLIENT) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def tcp_client(port: int) -> AsyncIterator[BridgeClient]:
    client = await BridgeClient.connect("127.0.0.1", port, transport="tcp")
    try:
        yield client
    finally:
        await client.close()


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool's structured result; the call must succeed."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, (tool, result.content)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


async def refused(session: ClientSession, tool: str, **arguments: Any) -> str:
    """The text of a tool error; the call must fail as a tool error (not a protocol error, not a crash)."""
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult) and result.is_error, (tool, result)
    text = "".join(block.text for block in result.content if isinstance(block, TextContent))
    assert "Traceback" not in text
    return text


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, as anyio's task groups raise them."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def text_of(contents: list[Any]) -> str:
    return "".join(c.text for c in contents if isinstance(c, TextResourceContents))


async def check_reads(session: ClientSession, bridge: Bridge, control: bool) -> None:
    """What every transport must answer the same way: the read tools against the requests they stand for."""
    async with tcp_client(bridge.port) as osc:
        tracks = await call(session, "list_tracks")
        mapping = await osc.rows("/bridge/mapping/list")
        assert tracks["project"] == (await osc.call("/bridge/project/current"))[0]
        assert [(t["track_number"], t["track_name"], t["plugin_id"], t["port"] or -1, t["instance_id"] or "")
                for t in tracks["tracks"]] == [tuple(row) for row in mapping]
        assert {t["plugin_state"] for t in tracks["tracks"]} == {"identified"}

        levels = await call(session, "get_levels")
        expected = await osc.rows("/bridge/levels")
        assert [level["plugin_id"] for level in levels["levels"]] == [row[0] for row in expected]
        for level, row in zip(levels["levels"], expected, strict=True):
            got = [level[name] for name in ("rms_dbfs", "band_1_db", "band_2_db", "band_3_db", "band_4_db")]
            assert got == pytest.approx(row[1:6], abs=1e-4)  # OSC carries float32
            assert level["max_rms_dbfs"] == level["rms_dbfs"] and level["fresh"]
        by_id = {level["plugin_id"]: level for level in levels["levels"]}
        assert by_id["TR1"]["near_full_scale"] and not by_id["TR1"]["silent"] and by_id["TR1"]["track_name"] == "Kick"
        assert by_id["TR2"]["silent"] and not by_id["TR3"]["silent"] and not by_id["TR3"]["near_full_scale"]
        assert "no sample peak" in levels["note"]
        watched = await call(session, "get_levels", window_seconds=0.3)
        assert watched["window_seconds"] == 0.3 and len(watched["levels"]) == 3

        plugins = await call(session, "list_plugins")
        assert {(p["plugin_id"], p["track_name"], p["state"]) for p in plugins["plugins"]} == {
            ("TR1", "Kick", "identified"), ("TR2", "Snare", "identified"), ("TR3", "Hat", "identified")}
        assert all(p["health"].startswith("ok") for p in plugins["plugins"])
        assert [fact["name"] for fact in plugins["bridge"]] == [row[0] for row in await osc.rows("/bridge/health")]

        traffic = await call(session, "track_traffic", track="snare", seconds=120)
        assert traffic["track"] == "track 2 'Snare' (TR2)"
        contents = [row["content"] for row in traffic["rows"]]
        assert any(c.startswith("/aiplayer/track_uuid_assignment ,iss") and c.endswith(" TR2") for c in contents)
        assert any(c.startswith("/aiplayer/uuid_assignment_confirmed ,sss") for c in contents)
        assert not any("TR1" in c.split() or "TR3" in c.split() for c in contents)

        await osc.call("/bridge/message/save", "assistant", "We keep the vocal bus compressor at 4:1, gentle attack",
                       "llama", 1, "vocal bus compressor 4:1", 1)
        found = await call(session, "search_context", query="vocal bus compressor")
        assert found["results"][0]["content"].startswith("We keep the vocal bus compressor")
        assert "keyword" in found["results"][0]["why"]
        assert found["semantic"] is False and "Ollama" in found["note"]  # keywords only, and it says so
        recent = await call(session, "recent_messages", limit=5)
        assert recent["scope"] == "session" and recent["messages"][0]["key_decision"] is True

        # Arguments the schema refuses, and a track that does not exist: tool errors a model can act on.
        assert "less than or equal to 50" in await refused(session, "search_context", query="kick", limit=500)
        assert "window_seconds" in await refused(session, "get_levels", window_seconds=-1)
        missing = await refused(session, "track_traffic", track=9)
        assert "no track '9'" in missing and "1 'Kick' (TR1), 2 'Snare' (TR2), 3 'Hat' (TR3)" in missing
        if not control:
            assert "Unknown tool" in await refused(session, "set_plugin_parameter", track=1, value=-3)

        # Resources: the track map, the sessions, one session's conversation, the snapshots.
        listed = {str(r.uri) for r in (await session.list_resources()).resources}
        assert listed == {"oscbridge://tracks", "oscbridge://sessions", "oscbridge://snapshots"}
        templates = (await session.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["oscbridge://sessions/{session_id}/conversation"]
        track_map = json.loads(text_of((await session.read_resource("oscbridge://tracks")).contents))
        assert [{**t, "seconds_since_heard": None} for t in track_map["tracks"]] == [
            {**t, "seconds_since_heard": None} for t in tracks["tracks"]]  # the same, read a moment later
        sessions = json.loads(text_of((await session.read_resource("oscbridge://sessions")).contents))
        current = (await osc.call("/bridge/project/current"))[2]
        assert sessions[0]["session_id"] == current and sessions[0]["active"] is True
        conversation = text_of((await session.read_resource(sessions[0]["conversation"])).contents)
        assert "assistant (llama) [key decision: vocal bus compressor 4:1]: We keep the vocal bus" in conversation

        prompts = {p.name: p for p in (await session.list_prompts()).prompts}
        assert set(prompts) == {"review_levels", "recall_decisions"}
        recall = await session.get_prompt("recall_decisions", {"topic": "the vocal bus"})
        assert "the vocal bus" in str(recall.messages[0].content)


async def test_over_stdio_read_only_then_with_control(tmp_path: Path, database_url: str) -> None:
    async with studio_bridge(tmp_path, database_url) as (bridge, fleet):
        async with over_stdio(bridge.port) as session:
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}
            assert set(tools) == READ_TOOLS  # read-only: the tools that act are not offered at all
            assert all(tool.annotations and tool.annotations.read_only_hint for tool in tools.values())
            assert all(tool.title and tool.description for tool in tools.values())
            levels_schema = tools["get_levels"].input_schema["properties"]["window_seconds"]
            assert (levels_schema["type"], levels_schema["minimum"], levels_schema["maximum"]) == ("number", 0, 10)
            assert tools["track_traffic"].input_schema["required"] == ["track"]
            assert "rms_dbfs" in json.dumps(tools["get_levels"].output_schema)
            await check_reads(session, bridge, control=False)

        async with over_stdio(bridge.port, "--allow-control") as session:
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}
            assert set(tools) == READ_TOOLS | ACT_TOOLS
            setter = tools["set_plugin_parameter"]
            assert setter.annotations is not None and setter.annotations.read_only_hint is False
            assert setter.annotations.destructive_hint is True and "sound" in (setter.title or "")
            assert setter.input_schema["required"] == ["track", "value"]

            # The parameter reaches the plugin on its own port as the datagram the real plugin reads: ,sf float32.
            kick = fleet[0]
            kick.datagrams.clear()
            done = await call(session, "set_plugin_parameter", track="Kick", value=-6.5)
            assert done["done"] == "Test Assistant 2.0 (MCP) set GAIN of track 1 'Kick' (TR1) to -6.5 dB"
            assert done["logged"] is True
            await kick.wait_for(lambda p: bool(p.datagrams))
            assert kick.datagrams == [build_message(SET_PARAMETER, ("s", "GAIN"), ("f", -6.5))]
            assert kick.parameters == {"GAIN": -6.5} and not fleet[1].parameters and not fleet[2].parameters

            # Out of range, unknown parameter, unknown track: refused before anything is sent.
            assert "GAIN takes -60 to 0 dB; 6 is out of range" in await refused(
                session, "set_plugin_parameter", track=1, value=6)
            assert "no parameter 'PAN'" in await refused(session, "set_plugin_parameter", track=1, value=-1,
                                                         parameter="PAN")
            assert "no track 'TR7'" in await refused(session, "set_plugin_parameter", track="TR7", value=-1)
            assert "value" in await refused(session, "set_plugin_parameter", track=1)
            assert kick.datagrams == [build_message(SET_PARAMETER, ("s", "GAIN"), ("f", -6.5))]

            # The tone starts only in a plugin without a track id (one being calibrated), with the float32 the
            # plugin reads; the stop reaches every plugin.
            async with PluginFleet(1, sim_config(bridge.settings), interval=0.0) as newcomer:
                await newcomer.wait_all(lambda p: p.state == "bound", timeout=5)
                tone = await call(session, "calibration_tone", on=True, frequency_hz=440, level_db=-20)
                assert tone["acknowledged"] == 1 and tone["logged"] is True
                assert (newcomer[0].tone_on, newcomer[0].tone_frequency, newcomer[0].tone_level_db) == (True, 440, -20)
                assert not any(plugin.tone_on for plugin in fleet)
                tone = await call(session, "calibration_tone", on=False)
                assert tone["acknowledged"] == 4 and tone["logged"] is True
                assert not newcomer[0].tone_on
            saved = await call(session, "save_message", content="Kick down 6.5 dB, it was eating the bass",
                               decision_summary="kick GAIN -6.5 dB")
            snapshot = await call(session, "create_snapshot", name="after the kick fix")
            assert saved["id"] and snapshot["id"]

            # Every action is in the conversation, under the client's name.
            async with tcp_client(bridge.port) as osc:
                current = (await osc.call("/bridge/project/current"))[2]
                lines = [row for row in await osc.rows("/bridge/session/conversation", current) if row[0] == "line"]
            assert [(row[2], row[5]) for row in lines] == [("producer", "action")] * 5
            assert [row[3] for row in lines] == [
                "Test Assistant 2.0 (MCP) set GAIN of track 1 'Kick' (TR1) to -6.5 dB",
                "Test Assistant 2.0 (MCP) started the calibration tone (440 Hz, -20 dB) in the plugins without a "
                "track id: 1 acknowledged",
                "Test Assistant 2.0 (MCP) stopped the calibration tone: 4 plugins acknowledged",
                "Test Assistant 2.0 (MCP) saved a key decision: kick GAIN -6.5 dB",
                "Test Assistant 2.0 (MCP) created the snapshot 'after the kick fix'"]
            snapshots = json.loads(text_of((await session.read_resource("oscbridge://snapshots")).contents))
            assert [(s["snapshot_id"], s["name"]) for s in snapshots] == [(snapshot["id"], "after the kick fix")]


def raw_request(port: int, host: str, body: bytes, headers: str = "") -> bytes:
    """One HTTP request written by hand (aiohttp's client always sends a proper Host)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Accept: application/json, text/event-stream\r\n{headers}Content-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n".encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}).encode()


async def test_over_streamable_http_with_the_token(tmp_path: Path, database_url: str) -> None:
    http_port = free_port()
    async with studio_bridge(tmp_path, database_url, http_port=http_port, mcp_allow_control=True) as (bridge, fleet):
        token = token_path(bridge.settings.data_dir).read_text().strip()
        url = f"http://127.0.0.1:{http_port}/mcp"
        here = f"127.0.0.1:{http_port}"

        # Refused before the MCP server is reached: a foreign Host (DNS rebinding), no token, a wrong token, a
        # browser page of another origin.
        answers = [await asyncio.to_thread(raw_request, http_port, host, INITIALIZE, headers) for host, headers in (
            (f"evil.example:{http_port}", f"Authorization: Bearer {token}\r\n"),
            (here, ""),
            (here, "Authorization: Bearer not-the-token\r\n"),
            (here, f"Authorization: Bearer {token}\r\nOrigin: http://evil.example\r\n"))]
        assert [answer.split(b" ", 2)[1] for answer in answers] == [b"421", b"401", b"401", b"403"]
        assert b"WWW-Authenticate: Bearer" in answers[1] and b"needs this installation's token" in answers[1]
        async with aiohttp.ClientSession() as http, http.get(url, headers={"Authorization": f"Bearer {token}"}) as got:
            assert got.status == 405 and got.headers["Allow"] == "POST, DELETE"

        # The SDK's own client with a wrong token gets no session.
        with pytest.raises(BaseException) as caught:
            async with over_http(url, {"Authorization": "Bearer wrong"}):
                pass
        assert any(isinstance(exc, MCPError) for exc in leaves(caught.value))

        async with over_http(url, {"Authorization": f"Bearer {token}"}) as session:
            tools = {tool.name for tool in (await session.list_tools()).tools}
            assert tools == READ_TOOLS | ACT_TOOLS  # mcp_allow_control is set
            await check_reads(session, bridge, control=True)
            hat = fleet[2]
            hat.datagrams.clear()
            done = await call(session, "set_plugin_parameter", track="TR3", value=-12)
            assert done["done"] == "Test Assistant 2.0 (MCP) set GAIN of track 3 'Hat' (TR3) to -12 dB"
            await hat.wait_for(lambda p: bool(p.datagrams))
            assert hat.datagrams == [build_message(SET_PARAMETER, ("s", "GAIN"), ("f", -12.0))]
            assert "no track 'Bass'" in await refused(session, "set_plugin_parameter", track="Bass", value=-1)


async def test_over_streamable_http_the_tools_that_act_are_off_by_default(tmp_path: Path, database_url: str) -> None:
    http_port = free_port()
    async with studio_bridge(tmp_path, database_url, http_port=http_port) as (bridge, fleet):
        token = token_path(bridge.settings.data_dir).read_text().strip()
        async with over_http(f"http://127.0.0.1:{http_port}/mcp", {"Authorization": f"Bearer {token}"}) as session:
            assert {tool.name for tool in (await session.list_tools()).tools} == READ_TOOLS
            fleet[0].datagrams.clear()
            assert "set_plugin_parameter" in await refused(session, "set_plugin_parameter", track=1, value=-6)
            await asyncio.sleep(0.2)
            assert fleet[0].datagrams == []  # nothing reached the plugin


async def test_without_a_bridge_the_tools_say_how_to_start_one() -> None:
    port = free_port()
    async with over_stdio(port) as session:
        text = await refused(session, "list_tracks")
        assert text.endswith(f"The oscbridge bridge is not running: nothing answers on 127.0.0.1:{port} (cannot "
                             "reach the bridge: Connection refused). Ask the user to start it (start it with "
                             "`oscbridge serve`, or as a service with `oscbridge launchd install`), then try again.")
        assert "not running" in await refused(session, "search_context", query="kick")
        with pytest.raises(MCPError, match="not running"):
            await session.read_resource("oscbridge://tracks")


async def test_serve_loads_the_sdk_only_for_the_first_mcp_request(tmp_path: Path, database_url: str) -> None:
    """`oscbridge serve` with the web page on: the MCP SDK is imported when /mcp is first asked, not at start
    (an audit hook in the daemon's process says when `mcp` is imported, with the system's monotonic clock)."""
    osc_port, http_port = free_port(), free_port()
    hook = ("import json, sys, time; sys.addaudithook(lambda event, args: event == 'import' and args[0] == 'mcp' "
            "and print(json.dumps({'event': 'sdk_imported', 't': time.monotonic()}), file=sys.stderr, flush=True)); ")
    env = {**os.environ, "HOME": str(tmp_path), "OSCBRIDGE_HTTP_PORT": str(http_port)}
    proc = subprocess.Popen([sys.executable, "-c", hook + LOADED_TOOLS, "serve", "--osc-port", str(osc_port),
                             "--data-dir", str(tmp_path / "data"), "--database-url", database_url],
                            stderr=subprocess.PIPE, text=True, env=env)
    daemon = Daemon.__new__(Daemon)
    daemon.proc, daemon.events = proc, []
    try:
        daemon.wait_for("ready")
        assert not any(event["event"] == "sdk_imported" for event in daemon.events)
        token = token_path(tmp_path / "data").read_text().strip()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{http_port}/api/session") as response:
                assert response.status == 200  # the page's side works without the SDK
            asked = time.monotonic()
            async with http.post(f"http://127.0.0.1:{http_port}/mcp", data=INITIALIZE, headers={
                    "Authorization": f"Bearer {token}", "Content-Type": "application/json",
                    "Accept": "application/json, text/event-stream"}) as response:
                assert response.status == 200 and response.headers["Mcp-Session-Id"]
                assert (await response.json())["result"]["serverInfo"]["name"] == "oscbridge"
        imported = await asyncio.to_thread(daemon.wait_for, "sdk_imported")
        assert imported["t"] > asked  # type: ignore[operator]
        assert daemon.stop() == 0
    finally:
        if proc.poll() is None:
            proc.kill()


# -- the parts, without a bridge ---------------------------------------------------------------------------------

MAPPING = [{"track_number": 1, "track_name": "Kick", "plugin_id": "TR1", "port": 9000, "instance_id": "a"},
           {"track_number": 2, "track_name": "Vox", "plugin_id": "TR2", "port": -1, "instance_id": ""},
           {"track_number": 3, "track_name": "vox", "plugin_id": "TR3", "port": 9002, "instance_id": "c"}]
PLUGINS = [{"instance_id": "a", "port": 9000, "state": "identified", "plugin_id": "TR1", "seconds_since_heard": 0.1},
           {"instance_id": "d", "port": 9003, "state": "identified", "plugin_id": "TR9", "seconds_since_heard": 0.1}]


def test_a_track_is_found_by_number_id_or_name_and_a_wrong_one_names_the_tracks() -> None:
    assert studio.resolve(1, MAPPING, PLUGINS) == studio.resolve("1", MAPPING, PLUGINS) == studio.Target(
        "TR1", 1, "Kick", 9000)
    assert studio.resolve("kick", MAPPING, PLUGINS) == studio.resolve("tr1", MAPPING, PLUGINS)
    assert studio.resolve("TR2", MAPPING, PLUGINS).port is None  # mapped, but no live plugin
    assert studio.resolve("TR9", MAPPING, PLUGINS) == studio.Target("TR9")  # live, not on a track
    assert studio.Target("TR9").label == "TR9 (not mapped to a track)"
    with pytest.raises(Problem, match=re.escape("Several tracks are named 'VOX': 2 'Vox' (TR2), 3 'vox' (TR3).")):
        studio.resolve("VOX", MAPPING, PLUGINS)
    with pytest.raises(Problem, match=re.escape("no track 'Bass' in this project. Its tracks are 1 'Kick' (TR1), 2")):
        studio.resolve("Bass", MAPPING, PLUGINS)
    with pytest.raises(Problem, match=r"no track of this project is mapped .* `oscbridge calibrate`"):
        studio.resolve(4, [], [])


def test_a_parameter_must_be_the_plugins_own_and_in_its_range() -> None:
    assert check_parameter("gain", -60.0) == check_parameter(" GAIN ", 0.0) == "GAIN"
    for value in (0.1, -60.5, float("nan"), float("inf")):
        with pytest.raises(Problem, match=re.escape("GAIN takes -60 to 0 dB")):
            check_parameter("GAIN", value)
    with pytest.raises(Problem, match=re.escape("no parameter 'PAN'; it has GAIN (-60 to 0 dB)")):
        check_parameter("PAN", -1.0)


class Readings:
    """A link whose /bridge/levels answers a new reading each time, on a clock moved by the sleeps."""

    def __init__(self, readings: list[list[list[Any]]]) -> None:
        self.readings = readings
        self.now = 0.0

    async def call(self, address: str, *args: Any) -> list[Any]:
        raise AssertionError(address)

    async def rows(self, address: str, *args: Any) -> list[list[Any]]:
        if address == "/bridge/mapping/list":
            return [[1, "Kick", "TR1", 9000, "a"]]
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_watching_the_levels_reports_the_last_reading_and_the_loudest() -> None:
    bands = [-20.0, -30.0, -40.0, -100.0]
    link = Readings([[["TR1", -20.0, *bands, 0.01]], [["TR1", -3.0, *bands, 0.02]], [["TR1", -25.0, *bands, 2.5]]])
    watched = await studio.levels(link, 0.1, sleep=link.sleep, clock=lambda: link.now)
    (level,) = watched.levels
    assert (level.rms_dbfs, level.max_rms_dbfs, level.near_full_scale, level.silent) == (-25.0, -3.0, True, False)
    assert level.fresh is False and (level.track_number, level.track_name) == (1, "Kick")  # 2.5 s old: frozen


async def test_the_asgi_adapter_carries_a_request_and_a_streamed_answer() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope=scope, first=await receive())
        await send({"type": "http.response.start", "status": 202, "headers": [(b"x-answer", b"yes")]})
        await send({"type": "http.response.body", "body": b"part one, ", "more_body": True})
        await send({"type": "http.response.body", "body": b"part two"})
        seen["then"] = await receive()

    async def silent(scope: Any, receive: Any, send: Any) -> None:
        pass

    async def answer(request: web.Request) -> web.StreamResponse:
        return await asgi(app if request.path == "/mcp" else silent, request)

    server = web.Application()
    server.router.add_post("/mcp", answer)
    server.router.add_post("/silent", answer)
    runner = web.AppRunner(server)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{port}/mcp?a=1", data=b"{}", headers={"X-Mine": "1"}) as got:
                assert (got.status, got.headers["X-Answer"], await got.read()) == (202, "yes", b"part one, part two")
            async with http.post(f"http://127.0.0.1:{port}/silent") as got:
                assert got.status == 500  # an application that answers nothing is an error, not a hang
    finally:
        await runner.cleanup()
    scope = seen["scope"]
    assert (scope["method"], scope["path"], scope["query_string"]) == ("POST", "/mcp", b"a=1")
    assert (b"x-mine", b"1") in scope["headers"] and scope["server"] == ("127.0.0.1", port)
    assert seen["first"] == {"type": "http.request", "body": b"{}", "more_body": False}
    assert seen["then"] == {"type": "http.disconnect"}  # once the answer is out


async def test_the_sessions_of_a_project_and_what_was_said_in_one(udp_client: BridgeClient) -> None:
    """The two requests the MCP resources added to the API (docs/mcp.md), over OSC."""
    client = udp_client
    _, _, first = await client.call("/bridge/project/current")
    for text in ("Kick first", "then the snare"):
        await client.call("/bridge/message/save", "user", text)
    await client.call("/bridge/conversation/log", "producer", "set GAIN of the kick to -3 dB", "action")
    await client.call("/bridge/message/save", "assistant", "noted\nwith a second line", "llama", 1, "kick -3 dB")

    sessions = await client.rows("/bridge/session/list")
    assert sessions[0][0] == first and sessions[0][2:] == ["", 1, 3, 1]  # running, 3 messages, 1 line
    said = await client.rows("/bridge/session/conversation", first)
    assert [(row[0], row[2], row[3]) for row in said] == [
        ("message", "user", "Kick first"), ("message", "user", "then the snare"),
        ("line", "producer", "set GAIN of the kick to -3 dB"), ("message", "assistant", "noted\nwith a second line")]
    assert said[2][5] == "action" and said[3][4:] == ["llama", "", 1, "kick -3 dB"]
    newest = await client.rows("/bridge/session/conversation", first, 2)
    assert newest == said[2:]  # the newest two, oldest first

    with pytest.raises(BridgeRequestError, match="bad_request: session_id must be a session's id"):
        await client.call("/bridge/session/conversation", "not-a-session")
    await client.call("/bridge/project/open", "Another Song", "")
    with pytest.raises(BridgeRequestError, match="not_found: the current project has no session"):
        await client.rows("/bridge/session/conversation", first)  # it belongs to the other project
    _, _, second = await client.call("/bridge/project/current")
    assert [row[0] for row in await client.rows("/bridge/session/list")] == [second]  # only this project's
