"""Keeping passwords out of logs, reports and files: the one place that knows where a URL can hold one.

A libpq URL can carry a password in its user info (`postgresql://user:pw@host/db`, even typed without
percent-encoding, so with '@', '/', '?' or '#' in it) or as a `password=` / `sslpassword=` query option. Three
needs share that parsing: `redact_url` masks it (`***`) for people to read, `strip_password` removes it (the
LaunchAgent's plist must not hold it, ~/.pgpass should), and `scrub` removes it from a driver's error text.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

SECRET_QUERY_KEYS = frozenset({"password", "sslpassword"})
MASK = "***"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
# What may follow the '@' that ends a URL's user info: a host list, then the path, query or end.
_HOST_PART = re.compile(r"[A-Za-z0-9.\-_~%\[\]:,]*(?=[/?#]|$)")


def _split_userinfo(rest: str) -> tuple[str | None, str]:
    """Splits 'user:pw@host/db?x' into ('user:pw', 'host/db?x'); (None, rest) when there is no user info.

    The strict split (the authority ends at the first '/', '?' or '#', as in urlsplit and so in asyncpg) is
    tried first. A password typed without percent-encoding can hold '/', '?' or '#', which pushes its '@' past
    that point; the lenient pass still finds it, so such a password cannot leak either.
    """
    end = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if i != -1:
            end = min(end, i)
    authority = rest[:end]
    if "@" in authority:
        userinfo, _, hosts = authority.rpartition("@")
        return userinfo, hosts + rest[end:]
    for at in reversed([m.start() for m in re.finditer("@", rest)]):
        userinfo, after = rest[:at], rest[at + 1 :]
        if _HOST_PART.match(after) and re.fullmatch(r"[^/?#@:]*:.*", userinfo, re.S):
            return userinfo, after
    return None, rest


def _rewrite(url: str, mask: str | None) -> tuple[str, bool, list[str]]:
    """The URL with its secrets masked (`mask`) or removed (None); whether there was one; the secrets found."""
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return url, False, []
    secrets: list[str] = []
    userinfo, remainder = _split_userinfo(rest)
    if userinfo is not None:
        user, colon, password = userinfo.partition(":")
        if colon and password:
            secrets.append(password)
        if mask is not None and colon and password:
            rest = f"{user}:{mask}@{remainder}"
        else:
            rest = f"{user}@{remainder}" if user else remainder
    head, qmark, query = rest.partition("?")
    if qmark:
        query, hashmark, fragment = query.partition("#")
        kept = []
        for pair in query.split("&"):
            key, _, value = pair.partition("=")
            if key.strip().lower() in SECRET_QUERY_KEYS:
                if value:
                    secrets.append(value)
                if mask is None:
                    continue
                pair = f"{key}={mask}"
            kept.append(pair)
        rest = head + ("?" + "&".join(kept) if kept else "") + hashmark + fragment
    return f"{scheme}://{rest}", bool(secrets), secrets


def redact_url(url: str) -> str:
    """The URL with any password shown as `***`, for logs, reports and `oscbridge db url`."""
    return _rewrite(url, MASK)[0]


def strip_password(url: str) -> tuple[str, bool]:
    """The URL without its password, and whether one was removed. Anything that is not a `scheme://` URL comes
    back unchanged; the rest of the URL is kept byte for byte (`sslrootcert=/path/ca.pem` survives)."""
    stripped, removed, _ = _rewrite(url, None)
    return stripped, removed


def scrub(text: str, url: str) -> str:
    """`text` (a driver's error message, say) with the URL's password, as typed or percent-decoded, masked."""
    for secret in _rewrite(url, MASK)[2]:
        for form in {secret, unquote(secret)}:
            text = text.replace(form, MASK)
    return text
