"""create_app reads the secret settings once and drops them from the process environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app import create_app
from tests.support import AUTH_HEADERS, TEST_TOKEN
from tether.config import SECRET_SETTINGS


def test_the_secret_settings_leave_os_environ_once_read(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    for name in SECRET_SETTINGS:
        monkeypatch.setenv(name, f"value-of-{name.lower()}-0123456789")
    monkeypatch.setenv("TETHER_TOKEN", TEST_TOKEN)
    monkeypatch.setenv("TETHER_PORT", "8123")
    app = create_app({"TESTING": True, "TETHER_DATA_DIR": tmp_path / "data"})
    assert not set(SECRET_SETTINGS) & set(os.environ)
    assert os.environ["TETHER_PORT"] == "8123"  # other settings stay
    # The token was read before it left: the app still knows it.
    try:
        client = app.test_client()
        assert client.get("/api/sessions", headers=AUTH_HEADERS).status_code == 200
        assert client.get("/api/sessions").status_code == 401
    finally:
        app.extensions["tether"].shutdown()
