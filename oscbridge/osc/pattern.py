"""OSC 1.0 address patterns (`*`, `?`, `[a-z]`, `[!abc]`, `{foo,bar}`), matched in time linear in their size.

Subscribers send patterns (`/bridge/subscribe`), so a pattern is outside input. Translated to a regular
expression, `*` becomes `[^/]*`, and a pattern of many stars backtracks exponentially on an address it does not
match: `/aiplayer/` + 14 stars + `x` took 61 ms against `/aiplayer/telemetry`, each two more stars four times as
long, so one subscription could stop the bridge. Here each part of the address is matched against the pattern's
tokens by tracking the set of positions reachable after each token: at most (tokens x characters) steps.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class _Class:
    """`[abc]`, `[a-z]`, `[!...]`: one character in (or, negated, not in) the set."""

    chars: frozenset[str]
    ranges: tuple[tuple[str, str], ...]
    negate: bool

    def accepts(self, ch: str) -> bool:
        inside = ch in self.chars or any(low <= ch <= high for low, high in self.ranges)
        return inside != self.negate


def _parse_class(body: str) -> _Class:
    negate = body.startswith("!")
    body = body[1:] if negate else body
    chars: set[str] = set()
    ranges: list[tuple[str, str]] = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            ranges.append((body[i], body[i + 2]))
            i += 3
        else:
            chars.add(body[i])
            i += 1
    return _Class(frozenset(chars), tuple(ranges), negate)


class _Star:
    """`*`: any run of characters within the part."""


STAR = _Star()
# A literal run of text, a character class, `{alternatives}`, None for `?`, or STAR.
Token = str | _Class | tuple[str, ...] | _Star | None


def _tokens(part: str, offset: int) -> list[Token]:
    out: list[Token] = []
    i, n = 0, len(part)
    while i < n:
        ch = part[i]
        if ch == "*":
            if not out or out[-1] is not STAR:  # `**` is `*`
                out.append(STAR)
        elif ch == "?":
            out.append(None)
        elif ch == "[":
            end = part.find("]", i + 1)
            if end < 0:
                raise ValueError(f"unclosed '[' at character {offset + i}")
            out.append(_parse_class(part[i + 1 : end]))
            i = end
        elif ch == "{":
            end = part.find("}", i + 1)
            if end < 0:
                raise ValueError(f"unclosed '{{' at character {offset + i}")
            out.append(tuple(part[i + 1 : end].split(",")))
            i = end
        elif out and isinstance(out[-1], str):
            out[-1] = out[-1] + ch
        else:
            out.append(ch)
        i += 1
    return out


def _match_part(tokens: list[Token], text: str) -> bool:
    reachable = {0}
    size = len(text)
    for token in tokens:
        if not reachable:
            return False
        if isinstance(token, _Star):
            reachable = set(range(min(reachable), size + 1))
        elif token is None:
            reachable = {i + 1 for i in reachable if i < size}
        elif isinstance(token, str):
            reachable = {i + len(token) for i in reachable if text.startswith(token, i)}
        elif isinstance(token, _Class):
            reachable = {i + 1 for i in reachable if i < size and token.accepts(text[i])}
        else:
            reachable = {i + len(option) for i in reachable for option in token if text.startswith(option, i)}
    return size in reachable


class AddressPattern:
    """One compiled pattern. Raises ValueError for an unclosed `[` or `{`."""

    __slots__ = ("_parts", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        parts = text.split("/")
        offsets = [sum(len(p) + 1 for p in parts[:k]) for k in range(len(parts))]
        self._parts = [_tokens(part, offset) for part, offset in zip(parts, offsets, strict=True)]

    def matches(self, address: str) -> bool:
        parts = address.split("/")
        return len(parts) == len(self._parts) and all(
            _match_part(tokens, part) for tokens, part in zip(self._parts, parts, strict=True))
