"""Record the real Claude Code CLI talking stream-json against FakeAnthropic.

Run from the repository root::

    python -m tests.fakes.record_claude --claude /tmp/cc/node_modules/.bin/claude all
    python -m tests.fakes.record_claude tool_allow interrupt --out /tmp/fixtures

Each scenario writes ``<out>/<scenario>.jsonl``: one ``{"dir": "out"|"in", "msg": {...}}`` per
line, in the order the host saw or sent it (``resume.jsonl`` adds ``"proc": 1|2``; a stdout line
that is not JSON is kept as ``{"dir": "out", "raw": "..."}``). ``<out>/meta.json`` gets, per
scenario, the exit code, stderr, timings and the checks the scenario made. Every wait is bounded
and every process is killed on the way out. The fake model is scripted by a tag in the newest
user text: ``[bash]`` asks for Bash ``touch created.txt && echo touched``, ``[ask]`` asks an
AskUserQuestion, ``[slow]`` holds the stream open 5 s after ``message_start``, ``[error]``
answers HTTP 400; anything else gets a plain text reply.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import typing as t
import uuid
from pathlib import Path

from .anthropic_api import (
    Body,
    FakeAnthropic,
    Reply,
    all_user_texts,
    ask_reply,
    error_reply,
    last_tool_result,
    text_reply,
    tool_reply,
    tool_result_text,
)
from .recording import RecordedProcess, record_main

CLAUDE = "/tmp/cc/node_modules/.bin/claude"
BASH_INPUT = {"command": "touch created.txt && echo touched", "description": "Create created.txt"}
QUESTION = {"question": "Which database should we use?", "header": "Database", "multiSelect": False,
            "options": [{"label": "PostgreSQL", "description": "Relational"},
                        {"label": "SQLite", "description": "Embedded"}]}
INITIALIZE = {"type": "control_request", "request_id": "req_1_0001",
              "request": {"subtype": "initialize", "hooks": None}}
INTERRUPT = {"type": "control_request", "request_id": "req_2_0002",
             "request": {"subtype": "interrupt"}}


def script(body: Body) -> Reply:
    texts = all_user_texts(body)
    latest = texts[-1] if texts else ""
    result = last_tool_result(body)
    if result is not None and latest not in _last_message_texts(body):
        return text_reply(f"Tool said: {tool_result_text(result)}")
    if "[error]" in latest:
        return error_reply(400, "fake: this request is invalid")
    if "[slow]" in latest:
        return text_reply("Slow reply.", delay_seconds=5)
    if "[bash]" in latest:
        return tool_reply("I'll create the file.", "Bash", BASH_INPUT)
    if "[ask]" in latest:
        return ask_reply([QUESTION], "Let me ask first.")
    return text_reply(f"Hello from the fake API. You said: {latest}")


def _last_message_texts(body: Body) -> list[str]:
    """User texts next to the last tool result: after an interrupt the next prompt lands there."""
    user_msgs = [m for m in body["messages"] if m.get("role") == "user"]
    return all_user_texts({"messages": user_msgs[-1:]})


def user(text: str) -> Body:
    return {"type": "user", "message": {"role": "user", "content": text},
            "parent_tool_use_id": None, "session_id": ""}


def reply(request: Body, response: Body) -> Body:
    return {"type": "control_response", "response": {
        "subtype": "success", "request_id": request["request_id"], "response": response}}


def is_type(kind: str, subtype: str | None = None) -> t.Callable[[Body], bool]:
    def match(m: Body) -> bool:
        inner = m.get("request") or {}
        return m.get("type") == kind and subtype in (None, m.get("subtype"), inner.get("subtype"))
    return match


class Claude(RecordedProcess):
    """One ``claude -p`` stream-json process (tests/fakes/recording.py)."""

    finish_seconds = 15.0

    def __init__(self, claude: str, api: FakeAnthropic, home: str, cwd: str, args: list[str],
                 records: list[Body], proc: int | None = None) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home,
               "ANTHROPIC_BASE_URL": api.base_url, "ANTHROPIC_API_KEY": "sk-ant-fake",
               "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
        argv = [claude, "-p", "--output-format", "stream-json", "--input-format", "stream-json",
                "--verbose", "--permission-prompt-tool", "stdio", "--include-partial-messages",
                *args]
        super().__init__(argv, env, cwd, records, proc)

    def first_seen_key(self, msg: Body) -> str:
        return "/".join(str(msg.get(k)) for k in ("type", "subtype") if msg.get(k))


def turn(c: Claude, text: str, *, initialize: bool = False) -> Body:
    if initialize:
        c.send(INITIALIZE)
    c.send(user(text))
    return c.wait_for(is_type("result"))


def permission_flow(c: Claude, decide: t.Callable[[Body], Body]) -> Body:
    c.send(INITIALIZE)
    c.send(user("[bash] please create the file"))
    req = c.wait_for(is_type("control_request", "can_use_tool"))
    c.send(reply(req, decide(req["request"])))
    return c.wait_for(is_type("result"))


def sc_text(c: Claude, ws: Path) -> Body:
    return {"result": turn(c, "Say hello", initialize=True)["result"]}


def sc_tool_allow(c: Claude, ws: Path) -> Body:
    res = permission_flow(c, lambda r: {"behavior": "allow", "updatedInput": r["input"]})
    return {"result": res["result"], "file_created": (ws / "created.txt").exists()}


def sc_tool_deny(c: Claude, ws: Path) -> Body:
    res = permission_flow(c, lambda r: {"behavior": "deny", "message": "denied from the web UI"})
    return {"result": res["result"], "file_created": (ws / "created.txt").exists(),
            "permission_denials": res.get("permission_denials")}


def sc_ask(c: Claude, ws: Path) -> Body:
    c.send(INITIALIZE)
    c.send(user("[ask] pick a database"))
    req = c.wait_for(is_type("control_request", "can_use_tool"))
    inp = req["request"]["input"]
    answers = {q["question"]: q["options"][1]["label"] for q in inp["questions"]}
    c.send(reply(req, {"behavior": "allow", "updatedInput": {**inp, "answers": answers}}))
    return {"result": c.wait_for(is_type("result"))["result"]}


def _interrupt(c: Claude, ws: Path, prompt: str, when: t.Callable[[Body], bool]) -> Body:
    c.send(INITIALIZE)
    c.send(user(prompt))
    c.wait_for(when)
    t0 = time.monotonic()
    c.send(INTERRUPT)
    res = c.wait_for(is_type("result"))
    took = round(time.monotonic() - t0, 3)
    time.sleep(1.0)
    alive = c.p.poll() is None
    after = turn(c, "Say hello after the interrupt") if alive else None
    return {"result_subtype": res["subtype"], "terminal_reason": res.get("terminal_reason"),
            "seconds_interrupt_to_result": took, "alive_1s_after_result": alive,
            "next_turn_result": after and after["result"],
            "file_created": (ws / "created.txt").exists()}


def sc_interrupt(c: Claude, ws: Path) -> Body:
    pending = is_type("control_request", "can_use_tool")
    return _interrupt(c, ws, "[bash] please create the file", pending)


def sc_interrupt_streaming(c: Claude, ws: Path) -> Body:
    def started(m: Body) -> bool:
        return m.get("type") == "stream_event" and m["event"]["type"] == "message_start"
    return _interrupt(c, ws, "[slow] take your time", started)


def sc_two_turns(c: Claude, ws: Path) -> Body:
    first = turn(c, "First turn", initialize=True)
    second = turn(c, "Second turn")
    inits = [r for r in c.records if r.get("msg", {}).get("subtype") == "init"]
    return {"results": [first["result"], second["result"]], "system_init_count": len(inits)}


def sc_api_error(c: Claude, ws: Path) -> Body:
    res = turn(c, "[error] fail please", initialize=True)
    keys = ("subtype", "is_error", "result", "api_error_status", "terminal_reason")
    return {k: res.get(k) for k in keys}


def sc_no_initialize(c: Claude, ws: Path) -> Body:
    c.send(user("[bash] please create the file"))
    req = c.wait_for(is_type("control_request", "can_use_tool"))
    c.send(reply(req, {"behavior": "allow", "updatedInput": req["request"]["input"]}))
    return {"result": c.wait_for(is_type("result"))["result"],
            "file_created": (ws / "created.txt").exists()}


def sc_stdin_eof_pending(c: Claude, ws: Path) -> Body:
    c.send(INITIALIZE)
    c.send(user("[bash] please create the file"))
    c.wait_for(is_type("control_request", "can_use_tool"))
    return {"file_created": (ws / "created.txt").exists()}  # finish() closes stdin mid-turn


def sc_stdin_eof_streaming(c: Claude, ws: Path) -> Body:
    c.send(INITIALIZE)
    c.send(user("[slow] take your time"))
    c.wait_for(lambda m: m.get("type") == "stream_event" and m["event"]["type"] == "message_start")
    return {}


def sc_mid_turn_message(c: Claude, ws: Path) -> Body:
    c.send(INITIALIZE)
    c.send(user("[bash] please create the file"))
    req = c.wait_for(is_type("control_request", "can_use_tool"))
    c.send(user("A second message sent mid-turn"))
    time.sleep(1.0)
    c.send(reply(req, {"behavior": "allow", "updatedInput": req["request"]["input"]}))
    res = c.wait_for(is_type("result"))
    try:
        extra = c.wait_for(is_type("result"), timeout=3)["result"]
    except TimeoutError:
        extra = None
    return {"result": res["result"], "num_turns": res.get("num_turns"), "second_result": extra}


#: Slash commands sent one per turn (``slash.jsonl``): refused headless, local output in
#: columns, the model switch, and ``/clear`` between two prompts.
SLASH_PROMPTS = ("/help", "/plan", "/login", "/cost", "/model sonnet", "Remember banana", "/clear",
                 "Say hello again")


def sc_slash(c: Claude, ws: Path) -> Body:
    c.send(INITIALIZE)
    answers = {}
    for text in SLASH_PROMPTS:
        c.send(user(text))
        res = c.wait_for(is_type("result"))
        answers[text] = {k: res.get(k) for k in ("result", "local_command", "session_id")}
    return {"answers": answers}


SCENARIOS: dict[str, t.Callable[[Claude, Path], Body]] = {
    "slash": sc_slash,
    "text": sc_text, "tool_allow": sc_tool_allow, "tool_deny": sc_tool_deny, "ask": sc_ask,
    "interrupt": sc_interrupt, "interrupt_streaming": sc_interrupt_streaming,
    "two_turns": sc_two_turns, "api_error": sc_api_error, "no_initialize": sc_no_initialize,
    "mid_turn_message": sc_mid_turn_message, "stdin_eof_pending": sc_stdin_eof_pending,
    "stdin_eof_streaming": sc_stdin_eof_streaming,
}


def run(name: str, claude: str, records: list[Body]) -> Body:
    with FakeAnthropic(script) as api, tempfile.TemporaryDirectory() as home, \
            tempfile.TemporaryDirectory() as ws:
        sid = str(uuid.uuid4())
        if name == "resume":
            return run_resume(claude, api, home, ws, sid, records)
        c = Claude(claude, api, home, ws, [f"--session-id={sid}"], records)
        try:
            meta = SCENARIOS[name](c, Path(ws))
        finally:
            meta_exit = c.finish()
        return {**meta, **meta_exit, "api_paths": api.paths}


def run_resume(claude: str, api: FakeAnthropic, home: str, ws: str, sid: str,
               records: list[Body]) -> Body:
    first = Claude(claude, api, home, ws, [f"--session-id={sid}"], records, proc=1)
    try:
        turn(first, "Remember the word banana", initialize=True)
    finally:
        exit1 = first.finish()
    second = Claude(claude, api, home, ws, [f"--resume={sid}"], records, proc=2)
    try:
        res = turn(second, "What was the word?", initialize=True)
    finally:
        exit2 = second.finish()
    turn2 = api.requests[-1]
    return {"proc1": exit1, "proc2": exit2, "result": res["result"],
            "turn2_user_texts": all_user_texts(turn2),
            "turn2_roles": [m["role"] for m in turn2["messages"]],
            "turn2_contains_turn1": "Remember the word banana" in all_user_texts(turn2),
            "same_session_id": res["session_id"] == sid}


def main(argv: list[str] | None = None) -> int:
    return record_main(argv, doc=__doc__, names=[*SCENARIOS, "resume"], run=run, cli="claude",
                       default_bin=CLAUDE, out="tests/fixtures/claude")


if __name__ == "__main__":
    sys.exit(main())
