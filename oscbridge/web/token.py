"""The per-installation web token: a page that presents it may change state and read conversations.

It lives in `<data_dir>/web-token`, 0600, made at the first start. Only the user who runs the bridge can read it;
`oscbridge ui` reads it and hands it to the browser in the URL's fragment (`#token=...`), which browsers never
send to a server, so it appears in no request line, log or Referer. Another local web page cannot read the file
or the fragment of our page, so it cannot steer the bridge (docs/web.md, Security).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from oscbridge.private import write_private_file

TOKEN_FILE = "web-token"
TOKEN_BYTES = 32


def token_path(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE


def read_token(data_dir: Path) -> str | None:
    """The token, or None when the bridge has not made one yet (or the file is unreadable or empty)."""
    try:
        text = token_path(data_dir).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def load_or_create_token(data_dir: Path) -> str:
    """The token, made (and written 0600) when there is none yet. The data dir exists (the bridge made it)."""
    existing = read_token(data_dir)
    if existing is not None:
        return existing
    token = secrets.token_urlsafe(TOKEN_BYTES)
    write_private_file(token_path(data_dir), (token + "\n").encode("ascii"))  # a crash never leaves a half token
    return token
