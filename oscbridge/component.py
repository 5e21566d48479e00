"""The shape of a part of the daemon that plugs into the bridge (the plugin hub, the memory API, ...).

A component brings request handlers (objects whose methods carry `@request`), the write kinds it submits
(registered before the writer replays the spool, so operations of a previous run still apply), handlers for
plugin addresses (`/aiplayer/*`), and a start/stop pair run after the sockets are attached and before the
writer drains at shutdown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from oscbridge.router import PluginHandler
from oscbridge.store.writer import OpKind


class Component(Protocol):
    def apis(self) -> Sequence[object]: ...

    def op_kinds(self) -> Sequence[OpKind]: ...

    def plugin_handlers(self) -> dict[str, PluginHandler]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
