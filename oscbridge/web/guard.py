"""Who may ask the web server what: the Host and Origin checks and the token.

* **Host** (DNS rebinding): a page of evil.example whose name is re-pointed at 127.0.0.1 reaches our port with
  `Host: evil.example`; only the bridge's own names for itself are answered (127.0.0.1, localhost and [::1] when
  it listens on loopback; the address it listens on otherwise; any IP address or this machine's name when it
  listens on every interface).
* **Origin**: a browser names the page that sends a POST or opens a WebSocket; one from another origin is
  refused. Requests without an Origin (curl, scripts) pass this check and still need the token to change things.
* **Token**: reading the plugins, levels, mapping and health is open to any local page of ours; everything else
  (changes, calibration, the traffic tail, conversations) needs the per-installation token (`web.token`).
"""

from __future__ import annotations

import hmac
import ipaddress
import socket

# Requests a page may make without the token: state that says nothing private and changes nothing.
OPEN_REQUESTS = frozenset({
    "/bridge/ping", "/bridge/status", "/bridge/stats", "/bridge/storage", "/bridge/health", "/bridge/plugins",
    "/bridge/levels", "/bridge/mapping/list", "/bridge/mapping/track", "/bridge/project/current",
})
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def advertised_name() -> str:
    """The host name `--advertise` announces (`oscbridge-<host>.local`): its own, not the machine's, which the
    system's mDNS responder owns. A client that found the bridge by it may use it in Host."""
    return f"oscbridge-{socket.gethostname().split('.')[0].lower() or 'localhost'}.local"


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


class Guard:
    def __init__(self, host: str, port: int, token: str) -> None:
        self.port = port
        self._token = token.encode()
        self._any_interface = host in ("0.0.0.0", "::", "")
        if host in ("127.0.0.1", "localhost", "::1"):
            names = list(LOOPBACK_NAMES)
        elif self._any_interface:
            names = [*LOOPBACK_NAMES, socket.gethostname().lower(), socket.gethostname().lower() + ".local",
                     advertised_name()]
        else:
            names = [f"[{host}]" if ":" in host else host]
        self._hosts = {f"{name}:{port}" for name in names} | ({*names} if port == 80 else set())
        self.origins = {f"http://{h}" for h in self._hosts}

    def host_allowed(self, host: str | None) -> bool:
        """Whether a request's Host header names this bridge."""
        if not host:
            return False
        host = host.lower()
        if host in self._hosts:
            return True
        if self._any_interface:
            name, _, port = host.rpartition(":")
            return port == str(self.port) and _is_ip(name)
        return False

    def origin_allowed(self, origin: str | None) -> bool:
        """Whether a browser's Origin header is one of this bridge's pages (no Origin: not a browser page)."""
        if origin is None:
            return True
        origin = origin.lower()
        if origin in self.origins:
            return True
        return self._any_interface and origin.startswith("http://") and self.host_allowed(origin[len("http://"):])

    def authorized(self, presented: str | None) -> bool:
        """Whether `presented` is the token (compared in constant time)."""
        return presented is not None and hmac.compare_digest(presented.encode(), self._token)

    @staticmethod
    def needs_token(address: str) -> bool:
        return address not in OPEN_REQUESTS
