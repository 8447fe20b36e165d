"""create_app reads the secret settings once and drops them from the process environment, and
with TETHER_DEBUG_WORKER=1 names the answering worker on every response."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from app import create_app
from tests.support import AUTH_HEADERS, OTHER_SECRETS, TEST_TOKEN
from tether.config import SECRET_SETTINGS
from tether.workers import worker_id


def test_the_secret_settings_leave_os_environ_once_read(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    for name in SECRET_SETTINGS:
        monkeypatch.setenv(name, OTHER_SECRETS.get(name, f"value-of-{name.lower()}-0123456789"))
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


def test_debug_worker_names_the_worker_on_every_response(make_app: Any) -> None:
    client = make_app(TETHER_DEBUG_WORKER=1, TETHER_HOST_ID="host-a").test_client()
    wid = worker_id("host-a")
    assert wid.startswith(f"host-a:{os.getpid()}:")
    answers = [client.get("/healthz"),
               client.get("/api/sessions", headers={"Authorization": ""}),  # before any view
               client.get("/api/sessions"),
               client.get("/api/sessions/nope"),  # the API's 404
               client.get("/no/such/page"),  # the router's
               client.get("/api/sessions", headers={"Host": "evil.example"})]
    assert [a.status_code for a in answers] == [200, 401, 200, 404, 404, 403]
    assert [a.headers.get("X-Tether-Worker") for a in answers] == [wid] * len(answers)


def test_no_worker_header_without_debug_worker(make_app: Any) -> None:
    client = make_app().test_client()
    assert "X-Tether-Worker" not in client.get("/healthz").headers
