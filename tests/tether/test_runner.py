"""Turns end to end on plain threads: the local agent and scripted misbehaving agents."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tether.agents.base import AgentCatalog
from tether.agents.catalog import LocalAgent
from tether.config import Settings
from tether.sessions import Session, SessionRegistry


class ScriptAgent:
    """An agent whose program is a Python snippet (for faults)."""

    description = "test"

    def __init__(self, name: str, code: str) -> None:
        self.name = name
        self.code = code
        self.calls: list[list[str]] = []

    def unavailable(self) -> str | None:
        return None

    def argv(self, agent_session_id: str, resume: bool) -> list[str]:
        argv = [sys.executable, "-c", self.code, f"--resume={agent_session_id}" if resume
                else f"--session-id={agent_session_id}"]
        self.calls.append(argv)
        return argv

    def env(self) -> dict[str, str]:
        return dict(os.environ)


def make_core(tmp_path: Path, *extra: Any, **settings: Any) -> SessionRegistry:
    base = {"data_dir": tmp_path, "local_word_delay_seconds": 0, "cancel_grace_seconds": 1,
            **settings}
    config = Settings.from_env(base)
    return SessionRegistry(config, agents=AgentCatalog([LocalAgent(config), *extra]))


def kinds(session: Session) -> list[str]:
    return [e.kind for e in session.log.read_after(0)]


def last(session: Session, kind: str) -> dict[str, Any]:
    return next(dict(e.payload) for e in reversed(session.log.read_after(0)) if e.kind == kind)


def wait_pending(session: Session) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pending = session.prompts.pending()
        if pending:
            return pending[0]
        time.sleep(0.02)
    raise AssertionError("nothing pending")


def pids_of_group(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except ProcessLookupError:
                pass
    return pids


@pytest.fixture
def core(tmp_path: Path):
    core = make_core(tmp_path)
    yield core
    core.shutdown()


def test_help_turn_streams_and_ends_once(core: SessionRegistry) -> None:
    session = core.create()
    assert session.submit("hello") == 1
    assert session.wait_idle(10)
    seen = kinds(session)
    assert seen[0] == "user" and seen[1] == "agent_session"
    assert "text_delta" in seen and "text" in seen and "result" in seen
    assert seen.count("turn_end") == 1 and seen[-1] == "turn_end"
    assert last(session, "turn_end") == {"turn": 1, "reason": "completed"}
    assert session.state == "idle"


def test_second_turn_reuses_the_agent_and_continues(core: SessionRegistry) -> None:
    session = core.create()
    session.submit("hello")
    session.wait_idle(10)
    first = last(session, "agent_session")["agent_session_id"]
    session.submit("again")
    session.wait_idle(10)
    assert kinds(session).count("turn_end") == 2
    assert last(session, "agent_session")["agent_session_id"] == first == session.agent_session_id


def test_new_process_resumes_the_agent_session(tmp_path: Path) -> None:
    agent = ScriptAgent("echoer", ECHO_AGENT)
    core = make_core(tmp_path, agent, agent_idle_seconds=0)
    try:
        session = core.create(agent="echoer")
        for text in ("one", "two"):
            session.submit(text)
            assert session.wait_idle(10)
        assert agent.calls[0][-1] == f"--session-id={session.agent_session_id}"
        assert agent.calls[1][-1] == f"--resume={session.agent_session_id}"
        assert [e.payload["reason"] for e in session.log.read_after(0)
                if e.kind == "turn_end"] == ["completed", "completed"]
    finally:
        core.shutdown()


def test_prompt_timeout_denies_and_the_turn_goes_on(tmp_path: Path) -> None:
    core = make_core(tmp_path, prompt_timeout_seconds=0.3)
    try:
        session = core.create()
        session.submit("$ touch never.txt")
        assert session.wait_idle(10)
        resolved = last(session, "approval_resolved")
        assert resolved["reason"] == "timeout" and resolved["decision"] == "deny"
        assert last(session, "tool_result")["is_error"] is True
        assert last(session, "turn_end")["reason"] == "completed"
        assert not (session.workspace / "never.txt").exists()
    finally:
        core.shutdown()


def test_turn_timeout_cancels_with_reason_timeout(tmp_path: Path) -> None:
    core = make_core(tmp_path, turn_timeout_seconds=0.5)
    try:
        session = core.create()
        session.submit("$ sleep 30")
        request = wait_pending(session)
        resolution = session.prompts.wait(request)
        assert resolution.reason == "cancelled"
        assert session.wait_idle(10)
        assert last(session, "turn_end")["reason"] == "timeout"
        assert kinds(session).count("turn_end") == 1
    finally:
        core.shutdown()


def test_cancel_during_a_running_command_leaves_no_process(core: SessionRegistry) -> None:
    session = core.create()
    session.submit("$ sleep 30")
    request = wait_pending(session)
    session.prompts.answer_approval(request.request_id, "allow")
    time.sleep(0.3)
    process = session._host._process
    assert process is not None
    pgid = process.pid
    assert session.cancel() is True
    assert session.cancel() is False
    assert session.wait_idle(10)
    assert last(session, "turn_end")["reason"] == "cancelled"
    assert pids_of_group(pgid) == []
    session.submit("hello")
    assert session.wait_idle(10)
    assert last(session, "turn_end")["reason"] == "completed"


def test_missing_executable_is_an_error_turn(tmp_path: Path) -> None:
    agent = ScriptAgent("ghost", "")
    agent.argv = lambda *_, **__: ["/nonexistent/agent-cli"]  # type: ignore[method-assign]
    core = make_core(tmp_path, agent)
    try:
        session = core.create(agent="ghost")
        session.submit("hi")
        assert session.wait_idle(10)
        assert "could not start" in last(session, "error")["message"]
        assert last(session, "turn_end")["reason"] == "error"
        session.submit("again")  # the session stays usable
        assert session.wait_idle(10)
        assert kinds(session).count("turn_end") == 2
    finally:
        core.shutdown()


@pytest.mark.parametrize("code, needle", [
    ("import sys; sys.stderr.write('boom: no key'); sys.exit(3)", "boom: no key"),
    ("print('not json'); print('{\"half\": '); import sys; sys.exit(1)", "code 1"),
    ("import sys; sys.stdin.readline(); print('[1, 2]'); sys.exit(0)", "code 0"),
])
def test_agent_that_dies_early_ends_the_turn_with_an_error(tmp_path: Path, code: str,
                                                           needle: str) -> None:
    core = make_core(tmp_path, ScriptAgent("bad", code))
    try:
        session = core.create(agent="bad")
        session.submit("hi")
        assert session.wait_idle(10)
        assert needle in last(session, "error")["message"]
        assert last(session, "turn_end")["reason"] == "error"
        assert kinds(session).count("turn_end") == 1
    finally:
        core.shutdown()


def test_the_stderr_tail_in_the_error_has_no_terminal_colours(tmp_path: Path) -> None:
    """codex 0.171.0 colours its log lines even into a pipe: the ``error`` event quotes the
    text, not the escape sequences (which a browser shows as ``[2m`` litter)."""
    code = ("import sys; sys.stderr.write('\\x1b[2m2026-12-07T19:45:00Z\\x1b[0m "
            "\\x1b[31mERROR\\x1b[0m codex: boom\\r\\n'); sys.exit(3)")
    core = make_core(tmp_path, ScriptAgent("colour", code))
    try:
        session = core.create(agent="colour")
        session.submit("hi")
        assert session.wait_idle(10)
        message = last(session, "error")["message"]
        assert message.endswith("(code 3) before the turn ended: 2026-12-07T19:45:00Z ERROR "
                                "codex: boom")
        assert "\x1b" not in message and "\r" not in message
    finally:
        core.shutdown()


def test_agent_that_ignores_sigterm_is_killed_on_cancel(tmp_path: Path) -> None:
    code = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "sys.stdin.readline(); time.sleep(60)")
    core = make_core(tmp_path, ScriptAgent("stubborn", code), cancel_grace_seconds=0.3)
    try:
        session = core.create(agent="stubborn")
        session.submit("hi")
        time.sleep(0.5)
        pgid = session._host._process.pid  # type: ignore[union-attr]
        session.cancel()
        assert session.wait_idle(10)
        assert last(session, "turn_end")["reason"] == "cancelled"
        assert pids_of_group(pgid) == []
    finally:
        core.shutdown()


def test_delete_during_a_turn_stops_the_agent(core: SessionRegistry) -> None:
    session = core.create()
    session.submit("$ sleep 30")
    wait_pending(session)
    pgid = session._host._process.pid  # type: ignore[union-attr]
    core.delete(session.id)
    assert session.state == "ended" and session.log.closed
    assert pids_of_group(pgid) == []


ECHO_AGENT = r"""
import json, sys
sid = sys.argv[-1].split("=", 1)[1]
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("type") == "control_request":
        print(json.dumps({"type": "control_response", "response": {"subtype": "success",
              "request_id": msg["request_id"], "response": {}}}), flush=True)
    elif msg.get("type") == "user":
        print(json.dumps({"type": "system", "subtype": "init", "session_id": sid,
              "model": "echo", "cwd": "."}), flush=True)
        print(json.dumps({"type": "assistant", "message": {"content": [
              {"type": "text", "text": msg["message"]["content"]}]}}), flush=True)
        print(json.dumps({"type": "result", "subtype": "success", "is_error": False,
              "result": "ok"}), flush=True)
"""


def test_lone_surrogate_in_a_prompt_reaches_the_agent(core: SessionRegistry) -> None:
    session = core.create()
    session.submit("hello \ud800 there")
    assert session.wait_idle(10)
    assert last(session, "turn_end")["reason"] == "completed"


def test_commands_are_appended_once_after_the_agent_session(core: SessionRegistry) -> None:
    """The local agent's commands reach the log as one ``commands`` event, after the first
    turn's ``agent_session``, and not again while they stay the same (issue 17, item 6)."""
    session = core.create()
    for text in ("hello", "/help"):
        session.submit(text)
        assert session.wait_idle(10)
    seen = kinds(session)
    assert seen.count("commands") == 1 and seen.index("commands") == seen.index("agent_session") + 1
    names = [c["name"] for c in last(session, "commands")["commands"]]
    assert names == ["triage", "disk", "memory", "processes", "ask", "help"]
    # `/help` is the local agent's help, like any text it does not know.
    texts = [e.payload["text"] for e in session.log.read_after(0) if e.kind == "text"]
    assert texts[0] == texts[1] and texts[1].startswith("I am Tether's local agent")


CLEARING_AGENT = r"""
import json, sys, uuid
sid = sys.argv[-1].split("=", 1)[1]
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("type") == "control_request":
        print(json.dumps({"type": "control_response", "response": {"subtype": "success",
              "request_id": msg["request_id"], "response": {}}}), flush=True)
    elif msg.get("type") == "user":
        if msg["message"]["content"] == "/clear":  # as Claude Code 2.1.328 answers it
            print(json.dumps({"type": "conversation_reset", "trigger": "clear",
                  "session_id": sid}), flush=True)
            sid = str(uuid.uuid4())
        print(json.dumps({"type": "system", "subtype": "init", "session_id": sid,
              "model": "echo", "cwd": "."}), flush=True)
        print(json.dumps({"type": "result", "subtype": "success", "is_error": False,
              "result": ""}), flush=True)
"""


def test_after_clear_the_next_process_resumes_the_new_conversation(tmp_path: Path) -> None:
    """/clear starts a new agent session: a process started after it resumes that one, not
    the cleared conversation (which would come back whole)."""
    agent = ScriptAgent("clearer", CLEARING_AGENT)
    core = make_core(tmp_path, agent, agent_idle_seconds=0)
    try:
        session = core.create(agent="clearer")
        first = session.agent_session_id
        for text in ("one", "/clear", "two"):
            session.submit(text)
            assert session.wait_idle(10)
        cleared = [e.payload for e in session.log.read_after(0) if e.kind == "context_cleared"]
        assert cleared == [{"trigger": "clear"}]
        new = last(session, "agent_session")["agent_session_id"]
        assert new != first and session.agent_session_id == new
        assert [call[-1] for call in agent.calls] == [
            f"--session-id={first}", f"--resume={first}", f"--resume={new}"]
    finally:
        core.shutdown()


FLUSH_SCRIPT = r'''
import json, sys
def out(message):
    print(json.dumps(message), flush=True)
sys.stdin.readline()  # initialize
sys.stdin.readline()  # the user message
out({"type": "system", "subtype": "init", "session_id": "s-1"})
for word in ("one", "two", "three"):
    out({"type": "assistant", "message": {"content": [{"type": "text", "text": word}]}})
out({"type": "control_request", "request_id": "r-1", "request": {
    "subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "ls"},
    "tool_use_id": "t-1"}})
sys.stdin.readline()  # the answer (the request times out: deny)
out({"type": "assistant", "message": {"content": [{"type": "text", "text": "after"}]}})
out({"type": "result", "subtype": "success", "is_error": False, "result": "ok",
     "total_cost_usd": 0})
'''


class RecordingSink:
    """An :class:`EventSink` that queues like the cluster's owner log and records what the
    runner asked of it, in order."""

    def __init__(self, log: Any, ops: list[str]) -> None:
        self._log = log
        self._ops = ops
        self._queued: list[tuple[str, Any]] = []

    def append(self, kind: str, payload: Any) -> None:
        self._ops.append(f"append {kind}")
        self._queued.append((kind, payload))

    def flush(self) -> None:
        self._ops.append("flush")
        for kind, payload in self._queued:
            self._log.append(kind, payload)
        self._queued.clear()


def test_a_queueing_sink_is_flushed_before_a_request_and_before_the_turn_ends(
        tmp_path: Path) -> None:
    from tether.prompts import PromptRegistry
    from tether.runner import AgentHost, Turn
    from tether.stores.memory import MemoryStore

    settings = Settings.from_env({"data_dir": tmp_path, "cancel_grace_seconds": 1,
                                  "prompt_timeout_seconds": 0.2})
    log = MemoryStore().create_log("s")
    ops: list[str] = []

    class Prompts(PromptRegistry):
        def open_approval(self, *args: Any, **kwargs: Any) -> Any:
            ops.append("open approval")
            return super().open_approval(*args, **kwargs)

    ended: list[str] = []

    def finish(turn: Turn, reason: str) -> None:
        ops.append("finish")
        ended.append(reason)

    host = AgentHost(ScriptAgent("script", FLUSH_SCRIPT), tmp_path, settings)  # type: ignore[arg-type]
    turn = Turn(1, "hi", host, RecordingSink(log, ops), Prompts(log, 0.2), settings, finish)
    turn.start()
    assert turn.join(10)
    assert ended == ["completed"]
    # The three texts are in the log before the request that followed them...
    opened = ops.index("open approval")
    assert ops[opened - 1] == "flush" and ops[:opened].count("append text") == 3
    # ...and the text after it before the turn's end.
    assert ops[-2:] == ["flush", "finish"]
    seen = [e.kind for e in log.read_after(0)]
    assert seen.index("approval_request") > max(i for i, k in enumerate(seen[:4]) if k == "text")
    assert seen[-1] == "result" and seen.count("text") == 4
    host.stop()


def test_a_driver_that_fails_to_start_leaves_no_process_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cluster counts agent processes by what ``on_process`` says: a start that fails
    after the process was reported must report its stop too, and the process must go."""
    import tether.runner
    from tether.runner import AgentHost

    class Refusing:
        def start(self, *args: Any) -> list[Any]:
            raise RuntimeError("the driver refused to start")

    monkeypatch.setattr(tether.runner, "make_driver", lambda *args: Refusing())
    settings = Settings.from_env({"data_dir": tmp_path, "cancel_grace_seconds": 1})
    host = AgentHost(ScriptAgent("script", "import time; time.sleep(60)"),  # type: ignore[arg-type]
                     tmp_path, settings)
    told: list[tuple[int, bool]] = []
    host.on_process = lambda pid, started: told.append((pid, started))
    with pytest.raises(RuntimeError, match="refused"):
        host.acquire()
    assert [started for _, started in told] == [True, False]
    assert told[0][0] == told[1][0]
    assert not host.running
    deadline = time.monotonic() + 10
    while pids_of_group(told[0][0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pids_of_group(told[0][0]) == []
    host.stop()


def test_an_agent_that_dies_between_turns_is_told_stopped_once(tmp_path: Path) -> None:
    """A crash while no turn runs is reported by the process's own exit, not at the next
    turn (the cluster's count of agent processes would keep it until then); the host's stop
    afterwards says nothing more."""
    import signal

    from tether.runner import AgentHost

    settings = Settings.from_env({"data_dir": tmp_path, "cancel_grace_seconds": 1})
    host = AgentHost(ScriptAgent("script", "import time; time.sleep(60)"),  # type: ignore[arg-type]
                     tmp_path, settings)
    told: list[tuple[int, bool]] = []
    host.on_process = lambda pid, started: told.append((pid, started))
    process, _ = host.acquire()
    assert told == [(process.pid, True)]
    os.killpg(process.pid, signal.SIGKILL)  # the agent crashes while idle
    deadline = time.monotonic() + 10
    while len(told) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert told == [(process.pid, True), (process.pid, False)]
    host.stop()
    host.stop()
    assert told == [(process.pid, True), (process.pid, False)]
