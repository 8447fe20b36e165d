"""Queued prompts (issue 17, item 8): typing ahead while a turn runs, over HTTP and JSON-RPC.

A prompt with ``queue: true`` on a busy session waits on the server (``prompt_queued``), goes
out by itself when the turn ends ``completed``, stays when the turn was stopped, and the user
sends it now or removes it (``prompt_dequeued``). Without ``queue`` a busy session is a 409.
"""

from __future__ import annotations

import json
import time
from typing import Any

from flask.testing import FlaskClient

from blueprints import jsonrpc
from blueprints.ws import Connection
from tests.blueprints.test_ws import FakeWebSocket
from tether.sessions import MAX_QUEUED, SessionRegistry


def error_code(response: Any) -> str:
    return response.get_json()["error"]["code"]


def new_session(client: FlaskClient) -> str:
    return client.post("/api/sessions", json={"title": "queue"}).get_json()["id"]


def wait_pending(core: SessionRegistry, sid: str, turn: int) -> dict[str, Any]:
    """The pending approval of turn ``turn`` (the session has reached that turn)."""
    for _ in range(400):
        session = core.get(sid)
        pending = session.to_dict()["pending"]["approvals"]
        if session.turn == turn and pending:
            return pending[0]
        time.sleep(0.025)
    raise AssertionError(f"no approval pending in turn {turn}")


def allow(client: FlaskClient, sid: str, pending: dict[str, Any]) -> None:
    response = client.post(f"/api/sessions/{sid}/approvals/{pending['request_id']}",
                           json={"decision": "allow"})
    assert response.status_code == 200


def events(core: SessionRegistry, sid: str, *kinds: str) -> list[dict[str, Any]]:
    return [e.as_dict() for e in core.get(sid).log.read_after(0) if not kinds or e.kind in kinds]


def queue_of(client: FlaskClient, sid: str) -> list[dict[str, Any]]:
    return client.get(f"/api/sessions/{sid}").get_json()["queue"]


def test_queued_prompts_are_sent_in_order_as_each_turn_completes(
        client: FlaskClient, core: SessionRegistry) -> None:
    sid = new_session(client)
    assert client.post(f"/api/sessions/{sid}/prompt",
                       json={"text": "$ echo one"}).get_json() == {"turn": 1}
    first = wait_pending(core, sid, 1)
    second = client.post(f"/api/sessions/{sid}/prompt", json={"text": "$ echo two", "queue": True})
    assert second.status_code == 202 and second.get_json() == {"queued": 1}
    third = client.post(f"/api/sessions/{sid}/prompt", json={"text": "help", "queue": True})
    assert third.get_json() == {"queued": 2}
    queue = queue_of(client, sid)
    assert [(q["n"], q["text"]) for q in queue] == [(1, "$ echo two"), (2, "help")]
    queued = events(core, sid, "prompt_queued")
    assert [(e["position"], e["text"], e["queue_id"]) for e in queued] == [
        (1, "$ echo two", queue[0]["queue_id"]), (2, "help", queue[1]["queue_id"])]

    allow(client, sid, first)
    # Turn 1 completes; turn 2 starts by itself with the first queued prompt.
    allow(client, sid, wait_pending(core, sid, 2))
    assert core.get(sid).wait_idle(10)
    for _ in range(200):  # turn 3 (help, no approval) starts at turn 2's end
        if core.get(sid).turn == 3 and core.get(sid).wait_idle(0):
            break
        time.sleep(0.025)
    log = events(core, sid, "user", "turn_end", "prompt_dequeued")
    assert [(e["kind"], e.get("turn"), e.get("reason"), e.get("text")) for e in log] == [
        ("user", 1, None, "$ echo one"),
        ("turn_end", 1, "completed", None),
        ("prompt_dequeued", None, "sent", None),
        ("user", 2, None, "$ echo two"),
        ("turn_end", 2, "completed", None),
        ("prompt_dequeued", None, "sent", None),
        ("user", 3, None, "help"),
        ("turn_end", 3, "completed", None),
    ]
    assert [e["queue_id"] for e in log if e["kind"] == "prompt_dequeued"] == [
        q["queue_id"] for q in queue]
    assert queue_of(client, sid) == []


def test_without_queue_a_busy_session_still_answers_409(client: FlaskClient,
                                                        core: SessionRegistry) -> None:
    sid = new_session(client)
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "$ echo busy"})
    wait_pending(core, sid, 1)
    for body in ({"text": "later"}, {"text": "later", "queue": False}):
        busy = client.post(f"/api/sessions/{sid}/prompt", json=body)
        assert busy.status_code == 409 and error_code(busy) == "session_busy"
    assert queue_of(client, sid) == []
    bad = client.post(f"/api/sessions/{sid}/prompt", json={"text": "x", "queue": "yes"})
    assert bad.status_code == 400 and "queue" in bad.get_json()["error"]["message"]
    client.post(f"/api/sessions/{sid}/cancel")
    assert core.get(sid).wait_idle(10)


def test_queue_on_an_idle_session_starts_the_turn(client: FlaskClient,
                                                   core: SessionRegistry) -> None:
    sid = new_session(client)
    started = client.post(f"/api/sessions/{sid}/prompt", json={"text": "help", "queue": True})
    assert started.status_code == 202 and started.get_json() == {"turn": 1}
    assert core.get(sid).wait_idle(10)
    assert events(core, sid, "prompt_queued") == []


def test_a_stopped_turn_keeps_the_queue_and_send_now_sends_it(client: FlaskClient,
                                                              core: SessionRegistry) -> None:
    sid = new_session(client)
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "$ sleep 30"})
    allow(client, sid, wait_pending(core, sid, 1))
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "help", "queue": True})
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "$ echo later", "queue": True})
    # While the turn runs, "send now" is refused and the prompt stays.
    busy = client.post(f"/api/sessions/{sid}/queue/1/send")
    assert busy.status_code == 409 and error_code(busy) == "session_busy"
    assert len(queue_of(client, sid)) == 2
    assert client.post(f"/api/sessions/{sid}/cancel").get_json() == {"cancelled": True}
    assert core.get(sid).wait_idle(10)
    time.sleep(0.2)  # nothing is sent by itself after a Stop
    assert core.get(sid).turn == 1 and core.get(sid).state == "idle"
    assert [q["text"] for q in queue_of(client, sid)] == ["help", "$ echo later"]
    queue_id = queue_of(client, sid)[0]["queue_id"]
    sent = client.post(f"/api/sessions/{sid}/queue/1/send?queue_id={queue_id}")
    assert sent.status_code == 202 and sent.get_json() == {"turn": 2}
    # "help" completes, so the rest of the queue goes on by itself: turn 3 waits for approval.
    wait_pending(core, sid, 3)
    assert queue_of(client, sid) == []
    dequeued = events(core, sid, "prompt_dequeued")
    assert [(e["queue_id"], e["position"], e["reason"]) for e in dequeued][0] == (
        queue_id, 1, "sent")
    assert [e["text"] for e in events(core, sid, "user")] == ["$ sleep 30", "help",
                                                               "$ echo later"]
    client.post(f"/api/sessions/{sid}/cancel")
    assert core.get(sid).wait_idle(10)


def test_remove_moves_the_rest_up_and_bad_positions_are_refused(client: FlaskClient,
                                                                core: SessionRegistry) -> None:
    sid = new_session(client)
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "$ echo busy"})
    wait_pending(core, sid, 1)
    for text in ("a", "b", "c"):
        client.post(f"/api/sessions/{sid}/prompt", json={"text": text, "queue": True})
    b_id = queue_of(client, sid)[1]["queue_id"]
    assert client.delete(f"/api/sessions/{sid}/queue/2?queue_id={b_id}").status_code == 204
    assert [(q["n"], q["text"]) for q in queue_of(client, sid)] == [(1, "a"), (2, "c")]
    removed = events(core, sid, "prompt_dequeued")
    assert [(e["queue_id"], e["position"], e["reason"]) for e in removed] == [
        (b_id, 2, "removed")]
    # The same request again: position 2 now holds "c", not the prompt it named.
    stale = client.delete(f"/api/sessions/{sid}/queue/2?queue_id={b_id}")
    assert stale.status_code == 404 and error_code(stale) == "not_found"
    for path in ("queue/3", "queue/0", "queue/99999999999"):
        missing = client.delete(f"/api/sessions/{sid}/{path}")
        assert missing.status_code == 404 and error_code(missing) == "not_found", path
        assert client.post(f"/api/sessions/{sid}/{path}/send").status_code == 404, path
    for path in ("queue/-1", "queue/x", "queue/1.0"):
        bad = client.delete(f"/api/sessions/{sid}/{path}")
        assert bad.status_code == 400 and "position" in bad.get_json()["error"]["message"]
    assert client.delete("/api/sessions/nope/queue/1").status_code == 404
    assert [q["text"] for q in queue_of(client, sid)] == ["a", "c"]
    client.post(f"/api/sessions/{sid}/cancel")
    assert core.get(sid).wait_idle(10)


def test_the_queue_has_a_length_limit_and_each_prompt_the_size_limit(make_app: Any) -> None:
    app = make_app(TETHER_MAX_PROMPT_BYTES=1000)
    client, core = app.test_client(), app.extensions["tether"]
    sid = new_session(client)
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "$ echo busy"})
    wait_pending(core, sid, 1)
    big = client.post(f"/api/sessions/{sid}/prompt", json={"text": "x" * 1001, "queue": True})
    assert big.status_code == 413 and error_code(big) == "payload_too_large"
    blank = client.post(f"/api/sessions/{sid}/prompt", json={"text": "  ", "queue": True})
    assert blank.status_code == 400
    for n in range(1, MAX_QUEUED + 1):
        queued = client.post(f"/api/sessions/{sid}/prompt", json={"text": f"p{n}", "queue": True})
        assert queued.get_json() == {"queued": n}
    full = client.post(f"/api/sessions/{sid}/prompt", json={"text": "one more", "queue": True})
    assert full.status_code == 409 and error_code(full) == "queue_full"
    assert str(MAX_QUEUED) in full.get_json()["error"]["message"]
    assert len(queue_of(client, sid)) == MAX_QUEUED
    client.post(f"/api/sessions/{sid}/cancel")
    assert core.get(sid).wait_idle(10)


def test_the_queue_over_json_rpc(core: SessionRegistry) -> None:
    connection = Connection(FakeWebSocket(), core, "ws test")

    def call(method: str, **params: Any) -> dict[str, Any]:
        reply = jsonrpc.handle(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                                           "params": params}), connection.call)
        return json.loads(reply or "null")

    session = core.create(title="ws queue")
    assert call("prompt.submit", session_id=session.id, text="$ sleep 30")["result"] == {
        "turn": 1}
    wait_pending(core, session.id, 1)
    busy = call("prompt.submit", session_id=session.id, text="help")
    assert busy["error"]["code"] == -32002 and busy["error"]["data"]["code"] == "session_busy"
    for n, text in enumerate(("help", "$ echo x", "help again"), 1):
        assert call("prompt.submit", session_id=session.id, text=text,
                    queue=True)["result"] == {"queued": n}
    assert call("queue.send", session_id=session.id, n=1)["error"]["code"] == -32002
    assert call("queue.remove", session_id=session.id, n=2)["result"] == {"removed": True}
    assert call("queue.remove", session_id=session.id, n=9)["error"]["code"] == -32001
    assert call("queue.remove", session_id=session.id, n=0)["error"]["code"] == -32602
    got = call("session.get", session_id=session.id)["result"]["queue"]
    assert [(q["n"], q["text"]) for q in got] == [(1, "help"), (2, "help again")]
    session.cancel()
    assert session.wait_idle(10)
    assert call("queue.send", session_id=session.id, n=2,
                queue_id=got[1]["queue_id"])["result"] == {"turn": 2}
    # "help again" completes; then "help" goes out by itself as turn 3.
    for _ in range(400):
        if session.turn == 3 and session.wait_idle(0):
            break
        time.sleep(0.025)
    assert session.queue == [] and session.turn == 3
    users = [e.payload["text"] for e in session.log.read_after(0) if e.kind == "user"]
    assert users == ["$ sleep 30", "help again", "help"]


def test_the_queue_survives_a_restart_with_the_durable_store(make_app: Any) -> None:
    app = make_app(TETHER_STORE="sqlite")
    client, core = app.test_client(), app.extensions["tether"]
    sid = new_session(client)
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "$ echo busy"})
    wait_pending(core, sid, 1)
    for text in ("first", "second", "third"):
        client.post(f"/api/sessions/{sid}/prompt", json={"text": text, "queue": True})
    client.delete(f"/api/sessions/{sid}/queue/2")
    before = queue_of(client, sid)
    core.shutdown()  # the turn ends "interrupted": the queue stays

    again = make_app(TETHER_STORE="sqlite").test_client()
    assert queue_of(again, sid) == before
    assert [q["text"] for q in before] == ["first", "third"]
    sent = again.post(f"/api/sessions/{sid}/queue/2/send")
    assert sent.get_json() == {"turn": 2}
