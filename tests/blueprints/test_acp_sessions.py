"""An Agent Client Protocol agent declared in ``TETHER_AGENT_SERVERS``, driven through
Tether's HTTP API: tests/fixtures/acp_agent.py (a scripted ACP agent that follows the schema)
as the entry ``scripted``, a real subprocess per session."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.blueprints.test_api import error_code, wait_pending
from tether.sessions import SessionRegistry

AGENT = Path(__file__).parents[1] / "fixtures" / "acp_agent.py"

pytestmark = pytest.mark.timeout(90)


def servers_file(tmp_path: Path) -> Path:
    path = tmp_path / "agents.json"
    path.write_text(json.dumps({"scripted": {
        "command": sys.executable, "args": [str(AGENT), "--state", str(tmp_path / "state")],
        "env": {"PYTHONUNBUFFERED": "1"}}}))
    return path


@pytest.fixture
def app(make_app: Any, tmp_path: Path) -> Flask:
    # Idle timeout 0: every turn starts a new agent process, which must load the session.
    return make_app(TETHER_AGENT_SERVERS=str(servers_file(tmp_path)),
                    TETHER_AGENT_IDLE_TIMEOUT=0)


@pytest.fixture
def core(app: Flask) -> SessionRegistry:
    registry: SessionRegistry = app.extensions["tether"]
    return registry


@pytest.fixture
def sid(client: FlaskClient) -> str:
    created = client.post("/api/sessions", json={"agent": "scripted"})
    assert created.status_code == 201, created.get_json()
    return str(created.get_json()["id"])


def turn(client: FlaskClient, core: SessionRegistry, sid: str, text: str,
         answer: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One prompt; ``answer``: the body that answers its one approval. The turn's events."""
    before = core.get(sid).log.last_id
    assert client.post(f"/api/sessions/{sid}/prompt", json={"text": text}).status_code == 202
    if answer is not None:
        pending = wait_pending(core, sid)
        url = f"/api/sessions/{sid}/approvals/{pending['request_id']}"
        reply = client.post(url, json=answer)
        assert reply.status_code == 200, reply.get_json()
    assert core.get(sid).wait_idle(30)
    return [{"kind": e.kind, **e.payload} for e in core.get(sid).log.read_after(before)]


def workspace(client: FlaskClient, sid: str) -> Path:
    return Path(client.get(f"/api/sessions/{sid}").get_json()["cwd"])


def test_the_declared_agent_is_listed_available(client: FlaskClient) -> None:
    agents = {a["name"]: a for a in client.get("/api/agents").get_json()["agents"]}
    assert agents["scripted"]["available"] is True
    assert {"local", "claude", "codex", "gemini"} <= set(agents)


def test_a_text_turn(client: FlaskClient, core: SessionRegistry, sid: str) -> None:
    events = turn(client, core, sid, "hello there")
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "user" and kinds[-1] == "turn_end"
    assert events[-1]["reason"] == "completed"
    assert "agent_session" in kinds and "text_delta" in kinds and "result" in kinds
    text = next(e for e in events if e["kind"] == "text")
    assert text["text"] == "You said: hello there"
    # The agent's modes, from its session/new, are now what the API offers.
    agents = {a["name"]: a for a in client.get("/api/agents").get_json()["agents"]}
    assert agents["scripted"]["permission_modes"] == ["default", "plan"]


def test_an_approval_answered_with_the_agents_own_options(client: FlaskClient,
                                                           core: SessionRegistry,
                                                           sid: str) -> None:
    assert client.post(f"/api/sessions/{sid}/prompt", json={"text": "[tool]"}).status_code == 202
    pending = wait_pending(core, sid)
    kinds = {o["kind"] for o in pending["options"]}
    assert {"allow_once", "reject_once"} <= kinds
    allow = next(o for o in pending["options"] if o["kind"] == "allow_once")
    reject = next(o for o in pending["options"] if o["kind"] == "reject_once")
    url = f"/api/sessions/{sid}/approvals/{pending['request_id']}"
    # An option that says the opposite of the decision settles nothing.
    wrong = client.post(url, json={"decision": "allow", "option_id": reject["option_id"]})
    assert wrong.status_code == 400 and error_code(wrong) == "bad_request"
    assert client.post(url, json={"decision": "allow",
                                  "option_id": allow["option_id"]}).status_code == 200
    assert core.get(sid).wait_idle(30)
    events = [{"kind": e.kind, **e.payload} for e in core.get(sid).log.read_after(0)]
    resolved = next(e for e in events if e["kind"] == "approval_resolved")
    assert resolved["option_id"] == allow["option_id"] and resolved["decision"] == "allow"
    assert (workspace(client, sid) / "made.txt").is_file()
    assert events[-1] == {**events[-1], "kind": "turn_end", "reason": "completed"}


def test_a_denied_approval_writes_nothing(client: FlaskClient, core: SessionRegistry,
                                          sid: str) -> None:
    events = turn(client, core, sid, "[tool]", answer={"decision": "deny"})
    assert not (workspace(client, sid) / "made.txt").exists()
    result = next(e for e in events if e["kind"] == "tool_result")
    assert result["is_error"] is True
    assert events[-1]["reason"] == "completed"


def test_stop_with_an_approval_open(client: FlaskClient, core: SessionRegistry,
                                    sid: str) -> None:
    assert client.post(f"/api/sessions/{sid}/prompt", json={"text": "[tool]"}).status_code == 202
    wait_pending(core, sid)
    assert client.post(f"/api/sessions/{sid}/cancel").get_json() == {"cancelled": True}
    assert core.get(sid).wait_idle(30)
    events = [{"kind": e.kind, **e.payload} for e in core.get(sid).log.read_after(0)]
    resolved = [e for e in events if e["kind"] == "approval_resolved"]
    ends = [e for e in events if e["kind"] == "turn_end"]
    assert [e["reason"] for e in resolved] == ["cancelled"]
    assert [e["reason"] for e in ends] == ["cancelled"]
    assert not core.get(sid).agent_running
    assert not (workspace(client, sid) / "made.txt").exists()


def test_a_new_process_loads_the_conversation(client: FlaskClient, core: SessionRegistry,
                                              sid: str) -> None:
    turn(client, core, sid, "remember the number 42")
    events = turn(client, core, sid, "[history]")
    text = next(e["text"] for e in events if e["kind"] == "text")
    assert "remember the number 42" in text
    # The replayed history is not output of the new turn.
    assert sum(e["kind"] == "text" for e in events) == 1
    sessions = [e for e in core.get(sid).log.read_after(0) if e.kind == "agent_session"]
    assert len({e.payload["agent_session_id"] for e in sessions}) == 1


def test_a_plan_is_an_event(client: FlaskClient, core: SessionRegistry, sid: str) -> None:
    events = turn(client, core, sid, "[plan]")
    plan = next(e for e in events if e["kind"] == "plan")
    assert plan["entries"] and {"content", "priority", "status"} <= set(plan["entries"][0])


def test_a_read_outside_the_workspace_is_refused(client: FlaskClient, core: SessionRegistry,
                                                 sid: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("PASSWORD=hunter2")
    events = turn(client, core, sid, f"[read {secret}]")
    text = next(e["text"] for e in events if e["kind"] == "text")
    assert "hunter2" not in text and "-32602" in text and "outside" in text


def test_a_mode_the_agent_offers_can_be_set(client: FlaskClient, core: SessionRegistry,
                                            sid: str) -> None:
    turn(client, core, sid, "hello")  # the agent has said which modes it offers
    changed = client.patch(f"/api/sessions/{sid}", json={"permission_mode": "plan"})
    assert changed.status_code == 200 and changed.get_json()["permission_mode"] == "plan"
    unknown = client.patch(f"/api/sessions/{sid}", json={"permission_mode": "yolo"})
    assert unknown.status_code == 400


def test_a_bad_agent_servers_file_stops_the_server_naming_the_entry(
        make_app: Any, tmp_path: Path) -> None:
    path = tmp_path / "agents.json"
    path.write_text(json.dumps({"broken": {"args": ["--acp"]}}))
    with pytest.raises(Exception, match=r"(?s)agents\.json.*broken.*command"):
        make_app(TETHER_AGENT_SERVERS=str(path))


def test_an_unavailable_declared_agent_is_refused_with_the_setting(
        make_app: Any, tmp_path: Path) -> None:
    path = tmp_path / "agents.json"
    path.write_text(json.dumps({"gone": {"command": str(tmp_path / "no-such-agent")}}))
    client = make_app(TETHER_AGENT_SERVERS=str(path)).test_client()
    agents = {a["name"]: a for a in client.get("/api/agents").get_json()["agents"]}
    assert agents["gone"]["available"] is False and agents["gone"]["reason"]
    refused = client.post("/api/sessions", json={"agent": "gone"})
    assert refused.status_code == 400 and error_code(refused) == "agent_unavailable"
    assert "TETHER_AGENT_SERVERS" in refused.get_json()["error"]["message"]


def test_no_agent_process_outlives_the_session(client: FlaskClient, core: SessionRegistry,
                                               sid: str) -> None:
    assert client.post(f"/api/sessions/{sid}/prompt", json={"text": "[slow]"}).status_code == 202
    deadline = time.monotonic() + 10
    while not core.get(sid).agent_running and time.monotonic() < deadline:
        time.sleep(0.05)
    host = core.get(sid)._host
    process = host._process
    assert process is not None
    assert client.delete(f"/api/sessions/{sid}").status_code == 204
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the agent process outlived its session")


def test_an_agent_that_never_answers_initialize_fails_its_turn_in_bounded_time(
        make_app: Any, tmp_path: Path) -> None:
    """A CLI that reads nothing and says nothing (``sleep``): the turn ends ``error`` after
    ``TETHER_AGENT_START_TIMEOUT``, saying so, and no process is left."""
    path = tmp_path / "agents.json"
    path.write_text(json.dumps({"mute": {"command": "/bin/sleep", "args": ["60"]}}))
    app = make_app(TETHER_AGENT_SERVERS=str(path), TETHER_AGENT_START_TIMEOUT=1)
    client, core = app.test_client(), app.extensions["tether"]
    sid = client.post("/api/sessions", json={"agent": "mute"}).get_json()["id"]
    events = turn(client, core, sid, "hello")
    assert events[-1] == {**events[-1], "kind": "turn_end", "reason": "error"}
    [error] = [e["message"] for e in events if e["kind"] == "error"]
    assert "TETHER_AGENT_START_TIMEOUT" in error and "initialize" in error
    assert not core.get(sid).agent_running


def test_an_agent_that_prints_junk_is_skipped_and_bounded(make_app: Any,
                                                         tmp_path: Path) -> None:
    """Lines that are not JSON: one ``error`` event for the first, the rest dropped; the
    agent's exit ends the turn ``error`` with its stderr."""
    script = tmp_path / "junk.py"
    script.write_text("import sys\nfor n in range(1000):\n    print('not json', n)\n"
                      "sys.stdout.flush()\nprint('giving up', file=sys.stderr)\nsys.exit(3)\n")
    path = tmp_path / "agents.json"
    path.write_text(json.dumps({"junk": {"command": sys.executable, "args": [str(script)]}}))
    app = make_app(TETHER_AGENT_SERVERS=str(path))
    client, core = app.test_client(), app.extensions["tether"]
    sid = client.post("/api/sessions", json={"agent": "junk"}).get_json()["id"]
    events = turn(client, core, sid, "hello")
    errors = [e["message"] for e in events if e["kind"] == "error"]
    assert len(errors) == 2
    assert "not a JSON object" in errors[0] and "code 3" in errors[1]
    assert "giving up" in errors[1]
    assert events[-1]["reason"] == "error"
