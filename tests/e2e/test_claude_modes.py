"""Model and permission mode with the real Claude Code CLI (pinned, 2.1.328) against the fake
Messages API on loopback (issue 18 item 2; PROTOCOLS.md 1.4, 2.5): the model reaches the
API's requests, ``acceptEdits`` lets edits and in-folder file commands through unasked while
other commands still ask, Plan mode and a mid-turn ``set_permission_mode`` as the CLI reports
them, ExitPlanMode's plan on the approval, and bypass refused without TETHER_ALLOW_BYPASS=1.

Agent processes stay alive between turns here (TETHER_AGENT_IDLE_TIMEOUT=120), so a change
between turns travels as a control request to the live process, not as a flag.
"""

from __future__ import annotations

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
from tests.support import OTHER_SECRETS

pytestmark = [pytest.mark.e2e, pytest.mark.claude, pytest.mark.timeout(180)]

PLAN = "# The plan\n\n1. Read **main.py**\n2. Fix the bug"


def script(body: dict[str, Any]) -> Reply:
    prompt = next((t for t in reversed(all_user_texts(body)) if t.startswith("[")), "")
    tag, _, rest = prompt.partition("]")
    result = last_tool_result(body)
    if result is not None:
        return text_reply("Tool said: " + tool_result_text(result))
    if tag == "[plan":
        return tool_reply("Here is my plan.", "ExitPlanMode", {"plan": PLAN})
    if tag == "[write":  # rest: the absolute path to write
        return tool_reply("Writing.", "Write", {"file_path": rest.strip(), "content": "hi\n"})
    if tag == "[touch":
        return tool_reply("Touching.", "Bash", {"command": "touch made.txt",
                                                "description": "Create a file"})
    if tag == "[py":
        return tool_reply("Python.", "Bash", {"command": "python3 -c \"print(6 * 7)\"",
                                              "description": "Compute"})
    return text_reply("Hello, " + prompt)


@pytest.fixture(scope="module")
def api() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(script) as api:
        yield api


@pytest.fixture(scope="module")
def server(api: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("claude-modes")
    home = workdir / "home"
    home.mkdir()
    with LiveServer(workdir, **claude_settings(api.base_url, home, TETHER_AGENT_IDLE_TIMEOUT=120,
                                               **OTHER_SECRETS)) as server:
        yield server


def turn(server: LiveServer, sid: str, text: str) -> int:
    """Send ``text``; returns the id of its ``user`` event (events after it are the turn's)."""
    before = server.events(sid)["last_event_id"]
    assert server.api("POST", f"/api/sessions/{sid}/prompt",
                      json={"text": text}).status_code == 202
    return int(before)


def turn_events(server: LiveServer, sid: str, after: int) -> list[dict[str, Any]]:
    server.wait_for_event(sid, "turn_end", timeout=60, after=after)
    return list(server.events(sid, after)["events"])


def answer(server: LiveServer, sid: str, request_id: str, decision: str, **extra: Any) -> None:
    response = server.api("POST", f"/api/sessions/{sid}/approvals/{request_id}",
                          json={"decision": decision, **extra})
    assert response.status_code == 200, response.text


def patch(server: LiveServer, sid: str, **body: Any) -> dict[str, Any]:
    response = server.api("PATCH", f"/api/sessions/{sid}", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def models_requested(api: FakeAnthropic, since: int) -> list[str]:
    return [str(body.get("model")) for body in api.requests[since:]]


def test_the_models_come_from_the_cli_once_a_process_ran(server: LiveServer) -> None:
    sid = server.create_session()["id"]
    turn_events(server, sid, turn(server, sid, "[hi] models"))
    claude = next(a for a in server.api("GET", "/api/agents").json()["agents"]
                  if a["name"] == "claude")
    assert claude["models_source"] == "agent"
    ids = [m["id"] for m in claude["models"]]
    assert {"default", "sonnet", "haiku"} <= set(ids)
    assert [m["id"] for m in claude["models"] if m.get("default")] == ["default"]


def test_the_chosen_model_reaches_the_api_at_start_and_when_changed(
        server: LiveServer, api: FakeAnthropic) -> None:
    session = server.create_session(model="sonnet", client="e2e")
    sid = session["id"]
    assert session["model"] == "sonnet"
    since = len(api.requests)
    events = turn_events(server, sid, turn(server, sid, "[hi] one"))
    assert models_requested(api, since) == ["claude-sonnet-5-5"]  # --model=sonnet
    assert next(e for e in events if e["kind"] == "agent_session")["model"] == \
        "claude-sonnet-5-5"
    patch(server, sid, model="haiku", client="e2e")  # the process lives: set_model
    since = len(api.requests)
    turn_events(server, sid, turn(server, sid, "[hi] two"))
    assert models_requested(api, since) == ["claude-haiku-5-5"]
    changes = [(e["model"], e["by"]) for e in server.events(sid)["events"]
               if e["kind"] == "model"]
    assert changes == [("sonnet", "e2e"), ("haiku", "e2e")]


def test_accept_edits_lets_edits_and_folder_commands_through_but_asks_for_others(
        server: LiveServer) -> None:
    session = server.create_session(permission_mode="acceptEdits")
    sid, workspace = session["id"], session["cwd"]
    events = turn_events(server, sid, turn(server, sid, f"[write] {workspace}/notes.txt"))
    assert not [e for e in events if e["kind"] == "approval_request"]
    result = next(e for e in events if e["kind"] == "tool_result")
    assert result["is_error"] is False
    assert result["permission"] == {"decision": "accept", "source": "config"}
    events = turn_events(server, sid, turn(server, sid, "[touch] a file"))
    assert not [e for e in events if e["kind"] == "approval_request"]
    after = turn(server, sid, "[py] compute")
    request = server.wait_for_event(sid, "approval_request", after=after)
    assert request["input"]["command"].startswith("python3 -c")
    answer(server, sid, request["request_id"], "allow")
    events = turn_events(server, sid, after)
    assert "42" in next(e for e in events if e["kind"] == "tool_result")["content"]
    assert (Path(workspace) / "notes.txt").read_text() == "hi\n"
    assert (Path(workspace) / "made.txt").exists()


def test_plan_mode_shows_the_plan_and_approving_it_leaves_plan_mode(server: LiveServer) -> None:
    sid = server.create_session(permission_mode="plan")["id"]
    after = turn(server, sid, "[plan] fix the bug")
    reported = server.wait_for_event(sid, "agent_session", after=after)
    assert reported["permission_mode"] == "plan"  # the CLI's own word
    request = server.wait_for_event(sid, "approval_request", after=after)
    assert request["tool_name"] == "ExitPlanMode"
    assert request["plan"] == PLAN and request["input"] == {}
    answer(server, sid, request["request_id"], "allow", client="e2e")
    events = turn_events(server, sid, after)
    assert [(e["permission_mode"], e["by"]) for e in events if e["kind"] == "mode"] == [
        ("default", "agent")]
    assert "approved exiting plan mode" in next(
        e for e in events if e["kind"] == "tool_result")["content"]
    assert server.api("GET", f"/api/sessions/{sid}").json()["permission_mode"] == "default"
    after = turn(server, sid, "[hi] after the plan")
    assert server.wait_for_event(sid, "agent_session", after=after)["permission_mode"] == \
        "default"
    turn_events(server, sid, after)


def test_keep_planning_stays_in_plan_mode(server: LiveServer) -> None:
    sid = server.create_session(permission_mode="plan")["id"]
    after = turn(server, sid, "[plan] again")
    request = server.wait_for_event(sid, "approval_request", after=after)
    answer(server, sid, request["request_id"], "deny", message="Keep planning: add tests.")
    events = turn_events(server, sid, after)
    assert not [e for e in events if e["kind"] == "mode"]
    assert "Keep planning: add tests." in next(
        e for e in events if e["kind"] == "tool_result")["content"]
    after = turn(server, sid, "[hi] still planning?")
    assert server.wait_for_event(sid, "agent_session", after=after)["permission_mode"] == "plan"
    turn_events(server, sid, after)


def test_set_permission_mode_mid_turn_is_what_the_cli_reports_next(server: LiveServer) -> None:
    sid = server.create_session()["id"]
    after = turn(server, sid, "[py] compute")
    request = server.wait_for_event(sid, "approval_request", after=after)
    assert patch(server, sid, permission_mode="plan", client="e2e")["permission_mode"] == "plan"
    answer(server, sid, request["request_id"], "allow")
    events = turn_events(server, sid, after)
    assert events[-1]["reason"] == "completed"
    # Tether's own change is one event; the CLI's status answering it is not another.
    assert [(e["permission_mode"], e["by"]) for e in events if e["kind"] == "mode"] == [
        ("plan", "e2e")]
    after = turn(server, sid, "[hi] which mode?")
    assert server.wait_for_event(sid, "agent_session", after=after)["permission_mode"] == "plan"
    turn_events(server, sid, after)
    patch(server, sid, permission_mode="default")  # between turns, to the live process
    after = turn(server, sid, "[hi] and now?")
    assert server.wait_for_event(sid, "agent_session", after=after)["permission_mode"] == \
        "default"
    turn_events(server, sid, after)


def test_bypass_is_refused_without_the_setting(server: LiveServer) -> None:
    refused = server.api("POST", "/api/sessions", json={"permission_mode": "bypassPermissions"})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "mode_not_allowed"
    sid = server.create_session()["id"]
    refused = server.api("PATCH", f"/api/sessions/{sid}", json={"permission_mode": "auto"})
    assert refused.json()["error"]["code"] == "mode_not_allowed"
    bad = server.api("PATCH", f"/api/sessions/{sid}", json={"permission_mode": "manual"})
    assert bad.status_code == 400 and "acceptEdits" in bad.json()["error"]["message"]


@pytest.fixture(scope="module")
def bypass_server(api: FakeAnthropic,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("claude-bypass")
    home = workdir / "home"
    home.mkdir()
    # IS_SANDBOX=1: Claude Code refuses --permission-mode=bypassPermissions as root (as
    # these tests may run) unless told it runs in a sandbox (2.1.328 [obs]).
    with LiveServer(workdir, **claude_settings(
            api.base_url, home, TETHER_AGENT_IDLE_TIMEOUT=120, TETHER_ALLOW_BYPASS=1,
            IS_SANDBOX=1, **OTHER_SECRETS)) as server:
        yield server


def test_bypass_with_the_setting_runs_unasked_and_can_be_left(bypass_server: LiveServer) -> None:
    """A live Claude Code refuses set_permission_mode bypassPermissions
    (``bypass_not_launched``): between turns Tether starts a new process in that mode, which
    resumes the conversation; leaving it is a control request to the live process."""
    server = bypass_server
    sid = server.create_session()["id"]
    turn_events(server, sid, turn(server, sid, "[hi] first"))
    patch(server, sid, permission_mode="bypassPermissions", client="e2e")
    after = turn(server, sid, "[py] unasked")
    events = turn_events(server, sid, after)
    assert not [e for e in events if e["kind"] in ("approval_request", "error")], events
    assert next(e for e in events if e["kind"] == "agent_session")["permission_mode"] == \
        "bypassPermissions"
    assert "42" in next(e for e in events if e["kind"] == "tool_result")["content"]
    patch(server, sid, permission_mode="default", client="e2e")
    after = turn(server, sid, "[py] asked again")
    request = server.wait_for_event(sid, "approval_request", after=after)
    answer(server, sid, request["request_id"], "deny", message="no")
    turn_events(server, sid, after)
