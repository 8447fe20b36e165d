"""The conversation so far, as plain text, from a session's own log.

For an agent that cannot restore its own history (an ACP agent without ``session/load``, or
whose load failed: PROTOCOLS.md 4.3), the first prompt to its new conversation carries this
recap, so the model still sees the earlier turns (issue 19, item 3).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tether.stores.base import Event

#: Characters of recap at most: the newest turns are kept, the oldest dropped first.
RECAP_CHARS = 60_000


def recap(events: Iterable[Event], limit_chars: int = RECAP_CHARS) -> str | None:
    """``User: …`` / ``Assistant: …`` paragraphs for every turn before the newest ``user``
    event (the prompt being sent now), oldest first, from ``user``, ``text`` and ``history``
    events; at most ``limit_chars`` characters (the oldest paragraphs dropped, the cut said).
    None when there is nothing before the newest prompt.
    """
    entries: list[tuple[str, str]] = []
    replies: list[str] = []
    for event in events:
        payload: dict[str, Any] = event.payload
        if event.kind == "user":
            _close(entries, replies)
            entries.append(("User", str(payload.get("text", ""))))
        elif event.kind == "text" and not payload.get("command_output"):
            replies.append(str(payload.get("text", "")))
        elif event.kind == "history" and payload.get("text"):
            _close(entries, replies)
            role = "User" if payload.get("role") == "user" else "Assistant"
            entries.append((role, str(payload["text"])))
    # The newest user entry is the prompt being sent; what follows it is not history yet.
    newest = max((i for i, (role, _) in enumerate(entries) if role == "User"), default=None)
    if newest is None or newest == 0:
        return None
    paragraphs = [f"{role}: {text.strip()}" for role, text in entries[:newest] if text.strip()]
    kept: list[str] = []
    size = 0
    for paragraph in reversed(paragraphs):
        if size + len(paragraph) > limit_chars:
            kept.append("[earlier turns left out]")
            break
        kept.append(paragraph)
        size += len(paragraph) + 2
    return "\n\n".join(reversed(kept)) or None


def _close(entries: list[tuple[str, str]], replies: list[str]) -> None:
    if replies:
        entries.append(("Assistant", "\n\n".join(replies)))
        replies.clear()
