"""The real Claude Code CLI opened in a project folder (issue 18, item 1), against the fake
Messages API: its ``agent_session`` event reports the folder, and a file its Write tool
creates lands in it. The CLI comes as for tests/e2e/test_claude.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.live import LiveServer, claude_settings
from tests.fakes.anthropic_api import (
    FakeAnthropic,
    Reply,
    all_user_texts,
    last_tool_result,
    text_reply,
    tool_reply,
    tool_result_text,
)

pytestmark = [pytest.mark.e2e, pytest.mark.claude, pytest.mark.timeout(180)]


def script(body: dict[str, Any]) -> Reply:
    """``[write] <absolute path>``: the Write tool creates that file; then the model says
    what the tool answered."""
    result = last_tool_result(body)
    if result is not None:
        return text_reply("Tool said: " + tool_result_text(result))
    prompt = next((t for t in reversed(all_user_texts(body)) if t.startswith("[")), "")
    if prompt.startswith("[write] "):
        return tool_reply("I'll write it.", "Write",
                          {"file_path": prompt.removeprefix("[write] ").strip(),
                           "content": "written by the agent\n"})
    return text_reply("Hello from the fake model")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("claude-projects") / "projects"
    (root / "app").mkdir(parents=True)
    return root.resolve()


@pytest.fixture(scope="module")
def server(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("claude-projects-e2e")
    home = workdir / "home"
    home.mkdir()
    with FakeAnthropic(script) as api, LiveServer(workdir, **claude_settings(
            api.base_url, home, TETHER_PROJECT_ROOTS=str(root),
            TETHER_AGENT_IDLE_TIMEOUT=0)) as server:
        yield server


def test_claude_runs_in_the_chosen_folder_and_writes_there(server: LiveServer,
                                                           root: Path) -> None:
    folder = root / "app"
    session = server.create_session(cwd=str(folder), title="in app")
    sid = session["id"]
    assert session["cwd"] == str(folder) and session["project"] is True
    target = folder / "hello.txt"
    assert server.api("POST", f"/api/sessions/{sid}/prompt",
                      json={"text": f"[write] {target}"}).status_code == 202
    agent_session = server.wait_for_event(sid, "agent_session", timeout=60)
    assert agent_session["agent"] == "claude" and agent_session["cwd"] == str(folder)
    request = server.wait_for_event(sid, "approval_request", timeout=60)
    assert request["tool_name"] == "Write" and request["input"]["file_path"] == str(target)
    server.api("POST", f"/api/sessions/{sid}/approvals/{request['request_id']}",
               json={"decision": "allow", "client": "e2e"})
    end = server.wait_for_event(sid, "turn_end", timeout=60)
    assert end["reason"] == "completed"
    assert target.read_text() == "written by the agent\n"
    # Deleting the session leaves the folder and what the agent wrote in it.
    assert server.api("DELETE", f"/api/sessions/{sid}").status_code == 204
    assert target.read_text() == "written by the agent\n"


def test_a_folder_removed_before_a_turn_is_an_error_event_not_a_turn(server: LiveServer,
                                                                     root: Path) -> None:
    folder = root / "gone"
    folder.mkdir()
    sid = server.create_session(cwd=str(folder))["id"]
    shutil.rmtree(folder)
    answer = server.api("POST", f"/api/sessions/{sid}/prompt", json={"text": "[text] hi"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "not_a_directory"
    error = server.wait_for_event(sid, "error", timeout=10)
    assert str(folder) in error["message"] and "does not exist" in error["message"]
    assert not folder.exists()
    kinds = [e["kind"] for e in server.events(sid)["events"]]
    assert kinds == ["error"]  # no user event, no turn
