"""JSON from outside the process (OSC arguments, HTTP bodies, WebSocket commands, notifications, backups,
recordings, Ollama's answers), parsed so that every refusal is a `json.JSONDecodeError`.

Python's json module recurses once per nesting level: a few thousand `[` (a 4 KiB WebSocket command, a debug
payload in one datagram) raise RecursionError, which no caller catches as bad input and which turned into an
`internal` reply with a traceback, or a failed request. Found by the seeded fuzzing of the OSCQuery commands.
"""

from __future__ import annotations

import json
from typing import Any


def parse_json(text: str | bytes | bytearray) -> Any:
    """`json.loads(text)`, with input nested too deeply refused as a JSONDecodeError (a ValueError) like any other
    malformed JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        shown = text if isinstance(text, str) else "(bytes)"
        raise json.JSONDecodeError("nested too deeply", shown, 0) from None
