"""Forwarded headers, believed only from the proxies the operator named (README "Security").

``X-Forwarded-For``, ``-Proto``, ``-Host`` and ``-Port`` decide who a request comes from (the
failed-login throttle counts per address), its scheme (the cookie's ``Secure`` flag, the
origin check) and its host (the host allow-list). Anyone can send them, so they count only
when the TCP peer is a proxy in ``TETHER_TRUSTED_PROXIES`` (addresses and networks, as
gunicorn's ``forwarded_allow_ips`` and Home Assistant's ``trusted_proxies``). From any other
peer they are removed before the app sees the request, and logged once per peer.

The client address is the rightmost ``X-Forwarded-For`` entry that is not itself a trusted
proxy (each proxy appends the address it saw: ``client, proxy1``), so a client cannot name
itself by sending the header. Scheme, host and port are taken from the last value, the one
the nearest proxy set (werkzeug's ``ProxyFix`` applies them).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix

from tether.config import IPNetwork

logger = logging.getLogger(__name__)

#: The headers a proxy sets, as WSGI environ keys.
FORWARDED_KEYS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
                  "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_PREFIX")
#: Untrusted peers remembered so that each is logged once; past this many, logging stops.
MAX_LOGGED_PEERS = 1000


class TrustedProxies:
    """WSGI middleware: apply forwarded headers from trusted peers, drop everyone else's.

    :param app: the WSGI application behind it.
    :param networks: the trusted proxies' networks (``TETHER_TRUSTED_PROXIES``); empty
        trusts nobody, and then every forwarded header is dropped.
    """

    def __init__(self, app: Any, networks: Iterable[IPNetwork]) -> None:
        self.app = app
        self.networks = tuple(networks)
        # Scheme, host and port from the nearest proxy; the address is worked out here.
        self._apply = ProxyFix(app, x_for=0, x_proto=1, x_host=1, x_port=1, x_prefix=0)
        self._logged: set[str] = set()

    def trusts(self, address: str | None) -> bool:
        """True when ``address`` (an IP address, IPv4-mapped IPv6 included) lies in one of
        the trusted networks; False for anything else, a malformed address included."""
        if not address or not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    def client_address(self, forwarded_for: str | None, peer: str) -> str:
        """The client's address: the rightmost ``X-Forwarded-For`` hop that is not a trusted
        proxy; the leftmost when all are; ``peer`` when the header is absent or empty."""
        hops = [hop.strip() for hop in (forwarded_for or "").split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else peer

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        peer = environ.get("REMOTE_ADDR") or ""
        if self.trusts(peer):
            environ["REMOTE_ADDR"] = self.client_address(
                environ.get("HTTP_X_FORWARDED_FOR"), peer)
            return self._apply(environ, start_response)
        sent = [key for key in FORWARDED_KEYS if key in environ]
        if sent:
            for key in sent:
                del environ[key]
            self._log_once(peer, sent)
        return self.app(environ, start_response)

    def _log_once(self, peer: str, sent: list[str]) -> None:
        if peer in self._logged or len(self._logged) >= MAX_LOGGED_PEERS:
            return
        self._logged.add(peer)
        names = ", ".join(key[5:].replace("_", "-").title() for key in sent)
        logger.warning("ignored %s from %s: not a trusted proxy (TETHER_TRUSTED_PROXIES); "
                       "logged once per peer", names, peer)
