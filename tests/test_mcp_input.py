"""What `/mcp` and `oscbridge mcp` must refuse or decline: text OSC cannot carry (written as raw JSON, as a client
we do not control could send it), requests that arrive while the bridge stops, and flags the stdio command does
not use (docs/mcp.md)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from oscbridge.mcp.link import CallFailed, in_process
from oscbridge.mcp.mount import McpHttp
from oscbridge.typedefs import ErrorCode
from oscbridge.web.token import token_path
from tests.conftest import free_port, make_settings, run_cli, running
from tests.test_mcp import INITIALIZE


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any],
               headers: dict[str, str]) -> tuple[int, Mapping[str, str], Any]:
    """One JSON-RPC message as a raw body; json.dumps writes a lone surrogate as the escape `\\ud800`."""
    async with http.post(url, data=json.dumps(body).encode("ascii"), headers={
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers}) as got:
        text = await got.text()
        return got.status, got.headers.copy(), json.loads(text) if text else None


async def test_text_osc_cannot_carry_is_refused_over_http_and_nothing_is_stored(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Raw JSON bodies to /mcp: a NUL reaches the tool and is a tool error in the words of the shared check; half a
    surrogate pair is refused by the SDK's parser (pydantic_core, in mcp 2.3) as a JSON-RPC parse error. Either
    way nothing is acknowledged and nothing is logged as a failure with a traceback."""
    http_port = free_port()
    settings = make_settings(tmp_path, database_url, http_port=http_port, mcp_allow_control=True)
    async with running(settings) as bridge, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{http_port}/mcp"
        auth = {"Authorization": f"Bearer {token_path(settings.data_dir).read_text().strip()}"}
        status, headers, answer = await post(http, url, json.loads(INITIALIZE), auth)
        assert status == 200
        session = {**auth, "Mcp-Session-Id": headers["Mcp-Session-Id"],
                   "Mcp-Protocol-Version": answer["result"]["protocolVersion"]}
        status, _, _ = await post(http, url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
        assert status == 202
        appended = bridge.parts.spool.appended
        caplog.clear()

        def save(number: int, content: str) -> dict[str, Any]:
            return {"jsonrpc": "2.0", "id": number, "method": "tools/call",
                    "params": {"name": "save_message", "arguments": {"content": content}}}

        status, _, answer = await post(http, url, save(2, "a\u0000b"), session)
        assert status == 200 and answer["result"]["isError"] is True, answer
        assert answer["result"]["content"][0]["text"].endswith(
            ": The bridge refused this: a text must be valid Unicode without NUL; this one holds a NUL character or "
            "an unpaired surrogate (\\ud800-\\udfff), which OSC cannot carry and PostgreSQL cannot store.")
        for number, content in enumerate(("half \ud800 a pair", "the other half \udfff"), start=3):
            body = save(number, content)
            assert b"\\ud" in json.dumps(body).encode("ascii")  # sent as the JSON escape
            status, _, answer = await post(http, url, body, session)
            assert status == 400 and answer["error"]["code"] == -32700, answer
            assert "surrogate" in answer["error"]["message"] or "hex escape" in answer["error"]["message"]
        assert bridge.parts.spool.appended == appended  # nothing acknowledged, no action logged
    assert "mcp_request_failed" not in caplog.text
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


async def test_the_in_process_link_refuses_a_lone_surrogate_instead_of_failing_internally(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The link /mcp's tools use inside the daemon checks text as the web page does. Today the SDK's parser and
    pydantic's str validation refuse half a surrogate pair before a tool runs (the test above), but the link must
    not rely on that: such a text reaching `spool.append` failed its UTF-8 encode, answered "internal" and put a
    traceback in the bridge's log."""
    async with running(make_settings(tmp_path, database_url)) as bridge:
        connect = in_process(dict(bridge.router.endpoints))  # the daemon's endpoint table, as /mcp gets it
        appended = bridge.parts.spool.appended
        caplog.clear()
        async with connect() as link:
            for content in ("half \ud800 a pair", "the other half \udfff", "a\u0000b"):
                with pytest.raises(CallFailed) as refused:
                    await link.call("/bridge/message/save", "user", content)
                assert refused.value.code == ErrorCode.BAD_REQUEST
                assert str(refused.value).startswith("The bridge refused this: a text must be valid Unicode without "
                                                     "NUL; this one holds a NUL character or an unpaired surrogate")
            (saved,) = await link.call("/bridge/message/save", "user", "a whole pair: \U0001f3b8")
            assert saved
        assert bridge.parts.spool.appended == appended + 1  # only the whole text
    assert "mcp_request_failed" not in caplog.text
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


async def test_after_close_a_request_is_declined_and_no_session_manager_starts(
        caplog: pytest.LogCaptureFixture) -> None:
    """A request that arrives while the daemon stops (after the web server closed `/mcp`) must not start the SDK's
    session manager again: nothing would ever close it."""
    caplog.set_level(logging.INFO, logger="oscbridge.mcp")
    mount = McpHttp({}, allow_control=False)
    app = web.Application()
    app.router.add_route("*", "/mcp", mount.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{port}/mcp", data=INITIALIZE, headers=headers) as got:
                assert got.status == 200  # started on the first request
            assert caplog.text.count("mcp_started") == 1
            await mount.close()
            for _ in range(2):
                async with http.post(f"http://127.0.0.1:{port}/mcp", data=INITIALIZE, headers=headers) as got:
                    assert got.status == 503
                    assert "stopping" in (await got.json())["error"]["message"]
    finally:
        await runner.cleanup()
        await mount.close()
    assert caplog.text.count("mcp_started") == 1  # none started after close


def test_mcp_offers_only_the_flags_it_uses() -> None:
    """`oscbridge mcp` reaches a bridge: its --host is where that bridge listens, and the flags of a daemon's
    storage (--http-port, --data-dir, --database-url) would do nothing."""
    shown = run_cli("mcp", "--help")
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    for flag in ("--host", "--osc-port", "--config", "--allow-control"):
        assert flag in text
    for flag in ("--database-url", "--data-dir", "--http-port"):
        assert flag not in text
    assert "address to listen on" not in text and "where the bridge listens" in text
    refused = run_cli("mcp", "--database-url", "postgresql://x@/y")
    assert refused.returncode == 2 and "unrecognized arguments: --database-url" in refused.stderr
