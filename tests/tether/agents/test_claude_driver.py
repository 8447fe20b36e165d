"""ClaudeDriver, message by message, from recorded Claude Code 2.1.328 output
(tests/fixtures/claude/): no process, no registry, no log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.tether.agents.test_claude import transcript
from tether.agents.claude_driver import ClaudeDriver
from tether.agents.commands import CLAUDE_HEADLESS_REFUSED
from tether.agents.driver import (
    Action,
    Answer,
    Ask,
    DriverContext,
    Emit,
    Offer,
    Prompt,
    Send,
    Started,
    TurnOver,
    Withdraw,
)


def driver(**context: Any) -> ClaudeDriver:
    context.setdefault("refused_commands", CLAUDE_HEADLESS_REFUSED)
    return ClaudeDriver(DriverContext(agent="claude", workspace=Path("/srv/work"), **context))


def replay(name: str, claude: ClaudeDriver | None = None) -> tuple[ClaudeDriver, list[Action]]:
    """Every stdout message of a recording through one driver (its own ``initialize`` id
    taken from the recording, so the answer to it is recognised)."""
    claude = claude or driver()
    claude.start(None, False)
    actions: list[Action] = []
    for record in transcript(name):
        message = record["msg"]
        if record["dir"] == "in" and message.get("request", {}).get("subtype") == "initialize":
            claude._initialize_id = message["request_id"]
        if record["dir"] == "out":
            actions.extend(claude.receive(message))
    return claude, actions


def kinds(actions: list[Action]) -> list[str]:
    return [a.kind for a in actions if isinstance(a, Emit)]


def test_start_sends_initialize_and_is_ready_at_once() -> None:
    claude = driver()
    sent = claude.start("abc", resume=False)
    assert claude.ready
    assert [type(a) for a in sent] == [Send]
    message = sent[0].message  # type: ignore[union-attr]
    assert message["type"] == "control_request"
    assert message["request"] == {"subtype": "initialize", "hooks": None}


def test_a_text_turn_names_the_session_streams_text_and_ends_completed() -> None:
    _, actions = replay("text")
    started = [a for a in actions if isinstance(a, Started)]
    assert started and started[0].agent_session_id
    emitted = kinds(actions)
    assert emitted[0] == "agent_session" and emitted[-1] == "result"
    assert "text_delta" in emitted and "text" in emitted
    assert actions[-1] == TurnOver("completed")
    # The commands come after the agent_session event, from initialize + system/init.
    offer = next(a for a in actions if isinstance(a, Offer) and a.commands)
    assert actions.index(offer) > next(i for i, a in enumerate(actions)
                                       if isinstance(a, Emit) and a.kind == "agent_session")
    assert any(c["name"] == "help" and not c["available"] for c in offer.commands or ())


def test_the_result_carries_the_running_total_for_the_runner() -> None:
    _, actions = replay("text")
    result = next(a for a in actions if isinstance(a, Emit) and a.kind == "result")
    assert isinstance(result.payload["total_cost_usd"], float)


def test_initialize_answer_offers_the_models() -> None:
    _, actions = replay("text")
    offers = [a for a in actions if isinstance(a, Offer) and a.models]
    assert offers and any(m.get("default") for m in offers[0].models or ())


def test_an_api_error_ends_the_turn_as_an_error() -> None:
    _, actions = replay("api_error")
    assert actions[-1] == TurnOver("error")


def test_can_use_tool_asks_for_approval_and_the_answer_is_the_sdk_shape() -> None:
    claude, actions = replay("tool_allow")
    ask = next(a for a in actions if isinstance(a, Ask))
    assert ask.kind == "approval" and ask.fields["tool_name"] == "Bash"
    assert "touch" in ask.fields["input"]["command"]
    assert ask.fields["tool_use_id"]
    [reply] = claude.answer(ask.token, Answer("allow"))
    body = reply.message["response"]  # type: ignore[union-attr]
    assert body["request_id"] == ask.token
    assert body["response"] == {"behavior": "allow", "updatedInput": ask.fields["input"]}
    assert claude.answer(ask.token, Answer("allow")) == []  # answered once


def test_a_cancelled_request_gets_no_answer() -> None:
    """The SDK writes nothing for a request withdrawn or cut short by an interrupt
    (PROTOCOLS.md 2.1, 2.3)."""
    claude, actions = replay("tool_allow")
    ask = next(a for a in actions if isinstance(a, Ask))
    assert claude.answer(ask.token, Answer("cancelled")) == []


def test_ask_user_question_is_a_clarify_request() -> None:
    _, actions = replay("ask")
    ask = next(a for a in actions if isinstance(a, Ask))
    assert ask.kind == "clarify"
    assert ask.fields["questions"][0]["question"]


def test_a_withdrawn_request_is_withdrawn_once() -> None:
    claude = driver()
    request = {"type": "control_request", "request_id": "r1",
               "request": {"subtype": "can_use_tool", "tool_name": "Bash",
                           "input": {"command": "touch x"}, "tool_use_id": "t1"}}
    assert isinstance(claude.receive(request)[0], Ask)
    cancel = {"type": "control_cancel_request", "request_id": "r1"}
    assert claude.receive(cancel) == [Withdraw("r1")]
    assert claude.receive(cancel) == []


def test_an_unknown_control_request_is_refused_not_ignored() -> None:
    [reply] = driver().receive({"type": "control_request", "request_id": "r9",
                                "request": {"subtype": "mcp_message"}})
    response = reply.message["response"]  # type: ignore[union-attr]
    assert response["subtype"] == "error" and response["request_id"] == "r9"


def test_exit_plan_mode_approval_carries_the_plan_shown_before_it() -> None:
    claude = driver()
    claude.receive({"type": "assistant", "message": {"content": [
        {"type": "tool_use", "id": "tp", "name": "ExitPlanMode",
         "input": {"plan": "1. fix it"}}]}})
    [ask] = claude.receive({"type": "control_request", "request_id": "r2", "request": {
        "subtype": "can_use_tool", "tool_name": "ExitPlanMode", "input": {},
        "tool_use_id": "tp"}})
    assert isinstance(ask, Ask) and ask.fields["plan"] == "1. fix it"


def test_interrupt_is_the_control_request() -> None:
    [sent] = driver().interrupt()
    assert sent.message["request"] == {"subtype": "interrupt"}  # type: ignore[union-attr]


def test_prompt_with_images_puts_them_before_the_text() -> None:
    [sent] = driver().prompt(Prompt("look", [{"media_type": "image/png", "data": "AAAA"}]))
    content = sent.message["message"]["content"]  # type: ignore[union-attr]
    assert content == [{"type": "image", "source": {"type": "base64",
                                                    "media_type": "image/png", "data": "AAAA"}},
                       {"type": "text", "text": "look"}]
    [plain] = driver().prompt(Prompt("hi"))
    assert plain.message["message"]["content"] == "hi"  # type: ignore[union-attr]


def test_a_refused_mode_change_says_so_and_names_the_mode_kept() -> None:
    claude = driver(permission_mode="default")
    [sent] = claude.configure(None, "plan")
    request_id = sent.message["request_id"]  # type: ignore[union-attr]
    actions = claude.receive({"type": "control_response", "response": {
        "subtype": "error", "request_id": request_id, "error": "invalid_mode"}})
    assert kinds(actions) == ["error", "mode"]
    assert actions[1] == Emit("mode", {"permission_mode": "default", "by": "agent"})


def test_a_mode_the_agent_takes_by_itself_is_reported_once() -> None:
    claude = driver(permission_mode="plan")
    status = {"type": "system", "subtype": "status", "permissionMode": "default"}
    assert claude.receive(status) == [Emit("mode", {"permission_mode": "default",
                                                     "by": "agent"})]
    assert claude.receive(status) == []


def test_a_mode_asked_for_is_not_reported_back_as_the_agents() -> None:
    claude = driver(permission_mode="default")
    claude.configure(None, "acceptEdits")
    status = {"type": "system", "subtype": "status", "permissionMode": "acceptEdits"}
    assert claude.receive(status) == []


def test_set_model_without_a_model_goes_back_to_the_default() -> None:
    [sent] = driver().configure("default", None)
    assert sent.message["request"] == {"subtype": "set_model"}  # type: ignore[union-attr]
    [sent] = driver().configure("opus", None)
    assert sent.message["request"] == {"subtype": "set_model",  # type: ignore[union-attr]
                                       "model": "opus"}
