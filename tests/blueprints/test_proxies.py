"""Forwarded headers, believed only from trusted proxies (blueprints/proxies.py)."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import pytest

from blueprints.proxies import TrustedProxies


def seen(networks: list[str], environ: dict[str, Any]) -> dict[str, Any]:
    """What the app behind the middleware sees of ``environ``."""
    got: dict[str, Any] = {}

    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        got.update(env)
        return []

    middleware = TrustedProxies(app, [ipaddress.ip_network(n) for n in networks])
    base = {"REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8000",
            "wsgi.url_scheme": "http", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000"}
    middleware({**base, **environ}, lambda *a: None)
    return got


FORWARDED = {"HTTP_X_FORWARDED_FOR": "198.51.100.7", "HTTP_X_FORWARDED_PROTO": "https",
             "HTTP_X_FORWARDED_HOST": "tether.example", "HTTP_X_FORWARDED_PORT": "8443"}


def test_a_trusted_proxy_sets_address_scheme_host_and_port() -> None:
    env = seen(["127.0.0.1/32"], FORWARDED)
    assert env["REMOTE_ADDR"] == "198.51.100.7"
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTP_HOST"] == "tether.example:8443"


@pytest.mark.parametrize("networks", [[], ["10.0.0.0/8"], ["::1/128"]])
def test_an_untrusted_peer_has_its_forwarded_headers_dropped(networks: list[str]) -> None:
    env = seen(networks, FORWARDED)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"
    assert env["HTTP_HOST"] == "127.0.0.1:8000"
    assert not any(key.startswith("HTTP_X_FORWARDED_") for key in env)


def test_an_untrusted_peer_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    middleware = TrustedProxies(lambda env, sr: [], [])
    with caplog.at_level(logging.WARNING, logger="blueprints.proxies"):
        for _ in range(5):
            middleware({"REMOTE_ADDR": "192.0.2.1", **FORWARDED}, None)
        middleware({"REMOTE_ADDR": "192.0.2.2", "HTTP_X_FORWARDED_FOR": "x"}, None)
        middleware({"REMOTE_ADDR": "192.0.2.3"}, None)  # no forwarded header: nothing to say
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "192.0.2.1" in messages[0] and "X-Forwarded-For" in messages[0]


@pytest.mark.parametrize("header, client", [
    ("198.51.100.7", "198.51.100.7"),
    ("203.0.113.1, 198.51.100.7", "198.51.100.7"),  # the client named itself: ignored
    ("198.51.100.7, 10.0.0.2", "198.51.100.7"),  # through a second trusted proxy
    ("10.0.0.3, 10.0.0.2", "10.0.0.3"),  # all trusted: the leftmost
    ("", "127.0.0.1"),
    (" , ", "127.0.0.1"),
])
def test_the_client_is_the_rightmost_untrusted_hop(header: str, client: str) -> None:
    env = seen(["127.0.0.1/32", "10.0.0.0/8"], {"HTTP_X_FORWARDED_FOR": header})
    assert env["REMOTE_ADDR"] == client


@pytest.mark.parametrize("peer, trusted", [
    ("127.0.0.1", True), ("::ffff:127.0.0.1", True), ("127.0.0.2", False),
    ("not-an-address", False), ("", False),
])
def test_trusts(peer: str, trusted: bool) -> None:
    middleware = TrustedProxies(None, [ipaddress.ip_network("127.0.0.1/32")])
    assert middleware.trusts(peer) is trusted
