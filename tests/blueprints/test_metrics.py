"""``GET /metrics`` (blueprints/metrics.py, tether/metrics.py): the figures move with the work."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from tether.metrics import Metrics
from tether.sessions import SessionRegistry


def scrape(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.get_data(as_text=True))
            for sample in family.samples}


def test_metrics_need_the_token(client: FlaskClient) -> None:
    response = client.get("/metrics", headers={"Authorization": ""})
    assert response.status_code == 401


def test_a_turn_and_its_deliveries_show_in_the_figures(client: FlaskClient,
                                                       core: SessionRegistry) -> None:
    before = scrape(client)
    assert before[("tether_sessions", ())] == 0
    assert before[("tether_clients", (("transport", "sse"),))] == 0
    sid = client.post("/api/sessions", json={}).get_json()["id"]
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "help"})
    assert core.get(sid).wait_idle(10)
    last = core.get(sid).log.last_id
    page = client.get(f"/api/sessions/{sid}/events?after=0&limit=1000").get_json()
    assert len(page["events"]) == last
    figures = scrape(client)
    assert figures[("tether_sessions", ())] == 1
    assert figures[("tether_events_appended_total", ())] == last
    assert figures[("tether_events_delivered_total", (("transport", "poll"),))] == last
    assert figures[("tether_delivery_latency_seconds_count", (("transport", "poll"),))] == 1
    assert figures[("tether_turns_total", (("reason", "completed"),))] == 1
    assert figures[("tether_turn_duration_seconds_count", ())] == 1
    assert figures[("tether_agent_processes", ())] == 1  # kept for the next turn
    assert figures[("tether_session_views", ())] == 1  # one process: every session's log
    client.delete(f"/api/sessions/{sid}")
    after = scrape(client)
    assert after[("tether_sessions", ())] == 0
    assert after[("tether_agent_processes", ())] == 0
    assert after[("tether_session_views", ())] == 0
    assert after[("tether_events_appended_total", ())] == last  # a counter never goes down


def test_open_streams_and_waiting_polls_are_counted(client: FlaskClient,
                                                    core: SessionRegistry) -> None:
    sid = client.post("/api/sessions", json={}).get_json()["id"]
    stream = client.get(f"/api/sessions/{sid}/stream", buffered=False)
    next(stream.response)  # retry: the body runs
    waiting = threading.Thread(target=client.get,
                               args=(f"/api/sessions/{sid}/events?after=0&wait=10",))
    waiting.start()
    try:
        deadline_figures: Any = None
        for _ in range(200):
            deadline_figures = scrape(client)
            if deadline_figures[("tether_clients", (("transport", "poll"),))] == 1:
                break
            threading.Event().wait(0.02)
        assert deadline_figures[("tether_clients", (("transport", "sse"),))] == 1
        assert deadline_figures[("tether_clients", (("transport", "poll"),))] == 1
    finally:
        core.get(sid).log.append("text", {"text": "release the poll"})
        waiting.join(10)
        stream.close()
    figures = scrape(client)
    assert figures[("tether_clients", (("transport", "sse"),))] == 0
    assert figures[("tether_clients", (("transport", "poll"),))] == 0


def test_pending_prompts_are_reported(client: FlaskClient, core: SessionRegistry) -> None:
    sid = client.post("/api/sessions", json={}).get_json()["id"]
    prompts = core.get(sid).prompts
    prompts.open_approval("Bash", {"command": "ls"}, "toolu_1")
    prompts.open_clarify([{"question": "Which?", "options": [{"label": "a"}]}], "toolu_2")
    figures = scrape(client)
    assert figures[("tether_pending_prompts", (("kind", "approval"),))] == 1
    assert figures[("tether_pending_prompts", (("kind", "clarify"),))] == 1


def test_a_shared_directory_named_after_prometheus_client_was_imported_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its values would stay in this process while the scrape claims the host's figures
    (gunicorn.conf.py sets the variable before the workers import anything)."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR was set after"):
        Metrics()
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    assert not Metrics().shared
