"""Where a browser can reach the server, and the login URLs printed at start
(tether/addresses.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tether import addresses
from tether.config import Settings, host_allowed

ADAPTERS = [
    SimpleNamespace(ips=[SimpleNamespace(ip="127.0.0.1"), SimpleNamespace(ip=("::1", 0, 0))]),
    SimpleNamespace(ips=[SimpleNamespace(ip="192.168.1.20"),
                         SimpleNamespace(ip=("fd00::20", 0, 0)),
                         SimpleNamespace(ip=("fe80::1", 0, 2))]),
    SimpleNamespace(ips=[SimpleNamespace(ip="10.8.0.3")]),
]


@pytest.fixture(autouse=True)
def _interfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(addresses.ifaddr, "get_adapters", lambda: ADAPTERS)


@pytest.mark.parametrize("bind, expected", [
    ("0.0.0.0", ["127.0.0.1", "10.8.0.3", "192.168.1.20"]),
    ("::", ["127.0.0.1", "::1", "10.8.0.3", "192.168.1.20", "fd00::20"]),
    ("127.0.0.1", ["127.0.0.1"]),
    ("localhost", ["127.0.0.1"]),
    ("192.168.1.20", ["192.168.1.20"]),
])
def test_reachable_hosts(bind: str, expected: list[str]) -> None:
    assert addresses.reachable_hosts(bind) == expected


def settings(**env: Any) -> Settings:
    return Settings.from_env(env)


def test_login_urls_are_one_per_allowed_address_each_once() -> None:
    urls = addresses.login_urls(settings(TETHER_HOST="::", TETHER_ALLOWED_HOSTS=(
        "127.0.0.1,192.168.1.20,fd00::20,192.168.1.20")), 8000, "tok")
    assert urls == ["http://127.0.0.1:8000/#token=tok", "http://192.168.1.20:8000/#token=tok",
                    "http://[fd00::20]:8000/#token=tok"]


def test_a_loopback_server_prints_its_loopback_url() -> None:
    assert addresses.login_urls(settings(), 8000, "tok") == ["http://127.0.0.1:8000/#token=tok"]


def test_no_url_when_only_a_proxys_name_is_allowed() -> None:
    assert addresses.login_urls(settings(TETHER_ALLOWED_HOSTS="tether.example"), 8000,
                                "tok") == []


def test_every_address_with_a_wildcard_allow_list() -> None:
    urls = addresses.login_urls(settings(TETHER_HOST="0.0.0.0", TETHER_ALLOWED_HOSTS="*"),
                                8000, "tok")
    assert len(urls) == 3


def test_the_qr_code_is_drawn_in_block_characters() -> None:
    code = addresses.qr_code("http://192.168.1.20:8000/#token=" + "x" * 43)
    lines = code.splitlines()
    assert len(lines) > 15 and set("".join(lines)) <= set("█▀▄ ")


@pytest.mark.parametrize("host, allowed, ok", [
    ("::1", ("::1",), True), ("[::1]:80", ("::1",), True), ("fd00::20", ("fd00::20",), True),
    ("127.0.0.1", ("localhost",), False), ("a b", ("*",), True), ("a b", ("a b",), False),
])
def test_host_allowed_takes_bare_ipv6_addresses(host: str, allowed: tuple[str, ...],
                                                ok: bool) -> None:
    assert host_allowed(host, allowed) is ok
