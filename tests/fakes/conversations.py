"""Claude Code's saved conversations, written as Claude Code 2.1.328 writes them, for tests.

The line shapes are those observed in ``$HOME/.claude/projects/<folder>/<id>.jsonl`` after
``claude -p`` against the fake Messages API (tether/conversations.py lists them): bookkeeping
lines around the conversation, one ``assistant`` line per content block sharing
``message.id``, tool results as ``user`` lines, and ``api-request-blob`` lines that carry a
``message`` with a role yet are not messages.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tether.conversations import project_dir_name

_clock = itertools.count(0)


def _stamp() -> str:
    n = next(_clock)
    return f"2026-12-07T17:{(n // 60) % 60:02d}:{n % 60:02d}.000Z"


def user(text: str | list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"parentUuid": None, "isSidechain": False, "type": "user",
            "message": {"role": "user", "content": text}, "uuid": str(uuid.uuid4()),
            "timestamp": _stamp(), "promptSource": "sdk", "userType": "external",
            "entrypoint": "sdk-cli", "version": "2.1.328", **extra}


def assistant(*blocks: dict[str, Any], message_id: str | None = None,
              **extra: Any) -> list[dict[str, Any]]:
    """One line per block, as the CLI writes them."""
    mid = message_id or f"msg_{uuid.uuid4().hex[:12]}"
    return [{"parentUuid": None, "isSidechain": False, "type": "assistant",
             "message": {"id": mid, "type": "message", "role": "assistant",
                         "model": "claude-opus-5-5", "content": [block],
                         "stop_reason": "end_turn"},
             "uuid": str(uuid.uuid4()), "timestamp": _stamp(), **extra} for block in blocks]


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:8]}", "name": name,
            "input": tool_input}


def tool_result(content: str) -> dict[str, Any]:
    return user([{"tool_use_id": "toolu_x", "type": "tool_result", "content": content,
                  "is_error": False}], toolUseResult={"stdout": content})


def bookkeeping(session_id: str) -> list[dict[str, Any]]:
    """Lines that are not the conversation (observed kinds)."""
    return [
        {"type": "queue-operation", "operation": "enqueue", "timestamp": _stamp(),
         "sessionId": session_id, "content": "not a message"},
        {"type": "attachment", "attachment": {"type": "skill_listing", "content": "x" * 2000},
         "timestamp": _stamp(), "sessionId": session_id},
        {"type": "api-request-blob", "message": {"role": "user",
                                                 "content": [text("<system-reminder>x")]}},
        {"type": "api-request-blob", "message": {"role": "system", "content": "env"}},
        {"type": "last-prompt", "lastPrompt": "not a message", "sessionId": session_id},
    ]


def exchange(prompt: str, reply: str) -> list[dict[str, Any]]:
    return [user(prompt), *assistant(text(reply))]


def save(home: Path, folder: Path | str, lines: Iterable[dict[str, Any] | str | bytes],
         session_id: str | None = None) -> tuple[str, Path]:
    """Write a conversation of ``folder`` under ``home/.claude/projects``; a ``str`` or
    ``bytes`` line is written as it is (a bad line). Returns its id and file."""
    sid = session_id or str(uuid.uuid4())
    directory = home / ".claude" / "projects" / project_dir_name(str(folder))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{sid}.jsonl"
    with path.open("wb") as f:
        for line in lines:
            if isinstance(line, bytes):
                f.write(line)
            elif isinstance(line, str):
                f.write(line.encode("utf-8", "surrogatepass"))
            else:
                f.write(json.dumps({**line, "sessionId": sid}, separators=(",", ":"),
                                   ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n")
    return sid, path
