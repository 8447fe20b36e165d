"""Tokens and cost: a turn's, from its ``result`` event, and the session's running totals
(issue 18, item 6).

Claude Code's ``result`` message carries the turn's ``usage`` (the Messages API's token
counts summed over the turn's requests: ``input_tokens``, ``output_tokens``,
``cache_read_input_tokens``, ``cache_creation_input_tokens``; PROTOCOLS.md 1.3) and a
running ``total_cost_usd`` that :class:`tether.agents.claude.CostMeter` turns into the
turn's cost. Tether puts both on the ``result`` event as ``usage`` (:func:`turn_usage`) and
the session's totals so far as ``session_usage``, so a restored session takes its totals
back from its log's newest ``result`` (:mod:`tether.recovery`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: The token counts Tether keeps, per turn and per session.
TOKEN_KEYS = ("input_tokens", "output_tokens", "cache_read_input_tokens",
              "cache_creation_input_tokens")


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value < 0:
        return 0
    return int(value)


def turn_usage(raw: Any, cost_usd: Any = None) -> dict[str, Any]:
    """A turn's ``usage``: the :data:`TOKEN_KEYS` counts from the agent's ``raw`` usage
    (missing or bad ones 0) and ``cost_usd`` (dollars; None when the agent reports no
    cost)."""
    source = raw if isinstance(raw, Mapping) else {}
    usage: dict[str, Any] = {key: _count(source.get(key)) for key in TOKEN_KEYS}
    usage["cost_usd"] = cost_usd if isinstance(cost_usd, int | float) \
        and not isinstance(cost_usd, bool) else None
    return usage


class UsageMeter:
    """A session's totals: tokens summed over its turns, and its cost (None until a turn
    reports one).

    :param totals: what a restored session had (a ``session_usage`` of its log).
    """

    def __init__(self, totals: Mapping[str, Any] | None = None) -> None:
        self.totals = turn_usage(totals or {}, (totals or {}).get("cost_usd"))

    def add(self, usage: Mapping[str, Any], session_cost_usd: Any = None) -> dict[str, Any]:
        """Add a turn's :func:`turn_usage`; ``session_cost_usd``: the session's cost so far
        as the cost meter has it. Returns a copy of the new totals."""
        for key in TOKEN_KEYS:
            self.totals[key] += _count(usage.get(key))
        if isinstance(session_cost_usd, int | float) and not isinstance(session_cost_usd, bool):
            self.totals["cost_usd"] = round(float(session_cost_usd), 10)
        return dict(self.totals)
