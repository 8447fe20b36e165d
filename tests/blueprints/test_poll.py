"""Poll and long-poll in-process."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from tether.sessions import SessionRegistry


@pytest.fixture
def sid(client: FlaskClient, core: SessionRegistry) -> str:
    sid = client.post("/api/sessions").get_json()["id"]
    for i in range(5):
        core.get(sid).log.append("text", {"text": str(i)})
    return sid


def test_poll_returns_events_after_the_cursor(client: FlaskClient, sid: str, core) -> None:
    body = client.get(f"/api/sessions/{sid}/events?after=2").get_json()
    assert [e["id"] for e in body["events"]] == [3, 4, 5]
    assert body["events"][0]["kind"] == "text" and body["events"][0]["session_id"] == sid
    assert body["last_event_id"] == 5 and body["turn_active"] is False
    assert body["epoch"] == core.epoch and body["reset"] is False


def test_limit_pages_through_the_log(client: FlaskClient, sid: str) -> None:
    body = client.get(f"/api/sessions/{sid}/events?after=0&limit=2").get_json()
    assert [e["id"] for e in body["events"]] == [1, 2] and body["last_event_id"] == 2


def test_empty_poll_keeps_the_cursor(client: FlaskClient, sid: str) -> None:
    body = client.get(f"/api/sessions/{sid}/events?after=5").get_json()
    assert body["events"] == [] and body["last_event_id"] == 5


def test_long_poll_wakes_on_append(client: FlaskClient, sid: str, core) -> None:
    threading.Timer(0.1, core.get(sid).log.append, ("text", {"text": "new"})).start()
    started = time.monotonic()
    body = client.get(f"/api/sessions/{sid}/events?after=5&wait=10").get_json()
    assert time.monotonic() - started < 5
    assert [e["id"] for e in body["events"]] == [6]


def test_long_poll_times_out_empty(client: FlaskClient, sid: str) -> None:
    started = time.monotonic()
    body = client.get(f"/api/sessions/{sid}/events?after=5&wait=0.2").get_json()
    assert time.monotonic() - started >= 0.19
    assert body["events"] == []


def test_cursor_past_the_end_resets(client: FlaskClient, sid: str) -> None:
    body = client.get(f"/api/sessions/{sid}/events?after=50&wait=5").get_json()
    assert body["reset"] is True and [e["id"] for e in body["events"]][0] == 1


@pytest.mark.parametrize("query, field", [("after=x", "after"), ("after=-1", "after"),
                                          ("wait=-5", "wait"), ("wait=NaN", "wait"),
                                          ("wait=inf", "wait"), ("wait=1e309", "wait"),
                                          ("limit=0", "limit"), ("limit=abc", "limit")])
def test_bad_parameters_are_400(client: FlaskClient, sid: str, query: str, field: str) -> None:
    response = client.get(f"/api/sessions/{sid}/events?{query}")
    assert response.status_code == 400
    assert field in response.get_json()["error"]["message"]


def test_huge_wait_and_limit_are_clamped(client: FlaskClient, sid: str) -> None:
    body: dict[str, Any] = client.get(
        f"/api/sessions/{sid}/events?after=0&wait=100000&limit=100000").get_json()
    assert len(body["events"]) == 5


def test_longest_wait_is_fifty_seconds_below_proxies_sixty(
        client: FlaskClient, sid: str, core, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``wait`` of 100000 s holds a session long-poll and an inbox long-poll 50 s at most:
    under the 60 s read timeout of nginx and most proxies by default, so a long-poll at its
    maximum is answered by Tether, not cut off with a 504 (README, Deployment)."""
    asked: list[tuple[str, float | None]] = []
    monkeypatch.setattr(core.get(sid).log, "wait_for",
                        lambda after, timeout: asked.append(("events", timeout)) or False)
    monkeypatch.setattr(core.inbox, "wait_for",
                        lambda after, timeout: asked.append(("inbox", timeout)) or False)
    revision = client.get("/api/inbox").get_json()["revision"]
    assert client.get(f"/api/sessions/{sid}/events?after=5&wait=100000").status_code == 200
    assert client.get(f"/api/inbox?after={revision}&wait=100000").status_code == 200
    assert asked == [("events", 50.0), ("inbox", 50.0)]
