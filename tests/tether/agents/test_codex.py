"""CodexDriver, message by message, from the real ``codex app-server`` 0.171.0's output
recorded in tests/fixtures/codex/ (tests/fakes/record_codex.py), plus the cases no recording
holds (unknown requests, JSON-RPC errors, Stop before the turn is named)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tether.agents.base import check_options
from tether.agents.codex import CODEX_MODELS, CodexAgent, CodexDriver
from tether.agents.codex_items import diff_text, shell_script
from tether.agents.driver import (
    Action,
    Answer,
    Ask,
    DriverContext,
    Emit,
    Prompt,
    Ready,
    Send,
    Started,
    TurnOver,
    Withdraw,
)
from tether.config import Settings
from tether.errors import ModeNotAllowed

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "codex"
SCENARIOS = sorted(p.stem for p in FIXTURES.glob("*.jsonl"))
WORKSPACE = Path("/srv/work")


def records(name: str, proc: int | None = None) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines()]
    return [r for r in lines if "msg" in r and (proc is None or r.get("proc") == proc)]


def driver(mode: str = "default", model: str = "default") -> CodexDriver:
    return CodexDriver(DriverContext(agent="codex", workspace=WORKSPACE, model=model,
                                     permission_mode=mode))


def _answer_for(result: dict[str, Any], asked: dict[str, Ask]) -> Answer:
    """The Tether answer that makes the driver send the recorded ``result``."""
    if "answers" in result:  # a question: back from ids to Tether's {question text: answer}
        ask = next(iter(asked.values()))
        texts = {q["question"] for q in ask.fields["questions"]}
        (text,) = texts
        (reply,) = [a["answers"][0] for a in result["answers"].values()]
        return Answer("allow", answers={text: reply})
    return {"accept": Answer("allow"), "acceptForSession": Answer("allow", scope="session"),
            "decline": Answer("deny", message="no")}[result["decision"]]


def replay(name: str, proc: int | None = None, d: CodexDriver | None = None,
           resume: str | None = None) -> tuple[CodexDriver, list[Action], list[dict[str, Any]]]:
    """Feed a recording through a driver: stdout lines to ``receive``; what the recorder did
    (a prompt, an answer, Stop) as the runner's calls. Returns the driver, every action, and
    the recorded stdin lines (to compare with the driver's ``Send``s)."""
    d = d or driver()
    actions: list[Action] = list(d.start(resume, resume is not None))
    asked: dict[str, Ask] = {}
    sent: list[dict[str, Any]] = []
    for rec in records(name, proc):
        msg = rec["msg"]
        if rec["dir"] == "out":
            new = d.receive(msg)
            asked.update({a.token: a for a in new if isinstance(a, Ask)})
            actions.extend(new)
            continue
        sent.append(msg)
        if msg.get("method") == "turn/start":
            text = msg["params"]["input"][0]["text"]
            actions.extend(d.prompt(Prompt(text)))
        elif msg.get("method") == "turn/interrupt":
            actions.extend(d.interrupt())
        elif "result" in msg and "method" not in msg:  # our answer to a server request
            token = str(msg["id"])
            actions.extend(d.answer(token, _answer_for(msg["result"], asked)))
    return d, actions, sent


def emitted(actions: list[Action], kind: str) -> list[dict[str, Any]]:
    return [a.payload for a in actions if isinstance(a, Emit) and a.kind == kind]


def sends(actions: list[Action]) -> list[dict[str, Any]]:
    return [a.message for a in actions if isinstance(a, Send)]


def turn_overs(actions: list[Action]) -> list[str]:
    return [a.reason for a in actions if isinstance(a, TurnOver)]


def test_fixtures_were_recorded_with_the_pinned_cli() -> None:
    meta = json.loads((FIXTURES / "meta.json").read_text())
    assert meta["codex_version"] == "codex-cli 0.171.0"
    assert not [name for name in SCENARIOS if "failed" in meta.get(name, {})]


@pytest.mark.parametrize("name", SCENARIOS)
def test_driver_sends_what_the_recorder_sent(name: str) -> None:
    """The driver's requests come in the recorded order, with the recorded ids (so every
    recorded response reaches the request it answers), and its answers are byte-equal."""
    procs = [1, 2] if name == "resume" else [None]
    thread = None
    for proc in procs:
        d, actions, sent = replay(name, proc, resume=thread)
        ours = sends(actions)
        assert [(m.get("method"), m.get("id")) for m in ours] == \
            [(m.get("method"), m.get("id")) for m in sent]
        for mine, recorded in zip(ours, sent, strict=True):
            if "result" in recorded:
                assert mine == recorded
        thread = next(a.agent_session_id for a in actions if isinstance(a, Started))


def test_handshake_opens_a_thread_then_sends_the_held_prompt() -> None:
    d = driver()
    (init,) = sends(d.start(None, False))
    assert init["method"] == "initialize" and init["params"]["clientInfo"]["name"] == "tether"
    assert d.prompt(Prompt("Say hello")) == []  # held until the thread is open
    out = records("text")
    response = next(r["msg"] for r in out if r["msg"].get("id") == 1 and "result" in r["msg"])
    initialized, start = sends(d.receive(response))
    assert initialized == {"jsonrpc": "2.0", "method": "initialized"}
    assert start["method"] == "thread/start"
    assert start["params"] == {"cwd": str(WORKSPACE), "approvalPolicy": "untrusted",
                               "sandbox": "workspace-write"}
    opened = next(r["msg"] for r in out if r["msg"].get("id") == 2 and "result" in r["msg"])
    actions = d.receive(opened)
    thread = opened["result"]["thread"]["id"]
    assert actions[:3] == [
        Emit("agent_session", {"agent": "codex", "agent_session_id": thread,
                               "model": "fake-model", "cwd": opened["result"]["cwd"],
                               "permission_mode": "default"}),
        Started(thread), Ready()]
    (turn,) = sends(actions)
    assert turn["method"] == "turn/start" and d.ready
    assert turn["params"] == {"threadId": thread, "input": [{"type": "text", "text": "Say hello"}],
                              "approvalPolicy": "untrusted",
                              "sandboxPolicy": {"type": "workspaceWrite"}}


def test_text_turn_streams_deltas_then_text_result_and_turn_over() -> None:
    _, actions, _ = replay("text")
    deltas = emitted(actions, "text_delta")
    (text,) = emitted(actions, "text")
    assert len(deltas) == 2 and all(d["index"] == 0 for d in deltas)
    assert "".join(d["text"] for d in deltas) == text["text"]
    assert text["text"] == "Hello from the fake API. You said: Say hello"
    (result,) = emitted(actions, "result")
    assert result["is_error"] is False and result["subtype"] == "success"
    assert result["text"] == "" and result["num_turns"] == 1
    assert isinstance(result["duration_ms"], int)
    # FakeOpenAI's usage: 24 in (4 of them cached), 14 out.
    assert result["usage"] == {"input_tokens": 20, "output_tokens": 14,
                               "cache_read_input_tokens": 4, "cache_creation_input_tokens": 0}
    assert turn_overs(actions) == ["completed"]
    assert isinstance(actions[-1], TurnOver)
    assert emitted(actions, "error") == []


def _approval(actions: list[Action]) -> Ask:
    (ask,) = [a for a in actions if isinstance(a, Ask)]
    return ask


def test_command_approval_accepted_runs_and_reports_output() -> None:
    _, actions, _ = replay("approval_accept")
    (use,) = emitted(actions, "tool_use")
    ask = _approval(actions)
    assert actions.index(Emit("tool_use", use)) < actions.index(ask)
    # The model's command, not codex's "/bin/bash -lc '…'" around it.
    assert use["name"] == "Bash" and use["input"]["command"] == "touch created.txt && echo touched"
    assert ask.token == "0" and ask.kind == "approval"
    assert ask.fields["tool_name"] == "Bash" and ask.fields["tool_use_id"] == use["tool_use_id"]
    assert ask.fields["input"] == use["input"] and ask.fields["cwd"] == use["input"]["cwd"]
    assert [o["option_id"] for o in ask.fields["options"]] == ["accept", "acceptForSession",
                                                                "decline"]
    (result,) = emitted(actions, "tool_result")
    assert result == {"tool_use_id": use["tool_use_id"], "content": "touched\n",
                      "is_error": False}
    # serverRequest/resolved after our own answer withdraws nothing.
    assert not [a for a in actions if isinstance(a, Withdraw)]
    assert turn_overs(actions) == ["completed"]


def test_command_approval_declined_is_an_error_result_and_the_turn_goes_on() -> None:
    _, actions, _ = replay("approval_decline")
    (result,) = emitted(actions, "tool_result")
    assert result["is_error"] is True and result["content"].startswith("declined")
    assert len(emitted(actions, "text")) == 2  # the model answered the declined call
    assert turn_overs(actions) == ["completed"]


@pytest.mark.parametrize("answer", [Answer("allow", scope="session"),
                                    Answer("allow", option_id="acceptForSession")])
def test_allow_for_session_is_accept_for_session(answer: Answer) -> None:
    d, _, _ = replay("approval_session")
    req = next(r["msg"] for r in records("approval_session")
               if "requestApproval" in str(r["msg"].get("method")))
    d.receive(req)  # a request asked again, for the mapping alone
    (reply,) = sends(d.answer("0", answer))
    assert reply == {"jsonrpc": "2.0", "id": 0, "result": {"decision": "acceptForSession"}}


def test_accept_for_session_asks_once_for_the_same_command_twice() -> None:
    _, actions, _ = replay("approval_session")
    assert len([a for a in actions if isinstance(a, Ask)]) == 1
    assert [r["is_error"] for r in emitted(actions, "tool_result")] == [False, False]


def test_file_change_is_a_tool_use_with_paths_and_an_approval_with_the_diff() -> None:
    _, actions, _ = replay("file_change")
    (use,) = emitted(actions, "tool_use")
    assert use["name"] == "apply_patch"
    (change,) = use["input"]["changes"]
    assert change["path"].endswith("/hello.txt") and change["kind"] == "add"
    assert change["diff"] == "hello\n"
    ask = _approval(actions)
    assert ask.fields["tool_name"] == "apply_patch" and ask.fields["input"] == use["input"]
    assert ask.fields["tool_use_id"] == use["tool_use_id"]
    assert ask.fields["diff"].endswith("/hello.txt\n@@ -0,0 +1,1 @@\n+hello")
    (result,) = emitted(actions, "tool_result")
    assert result["is_error"] is False and "hello.txt" in result["content"]
    assert turn_overs(actions) == ["completed"]


def test_file_change_declined() -> None:
    _, actions, _ = replay("file_change_decline")
    (result,) = emitted(actions, "tool_result")
    # Just that: the change is in the tool call and its card already.
    assert result == {"tool_use_id": result["tool_use_id"], "content": "declined by the user",
                      "is_error": True}
    assert "cwd" not in _approval(actions).fields


def test_stop_with_an_approval_pending_interrupts_the_turn_once() -> None:
    _, actions, _ = replay("interrupt")
    interrupt = next(m for m in sends(actions) if m.get("method") == "turn/interrupt")
    turn = next(r["msg"]["params"]["turn"]["id"] for r in records("interrupt")
                if r["msg"].get("method") == "turn/started")
    assert interrupt["params"] == {"threadId": interrupt["params"]["threadId"], "turnId": turn}
    first_over = next(i for i, a in enumerate(actions) if isinstance(a, TurnOver))
    first_turn = actions[:first_over + 1]
    assert turn_overs(first_turn) == ["cancelled"]
    (result,) = emitted(first_turn, "result")
    assert result["is_error"] is True and result["subtype"] == "interrupted"
    # The command never ran and got no item/completed: the driver closes it.
    (closed,) = emitted(first_turn, "tool_result")
    assert closed["is_error"] is True
    # The late serverRequest/resolved (after turn/completed) withdraws nothing.
    assert not [a for a in actions if isinstance(a, Withdraw)]
    # The next turn runs normally.
    assert turn_overs(actions) == ["cancelled", "completed"]


def test_question_in_plan_mode_is_a_clarify_answered_by_question_id() -> None:
    _, actions, sent = replay("ask")
    (ask,) = [a for a in actions if isinstance(a, Ask)]
    assert ask.kind == "clarify"
    assert ask.fields["questions"] == [{
        "question": "Which database should we use?", "header": "Database",
        "options": [{"label": "PostgreSQL", "description": "Relational"},
                    {"label": "SQLite", "description": "Embedded"}],
        "multiSelect": False}]
    assert ask.fields["tool_use_id"]
    answered = next(m for m in sends(actions) if "result" in m)
    assert answered["result"] == {"answers": {"database": {"answers": ["SQLite"]}}}
    assert turn_overs(actions) == ["completed"]


def test_two_turns_report_each_turns_own_usage() -> None:
    _, actions, _ = replay("two_turns")
    usages = [r["usage"] for r in emitted(actions, "result")]
    assert usages == [usages[0], usages[0]] and usages[0]["output_tokens"] == 14
    assert turn_overs(actions) == ["completed", "completed"]


def test_resume_in_a_new_process_uses_thread_resume_and_the_same_thread() -> None:
    _, first, _ = replay("resume", 1)
    (started,) = [a for a in first if isinstance(a, Started)]
    d, second, _ = replay("resume", 2, resume=started.agent_session_id)
    resume = next(m for m in sends(second) if m.get("method") == "thread/resume")
    assert resume["params"] == {"threadId": started.agent_session_id, "cwd": str(WORKSPACE),
                                "approvalPolicy": "untrusted", "sandbox": "workspace-write",
                                "excludeTurns": True}
    assert [a for a in second if isinstance(a, Started)] == [started]
    # The restored total (38 tokens) came before turn/started: not this turn's.
    (result,) = emitted(second, "result")
    assert result["usage"]["output_tokens"] == 14
    assert turn_overs(second) == ["completed"]


def test_reasoning_is_thinking_before_the_text() -> None:
    _, actions, _ = replay("reasoning")
    assert emitted(actions, "thinking") == [{"text": "The user wants a greeting."}]
    kinds = [a.kind for a in actions if isinstance(a, Emit) and a.kind in ("thinking", "text")]
    assert kinds == ["thinking", "text"]


def test_a_failing_command_is_an_error_result_with_its_output_and_exit_code() -> None:
    _, actions, _ = replay("command_fails")
    (result,) = emitted(actions, "tool_result")
    assert result["is_error"] is True
    assert result["content"] == ("ls: cannot access '/nonexistent-dir': No such file or "
                                 "directory\n\n(exit code 2)")
    assert turn_overs(actions) == ["completed"]


def test_model_api_error_fails_the_turn_with_one_error() -> None:
    _, actions, _ = replay("api_error")
    assert emitted(actions, "error") == [{"message": "fake: this request is invalid"}]
    (result,) = emitted(actions, "result")
    assert result["is_error"] is True and result["subtype"] == "error"
    assert turn_overs(actions) == ["error"]


# -- what no recording holds ----------------------------------------------------------------


def opened(mode: str = "default", model: str = "default") -> CodexDriver:
    """A driver past the handshake, on thread ``th``."""
    d = driver(mode, model)
    d.start(None, False)
    d.receive({"id": 1, "result": {}})
    d.receive({"id": 2, "result": {"thread": {"id": "th"}, "model": "m", "cwd": "/srv/work"}})
    return d


def test_unknown_server_request_gets_method_not_found() -> None:
    d = opened()
    (reply,) = sends(d.receive({"method": "item/tool/call", "id": 7, "params": {}}))
    assert reply["id"] == 7 and reply["error"]["code"] == -32601


def test_unknown_notifications_are_dropped() -> None:
    d = opened()
    for method in ("thread/status/changed", "warning", "account/rateLimits/updated",
                   "no/such/thing"):
        assert d.receive({"method": method, "params": {"x": 1}}) == []


def test_a_retry_notice_is_not_fatal() -> None:
    d = opened()
    d.prompt(Prompt("hi"))
    notice = {"method": "error", "params": {"error": {"message": "Reconnecting... 1/5"},
                                            "willRetry": True, "threadId": "th",
                                            "turnId": "t1"}}
    assert d.receive(notice) == []


def test_an_error_response_to_turn_start_ends_the_turn() -> None:
    d = opened()
    (start,) = sends(d.prompt(Prompt("hi")))
    actions = d.receive({"id": start["id"], "error": {"code": -32600, "message": "bad input"}})
    assert actions == [Emit("error", {"message": "codex turn/start: bad input"}),
                       TurnOver("error")]


def test_a_failed_thread_resume_ends_the_held_turn() -> None:
    d = driver()
    d.start("gone", True)
    d.prompt(Prompt("hi"))
    (_, resume) = sends(d.receive({"id": 1, "result": {}}))
    assert resume["method"] == "thread/resume" and resume["params"]["threadId"] == "gone"
    actions = d.receive({"id": 2, "error": {"code": -32600, "message": "no rollout found"}})
    assert turn_overs(actions) == ["error"] and emitted(actions, "error")
    assert not d.ready


def test_stop_before_the_turn_is_named_interrupts_when_it_is() -> None:
    d = opened()
    (start,) = sends(d.prompt(Prompt("hi")))
    assert d.interrupt() == []
    (interrupt,) = sends(d.receive({"id": start["id"], "result": {"turn": {"id": "t1"}}}))
    assert interrupt["method"] == "turn/interrupt"
    assert interrupt["params"] == {"threadId": "th", "turnId": "t1"}
    assert d.receive({"method": "turn/started", "params": {"turn": {"id": "t1"}}}) == []


def test_stop_with_no_turn_does_nothing() -> None:
    assert opened().interrupt() == []


def test_stop_during_the_handshake_drops_the_held_prompt() -> None:
    d = driver()
    d.start(None, False)
    d.prompt(Prompt("hi"))
    assert d.interrupt() == [TurnOver("cancelled")]


def _asked(d: CodexDriver) -> None:
    d.prompt(Prompt("hi"))
    d.receive({"method": "turn/started", "params": {"turn": {"id": "t1"}}})
    d.receive({"method": "item/commandExecution/requestApproval", "id": 0,
               "params": {"itemId": "c1", "command": "touch x", "cwd": "/srv/work"}})


def test_a_request_the_agent_resolves_itself_is_withdrawn() -> None:
    d = opened()
    _asked(d)
    resolved = {"method": "serverRequest/resolved", "params": {"threadId": "th", "requestId": 0}}
    assert d.receive(resolved) == [Withdraw("0")]
    assert d.answer("0", Answer("allow")) == []  # already settled: nothing to send


def test_a_request_pending_at_turn_end_is_withdrawn_and_a_late_notice_ignored() -> None:
    d = opened()
    _asked(d)
    actions = d.receive({"method": "turn/completed",
                         "params": {"turn": {"id": "t1", "status": "failed",
                                             "error": {"message": "boom"}}}})
    assert actions[0] == Withdraw("0")
    assert emitted(actions, "error") == [{"message": "boom"}]
    assert turn_overs(actions) == ["error"]
    resolved = {"method": "serverRequest/resolved", "params": {"threadId": "th", "requestId": 0}}
    assert d.receive(resolved) == []


def test_a_cancelled_answer_sends_nothing() -> None:
    d = opened()
    _asked(d)
    assert d.answer("0", Answer("cancelled")) == []


def test_configure_takes_effect_at_the_next_turn() -> None:
    d = opened()
    assert d.configure("gpt-6.2-sol", "read-only") == []
    (start,) = sends(d.prompt(Prompt("hi")))
    assert start["params"]["approvalPolicy"] == "untrusted"
    assert start["params"]["sandboxPolicy"] == {"type": "readOnly"}
    assert start["params"]["model"] == "gpt-6.2-sol"


@pytest.mark.parametrize(("mode", "approval", "sandbox"), [
    ("default", "untrusted", "workspace-write"),
    ("on-request", "on-request", "workspace-write"),
    ("read-only", "untrusted", "read-only"),
    ("full-access", "never", "danger-full-access"),
])
def test_modes_are_approval_policy_and_sandbox_pairs(mode: str, approval: str,
                                                     sandbox: str) -> None:
    d = driver(mode, "gpt-6.1-sol")
    d.start(None, False)
    (_, start) = sends(d.receive({"id": 1, "result": {}}))
    assert start["params"]["approvalPolicy"] == approval
    assert start["params"]["sandbox"] == sandbox
    assert start["params"]["model"] == "gpt-6.1-sol"


def test_images_go_first_as_data_urls() -> None:
    d = opened()
    (start,) = sends(d.prompt(Prompt("look", [{"media_type": "image/png", "data": "AAAA"}])))
    assert start["params"]["input"] == [{"type": "image", "url": "data:image/png;base64,AAAA"},
                                        {"type": "text", "text": "look"}]


def test_a_second_prompt_waits_for_the_running_turn() -> None:
    d = opened()
    assert len(sends(d.prompt(Prompt("one")))) == 1
    assert d.prompt(Prompt("two")) == []
    d.receive({"method": "turn/started", "params": {"turn": {"id": "t1"}}})
    actions = d.receive({"method": "turn/completed",
                         "params": {"turn": {"id": "t1", "status": "completed"}}})
    assert turn_overs(actions) == ["completed"]
    (start,) = sends(actions)
    assert start["params"]["input"][-1]["text"] == "two"


def test_reasoning_is_thinking() -> None:
    d = opened()
    item = {"type": "reasoning", "id": "r1", "summary": ["Plan it."], "content": []}
    assert d.receive({"method": "item/completed", "params": {"item": item}}) == [
        Emit("thinking", {"text": "Plan it."})]


def test_a_failed_command_is_an_error_result_with_its_exit_code() -> None:
    d = opened()
    item = {"type": "commandExecution", "id": "c1", "command": "false", "cwd": "/srv/work",
            "status": "failed", "aggregatedOutput": "nope\n", "exitCode": 1}
    use, result = d.receive({"method": "item/completed", "params": {"item": item}})
    assert use == Emit("tool_use", {"tool_use_id": "c1", "name": "Bash",
                                    "input": {"command": "false", "cwd": "/srv/work"}})
    assert result == Emit("tool_result", {"tool_use_id": "c1", "content": "nope\n\n(exit code 1)",
                                          "is_error": True})


def test_closed_says_nothing() -> None:
    assert opened().closed() == []


# -- the spec --------------------------------------------------------------------------------


def test_agent_argv_env_and_driver(tmp_path: Path) -> None:
    binary = tmp_path / "codex"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    agent = CodexAgent(Settings.from_env({"TETHER_CODEX_BIN": str(binary)}))
    assert agent.name == "codex" and agent.unavailable() is None
    assert agent.argv("any-id", True) == [str(binary), "app-server"]
    assert "TETHER_TOKEN" not in agent.env()
    assert isinstance(agent.driver(DriverContext("codex", tmp_path)), CodexDriver)
    assert agent.permission_modes[0] == "default"
    assert [m["id"] for m in CODEX_MODELS if m.get("default")] == ["default"]


def test_agent_without_the_cli_says_what_to_install(tmp_path: Path) -> None:
    agent = CodexAgent(Settings.from_env({"TETHER_CODEX_BIN": str(tmp_path / "missing")}))
    reason = agent.unavailable()
    assert reason is not None and "TETHER_CODEX_BIN" in reason and "make codex-cli" in reason


def test_full_access_is_refused_without_allow_bypass() -> None:
    agent = CodexAgent(Settings.from_env({}))
    with pytest.raises(ModeNotAllowed):
        check_options(agent, None, "full-access", allow_bypass=False)
    check_options(agent, None, "full-access", allow_bypass=True)
    check_options(agent, "gpt-6.2-sol", "on-request", allow_bypass=False)


@pytest.mark.parametrize(("command", "script"), [
    ("/bin/bash -lc 'touch created.txt && echo touched'", "touch created.txt && echo touched"),
    ("bash -c 'echo \"it'\"'\"'s\"'", "echo \"it's\""),
    ("/usr/bin/zsh -lc ls", "ls"),
    ("/bin/bash -lc 'ls' extra", "/bin/bash -lc 'ls' extra"),  # not the wrapper alone
    ("python3 -c 'print(1)'", "python3 -c 'print(1)'"),  # not a shell
    ("/bin/bash -lc 'unclosed", "/bin/bash -lc 'unclosed"),
    (None, None),
])
def test_a_command_is_shown_without_its_shell_wrapper(command: Any, script: Any) -> None:
    assert shell_script(command) == script


def test_file_changes_become_one_unified_diff_relative_to_the_workspace() -> None:
    changes = [{"path": "/srv/work/hello.txt", "kind": "add", "diff": "hello\nworld\n"},
               {"path": "/srv/work/old.txt", "kind": "delete", "diff": "bye\n"},
               {"path": "/srv/work/src/a.py", "kind": "update",
                "diff": "@@ -1 +1 @@\n-x = 1\n+x = 2\n"},
               {"path": "/etc/hosts", "kind": "update", "diff": "@@ -1 +1 @@\n-a\n+b\n"}]
    assert diff_text(changes, "/srv/work").splitlines() == [
        "--- /dev/null", "+++ hello.txt", "@@ -0,0 +1,2 @@", "+hello", "+world",
        "--- old.txt", "+++ /dev/null", "@@ -1,1 +0,0 @@", "-bye",
        "--- src/a.py", "+++ src/a.py", "@@ -1 +1 @@", "-x = 1", "+x = 2",
        "--- /etc/hosts", "+++ /etc/hosts", "@@ -1 +1 @@", "-a", "+b"]
