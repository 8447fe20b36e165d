"""Shared fixtures: an app per test with its own data dir and fast timeouts."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from tests.redis_server import RedisServer
from tests.support import AUTH_HEADERS, TALLY, TALLY_NAMES, TEST_TOKEN, Tally
from tether.sessions import SessionRegistry

FAST = {
    "TETHER_LOCAL_WORD_DELAY": 0,
    "TETHER_CANCEL_GRACE": 1,
    "TETHER_KEEPALIVE": 15,
    "TETHER_TOKEN": TEST_TOKEN,
}


class AuthClient(FlaskClient):
    """A test client that sends ``Authorization: Bearer <TEST_TOKEN>`` unless told otherwise
    (``headers={"Authorization": ""}`` sends none)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.environ_base["HTTP_AUTHORIZATION"] = AUTH_HEADERS["Authorization"]


@pytest.fixture
def tally() -> Tally:
    """The run's trust tally (tests/support.py); printed at the end of the run."""
    return TALLY


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLY.counts:
        return
    terminalreporter.section("trust tally")
    for name in TALLY_NAMES:
        terminalreporter.write_line(f"{name:>22}: {TALLY.counts[name]:,}")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never inherit a developer's TETHER_* settings.
    import os

    for name in list(os.environ):
        if name.startswith("TETHER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Any]:
    apps: list[Flask] = []

    def factory(**settings: Any) -> Flask:
        config = {"TESTING": True, "TETHER_DATA_DIR": tmp_path / "data", **FAST, **settings}
        app = create_app(config)
        app.test_client_class = AuthClient
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["tether"].shutdown()


@pytest.fixture
def failing_claude(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A ``claude`` that Tether takes for installed and logged in (an executable and
    ``ANTHROPIC_API_KEY``) but that exits 1 at once: its sessions can be made, and each
    turn ends in an ``error`` without running anything."""
    cli = tmp_path / "bin" / "claude"
    cli.parent.mkdir(exist_ok=True)
    cli.write_text("#!/bin/sh\necho 'claude stand-in: exits at once' >&2\nexit 1\n")
    cli.chmod(0o755)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fake")
    return str(cli)


@pytest.fixture
def app(make_app: Any) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def core(app: Flask) -> SessionRegistry:
    return app.extensions["tether"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server (tests/redis_server.py) shared by the session's tests: each
    test keeps to its own key prefix (:func:`redis_prefix`). Tests that stop, restart or
    flush Redis start their own ``RedisServer``."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own (TETHER_REDIS_PREFIX)."""
    return f"t{secrets.token_hex(6)}"
