"""The Changes panel's routes (issue 18, item 3): a session's changed files against the
commit HEAD named when it was opened, one file's diff, a read-only file view; outside git,
the files its agent wrote; every path checked, every failure a clear 4xx."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.blueprints.test_api import error_code
from tether.sessions import SessionRegistry


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = (tmp_path / "projects").resolve()
    repo = root / "app"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "T")
    (repo / "main.py").write_text("print('one')\n")
    (repo / "old.txt").write_text("old\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "start")
    (root / "plain").mkdir()
    return root


@pytest.fixture
def app(make_app: Any, root: Path) -> Flask:
    return make_app(TETHER_PROJECT_ROOTS=str(root))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def open_in(client: FlaskClient, folder: Path) -> str:
    answer = client.post("/api/sessions", json={"cwd": str(folder)})
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()["id"]


def test_changes_against_the_commit_of_the_start(client: FlaskClient, core: SessionRegistry,
                                                 root: Path) -> None:
    repo = root / "app"
    head = git(repo, "rev-parse", "HEAD").strip()
    sid = open_in(client, repo)
    assert core.get(sid).base_commit == head
    assert client.get(f"/api/sessions/{sid}/changes").get_json() == {
        "base": head, "git": True, "files": [], "truncated": False}
    (repo / "main.py").write_text("print('two')\n")
    (repo / "old.txt").unlink()
    (repo / "new file.md").write_text("# hi\n")
    git(repo, "commit", "-q", "-am", "the agent commits")  # still its change
    answer = client.get(f"/api/sessions/{sid}/changes").get_json()
    assert answer["files"] == [
        {"path": "main.py", "status": "modified", "additions": 1, "deletions": 1},
        {"path": "new file.md", "status": "added", "additions": 1, "deletions": 0},
        {"path": "old.txt", "status": "deleted", "additions": 0, "deletions": 1}]
    diff = client.get(f"/api/sessions/{sid}/changes/main.py").get_json()
    assert "-print('one')" in diff["diff"] and "+print('two')" in diff["diff"]
    assert not diff["truncated"] and not diff["binary"]
    assert "+# hi" in client.get(f"/api/sessions/{sid}/changes/new file.md").get_json()["diff"]
    view = client.get(f"/api/sessions/{sid}/files/main.py").get_json()
    assert view == {"path": "main.py", "size": 13, "binary": False, "truncated": False,
                    "text": "print('two')\n"}


@pytest.mark.parametrize("path", ["../plain", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd",
                                  "a%00b", "sub/../../x"])
def test_paths_out_of_the_folder_are_refused(client: FlaskClient, root: Path,
                                             path: str) -> None:
    sid = open_in(client, root / "app")
    for route in ("changes", "files"):
        answer = client.get(f"/api/sessions/{sid}/{route}/{path}")
        if answer.status_code == 308:  # werkzeug merges the slashes: a path inside, then
            location = answer.location.removeprefix("http://localhost")
            assert location == f"/api/sessions/{sid}/{route}/etc/passwd"
            answer = client.get(location)
        assert answer.status_code in (400, 404), (route, path, answer.status_code)
        if answer.status_code == 400:
            assert error_code(answer) == "path_not_allowed"


def test_a_symlink_out_is_never_read(client: FlaskClient, root: Path, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("token\n")
    (root / "app" / "link").symlink_to(tmp_path / "secret")
    sid = open_in(client, root / "app")
    answer = client.get(f"/api/sessions/{sid}/files/link")
    assert answer.status_code == 400 and error_code(answer) == "path_not_allowed"
    assert "token" not in answer.get_data(as_text=True)


def test_unknown_files_and_sessions(client: FlaskClient, root: Path) -> None:
    sid = open_in(client, root / "app")
    assert client.get(f"/api/sessions/{sid}/changes/main.py").status_code == 404
    assert client.get(f"/api/sessions/{sid}/files/nope.txt").status_code == 404
    assert error_code(client.get(f"/api/sessions/{sid}/files/.git")) == "bad_request"
    assert client.get("/api/sessions/nope/changes").status_code == 404


def test_a_folder_removed_while_the_session_lives_is_a_clear_400(client: FlaskClient,
                                                                 root: Path) -> None:
    sid = open_in(client, root / "app")
    shutil.rmtree(root / "app")
    for route in ("changes", "changes/main.py", "files/main.py"):
        answer = client.get(f"/api/sessions/{sid}/{route}")
        assert answer.status_code == 400 and error_code(answer) == "not_a_directory", route


def test_a_base_commit_gone_is_a_422_not_a_500(client: FlaskClient, core: SessionRegistry,
                                                root: Path) -> None:
    repo = root / "app"
    sid = open_in(client, repo)
    shutil.rmtree(repo / ".git")
    git(repo, "init", "-q")  # a fresh repository: the base commit is not in it
    answer = client.get(f"/api/sessions/{sid}/changes")
    assert answer.status_code == 422 and error_code(answer) == "git_failed"


def test_outside_git_the_files_the_agent_wrote(client: FlaskClient, core: SessionRegistry,
                                               root: Path) -> None:
    folder = root / "plain"
    sid = open_in(client, folder)
    assert core.get(sid).base_commit == ""
    (folder / "notes.md").write_text("first\nsecond\n")
    log = core.get(sid).log
    log.append("tool_use", {"tool_use_id": "t1", "name": "Write",
                            "input": {"file_path": str(folder / "notes.md"),
                                      "content": "first\nsecond\n"}})
    log.append("tool_result", {"tool_use_id": "t1", "is_error": False,
                               "content": f"File created successfully at: {folder}/notes.md"})
    answer = client.get(f"/api/sessions/{sid}/changes").get_json()
    assert answer == {"base": None, "git": False, "truncated": False, "files": [
        {"path": "notes.md", "status": "added", "additions": 2, "deletions": 0}]}
    log.append("tool_use", {"tool_use_id": "t2", "name": "Edit",
                            "input": {"file_path": str(folder / "notes.md"),
                                      "old_string": "second", "new_string": "2nd"}})
    (folder / "notes.md").write_text("first\n2nd\n")
    files = client.get(f"/api/sessions/{sid}/changes").get_json()["files"]
    assert files == [{"path": "notes.md", "status": "added", "additions": 3, "deletions": 1}]
    diff = client.get(f"/api/sessions/{sid}/changes/notes.md").get_json()["diff"]
    assert "+first" in diff and "-second" in diff and "+2nd" in diff


def test_a_session_of_its_own_workspace_lists_its_writes(client: FlaskClient,
                                                         core: SessionRegistry) -> None:
    sid = client.post("/api/sessions", json={}).get_json()["id"]
    assert client.get(f"/api/sessions/{sid}/changes").get_json()["files"] == []
    workspace = Path(core.get(sid).workspace)
    (workspace / "out.txt").write_text("made\n")
    assert client.get(f"/api/sessions/{sid}/files/out.txt").get_json()["text"] == "made\n"
