"""The bridge's OSC namespace as OSCQuery JSON (Vidvox's OSCQueryProposal), so that tools which browse OSC
services (ossia score, Chataigne, Vidvox's OSCQuery Browser) can list its addresses: docs/oscquery.md.

The tree is built once at start. Each `/bridge/*` request comes from the endpoint table with its arguments' type
tags, ranges, choices and defaults taken from the same `Param` specs that check them, so the tree cannot disagree
with what the bridge accepts; optional trailing arguments become OVERLOADS (the shorter forms). The AIplayer
messages and the events, which no endpoint declares, come from oscquery_text.py. Values that can be read live
under `/bridge/state` (levels per track, status, the current project): each is the result of an open request (no
token: `guard.OPEN_REQUESTS`), asked through the endpoint table when a client reads the tree (or streamed with
LISTEN: oscquery_listen.py), so there is no second way of computing them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from oscbridge.api.endpoint import Endpoint, Rows
from oscbridge.api.params import Bool, Float, Int, Param, PluginId, Str
from oscbridge.osc.codec import tag_for
from oscbridge.web.calls import WebPeer, perform
from oscbridge.web.oscquery_text import BRIDGE_SENDS, CONTAINERS, EVENTS, PLUGIN_SENDS, REQUESTS, Message
from oscbridge.web.values import json_values

Json = dict[str, Any]

# ACCESS: what a client may do with a node's value (0 nothing, 1 read, 2 send to it).
NO_VALUE, READ, WRITE = 0, 1, 2
ATTRIBUTES: Final = frozenset({"FULL_PATH", "CONTENTS", "TYPE", "ACCESS", "VALUE", "RANGE", "DESCRIPTION",
                               "OVERLOADS"})
# The optional attributes this server gives (HOST_INFO's EXTENSIONS). LISTEN: the values under /bridge/state
# stream over a WebSocket (oscquery_listen.py); the tree itself never changes, so no PATH_CHANGED.
EXTENSIONS: Final = {"ACCESS": True, "VALUE": True, "RANGE": True, "DESCRIPTION": True, "OVERLOADS": True,
                     "CLIPMODE": False, "UNIT": False, "TAGS": False, "LISTEN": True, "PATH_CHANGED": False}
STATE: Final = "/bridge/state"
LEVELS: Final = "/bridge/levels"
# Single-reply open requests shown as one read-only value each under /bridge/state.
STATE_VALUES: Final = {
    "status": ("/bridge/status", "What /bridge/status answers: plugins bound, plugins identified, queued writes, "
                                 "spooled writes, database up, Ollama up, free disk MiB, spool bytes, rejected "
                                 "writes, dropped best-effort writes."),
    "project": ("/bridge/project/current", "The current project: name, project id, session id."),
}


@dataclass(frozen=True)
class Node:
    """An OSC container (with children) or method. `attributes` are the fixed OSCQuery attributes of a method
    (TYPE, ACCESS, RANGE, OVERLOADS); `value` is read at request time."""

    path: str
    description: str = ""
    attributes: Json = field(default_factory=dict)
    children: Mapping[str, Node] | None = None  # None: a method
    value: tuple[Any, ...] | None = None

    def json(self) -> Json:
        out: Json = {"FULL_PATH": self.path}
        if self.description:
            out["DESCRIPTION"] = self.description
        out.update(self.attributes)
        if self.value is not None:
            out.update(TYPE="".join(tag_for(v) for v in self.value), ACCESS=READ, VALUE=json_values(self.value))
        if self.children is not None:
            out.setdefault("ACCESS", NO_VALUE)
            out["CONTENTS"] = {name: child.json() for name, child in self.children.items()}
        return out

    def attribute(self, name: str) -> Json:
        """`?NAME`: {"NAME": value}, or {} when the node has no such attribute (the proposal's answer)."""
        whole = self.json()
        return {name: whole[name]} if name in whole else {}


def _child(path: str, name: str) -> str:
    return f"{path.rstrip('/')}/{name}"


def _tag(param: Param) -> str:
    """A request argument's OSC type: BRIDGE-API.md writes booleans as `i` (0/1), which the bridge takes (T/F too)."""
    if isinstance(param, Str):
        return "s"
    if isinstance(param, Int | Bool):
        return "i"
    if isinstance(param, Float):
        return "f"
    raise TypeError(f"no OSC type for {type(param).__name__} (add it to oscquery._tag)")


def _range(param: Param) -> Json:
    if isinstance(param, Str):
        return {"VALS": list(param.choices)} if param.choices else {}
    if isinstance(param, Bool):
        return {"VALS": [0, 1]}
    if isinstance(param, Int | Float):
        return {key: bound for key, bound in (("MIN", param.min), ("MAX", param.max)) if bound is not None}
    return {}


def _argument(param: Param) -> str:
    """`track_number i (1 to 100000)`, `on i (0/1)`, `frequency f (1 to 24000, default 137.0)`."""
    notes: list[str] = []
    if isinstance(param, Str):
        notes += [", ".join(param.choices)] if param.choices else []
        notes += [f"{param.prefix}n"] if isinstance(param, PluginId) else []
    elif isinstance(param, Bool):
        notes.append("0/1")
    elif isinstance(param, Int | Float):
        if param.min is not None and param.max is not None:
            notes.append(f"{param.min:g} to {param.max:g}")
        elif param.min is not None:
            notes.append(f"at least {param.min:g}")
    if param.optional:
        notes.append(f"default {int(param.default) if isinstance(param, Bool) else param.default!r}")
    return f"{param.name} {_tag(param)}" + (f" ({', '.join(notes)})" if notes else "")


def _summary(endpoint: Endpoint) -> str:
    text = REQUESTS.get(endpoint.address)
    if text is None:
        doc = (endpoint.func.__doc__ or "").strip()
        text = " ".join(doc.split(". ")[0].split()) + ("." if doc else "")
    return text


def request_node(endpoint: Endpoint) -> Node:
    """A `/bridge/*` request: the request id `s`, then each argument; shorter forms when the last are optional."""
    tags = "s" + "".join(_tag(param) for param in endpoint.params)
    ranges: list[Json] = [{}, *(_range(param) for param in endpoint.params)]
    arguments = ", ".join(_argument(param) for param in endpoint.params) or "none"
    attributes: Json = {"TYPE": tags, "ACCESS": WRITE, "RANGE": ranges}
    required = 1 + sum(not param.optional for param in endpoint.params)
    if required < len(tags):
        attributes["OVERLOADS"] = [{"TYPE": tags[:n], "RANGE": ranges[:n]} for n in range(required, len(tags))]
    description = f"{_summary(endpoint)} Arguments after the request id: {arguments}.".strip()
    return Node(endpoint.address, description, attributes)


def message_node(address: str, message: Message, access: int) -> Node:
    attributes: Json = {"ACCESS": access}
    if message.tags[0]:  # a message without arguments has no TYPE (the proposal's rule)
        attributes["TYPE"] = message.tags[0]
    if len(message.tags) > 1:
        attributes["OVERLOADS"] = [{"TYPE": tags} for tags in message.tags[1:]]
    return Node(address, message.description, attributes)


def _tree(leaves: list[Node]) -> Node:
    """The containers above `leaves`, described from oscquery_text.CONTAINERS."""
    nested: dict[str, Any] = {}
    for leaf in leaves:
        *parents, name = leaf.path.strip("/").split("/")
        level = nested
        for part in parents:
            level = level.setdefault(part, {})
        level[name] = leaf

    def build(path: str, level: dict[str, Any]) -> Node:
        children = {name: item if isinstance(item, Node) else build(_child(path, name), item)
                    for name, item in sorted(level.items())}
        return Node(path, CONTAINERS.get(path, ""), children=children)

    return build("/", nested)


class Namespace:
    """The tree, the host's HOST_INFO, and the answer to an OSCQuery GET."""

    def __init__(self, endpoints: dict[str, Endpoint], name: str, osc: tuple[str, int]) -> None:
        self._endpoints = endpoints
        leaves = [request_node(endpoint) for endpoint in endpoints.values()]
        leaves += [message_node(address, message, WRITE) for address, message in PLUGIN_SENDS.items()]
        leaves += [message_node(address, message, NO_VALUE) for address, message in (BRIDGE_SENDS | EVENTS).items()]
        self.root = _tree(leaves)
        host, port = osc
        # The OSC server is on the same address as this HTTP server unless it says otherwise; on every interface it
        # is reached at whatever address the client used.
        self.host_info: Json = {"NAME": name, "OSC_PORT": port, "OSC_TRANSPORT": "UDP", "EXTENSIONS": EXTENSIONS}
        if host not in ("0.0.0.0", "::", ""):
            self.host_info["OSC_IP"] = host

    @property
    def roots(self) -> list[str]:
        """The first part of every address (the HTTP routes to serve)."""
        return list(self.root.children or {})

    async def _state(self, peer: WebPeer) -> Node:
        """/bridge/state as it is now."""
        values = {name: Node(_child(STATE, name), description,
                             value=tuple(await perform(self._endpoints[address], [], peer)))
                  for name, (address, description) in STATE_VALUES.items()}
        levels: Rows = await perform(self._endpoints[LEVELS], [], peer)
        levels_path = _child(STATE, "levels")
        tracks = {row[0]: Node(_child(levels_path, row[0]), f"Levels of {row[0]}.", value=tuple(row[1:]))
                  for row in levels.rows}
        values["levels"] = Node(levels_path, CONTAINERS[levels_path], children=tracks)
        return Node(STATE, CONTAINERS[STATE], children=dict(sorted(values.items())))

    async def values(self, peer: WebPeer) -> dict[str, tuple[Any, ...]]:
        """Every value under /bridge/state as it is now, by address (what LISTEN streams)."""
        found: dict[str, tuple[Any, ...]] = {}

        def collect(node: Node) -> None:
            if node.value is not None:
                found[node.path] = node.value
            for child in (node.children or {}).values():
                collect(child)

        collect(await self._state(peer))
        return found

    async def _live_root(self, peer: WebPeer) -> Node:
        """The tree with /bridge/state read now."""
        assert self.root.children is not None
        bridge = self.root.children["bridge"]
        assert bridge.children is not None
        bridge = replace(bridge, children=dict(sorted({**bridge.children, "state": await self._state(peer)}.items())))
        return replace(self.root, children={**self.root.children, "bridge": bridge})

    async def answer(self, path: str, query: str, peer: WebPeer) -> tuple[int, Json | None]:
        """An HTTP status and JSON body for GET `path?query` (the proposal: `?HOST_INFO` whatever the path; a node
        with everything under it; `?ATTRIBUTE` that attribute alone; 404 for no such node; 400 for an attribute
        this server does not know; 204 for the VALUE of a node that has none)."""
        if query == "HOST_INFO":
            return 200, self.host_info
        if query and query not in ATTRIBUTES:
            known = ", ".join(["HOST_INFO", *sorted(ATTRIBUTES)])
            return 400, {"error": f"unknown attribute {query[:40]!r}; known: {known}"}
        node: Node | None = await self._live_root(peer)
        for part in path.strip("/").split("/") if path.strip("/") else []:
            node = (node.children or {}).get(part) if node is not None else None
        if node is None:
            return 404, {"error": f"no OSC address or container {path[:100]!r}"}
        if not query:
            return 200, node.json()
        if query == "VALUE" and node.value is None:
            return 204, None
        return 200, node.attribute(query)


def service_name(hostname: str) -> str:
    """`oscbridge on studio-mac`: the NAME in HOST_INFO and the mDNS instance name (at most 63 bytes)."""
    return f"oscbridge on {hostname.split('.')[0]}"[:63]

