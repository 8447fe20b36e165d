"""The JSON API in-process: sessions, prompts, answers, and every error shape."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from tether.sessions import SessionRegistry


def error_code(response: Any) -> str:
    return response.get_json()["error"]["code"]


@pytest.fixture
def sid(client: FlaskClient) -> str:
    return client.post("/api/sessions", json={"title": "t"}).get_json()["id"]


def wait_pending(core: SessionRegistry, sid: str, kind: str = "approvals") -> dict[str, Any]:
    for _ in range(200):
        pending = core.get(sid).to_dict()["pending"][kind]
        if pending:
            return pending[0]
        time.sleep(0.025)
    raise AssertionError("nothing pending")


def test_healthz_and_agents(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    agents = {a["name"]: a for a in client.get("/api/agents").get_json()["agents"]}
    assert agents["local"]["available"] is True
    assert set(agents["claude"]) == {"name", "available", "description"}


def test_create_list_get_delete(client: FlaskClient) -> None:
    created = client.post("/api/sessions", json={"agent": "local", "title": "mine"})
    assert created.status_code == 201
    session = created.get_json()
    assert session["agent"] == "local" and session["title"] == "mine"
    assert session["state"] == "idle" and session["turn"] == 0
    assert session["pending"] == {"approvals": [], "clarify": []}
    assert len(session["id"]) == 32
    listed = client.get("/api/sessions").get_json()
    assert [s["id"] for s in listed["sessions"]] == [session["id"]] and listed["epoch"]
    assert client.get(f"/api/sessions/{session['id']}").get_json()["id"] == session["id"]
    assert client.delete(f"/api/sessions/{session['id']}").status_code == 204
    assert client.get(f"/api/sessions/{session['id']}").status_code == 404


def test_create_without_body_uses_the_default_agent(client: FlaskClient) -> None:
    response = client.post("/api/sessions")
    assert response.status_code == 201 and response.get_json()["agent"] == "local"


@pytest.mark.parametrize("kwargs, status, code, needle", [
    ({"data": "{", "content_type": "application/json"}, 400, "bad_request", "not valid JSON"),
    ({"data": "[]", "content_type": "application/json"}, 400, "bad_request", "JSON object"),
    ({"data": "null", "content_type": "application/json"}, 400, "bad_request", "JSON object"),
    ({"data": '{"text": NaN}', "content_type": "application/json"}, 400, "bad_request", "NaN"),
    ({"data": b'{"text": "\xff"}', "content_type": "application/json"}, 400, "bad_request",
     "JSON"),
    ({"data": "text=hi", "content_type": "text/plain"}, 415, "unsupported_media_type", "JSON"),
    ({"data": '{"text": "hi"}'}, 415, "unsupported_media_type", "JSON"),
    ({"json": {}}, 400, "bad_request", "text"),
    ({"json": {"text": 5}}, 400, "bad_request", "text"),
    ({"json": {"text": "   "}}, 400, "bad_request", "empty"),
    ({"data": "[" * 100_000, "content_type": "application/json"}, 400, "bad_request", "JSON"),
])
def test_prompt_bad_bodies(client: FlaskClient, sid: str, kwargs: dict[str, Any], status: int,
                           code: str, needle: str) -> None:
    response = client.post(f"/api/sessions/{sid}/prompt", **kwargs)
    assert response.status_code == status
    assert error_code(response) == code
    assert needle in response.get_json()["error"]["message"]
    assert client.get(f"/api/sessions/{sid}").get_json()["turn"] == 0


def test_prompt_too_large_is_413(make_app: Any) -> None:
    client = make_app(TETHER_MAX_PROMPT_BYTES=1000).test_client()
    sid = client.post("/api/sessions").get_json()["id"]
    response = client.post(f"/api/sessions/{sid}/prompt", json={"text": "x" * 1001})
    assert response.status_code == 413 and error_code(response) == "payload_too_large"
    huge = client.post(f"/api/sessions/{sid}/prompt", json={"text": "x" * 200_000})
    assert huge.status_code == 413 and error_code(huge) == "payload_too_large"


def test_unknown_session_is_404_everywhere(client: FlaskClient) -> None:
    for method, path in [("get", "/api/sessions/nope"), ("delete", "/api/sessions/nope"),
                         ("post", "/api/sessions/nope/cancel"),
                         ("get", "/api/sessions/nope/events"),
                         ("get", "/api/sessions/nope/stream")]:
        response = getattr(client, method)(path)
        assert response.status_code == 404, path
        assert error_code(response) == "not_found"
    response = client.post("/api/sessions/nope/prompt", json={"text": "hi"})
    assert response.status_code == 404


def test_unknown_agent_is_404(client: FlaskClient) -> None:
    response = client.post("/api/sessions", json={"agent": "nope"})
    assert response.status_code == 404 and "nope" in response.get_json()["error"]["message"]


def test_wrong_method_is_json_405(client: FlaskClient) -> None:
    response = client.put("/api/sessions")
    assert response.status_code == 405 and error_code(response) == "method_not_allowed"


def test_prompt_busy_approve_and_finish(client: FlaskClient, core: SessionRegistry,
                                        sid: str) -> None:
    assert client.post(f"/api/sessions/{sid}/prompt",
                       json={"text": "$ echo hi"}).get_json() == {"turn": 1}
    busy = client.post(f"/api/sessions/{sid}/prompt", json={"text": "again"})
    assert busy.status_code == 409 and error_code(busy) == "session_busy"
    pending = wait_pending(core, sid)
    assert pending["tool_name"] == "Bash" and pending["input"]["command"] == "echo hi"
    assert client.get(f"/api/sessions/{sid}").get_json()["state"] == "waiting"
    url = f"/api/sessions/{sid}/approvals/{pending['request_id']}"
    bad = client.post(url, json={"decision": "maybe"})
    assert bad.status_code == 400 and "decision" in bad.get_json()["error"]["message"]
    ok = client.post(url, json={"decision": "allow", "client": "test tab"})
    assert ok.status_code == 200 and ok.get_json()["decision"] == "allow"
    again = client.post(url, json={"decision": "deny"})
    assert again.status_code == 409 and error_code(again) == "already_resolved"
    assert core.get(sid).wait_idle(10)
    kinds = [e.kind for e in core.get(sid).log.read_after(0)]
    assert kinds.count("turn_end") == 1 and kinds[-1] == "turn_end"
    resolved = next(e for e in core.get(sid).log.read_after(0) if e.kind == "approval_resolved")
    assert resolved.payload["by"] == "test tab"


def test_answer_unknown_request_and_other_sessions_request(client: FlaskClient,
                                                           core: SessionRegistry,
                                                           sid: str) -> None:
    other = client.post("/api/sessions").get_json()["id"]
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "$ echo hi"})
    pending = wait_pending(core, sid)
    assert client.post(f"/api/sessions/{sid}/approvals/unknown",
                       json={"decision": "allow"}).status_code == 404
    stolen = client.post(f"/api/sessions/{other}/approvals/{pending['request_id']}",
                         json={"decision": "allow"})
    assert stolen.status_code == 404
    assert client.post(f"/api/sessions/{sid}/clarify/{pending['request_id']}",
                       json={"answers": {}}).status_code == 404
    client.post(f"/api/sessions/{sid}/cancel")
    assert core.get(sid).wait_idle(10)


def test_clarify_round_trip(client: FlaskClient, core: SessionRegistry, sid: str) -> None:
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "ask Which db? pg | sqlite"})
    pending = wait_pending(core, sid, "clarify")
    question = pending["questions"][0]
    assert question["question"] == "Which db?"
    assert [o["label"] for o in question["options"]] == ["pg", "sqlite"]
    url = f"/api/sessions/{sid}/clarify/{pending['request_id']}"
    assert client.post(url, json={"answers": []}).status_code == 400
    assert client.post(url, json={"answers": {"Which db?": 3}}).status_code == 400
    assert client.post(url, json={"answers": {"Other?": "x"}}).status_code == 400
    assert client.post(url, json={"answers": {"Which db?": "sqlite"}}).status_code == 200
    assert core.get(sid).wait_idle(10)
    texts = [e.payload["text"] for e in core.get(sid).log.read_after(0) if e.kind == "text"]
    assert any("sqlite" in t for t in texts)


def test_cancel(client: FlaskClient, core: SessionRegistry, sid: str) -> None:
    assert client.post(f"/api/sessions/{sid}/cancel").get_json() == {"cancelled": False}
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "$ sleep 30"})
    pending = wait_pending(core, sid)
    assert client.post(f"/api/sessions/{sid}/cancel").get_json() == {"cancelled": True}
    assert core.get(sid).wait_idle(10)
    events = core.get(sid).log.read_after(0)
    resolved = next(e for e in events if e.kind == "approval_resolved")
    assert resolved.payload["request_id"] == pending["request_id"]
    assert resolved.payload["reason"] == "cancelled"
    assert events[-1].kind == "turn_end" and events[-1].payload["reason"] == "cancelled"
    # The session is usable afterwards.
    assert client.post(f"/api/sessions/{sid}/prompt", json={"text": "hi"}).status_code == 202
    assert core.get(sid).wait_idle(10)
