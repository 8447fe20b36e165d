"""A fake Anthropic Messages API for tests: standard library only, loopback only.

Usage::

    def script(body: dict) -> Reply:
        if last_tool_result(body) is None:
            return tool_reply("I'll run it.", "Bash", {"command": "touch x", "description": "x"})
        return text_reply("Done.")

    with FakeAnthropic(script) as api:
        env["ANTHROPIC_BASE_URL"] = api.base_url  # "http://127.0.0.1:PORT"
        ...                                       # api.requests: bodies of POST /v1/messages

Routes: ``POST /v1/messages`` (any query string, e.g. ``?beta=true``) calls ``script(body)``
and answers with SSE, or with one JSON message unless the body has ``"stream": true``.
``POST /v1/messages/count_tokens`` answers ``{"input_tokens": N}``; anything else is a 404
JSON error. A script that raises gets a 400 ``invalid_request_error`` and the exception is kept
in ``api.errors`` (do not "fix" this to 500: the CLI retries 5xx, which only slows a test down).

Protocol sources:

- SSE event order and payloads (``message_start``, ``content_block_start|delta|stop``,
  ``text_delta``, ``input_json_delta``, ``message_delta``, ``message_stop``) and the error body
  ``{"type":"error","error":{"type","message"}}``: docs.anthropic.com/en/api/messages-streaming,
  docs.anthropic.com/en/api/errors.
- ``partial_json`` split over two deltas and ``cache_*_input_tokens: 0`` in ``usage``: the shape
  Claude Code 2.1.328 accepts [obs, /work/shared/PROTOCOLS.md section 5.1, tests/fakes/README.md].
- ``AskUserQuestion`` input ``{"questions": [{question, header, options: [{label, description}],
  multiSelect}]}``: Claude Code 2.1.328 ``sdk-tools.d.ts`` (PROTOCOLS.md section 2.4).
- ``{"role": "system"}`` items and ``<system-reminder>`` text blocks in ``messages``: observed
  from Claude Code 2.1.328 (tests/fakes/README.md).
"""

from __future__ import annotations

import itertools
import json
import typing as t
from dataclasses import dataclass, field

from .sse_server import Body, Exchange, FakeModelApi

Script = t.Callable[[Body], "Reply"]
Frame = tuple[str, Body]
REMINDER = "<system-reminder>"
_ids = itertools.count(1)


@dataclass(frozen=True)
class Reply:
    """One scripted answer; ``blocks`` are final content blocks (``text`` or ``tool_use``).

    :param status: HTTP status; anything but 200 sends ``error`` as the JSON body.
    :param delay_seconds: hold the response open this long, after ``message_start`` when
        streaming, before anything otherwise; cut short when the server closes.
    """

    blocks: list[Body] = field(default_factory=list)
    stop_reason: str = "end_turn"
    status: int = 200
    error: Body | None = None
    delay_seconds: float = 0.0


def text_reply(text: str, *, delay_seconds: float = 0.0) -> Reply:
    return Reply([{"type": "text", "text": text}], "end_turn", delay_seconds=delay_seconds)


def tool_reply(
    text: str, name: str, tool_input: Body, *, tool_id: str | None = None,
    delay_seconds: float = 0.0,
) -> Reply:
    """A ``tool_use`` block (``stop_reason: tool_use``), after a ``text`` block unless empty."""
    blocks = [{"type": "text", "text": text}] if text else []
    block_id = tool_id or f"toolu_fake_{next(_ids):04d}"
    blocks.append({"type": "tool_use", "id": block_id, "name": name, "input": tool_input})
    return Reply(blocks, "tool_use", delay_seconds=delay_seconds)


def ask_reply(questions: list[Body], text: str = "", **kw: t.Any) -> Reply:
    """An ``AskUserQuestion`` call; a question is ``{question, header, options, multiSelect}``."""
    return tool_reply(text, "AskUserQuestion", {"questions": questions}, **kw)


def error_reply(
    status: int = 400, message: str = "fake error", kind: str = "invalid_request_error",
) -> Reply:
    error = {"type": "error", "error": {"type": kind, "message": message}}
    return Reply(status=status, error=error)


def _texts(message: Body) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    return [b.get("text", "") for b in content or [] if b.get("type") == "text"]


def all_user_texts(body: Body) -> list[str]:
    """Every user text block in ``body["messages"]``, ``<system-reminder>`` blocks left out."""
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    return [s for m in users for s in _texts(m) if not s.lstrip().startswith(REMINDER)]


def first_user_text(body: Body) -> str:
    """The first user text that is not a ``<system-reminder>``, or ``""``."""
    return next(iter(all_user_texts(body)), "")


def last_tool_result(body: Body) -> Body | None:
    """The ``tool_result`` block of the last message, or None when it holds none.

    Trailing ``{"role": "system"}`` items are skipped: Claude Code appends one after the tool
    result when the user sent a message mid-turn. After an interrupt the canned tool result,
    ``[Request interrupted by user for tool use]`` and the next prompt share one user message,
    so look at ``all_user_texts(body)[-1]`` too.
    """
    messages = [m for m in body.get("messages", []) if m.get("role") != "system"] or [{}]
    content = messages[-1].get("content")
    if not isinstance(content, list):
        return None
    return next((b for b in content if b.get("type") == "tool_result"), None)


def tool_result_text(block: Body) -> str:
    """The text of a ``tool_result`` block, whose ``content`` is a string or a block list."""
    content = block.get("content", "")
    return content if isinstance(content, str) else "".join(_texts(block))


def _block_frames(index: int, block: Body) -> list[Frame]:
    if block["type"] == "tool_use":
        start = {**block, "input": {}}
        raw = json.dumps(block["input"])
        parts = (raw[: len(raw) // 2], raw[len(raw) // 2 :])
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in parts]
    else:
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": block["text"]}]
    return [
        ("content_block_start",
         {"type": "content_block_start", "index": index, "content_block": start}),
        *(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
          for d in deltas),
        ("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


def message(reply: Reply, model: str, *, final: bool) -> Body:
    """The message object: empty for ``message_start``, complete when ``final``."""
    usage = {"input_tokens": 10, "output_tokens": 5 if final else 1,
             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    return {"id": f"msg_fake_{next(_ids):04d}", "type": "message", "role": "assistant",
            "model": model, "content": reply.blocks if final else [],
            "stop_reason": reply.stop_reason if final else None, "stop_sequence": None,
            "usage": usage}


def sse_frames(reply: Reply, model: str) -> list[Frame]:
    """The ``(event name, data)`` frames of a streamed ``reply``, in order."""
    stop = {"stop_reason": reply.stop_reason, "stop_sequence": None}
    return [
        ("message_start", {"type": "message_start", "message": message(reply, model, final=False)}),
        *(f for i, block in enumerate(reply.blocks) for f in _block_frames(i, block)),
        ("message_delta", {"type": "message_delta", "delta": stop, "usage": {"output_tokens": 5}}),
        ("message_stop", {"type": "message_stop"}),
    ]


class FakeAnthropic(FakeModelApi[Reply]):
    """The Messages API on a free ``127.0.0.1`` port (tests/fakes/sse_server.py), inside
    ``with``; ``api.requests`` holds the bodies of ``POST /v1/messages``."""

    not_found_kind = "not_found_error"
    error_reply = staticmethod(error_reply)

    def post(self, http: Exchange, path: str, raw: bytes) -> None:
        body = t.cast(Body, json.loads(raw or b"{}"))
        if path == "/v1/messages/count_tokens":
            http.send_json(200, {"input_tokens": max(1, len(json.dumps(body)) // 4)})
        elif path == "/v1/messages":
            self._messages(http, body, self.answer(body))
        else:
            http.send_not_found()

    def _messages(self, http: Exchange, body: Body, reply: Reply) -> None:
        model = str(body.get("model", "claude-fake"))
        if reply.status != 200:
            http.send_json(reply.status, reply.error, reply.delay_seconds)
        elif body.get("stream") is not True:
            http.send_json(200, message(reply, model, final=True), reply.delay_seconds)
        else:
            http.send_sse(sse_frames(reply, model), reply.delay_seconds)
