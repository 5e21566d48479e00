"""OSCQuery on real loopback sockets: HOST_INFO and the tree from the HTTP port, every request of BRIDGE-API.md in
it with the contract's type tags (read from BRIDGE-API.md itself), the plugin messages with the tags of the
protocol note, a request driven from what the tree says, live level values (read, and streamed with LISTEN over
a WebSocket, which also takes seeded junk), the page still served to browsers,
foreign Hosts refused, and the mDNS announcement browsed with zeroconf on the loopback interface."""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from zeroconf import InterfaceChoice

from oscbridge import protocol
from oscbridge.api.memory import ROLES
from oscbridge.app import Bridge
from oscbridge.client import BridgeClient, BridgeRequestError
from oscbridge.osc.codec import decode_packet, tag_for
from oscbridge.tools.sim.plugin import SimulatedPlugin
from oscbridge.web.advertise import OSC_SERVICE, OSCQUERY_SERVICE, where
from oscbridge.web.guard import OPEN_REQUESTS
from oscbridge.web.oscquery import STATE_VALUES
from tests.conftest import free_port, make_settings, running, wait_until
from tests.hub_support import hub_settings, sim_config

SHARED = Path(__file__).resolve().parents[2] / "shared"
CONTRACT = json.loads((Path(__file__).parent / "data" / "contract_messages.json").read_text())
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
Json = dict[str, Any]


def shared_doc(relative: str) -> str:
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"{path} is not here (the project's shared documents sit next to the repository)")
    return path.read_text()


def documented_requests() -> dict[str, str]:
    """BRIDGE-API.md's request table: address -> the type tags of the arguments after the request id."""
    requests: dict[str, str] = {}
    for line in shared_doc("design/BRIDGE-API.md").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`/bridge/[a-z_/]+`", cells[0]):
            requests[cells[0].strip("`")] = "".join(re.findall(r"`([ifsdhTFb])`", cells[1]))
    assert len(requests) > 20 and "/bridge/mapping/set" in requests, "BRIDGE-API.md's table was not found"
    return requests


def documented_plugin_messages() -> list[list[str]]:
    """The protocol note's tables of what the plugin sends (P rows) and what it is sent (A rows): [row, address,
    type tags]."""
    found = re.findall(r"^\| ([PA]\d) \| `(/aiplayer/[a-z_/]+)` \| `,([a-z]*)`", shared_doc(
        "reference/aiplayer-osc-protocol.md"), re.MULTILINE)
    assert len(found) > 15, "the protocol note's message tables were not found"
    return [list(row) for row in found]


def contract_requests() -> dict[str, str]:
    """The documented requests, from the copy of their facts kept with the tests (CI has no shared documents)."""
    requests: dict[str, str] = CONTRACT["requests"]
    return requests


def protocol_note_messages() -> list[list[str]]:
    messages: list[list[str]] = CONTRACT["plugin_messages"]
    return messages


def test_the_copy_of_the_contract_is_current() -> None:
    assert documented_requests() == CONTRACT["requests"]
    assert documented_plugin_messages() == CONTRACT["plugin_messages"]


def nodes_of(tree: Json) -> dict[str, Json]:
    """Every node of an OSCQuery tree by its FULL_PATH."""
    found = {tree["FULL_PATH"]: tree}
    for child in tree.get("CONTENTS", {}).values():
        found.update(nodes_of(child))
    return found


def signatures(node: Json) -> list[str]:
    """The type tags a method takes: its TYPE, then its OVERLOADS."""
    return [node.get("TYPE", ""), *(overload.get("TYPE", "") for overload in node.get("OVERLOADS", []))]


async def fetch(bridge: Bridge, target: str, **headers: str) -> tuple[int, Any, aiohttp.ClientResponse]:
    """GET `target` from the bridge's HTTP port: status, JSON (or text) and the response."""
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{bridge.settings.http_port}{target}", headers=headers) as response:
        if response.content_type == "application/json":
            return response.status, await response.json(), response
        return response.status, await response.text(), response


@pytest.fixture
async def oq_bridge(tmp_path: Path, database_url: str) -> AsyncIterator[Bridge]:
    async with running(make_settings(tmp_path, database_url, http_port=free_port())) as bridge:
        yield bridge


async def test_host_info_and_the_tree(oq_bridge: Bridge) -> None:
    status, info, response = await fetch(oq_bridge, "/?HOST_INFO")
    assert status == 200 and response.content_type == "application/json"
    assert info["NAME"].startswith("oscbridge on ")
    assert (info["OSC_IP"], info["OSC_PORT"], info["OSC_TRANSPORT"]) == ("127.0.0.1", oq_bridge.port, "UDP")
    assert all(info["EXTENSIONS"][name] for name in ("ACCESS", "VALUE", "RANGE", "DESCRIPTION", "OVERLOADS"))
    assert (await fetch(oq_bridge, "/bridge/ping?HOST_INFO"))[1] == info  # the path does not matter

    status, tree, _ = await fetch(oq_bridge, "/")
    assert status == 200 and tree["FULL_PATH"] == "/" and {"bridge", "aiplayer"} <= set(tree["CONTENTS"])
    nodes = nodes_of(tree)
    setter = nodes["/bridge/mapping/set"]
    assert setter["ACCESS"] == 2 and setter["TYPE"] == "siss" and "OVERLOADS" not in setter
    assert setter["RANGE"] == [{}, {"MIN": 1, "MAX": 100_000}, {}, {}]
    assert "plugin_id s (TRn)" in setter["DESCRIPTION"]
    tone = nodes["/bridge/calibrate/tone"]
    assert tone["TYPE"] == "siff" and [o["TYPE"] for o in tone["OVERLOADS"]] == ["si", "sif"]
    assert tone["RANGE"][1] == {"VALS": [0, 1]} and tone["RANGE"][2] == {"MIN": 1.0, "MAX": 24000.0}
    assert nodes["/bridge/message/save"]["RANGE"][1] == {"VALS": list(ROLES)}

    # One node, one attribute, and the proposal's answers for what is not there.
    assert (await fetch(oq_bridge, "/bridge/mapping/set"))[1] == setter
    assert (await fetch(oq_bridge, "/bridge/mapping/set/"))[1] == setter
    assert (await fetch(oq_bridge, "/bridge/mapping/set?TYPE"))[1] == {"TYPE": "siss"}
    assert (await fetch(oq_bridge, "/bridge/mapping?TYPE"))[1] == {}  # a container has no type
    assert (await fetch(oq_bridge, "/bridge/mapping"))[1] == nodes["/bridge/mapping"]
    assert (await fetch(oq_bridge, "/bridge/ping?VALUE"))[0] == 204  # a request has no value to read
    assert (await fetch(oq_bridge, "/bridge/nothing"))[0] == 404
    assert (await fetch(oq_bridge, "/aiplayer/telemetry/x"))[0] == 404
    status, answer, _ = await fetch(oq_bridge, "/?GABBAGABBAHEY")
    assert status == 400 and "unknown attribute" in answer["error"]
    # Messages that are not requests: what plugins send here can be sent; the rest is listed for reference.
    assert (nodes["/aiplayer/telemetry"]["ACCESS"], nodes["/aiplayer/telemetry"]["TYPE"]) == (2, "sfffff")
    assert nodes["/aiplayer/start_tone"]["ACCESS"] == 0 and "TYPE" not in nodes["/aiplayer/stop_tone"]
    assert nodes["/bridge/event/assigned"]["TYPE"] == "ssis" and nodes["/bridge/event/assigned"]["ACCESS"] == 0


async def test_every_contract_request_is_in_the_tree_with_its_type_tags(oq_bridge: Bridge) -> None:
    nodes = nodes_of((await fetch(oq_bridge, "/"))[1])
    for address, tags in contract_requests().items():
        node = nodes.get(address)
        assert node is not None, f"{address} is not in the tree"
        assert node["ACCESS"] == 2 and node["DESCRIPTION"], address
        # The contract's signature is one the method takes; anything past it is an optional extension at the end.
        assert "s" + tags in signatures(node) and node["TYPE"].startswith("s" + tags), (address, signatures(node))
        assert len(node["RANGE"]) == len(node["TYPE"]), address

    # Every request in the tree is a real one, and takes as many arguments as its TYPE says: one more is refused
    # with a count that matches (never `not_found`).
    requests = {path: node for path, node in nodes.items() if path.startswith("/bridge/") and node.get("ACCESS") == 2}
    assert set(contract_requests()) <= set(requests)
    async with await BridgeClient.connect("127.0.0.1", oq_bridge.port) as client:
        for address, node in requests.items():
            arity = len(node["TYPE"]) - 1
            with pytest.raises(BridgeRequestError) as refused:
                await client.call(address, *(["x"] * (arity + 1)))
            assert refused.value.code == "bad_request", (address, refused.value.message)
            assert re.match(rf"expected (\d+ to )?{arity} argument", refused.value.message), (address, arity,
                                                                                              refused.value.message)


async def test_plugin_messages_have_the_protocol_notes_type_tags(oq_bridge: Bridge) -> None:
    nodes = nodes_of((await fetch(oq_bridge, "/aiplayer"))[1])
    accepted = {path for path, node in nodes.items() if node.get("ACCESS") == 2}
    assert accepted == set(protocol.PLUGIN_SENDS)
    for row, address, tags in protocol_note_messages():
        if row.startswith("A") and address in protocol.PLUGIN_SENDS:
            continue  # A9, the app's dead `/aiplayer/rms ,f`: the address is the plugin's `,sf` here
        node = nodes[address]
        assert node["ACCESS"] == (2 if row.startswith("P") else 0), address
        assert tags in signatures(node), (row, address, tags, signatures(node))


async def test_a_request_found_only_through_the_tree(oq_bridge: Bridge) -> None:
    """What an OSCQuery client does: read a method's TYPE, RANGE and argument notes from the tree, build the
    message from them, send it over OSC, and see the effect."""
    nodes = nodes_of((await fetch(oq_bridge, "/"))[1])
    setter = nodes["/bridge/mapping/set"]
    notes = re.findall(r"(\w+) ([sif])(?: \(([^)]*)\))?", setter["DESCRIPTION"].split("request id:")[1])
    assert "".join(tag for _, tag, _ in notes) == setter["TYPE"][1:]
    args: list[Any] = []
    for (name, tag, note), limits in zip(notes, setter["RANGE"][1:], strict=True):
        if tag == "i":
            args.append(limits.get("MIN", 0) + 6)
        elif "TRn" in note:
            args.append("TR7")
        else:
            args.append(f"{name} from OSCQuery")
    assert "".join(tag_for(value) for value in ["request id", *args]) == setter["TYPE"]
    async with await BridgeClient.connect("127.0.0.1", oq_bridge.port) as client:
        assert await client.call(setter["FULL_PATH"], *args) == []
        assert await client.call("/bridge/mapping/track", "TR7") == ["track_name from OSCQuery", 7, -1, ""]


async def test_levels_and_status_are_readable_values(tmp_path: Path, database_url: str) -> None:
    assert {address for address, _ in STATE_VALUES.values()} | {"/bridge/levels"} <= OPEN_REQUESTS
    settings = hub_settings(tmp_path, database_url, plugins=4, http_port=free_port())
    plugin = SimulatedPlugin(sim_config(settings))
    plugin.muted, plugin.signal_rms, plugin.signal_bands = False, 0.25, (-12.0, -20.0, -30.0, -40.0)
    async with running(settings) as bridge, await BridgeClient.connect("127.0.0.1", settings.osc_port) as client:
        status, levels, _ = await fetch(bridge, "/bridge/state/levels")
        assert (status, levels["CONTENTS"], levels["ACCESS"]) == (200, {}, 0)  # no track streams yet
        try:
            await plugin.start()
            await plugin.wait_for(lambda p: p.state == "bound")
            await client.call("/bridge/calibrate/assign", plugin.temp_id, "TR3", 3, "Bass")
            await wait_until(lambda: _streaming(client, "TR3"))
            rows = await client.rows("/bridge/levels")
            status, node, _ = await fetch(bridge, "/bridge/state/levels/TR3")
            assert (status, node["ACCESS"], node["TYPE"]) == (200, 1, "ffffff")
            assert node["VALUE"][:5] == pytest.approx(rows[0][1:6], abs=1e-3)
            assert node["VALUE"][0] == pytest.approx(20 * math.log10(0.25), abs=1e-3)
            assert 0 <= node["VALUE"][5] < 5  # seconds since the update
            assert (await fetch(bridge, "/bridge/state/levels/TR3?VALUE"))[1]["VALUE"][:5] == node["VALUE"][:5]
            tree = nodes_of((await fetch(bridge, "/"))[1])
            assert tree["/bridge/state/levels/TR3"]["VALUE"][:5] == node["VALUE"][:5]
            status_node = tree["/bridge/state/status"]
            assert status_node["VALUE"][:2] == (await client.call("/bridge/status"))[:2] == [1, 1]
            assert tree["/bridge/state/project"]["VALUE"] == await client.call("/bridge/project/current")
        finally:
            await plugin.close()


async def next_value(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> tuple[str, list[Any]]:
    """The next value a LISTEN sends: one binary OSC message (address, arguments)."""
    message = await ws.receive(timeout=timeout)
    assert message.type == aiohttp.WSMsgType.BINARY, message
    [decoded] = decode_packet(message.data)
    return decoded.address, list(decoded.args)


async def test_listen_streams_the_values_that_change_until_ignore(tmp_path: Path, database_url: str) -> None:
    """OSCQuery's LISTEN as ossia score or Chataigne use it: JSON commands on a WebSocket at `/`, each change of a
    listened value as a binary OSC message with the node's address and TYPE."""
    settings = hub_settings(tmp_path, database_url, plugins=4, http_port=free_port())
    plugin = SimulatedPlugin(sim_config(settings))
    plugin.muted, plugin.signal_rms, plugin.signal_bands = False, 0.25, (-12.0, -20.0, -30.0, -40.0)
    async with running(settings) as bridge, await BridgeClient.connect("127.0.0.1", settings.osc_port) as client, \
            aiohttp.ClientSession() as http:
        assert (await fetch(bridge, "/?HOST_INFO"))[1]["EXTENSIONS"]["LISTEN"] is True
        try:
            await plugin.start()
            await plugin.wait_for(lambda p: p.state == "bound")
            await client.call("/bridge/calibrate/assign", plugin.temp_id, "TR3", 3, "Bass")
            await wait_until(lambda: _streaming(client, "TR3"))
            url = f"ws://127.0.0.1:{settings.http_port}/"
            async with http.ws_connect(url) as ws:
                await ws.send_str("not json")  # ignored and counted; the connection goes on
                await ws.send_str(json.dumps({"COMMAND": "LISTEN", "DATA": "/bridge/state/levels/TR3"}))
                address, args = await next_value(ws)
                assert address == "/bridge/state/levels/TR3" and len(args) == 6
                assert args[0] == pytest.approx(20 * math.log10(0.25), abs=1e-3)
                plugin.signal_rms = 0.5  # the meter moves: so does the stream
                while args[0] < -7.0:
                    address, args = await next_value(ws)
                    assert address == "/bridge/state/levels/TR3"
                assert args[0] == pytest.approx(20 * math.log10(0.5), abs=1e-3)

                await ws.send_str(json.dumps({"COMMAND": "LISTEN", "DATA": "/bridge/state/status"}))
                while address != "/bridge/state/status":
                    address, args = await next_value(ws)
                assert args[:2] == (await client.call("/bridge/status"))[:2] == [1, 1]

                for path in ("/bridge/state/levels/TR3", "/bridge/state/status"):
                    await ws.send_str(json.dumps({"COMMAND": "IGNORE", "DATA": path}))
                # What was on its way before the IGNOREs may still come (a tick or two); then nothing, although the
                # level's age changes at every tick.
                for _ in range(20):
                    try:
                        await ws.receive(timeout=1.0)
                    except TimeoutError:
                        break
                else:
                    pytest.fail("values kept coming after IGNORE")
        finally:
            await plugin.close()
        stats = dict(await client.rows("/bridge/stats"))
        assert stats["oscquery.bad_commands"] == 1 and stats["oscquery.values_sent"] >= 3


async def test_listen_refuses_other_pages_and_survives_hostile_commands(oq_bridge: Bridge) -> None:
    """Another web page's WebSocket is refused (403); seeded junk is counted and ignored on a connection that then
    still listens; a command over 4 KiB closes that connection (1009), not the server."""
    port = oq_bridge.settings.http_port
    url = f"ws://127.0.0.1:{port}/"
    rng = random.Random(1209)
    shapes = [lambda: "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randrange(0, 300))),
              lambda: json.dumps({"COMMAND": rng.choice(["LISTEN", "IGNORE", "listen", 7, None]),
                                  "DATA": rng.choice(["", "bridge", "/" * 300, 5, ["/x"], "/bridge/state/x" * 20])}),
              lambda: json.dumps([{"COMMAND": "LISTEN"}] * rng.randrange(0, 50)),
              lambda: "[" * rng.randrange(1, 2000)]
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, origin="http://evil.example")
        assert refused.value.status == 403
        async with http.ws_connect(url) as ws:
            for _ in range(200):
                await ws.send_str(rng.choice(shapes)())
            await ws.send_bytes(b"\x00" * 64)
            await ws.send_str(json.dumps({"COMMAND": "LISTEN", "DATA": "/bridge/state/project"}))
            address, args = await next_value(ws)
            assert address == "/bridge/state/project" and args[0] == "Default Project"
        async with http.ws_connect(url) as ws:
            await ws.send_str("x" * 5000)
            closing = await ws.receive(timeout=10)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
            assert ws.close_code == 1009
    async with await BridgeClient.connect("127.0.0.1", oq_bridge.port) as client:
        async def stats() -> dict[str, int]:
            return dict(await client.rows("/bridge/stats"))

        async def nobody_listens() -> bool:
            return (await stats())["oscquery.listeners"] == 0

        # The server lets go of a connection once the client answered its close, a moment after the test saw it.
        await wait_until(nobody_listens)
        assert (await stats())["oscquery.bad_commands"] >= 150


async def _streaming(client: BridgeClient, plugin_id: str) -> bool:
    rows = await client.rows("/bridge/levels")
    return any(row[0] == plugin_id and row[1] > -20 for row in rows)


async def test_browsers_still_get_the_page(oq_bridge: Bridge) -> None:
    status, page, response = await fetch(oq_bridge, "/", Accept=BROWSER_ACCEPT)
    assert status == 200 and response.content_type == "text/html" and "<html" in page.lower()
    assert response.headers["Vary"] == "Accept"
    status, tree, response = await fetch(oq_bridge, "/", Accept="application/json")
    assert status == 200 and tree["FULL_PATH"] == "/" and response.headers["Vary"] == "Accept"
    assert (await fetch(oq_bridge, "/?HOST_INFO", Accept=BROWSER_ACCEPT))[1]["OSC_PORT"] == oq_bridge.port
    status, node, _ = await fetch(oq_bridge, "/bridge/ping", Accept=BROWSER_ACCEPT)  # no page there: the JSON
    assert status == 200 and node["FULL_PATH"] == "/bridge/ping"


async def test_a_foreign_host_is_refused(oq_bridge: Bridge) -> None:
    port = oq_bridge.settings.http_port
    for target in ("/?HOST_INFO", "/", "/bridge/state/levels"):
        status, text, _ = await fetch(oq_bridge, target, Host=f"evil.example:{port}")
        assert status == 421 and "DNS rebinding" in text
    assert (await fetch(oq_bridge, "/?HOST_INFO", Host=f"127.0.0.1:{port}"))[0] == 200


async def test_advertised_over_mdns_and_browsed_on_loopback(tmp_path: Path, database_url: str) -> None:
    from zeroconf import IPVersion, ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    settings = make_settings(tmp_path, database_url, http_port=free_port(), advertise=True)
    ports = {OSCQUERY_SERVICE: settings.http_port, OSC_SERVICE: settings.osc_port}
    seen: list[tuple[str, str, ServiceStateChange]] = []
    ours: dict[str, AsyncServiceInfo] = {}  # service type -> this bridge's service (another may be on the link)
    browser_zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    browser = AsyncServiceBrowser(browser_zc.zeroconf, list(ports), handlers=[
        lambda zeroconf, service_type, name, state_change: seen.append((service_type, name, state_change))])

    async def resolved() -> bool:
        for service_type, name, change in list(seen):
            info = AsyncServiceInfo(service_type, name)
            if change == ServiceStateChange.Added and await info.async_request(browser_zc.zeroconf, 1000) and \
                    info.port == ports[service_type]:
                ours[service_type] = info
        return set(ours) == set(ports)

    try:
        async with running(settings):
            await wait_until(resolved, timeout=10, interval=0.1)
            oscquery = ours[OSCQUERY_SERVICE]
            assert oscquery.name.startswith("oscbridge on ") and oscquery.parsed_addresses() == ["127.0.0.1"]
            assert ours[OSC_SERVICE].parsed_addresses() == ["127.0.0.1"]
            # The tree, from the address and port the announcement gave, with every request of the contract.
            async with aiohttp.ClientSession() as http, \
                    http.get(f"http://{oscquery.parsed_addresses()[0]}:{oscquery.port}/") as response:
                nodes = nodes_of(await response.json())
            for address, tags in contract_requests().items():
                assert "s" + tags in signatures(nodes[address]), address
        # Stopping says goodbye: browsers drop the services at once (their TTL is over an hour).
        names = {info.name for info in ours.values()}
        await wait_until(lambda: names <= {n for _, n, c in seen if c == ServiceStateChange.Removed}, timeout=5)
    finally:
        await browser.async_cancel()
        await browser_zc.async_close()


def test_where_announcements_go() -> None:
    assert where("127.0.0.1") == (["127.0.0.1"], ["127.0.0.1"])
    assert where("localhost") == (["127.0.0.1"], ["127.0.0.1"])
    interfaces, addresses = where("0.0.0.0")  # every interface, the machine's addresses but loopback
    assert interfaces == InterfaceChoice.All
    assert "127.0.0.1" not in addresses and all(a.count(".") == 3 for a in addresses)
    assert where("::1") == ([], [])  # IPv6 is not announced


def test_serve_does_not_load_zeroconf_unless_advertising() -> None:
    code = "import sys, oscbridge.cli, oscbridge.app; print('zeroconf' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"

