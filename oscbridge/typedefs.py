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
PLUGIN_ID_MIN = 3  # "TR" and a track number: the app makes TRn with n from 1, so a bare "TR" names no track
INSTANCE_ID_MAX = 64  # characters of a plugin's tempID (the real one has 32); plugin_instances.instance_id


def plugin_id_problem(text: str, name: str = "plugin_id") -> str | None:
    """None when `text` is a track id ("plugin id"), else what is wrong with it, in words that start with `name`.

    The one rule for the request handlers, the plugin hub's telemetry and the SQLite import: the schema's CHECK
    (`plugin_id LIKE 'TR%' AND char_length(plugin_id) <= 50`) plus at least one character after "TR", which every
    id the real app makes has (TR1, TR2, ...) and which /bridge/* requests have always required.
    """
    if len(text) > PLUGIN_ID_MAX:
        return f"{name} is {len(text)} characters long; at most {PLUGIN_ID_MAX} are allowed"
    if not text.startswith(PLUGIN_ID_PREFIX):
        return f"{name} must start with {PLUGIN_ID_PREFIX!r}; got {text[:40]!r}"
    if len(text) < PLUGIN_ID_MIN:
        return f"{name} needs at least {PLUGIN_ID_MIN} characters: {PLUGIN_ID_PREFIX!r} and a track number"
    return None
