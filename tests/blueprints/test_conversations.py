"""Conversations started elsewhere over HTTP and JSON-RPC (issue 18, item 4): the listing of
a folder's saved conversations, and sessions that continue one; refusals create nothing."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.blueprints.test_api import error_code
from tests.blueprints.test_ws import FakeWebSocket, wait_until
from tests.fakes import conversations as saved
from tether.sessions import SessionRegistry

UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "projects"
    (root / "app").mkdir(parents=True)
    (root / "other").mkdir()
    (root / "readme.txt").write_text("a file")
    return root.resolve()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The HOME the server (and so its agents) runs with."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    return home


@pytest.fixture
def app(make_app: Any, root: Path, home: Path, failing_claude: str) -> Flask:
    return make_app(TETHER_PROJECT_ROOTS=str(root), TETHER_CLAUDE_BIN=failing_claude)


@pytest.fixture
def conversation(home: Path, root: Path) -> str:
    sid, path = saved.save(home, root / "app", [
        *saved.bookkeeping("x"), saved.user("Fix the failing test in parser.py"),
        *saved.assistant(saved.text("I'll look."), saved.tool_use("Bash", {"command": "pytest"})),
        saved.tool_result("1 failed"), *saved.assistant(saved.text("Fixed it.")),
        {"type": "cost-state", "totalCostUSD": 0.5}])
    os.utime(path, (1_800_000_000, 1_800_000_000))
    return sid


def test_the_listing_names_each_conversation(client: FlaskClient, root: Path,
                                             conversation: str) -> None:
    answer = client.get("/api/projects/conversations",
                        query_string={"path": f"{root}/app/", "agent": "claude"})
    assert answer.status_code == 200
    assert answer.get_json() == {
        "path": str(root / "app"), "agent": "claude", "truncated": False,
        "conversations": [{"id": conversation, "title": "Fix the failing test in parser.py",
                           "updated_at": 1_800_000_000, "messages": 3, "partial": False,
                           "session_id": None}]}
    # claude is the default agent of the listing; another folder has none of them.
    assert client.get("/api/projects/conversations",
                      query_string={"path": str(root / "app")}).get_json()["conversations"]
    assert client.get("/api/projects/conversations", query_string={
        "path": str(root / "other")}).get_json()["conversations"] == []


def test_claude_config_dir_wins_over_home(client: FlaskClient, root: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          conversation: str) -> None:
    config = tmp_path / "config"
    sid, _ = saved.save(tmp_path, root / "app", saved.exchange("in the config dir", "ok"))
    (tmp_path / ".claude").rename(config)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(config))
    listed = client.get("/api/projects/conversations",
                        query_string={"path": str(root / "app")}).get_json()
    assert [c["id"] for c in listed["conversations"]] == [sid]


@pytest.mark.parametrize("path, code", [
    ("", "path_not_allowed"), ("relative/app", "path_not_allowed"), ("/", "path_not_allowed"),
    ("{root}/../", "path_not_allowed"), ("{root}/app\0x", "path_not_allowed"),
    ("{root}/missing", "not_a_directory"), ("{root}/readme.txt", "not_a_directory"),
])
def test_the_listing_checks_the_path_as_the_picker_does(client: FlaskClient, root: Path,
                                                        path: str, code: str) -> None:
    answer = client.get("/api/projects/conversations",
                        query_string={"path": path.format(root=root)})
    assert answer.status_code == 400 and error_code(answer) == code


@pytest.mark.parametrize("agent", ["local", "gemini"])
def test_an_agent_without_saved_conversations_is_a_400_naming_claude(
        client: FlaskClient, root: Path, agent: str) -> None:
    answer = client.get("/api/projects/conversations",
                        query_string={"path": str(root / "app"), "agent": agent})
    assert answer.status_code == 400 and error_code(answer) == "bad_request"
    assert "claude" in answer.get_json()["error"]["message"]


def test_resume_opens_a_session_with_the_history_before_any_turn(
        client: FlaskClient, core: SessionRegistry, root: Path, conversation: str) -> None:
    answer = client.post("/api/sessions", json={"agent": "claude", "cwd": str(root / "app"),
                                                "resume": conversation})
    assert answer.status_code == 201
    session = answer.get_json()
    assert session["agent_session_id"] == conversation
    assert session["title"] == "Fix the failing test in parser.py"
    assert session["cwd"] == str(root / "app") and session["turn"] == 0
    events = client.get(f"/api/sessions/{session['id']}/events").get_json()["events"]
    assert [e["kind"] for e in events] == ["agent_session", "history", "history", "history",
                                           "history"]
    assert events[0]["resumed"] is True and events[0]["agent_session_id"] == conversation
    assert events[0]["agent_total_cost_usd"] == 0.5
    shown = [(e["role"], e["text"], e.get("tool")) for e in events[1:]]
    assert shown == [("user", "Fix the failing test in parser.py", None),
                     ("assistant", "I'll look.", None),
                     ("assistant", "", {"name": "Bash", "summary": "pytest"}),
                     ("assistant", "Fixed it.", None)]
    assert all(isinstance(e["at"], float) for e in events[1:])
    # The agent's next process resumes the conversation, and its cost counts from there.
    host = core.get(session["id"])._host
    argv = host.spec.argv(host.agent_session_id, resume=host.started)
    assert f"--resume={conversation}" in argv
    assert host.costs.last_total == 0.5


def test_a_title_given_wins_over_the_conversations(client: FlaskClient, root: Path,
                                                   conversation: str) -> None:
    session = client.post("/api/sessions", json={
        "agent": "claude", "cwd": str(root / "app"), "resume": conversation,
        "title": "Mine"}).get_json()
    assert session["title"] == "Mine"


@pytest.mark.parametrize("body, status, code", [
    ({"resume": UNKNOWN}, 404, "not_found"),
    ({"resume": "not-a-uuid"}, 404, "not_found"),
    ({"resume": "../../../../etc/passwd"}, 404, "not_found"),
    ({"resume": "x" * 101}, 400, "bad_request"),
    ({"resume": 5}, 400, "bad_request"),
    ({"resume": "{conversation}", "cwd": "{root}/other"}, 404, "not_found"),
    ({"resume": "{conversation}", "cwd": None}, 400, "bad_request"),
    ({"resume": "{conversation}", "agent": "local"}, 400, "bad_request"),
    ({"resume": "{conversation}", "agent": "nobody"}, 404, "not_found"),
    ({"resume": "{conversation}", "cwd": "{root}/missing"}, 400, "not_a_directory"),
    ({"resume": "{conversation}", "cwd": "/"}, 400, "path_not_allowed"),
])
def test_a_refused_resume_creates_nothing(client: FlaskClient, core: SessionRegistry,
                                          root: Path, conversation: str, body: dict[str, Any],
                                          status: int, code: str) -> None:
    full: dict[str, Any] = {"agent": "claude", "cwd": "{root}/app", **body}
    full = {k: v.format(root=root, conversation=conversation) if isinstance(v, str) else v
            for k, v in full.items() if v is not None}
    answer = client.post("/api/sessions", json=full)
    assert (answer.status_code, error_code(answer)) == (status, code), answer.get_json()
    assert core.list() == []
    assert client.get("/api/sessions").get_json()["sessions"] == []
    assert not (core.settings.data_dir / "sessions").exists() or \
        not any((core.settings.data_dir / "sessions").iterdir())


def test_json_rpc_session_create_resumes_too(core: SessionRegistry, root: Path,
                                             conversation: str) -> None:
    from blueprints.ws import Connection

    fake = FakeWebSocket()
    reader = threading.Thread(target=Connection(fake, core, "ws test").run, daemon=True)
    reader.start()
    try:
        fake.request(1, "session.create", agent="claude", cwd=str(root / "app"), resume=UNKNOWN)
        fake.request(2, "session.create", agent="claude", cwd=str(root / "app"),
                     resume=conversation)
        assert wait_until(lambda: {1, 2} <= {m.get("id") for m in fake.messages()})
    finally:
        fake.incoming.put(None)
        reader.join(10)
    replies = {m["id"]: m for m in fake.messages() if m.get("id") in (1, 2)}
    assert replies[1]["error"]["code"] == -32001
    assert replies[2]["result"]["agent_session_id"] == conversation


def test_a_continued_session_resumes_the_same_conversation_after_a_restart(
        make_app: Any, root: Path, home: Path, conversation: str,
        failing_claude: str) -> None:
    settings = {"TETHER_PROJECT_ROOTS": str(root), "TETHER_STORE": "sqlite",
                "TETHER_CLAUDE_BIN": failing_claude}
    first = make_app(**settings)
    sid = first.test_client().post("/api/sessions", json={
        "agent": "claude", "cwd": str(root / "app"), "resume": conversation}).get_json()["id"]
    first.extensions["tether"].shutdown()
    second = make_app(**settings)
    session = second.extensions["tether"].get(sid)
    assert session.agent_session_id == conversation
    host = session._host
    assert f"--resume={conversation}" in host.spec.argv(host.agent_session_id,
                                                        resume=host.started)
    assert host.costs.last_total == 0.5
    kinds = [e.kind for e in session.log.read_after(0)]
    assert kinds.count("history") == 4 and "turn_end" not in kinds


def test_a_conversation_a_session_continues_is_not_continued_twice(
        client: FlaskClient, core: SessionRegistry, root: Path, conversation: str) -> None:
    body = {"agent": "claude", "cwd": str(root / "app"), "resume": conversation}
    first = client.post("/api/sessions", json=body).get_json()["id"]
    listed = client.get("/api/projects/conversations",
                        query_string={"path": str(root / "app")}).get_json()
    assert [c["session_id"] for c in listed["conversations"]] == [first]
    again = client.post("/api/sessions", json=body)
    assert again.status_code == 409 and error_code(again) == "conversation_open"
    assert first in again.get_json()["error"]["message"]
    assert [s.id for s in core.list()] == [first]
    # Once that session is deleted, the conversation can be continued again.
    assert client.delete(f"/api/sessions/{first}").status_code == 204
    assert client.get("/api/projects/conversations", query_string={
        "path": str(root / "app")}).get_json()["conversations"][0]["session_id"] is None
    assert client.post("/api/sessions", json=body).status_code == 201
