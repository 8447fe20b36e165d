"""Record the real ``codex app-server`` talking JSON-RPC against FakeOpenAI.

Run from the repository root::

    python -m tests.fakes.record_codex all
    python -m tests.fakes.record_codex approval_accept interrupt --out /tmp/fixtures

Each scenario writes ``<out>/<scenario>.jsonl``: one ``{"dir": "out"|"in", "msg": {...}}`` per
line, in the order the client saw or sent it (``resume.jsonl`` adds ``"proc": 1|2``; a stdout
line that is not JSON is kept as ``{"dir": "out", "raw": "..."}``). ``<out>/meta.json`` gets,
per scenario, the exit code, stderr, timings and the checks the scenario made. Every wait is
bounded and every process is killed on the way out.

Each process gets its own ``HOME`` and ``CODEX_HOME`` (``config.toml`` from
:func:`~tests.fakes.openai_api.codex_config_toml`, PROTOCOLS.md 3.3) and ``HTTPS_PROXY`` at a
closed loopback port, so nothing leaves the machine. The fake model is scripted by a tag in
the newest user text: ``[bash]`` runs ``touch created.txt && echo touched``, ``[twice]`` runs
it twice (after ``acceptForSession``, is the second asked?), ``[ask]`` calls
``request_user_input``, ``[think]`` sends a reasoning item, ``[fail]`` runs ``ls`` on a missing
folder (exit code 2), ``[patch]`` runs an ``apply_patch`` heredoc that adds ``hello.txt`` (a
``fileChange``), ``[error]`` answers HTTP 400; anything else gets a plain text reply.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

from .openai_api import (
    Body,
    FakeOpenAI,
    Reply,
    all_user_texts,
    codex_config_toml,
    command_reply,
    error_reply,
    function_call_item,
    last_function_output,
    message_item,
    reasoning_item,
    text_reply,
)
from .recording import JsonRpcProcess, closed_port, record_main

ROOT = Path(__file__).resolve().parents[2]
CODEX = str(ROOT / ".tools" / "node_modules" / ".bin" / "codex")
BASH = "touch created.txt && echo touched"
PATCH = ("apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: hello.txt\n+hello\n"
         "*** End Patch\nEOF\n")
QUESTION = {"id": "database", "header": "Database", "question": "Which database should we use?",
            "options": [{"label": "PostgreSQL", "description": "Relational"},
                        {"label": "SQLite", "description": "Embedded"}]}


def script(body: Body) -> Reply:
    texts = all_user_texts(body)
    latest = texts[-1] if texts else ""
    output = last_function_output(body)
    calls = [i for i in body.get("input", []) if i.get("type") == "function_call"
             and i.get("id", "").startswith("fc_fake")]
    if output is not None:
        if "[twice]" in latest and len(calls) % 2 == 1:
            return command_reply("Once more.", BASH)
        return text_reply(f"Tool said: {output.strip().splitlines()[-1] if output else ''}")
    if "[error]" in latest:
        return error_reply(400, "fake: this request is invalid")
    if "[bash]" in latest or "[twice]" in latest:
        return command_reply("I'll create the file.", BASH)
    if "[think]" in latest:
        return Reply([reasoning_item("The user wants a greeting."), message_item("Hello.")])
    if "[fail]" in latest:
        return command_reply("Let me look.", "ls /nonexistent-dir")
    if "[ask]" in latest:
        return Reply([function_call_item("request_user_input", {"questions": [QUESTION]})])
    if "[patch]" in latest:
        return command_reply("I'll add hello.txt.", PATCH)
    return text_reply(f"Hello from the fake API. You said: {latest}")


def codex_env(api: FakeOpenAI, home: str) -> dict[str, str]:
    """``HOME``/``CODEX_HOME`` under ``home`` (config.toml written), the fake's key, and a
    proxy that refuses every outside connection (PROTOCOLS.md 3.3, 5.2)."""
    codex_home = Path(home) / ".codex"
    codex_home.mkdir(exist_ok=True)
    (codex_home / "config.toml").write_text(codex_config_toml(api.base_url))
    proxy = f"http://127.0.0.1:{closed_port()}"
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home,
            "CODEX_HOME": str(codex_home), "FAKE_OPENAI_KEY": "sk-fake",
            "HTTPS_PROXY": proxy, "https_proxy": proxy}


class Codex(JsonRpcProcess):
    """One ``codex app-server`` process (tests/fakes/recording.py); ``request`` numbers client
    requests 1, 2, …"""

    def __init__(self, codex: str, env: dict[str, str], cwd: str, records: list[Body],
                 proc: int | None = None) -> None:
        super().__init__([codex, "app-server"], env, cwd, records, proc)

    def first_seen_key(self, msg: Body) -> str:
        return str(msg.get("method") or f"response {msg.get('id')}")


def method(name: str) -> t.Callable[[Body], bool]:
    return lambda m: m.get("method") == name


def is_approval(m: Body) -> bool:
    return "id" in m and str(m.get("method", "")).endswith("/requestApproval")


def handshake(c: Codex, ws: Path, *, resume: str | None = None, approval: str = "untrusted",
              sandbox: str = "workspace-write", experimental: bool = False) -> str:
    """``initialize`` (with ``experimentalApi`` when ``experimental``), ``initialized``, then
    ``thread/start`` (or ``thread/resume``): the thread id."""
    init: Body = {"clientInfo": {"name": "tether", "title": "Tether", "version": "0"}}
    if experimental:
        init["capabilities"] = {"experimentalApi": True}
    c.call("initialize", init)
    c.send({"jsonrpc": "2.0", "method": "initialized"})
    params: Body = {"cwd": str(ws), "approvalPolicy": approval, "sandbox": sandbox}
    if resume:
        res = c.call("thread/resume", {"threadId": resume, **params})
    else:
        res = c.call("thread/start", params)
    return str(res["result"]["thread"]["id"])


def turn(c: Codex, thread: str, text: str,
         on_approval: t.Callable[[Body], Body | None] | None = None) -> Body:
    """``turn/start``, answering each approval with ``on_approval(request)`` (None: leave it
    pending), until ``turn/completed``: its ``turn``, plus the approvals seen."""
    c.request("turn/start", {"threadId": thread, "input": [{"type": "text", "text": text}]})
    asked: list[Body] = []
    while True:
        m = c.wait_for(lambda m: is_approval(m) or m.get("method") == "turn/completed")
        if m.get("method") == "turn/completed":
            return {**m["params"]["turn"], "approvals": asked}
        asked.append(m)
        result = on_approval(m) if on_approval else None
        if result is not None:
            c.send({"jsonrpc": "2.0", "id": m["id"], "result": result})


def decide(decision: str) -> t.Callable[[Body], Body]:
    return lambda _req: {"decision": decision}


def summary(res: Body) -> Body:
    return {"status": res["status"], "error": res.get("error"),
            "approvals": [a["method"] for a in res["approvals"]]}


def sc_text(c: Codex, ws: Path, api: FakeOpenAI) -> Body:
    return summary(turn(c, handshake(c, ws), "Say hello"))


def _approval(c: Codex, ws: Path, decision: str, tag: str = "[bash]") -> Body:
    res = turn(c, handshake(c, ws), f"{tag} please create the file", decide(decision))
    return {**summary(res), "file_created": (ws / "created.txt").exists(),
            "hello_created": (ws / "hello.txt").exists()}


def sc_approval_accept(c: Codex, ws: Path, api: FakeOpenAI) -> Body:
    return _approval(c, ws, "accept")


def sc_approval_decline(c: Codex, ws: Path, api: FakeOpenAI) -> Body:
    return _approval(c, ws, "decline")


def sc_approval_session(c: Codex, ws: Path, api: FakeOpenAI) -> Body:
    return _approval(c, ws, "acceptForSession", "[twice]")


def sc_file_change(c: Codex, ws: Path, api: FakeOpenAI) -> Body:
    return _approval(c, ws, "accept", "[patch]")


def sc_file_change_decline(c: Codex, ws: Path, api: FakeOpenAI) -> Body:
    return _approval(c, ws, "decline", "[patch]")


def sc_interrupt(c: Codex, ws: Path, api: FakeOpenAI) -> Body:
    thread = handshake(c, ws)
    c.request("turn/start", {"threadId": thread,
                             "input": [{"type": "text", "text": "[bash] create it"}]})
    started = c.wait_for(method("turn/started"))
    c.wait_for(is_approval)
    t0 = time.monotonic()
    turn_id = started["params"]["turn"]["id"]
    reply = c.call("turn/interrupt", {"threadId": thread, "turnId": turn_id})
    done = c.wait_for(method("turn/completed"))
    took = round(time.monotonic() - t0, 3)
    try:
        late = c.wait_for(method("serverRequest/resolved"), timeout=2)
    except TimeoutError:
        late = None
    after = turn(c, thread, "Say hello after the interrupt")
    return {"interrupt_reply": reply.get("result"), "status": done["params"]["turn"]["status"],
            "seconds_interrupt_to_completed": took, "late_resolved": late is not None,
            "file_created": (ws / "created.txt").exists(), "next_turn": summary(after)}


def sc_ask(c: Codex, ws: Path, api: FakeOpenAI) -> Body:
    """``request_user_input`` is for Plan mode only (PROTOCOLS.md 3.2): Plan mode is the
    experimental ``collaborationMode`` of ``turn/start``."""
    thread = handshake(c, ws, experimental=True)
    c.request("turn/start", {"threadId": thread,
                             "input": [{"type": "text", "text": "[ask] pick a database"}],
                             "collaborationMode": {"mode": "plan",
                                                   "settings": {"model": "fake-model"}}})
    req = c.wait_for(lambda m: m.get("method") == "item/tool/requestUserInput"
                     or m.get("method") == "turn/completed")
    if req.get("method") == "turn/completed":
        return {"asked": False, "status": req["params"]["turn"]["status"]}
    answers = {q["id"]: {"answers": [q["options"][1]["label"]]} for q in req["params"]["questions"]}
    c.send({"jsonrpc": "2.0", "id": req["id"], "result": {"answers": answers}})
    done = c.wait_for(method("turn/completed"))
    return {"asked": True, "status": done["params"]["turn"]["status"],
            "tool_output": last_function_output(api.requests[-1])}


def sc_reasoning(c: Codex, ws: Path, api: FakeOpenAI) -> Body:
    return summary(turn(c, handshake(c, ws), "[think] say hello"))


def sc_command_fails(c: Codex, ws: Path, api: FakeOpenAI) -> Body:
    return summary(turn(c, handshake(c, ws), "[fail] list it", decide("accept")))


def sc_two_turns(c: Codex, ws: Path, api: FakeOpenAI) -> Body:
    thread = handshake(c, ws)
    first = turn(c, thread, "First turn")
    second = turn(c, thread, "Second turn")
    return {"statuses": [first["status"], second["status"]],
            "turn2_user_texts": all_user_texts(api.requests[-1])}


def sc_api_error(c: Codex, ws: Path, api: FakeOpenAI) -> Body:
    res = turn(c, handshake(c, ws), "[error] fail please")
    return {**summary(res), "requests": len(api.requests)}


SCENARIOS: dict[str, t.Callable[[Codex, Path, FakeOpenAI], Body]] = {
    "text": sc_text, "approval_accept": sc_approval_accept,
    "approval_decline": sc_approval_decline, "approval_session": sc_approval_session,
    "file_change": sc_file_change, "file_change_decline": sc_file_change_decline,
    "interrupt": sc_interrupt, "ask": sc_ask, "reasoning": sc_reasoning,
    "command_fails": sc_command_fails, "two_turns": sc_two_turns, "api_error": sc_api_error,
}


def run(name: str, codex: str, records: list[Body]) -> Body:
    with FakeOpenAI(script) as api, tempfile.TemporaryDirectory() as home, \
            tempfile.TemporaryDirectory() as ws:
        env = codex_env(api, home)
        if name == "resume":
            return run_resume(codex, api, env, Path(ws), records)
        c = Codex(codex, env, ws, records)
        try:
            meta = SCENARIOS[name](c, Path(ws), api)
        finally:
            meta_exit = c.finish()
        return {**meta, **meta_exit, "api_paths": api.paths,
                "api_errors": [repr(e) for e in api.errors]}


def run_resume(codex: str, api: FakeOpenAI, env: dict[str, str], ws: Path,
               records: list[Body]) -> Body:
    first = Codex(codex, env, str(ws), records, proc=1)
    try:
        thread = handshake(first, ws)
        turn(first, thread, "Remember the word banana")
    finally:
        exit1 = first.finish()
    second = Codex(codex, env, str(ws), records, proc=2)
    try:
        resumed = handshake(second, ws, resume=thread)
        res = turn(second, resumed, "What was the word?")
    finally:
        exit2 = second.finish()
    texts = all_user_texts(api.requests[-1])
    return {"proc1": exit1, "proc2": exit2, "status": res["status"], "turn2_user_texts": texts,
            "turn2_contains_turn1": "Remember the word banana" in texts,
            "same_thread_id": resumed == thread, "api_paths": api.paths}


def versions(codex: str) -> Body:
    version = subprocess.run([codex, "--version"], capture_output=True, text=True)
    return {"codex_version": version.stdout.strip()}


def main(argv: list[str] | None = None) -> int:
    return record_main(argv, doc=__doc__, names=[*SCENARIOS, "resume"], run=run, cli="codex",
                       default_bin=CODEX, out="tests/fixtures/codex", versions=versions)


if __name__ == "__main__":
    sys.exit(main())
