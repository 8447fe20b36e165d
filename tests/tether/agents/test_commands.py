"""Slash commands (issue 17, item 6) on the real CLI's words: tests/fixtures/claude/slash.jsonl,
recorded from Claude Code 2.1.328 (tests/fakes/record_claude.py ``slash``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tether.agents.catalog import ClaudeAgent, LocalAgent
from tether.agents.claude import translate
from tether.agents.commands import CLAUDE_HEADLESS_REFUSED, command_list
from tether.agents.local import COMMANDS as LOCAL_COMMANDS
from tether.config import Settings

FIXTURES = Path(__file__).parents[2] / "fixtures" / "claude"


def records() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / "slash.jsonl").read_text().splitlines()]


def initialize_commands() -> list[dict[str, Any]]:
    return next(r["msg"]["response"]["response"]["commands"] for r in records()
                if r["msg"]["type"] == "control_response")


def init_names() -> list[str]:
    return next(r["msg"]["slash_commands"] for r in records()
                if r["msg"].get("subtype") == "init")


def turns() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Tether's events for each prompt the recording sent."""
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    prompt = ""
    for record in records():
        message = record["msg"]
        if record["dir"] == "in" and message["type"] == "user":
            prompt = message["message"]["content"]
            out[prompt] = []
        elif record["dir"] == "out" and not message["type"].startswith("control"):
            out[prompt].extend(e for e in translate(message, "claude") if e[0] != "text_delta")
    return out


def test_the_agents_commands_with_their_hints_and_the_refused_ones_marked() -> None:
    commands = command_list(initialize_commands(), init_names(), CLAUDE_HEADLESS_REFUSED)
    by_name = {c["name"]: c for c in commands}
    assert set(init_names()) <= set(by_name)
    model = by_name["model"]
    assert model == {"name": "model", "description": "Set the AI model for Claude Code",
                     "argument_hint": "<model>", "available": True}
    assert by_name["clear"]["aliases"] == ["reset", "new"]
    assert "cost" in by_name["usage"]["aliases"]
    assert by_name["plan"] == {"name": "plan", "description": "", "available": False,
                               "reason": "plan mode is not available headless yet"}
    for name in ("help", "login", "focus"):
        assert by_name[name]["available"] is False and by_name[name]["reason"]
    # Refused ones last; no description runs on (a skill's is 1,500 characters).
    flags = [c["available"] for c in commands]
    assert flags == sorted(flags, reverse=True)
    assert max(len(c["description"]) for c in commands) <= 300


def test_the_refused_list_is_what_the_cli_refused() -> None:
    """The data's source: each refused command the recording sent answered that it isn't
    available, and every such answer is in the list."""
    for prompt, events in turns().items():
        texts = [p["text"] for kind, p in events if kind == "text"]
        refused = any("isn't available" in t for t in texts)
        if prompt.startswith("/"):
            assert refused == (prompt[1:].split()[0] in CLAUDE_HEADLESS_REFUSED), prompt


def test_command_output_is_marked_and_keeps_its_columns() -> None:
    events = turns()
    cost = [p for kind, p in events["/cost"] if kind == "text"]
    assert len(cost) == 1 and cost[0]["command_output"] is True
    assert "Estimated cost:        $" in cost[0]["text"] and "\nUsage:" in cost[0]["text"]
    model = [p for kind, p in events["/model sonnet"] if kind == "text"]
    assert model == [{"text": "Set model to `Sonnet 5.5` for this session only",
                      "command_output": True}]
    # The model's own answers are Markdown as before.
    reply = [p for kind, p in events["Remember banana"] if kind == "text"]
    assert reply and "command_output" not in reply[0]


def test_clear_is_a_context_cleared_event_and_a_new_agent_session() -> None:
    events = turns()
    kinds = [kind for kind, _ in events["/clear"]]
    assert kinds[0] == "context_cleared" and kinds.count("context_cleared") == 1
    assert events["/clear"][0][1] == {"trigger": "clear"}
    before = next(p for k, p in events["Remember banana"] if k == "agent_session")
    after = next(p for k, p in events["Say hello again"] if k == "agent_session")
    assert before["agent_session_id"] != after["agent_session_id"]
    assert not any(k == "context_cleared" for p, ev in events.items() if p != "/clear"
                   for k, _ in ev)


def test_compact_output_sent_as_a_user_message_is_command_output() -> None:
    message = {"type": "user", "message": {
        "role": "user", "content": "<local-command-stdout>Compacted </local-command-stdout>"},
        "isReplay": True}
    assert translate(message, "claude") == [("text", {"text": "Compacted",
                                                      "command_output": True})]


def test_which_agents_refuse_what() -> None:
    settings = Settings.from_env({})
    assert ClaudeAgent(settings).refused_commands is CLAUDE_HEADLESS_REFUSED
    assert LocalAgent(settings).refused_commands == {}
    local = command_list(LOCAL_COMMANDS, None, {})
    assert [c["name"] for c in local] == ["triage", "disk", "memory", "processes", "ask", "help"]
    assert all(c["available"] for c in local)
