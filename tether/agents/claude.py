"""Claude Code's stream-json + control protocol: messages in, Tether events out.

Facts are from PROTOCOLS.md (Claude Code 2.1.328): section 1.3 for stdout events, section 2
for the control protocol. :func:`translate` is pure: one stdout message in, a list of
``(kind, payload)`` pairs out (DESIGN.md section 3); anything Tether does not show is dropped.
The builders produce the lines Tether writes to the CLI's stdin.
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections.abc import Mapping
from typing import Any

from tether.agents.driver import Answer

Translated = list[tuple[str, dict[str, Any]]]

#: The flags every stream-json agent gets (PROTOCOLS.md 1.1; ``--verbose`` is required).
STREAM_JSON_FLAGS = (
    "-p", "--output-format", "stream-json", "--input-format", "stream-json", "--verbose",
    "--permission-prompt-tool", "stdio", "--include-partial-messages",
)

#: The tool Claude Code uses to ask the user a question (PROTOCOLS.md 2.4).
ASK_USER_QUESTION = "AskUserQuestion"

_request_numbers = itertools.count(1)


def session_flag(agent_session_id: str, resume: bool) -> str:
    """``--session-id=<uuid>`` for a new agent session, ``--resume=<id>`` to continue one.

    The equals form keeps an id that starts with ``-`` from becoming a flag (PROTOCOLS.md 1.1).
    """
    return f"--resume={agent_session_id}" if resume else f"--session-id={agent_session_id}"


# -- stdout -> events ----------------------------------------------------------------------

def translate(message: Mapping[str, Any], agent: str) -> Translated:
    """Tether events for one stdout message (not for control messages).

    :param agent: the agent's name, reported in ``agent_session``.
    """
    kind = message.get("type")
    if kind == "system" and message.get("subtype") == "init":
        # permission_mode: the mode the agent reports it runs in (its own word, checked by
        # the tests against what Tether asked for).
        return [("agent_session", {"agent": agent, "agent_session_id": message.get("session_id"),
                                   "model": message.get("model"), "cwd": message.get("cwd"),
                                   "permission_mode": message.get("permissionMode")})]
    if kind == "conversation_reset":
        # The CLI's answer to /clear (PROTOCOLS.md 7): a new conversation, nothing of the old
        # one kept; its next system/init carries the new session id.
        trigger = message.get("trigger")
        return [("context_cleared", {"trigger": trigger if isinstance(trigger, str) else None})]
    if kind == "stream_event":
        return _stream_event(message.get("event") or {})
    if kind == "assistant":
        return _assistant(message.get("message") or {},
                          command_output="local_command_source" in message)
    if kind == "user":
        return _command_stdout(message) or _tool_results(message)
    if kind == "result":
        return [("result", _result(message))]
    return []


def _stream_event(event: Mapping[str, Any]) -> Translated:
    delta = event.get("delta") or {}
    if event.get("type") == "content_block_delta" and delta.get("type") == "text_delta":
        return [("text_delta", {"text": str(delta.get("text", "")),
                                "index": event.get("index", 0)})]
    return []


def _assistant(message: Mapping[str, Any], command_output: bool = False) -> Translated:
    """``command_output``: the text is a slash command's output (the CLI marks it with
    ``local_command_source``, PROTOCOLS.md 7): text laid out in columns, not Markdown, so the
    ``text`` event says ``command_output: true`` and the page keeps it preformatted."""
    out: Translated = []
    for block in _blocks(message.get("content")):
        btype = block.get("type")
        if btype == "text":
            payload: dict[str, Any] = {"text": str(block.get("text", ""))}
            if command_output:
                payload["command_output"] = True
            out.append(("text", payload))
        elif btype == "thinking":
            out.append(("thinking", {"text": str(block.get("thinking", ""))}))
        elif btype == "tool_use":
            out.append(("tool_use", {"tool_use_id": block.get("id"), "name": block.get("name"),
                                     "input": block.get("input") or {}}))
    return out


_STDOUT_OPEN, _STDOUT_CLOSE = "<local-command-stdout>", "</local-command-stdout>"


def _command_stdout(message: Mapping[str, Any]) -> Translated:
    """A slash command's output sent as a user message (``/compact``: ``<local-command-stdout>
    Compacted </local-command-stdout>``, PROTOCOLS.md 7) as command output text."""
    body = message.get("message")
    content = body.get("content") if isinstance(body, Mapping) else None
    if not isinstance(content, str):
        return []
    text = content.strip()
    if not (text.startswith(_STDOUT_OPEN) and text.endswith(_STDOUT_CLOSE)):
        return []
    inner = text[len(_STDOUT_OPEN):-len(_STDOUT_CLOSE)].strip()
    return [("text", {"text": inner, "command_output": True})] if inner else []


def _tool_results(message: Mapping[str, Any]) -> Translated:
    """``tool_result`` events, each with the CLI's ``permission`` decision when it reported
    one (``tool_result_meta``, PROTOCOLS.md 1.3): ``source`` ``config`` means Claude Code's
    own rules decided (its settings' allow and deny rules, its permission mode) and nobody
    was asked; ``user_temporary`` / ``user_reject`` are Tether's answers; ``hook``, a hook's."""
    decisions = _permission_decisions(message.get("tool_result_meta"))
    body = message.get("message")
    out: Translated = []
    for block in _blocks(body.get("content") if isinstance(body, Mapping) else None):
        if block.get("type") == "tool_result":
            payload = {"tool_use_id": block.get("tool_use_id"),
                       "content": _flatten(block.get("content")),
                       "is_error": bool(block.get("is_error", False))}
            decision = decisions.get(str(block.get("tool_use_id")))
            if decision:
                payload["permission"] = decision
            out.append(("tool_result", payload))
    return out


def _permission_decisions(meta: Any) -> dict[str, dict[str, str]]:
    """``{tool_use_id: {"decision", "source"}}`` from a ``tool_result_meta`` list; only those
    two fields, and only when both are strings."""
    found: dict[str, dict[str, str]] = {}
    for item in meta if isinstance(meta, list) else []:
        decision = item.get("permission_decision") if isinstance(item, Mapping) else None
        if (isinstance(decision, Mapping) and isinstance(decision.get("decision"), str)
                and isinstance(decision.get("source"), str)):
            found[str(item.get("id"))] = {"decision": decision["decision"],
                                          "source": decision["source"]}
    return found


def _result(message: Mapping[str, Any]) -> dict[str, Any]:
    # "success" may still carry is_error: true (an API error, PROTOCOLS.md 1.3). The cost is
    # not here: total_cost_usd is a running total, which only the runner can turn into the
    # turn's own cost (CostMeter).
    return {"is_error": bool(message.get("is_error", False)),
            "subtype": message.get("subtype"),
            "text": message.get("result") if isinstance(message.get("result"), str) else "",
            "duration_ms": message.get("duration_ms"),
            "usage": message.get("usage") or {},
            "num_turns": message.get("num_turns"),
            "terminal_reason": message.get("terminal_reason")}


class CostMeter:
    """What a session's turns cost, from Claude Code's running total.

    A ``result``'s ``total_cost_usd`` is a running total, not the turn's cost: ``/help`` with
    0 tokens reported $0.0041 (the turns before it). It belongs to the agent session: a
    process started with ``--resume`` carries it on (observed with 2.1.328,
    tests/fixtures/claude/resume.jsonl: 0.00014 then 0.00028 across two processes), and
    ``/clear`` resets it to $0.00. So a turn's own cost is this total minus the previous
    one; when there is no previous one, or the total went down (``/clear``, or a process
    that did not get the total back), this total whole is the turn's.

    One meter per session (its agent host); the runner calls :meth:`result` for each
    ``result``. A restored session starts with what its log's newest ``result`` says.

    :param session_usd: the sum of the session's turns so far.
    :param last_total: the CLI's running total at the session's newest ``result``.
    """

    def __init__(self, session_usd: float = 0.0, last_total: float | None = None) -> None:
        self.session_usd = session_usd
        self.last_total = last_total

    def result(self, total: Any) -> dict[str, float]:
        """The cost fields of a ``result`` event for a CLI running total of ``total``:
        ``cost_usd`` (this turn), ``session_cost_usd`` (the session so far) and
        ``agent_total_cost_usd`` (``total`` as reported, for the next restore). None of them
        when the agent reports no cost (the ``local`` agent has no model): absent, not 0."""
        if isinstance(total, bool) or not isinstance(total, int | float) \
                or not math.isfinite(total) or total < 0:
            return {}
        last = self.last_total
        turn = total if last is None or total < last else total - last
        self.last_total = total
        self.session_usd += turn
        # Rounded: differences of binary floats print as 0.00014000000000000001.
        return {"cost_usd": round(turn, 10), "session_cost_usd": round(self.session_usd, 10),
                "agent_total_cost_usd": total}


def _blocks(content: Any) -> list[Mapping[str, Any]]:
    if isinstance(content, list):
        return [b for b in content if isinstance(b, Mapping)]
    return []


def _flatten(content: Any) -> str:
    """A tool_result's content as text: a string, or the text of its blocks."""
    if isinstance(content, str):
        return content
    parts = []
    for block in _blocks(content):
        if block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            parts.append(f"[{block.get('type', 'block')}]")
    return "\n".join(parts)


# -- host -> stdin ------------------------------------------------------------------------

def new_request_id() -> str:
    """An id for a request Tether sends: the SDK's ``req_{n}_{8 hex}`` (PROTOCOLS.md 2.1)."""
    return f"req_{next(_request_numbers)}_{secrets.token_hex(4)}"


def user_message(content: str | list[dict[str, Any]]) -> dict[str, Any]:
    """One user turn (PROTOCOLS.md 1.2): its text, or Messages API content blocks (images
    before the text: :func:`tether.images.content_blocks`)."""
    return {"type": "user", "message": {"role": "user", "content": content},
            "parent_tool_use_id": None, "session_id": ""}


def control_request(subtype: str, **fields: Any) -> dict[str, Any]:
    """A host-to-CLI control request: ``initialize``, ``interrupt`` … (PROTOCOLS.md 2.2, 2.5)."""
    return {"type": "control_request", "request_id": new_request_id(),
            "request": {"subtype": subtype, **fields}}


def control_success(request_id: str, response: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "control_response",
            "response": {"subtype": "success", "request_id": request_id,
                         "response": dict(response)}}


def control_error(request_id: str, error: str) -> dict[str, Any]:
    return {"type": "control_response",
            "response": {"subtype": "error", "request_id": request_id, "error": error,
                         "error_code": "unsupported_request"}}


def permission_response(request: Mapping[str, Any], resolution: Answer) -> dict[str, Any]:
    """The answer to a ``can_use_tool`` request (PROTOCOLS.md 2.3, 2.4).

    ``allow`` always carries ``updatedInput`` (without it the CLI treats the answer as a deny,
    PROTOCOLS.md section 6); for AskUserQuestion it is the original input plus ``answers``
    keyed by question text. ``deny`` always carries a message.

    :param request: the ``request`` object of the CLI's control request.
    """
    original = request.get("input") or {}
    if resolution.decision == "allow":
        if request.get("tool_name") == ASK_USER_QUESTION:
            updated: dict[str, Any] = {**original, "answers": dict(resolution.answers or {})}
        else:
            updated = dict(resolution.updated_input or original)
        body: dict[str, Any] = {"behavior": "allow", "updatedInput": updated}
        if resolution.updated_permissions:
            body["updatedPermissions"] = list(resolution.updated_permissions)
        return body
    message = resolution.message or "The user denied this from Tether."
    return {"behavior": "deny", "message": message}
