"""Idle mirrors on a real cluster (issue 14; SCALE-OUT.md section 5, "Mirror lifetime"): a
worker that only served a reader of a session drops its view once nobody followed it for
``TETHER_MIRROR_IDLE_SECONDS`` (shortened here to 3 s), as its ``tether_session_views``
gauge shows, and a client that comes back to that worker with ``Last-Event-ID`` gets exactly
the events appended meanwhile: no reset, no repeat, no gap.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sseclient

from tests.e2e.cluster import Cluster, is_worker, other_than, worker_of

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.timeout(120)]

IDLE_SECONDS = 3


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("idle"),
                 TETHER_MIRROR_IDLE_SECONDS=IDLE_SECONDS) as cluster:
        yield cluster


def views_on(cluster: Cluster, wid: str) -> int:
    """``tether_session_views`` of worker ``wid`` (its own /metrics: figures are per worker)."""
    response = cluster.request_on(is_worker(wid), "GET", "/metrics")
    response.raise_for_status()
    found = re.search(r"^tether_session_views (\S+)$", response.text, re.MULTILINE)
    assert found, response.text[:2000]
    return int(float(found.group(1)))


def log_on(cluster: Cluster, wid_test: Any, sid: str, after: int = 0) -> list[dict[str, Any]]:
    response = cluster.request_on(wid_test, "GET", f"/api/sessions/{sid}/events",
                                  params={"after": after, "limit": 1000})
    response.raise_for_status()
    body = response.json()
    assert body["reset"] is False
    return list(body["events"])


def turn_done(cluster: Cluster, avoid: str, sid: str, turn: int) -> list[dict[str, Any]]:
    """The log once turn ``turn`` ended, read only through workers other than ``avoid``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        events = log_on(cluster, other_than(avoid), sid)
        if any(e["kind"] == "turn_end" and e["turn"] == turn for e in events):
            return events
        time.sleep(0.1)
    raise AssertionError(f"turn {turn} did not end")


def test_a_non_owner_drops_its_idle_mirror_and_a_resume_there_gets_exactly_what_came_after(
        cluster: Cluster) -> None:
    created = cluster.api("POST", "/api/sessions", json={"title": "idle"})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    assert cluster.api("POST", f"/api/sessions/{sid}/prompt",
                       json={"text": "first"}).status_code == 202
    owner = cluster.owner_of(sid)
    # A reader on another worker: that worker now holds a view of the session.
    reading = cluster.request_on(other_than(owner), "GET", f"/api/sessions/{sid}/events",
                                 params={"after": 0, "limit": 1000})
    reader = worker_of(reading)
    assert reader is not None
    first = turn_done(cluster, reader, sid, 1)
    cursor = log_on(cluster, is_worker(reader), sid)[-1]["id"]
    assert cursor == first[-1]["id"]
    assert views_on(cluster, reader) == 1

    # Nobody on the reader follows the session: its view goes after the idle time.
    deadline = time.monotonic() + IDLE_SECONDS + 20
    while views_on(cluster, reader) != 0:
        assert time.monotonic() < deadline, "the idle view was never dropped"
        time.sleep(0.5)

    # Events appended while the reader holds no view (written and read elsewhere).
    response = cluster.request_on(other_than(reader), "POST", f"/api/sessions/{sid}/prompt",
                                  json={"text": "second"})
    assert response.status_code == 202, response.text
    log = turn_done(cluster, reader, sid, 2)
    assert views_on(cluster, reader) == 0
    expected = [e for e in log if e["id"] > cursor]
    assert expected

    # The client comes back to the reader with its cursor.
    got: list[dict[str, Any]] = []
    with cluster.request_on(is_worker(reader), "GET", f"/api/sessions/{sid}/stream",
                            stream=True, timeout=(3, 5),
                            headers={"Accept": "text/event-stream",
                                     "Last-Event-ID": str(cursor)}) as stream:
        assert stream.status_code == 200
        for event in sseclient.SSEClient(stream).events():
            assert event.event != "reset", event.data
            if event.event == "message":
                got.append(json.loads(event.data))
            elif event.event == "caught-up":
                break
    assert got == expected
    assert views_on(cluster, reader) == 1  # opened afresh from Redis, fed again
