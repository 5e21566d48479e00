"""Argument specs for /bridge/* requests: count, type and range checks with messages that name the argument.

BRIDGE-API.md: whole numbers may come as i, h, f or d (a float must be whole); booleans as T/F or i 0/1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeVar

from oscbridge.typedefs import PLUGIN_ID_MAX, PLUGIN_ID_MIN, PLUGIN_ID_PREFIX, bad_request, plugin_id_problem

_NO_DEFAULT = object()
N = TypeVar("N", int, float)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "nil"
    return type(value).__name__


@dataclass(frozen=True)
class Param:
    """Base spec: a named positional argument, optional when it has a default."""

    name: str
    default: Any = _NO_DEFAULT

    @property
    def optional(self) -> bool:
        return self.default is not _NO_DEFAULT

    def convert(self, value: Any) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Str(Param):
    max_len: int = 255
    min_len: int = 0
    choices: tuple[str, ...] = ()

    def convert(self, value: Any) -> str:
        if not isinstance(value, str):
            raise bad_request(f"{self.name} must be a string, got {_type_name(value)}")
        if len(value) > self.max_len:
            raise bad_request(f"{self.name} is {len(value)} characters long; at most {self.max_len} are allowed")
        if len(value) < self.min_len:
            raise bad_request(f"{self.name} must not be empty" if self.min_len == 1 else
                              f"{self.name} needs at least {self.min_len} characters")
        if self.choices and value not in self.choices:
            raise bad_request(f"{self.name} must be one of {', '.join(self.choices)}; got {value!r}")
        return value


def _in_range(name: str, number: N, low: N | None, high: N | None) -> N:
    if low is not None and number < low:
        raise bad_request(f"{name} must be at least {low}, got {number}")
    if high is not None and number > high:
        raise bad_request(f"{name} must be at most {high}, got {number}")
    return number


@dataclass(frozen=True)
class Int(Param):
    min: int | None = None
    max: int | None = None

    def convert(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad_request(f"{self.name} must be a whole number, got {_type_name(value)}")
        if isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                raise bad_request(f"{self.name} must be a whole number, got {value!r}")
            value = int(value)
        return _in_range(self.name, int(value), self.min, self.max)


@dataclass(frozen=True)
class Float(Param):
    min: float | None = None
    max: float | None = None

    def convert(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad_request(f"{self.name} must be a number, got {_type_name(value)}")
        number = float(value)
        if not math.isfinite(number):
            raise bad_request(f"{self.name} must be a finite number")
        return _in_range(self.name, number, self.min, self.max)


@dataclass(frozen=True)
class Bool(Param):
    def convert(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise bad_request(f"{self.name} must be T/F or 0/1, got {value!r}")


@dataclass(frozen=True)
class PluginId(Str):
    """A track id, checked by `plugin_id_problem`, the rule the plugin hub and the SQLite import apply too. The
    length and prefix fields only describe it (OSCQuery shows them)."""

    max_len: int = PLUGIN_ID_MAX
    min_len: int = PLUGIN_ID_MIN
    prefix: str = PLUGIN_ID_PREFIX

    def convert(self, value: Any) -> str:
        if not isinstance(value, str):
            raise bad_request(f"{self.name} must be a string, got {_type_name(value)}")
        problem = plugin_id_problem(value, self.name)
        if problem is not None:
            raise bad_request(problem)
        return value


def plugin_id(name: str = "plugin_id") -> PluginId:
    """A track id as the plugins accept it: a string starting with 'TR' (case-sensitive)."""
    return PluginId(name)


def convert_args(params: tuple[Param, ...], args: list[Any]) -> list[Any]:
    """Checks the count and converts each argument; fills defaults of missing optional ones."""
    required = sum(1 for p in params if not p.optional)
    if len(args) < required or len(args) > len(params):
        names = ", ".join(p.name + ("?" if p.optional else "") for p in params) or "nothing"
        expected = str(len(params)) if required == len(params) else f"{required} to {len(params)}"
        raise bad_request(f"expected {expected} argument(s) after the request id ({names}), got {len(args)}")
    out = [p.convert(v) for p, v in zip(params, args, strict=False)]
    out.extend(p.default for p in params[len(args):])
    return out
