"""Record the real Gemini CLI speaking the Agent Client Protocol against FakeGemini.

Run from the repository root::

    python -m tests.fakes.record_gemini all
    python -m tests.fakes.record_gemini tool_allow cancel --out /tmp/fixtures --gemini PATH

Each scenario writes ``<out>/<scenario>.jsonl``: one ``{"dir": "out"|"in", "msg": {...}}`` per
line, in the order the client saw or sent it (scenarios with two processes add ``"proc": 1|2``;
a stdout line that is not JSON is kept as ``{"dir": "out", "raw": "..."}``). ``meta.json``
gets, per scenario, the exit code, stderr, timings and the checks the scenario made. Every
wait is bounded and every process is killed on the way out.

The process is ``gemini --acp -m gemini-2.5-pro --skip-trust`` with an isolated ``HOME``
holding the settings file of PROTOCOLS.md section 5.3, ``GEMINI_API_KEY=x``,
``GOOGLE_GEMINI_BASE_URL`` (the fake), ``GEMINI_CLI_NO_RELAUNCH=true`` and ``HTTPS_PROXY`` to a
closed loopback port (so that any outside connection fails at once). The client advertises
``fs.readTextFile``/``writeTextFile`` and serves them inside the workspace, as Tether's driver
does.

The fake model is scripted by a tag in the newest user text: ``[bash]`` asks for
``run_shell_command`` ``touch created.txt && echo touched``, ``[bash2]`` for ``touch
second.txt``, ``[write]`` for ``write_file`` of ``notes.txt``, ``[think]`` answers a thought
then text, ``[error]`` answers HTTP 400; anything else gets a plain text reply. After a
``functionResponse`` the model says what the tool said.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import typing as t
from pathlib import Path

from .gemini_api import (
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
from .recording import JsonRpcProcess, closed_port, record_main

GEMINI = str(Path(__file__).resolve().parents[2] / ".tools" / "node_modules" / ".bin" / "gemini")
MODEL = "gemini-2.5-pro"
SETTINGS = {"security": {"auth": {"selectedType": "gemini-api-key"}},
            "privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False}}
CLIENT_CAPABILITIES = {"fs": {"readTextFile": True, "writeTextFile": True}}


def script(body: Body, ws: str = "/nonexistent") -> Reply:
    result = last_function_response(body)
    if result is not None:
        return text_reply(f"Tool said: {json.dumps(result.get('response'))[:200]}")
    latest = last_user_text(body)
    if "[error]" in latest:
        return error_reply(400, "fake: this request is invalid")
    if "[bash2]" in latest:
        return shell_reply("Another file.", "touch second.txt", "Create second.txt")
    if "[bash]" in latest:
        return shell_reply("I'll create the file.", "touch created.txt && echo touched",
                           "Create created.txt")
    if "[write]" in latest:
        return write_file_reply("Writing notes.", str(Path(ws) / "notes.txt"),
                                "line one\nline two\n")
    if "[think]" in latest:
        return text_reply("Here is my answer.", thought="**Pondering** the question.")
    return text_reply(f"Hello from the fake Gemini. You said: {latest[:80]}")


def gemini_env(api: FakeGemini, home: str) -> dict[str, str]:
    settings = Path(home) / ".gemini" / "settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(SETTINGS))
    proxy = f"http://127.0.0.1:{closed_port()}"
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home,
            "GEMINI_API_KEY": "x", "GOOGLE_GEMINI_BASE_URL": api.base_url,
            "GEMINI_CLI_NO_RELAUNCH": "true", "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy,
            "NO_PROXY": "127.0.0.1,localhost"}


class Acp(JsonRpcProcess):
    """One ``gemini --acp`` process (tests/fakes/recording.py) that also serves ``fs/*``
    requests inside ``cwd``."""

    def __init__(self, gemini: str, env: dict[str, str], cwd: str, records: list[Body],
                 proc: int | None = None) -> None:
        self.cwd = Path(cwd)
        super().__init__([gemini, "--acp", "-m", MODEL, "--skip-trust"], env, cwd, records, proc)

    def first_seen_key(self, msg: Body) -> str:
        key = str(msg.get("method") or ("response" if "id" in msg else "?"))
        if key == "session/update":
            key += "/" + str(msg["params"]["update"].get("sessionUpdate"))
        return key

    def received(self, msg: Body) -> None:
        if str(msg.get("method", "")).startswith("fs/"):
            self._serve_fs(msg)

    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")[-2000:]

    def _serve_fs(self, msg: Body) -> None:
        params = msg["params"]
        path = Path(params["path"]).resolve()
        if not path.is_relative_to(self.cwd.resolve()):
            self.respond(msg["id"], error={"code": -32602, "message": "outside workspace"})
        elif msg["method"] == "fs/read_text_file":
            # A missing file reads as empty, as in Zed (and tether.agents.acp_fs): gemini
            # 0.61.0's write_file cannot create a file when the read fails.
            self.respond(msg["id"], {"content": path.read_text() if path.exists() else ""})
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(params["content"])
            self.respond(msg["id"], None)


def is_request(method: str) -> t.Callable[[Body], bool]:
    return lambda m: m.get("method") == method and "id" in m


def open_session(c: Acp, ws: Path) -> tuple[Body, str]:
    """``initialize`` then ``session/new``: ``(initialize result, session id)``."""
    init = c.call("initialize", {"protocolVersion": 1, "clientCapabilities": CLIENT_CAPABILITIES})
    new = c.call("session/new", {"cwd": str(ws), "mcpServers": []})
    return init.get("result", init), new["result"]["sessionId"]


def prompt(c: Acp, sid: str, text: str) -> int:
    return c.request("session/prompt", {"sessionId": sid, "prompt": [{"type": "text",
                                                                      "text": text}]})


def reply_to(rid: int) -> t.Callable[[Body], bool]:
    return lambda m: m.get("id") == rid and "method" not in m


def turn(c: Acp, sid: str, text: str) -> Body:
    rid = prompt(c, sid, text)
    return c.wait_for(reply_to(rid))


def pick(request: Body, kind: str) -> str:
    return str(next(o["optionId"] for o in request["params"]["options"] if o["kind"] == kind))


def select(option_id: str) -> Body:
    return {"outcome": {"outcome": "selected", "optionId": option_id}}


def sc_text(c: Acp, ws: Path) -> Body:
    init, sid = open_session(c, ws)
    res = turn(c, sid, "[think] Say hello")
    return {"stop": res.get("result"), "agent_capabilities": init.get("agentCapabilities")}


def _permission(c: Acp, ws: Path, kind: str, tag: str = "[bash]") -> tuple[str, Body, Body]:
    _, sid = open_session(c, ws)
    rid = prompt(c, sid, f"{tag} please make the file")
    req = c.wait_for(is_request("session/request_permission"))
    c.respond(req["id"], select(pick(req, kind)))
    return sid, req, c.wait_for(reply_to(rid))


def sc_tool_allow(c: Acp, ws: Path) -> Body:
    _, req, res = _permission(c, ws, "allow_once")
    return {"stop": res.get("result"), "options": req["params"]["options"],
            "file_created": (ws / "created.txt").exists()}


def sc_tool_reject(c: Acp, ws: Path) -> Body:
    _, req, res = _permission(c, ws, "reject_once")
    return {"stop": res.get("result"), "file_created": (ws / "created.txt").exists()}


def sc_allow_always(c: Acp, ws: Path) -> Body:
    sid, _, res = _permission(c, ws, "allow_always")
    rid = prompt(c, sid, "[bash2] once more")
    try:  # does the same tool ask again?
        again = c.wait_for(lambda m: is_request("session/request_permission")(m)
                           or reply_to(rid)(m), timeout=15)
    except TimeoutError:
        again = {}
    asked = again.get("method") == "session/request_permission"
    if asked:
        c.respond(again["id"], select(pick(again, "allow_once")))
        c.wait_for(reply_to(rid))
    return {"stop": res.get("result"), "second_asked_again": asked,
            "files": sorted(p.name for p in ws.iterdir())}


def sc_cancel(c: Acp, ws: Path) -> Body:
    _, sid = open_session(c, ws)
    rid = prompt(c, sid, "[bash] please make the file")
    req = c.wait_for(is_request("session/request_permission"))
    t0 = time.monotonic()
    c.notify("session/cancel", {"sessionId": sid})
    try:
        early = c.wait_for(reply_to(rid), timeout=2)
    except TimeoutError:
        early = None
    c.respond(req["id"], {"outcome": {"outcome": "cancelled"}})
    res = early or c.wait_for(reply_to(rid))
    took = round(time.monotonic() - t0, 3)
    after = turn(c, sid, "Say hello after the cancel")
    return {"stop": res.get("result"), "ended_before_answer": early is not None,
            "seconds_cancel_to_reply": took, "next_turn": after.get("result"),
            "file_created": (ws / "created.txt").exists()}


def sc_two_prompts(c: Acp, ws: Path, api: FakeGemini) -> Body:
    _, sid = open_session(c, ws)
    first = turn(c, sid, "Remember the word banana")
    second = turn(c, sid, "What was the word?")
    return {"stops": [first.get("result"), second.get("result")],
            "turn2_contains_turn1": "Remember the word banana" in all_user_texts(
                api.requests[-1])}


def sc_api_error(c: Acp, ws: Path, api: FakeGemini) -> Body:
    _, sid = open_session(c, ws)
    res = turn(c, sid, "[error] fail please", )
    return {"reply": res, "api_calls": len(api.requests)}


def sc_write_file(c: Acp, ws: Path) -> Body:
    _, req, res = _permission(c, ws, "allow_once", tag="[write]")
    notes = ws / "notes.txt"
    return {"stop": res.get("result"), "content": req["params"]["toolCall"].get("content"),
            "written": notes.read_text() if notes.exists() else None}


def sc_set_mode(c: Acp, ws: Path) -> Body:
    _, sid = open_session(c, ws)
    plan = c.call("session/set_mode", {"sessionId": sid, "modeId": "plan"})
    bogus = c.call("session/set_mode", {"sessionId": sid, "modeId": "bogus"})
    model = c.call("session/set_model", {"sessionId": sid, "modelId": "gemini-2.5-flash"})
    config = c.call("session/set_config_option", {"sessionId": sid, "configId": "model",
                                                  "value": "gemini-2.5-flash"})
    yolo = c.call("session/set_mode", {"sessionId": sid, "modeId": "yolo"})
    res = turn(c, sid, "[bash] with yolo on")
    return {"plan": plan, "bogus": bogus, "set_model": model, "set_config_option": config,
            "yolo": yolo, "stop": res.get("result"),
            "file_created": (ws / "created.txt").exists()}


def sc_unknown_method(c: Acp, ws: Path) -> Body:
    _, sid = open_session(c, ws)
    bogus = c.call("session/bogus", {"sessionId": sid})
    wrong = c.call("session/prompt", {"sessionId": "no-such-session",
                                      "prompt": [{"type": "text", "text": "hi"}]})
    return {"bogus": bogus, "unknown_session": wrong}


PLAIN: dict[str, t.Callable[[Acp, Path], Body]] = {
    "text": sc_text, "tool_allow": sc_tool_allow, "tool_reject": sc_tool_reject,
    "allow_always": sc_allow_always, "cancel": sc_cancel, "write_file": sc_write_file,
    "set_mode": sc_set_mode, "unknown_method": sc_unknown_method,
}
WITH_API: dict[str, t.Callable[[Acp, Path, FakeGemini], Body]] = {
    "two_prompts": sc_two_prompts, "api_error": sc_api_error,
}
LOADS = ("load_same_minute", "load_later_minute")


def run(name: str, gemini: str, records: list[Body]) -> Body:
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as ws, \
            FakeGemini(lambda body: script(body, ws)) as api:
        env = gemini_env(api, home)
        if name in LOADS:
            return run_load(gemini, env, api, ws, records, later=name == "load_later_minute")
        c = Acp(gemini, env, ws, records)
        try:
            meta = (WITH_API[name](c, Path(ws), api) if name in WITH_API
                    else PLAIN[name](c, Path(ws)))
        finally:
            meta_exit = c.finish()
        return {**meta, **meta_exit, "api_paths": api.paths, "api_models": api.models}


def run_load(gemini: str, env: dict[str, str], api: FakeGemini, ws: str, records: list[Body],
             later: bool) -> Body:
    """Process 1 opens a session and runs a turn; process 2 loads it (in the same wall-clock
    minute, or after waiting for the next one: PROTOCOLS.md 4.3) and runs a turn."""
    first = Acp(gemini, env, ws, records, proc=1)
    try:
        _, sid = open_session(first, Path(ws))
        turn(first, sid, "Remember the word banana")
    finally:
        exit1 = first.finish()
    if later:
        time.sleep(61 - time.time() % 60)
    second = Acp(gemini, env, ws, records, proc=2)
    try:
        init = second.call("initialize", {"protocolVersion": 1,
                                          "clientCapabilities": CLIENT_CAPABILITIES})
        loaded = second.call("session/load", {"sessionId": sid, "cwd": ws, "mcpServers": []})
        res = turn(second, sid, "What was the word?") if "result" in loaded else None
    finally:
        exit2 = second.finish()
    return {"proc1": exit1, "proc2": exit2, "load_capability": init["result"].get(
                "agentCapabilities", {}).get("loadSession"),
            "load": loaded.get("error") or "ok", "stop": res and res.get("result"),
            "turn2_contains_turn1": bool(res) and "Remember the word banana" in all_user_texts(
                api.requests[-1])}


def main(argv: list[str] | None = None) -> int:
    return record_main(argv, doc=__doc__, names=[*PLAIN, *WITH_API, *LOADS], run=run,
                       cli="gemini", default_bin=GEMINI, out="tests/fixtures/gemini",
                       summary_chars=600)


if __name__ == "__main__":
    sys.exit(main())
