"""Recovery at start: what a session's log says, and closing what a dead server left open.

With a durable store a session comes back after a restart with its log. If the server died
during a turn (SIGKILL, a crash, a power loss), the log shows a ``user`` event with no
``turn_end``, and maybe approvals or questions that nobody resolved. :func:`close_interrupted`
appends what the server would have written had it stopped gracefully: each open request
resolved with ``reason: "cancelled"`` (the payloads :class:`tether.prompts.PromptRegistry`
writes), then ``turn_end`` with ``reason: "interrupted"`` (DESIGN.md rules 5 and 6), with the
next ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tether.stores.base import EventLog

#: The ``message`` of requests a restart cancelled.
RESTART_MESSAGE = "The server restarted during the turn."
#: Events read per page while scanning a log.
SCAN_PAGE = 1000


@dataclass
class LogState:
    """What a log says about its session.

    ``turns``: the newest turn number in a ``user`` event (0: none). ``open_turn``: a turn
    with a ``user`` event and no ``turn_end`` (None: none). ``pending``: ``(kind,
    request_id)`` of requests with no resolved event, oldest first (``kind`` is ``approval``
    or ``clarify``). ``agent_session_id``: from the newest ``agent_session`` event (None: the
    agent never reported one, so its session was never started). ``queued``: ``(queue_id,
    text, images)`` of prompts queued and neither sent nor removed, in queue order (``images``
    as the ``prompt_queued`` event holds them: :mod:`tether.images` references).
    ``session_cost_usd`` and ``agent_total_cost_usd``: the session's spend so far and the
    agent's running total, from the newest ``result`` that carries them (0 and None: none
    does). ``session_usage``: the session's token and cost totals from the newest ``result``
    that carries them (:mod:`tether.usage`; None: none does). ``model`` and
    ``permission_mode``: from the newest ``model`` / ``mode`` event (None: none), which the
    record may not hold yet (the agent left Plan mode in a turn a dead server did not finish).
    """

    turns: int = 0
    open_turn: int | None = None
    pending: list[tuple[str, str]] = field(default_factory=list)
    agent_session_id: str | None = None
    queued: list[tuple[str, str, list[Any]]] = field(default_factory=list)
    session_cost_usd: float = 0.0
    agent_total_cost_usd: float | None = None
    session_usage: dict[str, Any] | None = None
    model: str | None = None
    permission_mode: str | None = None


def scan(log: EventLog) -> LogState:
    """Read the whole log, a page at a time, and sum it up."""
    state = LogState()
    pending: dict[str, str] = {}  # request_id -> kind, in insertion (log) order
    queued: dict[str, tuple[str, list[Any]]] = {}  # queue_id -> (text, images), queue order
    after = 0
    while True:
        page = log.read_after(after, SCAN_PAGE)
        if not page:
            break
        for event in page:
            payload = event.payload
            if event.kind == "user":
                turn = int(payload.get("turn") or 0)
                state.turns = max(state.turns, turn)
                state.open_turn = turn
            elif event.kind == "turn_end":
                if payload.get("turn") == state.open_turn:
                    state.open_turn = None
            elif event.kind in ("approval_request", "clarify_request"):
                pending[str(payload.get("request_id"))] = event.kind.split("_")[0]
            elif event.kind in ("approval_resolved", "clarify_resolved"):
                pending.pop(str(payload.get("request_id")), None)
            elif event.kind == "prompt_queued":
                images = payload.get("images")
                queued[str(payload.get("queue_id"))] = (str(payload.get("text", "")),
                                                        images if isinstance(images, list) else [])
            elif event.kind == "prompt_dequeued":
                queued.pop(str(payload.get("queue_id")), None)
            elif event.kind == "mode" and isinstance(payload.get("permission_mode"), str):
                state.permission_mode = payload["permission_mode"]
            elif event.kind == "model" and isinstance(payload.get("model"), str):
                state.model = payload["model"]
            elif event.kind == "agent_session" and payload.get("agent_session_id"):
                state.agent_session_id = str(payload["agent_session_id"])
                total = payload.get("agent_total_cost_usd")  # a continued conversation's
                if isinstance(total, int | float) and not isinstance(total, bool):
                    state.agent_total_cost_usd = float(total)
            elif event.kind == "result" and isinstance(payload.get("session_usage"), dict):
                state.session_usage = dict(payload["session_usage"])
            if event.kind == "result" and isinstance(payload.get("session_cost_usd"),
                                                     int | float):
                state.session_cost_usd = float(payload["session_cost_usd"])
                total = payload.get("agent_total_cost_usd")
                state.agent_total_cost_usd = float(total) if isinstance(total, int | float) \
                    else None
        after = page[-1].id
    state.pending = [(kind, request_id) for request_id, kind in pending.items()]
    state.queued = [(queue_id, text, images) for queue_id, (text, images) in queued.items()]
    return state


def close_interrupted(log: EventLog, state: LogState, message: str = RESTART_MESSAGE) -> int:
    """Resolve ``state.pending`` as cancelled, then end ``state.open_turn`` as interrupted.

    :returns: how many events were appended (0 when the log was already complete).
    """
    appended = 0
    for kind, request_id in state.pending:
        payload: dict[str, Any] = {"request_id": request_id, "reason": "cancelled", "by": None}
        if kind == "approval":
            payload.update(decision="deny", message=message, updated_input=None,
                           updated_permissions=None)
        else:
            payload.update(answers={}, message=message)
        log.append(f"{kind}_resolved", payload)
        appended += 1
    if state.open_turn is not None:
        log.append("turn_end", {"turn": state.open_turn, "reason": "interrupted"})
        appended += 1
    state.pending = []
    state.open_turn = None
    return appended
