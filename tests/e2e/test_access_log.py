"""gunicorn's access log (gunicorn.conf.py ``AccessLog``): successful polls and health checks
leave no line; everything else, and their errors, do."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.e2e.live import LiveServer

pytestmark = pytest.mark.e2e


def test_successful_polls_and_health_checks_are_not_logged(tmp_path: Path) -> None:
    with LiveServer(tmp_path) as server:
        sid = server.create_session()["id"]
        quiet = [f"/api/sessions/{sid}/events?after=0", "/api/inbox", "/healthz", "/metrics"]
        for path in quiet:
            assert server.api("GET", path).status_code == 200, path
        assert server.api("GET", "/api/sessions/nope/events").status_code == 404
        assert requests.get(server.url + "/api/inbox", timeout=10).status_code == 401
        assert server.api("GET", "/api/sessions").status_code == 200
        server.stop()
        lines = [line for line in server.log_text().splitlines() if '" ' in line]
        logged = [line.split('"')[1] for line in lines]
        assert "GET /api/sessions HTTP/1.1" in logged
        assert "POST /api/sessions HTTP/1.1" in logged
        assert "GET /api/sessions/nope/events HTTP/1.1" in logged  # an error is logged
        assert "GET /api/inbox HTTP/1.1" in logged  # the 401
        for path in quiet:
            assert sum(f"GET {path.split('?')[0]} " in line for line in logged) == (
                1 if path == "/api/inbox" else 0), (path, logged)
