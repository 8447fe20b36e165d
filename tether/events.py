"""Events: the unit of a session's log, encoded once when appended (DESIGN.md rule 3).

Envelope (DESIGN.md section 3)::

    {"id": 17, "session_id": "…", "ts": 1763900000.123, "kind": "text_delta", …payload}

``id`` is the per-session event id (1, 2, 3 … with no gaps), ``ts`` is Unix time in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

#: Every kind a session's log may hold (DESIGN.md section 3).
KINDS: Final = frozenset(
    {
        "user",
        "agent_session",
        "text_delta",
        "text",
        "thinking",
        "tool_use",
        "tool_result",
        "approval_request",
        "approval_resolved",
        "clarify_request",
        "clarify_resolved",
        "result",
        "error",
        "turn_end",
        # docs/protocol.md, "Queued prompts": a prompt queued while a turn ran, and the end of
        # its wait (sent as a turn of its own, or removed by a person).
        "prompt_queued",
        "prompt_dequeued",
        # docs/protocol.md, "Slash commands": the agent's commands, and /clear's answer.
        "commands",
        "context_cleared",
        # docs/protocol.md, "Model and permission mode": a change, and who made it.
        "mode",
        "model",
        # docs/protocol.md, "Conversations started elsewhere": a continued conversation's
        # earlier entries, read-only, before the session's first turn.
        "history",
        # docs/protocol.md, "Plans": the agent's plan as a whole list (ACP ``plan``).
        "plan",
    }
)

#: Envelope keys that a payload may not overwrite.
ENVELOPE_KEYS: Final = frozenset({"id", "session_id", "ts", "kind"})

#: ``turn_end`` reasons (DESIGN.md section 3).
TURN_END_REASONS: Final = ("completed", "cancelled", "timeout", "error", "interrupted")


@dataclass(frozen=True, slots=True)
class Event:
    """One appended event. ``data`` is the UTF-8 JSON envelope every transport sends as is."""

    id: int
    session_id: str
    ts: float
    kind: str
    payload: Mapping[str, Any]
    data: bytes

    def as_dict(self) -> dict[str, Any]:
        """The envelope as a fresh dict (for JSON bodies that embed events)."""
        return {"id": self.id, "session_id": self.session_id, "ts": self.ts, "kind": self.kind,
                **self.payload}


def encode(envelope: Mapping[str, Any]) -> bytes:
    """Serialize an envelope to compact JSON bytes.

    ``ensure_ascii`` keeps the bytes pure ASCII: U+2028/2029, C1 controls and lone surrogates
    travel as ``\\uXXXX`` escapes, so no transport can split or reject a line.

    :raises ValueError: NaN or infinity in the payload (not JSON, RFC 8259 section 6).
    :raises TypeError: a value that is not JSON-serializable.
    """
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def make_event(event_id: int, session_id: str, ts: float, kind: str,
               payload: Mapping[str, Any]) -> Event:
    """Build and encode an event.

    :raises ValueError: an unknown ``kind``, or a payload key that clashes with the envelope.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    clash = ENVELOPE_KEYS.intersection(payload)
    if clash:
        raise ValueError(f"payload may not set envelope keys {sorted(clash)}")
    ts = round(ts, 3)
    envelope = {"id": event_id, "session_id": session_id, "ts": ts, "kind": kind, **payload}
    return Event(event_id, session_id, ts, kind, dict(payload), encode(envelope))
