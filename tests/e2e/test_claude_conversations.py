"""Conversations started elsewhere (issue 18, item 4), with the real Claude Code CLI against
the fake Messages API: a conversation made by running ``claude -p`` directly in a project
folder is listed by Tether and continued through it (``--resume``): the fake API sees the
first prompt again in the resumed request, and Tether's transcript shows it as history. The
CLI comes as for tests/e2e/test_claude.py."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.live import LiveServer, claude_bin, claude_settings, fake_api_env
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

FIRST = "Remember the word pelican-42 for later"


def script(body: dict[str, Any]) -> Reply:
    result = last_tool_result(body)
    if result is not None:
        return text_reply("Tool said: " + tool_result_text(result))
    texts = all_user_texts(body)
    last = texts[-1] if texts else ""
    if last.startswith("run echo"):
        return tool_reply("I'll run echo.", "Bash",
                          {"command": "echo from-the-terminal", "description": "echo"})
    return text_reply(f"Noted: {last[:60]}")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("claude-conversations")
    root = (workdir / "projects").resolve()
    folder = root / "my_app.v2"
    folder.mkdir(parents=True)
    home = workdir / "home"
    home.mkdir()
    with FakeAnthropic(script) as api:
        cli_env = {**fake_api_env(api.base_url, home), "PATH": os.environ.get("PATH", "")}
        with LiveServer(workdir, **claude_settings(api.base_url, home,
                                                   TETHER_PROJECT_ROOTS=str(root),
                                                   TETHER_AGENT_IDLE_TIMEOUT=0)) as server:
            yield {"api": api, "server": server, "folder": folder, "home": home,
                   "cli_env": cli_env}


def run_cli(env: dict[str, Any], *args: str) -> str:
    """``claude -p …`` run directly in the folder, as a person in a terminal would."""
    done = subprocess.run([claude_bin(), "-p", *args], cwd=env["folder"], env=env["cli_env"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_conversation_made_in_a_terminal_is_listed_and_continued(env: dict[str, Any]
                                                                  ) -> None:
    server: LiveServer = env["server"]
    api: FakeAnthropic = env["api"]
    folder: Path = env["folder"]
    assert run_cli(env, FIRST).strip() == f"Noted: {FIRST}"
    assert run_cli(env, "run echo please", "--allowedTools", "Bash(echo *)").strip() \
        == "Tool said: from-the-terminal"
    # Where the CLI put them: the folder's path with every non-alphanumeric character as -.
    saved = env["home"] / ".claude" / "projects" / str(folder).replace("/", "-") \
        .replace("_", "-").replace(".", "-")
    assert len(list(saved.glob("*.jsonl"))) == 2

    listed = server.api("GET", "/api/projects/conversations",
                        params={"path": str(folder), "agent": "claude"})
    assert listed.status_code == 200, listed.text
    conversations = listed.json()["conversations"]
    assert [c["title"] for c in conversations] == ["run echo please", FIRST]  # newest first
    first = conversations[1]
    assert first["messages"] == 2 and (saved / f"{first['id']}.jsonl").is_file()

    # An unknown id: a 404 and no session, never a new conversation.
    refused = server.api("POST", "/api/sessions", json={
        "agent": "claude", "cwd": str(folder), "resume": "00000000-0000-4000-8000-000000000000"})
    assert refused.status_code == 404
    assert server.api("GET", "/api/sessions").json()["sessions"] == []

    session = server.create_session(agent="claude", cwd=str(folder), resume=first["id"])
    sid = session["id"]
    assert session["agent_session_id"] == first["id"] and session["title"] == FIRST
    history = [e for e in server.events(sid)["events"] if e["kind"] == "history"]
    assert [(e["role"], e["text"]) for e in history] == [("user", FIRST),
                                                         ("assistant", f"Noted: {FIRST}")]

    before = len(api.requests)
    assert server.api("POST", f"/api/sessions/{sid}/prompt",
                      json={"text": "What was the word?"}).status_code == 202
    end = server.wait_for_event(sid, "turn_end", timeout=60)
    assert end["reason"] == "completed"
    resumed = api.requests[before:]
    assert resumed, "the agent made no request"
    assert FIRST in all_user_texts(resumed[0])  # the earlier prompt went back to the model
    assert all_user_texts(resumed[0])[-1] == "What was the word?"
    agent_sessions = [e for e in server.events(sid)["events"] if e["kind"] == "agent_session"]
    assert agent_sessions[-1]["agent_session_id"] == first["id"]  # the same conversation
    # The continuation went into the same file: listed once, with the new exchange counted.
    again = server.api("GET", "/api/projects/conversations",
                       params={"path": str(folder)}).json()["conversations"]
    assert again[0]["id"] == first["id"] and again[0]["messages"] == 4
    assert len(again) == 2
    # The resumed CLI carries its running total on (the terminal's turn cost the same as
    # this one): the session's cost is its own turn's only, counted from the saved total.
    result = [e for e in server.events(sid)["events"] if e["kind"] == "result"][-1]
    assert result["agent_total_cost_usd"] == pytest.approx(2 * result["cost_usd"])
    assert result["session_cost_usd"] == result["cost_usd"] > 0
