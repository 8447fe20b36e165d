"""SSE and long-poll against a real gunicorn + gevent server, with real HTTP clients
(``requests`` streaming and the ``sseclient-py`` parser)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sseclient

from tests.e2e.live import LiveServer
from tests.support import AUTH_HEADERS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("streams"), TETHER_KEEPALIVE=0.5) as server:
        yield server


def sse(server: LiveServer, sid: str, after: int | None = None,
        last_event_id: int | None = None) -> tuple[requests.Response, Iterator[Any]]:
    headers = {"Accept": "text/event-stream", **AUTH_HEADERS}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    params = {} if after is None else {"after": after}
    response = requests.get(f"{server.url}/api/sessions/{sid}/stream", params=params,
                            headers=headers, stream=True, timeout=(5, 30))
    assert response.status_code == 200
    return response, iter(sseclient.SSEClient(response).events())


def collect(events: Iterator[Any], until_kind: str) -> list[tuple[int, str]]:
    """(id, kind) of every message event up to and including the first ``until_kind``."""
    out = []
    for event in events:
        if event.event == "message":
            data = json.loads(event.data)
            assert int(event.id) == data["id"]
            out.append((data["id"], data["kind"]))
            if data["kind"] == until_kind:
                return out
    raise AssertionError("stream ended")


def approve_next(server: LiveServer, sid: str, after: int = 0) -> dict[str, Any]:
    request = server.wait_for_event(sid, "approval_request", after=after)
    response = server.api("POST", f"/api/sessions/{sid}/approvals/{request['request_id']}",
                          json={"decision": "allow", "client": "e2e"})
    assert response.status_code == 200
    return request


def finished_session(server: LiveServer) -> str:
    sid = server.create_session()["id"]
    server.api("POST", f"/api/sessions/{sid}/prompt", json={"text": "hello"})
    server.wait_for_event(sid, "turn_end")
    return sid


def test_replay_then_caught_up(server: LiveServer) -> None:
    sid = finished_session(server)
    total = server.events(sid)["last_event_id"]
    response, events = sse(server, sid)
    replayed = []
    for event in events:
        if event.event == "caught-up":
            caught_up = json.loads(event.data)
            break
        replayed.append(int(event.id))
    response.close()
    assert replayed == list(range(1, total + 1))
    assert caught_up["last_event_id"] == total and caught_up["epoch"]


def test_last_event_id_resume_is_exact(server: LiveServer) -> None:
    sid = finished_session(server)
    total = server.events(sid)["last_event_id"]
    for cursor in (0, 1, total - 1, total):
        response, events = sse(server, sid, after=0, last_event_id=cursor)
        ids = []
        for event in events:
            if event.event == "caught-up":
                break
            ids.append(int(event.id))
        response.close()
        assert ids == list(range(cursor + 1, total + 1))


def test_retry_headers_and_keepalive_on_the_wire(server: LiveServer) -> None:
    sid = finished_session(server)
    response = requests.get(f"{server.url}/api/sessions/{sid}/stream", stream=True,
                            headers=AUTH_HEADERS, timeout=(5, 10))
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["Cache-Control"] == "no-store"
    raw = b""
    deadline = time.monotonic() + 10
    for chunk in response.iter_content(chunk_size=None):
        raw += chunk
        if b"event: ping" in raw or time.monotonic() > deadline:
            break
    response.close()
    assert raw.startswith(b"retry: 2000\n\n")
    assert b": keepalive\n\n" in raw and b"event: ping\ndata: {\"ts\":" in raw


def test_long_poll_wakes_on_a_new_event(server: LiveServer) -> None:
    sid = finished_session(server)
    cursor = server.events(sid)["last_event_id"]
    result: dict[str, Any] = {}

    def poll() -> None:
        started = time.monotonic()
        result["body"] = server.events(sid, after=cursor, wait=20)
        result["returned"] = time.monotonic()
        result["started"] = started

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)
    sent = time.monotonic()
    server.api("POST", f"/api/sessions/{sid}/prompt", json={"text": "again"})
    thread.join(30)
    assert result["body"]["events"][0]["id"] == cursor + 1
    assert result["body"]["events"][0]["kind"] == "user"
    # Woken by the append, not by the 20 s wait (generous bound: shared CI machines).
    assert result["returned"] - sent < 5


def test_long_poll_times_out_with_an_empty_list(server: LiveServer) -> None:
    sid = finished_session(server)
    cursor = server.events(sid)["last_event_id"]
    started = time.monotonic()
    body = server.events(sid, after=cursor, wait=1)
    assert body["events"] == [] and body["last_event_id"] == cursor
    assert time.monotonic() - started >= 0.9


def test_busy_while_a_turn_runs(server: LiveServer) -> None:
    sid = server.create_session()["id"]
    server.api("POST", f"/api/sessions/{sid}/prompt", json={"text": "$ echo one"})
    busy = server.api("POST", f"/api/sessions/{sid}/prompt", json={"text": "two"})
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "session_busy"
    server.api("POST", f"/api/sessions/{sid}/cancel")
    assert server.wait_for_event(sid, "turn_end")["reason"] == "cancelled"


def test_cancel_ends_the_turn_once(server: LiveServer) -> None:
    sid = server.create_session()["id"]
    server.api("POST", f"/api/sessions/{sid}/prompt", json={"text": "$ sleep 30"})
    approve_next(server, sid)
    time.sleep(0.3)
    assert server.api("POST", f"/api/sessions/{sid}/cancel").json() == {"cancelled": True}
    assert server.wait_for_event(sid, "turn_end")["reason"] == "cancelled"
    kinds = [e["kind"] for e in server.events(sid)["events"]]
    assert kinds.count("turn_end") == 1
    assert server.api("GET", f"/api/sessions/{sid}").json()["state"] == "idle"


def test_turn_survives_every_client_leaving(server: LiveServer) -> None:
    sid = server.create_session()["id"]
    response, events = sse(server, sid)
    server.api("POST", f"/api/sessions/{sid}/prompt",
               json={"text": "$ sleep 1; echo survived > survived.txt; echo done"})
    seen = collect(events, "approval_request")
    response.close()  # the only client leaves while the agent waits
    approve_next(server, sid)
    time.sleep(2)
    end = server.wait_for_event(sid, "turn_end")
    assert end["reason"] == "completed"
    workspace = server.workdir / "data" / "sessions" / sid
    assert (Path(workspace) / "survived.txt").read_text().strip() == "survived"
    # A new client gets what it missed, and only that.
    response, events = sse(server, sid, last_event_id=seen[-1][0])
    rest = collect(events, "turn_end")
    response.close()
    assert rest[0][0] == seen[-1][0] + 1
    assert [i for i, _ in rest] == list(range(seen[-1][0] + 1, end["id"] + 1))


def test_all_clients_see_the_same_ids_in_the_same_order(server: LiveServer) -> None:
    sid = server.create_session()["id"]
    streams = [sse(server, sid) for _ in range(2)]
    results: list[list[tuple[int, str]]] = [[], [], []]

    def read(i: int) -> None:
        results[i] = collect(streams[i][1], "turn_end")

    def poll() -> None:
        after, out = 0, []
        while not out or out[-1][1] != "turn_end":
            page = server.events(sid, after=after, wait=5)
            out += [(e["id"], e["kind"]) for e in page["events"]]
            after = page["last_event_id"]
        results[2] = out

    threads = [threading.Thread(target=read, args=(0,)), threading.Thread(target=read, args=(1,)),
               threading.Thread(target=poll)]
    for thread in threads:
        thread.start()
    server.api("POST", f"/api/sessions/{sid}/prompt", json={"text": "$ echo shared"})
    approve_next(server, sid)
    for thread in threads:
        thread.join(30)
    for response, _ in streams:
        response.close()
    assert results[0] == results[1] == results[2]
    assert [i for i, _ in results[0]] == list(range(1, len(results[0]) + 1))
    assert results[0][-1][1] == "turn_end"


def test_errors_are_json_on_the_live_server(server: LiveServer) -> None:
    assert server.api("GET", "/api/sessions/nope/stream").status_code == 404
    bad = server.api("GET", "/api/sessions/nope/events?after=x")
    assert bad.status_code in (400, 404) and "error" in bad.json()
    sid = server.create_session()["id"]
    bad = server.api("GET", f"/api/sessions/{sid}/stream", headers={"Last-Event-ID": "+7"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
    plain = server.api("POST", f"/api/sessions/{sid}/prompt", data="hi",
                       headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415


def test_sigterm_ends_turns_streams_and_agents_before_the_graceful_timeout(
        tmp_path: Path) -> None:
    server = LiveServer(tmp_path)
    with server:
        sid = server.create_session()["id"]
        response, events = sse(server, sid)
        server.api("POST", f"/api/sessions/{sid}/prompt", json={"text": "$ sleep 60"})
        approve_next(server, sid)
        time.sleep(0.5)
        assert server.agent_processes()  # the agent and its `sleep 60`
        started = time.monotonic()
        server.stop()
        stopped = time.monotonic() - started
        # The open stream got the interrupted turn_end, then ended.
        tail = collect(events, "turn_end")
        response.close()
        assert tail[-1][1] == "turn_end"
        assert server.wait_no_agent_processes(5) == []
    assert stopped < 9, f"took {stopped:.1f} s: the stream held the worker to graceful_timeout"
    assert "Worker graceful timeout" not in server.log_text()
