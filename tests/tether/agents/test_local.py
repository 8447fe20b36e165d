"""The `local` agent driven as a real subprocess over pipes, as Tether's Claude adapter does."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tether.agents import local

ROOT = Path(__file__).resolve().parents[3]
SESSION_ID = "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
Event = dict[str, Any]


class AgentProcess:
    """The agent over pipes: JSON lines in, parsed events out (with timeouts)."""

    def __init__(self, cwd: Path, *extra: str, session: str = f"--session-id={SESSION_ID}") -> None:
        argv = [sys.executable, "-m", "tether.agents.local", "-p", "--output-format",
                "stream-json", "--input-format", "stream-json", "--verbose",
                "--permission-prompt-tool", "stdio", "--include-partial-messages",
                session, "--word-delay=0", *extra]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(cwd)}
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.events: queue.Queue[Event | None] = queue.Queue()
        self.stderr: list[bytes] = []
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.extend(self.proc.stderr)

    def send(self, message: Event | str) -> None:
        assert self.proc.stdin is not None
        line = message if isinstance(message, str) else json.dumps(message)
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def user(self, text: str) -> None:
        self.send({"type": "user", "message": {"role": "user", "content": text},
                   "parent_tool_use_id": None, "session_id": ""})

    def control(self, subtype: str, request_id: str = "req_1_abcd1234") -> None:
        self.send({"type": "control_request", "request_id": request_id,
                   "request": {"subtype": subtype}})

    def answer(self, request: Event, body: Event) -> None:
        self.send({"type": "control_response", "response": {
            "subtype": "success", "request_id": request["request_id"], "response": body}})

    def allow(self, request: Event, **changes: Any) -> None:
        self.answer(request, {"behavior": "allow",
                              "updatedInput": {**request["request"]["input"], **changes}})

    def deny(self, request: Event, message: str) -> None:
        self.answer(request, {"behavior": "deny", "message": message})

    def next(self, timeout: float = 10) -> Event:
        event = self.events.get(timeout=timeout)
        assert event is not None, f"stdout closed; stderr: {b''.join(self.stderr)!r}"
        return event

    def until(self, pred: Callable[[Event], bool], timeout: float = 10) -> list[Event]:
        """Events up to and including the first one matching `pred`."""
        deadline, seen = time.monotonic() + timeout, []
        while True:
            seen.append(self.next(max(0.01, deadline - time.monotonic())))
            if pred(seen[-1]):
                return seen

    def permission(self, timeout: float = 10) -> tuple[list[Event], Event]:
        seen = self.until(lambda e: e["type"] in ("control_request", "result"), timeout)
        assert seen[-1]["type"] == "control_request", seen[-1]
        assert seen[-1]["request"]["subtype"] == "can_use_tool"
        return seen, seen[-1]

    def result(self, timeout: float = 10) -> list[Event]:
        return self.until(lambda e: e["type"] == "result", timeout)

    def close(self, timeout: float = 10) -> int:
        """Close stdin, wait for exit (killing on timeout), release every pipe and thread."""
        try:
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            for thread in self._threads:
                thread.join(timeout=5)
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe:
                    pipe.close()
        return code


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    agents: list[AgentProcess] = []

    def make(*extra: str) -> AgentProcess:
        agents.append(AgentProcess(tmp_path, *extra))
        return agents[-1]

    yield make
    for agent in agents:
        if agent.proc.returncode is None:
            try:
                agent.close()
            except subprocess.TimeoutExpired:
                pass


def tool_results(events: list[Event]) -> list[Event]:
    return [block for e in events if e["type"] == "user"
            for block in e["message"]["content"] if block.get("type") == "tool_result"]


def texts(events: list[Event]) -> list[str]:
    return [b["text"] for e in events if e["type"] == "assistant"
            for b in e["message"]["content"] if b["type"] == "text"]


def group_alive(pgid: int) -> bool:
    """True if a process of group `pgid` exists that is not a zombie."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def wait_for_file(path: Path, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


# ---------------------------------------------------------------- protocol basics


@pytest.mark.timeout(30)
def test_initialize_is_answered(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn()
    agent.send({"type": "control_request", "request_id": "req_1_ab12cd34",
                "request": {"subtype": "initialize", "hooks": None}})
    reply = agent.next()
    assert reply["type"] == "control_response"
    response = reply["response"]
    assert response["subtype"] == "success" and response["request_id"] == "req_1_ab12cd34"
    assert response["response"]["models"] == [{"value": "local", "resolvedModel": "local",
                                                "displayName": "Local (no model)"}]
    assert response["response"]["current_permission_mode"] == "default"
    assert response["response"]["pid"] == agent.proc.pid
    assert response["response"]["claude_code_version"] == "tether-local"
    # Its own slash commands, in Claude Code's shape (issue 17, item 6).
    names = [c["name"] for c in response["response"]["commands"]]
    assert names == ["triage", "disk", "memory", "processes", "ask", "help"]
    ask = response["response"]["commands"][4]
    assert ask["argumentHint"] == "<question>? <option> | <option>" and ask["description"]
    assert agent.close() == 0


@pytest.mark.timeout(30)
def test_unknown_control_subtype_is_an_error(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn()
    agent.control("rewind_files", "req_7")
    response = agent.next()["response"]
    assert response["subtype"] == "error" and response["request_id"] == "req_7"
    assert response["error"] == "Unsupported control request subtype: rewind_files"


@pytest.mark.timeout(30)
def test_help_text_streams_word_by_word(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn()
    agent.user("hello there")
    events = agent.result()
    init = events[0]
    assert init["type"] == "system" and init["subtype"] == "init"
    assert init["session_id"] == SESSION_ID and init["model"] == "local"
    assert init["tools"] == ["Bash", "AskUserQuestion", "ExitPlanMode"]
    assert Path(init["cwd"]).is_dir()
    stream = [e["event"] for e in events if e["type"] == "stream_event"]
    kinds = [s["type"] for s in stream]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    deltas = [s["delta"]["text"] for s in stream if s["type"] == "content_block_delta"]
    assert len(deltas) > 10 and all(len(d.split()) == 1 for d in deltas)
    assert {s["index"] for s in stream if "index" in s} == {0}
    (full,) = texts(events)
    assert "".join(deltas) == full
    assert len(full.split()) < 80 and "$ " in full and "triage" in full and "ask " in full
    # the full assistant event comes after the last delta and before content_block_stop
    types = [(e["type"], e.get("event", {}).get("type")) for e in events]
    stop = types.index(("stream_event", "content_block_stop"))
    assert types.index(("assistant", None)) == stop - 1
    result = events[-1]
    assert result["subtype"] == "success" and result["is_error"] is False
    assert result["result"] == full and result["num_turns"] == 1
    assert result["usage"]["output_tokens"] == len(deltas)
    assert result["terminal_reason"] == "completed" and result["permission_denials"] == []


@pytest.mark.timeout(30)
def test_list_content_and_empty_text_get_help(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn()
    agent.send({"type": "user", "message": {"role": "user", "content": [
        {"type": "text", "text": "  "}]}})
    events = agent.result()
    assert "triage" in texts(events)[0] and events[-1]["subtype"] == "success"


# ---------------------------------------------------------------- shell commands


@pytest.mark.timeout(30)
def test_shell_command_asks_then_runs(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn()
    agent.user("$ echo hello")
    before, request = agent.permission()
    (tool_use,) = [b for e in before if e["type"] == "assistant" for b in e["message"]["content"]]
    assert tool_use["type"] == "tool_use" and tool_use["name"] == "Bash"
    assert tool_use["id"].startswith("toolu_") and tool_use["input"]["command"] == "echo hello"
    body = request["request"]
    uuid.UUID(request["request_id"])
    assert body["tool_name"] == "Bash" and body["display_name"] == "Bash"
    assert body["tool_use_id"] == tool_use["id"] and body["input"] == tool_use["input"]
    assert body["permission_suggestions"] == [{
        "type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "echo hello"}],
        "behavior": "allow", "destination": "session"}]
    agent.allow(request)
    events = agent.result()
    (result,) = tool_results(events)
    assert result["tool_use_id"] == tool_use["id"] and result["is_error"] is False
    assert "hello" in result["content"] and result["content"].endswith("[exit code 0]")
    assert "exit code 0" in texts(events)[-1]
    assert events[-1]["subtype"] == "success" and events[-1]["num_turns"] == 2


@pytest.mark.timeout(30)
def test_allow_for_this_session_keeps_the_rule_for_the_agent_session(
        spawn: Callable[..., AgentProcess]) -> None:
    # "Allow for this session" sends the suggestion back as updatedPermissions: the same
    # command then runs without asking again, as Claude Code does; another one still asks.
    agent = spawn()
    agent.user("$ echo again")
    _, request = agent.permission()
    agent.answer(request, {"behavior": "allow", "updatedInput": request["request"]["input"],
                           "updatedPermissions": request["request"]["permission_suggestions"]})
    agent.result()
    agent.user("$ echo again")
    events = agent.result()
    assert not [e for e in events if e["type"] == "control_request"]
    (result,) = tool_results(events)
    assert result["is_error"] is False and result["content"].startswith("again")
    agent.user("$ echo another")
    agent.allow(agent.permission()[1])
    agent.result()


@pytest.mark.parametrize("rule, command, allowed", [
    (("Bash", "npm test"), "npm test", True),
    (("Bash", "npm test"), "npm test --watch", False),
    (("Bash", "npm run:*"), "npm run build", True),
    (("Bash", "npm run:*"), "npm install", False),
    (("Read", "npm test"), "npm test", False),
])
def test_a_session_rule_matches_as_claude_codes_bash_rules(
        rule: tuple[str, str], command: str, allowed: bool) -> None:
    from tether.agents.local import rule_allows

    assert rule_allows(rule, "Bash", {"command": command}) is allowed


@pytest.mark.timeout(30)
def test_failing_command_is_an_error_result(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn()
    agent.user("$ echo oops >&2; exit 3")
    agent.allow(agent.permission()[1])
    events = agent.result()
    (result,) = tool_results(events)
    assert result["is_error"] is True and result["content"] == "oops\n[exit code 3]"
    assert events[-1]["subtype"] == "success"


@pytest.mark.timeout(30)
def test_edited_command_runs_instead(spawn: Callable[..., AgentProcess], tmp_path: Path) -> None:
    agent = spawn()
    agent.user("$ echo original > out.txt")
    agent.allow(agent.permission()[1], command="echo edited > out.txt; echo edited")
    events = agent.result()
    (result,) = tool_results(events)
    assert "edited" in result["content"] and "original" not in result["content"]
    assert (tmp_path / "out.txt").read_text() == "edited\n"


@pytest.mark.timeout(30)
def test_deny_has_no_side_effect(spawn: Callable[..., AgentProcess], tmp_path: Path) -> None:
    agent = spawn()
    agent.user("$ touch made.txt")
    _, request = agent.permission()
    agent.deny(request, "The user denied this from the web UI.")
    events = agent.result()
    (result,) = tool_results(events)
    assert result["is_error"] is True
    assert result["content"] == "The user denied this from the web UI."
    assert not (tmp_path / "made.txt").exists()
    final = events[-1]
    assert final["subtype"] == "success" and final["is_error"] is False
    assert final["permission_denials"] == [{
        "tool_name": "Bash", "tool_use_id": request["request"]["tool_use_id"],
        "tool_input": request["request"]["input"]}]
    assert "denied" in final["result"]


@pytest.mark.timeout(30)
def test_deny_with_interrupt_ends_the_turn(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn()
    agent.user("triage")
    _, request = agent.permission()
    agent.answer(request, {"behavior": "deny", "message": "Stopped by user.", "interrupt": True})
    events = agent.result()
    assert [r["content"] for r in tool_results(events)] == ["Stopped by user."]
    assert not any(e["type"] == "control_request" for e in events)
    assert events[-1]["subtype"] == "error_during_execution"
    assert events[-1]["terminal_reason"] == "aborted_tools"


@pytest.mark.timeout(30)
def test_long_output_is_truncated(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn()
    agent.user("$ head -c 200000 /dev/zero | tr '\\0' a")
    agent.allow(agent.permission()[1])
    (result,) = tool_results(agent.result())
    assert result["content"].count("a") >= 64 * 1024 and len(result["content"]) < 66 * 1024
    assert "truncated" in result["content"] and "200000" in result["content"]


@pytest.mark.timeout(30)
def test_command_timeout_kills_the_command(spawn: Callable[..., AgentProcess],
                                           tmp_path: Path) -> None:
    agent = spawn("--command-timeout=1")
    agent.user("$ echo $$ > pid.txt; sleep 5")
    agent.allow(agent.permission()[1])
    started = time.monotonic()
    events = agent.result()
    assert time.monotonic() - started < 4
    (result,) = tool_results(events)
    assert result["is_error"] is True and "timed out" in result["content"]
    assert events[-1]["subtype"] == "success"
    assert not group_alive(int((tmp_path / "pid.txt").read_text()))


# ---------------------------------------------------------------- ask


@pytest.mark.timeout(30)
def test_ask_round_trip(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn()
    agent.user("ask Which db? pg | sqlite")
    before, request = agent.permission()
    body = request["request"]
    assert body["tool_name"] == "AskUserQuestion" and body["requires_user_interaction"] is True
    assert body["input"] == {"questions": [{
        "question": "Which db?", "header": "Which db?", "multiSelect": False,
        "options": [{"label": "pg", "description": ""}, {"label": "sqlite", "description": ""}]}]}
    (tool_use,) = [b for e in before if e["type"] == "assistant" for b in e["message"]["content"]]
    assert tool_use["name"] == "AskUserQuestion" and tool_use["input"] == body["input"]
    assert body["tool_use_id"] == tool_use["id"]
    agent.allow(request, answers={"Which db?": "sqlite"})
    events = agent.result()
    (result,) = tool_results(events)
    assert result["is_error"] is False
    assert result["content"].startswith('User has answered your questions: "Which db?"="sqlite"')
    assert texts(events)[-1] == "You answered: sqlite"
    assert events[-1]["result"] == "You answered: sqlite"


@pytest.mark.timeout(30)
def test_ask_dismissed(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn()
    agent.user("ASK Deploy now?  yes|no ")
    _, request = agent.permission()
    assert request["request"]["input"]["questions"][0]["question"] == "Deploy now?"
    agent.deny(request, "Dismissed.")
    events = agent.result()
    (result,) = tool_results(events)
    assert result["is_error"] is True and result["content"] == "Dismissed."
    assert "dismissed" in texts(events)[-1]


@pytest.mark.timeout(30)
def test_ask_with_one_option_explains_the_syntax(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn()
    agent.user("ask Which db? pg")
    events = agent.result()
    assert not any(e["type"] == "control_request" for e in events)
    assert "ask <question>?" in texts(events)[0]


# ---------------------------------------------------------------- presets


@pytest.mark.timeout(60)
@pytest.mark.parametrize("preset", ["triage", "disk", "Memory", "PROCESSES", "/disk"])
def test_preset_asks_each_command(spawn: Callable[..., AgentProcess], preset: str) -> None:
    agent = spawn()
    agent.user(preset)
    commands = []
    while True:
        seen = agent.until(lambda e: e["type"] in ("control_request", "result"))
        if seen[-1]["type"] == "result":
            break
        commands.append(seen[-1]["request"]["input"]["command"])
        agent.allow(seen[-1])
    assert [s.command for s in local.PRESETS[preset.lower().lstrip("/")]] == commands
    assert len(commands) >= 2
    summary = seen[-1]
    assert summary["subtype"] == "success" and summary["num_turns"] == len(commands) + 1
    assert f"ran {len(commands)} of {len(commands)}" in summary["result"]
    assert all(f"`{c}`" in summary["result"] for c in commands)


@pytest.mark.timeout(60)
def test_preset_summary_names_denied_commands(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn()
    agent.user("memory")
    _, first = agent.permission()
    agent.deny(first, "no")
    _, second = agent.permission()
    agent.allow(second)
    events = agent.result()
    summary = events[-1]["result"]
    assert "ran 1 of 2" in summary and "Denied: `free -m`." in summary
    assert len(events[-1]["permission_denials"]) == 1


def test_figure_parsers() -> None:
    df = ("Filesystem Size Used Avail Use% Mounted on\n/dev/vda 252G 24G 79G 23% /\n"
          "tmpfs 12G 11G 1G 91% /mnt/my disk\n")
    assert local._fullest_filesystem(df) == "fullest filesystem /mnt/my disk at 91%"
    assert local._load_average(" 11:20 up 19 min, 0 user, load average: 0.17, 0.15, 0.07") == (
        "load average 0.17, 0.15, 0.07")
    free = "      total used free\nMem:  24105  700  23221\nSwap: 0 0 0\n"
    assert local._memory_used(free) == "memory used 700 of 24105 MiB"
    meminfo = "MemTotal:  2097152 kB\nMemFree: 1 kB\nMemAvailable:  1048576 kB\n"
    assert local._memory_available(meminfo) == "1024 of 2048 MiB available"
    ps = ("USER PID %CPU %MEM VSZ RSS TTY STAT START TIME COMMAND\n"
          "root 1 58.4 0.8 5709 2203 ? Sl 11:20 0:00 /usr/bin/python -m x\n")
    assert local._top_process(2, "CPU")(ps) == "top CPU python (pid 1) at 58.4%"
    assert local._workspace_size("12K\t.\n") == "workspace size 12K"
    for parse in (local._fullest_filesystem, local._load_average, local._memory_used,
                  local._memory_available, local._top_process(3, "memory"),
                  local._workspace_size):
        assert parse("") is None
        assert parse("bash: line 1: nope: command not found\n") is None


# ---------------------------------------------------------------- interrupts and lifetime


@pytest.mark.timeout(30)
def test_interrupt_pending_permission(spawn: Callable[..., AgentProcess],
                                      tmp_path: Path) -> None:
    agent = spawn()
    agent.user("$ touch made.txt")
    _, request = agent.permission()
    agent.control("interrupt", "req_2_00000000")
    reply = agent.next()
    assert reply == {"type": "control_response", "response": {
        "subtype": "success", "request_id": "req_2_00000000", "response": {"still_queued": []}}}
    assert agent.next() == {"type": "control_cancel_request", "request_id": request["request_id"]}
    events = agent.result()
    (result,) = tool_results(events)
    assert result["is_error"] is True and result["tool_use_id"] == request["request"]["tool_use_id"]
    assert result["content"] == "[Request interrupted by user for tool use]"
    final = events[-1]
    assert final["subtype"] == "error_during_execution" and final["is_error"] is True
    assert final["terminal_reason"] == "aborted_tools"
    agent.allow(request)  # a late answer to the withdrawn request is ignored
    assert not (tmp_path / "made.txt").exists()
    agent.user("help")
    events = agent.result()
    assert events[0]["subtype"] == "init" and events[-1]["subtype"] == "success"
    assert agent.close() == 0


@pytest.mark.timeout(30)
def test_interrupt_running_command(spawn: Callable[..., AgentProcess], tmp_path: Path) -> None:
    agent = spawn()
    agent.user("$ echo $$ > pid.txt; sleep 30")
    agent.allow(agent.permission()[1])
    pgid = int(wait_for_file(tmp_path / "pid.txt"))
    started = time.monotonic()
    agent.control("interrupt")
    events = agent.result(timeout=5)
    assert time.monotonic() - started < 3
    assert events[0]["type"] == "control_response"
    (result,) = tool_results(events)
    assert result["content"] == "[Request interrupted by user for tool use]"
    assert events[-1]["terminal_reason"] == "aborted_tools"
    assert not group_alive(pgid)
    agent.user("$ echo again")
    agent.allow(agent.permission()[1])
    assert "again" in tool_results(agent.result())[0]["content"]


@pytest.mark.timeout(30)
def test_interrupt_while_idle_is_just_answered(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn("--word-delay=0")
    agent.control("interrupt", "req_9")
    assert agent.next()["response"]["response"] == {"still_queued": []}
    agent.user("hi")
    assert agent.result()[-1]["subtype"] == "success"


@pytest.mark.timeout(30)
def test_interrupt_while_streaming_text(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn("--word-delay=0.2")
    agent.user("help")
    agent.until(lambda e: e.get("event", {}).get("type") == "content_block_delta")
    agent.control("interrupt")
    events = agent.result(timeout=5)
    deltas = [e["event"]["delta"]["text"] for e in events
              if e.get("event", {}).get("type") == "content_block_delta"]
    assert texts(events)[0].endswith("".join(deltas))
    assert events[-1]["subtype"] == "error_during_execution"


@pytest.mark.timeout(30)
def test_bad_lines_are_skipped(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn()
    agent.send("this is not json")
    agent.send({"type": "mystery"})
    agent.send("[1, 2]")
    agent.send({"type": "control_request", "request_id": "r", "request": "initialize"})
    agent.send({"type": "control_response", "response": "nonsense"})
    agent.send({"type": "user", "message": "not an object"})
    assert agent.result()[-1]["subtype"] == "success"  # content-less user message: help
    agent.control("initialize")
    assert agent.next()["response"]["subtype"] == "success"
    agent.user("hi")
    assert agent.result()[-1]["subtype"] == "success"
    assert agent.close() == 0
    assert b"not JSON" in b"".join(agent.stderr)


@pytest.mark.timeout(30)
def test_stdin_eof_exits_zero(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn()
    assert agent.close(timeout=5) == 0


@pytest.mark.timeout(30)
def test_stdin_eof_aborts_a_pending_permission(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn()
    agent.user("$ echo hi")
    agent.permission()
    assert agent.close(timeout=5) == 0
    rest = []
    while (event := agent.events.get(timeout=5)) is not None:
        rest.append(event)
    assert rest[-1]["type"] == "result" and rest[-1]["subtype"] == "error_during_execution"


@pytest.mark.timeout(30)
def test_two_turns_in_one_process(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn()
    agent.user("hello")
    agent.user("ask Which db? pg | sqlite")
    first = agent.result()
    second, request = agent.permission()
    agent.allow(request, answers={"Which db?": "pg"})
    second += agent.result()
    for events in (first, second):
        assert events[0]["type"] == "system" and events[0]["subtype"] == "init"
        assert [e["type"] for e in events].count("result") == 1
        assert events[-1]["session_id"] == SESSION_ID
    assert second[-1]["result"] == "You answered: pg"
    assert agent.close() == 0


@pytest.mark.timeout(30)
def test_resume_keeps_the_session_id(tmp_path: Path) -> None:
    sid = str(uuid.uuid4())
    agent = AgentProcess(tmp_path, session=f"--resume={sid}")
    try:
        agent.user("hi")
        events = agent.result()
        assert {e["session_id"] for e in events if "session_id" in e} == {sid}
    finally:
        agent.close()


@pytest.mark.timeout(30)
def test_sigterm_exits_promptly_and_kills_the_command(spawn: Callable[..., AgentProcess],
                                                      tmp_path: Path) -> None:
    agent = spawn()
    agent.user("$ echo $$ > pid.txt; sleep 30")
    agent.allow(agent.permission()[1])
    pgid = int(wait_for_file(tmp_path / "pid.txt"))
    started = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=5) != 0
    assert time.monotonic() - started < 3
    deadline = time.monotonic() + 3
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group_alive(pgid)
    agent.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("state", ["idle", "pending"])
def test_sigterm_exits_promptly(spawn: Callable[..., AgentProcess], state: str) -> None:
    agent = spawn()
    if state == "pending":
        agent.user("$ echo hi")
        agent.permission()
    else:
        agent.control("initialize")
        agent.next()
    started = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=5) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 2
    agent.close()


# ---------------------------------------------------------------- bench (bench/fanout.py)


def bench_deltas(events: list[Event]) -> list[str]:
    return [e["event"]["delta"]["text"] for e in events
            if e.get("event", {}).get("type") == "content_block_delta"]


@pytest.mark.timeout(30)
def test_bench_burst_streams_stamped_deltas(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn()
    before = time.time()
    agent.user("bench 50 200 0")
    events = agent.result()
    after = time.time()
    deltas = bench_deltas(events)
    assert len(deltas) == 50 and {len(d) for d in deltas} == {200}
    heads = [d.split(" ", 2) for d in deltas]
    assert [int(h[0]) for h in heads] == list(range(50))
    stamps = [float(h[1]) for h in heads]
    assert before <= stamps[0] and stamps == sorted(stamps) and stamps[-1] <= after
    assert all(set(h[2]) <= {"x"} for h in heads)
    # the full message is a summary, not 10 kB of concatenated deltas
    assert texts(events) == ["bench: sent 50 of 50 text deltas of 200 characters."]
    assert events[-1]["subtype"] == "success" and events[-1]["usage"]["output_tokens"] == 50


@pytest.mark.timeout(30)
def test_bench_paced_keeps_its_schedule(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn()
    agent.user("bench 5 64 20")
    stamps = [float(d.split()[1]) for d in bench_deltas(agent.result())]
    # 20 per second on a fixed schedule: the 5th delta goes out no sooner than 0.2 s in
    assert len(stamps) == 5 and stamps[-1] - stamps[0] >= 0.19


@pytest.mark.timeout(30)
@pytest.mark.parametrize("spec", ["bench", "bench 5", "bench 5 10 0", "bench 0 100 0",
                                  "bench 5 100 -1", "bench five 100 0", "bench 5 100 0 9"])
def test_bench_bad_arguments_get_usage(spawn: Callable[..., AgentProcess], spec: str) -> None:
    agent = spawn()
    agent.user(spec)
    events = agent.result()
    assert texts(events) == [local.BENCH_USAGE] and events[-1]["subtype"] == "success"


@pytest.mark.timeout(30)
def test_bench_interrupt_stops_the_deltas(spawn: Callable[..., AgentProcess]) -> None:
    agent = spawn()
    agent.user("bench 1000 64 10")
    events = agent.until(lambda e: e.get("event", {}).get("type") == "content_block_delta")
    agent.control("interrupt")
    events += agent.result(timeout=5)
    assert 1 <= len(bench_deltas(events)) < 1000
    assert events[-1]["subtype"] == "error_during_execution"
    assert events[-1]["terminal_reason"] == "aborted_streaming"


def test_module_imports_no_web_stack() -> None:
    code = ("import sys, tether.agents.local; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('flask', 'gevent', 'werkzeug')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=30, check=True)
    assert out.stdout.strip() == "[]"
