"""The ACP driver on conversations recorded from the real Gemini CLI (0.61.0,
tests/fixtures/gemini, see tests/fakes/README.md).

Each recording is replayed through a driver: the agent's lines are fed to ``receive``, the
client's own steps (a prompt, an answer, Stop, a mode change) become driver calls, and what
the driver sends must be what the recorder sent the real CLI, in order. Then the events.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tether.agents.acp import AcpDriver
from tether.agents.acp_content import choose_option, render_diff, usage
from tether.agents.acp_rpc import error_text
from tether.agents.acp_session import commands
from tether.agents.driver import (
    Action,
    Answer,
    Ask,
    DriverContext,
    Emit,
    Offer,
    Prompt,
    Ready,
    Send,
    Started,
    TurnOver,
    Withdraw,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "gemini"
#: Client requests the driver never makes (the recorder probed the CLI with them).
PROBES = ("session/set_config_option", "session/bogus")


def records(name: str, workspace: Path, proc: int | None = None) -> list[dict[str, Any]]:
    """The recording, its workspace path replaced by ``workspace``."""
    text = (FIXTURES / f"{name}.jsonl").read_text()
    first = [json.loads(line) for line in text.splitlines() if line.strip()]
    cwd = next(r["msg"]["params"]["cwd"] for r in first if r["dir"] == "in"
               and r["msg"].get("method") in ("session/new", "session/load"))
    lines = text.replace(cwd, str(workspace)).splitlines()
    out = [json.loads(line) for line in lines if line.strip()]
    return [r for r in out if proc is None or r.get("proc") == proc]


class Replay:
    """Drive one :class:`AcpDriver` through a recording, checking what it sends."""

    def __init__(self, workspace: Path, transcript: str | None = None) -> None:
        self.driver = AcpDriver(DriverContext("gemini", workspace,
                                              transcript=lambda: transcript))
        self.actions: list[Action] = []
        self.sent: list[dict[str, Any]] = []  # what the driver wrote, in order
        self.ids: dict[Any, Any] = {}  # the recording's request ids -> the driver's
        self.options: dict[str, list[dict[str, Any]]] = {}

    def take(self, actions: list[Action]) -> None:
        self.actions += actions
        self.sent += [a.message for a in actions if isinstance(a, Send)]
        for a in actions:
            if isinstance(a, Ask):
                self.options[a.token] = a.fields["options"]

    def client_step(self, msg: dict[str, Any]) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "session/prompt":
            self.take(self.driver.prompt(Prompt(params["prompt"][-1]["text"])))
        elif method == "session/set_mode":
            self.take(self.driver.configure(None, params["modeId"]))
        elif method == "session/set_model":
            self.take(self.driver.configure(params["modelId"], None))
        elif method == "session/cancel":
            self.take(self.driver.interrupt())
        elif "result" in msg and isinstance(msg["result"], dict) and "outcome" in msg["result"]:
            outcome = msg["result"]["outcome"]
            token = str(msg["id"])
            if token in self.options and outcome["outcome"] == "selected":
                kind = next(o["kind"] for o in self.options[token]
                            if o["option_id"] == outcome["optionId"])
                self.take(self.driver.answer(token, Answer(
                    "allow" if kind.startswith("allow") else "deny",
                    scope="session" if kind == "allow_always" else "once")))
        # initialize, session/new|load and fs answers come from the driver by itself

    def check(self, expected: list[dict[str, Any]]) -> None:
        """The driver sent what the recorder sent (request ids renumbered)."""
        got = [dict(m) for m in self.sent]
        for mine, theirs in zip(got, expected, strict=False):
            if "method" in theirs and "id" in theirs:
                self.ids[theirs["id"]] = mine.get("id")
                mine["id"] = theirs["id"]
        assert got[:len(expected)] == expected

    def events(self, kind: str | None = None) -> list[Any]:
        return [(a.kind, a.payload) if kind is None else a.payload for a in self.actions
                if isinstance(a, Emit) and (kind is None or a.kind == kind)]

    def of(self, cls: type) -> list[Any]:
        return [a for a in self.actions if isinstance(a, cls)]


def checked(name: str, workspace: Path, **kw: Any) -> Replay:
    """Replay and check what was sent, renumbering ids as the recording goes."""
    r = Replay(workspace, kw.pop("transcript", None))
    recs = records(name, workspace, kw.pop("proc", None))
    expected: list[dict[str, Any]] = []
    r.take(r.driver.start(kw.get("agent_session_id"), kw.get("resume", False)))
    r.check(records_init(recs))
    for rec in recs:
        msg = rec["msg"]
        if rec["dir"] == "in":
            if msg.get("method") in PROBES or msg.get("method") == "initialize":
                continue
            expected.append(msg)
            r.client_step(msg)
            r.check([*records_init(recs), *expected])
            continue
        if "method" not in msg:
            if msg.get("id") not in r.ids:
                continue
            msg = {**msg, "id": r.ids[msg["id"]]}
        r.take(r.driver.receive(msg))
    r.check([*records_init(recs), *expected])
    return r


def records_init(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["msg"] for r in recs[:1] if r["msg"].get("method") == "initialize"]


# -- the recorded conversations --------------------------------------------------------


def test_text_turn_opens_a_session_offers_modes_and_models_then_streams(tmp_path: Path) -> None:
    r = checked("text", tmp_path)
    started = r.of(Started)
    assert len(started) == 1 and r.of(Ready) == [Ready()]
    offer = next(o for o in r.of(Offer) if o.modes)
    assert [m["id"] for m in offer.modes] == ["default", "autoEdit", "yolo", "plan"]
    assert offer.models[0] == {"id": "default", "name": "Default (the agent's own)",
                               "default": True}
    assert "gemini-2.5-pro" in [m["id"] for m in offer.models]
    assert any(o.commands and o.commands[0]["name"] == "memory" for o in r.of(Offer))
    session = r.events("agent_session")[0]
    assert session == {"agent": "gemini", "agent_session_id": started[0].agent_session_id,
                       "model": "gemini-2.5-pro", "cwd": str(tmp_path)}
    kinds = [k for k, _ in r.events() if k != "agent_session"]
    assert kinds == ["thinking", "text_delta", "text_delta", "text", "result"]
    assert r.events("thinking") == [{"text": "**Pondering**\nthe question."}]
    assert r.events("text") == [{"text": "Here is my answer."}]
    result = r.events("result")[0]
    assert result["text"] == "Here is my answer." and result["is_error"] is False
    assert result["usage"] == {"input_tokens": 11, "output_tokens": 4}
    assert r.of(TurnOver) == [TurnOver("completed")]


def test_permission_asks_once_with_a_tool_use_first_and_allows_once(tmp_path: Path) -> None:
    r = checked("tool_allow", tmp_path)
    ask = r.of(Ask)[0]
    assert ask.kind == "approval" and ask.token == "0"
    assert ask.fields["tool_name"] == "touch created.txt && echo touched"
    assert [o["option_id"] for o in ask.fields["options"]] == [
        "proceed_always", "proceed_once", "cancel"]
    assert ask.fields["input"]["kind"] == "execute"
    kinds = [k for k, _ in r.events()]
    assert kinds.index("tool_use") < kinds.index("tool_result")
    use = r.events("tool_use")[0]
    assert use["tool_use_id"] == ask.fields["tool_use_id"] and use["name"] == "execute"
    assert r.events("tool_result")[0]["is_error"] is False
    answer = next(m for m in r.sent if m.get("id") == 0)
    assert answer["result"] == {"outcome": {"outcome": "selected", "optionId": "proceed_once"}}
    assert r.of(TurnOver) == [TurnOver("completed")]


def test_reject_sends_reject_once_and_closes_the_call_as_an_error(tmp_path: Path) -> None:
    r = checked("tool_reject", tmp_path)
    answer = next(m for m in r.sent if m.get("id") == 0)
    assert answer["result"]["outcome"]["optionId"] == "cancel"
    # Gemini sends no tool_call_update after a reject: the driver closes the call itself.
    assert r.events("tool_result") == [{"tool_use_id": r.of(Ask)[0].fields["tool_use_id"],
                                        "content": "denied", "is_error": True}]
    assert r.of(TurnOver) == [TurnOver("completed")]


def test_allow_for_the_session_picks_allow_always_and_the_next_call_runs_unasked(
        tmp_path: Path) -> None:
    r = checked("allow_always", tmp_path)
    answer = next(m for m in r.sent if m.get("id") == 0)
    assert answer["result"]["outcome"]["optionId"] == "proceed_always"
    assert len(r.of(Ask)) == 1
    assert len(r.events("tool_use")) == 2 and len(r.events("tool_result")) == 2
    assert r.of(TurnOver) == [TurnOver("completed"), TurnOver("completed")]


def test_stop_with_a_permission_pending_cancels_and_answers_it(tmp_path: Path) -> None:
    r = checked("cancel", tmp_path)
    cancel = [m for m in r.sent if m.get("method") == "session/cancel"]
    assert len(cancel) == 1 and "id" not in cancel[0]
    answer = next(m for m in r.sent if m.get("id") == 0)
    assert answer["result"] == {"outcome": {"outcome": "cancelled"}}
    assert r.of(TurnOver) == [TurnOver("cancelled"), TurnOver("completed")]
    assert r.events("result")[0]["stop_reason"] == "cancelled"
    assert r.events("tool_result")[0]["is_error"] is True
    # The runner settles the request later: the driver does not answer twice.
    assert r.driver.answer("0", Answer("cancelled")) == []


def test_two_prompts_are_two_turns_of_one_session(tmp_path: Path) -> None:
    r = checked("two_prompts", tmp_path)
    assert r.of(TurnOver) == [TurnOver("completed")] * 2
    assert [p["text"] for p in r.events("result")] == [
        "Hello from the fake Gemini. You said: Remember the word banana",
        "Hello from the fake Gemini. You said: What was the word?"]
    assert [d["index"] for d in r.events("text_delta")] == [0, 0, 0, 0]


def test_an_api_error_fails_the_turn_with_the_apis_message(tmp_path: Path) -> None:
    r = checked("api_error", tmp_path)
    assert r.events("error") == [{"message": "the agent's turn failed: fake: this request "
                                             "is invalid (code 400)"}]
    assert r.of(TurnOver) == [TurnOver("error")]
    assert r.events("result") == []


def test_write_file_is_served_inside_the_workspace_and_shows_the_diff(tmp_path: Path) -> None:
    r = checked("write_file", tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "line one\nline two\n"
    ask = r.of(Ask)[0]
    # A new file (Gemini's ``_meta.kind: "add"``), named relative to the workspace.
    assert ask.fields["diff"].splitlines() == ["--- /dev/null", "+++ b/notes.txt",
                                               "@@ -0,0 +1,2 @@", "+line one", "+line two"]
    assert ask.fields["tool_name"] == "Writing to notes.txt"
    result = r.events("tool_result")[0]
    assert result["is_error"] is False and result["content"] == ask.fields["diff"]


def test_mode_and_model_changes_are_sent_and_a_refusal_restores_the_mode(
        tmp_path: Path) -> None:
    r = checked("set_mode", tmp_path)
    methods = [m.get("method") for m in r.sent]
    assert methods.count("session/set_mode") == 3 and "session/set_model" in methods
    # "[MODE_UPDATE] plan" is a mode notice, not text; the refused "bogus" goes back to plan.
    assert all("MODE_UPDATE" not in p["text"] for p in r.events("text_delta"))
    assert r.events("mode") == [{"permission_mode": "plan", "by": "agent"}]
    assert "Invalid or unavailable mode: bogus" in r.events("error")[0]["message"]
    assert r.of(Ask) == []  # yolo: the shell call ran unasked
    assert r.of(TurnOver) == [TurnOver("completed")]


def test_load_in_a_later_minute_drops_the_replayed_history(tmp_path: Path) -> None:
    first = checked("load_later_minute", tmp_path, proc=1)
    sid = first.of(Started)[0].agent_session_id
    r = checked("load_later_minute", tmp_path, proc=2, agent_session_id=sid, resume=True)
    assert r.sent[1]["method"] == "session/load"
    assert r.sent[1]["params"] == {"sessionId": sid, "cwd": str(tmp_path), "mcpServers": []}
    assert r.of(Started) == [Started(sid)]
    assert [p["text"] for p in r.events("text")] == [
        "Hello from the fake Gemini. You said: What was the word?"]
    assert r.events("error") == []


def test_a_failed_load_falls_back_to_a_new_session_carrying_the_transcript(
        tmp_path: Path) -> None:
    recs = records("load_same_minute", tmp_path, proc=2)
    sid = recs[2]["msg"]["params"]["sessionId"]
    r = Replay(tmp_path, "user: Remember the word banana")
    r.take(r.driver.start(sid, True))
    r.take(r.driver.prompt(Prompt("What was the word?")))  # held until the session opens
    for rec in recs:
        if rec["dir"] == "out":
            r.take(r.driver.receive(rec["msg"]))
    assert [m["method"] for m in r.sent] == ["initialize", "session/load", "session/new"]
    assert "could not be restored" in r.events("error")[0]["message"]
    assert "No previous sessions found" in r.events("error")[0]["message"]
    new_id = r.sent[-1]["id"]
    r.take(r.driver.receive({"jsonrpc": "2.0", "id": new_id, "result": {"sessionId": "s2"}}))
    prompt = r.sent[-1]
    assert prompt["method"] == "session/prompt" and prompt["params"]["sessionId"] == "s2"
    text = prompt["params"]["prompt"][-1]["text"]
    assert "user: Remember the word banana" in text and text.endswith("What was the word?")
    assert r.of(Started)[-1] == Started("s2")
    r.take(r.driver.prompt(Prompt("Again")))
    assert r.sent[-1]["params"]["prompt"][-1]["text"] == "Again"  # only the first carries it


# -- the driver's own rules -------------------------------------------------------------


def opened(tmp_path: Path, caps: dict[str, Any] | None = None) -> Replay:
    r = Replay(tmp_path)
    r.take(r.driver.start(None, False))
    r.take(r.driver.receive({"jsonrpc": "2.0", "id": 1, "result": {
        "protocolVersion": 1, "agentCapabilities": caps or {}}}))
    r.take(r.driver.receive({"jsonrpc": "2.0", "id": 2, "result": {"sessionId": "s1"}}))
    return r


def fs(r: Replay, method: str, **params: Any) -> dict[str, Any]:
    before = len(r.sent)
    r.take(r.driver.receive({"jsonrpc": "2.0", "id": 77, "method": method,
                             "params": {"sessionId": "s1", **params}}))
    assert len(r.sent) == before + 1
    return r.sent[-1]


def test_fs_reads_and_writes_inside_the_workspace(tmp_path: Path) -> None:
    r = opened(tmp_path)
    (tmp_path / "a.txt").write_text("one\ntwo\nthree\n")
    assert fs(r, "fs/read_text_file", path=str(tmp_path / "a.txt"))["result"] == {
        "content": "one\ntwo\nthree\n"}
    assert fs(r, "fs/read_text_file", path=str(tmp_path / "a.txt"), line=2, limit=1)[
        "result"] == {"content": "two\n"}
    assert fs(r, "fs/read_text_file", path=str(tmp_path / "missing.txt"))["result"] == {
        "content": ""}
    assert fs(r, "fs/write_text_file", path=str(tmp_path / "sub" / "b.txt"),
              content="hi")["result"] is None
    assert (tmp_path / "sub" / "b.txt").read_text() == "hi"


def test_fs_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    """A FIFO would block the reader for good (nobody writes to it), a folder has no text."""
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "folder").mkdir()
    r = opened(tmp_path)
    for name in ("pipe", "folder"):
        read = fs(r, "fs/read_text_file", path=str(tmp_path / name))
        assert read["error"]["code"] == -32602 and "not a regular file" in read["error"][
            "message"]


@pytest.mark.parametrize("where", ["outside", "dotdot", "symlink_file", "symlink_dir",
                                   "relative_dotdot"])
def test_fs_refuses_paths_that_resolve_outside_the_workspace(tmp_path: Path,
                                                             where: str) -> None:
    workspace, outside = tmp_path / "ws", tmp_path / "outside"
    workspace.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside / "secret.txt", workspace / "link.txt")
    os.symlink(outside, workspace / "linkdir")
    path = {"outside": str(outside / "secret.txt"),
            "dotdot": str(workspace / ".." / "outside" / "secret.txt"),
            "symlink_file": str(workspace / "link.txt"),
            "symlink_dir": str(workspace / "linkdir" / "secret.txt"),
            "relative_dotdot": "../outside/secret.txt"}[where]
    r = opened(workspace)
    read = fs(r, "fs/read_text_file", path=path)
    assert read["error"]["code"] == -32602 and "outside" in read["error"]["message"]
    assert "secret" not in json.dumps(read).replace("secret.txt", "")
    write = fs(r, "fs/write_text_file", path=path, content="overwritten")
    assert write["error"]["code"] == -32602
    assert (outside / "secret.txt").read_text() == "secret"
    if where != "symlink_file":  # a new file in a folder outside
        new = fs(r, "fs/write_text_file", path=path.replace("secret.txt", "new.txt"),
                 content="x")
        assert new["error"]["code"] == -32602 and not (outside / "new.txt").exists()


def test_unknown_agent_requests_get_method_not_found_and_notifications_nothing(
        tmp_path: Path) -> None:
    r = opened(tmp_path)
    reply = fs(r, "terminal/create", command="ls")
    assert reply == {"jsonrpc": "2.0", "id": 77, "error": {
        "code": -32601, "message": "Method not found: terminal/create"}}
    assert r.driver.receive({"jsonrpc": "2.0", "method": "some/notification"}) == []
    assert r.driver.receive({"jsonrpc": "2.0", "id": 999, "result": {}}) == []


@pytest.mark.parametrize("takes_images", [True, False])
def test_a_prompt_before_the_session_is_held_and_sent_with_images_first(
        tmp_path: Path, takes_images: bool) -> None:
    r = Replay(tmp_path)
    r.take(r.driver.start(None, False))
    r.take(r.driver.prompt(Prompt("look", [{"media_type": "image/png", "data": "AAA"}])))
    assert [m["method"] for m in r.sent] == ["initialize"]
    r.take(r.driver.receive({"jsonrpc": "2.0", "id": 1, "result": {
        "protocolVersion": 1,
        "agentCapabilities": {"promptCapabilities": {"image": takes_images}}}}))
    r.take(r.driver.receive({"jsonrpc": "2.0", "id": 2, "result": {"sessionId": "s1"}}))
    image = {"type": "image", "mimeType": "image/png", "data": "AAA"}
    text = {"type": "text", "text": "look"}
    assert r.sent[-1]["params"]["prompt"] == ([image, text] if takes_images else [text])
    assert bool(r.events("error")) is not takes_images


def test_resume_without_load_session_starts_new_and_says_so(tmp_path: Path) -> None:
    r = Replay(tmp_path, "earlier")
    r.take(r.driver.start("old", True))
    r.take(r.driver.receive({"jsonrpc": "2.0", "id": 1, "result": {
        "protocolVersion": 1, "agentCapabilities": {"loadSession": False}}}))
    assert r.sent[-1]["method"] == "session/new"
    assert "no loadSession" in r.events("error")[0]["message"]


def test_a_failed_initialize_ends_a_held_turn(tmp_path: Path) -> None:
    r = Replay(tmp_path)
    r.take(r.driver.start(None, False))
    r.take(r.driver.prompt(Prompt("hi")))
    r.take(r.driver.receive({"jsonrpc": "2.0", "id": 1, "error": {"code": -32000,
                                                                  "message": "auth"}}))
    assert r.of(TurnOver) == [TurnOver("error")]
    assert "auth" in r.events("error")[0]["message"]


def test_stop_before_the_session_opened_drops_the_held_prompt(tmp_path: Path) -> None:
    r = Replay(tmp_path)
    r.take(r.driver.start(None, False))
    r.take(r.driver.prompt(Prompt("hi")))
    assert r.driver.interrupt() == [TurnOver("cancelled")]


def test_plan_and_mode_updates_and_stop_reasons(tmp_path: Path) -> None:
    r = opened(tmp_path)
    r.take(r.driver.prompt(Prompt("go")))
    rid = r.sent[-1]["id"]

    def update(**u: Any) -> None:
        r.take(r.driver.receive({"jsonrpc": "2.0", "method": "session/update",
                                 "params": {"sessionId": "s1", "update": u}}))

    update(sessionUpdate="plan", entries=[{"content": "Read", "priority": "high",
                                           "status": "pending"}])
    update(sessionUpdate="current_mode_update", currentModeId="plan")
    update(sessionUpdate="agent_message_chunk", content={"type": "text", "text": "ok"})
    update(sessionUpdate="tool_call", toolCallId="t1", title="Edit a", kind="edit",
           status="in_progress", rawInput={"x": 1})
    update(sessionUpdate="tool_call_update", toolCallId="t1", status="failed",
           content=[{"type": "diff", "path": "a.txt", "oldText": "1\n", "newText": "2\n"}])
    r.take(r.driver.receive({"jsonrpc": "2.0", "id": rid,
                             "result": {"stopReason": "max_tokens"}}))
    assert r.events("plan") == [{"entries": [{"content": "Read", "priority": "high",
                                              "status": "pending"}]}]
    assert r.events("mode") == [{"permission_mode": "plan", "by": "agent"}]
    assert r.events("tool_use")[0] == {"tool_use_id": "t1", "name": "edit", "input": {
        "title": "Edit a", "kind": "edit", "locations": [], "rawInput": {"x": 1}}}
    result = r.events("tool_result")[0]
    assert result["is_error"] is True and "-1\n+2" in result["content"]
    assert "token limit" in r.events("result")[0]["text"]
    assert r.of(TurnOver) == [TurnOver("completed")]


def test_a_turn_that_ends_withdraws_its_pending_permission(tmp_path: Path) -> None:
    r = opened(tmp_path)
    r.take(r.driver.prompt(Prompt("go")))
    rid = r.sent[-1]["id"]
    r.take(r.driver.receive({"jsonrpc": "2.0", "id": 5, "method": "session/request_permission",
                             "params": {"sessionId": "s1", "options": [],
                                        "toolCall": {"toolCallId": "t", "title": "x"}}}))
    r.take(r.driver.receive({"jsonrpc": "2.0", "id": rid, "result": {"stopReason": "end_turn"}}))
    assert r.of(Withdraw) == [Withdraw("5")]
    assert r.events("tool_result") == [{"tool_use_id": "t", "is_error": True, "content":
                                        "the turn ended before the tool finished"}]
    assert r.driver.answer("5", Answer("allow")) == []


def test_a_failed_prompt_withdraws_its_pending_permission(tmp_path: Path) -> None:
    r = opened(tmp_path)
    r.take(r.driver.prompt(Prompt("go")))
    rid = r.sent[-1]["id"]
    r.take(r.driver.receive({"jsonrpc": "2.0", "id": "p1", "method":
                             "session/request_permission", "params": {
                                 "sessionId": "s1", "toolCall": {"toolCallId": "t"},
                                 "options": []}}))
    r.take(r.driver.receive({"jsonrpc": "2.0", "id": rid, "error": {"code": -32603,
                                                                    "message": "boom"}}))
    assert r.of(Withdraw) == [Withdraw("p1")]
    assert r.of(TurnOver) == [TurnOver("error")]


OPTIONS = [{"optionId": "a1", "kind": "allow_once"}, {"optionId": "aa", "kind": "allow_always"},
           {"optionId": "r1", "kind": "reject_once"}]


@pytest.mark.parametrize(("answer", "picked"), [
    (Answer("allow"), "a1"),
    (Answer("allow", scope="session"), "aa"),
    (Answer("deny"), "r1"),
    (Answer("deny", option_id="aa"), "aa"),  # the person's own pick wins
    (Answer("allow", option_id="nope"), "a1"),
    (Answer("cancelled", option_id="a1"), None),
])
def test_choose_option(answer: Answer, picked: str | None) -> None:
    outcome = choose_option(OPTIONS, answer)["outcome"]
    assert outcome == ({"outcome": "cancelled"} if picked is None
                       else {"outcome": "selected", "optionId": picked})


def test_configure_uses_set_config_option_when_the_agent_lists_a_model_option(
        tmp_path: Path) -> None:
    r = Replay(tmp_path)
    r.take(r.driver.start(None, False))
    r.take(r.driver.receive({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": 1}}))
    r.take(r.driver.receive({"jsonrpc": "2.0", "id": 2, "result": {
        "sessionId": "s1", "configOptions": [{"id": "mdl", "category": "model",
                                              "type": "select", "currentValue": "m1",
                                              "options": [{"value": "m1", "name": "M1"},
                                                          {"value": "m2", "name": "M2"}]}]}}))
    assert [m["id"] for m in r.of(Offer)[0].models] == ["default", "m1", "m2"]
    r.take(r.driver.configure("m2", None))
    assert r.sent[-1]["params"] == {"sessionId": "s1", "configId": "mdl", "value": "m2"}
    assert r.sent[-1]["method"] == "session/set_config_option"


def test_helpers() -> None:
    assert render_diff({"path": "/a/b.txt", "newText": "x\n"}).startswith(
        "--- /dev/null\n+++ b/a/b.txt\n")
    changed = {"path": "/ws/d/b.txt", "oldText": "", "newText": "x\n"}
    assert render_diff(changed, "/ws").startswith("--- a/d/b.txt\n+++ b/d/b.txt\n")
    assert render_diff({**changed, "_meta": {"kind": "add"}}, "/ws").startswith(
        "--- /dev/null\n+++ b/d/b.txt\n")
    assert render_diff(changed, "/elsewhere").startswith("--- a/ws/d/b.txt\n")
    assert usage({"usage": {"inputTokens": 3, "outputTokens": 4}}) == {
        "input_tokens": 3, "output_tokens": 4}
    assert commands([{"name": "x", "input": {"hint": "arg"}}, {"bad": 1}]) == [
        {"name": "x", "description": "", "argument_hint": "arg"}]
    assert error_text({"code": -32603, "message": "Internal error",
                       "data": {"details": "why"}}) == "Internal error: why (code -32603)"
