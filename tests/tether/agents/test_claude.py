"""Translation of Claude Code's stream-json into Tether events, on transcripts recorded from
the real CLI (2.1.328, tests/fixtures/claude, see tests/fakes/README.md), and the answers
Tether writes back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tether.agents.claude import (
    control_request,
    permission_response,
    session_flag,
    translate,
    user_message,
)
from tether.agents.driver import Answer

FIXTURES = Path(__file__).parents[2] / "fixtures" / "claude"


def transcript(name: str) -> list[dict[str, Any]]:
    lines = (FIXTURES / f"{name}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def events_of(name: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for record in transcript(name):
        message = record["msg"]
        if record["dir"] == "out" and not message["type"].startswith("control"):
            out.extend(translate(message, "claude"))
    return out


def test_text_reply_streams_deltas_then_the_full_text_then_result() -> None:
    events = events_of("text")
    kinds = [k for k, _ in events]
    assert kinds[0] == "agent_session"
    assert kinds[-1] == "result"
    deltas = "".join(p["text"] for k, p in events if k == "text_delta")
    texts = [p["text"] for k, p in events if k == "text"]
    assert texts and deltas == texts[0]
    session = events[0][1]
    assert session["agent"] == "claude" and session["agent_session_id"]
    assert session["model"] and session["cwd"]


def test_tool_use_and_result_are_translated() -> None:
    events = events_of("tool_allow")
    tool_use = next(p for k, p in events if k == "tool_use")
    assert tool_use["name"] == "Bash"
    assert "touch" in tool_use["input"]["command"]
    result = next(p for k, p in events if k == "tool_result")
    assert result["tool_use_id"] == tool_use["tool_use_id"]
    assert result["is_error"] is False and "touched" in result["content"]


def test_denied_tool_gives_an_error_tool_result_with_the_message() -> None:
    result = next(p for k, p in events_of("tool_deny") if k == "tool_result")
    assert result["is_error"] is True
    assert "denied from the web UI" in result["content"]


def test_tool_results_carry_who_decided_their_permission() -> None:
    allowed = next(p for k, p in events_of("tool_allow") if k == "tool_result")
    assert allowed["permission"] == {"decision": "accept", "source": "user_temporary"}
    denied = next(p for k, p in events_of("tool_deny") if k == "tool_result")
    assert denied["permission"] == {"decision": "reject", "source": "user_reject"}


def test_a_call_claude_code_allowed_by_its_own_rules_says_config() -> None:
    message = {"type": "user",
               "message": {"content": [{"type": "tool_result", "tool_use_id": "toolu_9",
                                        "content": "ok", "is_error": False},
                                       {"type": "tool_result", "tool_use_id": "toolu_10",
                                        "content": "x", "is_error": False}]},
               "tool_result_meta": [{"id": "toolu_9", "permission_decision": {
                   "decision": "accept", "source": "config", "reason_type": "rule"}},
                   {"id": "toolu_10", "non_execution_kind": "x"}, "junk",
                   {"id": "toolu_11", "permission_decision": {"decision": 1, "source": "x"}}]}
    assert translate(message, "claude") == [
        ("tool_result", {"tool_use_id": "toolu_9", "content": "ok", "is_error": False,
                         "permission": {"decision": "accept", "source": "config"}}),
        ("tool_result", {"tool_use_id": "toolu_10", "content": "x", "is_error": False})]


def test_result_carries_usage_and_duration_and_leaves_the_cost_to_the_meter() -> None:
    result = next(p for k, p in events_of("tool_allow") if k == "result")
    assert result["is_error"] is False
    assert isinstance(result["duration_ms"], int)
    # total_cost_usd is the process's running total: the runner's CostMeter makes it the
    # turn's cost (tests/tether/test_costs.py); passed on as is, it would read as the turn's.
    assert "cost_usd" not in result
    assert "input_tokens" in result["usage"]
    assert result["text"]


def test_api_error_is_a_result_with_is_error() -> None:
    events = events_of("api_error")
    result = next(p for k, p in events if k == "result")
    assert result["is_error"] is True and "API Error: 400" in result["text"]
    assert any(k == "text" and "API Error" in p["text"] for k, p in events)


def test_interrupt_ends_with_an_error_during_execution_result() -> None:
    results = [p for k, p in events_of("interrupt") if k == "result"]
    assert results[0]["subtype"] == "error_during_execution"
    assert results[0]["is_error"] is True


def test_system_init_repeats_every_turn() -> None:
    kinds = [k for k, _ in events_of("two_turns")]
    assert kinds.count("agent_session") == 2 and kinds.count("result") == 2


@pytest.mark.parametrize("message, expected", [
    ({"type": "assistant", "message": {"content": [{"type": "thinking", "thinking": "hmm",
                                                    "signature": "x"}]}},
     [("thinking", {"text": "hmm"})]),
    ({"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t",
                                               "content": [{"type": "text", "text": "a"},
                                                           {"type": "image"}]}]}},
     [("tool_result", {"tool_use_id": "t", "content": "a\n[image]", "is_error": False})]),
    ({"type": "user", "message": {"content": "[Request interrupted by user for tool use]"}}, []),
    ({"type": "system", "subtype": "status", "status": "requesting"}, []),
    ({"type": "stream_event", "event": {"type": "content_block_delta", "index": 1,
                                        "delta": {"type": "input_json_delta",
                                                  "partial_json": "{"}}}, []),
    ({"type": "rate_limit_event"}, []),
    ({"type": "assistant", "message": None}, []),
])
def test_translate_edge_cases(message: dict[str, Any], expected: list[Any]) -> None:
    assert translate(message, "claude") == expected


def test_every_recorded_line_translates_without_error() -> None:
    for path in FIXTURES.glob("*.jsonl"):
        for record in transcript(path.stem):
            if record["dir"] == "out":
                translate(record["msg"], "claude")


REQUEST = {"subtype": "can_use_tool", "tool_name": "Bash",
           "input": {"command": "touch x", "description": "make x"}, "tool_use_id": "toolu_1"}


def test_allow_echoes_the_original_input() -> None:
    body = permission_response(REQUEST, Answer("allow"))
    assert body == {"behavior": "allow", "updatedInput": REQUEST["input"]}


def test_allow_with_edited_input_and_session_rule() -> None:
    rule = {"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "touch *"}],
            "behavior": "allow", "destination": "session"}
    body = permission_response(REQUEST, Answer("allow",
                                               updated_input={"command": "touch y"},
                                                   updated_permissions=[rule]))
    assert body == {"behavior": "allow", "updatedInput": {"command": "touch y"},
                    "updatedPermissions": [rule]}


def test_deny_always_has_a_message() -> None:
    assert permission_response(REQUEST, Answer("deny", message="no")) == {
        "behavior": "deny", "message": "no"}
    assert permission_response(REQUEST, Answer("deny"))["message"]


def test_ask_user_question_answer_is_input_plus_answers() -> None:
    recorded = next(r["msg"]["request"] for r in transcript("ask")
                    if r["msg"]["type"] == "control_request"
                    and r["msg"]["request"]["subtype"] == "can_use_tool")
    question = recorded["input"]["questions"][0]["question"]
    body = permission_response(recorded, Answer("allow",
                                                answers={question: "SQLite"}))
    assert body["behavior"] == "allow"
    assert body["updatedInput"]["questions"] == recorded["input"]["questions"]
    assert body["updatedInput"]["answers"] == {question: "SQLite"}
    # The very shape the real CLI accepted in the recording:
    sent = next(r["msg"] for r in transcript("ask") if r["dir"] == "in"
                and r["msg"]["type"] == "control_response")
    assert sent["response"]["response"]["updatedInput"]["answers"] == {question: "SQLite"}


def test_builders_use_sdk_shapes() -> None:
    assert session_flag("abc", resume=False) == "--session-id=abc"
    assert session_flag("abc", resume=True) == "--resume=abc"
    assert user_message("hi") == {"type": "user", "message": {"role": "user", "content": "hi"},
                                  "parent_tool_use_id": None, "session_id": ""}
    request = control_request("interrupt")
    assert request["request"] == {"subtype": "interrupt"}
    assert request["request_id"].startswith("req_")
