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

import argparse
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
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

ROOT = Path(__file__).resolve().parents[2]
CODEX = str(ROOT / ".tools" / "node_modules" / ".bin" / "codex")
BASH = "touch created.txt && echo touched"
PATCH = ("apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: hello.txt\n+hello\n"
         "*** End Patch\nEOF\n")
WAIT_SECONDS = 30.0
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


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


class Codex:
    """One ``codex app-server`` process: a reader thread records stdout, ``send`` records
    stdin; ``request`` numbers client requests 1, 2, …"""

    def __init__(self, codex: str, env: dict[str, str], cwd: str, records: list[Body],
                 proc: int | None = None) -> None:
        self.records, self.proc_tag, self.lines = records, proc, queue.Queue[Body]()
        self.started = time.monotonic()
        self.first_seen: dict[str, float] = {}
        self.next_id = 1
        self.p = subprocess.Popen([codex, "app-server"], cwd=cwd, env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.stderr = b""
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _record(self, rec: Body) -> None:
        self.records.append(rec if self.proc_tag is None else {**rec, "proc": self.proc_tag})

    def _read(self) -> None:
        assert self.p.stdout is not None
        for raw in self.p.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                msg = json.loads(line)
            except ValueError:
                self._record({"dir": "out", "raw": line})
                continue
            key = msg.get("method") or f"response {msg.get('id')}"
            self.first_seen.setdefault(key, round(time.monotonic() - self.started, 3))
            self._record({"dir": "out", "msg": msg})
            self.lines.put(msg)

    def _read_stderr(self) -> None:
        assert self.p.stderr is not None
        self.stderr = self.p.stderr.read(64_000)

    def send(self, msg: Body) -> None:
        assert self.p.stdin is not None
        self._record({"dir": "in", "msg": msg})
        self.p.stdin.write((json.dumps(msg) + "\n").encode())
        self.p.stdin.flush()

    def request(self, method: str, params: Body) -> int:
        rid, self.next_id = self.next_id, self.next_id + 1
        self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        return rid

    def call(self, method: str, params: Body) -> Body:
        """Send a request and wait for its response (``result`` or ``error``)."""
        rid = self.request(method, params)
        return self.wait_for(lambda m: m.get("id") == rid and "method" not in m)

    def wait_for(self, pred: t.Callable[[Body], bool], timeout: float = WAIT_SECONDS) -> Body:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.p.poll() is not None and self.lines.empty():
                    break
                continue
            if pred(msg):
                return msg
        raise TimeoutError(f"no matching line within {timeout}s (rc={self.p.poll()})")

    def finish(self, timeout: float = 10.0) -> Body:
        """Close stdin, wait for exit (kill after ``timeout``), return exit facts."""
        t0 = time.monotonic()
        if self.p.stdin and not self.p.stdin.closed:
            self.p.stdin.close()
        try:
            rc: int | str = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(timeout=5)
            rc = "killed"
        time.sleep(0.1)  # let the readers drain
        return {"exit_code": rc, "exit_seconds_after_stdin_close": round(time.monotonic() - t0, 3),
                "stderr": self.stderr.decode("utf-8", "replace")[:2000],
                "first_seen_seconds": self.first_seen}


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


def main(argv: list[str] | None = None) -> int:
    names = [*SCENARIOS, "resume"]
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("scenarios", nargs="+", choices=[*names, "all"])
    ap.add_argument("--codex", default=CODEX, help="path to the codex binary")
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/codex"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    meta_path = args.out / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    version = subprocess.run([args.codex, "--version"], capture_output=True, text=True)
    meta["codex_version"] = version.stdout.strip()
    for name in names if "all" in args.scenarios else args.scenarios:
        records: list[Body] = []
        try:
            meta[name] = run(name, args.codex, records)
        except Exception as e:  # keep what was recorded; the summary shows the failure
            meta[name] = {"failed": repr(e)}
        with open(args.out / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        print(name, json.dumps(meta[name])[:400], file=sys.stderr)
    meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
