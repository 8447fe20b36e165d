"""The JSON API in-process: sessions, prompts, answers, and every error shape."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from tether.agents.catalog import CLAUDE_CREDENTIAL_VARIABLES
from tether.agents.modes import UNATTENDED_MODES
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
    assert agents["local"]["available"] is True and "reason" not in agents["local"]
    claude = agents["claude"]
    assert set(claude) <= {"name", "available", "description", "reason", "permission_modes",
                           "models", "models_source"}
    assert claude["available"] is ("reason" not in claude)


def test_claude_without_a_login_is_unavailable_with_the_reason(
        make_app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli = tmp_path / "claude"
    cli.write_text("#!/bin/sh\n")
    cli.chmod(0o755)
    for name in CLAUDE_CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    client = make_app(TETHER_CLAUDE_BIN=str(cli)).test_client()

    def claude() -> dict[str, Any]:
        agents = client.get("/api/agents").get_json()["agents"]
        return next(a for a in agents if a["name"] == "claude")

    assert claude()["available"] is False
    assert "ANTHROPIC_API_KEY" in claude()["reason"]
    assert "claude setup-token" in claude()["reason"]
    monkeypatch.setenv("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-x")
    assert claude() == {**claude(), "available": True} and "reason" not in claude()
    monkeypatch.delenv("CLAUDE_CODE_OAUTH_TOKEN")
    (tmp_path / "home" / ".claude").mkdir(parents=True)
    (tmp_path / "home" / ".claude" / ".credentials.json").write_text("{}")
    assert claude()["available"] is True  # logged in with `claude /login` under that HOME
    cli.unlink()
    assert claude()["available"] is False and "not installed" in claude()["reason"]


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


# -- PATCH /api/sessions/<id> (docs/protocol.md, REST additions) ------------------------------

def test_patch_renames_and_answers_the_session_object(client: FlaskClient, sid: str) -> None:
    response = client.patch(f"/api/sessions/{sid}", json={"title": "  renamed  "})
    assert response.status_code == 200
    session = response.get_json()
    assert session["id"] == sid and session["title"] == "renamed"
    assert session["auto_approve"] is False
    assert set(session) >= {"id", "agent", "title", "state", "pending", "last_event_id"}
    assert client.get(f"/api/sessions/{sid}").get_json()["title"] == "renamed"


def test_patch_switches_auto_approve(client: FlaskClient, core: SessionRegistry,
                                     sid: str) -> None:
    assert client.get(f"/api/sessions/{sid}").get_json()["auto_approve"] is False
    on = client.patch(f"/api/sessions/{sid}", json={"auto_approve": True}).get_json()
    assert on["auto_approve"] is True and on["title"] == "t"
    assert core.get(sid).prompts.auto_approve is True
    listed = client.get("/api/sessions").get_json()["sessions"]
    assert listed[0]["auto_approve"] is True
    off = client.patch(f"/api/sessions/{sid}", json={"auto_approve": False}).get_json()
    assert off["auto_approve"] is False and core.get(sid).prompts.auto_approve is False


def test_patch_auto_approve_is_403_when_the_server_disables_it(make_app: Any) -> None:
    client = make_app(TETHER_ALLOW_AUTO_APPROVE="0").test_client()
    sid = client.post("/api/sessions", json={"title": "t"}).get_json()["id"]
    refused = client.patch(f"/api/sessions/{sid}", json={"title": "x", "auto_approve": True})
    assert refused.status_code == 403 and error_code(refused) == "auto_approve_disabled"
    assert "TETHER_ALLOW_AUTO_APPROVE=0" in refused.get_json()["error"]["message"]
    session = client.get(f"/api/sessions/{sid}").get_json()
    assert session["auto_approve"] is False and session["title"] == "t"
    renamed = client.patch(f"/api/sessions/{sid}", json={"title": "renamed"})
    assert renamed.status_code == 200 and renamed.get_json()["title"] == "renamed"


def test_the_page_offers_no_auto_approve_switch_when_the_server_disables_it(
        make_app: Any, client: FlaskClient) -> None:
    switch = re.compile(r'<button[^>]*id="auto-approve-btn"[^>]*>')
    offered = switch.search(client.get("/").get_data(as_text=True))
    assert offered and " hidden" not in offered.group(0)
    page = make_app(TETHER_ALLOW_AUTO_APPROVE="0").test_client().get("/")
    withheld = switch.search(page.get_data(as_text=True))
    assert withheld and withheld.group(0).endswith(" hidden>")


def test_the_page_names_every_agents_modes_that_ask_nobody(client: FlaskClient) -> None:
    """The mode pickers hide them without TETHER_ALLOW_BYPASS (static/js/app.js): the
    server's list, Gemini's yolo and Codex's full-access included, not one of the page's."""
    found = re.search(r'data-unattended-modes="([^"]*)"', client.get("/").get_data(as_text=True))
    assert found and set(found.group(1).split()) == set(UNATTENDED_MODES)
    assert {"yolo", "full-access"} <= set(found.group(1).split())


def test_patch_both_fields_at_once(client: FlaskClient, sid: str) -> None:
    body = client.patch(f"/api/sessions/{sid}",
                        json={"title": "both", "auto_approve": True}).get_json()
    assert (body["title"], body["auto_approve"]) == ("both", True)


@pytest.mark.parametrize("body", [{}, {"title": None}, {"auto_approve": None},
                                  {"unknown": 1, "id": "other", "state": "ended"}])
def test_patch_without_known_fields_changes_nothing(client: FlaskClient, sid: str,
                                                    body: dict[str, Any]) -> None:
    before = client.get(f"/api/sessions/{sid}").get_json()
    response = client.patch(f"/api/sessions/{sid}", json=body)
    assert response.status_code == 200
    assert response.get_json() == before


def test_patch_ignores_unknown_fields_next_to_known_ones(client: FlaskClient, sid: str) -> None:
    body = client.patch(f"/api/sessions/{sid}",
                        json={"title": "ok", "colour": "red"}).get_json()
    assert body["title"] == "ok" and "colour" not in body


@pytest.mark.parametrize("title, needle", [("", "empty"), ("   ", "empty"),
                                           ("x" * 201, "longer than 200")])
def test_patch_bad_title_is_400_and_changes_nothing(client: FlaskClient, sid: str,
                                                    title: str, needle: str) -> None:
    response = client.patch(f"/api/sessions/{sid}", json={"title": title,
                                                          "auto_approve": True})
    assert response.status_code == 400 and error_code(response) == "bad_request"
    assert needle in response.get_json()["error"]["message"]
    session = client.get(f"/api/sessions/{sid}").get_json()
    assert session["title"] == "t" and session["auto_approve"] is False


def test_patch_title_of_exactly_200_characters_is_fine(client: FlaskClient, sid: str) -> None:
    response = client.patch(f"/api/sessions/{sid}", json={"title": "é" * 200})
    assert response.status_code == 200 and response.get_json()["title"] == "é" * 200


@pytest.mark.parametrize("body, field", [
    ({"title": 5}, "title"), ({"title": ["a"]}, "title"), ({"title": True}, "title"),
    ({"auto_approve": "yes"}, "auto_approve"), ({"auto_approve": 1}, "auto_approve"),
    ({"auto_approve": "true"}, "auto_approve"), ({"auto_approve": 0}, "auto_approve"),
    ({"auto_approve": {}}, "auto_approve"),
])
def test_patch_wrong_types_are_400_naming_the_field(client: FlaskClient, sid: str,
                                                    body: dict[str, Any], field: str) -> None:
    response = client.patch(f"/api/sessions/{sid}", json=body)
    assert response.status_code == 400 and error_code(response) == "bad_request"
    assert f"body.{field}" in response.get_json()["error"]["message"]
    assert client.get(f"/api/sessions/{sid}").get_json()["auto_approve"] is False


@pytest.mark.parametrize("kwargs, status, code", [
    ({"data": "{", "content_type": "application/json"}, 400, "bad_request"),
    ({"data": "[]", "content_type": "application/json"}, 400, "bad_request"),
    ({"data": "", "content_type": "application/json"}, 400, "bad_request"),
    ({"data": '{"title": "x"}', "content_type": "text/plain"}, 415, "unsupported_media_type"),
    ({}, 415, "unsupported_media_type"),
])
def test_patch_bad_bodies(client: FlaskClient, sid: str, kwargs: dict[str, Any], status: int,
                          code: str) -> None:
    response = client.patch(f"/api/sessions/{sid}", **kwargs)
    assert response.status_code == status and error_code(response) == code


def test_patch_unknown_session_is_404(client: FlaskClient) -> None:
    response = client.patch("/api/sessions/nope", json={"title": "x"})
    assert response.status_code == 404 and error_code(response) == "not_found"
    # The session is looked up first: a bad body on an unknown session is still 404.
    assert client.patch("/api/sessions/nope", json={"title": 5}).status_code == 404


def test_patch_deleted_session_is_404(client: FlaskClient, sid: str) -> None:
    client.delete(f"/api/sessions/{sid}")
    assert client.patch(f"/api/sessions/{sid}", json={"title": "x"}).status_code == 404


def test_auto_approve_over_http_lets_a_turn_finish_alone(client: FlaskClient,
                                                         core: SessionRegistry,
                                                         sid: str) -> None:
    client.patch(f"/api/sessions/{sid}", json={"auto_approve": True})
    assert client.post(f"/api/sessions/{sid}/prompt",
                       json={"text": "$ echo hi"}).status_code == 202
    assert core.get(sid).wait_idle(30)
    events = core.get(sid).log.read_after(0)
    resolved = [e.payload for e in events if e.kind == "approval_resolved"]
    assert len(resolved) == 1
    assert (resolved[0]["reason"], resolved[0]["by"], resolved[0]["decision"]) == (
        "auto", "auto-approve", "allow")
    assert events[-1].kind == "turn_end" and events[-1].payload["reason"] == "completed"
    assert client.get(f"/api/sessions/{sid}").get_json()["pending"] == {"approvals": [],
                                                                        "clarify": []}


# -- GET /api/sessions/<id>/transcript.jsonl --------------------------------------------------

def test_transcript_is_json_lines_as_a_download(client: FlaskClient, core: SessionRegistry,
                                                sid: str) -> None:
    log = core.get(sid).log
    log.append("user", {"turn": 1, "text": "multi\nline \u2028 é"})
    for i in range(4):
        log.append("text", {"text": f"line {i}"})
    response = client.get(f"/api/sessions/{sid}/transcript.jsonl")
    assert response.status_code == 200
    assert response.mimetype == "application/jsonl"
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="tether-{sid[:12]}.jsonl"')
    assert response.headers["Cache-Control"] == "no-store"
    raw = response.get_data()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert len(lines) == 5
    events = [json.loads(line) for line in lines]
    assert all(isinstance(e, dict) for e in events)
    assert [e["id"] for e in events] == [1, 2, 3, 4, 5]
    assert all(e["session_id"] == sid for e in events)
    assert events[0]["kind"] == "user" and events[0]["text"] == "multi\nline \u2028 é"
    assert lines == [e.data for e in log.read_after(0)]


def test_transcript_of_an_empty_log_is_empty(client: FlaskClient, sid: str) -> None:
    response = client.get(f"/api/sessions/{sid}/transcript.jsonl")
    assert response.status_code == 200 and response.get_data() == b""


def test_transcript_of_a_real_turn(client: FlaskClient, core: SessionRegistry,
                                   sid: str) -> None:
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "hello"})
    assert core.get(sid).wait_idle(30)
    lines = client.get(f"/api/sessions/{sid}/transcript.jsonl").get_data().splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["kind"] == "user" and events[-1]["kind"] == "turn_end"


def test_transcript_of_an_unknown_session_is_404(client: FlaskClient) -> None:
    response = client.get("/api/sessions/nope/transcript.jsonl")
    assert response.status_code == 404 and error_code(response) == "not_found"


# -- issue 17: Stop, titles from the first prompt, deleting the workspace ----------------------

def test_a_stop_is_no_error_in_the_log(client: FlaskClient, core: SessionRegistry,
                                       sid: str) -> None:
    """The agent answers Stop with an error result; the log marks it ``stopped`` and holds no
    ``error`` event, so no client shows a failure for it."""
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "$ sleep 30"})
    pending = wait_pending(core, sid)
    client.post(f"/api/sessions/{sid}/approvals/{pending['request_id']}",
                json={"decision": "allow"})
    for _ in range(200):  # the command runs
        if any(e.kind == "approval_resolved" for e in core.get(sid).log.read_after(0)):
            break
        time.sleep(0.025)
    time.sleep(0.2)
    assert client.post(f"/api/sessions/{sid}/cancel").get_json() == {"cancelled": True}
    assert core.get(sid).wait_idle(10)
    events = core.get(sid).log.read_after(0)
    assert [e.kind for e in events if e.kind == "error"] == []
    result = next(e for e in events if e.kind == "result")
    assert result.payload["stopped"] is True and result.payload["is_error"] is True
    assert events[-1].payload["reason"] == "cancelled"
    assert client.get(f"/api/sessions/{sid}").get_json()["state"] == "idle"


def test_a_completed_turn_s_result_is_not_marked_stopped(client: FlaskClient,
                                                         core: SessionRegistry, sid: str) -> None:
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "help"})
    assert core.get(sid).wait_idle(10)
    result = next(e for e in core.get(sid).log.read_after(0) if e.kind == "result")
    assert "stopped" not in result.payload


def test_the_first_prompt_names_an_unnamed_session(client: FlaskClient,
                                                   core: SessionRegistry) -> None:
    session = client.post("/api/sessions", json={"agent": "local"}).get_json()
    assert session["title"] == "local session"
    sid = session["id"]
    client.post(f"/api/sessions/{sid}/prompt",
                json={"text": "\n  $ echo   hello\tthere  \nand a second line"})
    assert client.get(f"/api/sessions/{sid}").get_json()["title"] == "$ echo hello there"
    listed = client.get("/api/sessions").get_json()["sessions"]
    assert [s["title"] for s in listed] == ["$ echo hello there"]
    # The inbox shows it too (the turn waits for an approval).
    pending = wait_pending(core, sid)
    entries = client.get("/api/inbox").get_json()["entries"]
    assert [(e["request_id"], e["session_title"]) for e in entries] == [
        (pending["request_id"], "$ echo hello there")]
    client.post(f"/api/sessions/{sid}/cancel")
    assert core.get(sid).wait_idle(10)
    # Only the first prompt names it.
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "help"})
    assert core.get(sid).wait_idle(10)
    assert client.get(f"/api/sessions/{sid}").get_json()["title"] == "$ echo hello there"


def test_a_long_first_prompt_is_shortened_on_a_word_boundary(client: FlaskClient,
                                                             core: SessionRegistry) -> None:
    sid = client.post("/api/sessions").get_json()["id"]
    text = ("Please look at the failing deployment of the billing service and tell me "
            "why the health check keeps timing out")
    client.post(f"/api/sessions/{sid}/prompt", json={"text": text})
    title = client.get(f"/api/sessions/{sid}").get_json()["title"]
    assert title == "Please look at the failing deployment of the billing…"
    assert len(title) <= 60 and text.startswith(title[:-1])
    assert core.get(sid).wait_idle(10)
    sid = client.post("/api/sessions").get_json()["id"]
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "x" * 300})
    assert client.get(f"/api/sessions/{sid}").get_json()["title"] == "x" * 59 + "…"
    assert core.get(sid).wait_idle(10)


def test_a_title_a_person_chose_is_kept(client: FlaskClient, core: SessionRegistry) -> None:
    given = client.post("/api/sessions", json={"title": "Nightly build"}).get_json()["id"]
    renamed = client.post("/api/sessions").get_json()["id"]
    assert client.patch(f"/api/sessions/{renamed}", json={"title": "Mine"}).status_code == 200
    for sid in (given, renamed):
        client.post(f"/api/sessions/{sid}/prompt", json={"text": "help"})
        assert core.get(sid).wait_idle(10)
    assert client.get(f"/api/sessions/{given}").get_json()["title"] == "Nightly build"
    assert client.get(f"/api/sessions/{renamed}").get_json()["title"] == "Mine"


def test_the_title_from_the_first_prompt_survives_a_restart_and_a_rename_wins(
        make_app: Any) -> None:
    app = make_app(TETHER_STORE="sqlite")
    client, core = app.test_client(), app.extensions["tether"]
    sid = client.post("/api/sessions").get_json()["id"]
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "help me"})
    assert core.get(sid).wait_idle(10)
    core.shutdown()
    client = make_app(TETHER_STORE="sqlite").test_client()
    assert client.get(f"/api/sessions/{sid}").get_json()["title"] == "help me"
    client.patch(f"/api/sessions/{sid}", json={"title": "Renamed"})
    assert client.get(f"/api/sessions/{sid}").get_json()["title"] == "Renamed"


def test_delete_removes_the_session_s_own_workspace_but_no_symlink_target(
        client: FlaskClient, core: SessionRegistry, tmp_path: Any) -> None:
    sid = client.post("/api/sessions").get_json()["id"]
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "$ echo made > made.txt"})
    allow = wait_pending(core, sid)
    client.post(f"/api/sessions/{sid}/approvals/{allow['request_id']}",
                json={"decision": "allow"})
    assert core.get(sid).wait_idle(10)
    workspace = core.settings.data_dir / "sessions" / sid
    assert (workspace / "made.txt").read_text() == "made\n"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    (workspace / "link").symlink_to(outside)
    (workspace / "file-link").symlink_to(outside / "precious.txt")
    (workspace / "sub").mkdir()
    (workspace / "sub" / "deep.txt").write_text("x")
    other = client.post("/api/sessions").get_json()["id"]

    assert client.delete(f"/api/sessions/{sid}").status_code == 204
    assert not workspace.exists() and not workspace.is_symlink()
    assert (outside / "precious.txt").read_text() == "keep me"
    assert (core.settings.data_dir / "sessions" / other).is_dir()  # another session's stays


def test_delete_leaves_a_workspace_that_is_not_the_session_s_own(make_app: Any,
                                                                 tmp_path: Any) -> None:
    """A session whose record names another folder (one it was opened in), or whose own
    workspace path is a symbolic link, keeps that folder."""
    from tether.stores.base import SessionRecord

    app = make_app(TETHER_STORE="sqlite")
    core = app.extensions["tether"]
    mine = tmp_path / "my-project"
    mine.mkdir()
    (mine / "code.py").write_text("print(1)")
    core.store.save_session(SessionRecord("a" * 32, "local", "opened", 1.0, str(mine), False,
                                          "x", 0, True))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data.txt").write_text("keep")
    linked = core.settings.data_dir / "sessions" / ("b" * 32)
    linked.parent.mkdir(parents=True, exist_ok=True)
    linked.symlink_to(elsewhere)
    core.store.save_session(SessionRecord("b" * 32, "local", "linked", 2.0, str(linked), False,
                                          "y", 0, True))
    core.shutdown()
    client = make_app(TETHER_STORE="sqlite").test_client()
    assert client.delete(f"/api/sessions/{'a' * 32}").status_code == 204
    assert client.delete(f"/api/sessions/{'b' * 32}").status_code == 204
    assert (mine / "code.py").read_text() == "print(1)"
    assert linked.is_symlink() and (elsewhere / "data.txt").read_text() == "keep"
