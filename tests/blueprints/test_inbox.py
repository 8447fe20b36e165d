"""The inbox over HTTP in-process: GET /api/inbox (long-poll), &inbox=R on the session
long-poll, ?inbox=1 on the session stream, and GET /api/inbox/stream (docs/protocol.md)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.blueprints.test_sse import frames
from tether.sessions import SessionRegistry

ENTRY_KEYS = {"session_id", "session_title", "kind", "request_id", "summary", "created_at",
              "expires_at", "tool_name", "input", "questions"}
QUESTION = {"question": "Which db?", "header": "DB", "multiSelect": False,
            "options": [{"label": "pg", "description": ""}, {"label": "sqlite"}]}


@pytest.fixture
def sid(client: FlaskClient, core: SessionRegistry) -> str:
    sid = client.post("/api/sessions", json={"title": "polled"}).get_json()["id"]
    for i in range(3):
        core.get(sid).log.append("text", {"text": str(i)})
    return sid


@pytest.fixture
def other(client: FlaskClient) -> str:
    return client.post("/api/sessions", json={"title": "other"}).get_json()["id"]


def open_approval(core: SessionRegistry, sid: str, command: str = "ls -la") -> Any:
    request, _ = core.get(sid).prompts.open_approval("Bash", {"command": command}, "toolu")
    return request


def later(seconds: float, function: Any, *args: Any) -> threading.Timer:
    timer = threading.Timer(seconds, function, args)
    timer.start()
    return timer


def error(response: Any) -> dict[str, Any]:
    assert response.mimetype == "application/json"
    return response.get_json()["error"]


# -- SSE helpers -----------------------------------------------------------------------------

def next_named(stream: Iterator[str], name: str) -> tuple[list[str], dict[str, Any]]:
    """Blocks up to the next ``event: <name>``; its JSON data."""
    seen = []
    for block in stream:
        seen.append(block)
        if block.startswith(f"event: {name}\n"):
            return seen, json.loads(block.split("\n", 1)[1][len("data: "):])
    raise AssertionError(f"stream ended before event: {name}; saw {seen}")


def names(blocks: list[str]) -> list[str]:
    return [b.split("\n", 1)[0][len("event: "):] for b in blocks if b.startswith("event: ")]


# -- GET /api/inbox --------------------------------------------------------------------------

def test_empty_inbox_snapshot(client: FlaskClient, core: SessionRegistry) -> None:
    response = client.get("/api/inbox")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json() == {"revision": 0, "epoch": core.epoch, "entries": []}


def test_snapshot_has_an_entry_per_pending_request(client: FlaskClient, core: SessionRegistry,
                                                   sid: str, other: str) -> None:
    approval = open_approval(core, sid)
    clarify, _ = core.get(other).prompts.open_clarify([QUESTION], "toolu_q")
    body = client.get("/api/inbox").get_json()
    assert body["revision"] == core.inbox.revision >= 2 and body["epoch"] == core.epoch
    entries = {e["request_id"]: e for e in body["entries"]}
    assert set(entries) == {approval.request_id, clarify.request_id}
    for e in entries.values():
        assert set(e) == ENTRY_KEYS
    first = entries[approval.request_id]
    assert first == {
        "session_id": sid, "session_title": "polled", "kind": "approval",
        "request_id": approval.request_id, "summary": "Bash: ls -la",
        "created_at": approval.created_at, "expires_at": approval.expires_at,
        "tool_name": "Bash", "input": {"command": "ls -la"}, "questions": None}
    assert first["expires_at"] == pytest.approx(first["created_at"] + 600, abs=0.01)
    second = entries[clarify.request_id]
    assert (second["session_id"], second["session_title"], second["kind"]) == (
        other, "other", "clarify")
    assert second["summary"] == "Which db?"
    assert second["tool_name"] is None and second["input"] is None
    assert second["questions"][0]["question"] == "Which db?"
    assert [o["label"] for o in second["questions"][0]["options"]] == ["pg", "sqlite"]
    created = [e["created_at"] for e in body["entries"]]
    assert created == sorted(created)


def test_entries_disappear_when_settled(client: FlaskClient, core: SessionRegistry,
                                       sid: str) -> None:
    request = open_approval(core, sid)
    before = client.get("/api/inbox").get_json()["revision"]
    core.get(sid).prompts.answer_approval(request.request_id, "allow")
    body = client.get("/api/inbox").get_json()
    assert body["entries"] == [] and body["revision"] > before


def test_inbox_long_poll_wakes_on_a_change(client: FlaskClient, core: SessionRegistry,
                                           sid: str) -> None:
    revision = client.get("/api/inbox").get_json()["revision"]
    later(0.05, open_approval, core, sid)
    started = time.monotonic()
    body = client.get(f"/api/inbox?after={revision}&wait=10").get_json()
    assert time.monotonic() - started < 5
    assert body["revision"] > revision
    assert [e["summary"] for e in body["entries"]] == ["Bash: ls -la"]


def test_inbox_long_poll_wakes_on_a_session_delete(client: FlaskClient, core: SessionRegistry,
                                                   sid: str) -> None:
    open_approval(core, sid)
    revision = core.inbox.revision
    later(0.05, core.delete, sid)
    body = client.get(f"/api/inbox?after={revision}&wait=10").get_json()
    assert body["revision"] > revision and body["entries"] == []


def test_inbox_long_poll_times_out_with_the_same_snapshot(client: FlaskClient,
                                                          core: SessionRegistry,
                                                          sid: str) -> None:
    open_approval(core, sid)
    now = client.get("/api/inbox").get_json()
    started = time.monotonic()
    body = client.get(f"/api/inbox?after={now['revision']}&wait=0.2").get_json()
    elapsed = time.monotonic() - started
    assert 0.19 <= elapsed < 5
    assert body == now


@pytest.mark.parametrize("query", ["after=999&wait=30", "wait=30", "after=0&wait=0",
                                   "after=999&wait=100000"])
def test_inbox_answers_at_once_unless_waiting_on_the_current_revision(
        client: FlaskClient, core: SessionRegistry, sid: str, query: str) -> None:
    open_approval(core, sid)  # revision is now 1, not 999 and not 0
    started = time.monotonic()
    response = client.get(f"/api/inbox?{query}")
    assert time.monotonic() - started < 5
    assert response.status_code == 200
    assert response.get_json()["revision"] == core.inbox.revision


@pytest.mark.parametrize("query, field", [
    ("after=x", "after"), ("after=-1", "after"), ("after=1.5", "after"), ("after=", "after"),
    ("after=%2B1", "after"), ("wait=-1", "wait"), ("wait=abc", "wait"), ("wait=NaN", "wait"),
    ("wait=inf", "wait"), ("after=0&wait=1e3", "wait"),
])
def test_bad_inbox_parameters_are_a_json_400(client: FlaskClient, query: str,
                                             field: str) -> None:
    response = client.get(f"/api/inbox?{query}")
    assert response.status_code == 400
    body = error(response)
    assert body["code"] == "bad_request" and field in body["message"]


# -- GET /api/sessions/<id>/events?…&inbox=R --------------------------------------------------

def test_events_carry_no_inbox_when_the_revision_is_current(client: FlaskClient,
                                                            core: SessionRegistry,
                                                            sid: str) -> None:
    body = client.get(f"/api/sessions/{sid}/events?after=0&inbox=0").get_json()
    assert "inbox" not in body and [e["id"] for e in body["events"]] == [1, 2, 3]
    open_approval(core, sid)
    revision = core.inbox.revision
    body = client.get(f"/api/sessions/{sid}/events?after=0&inbox={revision}").get_json()
    assert "inbox" not in body


def test_events_without_the_inbox_parameter_never_carry_it(client: FlaskClient,
                                                           core: SessionRegistry,
                                                           sid: str) -> None:
    open_approval(core, sid)
    assert "inbox" not in client.get(f"/api/sessions/{sid}/events?after=0").get_json()


def test_events_carry_the_snapshot_when_the_revision_differs(client: FlaskClient,
                                                             core: SessionRegistry,
                                                             sid: str, other: str) -> None:
    open_approval(core, other)
    body = client.get(f"/api/sessions/{sid}/events?after=3&inbox=0").get_json()
    assert body["events"] == [] and body["last_event_id"] == 3
    assert body["inbox"] == client.get("/api/inbox").get_json()
    assert body["inbox"]["revision"] == core.inbox.revision
    assert body["inbox"]["entries"][0]["session_id"] == other


def test_stale_inbox_revision_answers_a_long_poll_at_once(client: FlaskClient,
                                                          core: SessionRegistry,
                                                          sid: str, other: str) -> None:
    open_approval(core, other)
    started = time.monotonic()
    body = client.get(f"/api/sessions/{sid}/events?after=3&wait=30&inbox=0").get_json()
    assert time.monotonic() - started < 5
    assert body["events"] == [] and body["inbox"]["revision"] == core.inbox.revision


def test_long_poll_with_inbox_wakes_on_an_inbox_change(client: FlaskClient,
                                                       core: SessionRegistry,
                                                       sid: str, other: str) -> None:
    revision = core.inbox.revision
    later(0.05, open_approval, core, other)
    started = time.monotonic()
    body = client.get(
        f"/api/sessions/{sid}/events?after=3&wait=10&inbox={revision}").get_json()
    assert time.monotonic() - started < 5
    assert body["events"] == [] and body["last_event_id"] == 3
    assert body["inbox"]["revision"] > revision
    assert [e["session_id"] for e in body["inbox"]["entries"]] == [other]


def test_long_poll_with_inbox_wakes_on_an_append_without_the_inbox(client: FlaskClient,
                                                                   core: SessionRegistry,
                                                                   sid: str) -> None:
    revision = core.inbox.revision
    later(0.05, core.get(sid).log.append, "text", {"text": "new"})
    started = time.monotonic()
    body = client.get(
        f"/api/sessions/{sid}/events?after=3&wait=10&inbox={revision}").get_json()
    assert time.monotonic() - started < 5
    assert [e["id"] for e in body["events"]] == [4]
    assert "inbox" not in body


def test_long_poll_with_inbox_times_out_empty(client: FlaskClient, core: SessionRegistry,
                                              sid: str) -> None:
    revision = core.inbox.revision
    started = time.monotonic()
    body = client.get(
        f"/api/sessions/{sid}/events?after=3&wait=0.2&inbox={revision}").get_json()
    assert 0.19 <= time.monotonic() - started < 5
    assert body["events"] == [] and "inbox" not in body and body["last_event_id"] == 3


def test_long_poll_with_inbox_leaves_no_watchers_behind(client: FlaskClient,
                                                        core: SessionRegistry,
                                                        sid: str) -> None:
    log = core.get(sid).log
    client.get(f"/api/sessions/{sid}/events?after=3&wait=0.05&inbox={core.inbox.revision}")
    later(0.05, log.append, "text", {"text": "new"})
    client.get(f"/api/sessions/{sid}/events?after=3&wait=10&inbox={core.inbox.revision}")
    # A small private peek: the flags each source sets on change.
    assert log._wakeup._flags == set() and core.inbox._wakeup._flags == set()


def test_reset_long_poll_also_carries_the_inbox(client: FlaskClient, core: SessionRegistry,
                                                sid: str, other: str) -> None:
    open_approval(core, other)
    body = client.get(f"/api/sessions/{sid}/events?after=50&wait=5&inbox=0").get_json()
    assert body["reset"] is True and [e["id"] for e in body["events"]] == [1, 2, 3]
    assert body["inbox"]["revision"] == core.inbox.revision


@pytest.mark.parametrize("value", ["x", "-1", "1.5", "", "%2B1"])
def test_bad_inbox_revision_on_events_is_400(client: FlaskClient, sid: str,
                                             value: str) -> None:
    response = client.get(f"/api/sessions/{sid}/events?after=0&inbox={value}")
    assert response.status_code == 400
    body = error(response)
    assert body["code"] == "bad_request" and "inbox" in body["message"]


# -- GET /api/sessions/<id>/stream?inbox=1 ---------------------------------------------------

@pytest.mark.parametrize("flag", ["1", "true"])
def test_session_stream_carries_inbox_snapshots(client: FlaskClient, core: SessionRegistry,
                                                sid: str, other: str, flag: str) -> None:
    open_approval(core, other)
    response = client.get(f"/api/sessions/{sid}/stream?inbox={flag}", buffered=False)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    stream = frames(response)
    blocks, first = next_named(stream, "inbox")
    assert names(blocks) == ["caught-up", "inbox"]
    assert [b.split("\n")[0] for b in blocks if b.startswith("id: ")] == [
        "id: 1", "id: 2", "id: 3"]
    assert first == core.inbox.snapshot()
    assert first["entries"][0]["session_id"] == other
    later(0.05, open_approval, core, other, "pwd")
    blocks, second = next_named(stream, "inbox")
    response.close()
    assert second["revision"] > first["revision"] and len(second["entries"]) == 2
    assert "id: " not in "".join(blocks)  # no session events in between


def test_session_stream_carries_events_and_inbox_interleaved(client: FlaskClient,
                                                             core: SessionRegistry,
                                                             sid: str) -> None:
    response = client.get(f"/api/sessions/{sid}/stream?after=3&inbox=1", buffered=False)
    stream = frames(response)
    next_named(stream, "inbox")
    # An approval in this very session: its request event and an inbox snapshot.
    later(0.05, open_approval, core, sid)
    blocks, snapshot = next_named(stream, "inbox")
    response.close()
    events = [json.loads(b.split("\n")[1][6:]) for b in blocks if b.startswith("id: ")]
    assert [e["kind"] for e in events] == ["approval_request"]
    assert snapshot["entries"][0]["request_id"] == events[0]["request_id"]


def test_first_inbox_snapshot_follows_caught_up_on_a_long_replay(
        client: FlaskClient, core: SessionRegistry, sid: str) -> None:
    log = core.get(sid).log
    for i in range(600):
        log.append("text", {"text": str(i)})
    response = client.get(f"/api/sessions/{sid}/stream?inbox=1", buffered=False)
    blocks, _ = next_named(frames(response), "inbox")
    response.close()
    assert names(blocks) == ["caught-up", "inbox"]


@pytest.mark.parametrize("query", ["", "?inbox=0", "?inbox=false", "?inbox="])
def test_session_stream_without_the_flag_carries_no_inbox(make_app: Any, query: str) -> None:
    app = make_app(TETHER_KEEPALIVE=0.05)
    client, core = app.test_client(), app.extensions["tether"]
    sid = client.post("/api/sessions").get_json()["id"]
    open_approval(core, sid)
    response = client.get(f"/api/sessions/{sid}/stream{query}", buffered=False)
    blocks, _ = next_named(frames(response), "ping")
    response.close()
    assert "inbox" not in names(blocks)
    assert "caught-up" in names(blocks)


@pytest.mark.parametrize("value", ["maybe", "2", "yes", "TRUE", "-1"])
def test_bad_inbox_flag_on_the_stream_is_400(client: FlaskClient, sid: str,
                                             value: str) -> None:
    response = client.get(f"/api/sessions/{sid}/stream?inbox={value}")
    assert response.status_code == 400
    body = error(response)
    assert body["code"] == "bad_request" and "inbox" in body["message"]


def test_session_stream_with_inbox_ends_when_the_session_is_deleted(
        client: FlaskClient, core: SessionRegistry, sid: str) -> None:
    response = client.get(f"/api/sessions/{sid}/stream?inbox=1", buffered=False)
    stream = frames(response)
    next_named(stream, "inbox")
    later(0.05, core.delete, sid)
    rest = list(stream)  # ends: bounded by the delete
    assert all(not b.startswith("id: ") for b in rest)


def test_closing_a_session_stream_releases_its_watchers(client: FlaskClient,
                                                        core: SessionRegistry,
                                                        sid: str) -> None:
    log = core.get(sid).log
    response = client.get(f"/api/sessions/{sid}/stream?inbox=1", buffered=False)
    stream = frames(response)
    next_named(stream, "inbox")
    # The stream watches its sources while it waits for news (not while a write is under
    # way: blueprints/sse.py pauses the feed across a yield).
    reader = threading.Thread(target=next, args=(stream,))
    reader.start()
    deadline = time.monotonic() + 10
    while len(log._wakeup._flags) != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(log._wakeup._flags) == 1 and len(core.inbox._wakeup._flags) == 1
    log.append("text", {"text": "wake up"})
    reader.join(10)
    response.close()
    assert log._wakeup._flags == set() and core.inbox._wakeup._flags == set()


# -- GET /api/inbox/stream -------------------------------------------------------------------

def test_inbox_stream_starts_with_retry_and_a_snapshot(client: FlaskClient,
                                                       core: SessionRegistry,
                                                       sid: str) -> None:
    open_approval(core, sid)
    response = client.get("/api/inbox/stream", buffered=False)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Accel-Buffering"] == "no"
    stream = frames(response)
    assert next(stream) == "retry: 2000"
    first = next(stream)
    assert first.startswith("event: inbox\ndata: {") and "\nid:" not in first
    snapshot = json.loads(first.split("\n", 1)[1][len("data: "):])
    assert snapshot == core.inbox.snapshot()
    assert snapshot["entries"][0]["session_id"] == sid
    later(0.05, core.get(sid).prompts.cancel_all)
    _, changed = next_named(stream, "inbox")
    response.close()
    assert changed["revision"] > snapshot["revision"] and changed["entries"] == []


def test_inbox_stream_sends_pings_when_idle(make_app: Any) -> None:
    client = make_app(TETHER_KEEPALIVE=0.05).test_client()
    response = client.get("/api/inbox/stream", buffered=False)
    blocks, ping = next_named(frames(response), "ping")
    response.close()
    assert ": keepalive" in blocks and isinstance(ping["ts"], float)
    assert names(blocks) == ["inbox", "ping"]


def test_inbox_stream_ends_when_the_server_stops(client: FlaskClient,
                                                 core: SessionRegistry) -> None:
    response = client.get("/api/inbox/stream", buffered=False)
    stream = frames(response)
    next_named(stream, "inbox")
    later(0.05, core.shutdown)
    rest = list(stream)  # ends, with a last frame that says why (docs/protocol.md)
    assert names(rest) == ["shutdown"]
    assert core.inbox._wakeup._flags == set()


def test_closing_the_inbox_stream_releases_its_watcher(client: FlaskClient,
                                                       core: SessionRegistry) -> None:
    response = client.get("/api/inbox/stream", buffered=False)
    stream = frames(response)
    next_named(stream, "inbox")
    reader = threading.Thread(target=next, args=(stream,))  # waits for news: watching
    reader.start()
    deadline = time.monotonic() + 10
    while len(core.inbox._wakeup._flags) != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(core.inbox._wakeup._flags) == 1
    core.inbox.changed()
    reader.join(10)
    response.close()
    assert core.inbox._wakeup._flags == set()


def test_a_stream_that_is_never_read_subscribes_nothing(client: FlaskClient,
                                                        core: SessionRegistry) -> None:
    # A HEAD request, or a client gone before the first byte: the body never starts, so its
    # `finally` never runs; the feed must not have subscribed in the view.
    sid = client.post("/api/sessions").get_json()["id"]
    log = core.get(sid).log
    for url in (f"/api/sessions/{sid}/stream?inbox=1", "/api/inbox/stream"):
        response = client.head(url)
        assert response.status_code == 200
        response.close()
    assert log._wakeup._flags == set() and core.inbox._wakeup._flags == set()
