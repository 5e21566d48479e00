"""Where the web page is, for the ready line, `oscbridge ui` and the doctor."""

from __future__ import annotations

from oscbridge.config import Settings
from oscbridge.osc.transport import local_target


def web_url(settings: Settings) -> str | None:
    """`http://127.0.0.1:8998/` (a page on every interface is shown on loopback), or None when it is off."""
    if settings.http_port == 0:
        return None
    host = local_target(settings.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.http_port}/"
