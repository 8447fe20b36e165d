"""A turn's cost is its own, the session's sum is beside it (issue 17, item 5).

Claude Code's ``total_cost_usd`` is a running total of its agent session (``/help`` with 0
tokens reported $0.0041; ``/clear`` reset it to $0.00; a process started with ``--resume``
carries it on, tests/fixtures/claude/resume.jsonl). The arithmetic is unit-tested on
:class:`CostMeter`; then real turns of a scripted CLI that keeps its total the same way,
through a session: one process kept across turns, one process per turn, a ``/clear``, a
restart with the SQLite store, and the local agent, which has no model and so no cost.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from tether.agents.base import AgentCatalog
from tether.agents.catalog import LocalAgent
from tether.agents.claude import CostMeter
from tether.config import Settings
from tether.sessions import Session, SessionRegistry


def test_each_turn_costs_the_difference_of_the_running_total() -> None:
    meter = CostMeter()
    assert costs(meter.result(0.0041)) == (0.0041, 0.0041)
    assert costs(meter.result(0.0041)) == (0.0, 0.0041)
    assert costs(meter.result(0.0100)) == (0.0059, 0.01)
    assert meter.result(0.0250) == {"cost_usd": 0.015, "session_cost_usd": 0.025,
                                    "agent_total_cost_usd": 0.025}


def test_a_total_that_went_down_restarted_clear() -> None:
    meter = CostMeter()
    meter.result(0.0041)
    assert costs(meter.result(0.0)) == (0.0, 0.0041)  # /clear
    assert costs(meter.result(0.002)) == (0.002, 0.0061)
    assert costs(meter.result(0.0015)) == (0.0015, 0.0076)  # another /clear, then a turn


def test_a_restored_session_goes_on_from_the_total_in_its_log() -> None:
    meter = CostMeter(session_usd=1.5, last_total=0.75)
    # A resumed Claude Code reports its total carried on: only the growth is this turn's.
    assert meter.result(1.0)["cost_usd"] == 0.25
    assert meter.session_usd == 1.75
    # One that started from zero again (its total went down): all of it is this turn's.
    assert meter.result(0.5) == {"cost_usd": 0.5, "session_cost_usd": 2.25,
                                 "agent_total_cost_usd": 0.5}


def test_no_cost_reported_means_no_cost_fields() -> None:
    meter = CostMeter()
    for total in (None, "0.1", True, float("nan"), float("inf"), -1):
        assert meter.result(total) == {}
    assert meter.session_usd == 0
    assert costs(meter.result(0.1)) == (0.1, 0.1)


def test_float_noise_is_rounded_away() -> None:
    meter = CostMeter()
    meter.result(0.00014000000000000001)
    # The two-turn fixture's totals (tests/fixtures/claude/two_turns.jsonl).
    assert costs(meter.result(0.00028000000000000003)) == (0.00014, 0.00028)


# ---------------------------------------------------------------- through a session

#: A CLI that reports a running total the way Claude Code does: each prompt is a number to
#: add to the total, or "/clear", which resets it; a process started with --resume carries
#: the agent session's total on (kept in a file in its working directory).
COSTED_AGENT = r"""
import json, os, sys
flag, sid = sys.argv[-1].split("=", 1)
saved = f"total-{sid}.txt"
total = float(open(saved).read()) if flag == "--resume" and os.path.exists(saved) else 0.0
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("type") == "control_request":
        print(json.dumps({"type": "control_response", "response": {"subtype": "success",
              "request_id": msg["request_id"], "response": {}}}), flush=True)
    elif msg.get("type") == "user":
        text = msg["message"]["content"]
        total = 0.0 if text == "/clear" else total + float(text)
        print(json.dumps({"type": "system", "subtype": "init", "session_id": sid,
              "model": "costed", "cwd": "."}), flush=True)
        open(saved, "w").write(repr(total))
        print(json.dumps({"type": "result", "subtype": "success", "is_error": False,
              "result": "ok", "total_cost_usd": total,
              "usage": {"input_tokens": 10, "output_tokens": 5,
                        "cache_read_input_tokens": 100, "service_tier": "standard"}}),
              flush=True)
"""


class CostedAgent:
    name = "costed"
    description = "test"

    def unavailable(self) -> str | None:
        return None

    def argv(self, agent_session_id: str, resume: bool) -> list[str]:
        flag = "--resume" if resume else "--session-id"
        return [sys.executable, "-c", COSTED_AGENT, f"{flag}={agent_session_id}"]

    def env(self) -> dict[str, str]:
        return dict(os.environ)


def registry(data_dir: Path, **settings: Any) -> SessionRegistry:
    config = Settings.from_env({"data_dir": data_dir, "local_word_delay_seconds": 0,
                                "cancel_grace_seconds": 1, **settings})
    return SessionRegistry(config, agents=AgentCatalog([LocalAgent(config), CostedAgent()]))


def run(session: Session, text: str) -> dict[str, Any]:
    """One turn; its ``result`` event's payload."""
    after = session.log.last_id
    session.submit(text)
    assert session.wait_idle(20), "the turn did not end"
    results = [dict(e.payload) for e in session.log.read_after(after) if e.kind == "result"]
    assert len(results) == 1
    return results[0]


def costs(result: dict[str, Any]) -> tuple[Any, Any]:
    return result.get("cost_usd"), result.get("session_cost_usd")


def test_turns_of_one_process_cost_their_own_share(tmp_path: Path) -> None:
    core = registry(tmp_path, agent_idle_seconds=60)
    try:
        session = core.create(agent="costed")
        assert costs(run(session, "0.0041")) == (0.0041, 0.0041)
        assert costs(run(session, "0.0059")) == (0.0059, 0.01)
        assert costs(run(session, "/clear")) == (0.0, 0.01)
        assert costs(run(session, "0.002")) == (0.002, 0.012)
    finally:
        core.shutdown()


def test_one_process_per_turn_resumes_the_total(tmp_path: Path) -> None:
    core = registry(tmp_path, agent_idle_seconds=0)
    try:
        session = core.create(agent="costed")
        assert costs(run(session, "0.003")) == (0.003, 0.003)
        assert costs(run(session, "0.005")) == (0.005, 0.008)
    finally:
        core.shutdown()


def test_the_session_sum_survives_a_restart_with_the_sqlite_store(tmp_path: Path) -> None:
    core = registry(tmp_path, store="sqlite", agent_idle_seconds=60)
    session = core.create(agent="costed")
    run(session, "0.25")
    run(session, "0.5")
    core.shutdown()
    core = registry(tmp_path, store="sqlite", agent_idle_seconds=60)
    try:
        restored = core.get(session.id)
        # A new process resumes the agent session and its total (0.875): the log's newest
        # result says the total was 0.75, so this turn cost 0.125.
        assert costs(run(restored, "0.125")) == (0.125, 0.875)
    finally:
        core.shutdown()


def test_the_local_agent_reports_no_cost_at_all(tmp_path: Path) -> None:
    core = registry(tmp_path)
    try:
        session = core.create(agent="local")
        result = run(session, "hello")
        assert "cost_usd" not in result and "session_cost_usd" not in result
        assert result["usage"]["output_tokens"] > 0  # a result all the same
    finally:
        core.shutdown()
