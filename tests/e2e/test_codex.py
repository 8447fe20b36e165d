"""The real Codex CLI (``codex app-server``, pinned in the Makefile) driven through Tether's own
HTTP API, WebSocket and long-poll, against FakeOpenAI on loopback (PROTOCOLS.md 3.3, 5.2).
No network, no API key.

The agent inherits the server's environment, so the codex environment (``HOME``,
``CODEX_HOME`` with its ``config.toml``, ``FAKE_OPENAI_KEY``, ``HTTPS_PROXY`` at a closed port)
is the server's. The CLI comes from ``make codex-cli`` (``.tools/``), ``TETHER_CODEX_BIN`` or
``PATH``; without it these tests skip locally and fail in CI (``CI`` set).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.live import LiveServer, codex_bin
from tests.e2e.test_claude import events_until_turn_end, processes_in, run_turn
from tests.e2e.test_codex_cli import BASH, codex_script
from tests.e2e.wsclient import WsClient
from tests.fakes.openai_api import (
    FakeOpenAI,
    Reply,
    all_user_texts,
    command_reply,
    text_reply,
)
from tests.fakes.record_codex import codex_env

pytestmark = [pytest.mark.e2e, pytest.mark.codex, pytest.mark.timeout(180)]

SLOW = "python3 -c 'import time; time.sleep(30)'"


def _other(latest: str, texts: list[str]) -> Reply:
    """``[slow]`` runs a 30 s sleep; ``[recall]`` repeats the first ``[remember]`` prompt."""
    if latest.startswith("[slow]"):
        return command_reply("Sleeping.", SLOW)
    if latest.startswith("[recall]"):
        earlier = [t for t in texts if t.startswith("[remember]")]
        return text_reply("I remember: " + (earlier[0] if earlier else "nothing"))
    return text_reply(f"Hello from the fake model. You said: {latest}")


script = codex_script(_other)  # the fake model: test_codex_cli's, with [slow] and [recall]


@pytest.fixture(scope="module")
def api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(script) as fake:
        yield fake


def codex_settings(api: FakeOpenAI, workdir: Path, **extra: Any) -> dict[str, Any]:
    """A server's settings for the real codex CLI against ``api``: its environment is the
    agent's (a HOME and CODEX_HOME of its own under ``workdir``)."""
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    return {"TETHER_AGENT": "codex", "TETHER_CODEX_BIN": codex_bin(),
            **codex_env(api, str(home)), **extra}


@pytest.fixture(scope="module")
def server(api: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One process kept across a session's turns (the default idle timeout)."""
    workdir = tmp_path_factory.mktemp("codex-e2e")
    with LiveServer(workdir, **codex_settings(api, workdir)) as server:
        yield server


def workspace_of(server: LiveServer, sid: str) -> Path:
    return (server.workdir / "data" / "sessions" / sid).resolve()


def answer(server: LiveServer, sid: str, request_id: str, **body: Any) -> None:
    response = server.api("POST", f"/api/sessions/{sid}/approvals/{request_id}", json=body)
    assert response.status_code == 200, response.text


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in events]


def wait_no_processes(workspace: Path, timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while (found := processes_in(workspace)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def check_approval_request(request: dict[str, Any], workspace: Path) -> None:
    assert request["tool_name"] == "Bash"
    assert request["input"]["command"] == BASH  # without codex's /bin/bash -lc around it
    assert request["cwd"] == str(workspace)
    assert [(o["option_id"], o["label"], o["kind"]) for o in request["options"]] == [
        ("accept", "Allow", "allow_once"),
        ("acceptForSession", "Allow for this session", "allow_always"),
        ("decline", "Deny", "reject_once")]


# -- the catalog -------------------------------------------------------------------------------


def test_agents_lists_codex_available_with_its_modes_and_models(server: LiveServer) -> None:
    agents = {a["name"]: a for a in server.api("GET", "/api/agents").json()["agents"]}
    codex = agents["codex"]
    assert codex["available"] is True
    assert codex["permission_modes"][0] == "default"
    assert {"default", "on-request", "read-only", "full-access"} <= set(codex["permission_modes"])
    assert "default" in [m["id"] for m in codex["models"]]


def test_full_access_is_refused_without_allow_bypass(server: LiveServer) -> None:
    response = server.api("POST", "/api/sessions",
                          json={"agent": "codex", "permission_mode": "full-access"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "mode_not_allowed"


def test_a_missing_cli_is_unavailable_and_named(api: FakeOpenAI, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "codex"
    settings = codex_settings(api, tmp_path, TETHER_CODEX_BIN=str(missing), TETHER_AGENT="local")
    with LiveServer(tmp_path, **settings) as server:
        agents = {a["name"]: a for a in server.api("GET", "/api/agents").json()["agents"]}
        assert agents["codex"]["available"] is False
        assert "TETHER_CODEX_BIN" in agents["codex"]["reason"]
        response = server.api("POST", "/api/sessions", json={"agent": "codex"})
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "agent_unavailable" and "TETHER_CODEX_BIN" in error["message"]


# -- turns -------------------------------------------------------------------------------------


def test_text_turn_streams_deltas_text_and_result(server: LiveServer) -> None:
    session = server.create_session(agent="codex")
    sid = session["id"]
    assert session["agent"] == "codex"
    run_turn(server, sid, "say hello")
    events = events_until_turn_end(server, sid)
    seen = kinds(events)
    assert seen[0] == "user" and seen[-1] == "turn_end" and seen.count("turn_end") == 1
    assert seen.index("text_delta") < seen.index("text") < seen.index("result")
    text = next(e["text"] for e in events if e["kind"] == "text")
    assert text == "Hello from the fake model. You said: say hello"
    assert text == "".join(e["text"] for e in events if e["kind"] == "text_delta")
    result = next(e for e in events if e["kind"] == "result")
    assert result["is_error"] is False
    assert result["usage"]["input_tokens"] > 0 and result["usage"]["output_tokens"] > 0
    assert events[-1]["reason"] == "completed"
    started = next(e for e in events if e["kind"] == "agent_session")
    assert started["agent"] == "codex" and started["cwd"] == str(workspace_of(server, sid))


def test_approval_allowed_runs_the_command(server: LiveServer) -> None:
    sid = server.create_session()["id"]
    workspace = workspace_of(server, sid)
    run_turn(server, sid, "[bash] create the file")
    request = server.wait_for_event(sid, "approval_request")
    check_approval_request(request, workspace)
    assert server.api("GET", f"/api/sessions/{sid}").json()["state"] == "waiting"
    answer(server, sid, request["request_id"], decision="allow", client="e2e")
    events = events_until_turn_end(server, sid)
    assert (workspace / "created.txt").exists()
    resolved = next(e for e in events if e["kind"] == "approval_resolved")
    # No option named: allow picks Codex's allow_once option (docs/protocol.md).
    assert resolved["decision"] == "allow" and "option_id" not in resolved
    result = next(e for e in events if e["kind"] == "tool_result")
    assert result["is_error"] is False and "touched" in result["content"]
    assert any(e["kind"] == "text" and e["text"] == "Tool said: touched" for e in events)
    assert kinds(events).count("turn_end") == 1 and events[-1]["reason"] == "completed"


def test_approval_denied_runs_nothing_and_the_turn_completes(server: LiveServer) -> None:
    sid = server.create_session()["id"]
    workspace = workspace_of(server, sid)
    run_turn(server, sid, "[bash] create the file")
    request = server.wait_for_event(sid, "approval_request")
    answer(server, sid, request["request_id"], decision="deny", option_id="decline")
    events = events_until_turn_end(server, sid)
    assert not (workspace / "created.txt").exists()
    resolved = next(e for e in events if e["kind"] == "approval_resolved")
    assert resolved["decision"] == "deny" and resolved["option_id"] == "decline"
    result = next(e for e in events if e["kind"] == "tool_result")
    assert result["is_error"] is True and "declined" in result["content"]
    assert events[-1]["reason"] == "completed"


def test_an_opposite_option_or_an_edited_command_is_refused(server: LiveServer) -> None:
    sid = server.create_session()["id"]
    run_turn(server, sid, "[bash] create the file")
    request = server.wait_for_event(sid, "approval_request")
    wrong = server.api("POST", f"/api/sessions/{sid}/approvals/{request['request_id']}",
                       json={"decision": "allow", "option_id": "decline"})
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "bad_request"
    # Codex takes a decision alone: an edited command would be dropped and the original run.
    edited = server.api("POST", f"/api/sessions/{sid}/approvals/{request['request_id']}",
                        json={"decision": "allow", "updated_input": {"command": "touch x"}})
    assert edited.status_code == 400 and "cannot take an edited input" in edited.text
    answer(server, sid, request["request_id"], decision="deny")
    events = events_until_turn_end(server, sid)
    assert not (workspace_of(server, sid) / "created.txt").exists()
    assert events[-1]["reason"] == "completed"


def test_allow_for_this_session_is_not_asked_again(server: LiveServer) -> None:
    """``acceptForSession`` (what the card's "Allow for this session" sends): the same
    command run again in the turn is not asked again (PROTOCOLS.md 3.3, observed)."""
    sid = server.create_session()["id"]
    run_turn(server, sid, "[twice] create it twice")
    request = server.wait_for_event(sid, "approval_request")
    answer(server, sid, request["request_id"], decision="allow", option_id="acceptForSession")
    events = events_until_turn_end(server, sid)
    assert kinds(events).count("approval_request") == 1
    results = [e for e in events if e["kind"] == "tool_result"]
    assert [r["is_error"] for r in results] == [False, False]
    resolved = next(e for e in events if e["kind"] == "approval_resolved")
    assert resolved["option_id"] == "acceptForSession"
    assert events[-1]["reason"] == "completed"


def test_stop_with_an_approval_open_ends_it_once_and_leaves_no_process(
        server: LiveServer) -> None:
    sid = server.create_session()["id"]
    workspace = workspace_of(server, sid)
    run_turn(server, sid, "[bash] create the file")
    request = server.wait_for_event(sid, "approval_request")
    assert processes_in(workspace)
    assert server.api("POST", f"/api/sessions/{sid}/cancel").json() == {"cancelled": True}
    events = events_until_turn_end(server, sid, timeout=30)
    time.sleep(1)  # anything late (serverRequest/resolved after turn/completed) shows now
    events = list(server.events(sid)["events"])
    resolved = [e for e in events if e["kind"] == "approval_resolved"]
    assert len(resolved) == 1 and resolved[0]["reason"] == "cancelled"
    assert resolved[0]["request_id"] == request["request_id"]
    ends = [e for e in events if e["kind"] == "turn_end"]
    assert [e["reason"] for e in ends] == ["cancelled"]
    assert not (workspace / "created.txt").exists()
    assert wait_no_processes(workspace) == []
    # And the session goes on, in a new process that resumes the thread.
    run_turn(server, sid, "still there?")
    more = events_until_turn_end(server, sid, after=events[-1]["id"])
    assert more[-1]["reason"] == "completed"


def test_a_second_turn_continues_the_conversation(server: LiveServer, api: FakeOpenAI) -> None:
    sid = server.create_session()["id"]
    run_turn(server, sid, "[remember] the word is banana")
    first = events_until_turn_end(server, sid)
    run_turn(server, sid, "[recall] what was the word?")
    events = events_until_turn_end(server, sid, after=first[-1]["id"])
    text = [e["text"] for e in events if e["kind"] == "text"][-1]
    assert text == "I remember: [remember] the word is banana"
    assert all_user_texts(api.requests[-1])[-2:] == ["[remember] the word is banana",
                                                     "[recall] what was the word?"]
    # The same process: one agent_session for both turns.
    assert kinds(first + events).count("agent_session") == 1


def codex_pids(workspace: Path) -> list[int]:
    """The native ``codex`` processes working in ``workspace`` (not the node launcher)."""
    found = []
    for pid in processes_in(workspace):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"codex" and b"app-server" in argv:
            found.append(pid)
    return found


@pytest.mark.parametrize("victim", ["codex", "launcher"])
def test_the_cli_killed_mid_turn_ends_the_turn_with_an_error(server: LiveServer,
                                                             victim: str) -> None:
    """SIGKILL while an approval waits: the native codex (a crash), or the node launcher the
    npm package starts it with (the OOM killer's pick)."""
    sid = server.create_session()["id"]
    workspace = workspace_of(server, sid)
    run_turn(server, sid, "[bash] create the file")
    request = server.wait_for_event(sid, "approval_request")
    native = codex_pids(workspace)
    assert len(native) == 1, processes_in(workspace)
    if victim == "codex":
        os.kill(native[0], signal.SIGKILL)
    else:
        launchers = [p for p in processes_in(workspace) if p not in native]
        assert len(launchers) == 1
        os.kill(launchers[0], signal.SIGKILL)
    events = events_until_turn_end(server, sid, timeout=30)
    errors = [e for e in events if e["kind"] == "error"]
    assert len(errors) == 1, errors
    message = errors[0]["message"]
    assert message.startswith("the codex agent exited (code -9) before the turn ended")
    assert "\x1b" not in message  # its stderr tail, without the log's colours
    resolved = [e for e in events if e["kind"] == "approval_resolved"]
    assert len(resolved) == 1 and resolved[0]["reason"] == "cancelled"
    assert resolved[0]["request_id"] == request["request_id"]
    assert [e["reason"] for e in events if e["kind"] == "turn_end"] == ["error"]
    assert wait_no_processes(workspace) == []
    # The next turn starts a new process that resumes the thread.
    run_turn(server, sid, "hello again")
    more = events_until_turn_end(server, sid, after=events[-1]["id"])
    assert more[-1]["reason"] == "completed"


# -- a process per turn ------------------------------------------------------------------------


def test_a_new_process_resumes_the_thread(api: FakeOpenAI,
                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    workdir = tmp_path_factory.mktemp("codex-resume")
    with LiveServer(workdir, **codex_settings(api, workdir,
                                              TETHER_AGENT_IDLE_TIMEOUT=0)) as server:
        sid = server.create_session()["id"]
        workspace = workspace_of(server, sid)
        run_turn(server, sid, "[remember] the word is banana")
        first = events_until_turn_end(server, sid)
        assert wait_no_processes(workspace) == []  # idle timeout 0: the process is gone
        run_turn(server, sid, "[recall] what was the word?")
        events = events_until_turn_end(server, sid, after=first[-1]["id"])
        assert events[-1]["reason"] == "completed"
        text = [e["text"] for e in events if e["kind"] == "text"][-1]
        assert text == "I remember: [remember] the word is banana"
        assert all_user_texts(api.requests[-1])[-2:] == ["[remember] the word is banana",
                                                         "[recall] what was the word?"]
        threads = [e["agent_session_id"] for e in first + events if e["kind"] == "agent_session"]
        assert len(threads) == 2 and len(set(threads)) == 1
        # The turn's own tokens, not the restored thread's total.
        results = [e for e in first + events if e["kind"] == "result"]
        assert results[1]["usage"]["input_tokens"] < results[1]["session_usage"]["input_tokens"]


# -- the other transports ----------------------------------------------------------------------


def test_a_turn_with_an_approval_over_websocket(server: LiveServer) -> None:
    with WsClient(server.url, timeout=30) as client:
        sid = client.call("session.create", agent="codex")["id"]
        client.call("session.attach", session_id=sid)
        client.call("prompt.submit", session_id=sid, text="[bash] create the file")
        request = client.events_until(sid, "approval_request")[-1]
        check_approval_request(request, workspace_of(server, sid))
        result = client.call("approval.respond", session_id=sid,
                             request_id=request["request_id"], decision="allow",
                             option_id="accept", client="ws-test")
        assert result == {"request_id": request["request_id"], "resolved": True,
                          "decision": "allow"}
        events = client.events_until(sid, "turn_end", timeout=60)
    resolved = next(e for e in events if e["kind"] == "approval_resolved")
    assert resolved["request_id"] == request["request_id"] and resolved["by"] == "ws-test"
    assert any(e["kind"] == "text" and e["text"] == "Tool said: touched" for e in events)
    assert events[-1]["reason"] == "completed"
    assert (workspace_of(server, sid) / "created.txt").exists()
    # The same events, with the same ids, as the HTTP log has them.
    logged = {e["id"]: e for e in server.events(sid)["events"]}
    assert all(logged[e["id"]] == e for e in events)


def test_a_turn_with_an_approval_over_long_poll(server: LiveServer) -> None:
    sid = server.create_session()["id"]
    run_turn(server, sid, "[bash] create the file")
    seen: list[dict[str, Any]] = []
    after = 0
    deadline = time.monotonic() + 60
    answered = False
    while time.monotonic() < deadline and not (seen and seen[-1]["kind"] == "turn_end"):
        page = server.events(sid, after, wait=5)
        seen += page["events"]
        after = page["last_event_id"]
        request = next((e for e in page["events"] if e["kind"] == "approval_request"), None)
        if request is not None and not answered:
            answer(server, sid, request["request_id"], decision="allow")
            answered = True
    assert answered and seen[-1]["kind"] == "turn_end" and seen[-1]["reason"] == "completed"
    ids = [e["id"] for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert ids == [e["id"] for e in server.events(sid)["events"]]
    assert (workspace_of(server, sid) / "created.txt").exists()
