"""The ACP driver with a process: tests/fixtures/acp_agent.py, a scripted agent that follows
the ACP schema where Gemini CLI does not (history replayed before ``session/load``'s reply,
``current_mode_update``), started as a ``TETHER_AGENT_SERVERS`` entry."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acp_process import AcpProcess
from tether.agents.agent_servers import AcpServerAgent, load_agent_servers
from tether.agents.driver import Answer, Offer, Started, TurnOver

AGENT = Path(__file__).parents[2] / "fixtures" / "acp_agent.py"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def spec(tmp_path: Path) -> AcpServerAgent:
    servers = tmp_path / "agents.json"
    servers.write_text(json.dumps({"scripted": {
        "command": sys.executable, "args": [str(AGENT), "--state", str(tmp_path / "state")],
        "env": {"PYTHONUNBUFFERED": "1"}}}))
    agent, = load_agent_servers(servers)
    return agent


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


def process(spec: AcpServerAgent, workspace: Path, transcript: str | None = None
            ) -> AcpProcess:
    return AcpProcess(spec.argv("unused", False), spec.env(), workspace, transcript,
                      agent=spec.name)


@pytest.fixture
def agent(spec: AcpServerAgent, workspace: Path) -> Iterator[AcpProcess]:
    with process(spec, workspace) as p:
        p.start()
        yield p


def test_a_text_turn_with_a_thought_and_a_plan(agent: AcpProcess) -> None:
    assert agent.turn("[think] [plan] hello") == TurnOver("completed")
    assert agent.events("thinking") == [{"text": "Thinking it over."}]
    assert agent.events("plan") == [{"entries": [
        {"content": "Look around", "priority": "high", "status": "completed"},
        {"content": "Make the change", "priority": "medium", "status": "pending"}]}]
    assert agent.events("result")[0]["text"] == "You said: [think] [plan] hello"
    commands = next(o.commands for o in agent.of(Offer) if o.commands)
    assert commands == [{"name": "echo", "description": "Say it back",
                         "argument_hint": "words"}]


def test_allowed_tool_writes_through_the_driver(agent: AcpProcess, workspace: Path) -> None:
    agent.prompt("[tool]")
    ask = agent.ask()
    assert ask.fields["diff"].startswith("--- /dev/null\n+++ b/")
    assert [e["tool_use_id"] for e in agent.events("tool_use")] == ["call_1"]  # not twice
    agent.answer(ask, Answer("allow"))
    assert agent.turn_over() == TurnOver("completed")
    assert (workspace / "made.txt").read_text() == "made\n"
    assert agent.events("tool_result")[0]["is_error"] is False


def test_rejected_tool_writes_nothing(agent: AcpProcess, workspace: Path) -> None:
    agent.prompt("[tool]")
    agent.answer(agent.ask(), Answer("deny"))
    assert agent.turn_over() == TurnOver("completed")
    assert not (workspace / "made.txt").exists()
    assert [r["is_error"] for r in agent.events("tool_result")] == [True]


def test_stop_with_a_permission_pending_ends_the_turn_cancelled_once(
        agent: AcpProcess) -> None:
    agent.prompt("[tool]")
    agent.ask()
    agent.interrupt()
    assert agent.turn_over() == TurnOver("cancelled")
    assert agent.turn("after") == TurnOver("completed")
    assert agent.of(TurnOver) == [TurnOver("cancelled"), TurnOver("completed")]


def test_stop_mid_turn(agent: AcpProcess) -> None:
    agent.prompt("[slow]")
    agent.until(lambda a: isinstance(a, Started))
    agent.interrupt()
    assert agent.turn_over() == TurnOver("cancelled")


def test_reads_outside_the_workspace_are_refused(agent: AcpProcess, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    assert agent.turn("[read ../secret.txt]") == TurnOver("completed")
    text = agent.events("result")[0]["text"]
    assert "-32602" in text and "outside" in text and '"secret"' not in text


def test_stop_reasons_and_a_failed_prompt(agent: AcpProcess) -> None:
    assert agent.turn("[max]") == TurnOver("completed")
    assert "token limit" in agent.events("result")[0]["text"]
    assert agent.turn("[fail]") == TurnOver("error")
    assert "scripted failure" in agent.events("error")[0]["message"]


def test_mode_change_is_confirmed_by_the_agent_without_a_second_event(
        agent: AcpProcess) -> None:
    agent.turn("hi")
    agent.apply(agent.driver.configure(None, "plan"))
    agent.turn("again")
    assert agent.events("mode") == []  # the agent's current_mode_update matched the ask
    agent.apply(agent.driver.configure(None, "nope"))
    agent.until(lambda a: getattr(a, "kind", None) == "mode")
    assert agent.events("mode") == [{"permission_mode": "plan", "by": "agent"}]


def test_a_new_process_loads_the_session_and_drops_its_replay(
        spec: AcpServerAgent, workspace: Path) -> None:
    with process(spec, workspace) as first:
        first.start()
        first.turn("Remember banana")
        sid = first.of(Started)[0].agent_session_id
    with process(spec, workspace) as second:
        second.start(sid, resume=True)
        assert second.turn("[history]") == TurnOver("completed")
        assert second.of(Started) == [Started(sid)]
        assert [e["text"] for e in second.events("text")] == [
            "Earlier: Remember banana"]  # the replayed "You said: ..." is not output
        assert second.events("error") == []


def test_an_unknown_session_falls_back_with_the_transcript(
        spec: AcpServerAgent, workspace: Path) -> None:
    with process(spec, workspace, transcript="user: Remember banana") as p:
        p.start("no-such-session", resume=True)
        assert p.turn("[history]") == TurnOver("completed")
        assert "could not be restored" in p.events("error")[0]["message"]
        p.turn("[history]")
        assert "user: Remember banana" in p.events("result")[-1]["text"]


def test_the_spec_starts_the_entrys_command(spec: AcpServerAgent) -> None:
    assert spec.unavailable() is None
    assert spec.argv("any", True)[:2] == [sys.executable, str(AGENT)]
    assert spec.env()["PYTHONUNBUFFERED"] == "1"
