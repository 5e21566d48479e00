"""`serve --advertise`: announces the bridge over mDNS (DNS-SD) with python-zeroconf, so that OSC tools find it
without an address typed in (docs/oscquery.md): the OSCQuery server as `_oscjson._tcp` (the HTTP port) and the
OSC port as `_osc._udp`.

Only the interfaces the bridge listens on hear the announcement. On 127.0.0.1 (the default) it goes out on the
loopback interface only, with 127.0.0.1 in it: a bridge that serves this machine alone is not announced to the
network. On 0.0.0.0 it goes out on every interface with the machine's IPv4 addresses; on one address, on that one.
The records name a host of their own (`oscbridge-<host>.local.`), never the machine's own name, which the
system's mDNS responder owns: announcing other addresses for it would be a name conflict on the network.

Registering waits for mDNS probing (the name must be unique on the link: 1.2 s measured on loopback), so it runs
in a task and the bridge serves meanwhile. An announcement that cannot be made (no
multicast, an IPv6-only host) is logged and leaves the bridge running: it is a convenience, not a service.

This module imports zeroconf; the daemon imports it only when `advertise` is set, so `serve` without the flag never
loads it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import ifaddr  # zeroconf's own dependency, for the machine's addresses
from zeroconf import Error as ZeroconfError
from zeroconf import InterfaceChoice, IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from oscbridge.config import Settings
from oscbridge.logs import get_logger
from oscbridge.tasks import cancel_and_wait
from oscbridge.web.guard import advertised_name
from oscbridge.web.oscquery import service_name

log = get_logger("oscbridge.web.advertise")

OSCQUERY_SERVICE = "_oscjson._tcp.local."
OSC_SERVICE = "_osc._udp.local."
STOP_TIMEOUT = 2.0  # the goodbye packets take about 0.25 s


def where(host: str) -> tuple[list[str] | InterfaceChoice, list[str]]:
    """The interfaces to announce on and the addresses to announce, for a bridge listening on `host` (no
    addresses: it cannot be announced)."""
    if host in ("0.0.0.0", ""):
        addresses = [str(ip.ip) for adapter in ifaddr.get_adapters() for ip in adapter.ips
                     if ip.is_IPv4 and not ipaddress.ip_address(str(ip.ip)).is_loopback]
        return InterfaceChoice.All, addresses
    address = "127.0.0.1" if host == "localhost" else host
    try:
        if ipaddress.ip_address(address).version == 4:
            return [address], [address]
    except ValueError:  # a name, resolved by the system when the bridge bound it
        pass
    return [], []


def services(settings: Settings, addresses: list[str]) -> list[ServiceInfo]:
    """What is announced: the OSCQuery server (when the web port is on) and the OSC port."""
    hostname = socket.gethostname().split(".")[0].lower() or "localhost"
    name = service_name(hostname)
    packed = [socket.inet_aton(address) for address in addresses]
    server = advertised_name() + "."
    ports = [(OSCQUERY_SERVICE, settings.http_port), (OSC_SERVICE, settings.osc_port)]
    return [ServiceInfo(kind, f"{name}.{kind}", port=port, addresses=packed, server=server)
            for kind, port in ports if port]


class Advertiser:
    """The bridge's mDNS announcements, from `start()` to `stop()`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._zeroconf: AsyncZeroconf | None = None
        self._task: asyncio.Task[None] | None = None
        self.announced: list[ServiceInfo] = []

    def start(self) -> None:
        """Starts announcing, in a task (mDNS probing takes a second)."""
        self._task = asyncio.get_running_loop().create_task(self._register(), name="oscbridge-advertise")

    async def _register(self) -> None:
        settings = self._settings
        interfaces, addresses = where(settings.host)
        if not addresses:
            log.warning("not_advertised", host=settings.host,
                        reason="no IPv4 address to announce for this host; advertising works on 127.0.0.1, "
                               "0.0.0.0 or one IPv4 address")
            return
        if settings.http_port == 0:
            log.warning("oscquery_not_advertised", reason="the web port is off (http_port 0), and OSCQuery is "
                                                          "served there; only _osc._udp is announced")
        try:
            zeroconf = self._zeroconf = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
            infos = services(settings, addresses)
            # Probed together (one probing delay, not one per service). A name another bridge on the link holds
            # already becomes "... (2)".
            await asyncio.gather(*(zeroconf.async_register_service(info, allow_name_change=True) for info in infos))
        except (OSError, ZeroconfError) as exc:
            log.warning("advertise_failed", error=f"{type(exc).__name__}: {exc}"[:300],
                        hint="mDNS needs multicast on the interfaces the bridge listens on (UDP port 5353)")
            return
        self.announced = infos
        log.info("advertised", services=[info.name for info in self.announced], addresses=addresses,
                 osc_port=settings.osc_port, http_port=settings.http_port or None)

    async def stop(self) -> None:
        """Says goodbye (browsers drop the services at once) and closes the mDNS sockets, within `STOP_TIMEOUT`."""
        await cancel_and_wait(self._task)
        if self._zeroconf is not None:
            try:
                await asyncio.wait_for(self._zeroconf.async_close(), STOP_TIMEOUT)
            except (TimeoutError, OSError, ZeroconfError) as exc:
                log.warning("advertise_stop_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            self._zeroconf = None
