"""The real Gemini CLI (``gemini --acp``, pinned in the Makefile) through Tether's HTTP API,
against FakeGemini on loopback (tests/fakes/README.md; PROTOCOLS.md 4.3, 5.3). No network,
no API key: the server gets the fake's environment, and the CLI inherits it.

Two servers: ``cold`` (``TETHER_AGENT_IDLE_TIMEOUT=0``: every turn a new process, which must
load its session) and ``warm`` (the default idle timeout: one process across turns, for what
lives in the process: "Allow for this session", a mode change).

The CLI comes from ``make gemini-cli`` (``.tools/``), ``TETHER_GEMINI_BIN`` or ``PATH``;
without it these tests skip locally and fail in CI.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.live import LiveServer, gemini_bin
from tests.e2e.test_claude import processes_in
from tests.fakes.gemini_api import (
    Body,
    FakeGemini,
    Reply,
    all_user_texts,
    error_reply,
    last_function_response,
    last_user_text,
    shell_reply,
    text_reply,
    write_file_reply,
)
from tests.fakes.record_gemini import gemini_env

pytestmark = [pytest.mark.e2e, pytest.mark.gemini, pytest.mark.timeout(180)]

MODEL = "gemini-2.5-pro"  # not "auto": its router wants classifier JSON (PROTOCOLS.md 5.3)
#: How long one turn may take: the CLI's start alone is 2-3 s here (tests/fakes/README.md).
TURN_SECONDS = 90
#: What ends Tether's recap before the prompt itself (tether.agents.acp._send_prompt).
RECAP_END = "\n\n---\n\n"


def script(body: Body) -> Reply:
    """The fake model, tagged by the newest prompt (tests/fakes/record_gemini.py's tags):
    ``[error]`` is an HTTP 400, ``[bash]`` asks for ``touch created.txt && echo touched``,
    ``[bash2]`` for ``touch second.txt``, ``[write <absolute path>]`` for ``write_file`` of
    that path, ``[recall]`` says whether an earlier ``[remember]`` prompt is in the request;
    anything else gets text. After a tool result it says what the tool said. Only the prompt
    itself counts, not Tether's recap of the conversation before it (a resume without the
    CLI's history)."""
    result = last_function_response(body)
    if result is not None:
        return text_reply(f"Tool said: {json.dumps(result.get('response'))[:200]}")
    latest = last_user_text(body).rsplit(RECAP_END, 1)[-1]
    if "[error]" in latest:
        return error_reply(400, "fake: this request is invalid")
    if "[bash2]" in latest:
        return shell_reply("Another file.", "touch second.txt", "Create second.txt")
    if "[bash]" in latest:
        return shell_reply("I'll create the file.", "touch created.txt && echo touched",
                           "Create created.txt")
    if "[write " in latest:
        path = latest.split("[write ", 1)[1].split("]", 1)[0]
        return write_file_reply("Writing it.", path, "line one\nline two\n")
    if "[recall]" in latest:
        said = any("[remember]" in t for t in all_user_texts(body))
        return text_reply("I remember: " + ("yes" if said else "nothing"))
    return text_reply(f"Hello from the fake Gemini. You said: {latest[:80]}")


@pytest.fixture(scope="module")
def api() -> Iterator[FakeGemini]:
    with FakeGemini(script) as fake:
        yield fake


@pytest.fixture(scope="module")
def env(api: FakeGemini, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("gemini-home")
    return {**gemini_env(api, str(home)), "TETHER_AGENT": "gemini",
            "TETHER_GEMINI_BIN": gemini_bin()}


@pytest.fixture(scope="module")
def cold(env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("gemini-cold"), **env,
                    TETHER_AGENT_IDLE_TIMEOUT=0) as server:
        yield server


@pytest.fixture(scope="module")
def warm(env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("gemini-warm"), **env) as server:
        yield server


def new_session(server: LiveServer, **body: Any) -> str:
    return str(server.create_session(agent="gemini", model=MODEL, **body)["id"])


def prompt(server: LiveServer, sid: str, text: str) -> None:
    response = server.api("POST", f"/api/sessions/{sid}/prompt", json={"text": text})
    assert response.status_code == 202, response.text


def until_turn_end(server: LiveServer, sid: str, after: int = 0) -> list[dict[str, Any]]:
    server.wait_for_event(sid, "turn_end", timeout=TURN_SECONDS, after=after)
    return list(server.events(sid, after)["events"])


def turn(server: LiveServer, sid: str, text: str) -> list[dict[str, Any]]:
    """One prompt to its ``turn_end``: the events after the session's last one."""
    after = server.events(sid)["last_event_id"]
    prompt(server, sid, text)
    return until_turn_end(server, sid, after)


def of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == kind]


def answer(server: LiveServer, sid: str, request: dict[str, Any], **body: Any) -> None:
    response = server.api("POST", f"/api/sessions/{sid}/approvals/{request['request_id']}",
                          json=body)
    assert response.status_code == 200, response.text


def option(request: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(o for o in request["options"] if o["kind"] == kind)


def workspace_of(server: LiveServer, sid: str) -> Path:
    return Path(server.api("GET", f"/api/sessions/{sid}").json()["cwd"])


def no_process_in(workspace: Path, timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while (found := processes_in(workspace)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def test_agents_lists_gemini_with_its_modes_and_models(cold: LiveServer) -> None:
    agents = {a["name"]: a for a in cold.api("GET", "/api/agents").json()["agents"]}
    gemini = agents["gemini"]
    assert gemini["available"] is True
    assert {"default", "autoEdit", "plan"} <= set(gemini["permission_modes"])
    assert MODEL in [m["id"] for m in gemini["models"]]


def test_a_text_turn(cold: LiveServer, api: FakeGemini) -> None:
    sid = new_session(cold)
    events = turn(cold, sid, "Say hello")
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "user" and kinds[-1] == "turn_end", kinds
    assert "agent_session" in kinds and "text_delta" in kinds and "result" in kinds
    text = of(events, "text")[-1]["text"]
    assert text == "Hello from the fake Gemini. You said: Say hello"
    assert text == "".join(e["text"] for e in of(events, "text_delta"))
    assert [e["reason"] for e in of(events, "turn_end")] == ["completed"]
    assert of(events, "result")[0]["text"] == text
    session = of(events, "agent_session")[0]
    assert session["agent"] == "gemini" and session["cwd"] == str(workspace_of(cold, sid))
    assert api.models[-1] == MODEL


def test_a_permission_allowed_with_the_agents_allow(cold: LiveServer) -> None:
    sid = new_session(cold)
    prompt(cold, sid, "[bash] make it")
    request = cold.wait_for_event(sid, "approval_request", timeout=TURN_SECONDS)
    assert request["tool_name"] == "touch created.txt && echo touched"
    assert request["input"]["title"] == "touch created.txt && echo touched"
    assert request["input"]["kind"] == "execute"
    assert [(o["label"], o["kind"]) for o in request["options"]] == [
        ("Allow for this session", "allow_always"), ("Allow", "allow_once"),
        ("Reject", "reject_once")]
    allow = option(request, "allow_once")
    answer(cold, sid, request, decision="allow", option_id=allow["option_id"])
    events = until_turn_end(cold, sid)
    assert (workspace_of(cold, sid) / "created.txt").exists()
    resolved = of(events, "approval_resolved")
    assert [(r["decision"], r.get("option_id")) for r in resolved] == [
        ("allow", allow["option_id"])]
    assert [e["reason"] for e in of(events, "turn_end")] == ["completed"]
    assert any("Tool said:" in e["text"] for e in of(events, "text"))


def test_a_permission_rejected(cold: LiveServer) -> None:
    sid = new_session(cold)
    prompt(cold, sid, "[bash] make it")
    request = cold.wait_for_event(sid, "approval_request", timeout=TURN_SECONDS)
    answer(cold, sid, request, decision="deny",
           option_id=option(request, "reject_once")["option_id"])
    events = until_turn_end(cold, sid)
    assert not (workspace_of(cold, sid) / "created.txt").exists()
    assert [r["is_error"] for r in of(events, "tool_result")] == [True]
    assert [e["reason"] for e in of(events, "turn_end")] == ["completed"]


def test_allow_for_the_session_by_option_id(warm: LiveServer) -> None:
    """``proceed_always`` lives in the CLI process: the warm server keeps it across turns,
    and a later, different command runs unasked (tests/fakes/README.md, Gemini note 9)."""
    sid = new_session(warm)
    prompt(warm, sid, "[bash] make it")
    request = warm.wait_for_event(sid, "approval_request", timeout=TURN_SECONDS)
    always = option(request, "allow_always")
    answer(warm, sid, request, decision="allow", option_id=always["option_id"])
    first = until_turn_end(warm, sid)
    assert of(first, "approval_resolved")[0]["option_id"] == always["option_id"]
    second = turn(warm, sid, "[bash2] once more")
    assert of(second, "approval_request") == []
    assert [e["reason"] for e in of(second, "turn_end")] == ["completed"]
    workspace = workspace_of(warm, sid)
    assert (workspace / "created.txt").exists() and (workspace / "second.txt").exists()


def test_stop_with_a_permission_open(cold: LiveServer) -> None:
    sid = new_session(cold)
    prompt(cold, sid, "[bash] make it")
    cold.wait_for_event(sid, "approval_request", timeout=TURN_SECONDS)
    assert cold.api("POST", f"/api/sessions/{sid}/cancel").json() == {"cancelled": True}
    events = until_turn_end(cold, sid)
    time.sleep(0.5)  # nothing more after turn_end
    events = cold.events(sid)["events"]
    assert [r["reason"] for r in of(events, "approval_resolved")] == ["cancelled"]
    assert [e["reason"] for e in of(events, "turn_end")] == ["cancelled"]
    workspace = workspace_of(cold, sid)
    assert not (workspace / "created.txt").exists()
    assert no_process_in(workspace) == []
    # The session goes on.
    assert [e["reason"] for e in of(turn(cold, sid, "Hello again"), "turn_end")] == [
        "completed"]


def test_a_second_turn_continues_in_the_same_process(warm: LiveServer,
                                                    api: FakeGemini) -> None:
    sid = new_session(warm)
    turn(warm, sid, "[remember] the word is banana")
    events = turn(warm, sid, "[recall] what was it?")
    assert of(events, "text")[-1]["text"] == "I remember: yes"
    assert any("[remember] the word is banana" in t for t in all_user_texts(api.requests[-1]))
    assert of(events, "error") == [] and of(events, "agent_session") == []


def wait_for_second(at_most: float) -> None:
    """Until the wall clock's second within its minute is at most ``at_most``."""
    if time.time() % 60 > at_most:
        time.sleep(60 - time.time() % 60 + 0.2)


def test_a_new_process_resumes_by_the_recap_then_by_load(cold: LiveServer,
                                                         api: FakeGemini) -> None:
    """Each turn is a new process (idle timeout 0), which asks ``session/load``. Within the
    session's first wall-clock minute the load fails (PROTOCOLS.md 4.3): a new CLI session
    whose first prompt carries Tether's recap, and an ``error`` event says so. A minute later
    the load works: the CLI's own history, no error, and the replayed history is not output.
    Either way the model sees the earlier prompt."""
    wait_for_second(30)
    sid = new_session(cold)
    first = turn(cold, sid, "[remember] the word is banana")
    assert of(first, "turn_end")[-1]["reason"] == "completed"
    events = turn(cold, sid, "[recall] what was it?")
    assert int(time.time() // 60) == int(first[0]["ts"] // 60), "the minute changed"
    assert [e["reason"] for e in of(events, "turn_end")] == ["completed"]
    assert any("[remember] the word is banana" in t for t in all_user_texts(api.requests[-1]))
    assert [e["text"] for e in of(events, "text")] == ["I remember: yes"]
    errors = [e["message"] for e in of(events, "error")]
    assert len(errors) == 1 and "could not be restored" in errors[0], errors
    recap = of(events, "agent_session")[0]["agent_session_id"]
    assert recap != of(first, "agent_session")[0]["agent_session_id"]

    wait_for_second(0.5)  # the next minute: the load works
    later = turn(cold, sid, "[recall] and now?")
    assert [e["reason"] for e in of(later, "turn_end")] == ["completed"]
    assert of(later, "error") == []
    assert [s["agent_session_id"] for s in of(later, "agent_session")] == [recap]
    assert [e["text"] for e in of(later, "text")] == ["I remember: yes"]
    assert of(later, "tool_use") == [] and of(later, "thinking") == []
    texts = all_user_texts(api.requests[-1])
    assert any("[remember] the word is banana" in t for t in texts)


def test_the_cli_killed_while_a_permission_waits(cold: LiveServer) -> None:
    sid = new_session(cold)
    prompt(cold, sid, "[bash] make it")
    cold.wait_for_event(sid, "approval_request", timeout=TURN_SECONDS)
    workspace = workspace_of(cold, sid)
    pids = processes_in(workspace)
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    events = until_turn_end(cold, sid)
    time.sleep(0.5)
    events = cold.events(sid)["events"]
    assert of(events, "error"), [e["kind"] for e in events]
    assert [e["reason"] for e in of(events, "turn_end")] == ["error"]
    assert [r["reason"] for r in of(events, "approval_resolved")] == ["cancelled"]
    assert no_process_in(workspace) == []
    assert not (workspace / "created.txt").exists()
    # A new process takes the next turn.
    assert [e["reason"] for e in of(turn(cold, sid, "Hello again"), "turn_end")] == [
        "completed"]


def test_yolo_is_refused_without_allow_bypass(cold: LiveServer) -> None:
    refused = cold.api("POST", "/api/sessions", json={"agent": "gemini",
                                                      "permission_mode": "yolo"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "mode_not_allowed"
    sid = new_session(cold)
    patched = cold.api("PATCH", f"/api/sessions/{sid}", json={"permission_mode": "yolo"})
    assert patched.status_code == 400 and patched.json()["error"]["code"] == "mode_not_allowed"


def test_a_mode_change_reaches_the_agent(warm: LiveServer) -> None:
    """``autoEdit``: Gemini CLI writes a file without asking (its ``session/set_mode``)."""
    sid = new_session(warm)
    workspace = workspace_of(warm, sid)
    assert of(turn(warm, sid, "Say hello"), "turn_end")[-1]["reason"] == "completed"
    patched = warm.api("PATCH", f"/api/sessions/{sid}", json={"permission_mode": "autoEdit"})
    assert patched.status_code == 200, patched.text
    events = turn(warm, sid, f"[write {workspace / 'notes.txt'}] write the notes")
    assert of(events, "approval_request") == []
    assert (workspace / "notes.txt").read_text() == "line one\nline two\n"
    assert [e["reason"] for e in of(events, "turn_end")] == ["completed"]
    # And back: the next write asks again.
    warm.api("PATCH", f"/api/sessions/{sid}", json={"permission_mode": "default"})
    prompt(warm, sid, f"[write {workspace / 'more.txt'}] and more")
    request = warm.wait_for_event(sid, "approval_request", timeout=TURN_SECONDS)
    assert request["input"]["kind"] == "edit" and "diff" in request
    answer(warm, sid, request, decision="deny")
    assert not (workspace / "more.txt").exists()


def test_a_missing_cli(env: dict[str, str], tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-gemini")
    with LiveServer(tmp_path, **{**env, "TETHER_AGENT": "local",
                                 "TETHER_GEMINI_BIN": missing}) as server:
        agents = {a["name"]: a for a in server.api("GET", "/api/agents").json()["agents"]}
        assert agents["gemini"]["available"] is False
        assert "TETHER_GEMINI_BIN" in agents["gemini"]["reason"]
        refused = server.api("POST", "/api/sessions", json={"agent": "gemini"})
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["code"] == "agent_unavailable" and "TETHER_GEMINI_BIN" in error["message"]


def test_a_mode_chosen_at_the_start_holds_in_every_new_process(cold: LiveServer) -> None:
    """Each turn a new process (idle timeout 0): the session's ``autoEdit`` is set over ACP
    after ``session/new`` or ``session/load``, before the prompt, every time."""
    sid = new_session(cold, permission_mode="autoEdit")
    workspace = workspace_of(cold, sid)
    for name in ("one.txt", "two.txt"):
        events = turn(cold, sid, f"[write {workspace / name}] write it")
        assert of(events, "approval_request") == [], name
        assert [e["reason"] for e in of(events, "turn_end")] == ["completed"], events
        assert (workspace / name).read_text() == "line one\nline two\n"
        # The CLI's "[MODE_UPDATE] autoEdit" notice is not the agent's text.
        assert not any("MODE_UPDATE" in e["text"] for e in of(events, "text")), events


def test_an_api_error_ends_the_turn_and_the_session_goes_on(warm: LiveServer) -> None:
    """A 400 from the model: ``session/prompt`` answers a JSON-RPC error (PROTOCOLS.md 4.3):
    an ``error`` event with the API's message, ``turn_end`` ``error``; the process lives on."""
    sid = new_session(warm)
    events = turn(warm, sid, "[error] fail please")
    assert [e["reason"] for e in of(events, "turn_end")] == ["error"]
    assert any("fake: this request is invalid" in e["message"] for e in of(events, "error"))
    assert of(events, "result") == []
    again = turn(warm, sid, "Still there?")
    assert [e["reason"] for e in of(again, "turn_end")] == ["completed"]
    assert of(again, "agent_session") == []  # the same process
