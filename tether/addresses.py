"""Where a browser can reach this server, and the login URLs to print at start.

A server bound to ``0.0.0.0`` (or ``::``) is reachable at every address of this machine's
interfaces; a phone on the same network needs the LAN address, not ``127.0.0.1``. Only the
addresses the Host allow-list accepts are printed: a URL that would get 403
``host_not_allowed`` is no login URL. The interfaces are read with ``ifaddr``; the QR code is
drawn with ``segno`` (a phone's camera opens the URL).
"""

from __future__ import annotations

import io
import ipaddress

import ifaddr
import segno

from tether.config import Settings, host_allowed

#: Wildcard binds, which listen on every address of the machine.
WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def reachable_hosts(bind_host: str) -> list[str]:
    """The addresses a browser may use to reach a server bound to ``bind_host``, loopback
    first: for a wildcard, loopback and every interface address (IPv4; IPv6 too for ``::``,
    link-local ones left out, as a URL cannot name their interface); else ``bind_host``."""
    host = bind_host.strip("[]")
    if host not in WILDCARDS:
        return ["127.0.0.1" if host == "localhost" else host]
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            address = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            parsed = ipaddress.ip_address(address)
            if parsed.version == 6 and (host != "::" or parsed.is_link_local):
                continue
            found.append(str(parsed))
    return sorted(set(found), key=lambda a: (not ipaddress.ip_address(a).is_loopback,
                                             ipaddress.ip_address(a).version, a))


def url_for(host: str, port: int, fragment: str = "") -> str:
    """``http://host:port/`` (IPv6 in brackets) with ``#fragment`` when given."""
    name = f"[{host}]" if ":" in host else host
    return f"http://{name}:{port}/" + (f"#{fragment}" if fragment else "")


def login_urls(settings: Settings, port: int, token: str) -> list[str]:
    """One login URL (the token in the fragment) per reachable address that the Host
    allow-list accepts, loopback first, each once. Empty when none is accepted (a server
    behind a proxy whose name is the only allowed host)."""
    return [url_for(host, port, f"token={token}") for host in reachable_hosts(settings.host)
            if host_allowed(host, settings.host_names)]


def qr_code(text: str) -> str:
    """``text`` as a QR code drawn with block characters, for a terminal (two rows of
    modules per line of text)."""
    out = io.StringIO()
    segno.make(text, error="l").terminal(out=out, compact=True)
    return out.getvalue()
