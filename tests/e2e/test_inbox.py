"""The inbox on a real gunicorn + gevent server: entries appear when any session asks for a
person and disappear when answered, on the inbox SSE stream, the inbox long-poll and the
session stream that carries the inbox (docs/protocol.md, the inbox)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import sseclient

from tests.e2e.live import LiveServer
from tests.support import AUTH_HEADERS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("inbox"), TETHER_KEEPALIVE=0.5) as server:
        yield server


def snapshots(server: LiveServer, path: str) -> tuple[requests.Response, Iterator[dict]]:
    response = requests.get(server.url + path, stream=True, headers=AUTH_HEADERS,
                            timeout=(5, 30))
    assert response.status_code == 200

    def inbox() -> Iterator[dict[str, Any]]:
        for message in sseclient.SSEClient(response).events():
            if message.event == "inbox":
                yield json.loads(message.data)

    return response, inbox()


def request_ids(snapshot: dict[str, Any]) -> set[str]:
    return {e["request_id"] for e in snapshot["entries"]}


def test_inbox_stream_and_long_poll_follow_every_session(server: LiveServer) -> None:
    watcher = server.create_session(title="watched")["id"]
    response, stream = snapshots(server, f"/api/sessions/{watcher}/stream?inbox=1")
    inbox_response, inbox_stream = snapshots(server, "/api/inbox/stream")
    first = next(stream)
    assert next(inbox_stream)["revision"] == first["revision"]
    # A long-poll parked on the current revision.
    polled: dict[str, Any] = {}
    poller = threading.Thread(target=lambda: polled.update(server.api(
        "GET", "/api/inbox", params={"after": first["revision"], "wait": 20},
        timeout=30).json()))
    poller.start()
    # Another session asks for permission.
    other = server.create_session(title="elsewhere")["id"]
    server.api("POST", f"/api/sessions/{other}/prompt", json={"text": "$ echo inbox"})
    request = server.wait_for_event(other, "approval_request")
    rid = request["request_id"]
    for source in (stream, inbox_stream):
        snapshot = next(s for s in source if rid in request_ids(s))
        entry = next(e for e in snapshot["entries"] if e["request_id"] == rid)
        assert entry["session_id"] == other and entry["session_title"] == "elsewhere"
        assert entry["summary"] == "Bash: echo inbox" and entry["expires_at"] > 0
    poller.join(25)
    assert polled["revision"] > first["revision"]
    # Answered: the entry leaves every view.
    server.api("POST", f"/api/sessions/{other}/approvals/{rid}", json={"decision": "deny"})
    for source in (stream, inbox_stream):
        assert next(s for s in source if rid not in request_ids(s))
    assert rid not in request_ids(server.api("GET", "/api/inbox").json())
    response.close()
    inbox_response.close()


def test_session_long_poll_carries_the_inbox(server: LiveServer) -> None:
    # Titled sessions: an untitled one is named by its first prompt, and that rename is an
    # inbox change of its own (entries carry the title), which would end the wait first.
    watcher = server.create_session(title="watcher")["id"]
    revision = server.api("GET", "/api/inbox").json()["revision"]
    other = server.create_session(title="other")["id"]
    result: dict[str, Any] = {}
    poller = threading.Thread(target=lambda: result.update(server.api(
        "GET", f"/api/sessions/{watcher}/events",
        params={"after": 0, "wait": 20, "inbox": revision}, timeout=30).json()))
    poller.start()
    server.api("POST", f"/api/sessions/{other}/prompt", json={"text": "ask Which? A | B"})
    request = server.wait_for_event(other, "clarify_request")
    poller.join(25)
    assert result["events"] == []
    assert request["request_id"] in request_ids(result["inbox"])
    question = request["questions"][0]["question"]
    server.api("POST", f"/api/sessions/{other}/clarify/{request['request_id']}",
               json={"answers": {question: "A"}})
    server.wait_for_event(other, "turn_end")
