"""A fake Gemini API (``generativelanguage``, v1beta) for tests: standard library only, loopback.

Usage::

    def script(body: dict) -> Reply:
        if last_function_response(body) is None:
            return shell_reply("I'll run it.", "touch x", "make x")
        return text_reply("Done.")

    with FakeGemini(script) as api:
        env["GOOGLE_GEMINI_BASE_URL"] = api.base_url  # "http://127.0.0.1:PORT"
        ...                                           # api.requests: bodies of the POSTs

Routes: ``POST /v1beta/models/<model>:streamGenerateContent`` (any query string; Gemini CLI
sends ``?alt=sse``) calls ``script(body)`` and answers with SSE;
``POST /v1beta/models/<model>:generateContent`` answers the same reply as one JSON object;
anything else is a 404 JSON error. ``api.models`` records the ``<model>`` of each call. A
script that raises gets a 400 ``INVALID_ARGUMENT`` and the exception is kept in ``api.errors``
(not a 500: the CLI retries 5xx and 429, which only slows a test down).

Protocol sources:

- SSE frames ``data: {"candidates": [{"content": {"role": "model", "parts": [...]},
  "index": 0}]}`` and a blank line; the last adds ``finishReason: "STOP"`` and
  ``usageMetadata``; a tool call is a part ``{"functionCall": {"name", "args"}}`` and the next
  request carries a ``functionResponse`` part: /work/shared/PROTOCOLS.md section 5.3
  [observed with gemini 0.61.0].
- A thought is a text part with ``"thought": true`` and the error body is
  ``{"error": {"code", "message", "status"}}``: ai.google.dev/api/generate-content and
  ai.google.dev/gemini-api/docs/troubleshooting.
- ``run_shell_command {command, description}`` and ``write_file {file_path, content}`` are
  Gemini CLI's own tool names and arguments (``packages/core/src/tools/shell.ts``,
  ``write-file.ts``; observed with gemini 0.61.0, tests/fixtures/gemini/).
"""

from __future__ import annotations

import json
import typing as t
from dataclasses import dataclass, field

from .sse_server import Body, Exchange, FakeModelApi

Script = t.Callable[[Body], "Reply"]


@dataclass(frozen=True)
class Reply:
    """One scripted answer: ``parts`` of the model's content, streamed one part per frame.

    :param status: HTTP status; anything but 200 sends ``error`` as the JSON body.
    :param delay_seconds: hold the stream open this long after the first frame (before
        anything when ``status`` is not 200); cut short when the server closes.
    """

    parts: list[Body] = field(default_factory=list)
    finish_reason: str = "STOP"
    status: int = 200
    error: Body | None = None
    delay_seconds: float = 0.0


def text_reply(text: str, *, thought: str = "", delay_seconds: float = 0.0) -> Reply:
    """A text answer (split over two frames), after a thought part unless ``thought`` is
    empty."""
    parts: list[Body] = [{"text": thought, "thought": True}] if thought else []
    half = len(text) // 2
    parts += [{"text": p} for p in (text[:half], text[half:]) if p]
    return Reply(parts, delay_seconds=delay_seconds)


def call_reply(text: str, name: str, args: Body, *, delay_seconds: float = 0.0) -> Reply:
    """A ``functionCall`` part, after a text part unless ``text`` is empty."""
    parts: list[Body] = [{"text": text}] if text else []
    parts.append({"functionCall": {"name": name, "args": args}})
    return Reply(parts, delay_seconds=delay_seconds)


def shell_reply(text: str, command: str, description: str = "", **kw: t.Any) -> Reply:
    """Gemini CLI's ``run_shell_command {command, description}``."""
    return call_reply(text, "run_shell_command",
                      {"command": command, "description": description}, **kw)


def write_file_reply(text: str, path: str, content: str, **kw: t.Any) -> Reply:
    """Gemini CLI's ``write_file {file_path, content}`` (``file_path`` absolute)."""
    return call_reply(text, "write_file", {"file_path": path, "content": content}, **kw)


def error_reply(status: int = 400, message: str = "fake error",
                kind: str = "INVALID_ARGUMENT") -> Reply:
    return Reply(status=status, error={"error": {"code": status, "message": message,
                                                 "status": kind}})


def _parts(content: Body) -> list[Body]:
    parts = content.get("parts")
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def all_user_texts(body: Body) -> list[str]:
    """Every text part of ``role: user`` contents, in order (the CLI's ``<session_context>``
    block included: it is a text part of the first user content)."""
    return [p["text"] for c in body.get("contents", []) if c.get("role") == "user"
            for p in _parts(c) if isinstance(p.get("text"), str)]


def last_user_text(body: Body) -> str:
    """The newest user text part, or ``""``."""
    texts = all_user_texts(body)
    return texts[-1] if texts else ""


def last_function_response(body: Body) -> Body | None:
    """The ``functionResponse`` of the last content (``{"name", "response", "id"?}``), or None
    when the last content holds none."""
    contents = body.get("contents") or [{}]
    return next((p["functionResponse"] for p in _parts(contents[-1])
                 if isinstance(p.get("functionResponse"), dict)), None)


def chunks(reply: Reply) -> list[Body]:
    """The ``GenerateContentResponse`` chunks of ``reply``, in order; the last carries
    ``finishReason`` and ``usageMetadata``."""
    frames = [[p] for p in reply.parts] or [[{"text": ""}]]
    out: list[Body] = []
    for i, parts in enumerate(frames):
        candidate: Body = {"content": {"role": "model", "parts": parts}, "index": 0}
        chunk: Body = {"candidates": [candidate]}
        if i == len(frames) - 1:
            candidate["finishReason"] = reply.finish_reason
            chunk["usageMetadata"] = {"promptTokenCount": 11, "candidatesTokenCount": 4,
                                      "totalTokenCount": 15}
        out.append(chunk)
    return out


def whole(reply: Reply) -> Body:
    """The reply as one ``GenerateContentResponse`` (``:generateContent``)."""
    first = chunks(reply)[-1]
    first["candidates"][0]["content"]["parts"] = reply.parts or [{"text": ""}]
    return first


class FakeGemini(FakeModelApi[Reply]):
    """The Gemini API on a free ``127.0.0.1`` port (tests/fakes/sse_server.py), inside
    ``with``; ``api.requests`` holds the bodies of the model POSTs and ``api.models`` the
    ``<model>`` of each, in the same order."""

    not_found_kind = "NOT_FOUND"
    error_reply = staticmethod(error_reply)

    def __init__(self, script: Script) -> None:
        super().__init__(script)
        self.models: list[str] = []

    def post(self, http: Exchange, path: str, raw: bytes) -> None:
        body = t.cast(Body, json.loads(raw or b"{}"))
        prefix, _, method = path.rpartition(":")
        if not prefix.startswith("/v1beta/models/") or method not in (
                "streamGenerateContent", "generateContent"):
            return http.do_GET()
        reply = self.answer(body)
        self.models.append(prefix.removeprefix("/v1beta/models/"))
        if reply.status != 200:
            http.send_json(reply.status, reply.error, reply.delay_seconds)
        elif method == "generateContent":
            http.send_json(200, whole(reply), reply.delay_seconds)
        else:
            http.send_sse(((None, chunk) for chunk in chunks(reply)), reply.delay_seconds)
