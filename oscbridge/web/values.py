"""OSC values to JSON: what a request returns, as the page reads it."""

from __future__ import annotations

import base64
import math
from typing import Any


def json_value(value: Any) -> Any:
    """Text, whole numbers and booleans as they are; a float that JSON cannot hold (NaN, infinity) as null; a blob
    as {"blob": base64}; anything else as its text."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bytes, bytearray)):
        return {"blob": base64.b64encode(value).decode("ascii")}
    return str(value)


def json_values(values: tuple[Any, ...] | list[Any]) -> list[Any]:
    return [json_value(v) for v in values]
