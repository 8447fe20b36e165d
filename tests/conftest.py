"""Shared fixtures: an app per test with its own data dir and fast timeouts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from tether.sessions import SessionRegistry

FAST = {
    "TETHER_LOCAL_WORD_DELAY": 0,
    "TETHER_CANCEL_GRACE": 1,
    "TETHER_KEEPALIVE": 15,
}


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
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["tether"].shutdown()


@pytest.fixture
def app(make_app: Any) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def core(app: Flask) -> SessionRegistry:
    return app.extensions["tether"]
