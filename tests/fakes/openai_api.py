"""A fake OpenAI Responses API for tests: standard library only, loopback only.

Usage::

    def script(body: dict) -> Reply:
        if last_function_output(body) is None:
            return command_reply("I'll make it.", "touch x")
        return text_reply("Done.")

    with FakeOpenAI(script) as api:
        ...  # point Codex at api.base_url + "/v1" (codex_config_toml); api.requests: bodies

Routes: ``POST /v1/responses`` calls ``script(body)`` and answers with SSE (each frame an
``event:`` and a ``data:`` line, then a blank line); a reply whose ``status`` is not 200 is
sent as one JSON error body. Anything else is a 404 JSON error. A script that raises gets a
400 and the exception is kept in ``api.errors`` (do not "fix" this to 500: Codex retries 5xx
with backoff, which only slows a test down).

Protocol sources:

- ``POST /v1/responses`` as SSE, with ``response.created``, ``response.output_item.done``
  (items ``message`` / ``function_call`` / ``reasoning``) and ``response.completed`` carrying
  ``usage {input_tokens, input_tokens_details.cached_tokens, output_tokens,
  output_tokens_details, total_tokens}``: /work/shared/PROTOCOLS.md section 5.2 [src
  ``responses.rs``].
- ``response.output_item.added`` + ``response.output_text.delta`` before the ``done`` of a
  message (what makes ``item/agentMessage/delta`` notifications): the Responses streaming
  reference (platform.openai.com/docs/api-reference/responses-streaming), checked with codex
  0.171.0 (tests/fixtures/codex/text.jsonl).
- The ``exec_command`` function tool with arguments ``{cmd, sandbox_permissions?:
  "require_escalated", justification?}``, offered to an unknown model name: PROTOCOLS.md 5.2.
- The ``apply_patch`` tool and the request body's shape (``input`` items ``message`` /
  ``function_call`` / ``function_call_output``, ``store: false``): observed with codex 0.171.0
  (tests/fakes/README.md).
"""

from __future__ import annotations

import itertools
import json
import typing as t
from dataclasses import dataclass, field

from .sse_server import Body, Exchange, FakeModelApi

Script = t.Callable[[Body], "Reply"]
Frame = tuple[str, Body]
_ids = itertools.count(1)


@dataclass(frozen=True)
class Reply:
    """One scripted answer: ``items`` are final output items (``message``, ``function_call``,
    ``custom_tool_call``, ``reasoning``), streamed in order.

    :param status: HTTP status; anything but 200 sends ``error`` as the JSON body.
    :param delay_seconds: hold the stream open this long after ``response.created`` (before
        anything when ``status`` is not 200); cut short when the server closes.
    :param usage: ``response.completed``'s usage; None: a small fixed one.
    """

    items: list[Body] = field(default_factory=list)
    status: int = 200
    error: Body | None = None
    delay_seconds: float = 0.0
    usage: Body | None = None


def _next_id(prefix: str) -> str:
    return f"{prefix}_fake_{next(_ids):04d}"


def message_item(text: str) -> Body:
    return {"type": "message", "role": "assistant", "id": _next_id("msg"), "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def text_reply(text: str, *, delay_seconds: float = 0.0) -> Reply:
    """An assistant message (streamed as two ``output_text.delta`` halves, then ``done``)."""
    return Reply([message_item(text)], delay_seconds=delay_seconds)


def function_call_item(name: str, arguments: Body, call_id: str | None = None) -> Body:
    return {"type": "function_call", "id": _next_id("fc"), "call_id": call_id or _next_id("call"),
            "name": name, "arguments": json.dumps(arguments), "status": "completed"}


def command_reply(
    text: str, cmd: str, justification: str | None = None, *, call_id: str | None = None,
    delay_seconds: float = 0.0,
) -> Reply:
    """A message ``text`` (unless empty), then an ``exec_command`` call ``{"cmd": cmd}``; with
    ``justification`` also ``sandbox_permissions: "require_escalated"`` (what makes
    ``approvalPolicy: "on-request"`` ask, PROTOCOLS.md 3.3)."""
    arguments: Body = {"cmd": cmd}
    if justification is not None:
        arguments.update(sandbox_permissions="require_escalated", justification=justification)
    items = [message_item(text)] if text else []
    items.append(function_call_item("exec_command", arguments, call_id))
    return Reply(items, delay_seconds=delay_seconds)


def patch_reply(text: str, patch: str, *, call_id: str | None = None) -> Reply:
    """A message ``text`` (unless empty), then an ``apply_patch`` custom tool call whose
    ``input`` is ``patch`` (``*** Begin Patch`` … ``*** End Patch``), the freeform form codex
    0.171.0 offers an unknown model (tests/fakes/README.md)."""
    items = [message_item(text)] if text else []
    items.append({"type": "custom_tool_call", "id": _next_id("ctc"),
                  "call_id": call_id or _next_id("call"), "name": "apply_patch", "input": patch,
                  "status": "completed"})
    return Reply(items)


def reasoning_item(text: str) -> Body:
    return {"type": "reasoning", "id": _next_id("rs"),
            "summary": [{"type": "summary_text", "text": text}], "content": None,
            "encrypted_content": None}


def error_reply(
    status: int = 400, message: str = "fake error", kind: str = "invalid_request_error",
) -> Reply:
    """An HTTP error with OpenAI's body ``{"error": {"message", "type", "param", "code"}}``."""
    return Reply(status=status, error={"error": {"message": message, "type": kind,
                                                 "param": None, "code": None}})


# -- reading a request body ------------------------------------------------------------------


def _message_texts(item: Body) -> list[str]:
    content = item.get("content")
    if isinstance(content, str):
        return [content]
    return [c.get("text", "") for c in content or [] if c.get("type") in ("input_text", "text")]


def all_user_texts(body: Body) -> list[str]:
    """Every user text in ``body["input"]``, in order, less the context Codex adds itself
    (texts that start with ``<``: ``<environment_context>``, ``<user_instructions>``, …)."""
    users = [i for i in body.get("input", []) if i.get("type", "message") == "message"
             and i.get("role") == "user"]
    return [s for i in users for s in _message_texts(i) if not s.lstrip().startswith("<")]


def first_user_text(body: Body) -> str:
    """The first user text (see :func:`all_user_texts`), or ``""``."""
    return next(iter(all_user_texts(body)), "")


def last_function_output(body: Body) -> str | None:
    """The output of the last item of ``input`` when it is a tool result
    (``function_call_output`` / ``custom_tool_call_output``), as text; None otherwise (the
    last item is the user's prompt)."""
    items = body.get("input") or [{}]
    last = items[-1]
    if last.get("type") not in ("function_call_output", "custom_tool_call_output"):
        return None
    output = last.get("output")
    if isinstance(output, str):
        return output
    if isinstance(output, dict):  # {"content": "...", "success": ...} in some versions
        return str(output.get("content", ""))
    return "".join(c.get("text", "") for c in output or [] if isinstance(c, dict))


def tool_names(body: Body) -> list[str]:
    """The names of the tools the request offers (``tools[].name``, or ``type`` for built-in
    ones)."""
    return [str(tool.get("name") or tool.get("type")) for tool in body.get("tools", [])]


# -- the stream ---------------------------------------------------------------------------------


def _usage(reply: Reply) -> Body:
    return reply.usage or {"input_tokens": 24, "input_tokens_details": {"cached_tokens": 4},
                           "output_tokens": 14, "output_tokens_details": {"reasoning_tokens": 0},
                           "total_tokens": 38}


def _item_frames(index: int, item: Body) -> list[Frame]:
    if item["type"] != "message":
        return [("response.output_item.done",
                 {"type": "response.output_item.done", "output_index": index, "item": item})]
    text = "".join(c.get("text", "") for c in item["content"])
    halves = [h for h in (text[: len(text) // 2], text[len(text) // 2:]) if h]
    started = {**item, "status": "in_progress", "content": []}
    return [
        ("response.output_item.added",
         {"type": "response.output_item.added", "output_index": index, "item": started}),
        *(("response.output_text.delta",
           {"type": "response.output_text.delta", "item_id": item["id"], "output_index": index,
            "content_index": 0, "delta": h}) for h in halves),
        ("response.output_item.done",
         {"type": "response.output_item.done", "output_index": index, "item": item}),
    ]


def sse_frames(reply: Reply, model: str) -> list[Frame]:
    """The ``(event name, data)`` frames of a streamed ``reply``, in order."""
    rid = _next_id("resp")
    created = {"id": rid, "object": "response", "model": model, "status": "in_progress",
               "output": []}
    done = {**created, "status": "completed", "output": reply.items, "usage": _usage(reply)}
    return [
        ("response.created", {"type": "response.created", "response": created}),
        *(f for i, item in enumerate(reply.items) for f in _item_frames(i, item)),
        ("response.completed", {"type": "response.completed", "response": done}),
    ]


class FakeOpenAI(FakeModelApi[Reply]):
    """The Responses API on a free ``127.0.0.1`` port (tests/fakes/sse_server.py), inside
    ``with``: Codex's provider ``base_url`` is ``api.base_url + "/v1"``. ``api.requests``
    holds the bodies of ``POST /v1/responses``; ``api.paths`` the method, path and query of
    every request."""

    not_found_kind = "not_found"
    error_reply = staticmethod(error_reply)

    def seen(self, method: str, path: str) -> str:
        return f"{method} {path}"

    def post(self, http: Exchange, path: str, raw: bytes) -> None:
        if path != "/v1/responses":
            return http.send_not_found()
        try:
            body = t.cast(Body, json.loads(raw or b"{}"))
        except ValueError as e:  # e.g. a compressed body: say so rather than hang
            self.errors.append(e)
            return http.send_json(400, error_reply(400, f"fake: body is not JSON: {e}").error)
        reply = self.answer(body)
        if reply.status != 200:
            return http.send_json(reply.status, reply.error, reply.delay_seconds)
        http.send_sse(sse_frames(reply, str(body.get("model"))), reply.delay_seconds)


def codex_config_toml(base_url: str, model: str = "fake-model") -> str:
    """A ``$CODEX_HOME/config.toml`` that points Codex at the fake (PROTOCOLS.md 3.3): model
    ``model``, provider ``fake`` at ``base_url + "/v1"`` with key variable ``FAKE_OPENAI_KEY``,
    no analytics, no WebSocket attempts."""
    return (f'model = "{model}"\nmodel_provider = "fake"\n\n[analytics]\nenabled = false\n\n'
            f'[model_providers.fake]\nname = "Fake"\nbase_url = "{base_url}/v1"\n'
            'env_key = "FAKE_OPENAI_KEY"\nwire_api = "responses"\nsupports_websockets = false\n')
