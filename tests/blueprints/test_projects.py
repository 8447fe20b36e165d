"""Project folders over HTTP (issue 18, item 1): the folder listing, recent folders, sessions
opened in a folder, and what happens to that folder when it goes away or the session does."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.blueprints.test_api import error_code, wait_pending
from tests.blueprints.test_ws import FakeWebSocket, wait_until
from tether.sessions import SessionRegistry


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "projects"
    (root / "alpha" / ".git").mkdir(parents=True)
    (root / "alpha" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "beta").mkdir()
    (root / ".secret").mkdir()
    (root / "readme.txt").write_text("not a folder\n")
    return root.resolve()


@pytest.fixture
def app(make_app: Any, root: Path) -> Flask:
    return make_app(TETHER_PROJECT_ROOTS=str(root))


def events_of(core: SessionRegistry, sid: str) -> list[Any]:
    return core.get(sid).log.read_after(0)


def wait_event(core: SessionRegistry, sid: str, kind: str) -> Any:
    for _ in range(400):
        found = [e for e in events_of(core, sid) if e.kind == kind]
        if found:
            return found[0]
        time.sleep(0.025)
    raise AssertionError(f"no {kind} event")


# -- listing ---------------------------------------------------------------------------------

def test_without_roots_the_listing_is_empty_and_a_cwd_is_refused(make_app: Any,
                                                                  tmp_path: Path) -> None:
    client = make_app().test_client()
    assert client.get("/api/projects").get_json() == {"path": None, "parent": None,
                                                      "entries": [], "truncated": False}
    assert client.get("/api/projects/recent").get_json() == {"entries": []}
    answer = client.post("/api/sessions", json={"cwd": str(tmp_path)})
    assert answer.status_code == 400 and error_code(answer) == "path_not_allowed"
    assert "TETHER_PROJECT_ROOTS" in answer.get_json()["error"]["message"]
    assert client.get("/api/sessions").get_json()["sessions"] == []
    # Without cwd: today's own, empty workspace.
    session = client.post("/api/sessions", json={}).get_json()
    assert session["project"] is False and session["cwd"].endswith(f"sessions/{session['id']}")


def test_the_roots_then_a_root_s_folders(client: FlaskClient, root: Path) -> None:
    top = client.get("/api/projects").get_json()
    assert top["entries"] == [{"name": "projects", "path": str(root), "git": False}]
    listing = client.get("/api/projects", query_string={"path": str(root)}).get_json()
    assert listing == {"path": str(root), "parent": None, "truncated": False, "entries": [
        {"name": "alpha", "path": str(root / "alpha"), "git": True, "branch": "main"},
        {"name": "beta", "path": str(root / "beta"), "git": False}]}
    hidden = client.get("/api/projects", query_string={"path": str(root), "hidden": "1"})
    assert [e["name"] for e in hidden.get_json()["entries"]] == [".secret", "alpha", "beta"]
    inner = client.get("/api/projects", query_string={"path": str(root / "alpha")}).get_json()
    assert inner["parent"] == str(root) and inner["entries"] == []  # .git is hidden


@pytest.mark.parametrize("path, code", [
    ("/etc", "path_not_allowed"),
    ("{root}/../..", "path_not_allowed"),
    ("{root}/a\0b", "path_not_allowed"),
    ("{root}/" + "x" * 5000, "path_not_allowed"),
    ("relative", "path_not_allowed"),
    ("{root}/readme.txt", "not_a_directory"),
    ("{root}/missing", "not_a_directory"),
])
def test_listing_refuses_what_is_not_a_folder_in_a_root(client: FlaskClient, root: Path,
                                                        path: str, code: str) -> None:
    answer = client.get("/api/projects", query_string={"path": path.format(root=root)})
    assert answer.status_code == 400 and error_code(answer) == code


def test_listing_refuses_a_bad_hidden_flag(client: FlaskClient, root: Path) -> None:
    answer = client.get("/api/projects", query_string={"path": str(root), "hidden": "yes"})
    assert answer.status_code == 400 and error_code(answer) == "bad_request"


# -- sessions in a folder --------------------------------------------------------------------

def test_a_session_opened_in_a_folder_runs_there_and_shows_it(
        client: FlaskClient, core: SessionRegistry, root: Path) -> None:
    answer = client.post("/api/sessions", json={"cwd": f"{root}/beta/../alpha/"})
    assert answer.status_code == 201
    session = answer.get_json()
    sid = session["id"]
    assert session["cwd"] == str(root / "alpha") and session["project"] is True
    listed = client.get("/api/sessions").get_json()["sessions"]
    assert [(s["id"], s["cwd"]) for s in listed] == [(sid, str(root / "alpha"))]
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "$ echo made > made.txt"})
    assert wait_event(core, sid, "agent_session").payload["cwd"] == str(root / "alpha")
    allow = wait_pending(core, sid)
    client.post(f"/api/sessions/{sid}/approvals/{allow['request_id']}",
                json={"decision": "allow"})
    assert core.get(sid).wait_idle(10)
    assert (root / "alpha" / "made.txt").read_text() == "made\n"


@pytest.mark.parametrize("cwd, code, needle", [
    ("/etc", "path_not_allowed", "outside the project folders"),
    ("{root}/../..", "path_not_allowed", "'..'"),
    ("{root}/escape", "path_not_allowed", "symbolic link"),
    ("{root}/al\0pha", "path_not_allowed", "NUL"),
    ("", "path_not_allowed", "empty"),
    ("{root}/readme.txt", "not_a_directory", "is a file"),
    ("{root}/missing", "not_a_directory", "does not exist"),
])
def test_a_cwd_outside_or_not_a_folder_is_a_400_and_no_session(
        client: FlaskClient, root: Path, tmp_path: Path, cwd: str, code: str,
        needle: str) -> None:
    (tmp_path / "elsewhere").mkdir()
    (root / "escape").symlink_to(tmp_path / "elsewhere")
    answer = client.post("/api/sessions", json={"cwd": cwd.format(root=root)})
    assert answer.status_code == 400 and error_code(answer) == code
    assert needle in answer.get_json()["error"]["message"]
    assert client.get("/api/sessions").get_json()["sessions"] == []


def test_a_cwd_of_the_wrong_type_is_a_bad_request(client: FlaskClient) -> None:
    answer = client.post("/api/sessions", json={"cwd": 7})
    assert answer.status_code == 400 and error_code(answer) == "bad_request"


def test_deleting_a_session_leaves_its_project_folder(client: FlaskClient,
                                                      root: Path) -> None:
    (root / "beta" / "code.py").write_text("print(1)\n")
    sid = client.post("/api/sessions", json={"cwd": str(root / "beta")}).get_json()["id"]
    assert client.delete(f"/api/sessions/{sid}").status_code == 204
    assert (root / "beta" / "code.py").read_text() == "print(1)\n"
    assert sorted(p.name for p in (root / "beta").iterdir()) == ["code.py"]


def test_deleting_a_session_leaves_an_empty_project_folder_too(client: FlaskClient,
                                                               root: Path) -> None:
    sid = client.post("/api/sessions", json={"cwd": str(root / "beta")}).get_json()["id"]
    assert client.delete(f"/api/sessions/{sid}").status_code == 204
    assert (root / "beta").is_dir()


def test_recent_folders_are_distinct_newest_first_and_still_there(
        client: FlaskClient, root: Path) -> None:
    (root / "gamma").mkdir()
    for name in ("alpha", "beta", "alpha", "gamma"):
        client.post("/api/sessions", json={"cwd": str(root / name)})
        time.sleep(0.002)  # created_at is kept to the millisecond
    client.post("/api/sessions", json={})  # its own workspace: not a recent folder
    (root / "gamma").rmdir()
    recent = client.get("/api/projects/recent").get_json()["entries"]
    assert recent == [
        {"name": "alpha", "path": str(root / "alpha"), "git": True, "branch": "main"},
        {"name": "beta", "path": str(root / "beta"), "git": False}]


# -- a folder that goes away -----------------------------------------------------------------

def test_a_folder_removed_while_the_session_lives_is_an_error_event_and_a_400(
        client: FlaskClient, core: SessionRegistry, root: Path) -> None:
    folder = root / "beta"
    sid = client.post("/api/sessions", json={"cwd": str(folder)}).get_json()["id"]
    shutil.rmtree(folder)
    answer = client.post(f"/api/sessions/{sid}/prompt", json={"text": "hello"})
    assert answer.status_code == 400 and error_code(answer) == "not_a_directory"
    assert str(folder) in answer.get_json()["error"]["message"]
    errors = [e for e in events_of(core, sid) if e.kind == "error"]
    assert len(errors) == 1 and "does not exist" in errors[0].payload["message"]
    assert not folder.exists()  # never made again
    assert client.get(f"/api/sessions/{sid}").get_json()["state"] == "idle"


def test_a_folder_made_unreadable_while_the_session_lives_is_an_error_event_and_a_400(
        client: FlaskClient, core: SessionRegistry, root: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = root / "beta"
    sid = client.post("/api/sessions", json={"cwd": str(folder)}).get_json()["id"]
    real_access = os.access
    # As root (tests may run so) chmod 000 reads all the same: os.access says no instead.
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == folder
                        else real_access(p, mode, **kw))
    answer = client.post(f"/api/sessions/{sid}/prompt", json={"text": "hello"})
    assert answer.status_code == 400 and error_code(answer) == "path_not_allowed"
    assert any(e.kind == "error" and "cannot be read" in e.payload["message"]
               for e in events_of(core, sid))


def test_a_queued_prompt_waits_when_the_folder_went_away_meanwhile(
        client: FlaskClient, core: SessionRegistry, root: Path) -> None:
    folder = root / "beta"
    sid = client.post("/api/sessions", json={"cwd": str(folder)}).get_json()["id"]
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "$ true"})
    wait_pending(core, sid)
    assert client.post(f"/api/sessions/{sid}/prompt",
                       json={"text": "next", "queue": True}).status_code == 202
    shutil.rmtree(folder)
    assert client.post(f"/api/sessions/{sid}/cancel").get_json() == {"cancelled": True}
    assert core.get(sid).wait_idle(10)
    assert [q["text"] for q in client.get(f"/api/sessions/{sid}").get_json()["queue"]] == [
        "next"]
    answer = client.post(f"/api/sessions/{sid}/queue/1/send")
    assert answer.status_code == 400 and error_code(answer) == "not_a_directory"
    assert client.get(f"/api/sessions/{sid}").get_json()["queue"][0]["text"] == "next"


def test_a_restored_session_whose_folder_is_gone_is_kept_and_its_folder_not_made(
        make_app: Any, root: Path) -> None:
    app = make_app(TETHER_STORE="sqlite", TETHER_PROJECT_ROOTS=str(root))
    folder = root / "beta"
    sid = app.test_client().post("/api/sessions", json={"cwd": str(folder)}).get_json()["id"]
    app.extensions["tether"].shutdown()
    shutil.rmtree(folder)
    app = make_app(TETHER_STORE="sqlite", TETHER_PROJECT_ROOTS=str(root))
    client, core = app.test_client(), app.extensions["tether"]
    session = client.get(f"/api/sessions/{sid}").get_json()
    assert session["cwd"] == str(folder) and session["project"] is True
    assert not folder.exists()
    answer = client.post(f"/api/sessions/{sid}/prompt", json={"text": "hello"})
    assert answer.status_code == 400 and error_code(answer) == "not_a_directory"
    assert any(e.kind == "error" and str(folder) in e.payload["message"]
               for e in events_of(core, sid))
    assert not folder.exists()
    assert client.delete(f"/api/sessions/{sid}").status_code == 204


# -- the WebSocket's session.create ----------------------------------------------------------

@pytest.fixture
def socket(core: SessionRegistry) -> Iterator[FakeWebSocket]:
    from blueprints.ws import Connection

    fake = FakeWebSocket()
    reader = threading.Thread(target=Connection(fake, core, "ws test").run, daemon=True)
    reader.start()
    yield fake
    fake.incoming.put(None)
    reader.join(10)


def test_session_create_over_the_websocket_takes_a_cwd_and_refuses_a_bad_one(
        socket: FakeWebSocket, root: Path) -> None:
    fake = socket
    fake.request(1, "session.create", cwd=str(root / "alpha"))
    fake.request(2, "session.create", cwd="/etc")
    assert wait_until(lambda: {1, 2} <= {m.get("id") for m in fake.messages()})
    replies = {m["id"]: m for m in fake.messages() if m.get("id") in (1, 2)}
    assert replies[1]["result"]["cwd"] == str(root / "alpha")
    assert replies[1]["result"]["project"] is True
    assert replies[2]["error"]["code"] == -32602
    assert "outside the project folders" in replies[2]["error"]["message"]
