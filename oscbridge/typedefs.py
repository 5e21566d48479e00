"""The shapes that cross module boundaries: addresses, plugin states, error codes and the contract's limits.

Defined once here (aiohttp keeps its shared aliases in `typedefs.py` the same way), so that the transport, the
router, the request handlers, the plugin hub and the store agree without importing one another.
"""

from __future__ import annotations

from enum import StrEnum

Addr = tuple[str, int]
"""An IPv4 (host, port) as asyncio gives it."""


class PluginState(StrEnum):
    """Where a plugin instance is in the protocol (BRIDGE-API.md `/bridge/plugins`); stored as its value."""

    REQUESTING = "requesting"
    ASSIGNED = "assigned"
    BOUND = "bound"
    IDENTIFIED = "identified"
    FAILED = "failed"
    GONE = "gone"


LIVE_STATES = frozenset({PluginState.ASSIGNED, PluginState.BOUND, PluginState.IDENTIFIED})


class ErrorCode(StrEnum):
    """The error codes of BRIDGE-API.md."""

    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    TOO_LARGE = "too_large"
    INTERNAL = "internal"


class BridgeError(Exception):
    """An error reply: `code` is one of BRIDGE-API.md's codes, `message` says in words what was wrong. Raised by
    request handlers and by the domain code they call; the router turns it into `[req_id, "error", code, message]`.
    """

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = ErrorCode(code)
        self.message = message


def bad_request(message: str) -> BridgeError:
    return BridgeError(ErrorCode.BAD_REQUEST, message)


# Limits of the contract (BRIDGE-API.md) and of the plugins (aiplayer-osc-protocol.md), each in one place.
REQ_ID_MAX = 64  # characters of a request id
MAX_UDP_REPLY = 8192  # bytes; macOS refuses datagrams over 9216, so replies stay clearly below
PLUGIN_ID_PREFIX = "TR"  # the plugin accepts only track ids that start with it (case-sensitive)
PLUGIN_ID_MAX = 50  # characters of a track id (TRn); also a CHECK in the schema
INSTANCE_ID_MAX = 64  # characters of a plugin's tempID (the real one has 32); plugin_instances.instance_id
