"""The real Claude Code CLI (pinned in the Makefile), driven through Tether's HTTP API against a
fake Messages API on loopback (PROTOCOLS.md 5.1). No network, no API key.

The CLI comes from ``make claude-code`` (``.tools/``), ``TETHER_CLAUDE_BIN`` or ``PATH``. Without
it these tests skip locally and fail in CI (``CI`` set), where ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.live import LiveServer, claude_settings
from tests.fakes.anthropic_api import (
    FakeAnthropic,
    Reply,
    all_user_texts,
    ask_reply,
    last_tool_result,
    text_reply,
    tool_reply,
    tool_result_text,
)
from tests.support import OTHER_SECRETS, leaks

pytestmark = [pytest.mark.e2e, pytest.mark.claude, pytest.mark.timeout(180)]

QUESTION = {"question": "Which database should we use?", "header": "Database",
            "multiSelect": False,
            "options": [{"label": "PostgreSQL", "description": "Relational"},
                        {"label": "SQLite", "description": "Embedded"}]}


def script(body: dict[str, Any]) -> Reply:
    """The fake model: acts on the newest tagged prompt, answers tool results."""
    prompt = next((t for t in reversed(all_user_texts(body)) if t.startswith("[")), "")
    result = last_tool_result(body)
    tag = prompt.split("]", 1)[0] + "]"
    if tag == "[twice]" and result is not None and "first run" in tool_result_text(result):
        return tool_reply("Once more.", "Bash", {"command": "touch second.txt && echo second run",
                                                 "description": "Echo"})
    if result is not None:
        return text_reply("Tool said: " + tool_result_text(result))
    if tag == "[twice]":
        return tool_reply("Twice.", "Bash", {"command": "touch first.txt && echo first run",
                                          "description": "Create a file"})
    if tag == "[bash]":
        return tool_reply("I'll create the file.", "Bash",
                          {"command": "touch created.txt && echo touched",
                           "description": "Create a file"})
    if tag == "[env]":
        return tool_reply("Let me look.", "Bash", {"command": "env",
                                                   "description": "Print the environment"})
    if tag == "[ask]":
        return ask_reply([QUESTION], text="Let me ask.")
    if tag == "[slow]":
        return tool_reply("Sleeping.", "Bash",
                          {"command": "python3 -c \"import time; time.sleep(30)\"",
                           "description": "Sleep"})
    if tag == "[recall]":
        earlier = [t for t in all_user_texts(body) if t.startswith("[remember]")]
        return text_reply("I remember: " + (earlier[0] if earlier else "nothing"))
    return text_reply("Hello from the fake model, " + prompt)


@pytest.fixture(scope="module")
def api() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(script) as api:
        yield api


@pytest.fixture(scope="module")
def server(api: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("claude-e2e")
    home = workdir / "home"
    home.mkdir()
    with LiveServer(workdir, **claude_settings(api.base_url, home, TETHER_AGENT_IDLE_TIMEOUT=0,
                                               **OTHER_SECRETS)) as server:
        yield server


def run_turn(server: LiveServer, sid: str, text: str) -> None:
    assert server.api("POST", f"/api/sessions/{sid}/prompt", json={"text": text}).status_code == 202


def events_until_turn_end(server: LiveServer, sid: str, after: int = 0,
                          timeout: float = 60) -> list[dict[str, Any]]:
    server.wait_for_event(sid, "turn_end", timeout=timeout, after=after)
    return list(server.events(sid, after)["events"])


def processes_in(workspace: Path) -> list[int]:
    """Processes whose working directory is ``workspace`` (the agent and its tools)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/cwd") == str(workspace):
                    found.append(int(entry))
            except OSError:
                pass
    return found


def workspace_of(server: LiveServer, sid: str) -> Path:
    return (server.workdir / "data" / "sessions" / sid).resolve()


def test_agents_lists_claude_available(server: LiveServer) -> None:
    agents = {a["name"]: a for a in server.api("GET", "/api/agents").json()["agents"]}
    assert agents["claude"]["available"] is True


def test_text_turn_streams_deltas_and_result(server: LiveServer) -> None:
    sid = server.create_session()["id"]
    assert server.create_session()["agent"] == "claude"
    run_turn(server, sid, "[text] hi there")
    events = events_until_turn_end(server, sid)
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "user" and kinds[-1] == "turn_end"
    assert "agent_session" in kinds and "text_delta" in kinds and "result" in kinds
    text = next(e["text"] for e in events if e["kind"] == "text")
    assert text == "".join(e["text"] for e in events if e["kind"] == "text_delta")
    assert "Hello from the fake model" in text
    assert events[-1]["reason"] == "completed"
    session = next(e for e in events if e["kind"] == "agent_session")
    assert session["agent"] == "claude" and session["cwd"] == str(workspace_of(server, sid))


def test_tool_allow_runs_the_command(server: LiveServer) -> None:
    sid = server.create_session()["id"]
    run_turn(server, sid, "[bash] please create the file")
    request = server.wait_for_event(sid, "approval_request")
    assert request["tool_name"] == "Bash"
    assert request["input"]["command"] == "touch created.txt && echo touched"
    assert server.api("GET", f"/api/sessions/{sid}").json()["state"] == "waiting"
    answer = server.api("POST", f"/api/sessions/{sid}/approvals/{request['request_id']}",
                        json={"decision": "allow", "client": "e2e"})
    assert answer.status_code == 200
    events = events_until_turn_end(server, sid)
    result = next(e for e in events if e["kind"] == "tool_result")
    assert result["is_error"] is False and "touched" in result["content"]
    assert (workspace_of(server, sid) / "created.txt").exists()
    assert events[-1]["reason"] == "completed"
    assert any(e["kind"] == "text" and "Tool said: touched" in e["text"] for e in events)


def test_a_bash_tool_call_sees_no_secret_setting(server: LiveServer) -> None:
    """Claude Code's Bash tool runs with the environment Tether gave the CLI: the server's,
    less TETHER_TOKEN and every other secret setting (issue 16, item 2)."""
    sid = server.create_session()["id"]
    run_turn(server, sid, "[env] what is set?")
    request = server.wait_for_event(sid, "approval_request")
    assert request["input"]["command"] == "env"
    server.api("POST", f"/api/sessions/{sid}/approvals/{request['request_id']}",
               json={"decision": "allow"})
    events = events_until_turn_end(server, sid)
    result = next(e for e in events if e["kind"] == "tool_result")
    output = result["content"] if isinstance(result["content"], str) else str(result["content"])
    assert result["is_error"] is False
    assert f"ANTHROPIC_BASE_URL={server.env['ANTHROPIC_BASE_URL']}" in output  # the env ran
    assert leaks(output) == []
    assert events[-1]["reason"] == "completed"


def test_tool_deny_sends_the_message_and_creates_nothing(server: LiveServer) -> None:
    sid = server.create_session()["id"]
    run_turn(server, sid, "[bash] please create the file")
    request = server.wait_for_event(sid, "approval_request")
    server.api("POST", f"/api/sessions/{sid}/approvals/{request['request_id']}",
               json={"decision": "deny", "message": "not on this machine"})
    events = events_until_turn_end(server, sid)
    result = next(e for e in events if e["kind"] == "tool_result")
    assert result["is_error"] is True and "not on this machine" in result["content"]
    assert not (workspace_of(server, sid) / "created.txt").exists()
    resolved = next(e for e in events if e["kind"] == "approval_resolved")
    assert resolved["decision"] == "deny" and resolved["reason"] == "user"
    assert events[-1]["reason"] == "completed"


def test_edit_then_allow_runs_the_edited_command(server: LiveServer) -> None:
    sid = server.create_session()["id"]
    run_turn(server, sid, "[bash] please create the file")
    request = server.wait_for_event(sid, "approval_request")
    edited = {**request["input"], "command": "touch edited.txt && echo edited"}
    server.api("POST", f"/api/sessions/{sid}/approvals/{request['request_id']}",
               json={"decision": "allow", "updated_input": edited})
    events = events_until_turn_end(server, sid)
    result = next(e for e in events if e["kind"] == "tool_result")
    assert "edited" in result["content"] and "touched" not in result["content"]
    workspace = workspace_of(server, sid)
    assert (workspace / "edited.txt").exists() and not (workspace / "created.txt").exists()


def test_allow_for_this_session_stops_asking(server: LiveServer) -> None:
    """``permission_suggestions`` sent back as ``updatedPermissions`` with destination
    ``session`` (what the UI's "Allow for this session" sends): a later Bash call that the
    rule covers runs without a prompt. The rule lives in the CLI process, so the model makes
    both calls in one turn (this module stops the process after every turn)."""
    sid = server.create_session()["id"]
    run_turn(server, sid, "[twice] echo two things")
    request = server.wait_for_event(sid, "approval_request")
    rules = [{**s, "destination": "session",
              "rules": [{"toolName": "Bash", "ruleContent": "touch:*"}]}
             for s in request["permission_suggestions"] if s.get("type") == "addRules"]
    assert rules, request["permission_suggestions"]
    server.api("POST", f"/api/sessions/{sid}/approvals/{request['request_id']}",
               json={"decision": "allow", "updated_permissions": rules})
    events = events_until_turn_end(server, sid)
    kinds = [e["kind"] for e in events]
    assert kinds.count("approval_request") == 1 and kinds.count("tool_result") == 2
    assert "second run" in [e for e in events if e["kind"] == "tool_result"][-1]["content"]
    assert events[-1]["reason"] == "completed"
    # Nothing was written to the workspace's settings: the rule lives in the CLI session.
    assert not (workspace_of(server, sid) / ".claude" / "settings.local.json").exists()


def test_ask_user_question_round_trip(server: LiveServer, api: FakeAnthropic) -> None:
    sid = server.create_session()["id"]
    run_turn(server, sid, "[ask] pick a database")
    request = server.wait_for_event(sid, "clarify_request")
    assert request["questions"][0]["question"] == QUESTION["question"]
    assert [o["label"] for o in request["questions"][0]["options"]] == ["PostgreSQL", "SQLite"]
    answer = server.api("POST", f"/api/sessions/{sid}/clarify/{request['request_id']}",
                        json={"answers": {QUESTION["question"]: "SQLite"}})
    assert answer.status_code == 200
    events = events_until_turn_end(server, sid)
    final = [e["text"] for e in events if e["kind"] == "text"][-1]
    assert '"Which database should we use?"="SQLite"' in final
    assert events[-1]["reason"] == "completed"


def test_second_turn_resumes_the_conversation(server: LiveServer, api: FakeAnthropic) -> None:
    # TETHER_AGENT_IDLE_TIMEOUT=0: each turn is a new process, so turn 2 runs with --resume.
    sid = server.create_session()["id"]
    run_turn(server, sid, "[remember] the password is swordfish")
    first = events_until_turn_end(server, sid)
    run_turn(server, sid, "[recall] what did I say?")
    events = events_until_turn_end(server, sid, after=first[-1]["id"])
    text = [e["text"] for e in events if e["kind"] == "text"][-1]
    assert "I remember: [remember] the password is swordfish" in text
    sessions = [e["agent_session_id"] for e in first + events if e["kind"] == "agent_session"]
    assert len(set(sessions)) == 1


def test_slash_commands_list_output_and_clear(server: LiveServer) -> None:
    """Issue 17, item 6, with the real CLI: its commands become a ``commands`` event with the
    headless refusals marked; /cost's output is command output; /model's confirmation is
    shown; /clear is a ``context_cleared`` event, and the next turn (a new process: idle
    timeout 0) does not get the cleared conversation back."""
    sid = server.create_session()["id"]
    run_turn(server, sid, "[remember] the password is swordfish")
    events = events_until_turn_end(server, sid)
    listed = [e for e in events if e["kind"] == "commands"]
    assert len(listed) == 1
    commands = {c["name"]: c for c in listed[0]["commands"]}
    assert commands["model"]["available"] is True and commands["model"]["argument_hint"]
    assert commands["plan"]["available"] is False
    assert commands["plan"]["reason"] == "plan mode is not available headless yet"
    assert commands["help"]["available"] is False and commands["login"]["available"] is False

    def turn(text: str) -> list[dict[str, Any]]:
        nonlocal events
        run_turn(server, sid, text)
        events = events_until_turn_end(server, sid, after=events[-1]["id"])
        return events

    cost = [e for e in turn("/cost") if e["kind"] == "text"]
    assert len(cost) == 1 and cost[0]["command_output"] is True
    assert re.search(r"^Estimated cost: +\$", cost[0]["text"], re.M)
    assert "\nTotal duration (API):  " in cost[0]["text"] and "\nUsage" in cost[0]["text"]
    model = [e for e in turn("/model sonnet") if e["kind"] == "text"]
    assert model[0]["text"].startswith("Set model to") and model[0]["command_output"] is True
    cleared = turn("/clear")
    assert [e["kind"] for e in cleared].count("context_cleared") == 1
    recalled = turn("[recall] what did I say?")
    assert [e["text"] for e in recalled if e["kind"] == "text"][-1] == "I remember: nothing"
    assert not any(e["kind"] == "commands" for e in recalled)  # the same list: not again


def test_cancel_interrupts_and_leaves_no_process(server: LiveServer) -> None:
    sid = server.create_session()["id"]
    run_turn(server, sid, "[slow] sleep for a while")
    request = server.wait_for_event(sid, "approval_request")
    server.api("POST", f"/api/sessions/{sid}/approvals/{request['request_id']}",
               json={"decision": "allow"})
    workspace = workspace_of(server, sid)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the tool is running once python3 sits in the workspace
        if any(re.search(rb"time\.sleep", Path(f"/proc/{pid}/cmdline").read_bytes())
               for pid in processes_in(workspace) if Path(f"/proc/{pid}").exists()):
            break
        time.sleep(0.1)
    assert server.api("POST", f"/api/sessions/{sid}/cancel").json() == {"cancelled": True}
    events = events_until_turn_end(server, sid, timeout=30)
    assert events[-1]["reason"] == "cancelled"
    assert [e["kind"] for e in events].count("turn_end") == 1
    deadline = time.monotonic() + 10
    while processes_in(workspace) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_in(workspace) == []
    # And the session goes on.
    after = events[-1]["id"]
    run_turn(server, sid, "[text] still there?")
    more = events_until_turn_end(server, sid, after=after)
    assert more[-1]["reason"] == "completed"


def test_a_call_the_user_allowed_says_so(server: LiveServer) -> None:
    sid = server.create_session()["id"]
    run_turn(server, sid, "[bash] please create the file")
    request = server.wait_for_event(sid, "approval_request")
    server.api("POST", f"/api/sessions/{sid}/approvals/{request['request_id']}",
               json={"decision": "allow"})
    events = events_until_turn_end(server, sid)
    result = next(e for e in events if e["kind"] == "tool_result")
    assert result["permission"] == {"decision": "accept", "source": "user_temporary"}


def results_of(server: LiveServer, sid: str, prompts: list[str]) -> list[dict[str, Any]]:
    after, results = 0, []
    for text in prompts:
        run_turn(server, sid, text)
        events = events_until_turn_end(server, sid, after=after)
        results += [e for e in events if e["kind"] == "result"]
        after = events[-1]["id"]
    return results


def test_each_turn_costs_its_own_share_across_processes(server: LiveServer) -> None:
    """This module's server starts a process per turn: each process's running total is
    that turn's cost, and the session sums them (issue 17, item 5)."""
    sid = server.create_session()["id"]
    first, second = results_of(server, sid, ["[text] one", "[text] two"])
    assert first["cost_usd"] > 0
    assert second["cost_usd"] == pytest.approx(first["cost_usd"])
    assert first["session_cost_usd"] == pytest.approx(first["cost_usd"])
    assert second["session_cost_usd"] == pytest.approx(2 * first["cost_usd"])


def test_each_turn_costs_its_own_share_within_one_process(
        api: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> None:
    """One process kept across turns (TETHER_AGENT_IDLE_TIMEOUT): Claude Code's
    ``total_cost_usd`` grows with each turn; the event's ``cost_usd`` is the turn's own (the
    fake API bills every turn the same), not the running total (issue 17, item 5)."""
    workdir = tmp_path_factory.mktemp("claude-cost")
    home = workdir / "home"
    home.mkdir()
    with LiveServer(workdir, **claude_settings(api.base_url, home,
                                               TETHER_AGENT_IDLE_TIMEOUT=120)) as server:
        sid = server.create_session()["id"]
        results = results_of(server, sid, ["[text] one", "[text] two", "[text] three"])
        assert server.api("DELETE", f"/api/sessions/{sid}").status_code == 204
    unit = results[0]["cost_usd"]
    assert unit > 0
    assert [r["cost_usd"] for r in results] == pytest.approx([unit, unit, unit])
    assert [r["session_cost_usd"] for r in results] == pytest.approx([unit, 2 * unit, 3 * unit])


def test_tokens_and_cost_reach_the_result_and_the_session(server: LiveServer) -> None:
    sid = server.create_session()["id"]
    run_turn(server, sid, "[text] count me")
    events = events_until_turn_end(server, sid)
    result = next(e for e in events if e["kind"] == "result")
    usage = result["usage"]
    # What the fake API reported for the turn's requests, as Claude Code 2.1.328 sums them.
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert set(usage) == {"input_tokens", "output_tokens", "cache_read_input_tokens",
                          "cache_creation_input_tokens", "cost_usd"}
    assert usage["cost_usd"] == result["cost_usd"] and result["cost_usd"] > 0
    assert result["session_usage"] == usage  # the session's first turn
    run_turn(server, sid, "[text] and again")
    second = next(e for e in events_until_turn_end(server, sid, after=events[-1]["id"])
                  if e["kind"] == "result")
    session = server.api("GET", f"/api/sessions/{sid}").json()
    assert session["usage"] == second["session_usage"]
    assert session["usage"]["input_tokens"] == usage["input_tokens"] + \
        second["usage"]["input_tokens"]


def test_an_image_reaches_the_model_as_an_image_block(server: LiveServer,
                                                      api: FakeAnthropic) -> None:
    import base64
    import io

    from PIL import Image

    picture = io.BytesIO()
    Image.new("RGB", (32, 20), (10, 120, 200)).save(picture, "PNG")
    data = base64.b64encode(picture.getvalue()).decode()
    sid = server.create_session()["id"]
    answer = server.api("POST", f"/api/sessions/{sid}/prompt", json={
        "text": "[text] what is in the screenshot?",
        "images": [{"media_type": "image/png", "data": data}]})
    assert answer.status_code == 202, answer.text
    events_until_turn_end(server, sid)
    asked = [body for body in api.requests
             if "what is in the screenshot?" in " ".join(all_user_texts(body))]
    assert asked, "the fake API never got the prompt"
    content = [m for m in asked[0]["messages"] if m["role"] == "user"][-1]["content"]
    images = [b for b in content if isinstance(b, dict) and b.get("type") == "image"]
    # Claude Code 2.1.328 passes the block on as it got it: base64, the PNG's own bytes.
    assert images and images[0]["source"] == {"type": "base64", "media_type": "image/png",
                                              "data": data}
