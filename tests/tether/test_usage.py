"""Tokens and cost per turn and per session (issue 18, item 6): the ``result`` event's
``usage`` and ``session_usage``, the session object's ``usage``, and totals that survive a
restart."""

from __future__ import annotations

from pathlib import Path

from tests.tether.test_costs import registry, run
from tether.usage import TOKEN_KEYS, UsageMeter, turn_usage


def test_a_turns_usage_keeps_the_counts_and_drops_the_rest() -> None:
    usage = turn_usage({"input_tokens": 12, "output_tokens": 3.0, "cache_read_input_tokens": -1,
                        "cache_creation_input_tokens": True, "service_tier": "x"}, 0.5)
    assert usage == {"input_tokens": 12, "output_tokens": 3, "cache_read_input_tokens": 0,
                     "cache_creation_input_tokens": 0, "cost_usd": 0.5}
    assert turn_usage(None) == {**{key: 0 for key in TOKEN_KEYS}, "cost_usd": None}
    assert turn_usage({"input_tokens": float("nan")}, "1")["input_tokens"] == 0
    assert turn_usage({}, "1")["cost_usd"] is None


def test_the_meter_sums_turns_and_takes_the_sessions_cost() -> None:
    meter = UsageMeter()
    meter.add(turn_usage({"input_tokens": 10, "output_tokens": 2}), 0.1)
    totals = meter.add(turn_usage({"input_tokens": 5, "cache_read_input_tokens": 7}), 0.3)
    assert totals == {"input_tokens": 15, "output_tokens": 2, "cache_read_input_tokens": 7,
                      "cache_creation_input_tokens": 0, "cost_usd": 0.3}
    totals["input_tokens"] = 0  # a copy: the meter keeps its own
    assert UsageMeter(meter.totals).totals["input_tokens"] == 15
    assert UsageMeter().add(turn_usage({"output_tokens": 1}))["cost_usd"] is None


def test_each_result_carries_its_turn_and_the_session_so_far(tmp_path: Path) -> None:
    core = registry(tmp_path, agent_idle_seconds=60)
    try:
        session = core.create(agent="costed")
        assert session.to_dict()["usage"] == {**{key: 0 for key in TOKEN_KEYS},
                                              "cost_usd": None}
        first = run(session, "0.25")
        assert first["usage"] == {"input_tokens": 10, "output_tokens": 5,
                                  "cache_read_input_tokens": 100,
                                  "cache_creation_input_tokens": 0, "cost_usd": 0.25}
        second = run(session, "0.5")
        assert second["session_usage"] == {"input_tokens": 20, "output_tokens": 10,
                                           "cache_read_input_tokens": 200,
                                           "cache_creation_input_tokens": 0, "cost_usd": 0.75}
        assert session.to_dict()["usage"] == second["session_usage"]
    finally:
        core.shutdown()


def test_the_totals_survive_a_restart(tmp_path: Path) -> None:
    core = registry(tmp_path, store="sqlite", agent_idle_seconds=60)
    session = core.create(agent="costed")
    run(session, "0.25")
    core.shutdown()
    core = registry(tmp_path, store="sqlite", agent_idle_seconds=60)
    try:
        restored = core.get(session.id)
        assert restored.to_dict()["usage"]["input_tokens"] == 10
        assert run(restored, "0.5")["session_usage"]["input_tokens"] == 20
        assert restored.to_dict()["usage"]["cost_usd"] == 0.75
    finally:
        core.shutdown()


def test_the_local_agent_counts_tokens_but_no_cost(tmp_path: Path) -> None:
    core = registry(tmp_path)
    try:
        session = core.create(agent="local")
        result = run(session, "hello")
        assert result["usage"]["output_tokens"] > 0 and result["usage"]["cost_usd"] is None
        assert session.to_dict()["usage"]["cost_usd"] is None
    finally:
        core.shutdown()
