"""Text the bridge can take from JSON: the one check shared by the web page's `/api/request` and the MCP tools.

An OSC string ends at its first NUL and is UTF-8; PostgreSQL text holds no NUL. JSON can carry both a NUL
(`\\u0000`) and half a surrogate pair (`\\ud800`), which Python keeps in a `str` that cannot be encoded: taken in,
such a text would be acknowledged and then fail in the spool's UTF-8 encode or in PostgreSQL. So what arrives as
JSON is checked here, before anything is sent or stored. (Text decoded from OSC needs no check: its decoder
already refuses bytes that are not UTF-8.)
"""

from __future__ import annotations

from collections.abc import Iterable

WHY = ("a NUL character or an unpaired surrogate (\\ud800-\\udfff), which OSC cannot carry and PostgreSQL cannot "
       "store")


def storable(text: str) -> bool:
    """True when `text` has no NUL and encodes as UTF-8 (no unpaired surrogate)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def first_unstorable(values: Iterable[object]) -> int | None:
    """The index of the first text among `values` that is not `storable`, or None (other values are not texts)."""
    return next((n for n, value in enumerate(values) if isinstance(value, str) and not storable(value)), None)
