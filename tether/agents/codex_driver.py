"""Codex's ``app-server``: JSON-RPC over stdio in, Tether events out (sans-IO).

One :class:`CodexDriver` per ``codex app-server`` process (tether.agents.driver). Sources:
PROTOCOLS.md 3.2 and 3.3 (observed with codex 0.171.0), the schema that
``codex app-server generate-json-schema --out DIR`` writes (0.171.0), and the recordings in
``tests/fixtures/codex/`` (tests/fakes/record_codex.py; notes in docs/PROTOCOLS.md 3.4).

The wire: newline-delimited JSON-RPC 2.0; the server's messages omit ``"jsonrpc"`` and many
carry a top-level ``emittedAtMs``. A message with ``method`` and ``id`` is a server request,
with ``id`` alone a response to one of ours, with ``method`` alone a notification. Our
requests get ids 1, 2, …; the server numbers its own requests from 0 (PROTOCOLS.md 3.2).

Intentional choices (do not "fix" them without reading why):

- The approval policy and sandbox go on every ``turn/start`` (``approvalPolicy``,
  ``sandboxPolicy``: "for this turn and subsequent turns", schema), so a mode changed between
  turns takes effect at the next one without a new process.
- A request still pending at ``turn/completed`` is withdrawn by the driver itself, and a
  ``serverRequest/resolved`` after the turn ended is ignored: after ``turn/interrupt`` the
  notice comes about 1 ms *after* ``turn/completed`` (PROTOCOLS.md 3.3).
- A tool item started but never completed when the turn ends (Stop with an approval pending:
  codex 0.171.0 sends no ``item/completed`` for it) gets an ``is_error`` ``tool_result``, so
  no tool call stays open in the transcript.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from typing import Any

from tether.agents.codex_items import (
    APPROVAL_OPTIONS,
    SANDBOX_POLICIES,
    approval_decision,
    clarify_questions,
    diff_text,
    error_text,
    file_changes,
    mode_settings,
    prompt_input,
    shell_script,
    text_parts,
    tool_result_payload,
    tool_use_payload,
)
from tether.agents.driver import (
    Action,
    Answer,
    Ask,
    DriverContext,
    Emit,
    Prompt,
    Ready,
    Send,
    Started,
    TurnOver,
    Withdraw,
)

logger = logging.getLogger(__name__)

#: JSON-RPC's "method not found", the answer to a server request Tether cannot serve.
METHOD_NOT_FOUND = -32601
CLIENT_INFO = {"name": "tether", "title": "Tether", "version": "1"}


def request(request_id: int, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": dict(params)}


class CodexDriver:
    """The Driver (tether.agents.driver.Driver) for ``codex app-server``.

    :param context: the session; ``model`` (``default``: the CLI's configured model) and
        ``permission_mode`` (:data:`~tether.agents.codex_items.CODEX_MODES`) are the first turn's.
    """

    def __init__(self, context: DriverContext) -> None:
        self.ready = False
        self._context = context
        self._model = context.model
        self._mode = context.permission_mode
        self._ids = itertools.count(1)
        self._calls: dict[int, str] = {}  # our request id -> what it was
        self._resume: str | None = None
        self._thread: str | None = None
        self._held: list[Prompt] = []
        self._turn_open = False  # a turn/start went out and its turn/completed has not come
        self._turn: str | None = None
        self._interrupt_wanted = False
        self._pending: dict[str, Mapping[str, Any]] = {}  # token -> the server request
        self._items: dict[str, Mapping[str, Any]] = {}  # tool items started, not completed
        self._usage_total: Mapping[str, Any] | None = None
        self._usage_base: Mapping[str, Any] | None = None

    # -- the runner's calls -------------------------------------------------------------

    def start(self, agent_session_id: str | None, resume: bool) -> list[Action]:
        """``initialize``; the thread is opened when it answers (:meth:`_opened`). Codex names
        a new thread itself: ``agent_session_id`` is used only when ``resume``."""
        self._resume = agent_session_id if resume else None
        return [self._call("initialize", {"clientInfo": CLIENT_INFO})]

    def prompt(self, prompt: Prompt) -> list[Action]:
        """``turn/start``; held until the thread is open, or the running turn is over (a
        ``turn/start`` during a turn would join it, schema ``TurnStartParams``)."""
        if not self.ready or self._turn_open:
            self._held.append(prompt)
            return []
        return [self._turn_start(prompt)]

    def receive(self, message: Mapping[str, Any]) -> list[Action]:
        method = message.get("method")
        if isinstance(method, str) and "id" in message:
            return self._server_request(method, message)
        if "id" in message:
            return self._response(message)
        if isinstance(method, str):
            params = message.get("params")
            return self._notification(method, params if isinstance(params, Mapping) else {})
        return []

    def answer(self, token: str, answer: Answer) -> list[Action]:
        """Approvals: ``accept``, ``acceptForSession`` (scope ``session`` or that option),
        ``decline``; questions: ``{"answers": {id: {"answers": [text]}}}`` (schema
        ``ToolRequestUserInputResponse``). ``cancelled`` sends nothing (PROTOCOLS.md 3.3)."""
        pending = self._pending.pop(token, None)
        if pending is None or answer.decision == "cancelled":
            return []
        if pending.get("method") == "item/tool/requestUserInput":
            result: dict[str, Any] = {"answers": self._answers(pending, answer)}
        else:
            result = {"decision": approval_decision(answer)}
        return [Send({"jsonrpc": "2.0", "id": pending.get("id"), "result": result})]

    def interrupt(self) -> list[Action]:
        """``turn/interrupt {threadId, turnId}`` (PROTOCOLS.md 3.2), sent once ``turn/started``
        names the turn if it has not yet; pending requests are left to the runner."""
        self._pending.clear()
        if not self._turn_open:
            held, self._held = self._held, []
            return [TurnOver("cancelled")] if held else []
        if self._turn is None:
            self._interrupt_wanted = True
            return []
        return [self._call("turn/interrupt", {"threadId": self._thread, "turnId": self._turn})]

    def configure(self, model: str | None, permission_mode: str | None) -> list[Action]:
        """Remembered for the next ``turn/start``, which carries both."""
        if model is not None:
            self._model = model
        if permission_mode is not None:
            self._mode = permission_mode
        return []

    def closed(self) -> list[Action]:
        return []

    # -- our requests and their responses --------------------------------------------------

    def _call(self, method: str, params: Mapping[str, Any]) -> Send:
        request_id = next(self._ids)
        self._calls[request_id] = method
        return Send(request(request_id, method, params))

    def _thread_params(self) -> dict[str, Any]:
        approval, sandbox = mode_settings(self._mode)
        params: dict[str, Any] = {"cwd": str(self._context.workspace),
                                  "approvalPolicy": approval, "sandbox": sandbox}
        if self._model and self._model != "default":
            params["model"] = self._model
        return params

    def _turn_start(self, prompt: Prompt) -> Send:
        approval, sandbox = mode_settings(self._mode)
        params: dict[str, Any] = {"threadId": self._thread, "input": prompt_input(prompt),
                                  "approvalPolicy": approval,
                                  "sandboxPolicy": SANDBOX_POLICIES[sandbox]}
        if self._model and self._model != "default":
            params["model"] = self._model
        self._turn_open, self._turn, self._interrupt_wanted = True, None, False
        return self._call("turn/start", params)

    def _response(self, message: Mapping[str, Any]) -> list[Action]:
        request_id = message.get("id")
        method = self._calls.pop(request_id, None) if isinstance(request_id, int) else None
        if method is None:
            return []
        result = message.get("result")
        if "error" in message or not isinstance(result, Mapping):
            return self._failed(method, message.get("error"))
        if method == "initialize":
            # thread/start's own params, then the thread; "excludeTurns" spares the resumed
            # history (and 0.171.0's deprecationNotice about it); the model still sees it.
            opening = ("thread/resume", {"threadId": self._resume, **self._thread_params(),
                                         "excludeTurns": True}) if self._resume else \
                ("thread/start", self._thread_params())
            return [Send({"jsonrpc": "2.0", "method": "initialized"}), self._call(*opening)]
        if method in ("thread/start", "thread/resume"):
            return self._opened(result)
        if method == "turn/start":
            turn = result.get("turn")
            if isinstance(turn, Mapping) and self._turn is None and self._turn_open:
                return self._turn_named(turn.get("id"))
        return []

    def _opened(self, result: Mapping[str, Any]) -> list[Action]:
        thread = result.get("thread")
        thread_id = thread.get("id") if isinstance(thread, Mapping) else None
        if not isinstance(thread_id, str):
            return self._failed("thread/start", {"message": "no thread id in the answer"})
        self._thread, self.ready = thread_id, True
        actions: list[Action] = [
            Emit("agent_session", {"agent": self._context.agent, "agent_session_id": thread_id,
                                   "model": result.get("model"), "cwd": result.get("cwd"),
                                   "permission_mode": self._mode}),
            Started(thread_id), Ready()]
        held, self._held = self._held, []
        actions.extend(self._turn_start(p) for p in held[:1])  # one turn at a time
        self._held = held[1:]
        return actions

    def _failed(self, method: str, error: Any) -> list[Action]:
        """A JSON-RPC error to our request (or a result we cannot use): an ``error`` event,
        and the end of the turn that waited on it."""
        actions: list[Action] = [Emit("error", {"message": f"codex {method}: "
                                                f"{error_text(error)}"})]
        waiting = method == "turn/start" or (method in ("initialize", "thread/start",
                                                        "thread/resume") and self._held)
        if waiting:
            self._held.clear()
            self._turn_open = False
            actions.append(TurnOver("error"))
        return actions

    def _turn_named(self, turn_id: Any) -> list[Action]:
        if not isinstance(turn_id, str):
            return []
        self._turn = turn_id
        self._usage_base = self._usage_total
        if self._interrupt_wanted:
            self._interrupt_wanted = False
            return [self._call("turn/interrupt", {"threadId": self._thread, "turnId": turn_id})]
        return []

    # -- the server's requests -------------------------------------------------------------

    def _server_request(self, method: str, message: Mapping[str, Any]) -> list[Action]:
        params = message.get("params")
        params = params if isinstance(params, Mapping) else {}
        token = str(message.get("id"))
        if method in ("item/commandExecution/requestApproval", "item/fileChange/requestApproval"):
            self._pending[token] = message
            return [Ask(token, "approval", self._approval_fields(method, params))]
        if method == "item/tool/requestUserInput":
            self._pending[token] = message
            return [Ask(token, "clarify", {"questions": clarify_questions(params.get("questions")),
                                           "tool_use_id": params.get("itemId")})]
        logger.info("codex asked %s, which Tether does not serve", method)
        return [Send({"jsonrpc": "2.0", "id": message.get("id"), "error": {
            "code": METHOD_NOT_FOUND, "message": f"Tether does not handle {method}"}})]

    def _approval_fields(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        item_id = params.get("itemId")
        fields: dict[str, Any] = {"tool_use_id": item_id, "reason": params.get("reason"),
                                  "options": APPROVAL_OPTIONS}
        if method == "item/commandExecution/requestApproval":
            fields.update(tool_name="Bash", cwd=params.get("cwd"),
                          input={"command": shell_script(params.get("command")),
                                 "cwd": params.get("cwd")})
            return fields
        # item/fileChange/requestApproval names only the item: its changes came with
        # item/started (observed with codex 0.171.0).
        item = self._items.get(str(item_id)) or {}
        changes = file_changes(item.get("changes"))
        # No cwd: the paths are the changes' own (a cwd is where a command would run).
        fields.update(tool_name="apply_patch", input={"changes": changes},
                      diff=diff_text(changes, str(self._context.workspace)))
        return fields

    def _answers(self, pending: Mapping[str, Any], answer: Answer) -> dict[str, Any]:
        """``{question id: {"answers": [text]}}`` from Tether's ``{question text: text}``."""
        if answer.decision != "allow" or not answer.answers:
            return {}
        params = pending.get("params") or {}
        out: dict[str, Any] = {}
        for question in params.get("questions") or []:
            text = answer.answers.get(str(question.get("question", "")))
            if text is not None:
                out[str(question.get("id"))] = {"answers": [str(text)]}
        return out

    # -- notifications ---------------------------------------------------------------------

    def _notification(self, method: str, params: Mapping[str, Any]) -> list[Action]:
        if method == "item/agentMessage/delta":
            return [Emit("text_delta", {"text": str(params.get("delta", "")), "index": 0})]
        if method in ("item/started", "item/completed"):
            item = params.get("item")
            if not isinstance(item, Mapping):
                return []
            return self._item_started(item) if method == "item/started" else \
                self._item_completed(item)
        if method == "turn/started":
            turn = params.get("turn")
            if isinstance(turn, Mapping) and self._turn_open and self._turn is None:
                return self._turn_named(turn.get("id"))
            return []
        if method == "turn/completed":
            turn = params.get("turn")
            return self._turn_completed(turn if isinstance(turn, Mapping) else {})
        if method == "thread/tokenUsage/updated":
            usage = params.get("tokenUsage")
            if isinstance(usage, Mapping) and isinstance(usage.get("total"), Mapping):
                self._usage_total = usage["total"]
            return []
        if method == "serverRequest/resolved":
            token = str(params.get("requestId"))
            if self._turn_open and self._pending.pop(token, None) is not None:
                return [Withdraw(token)]
            return []
        if method == "error":
            return self._error(params)
        return []  # thread/status/changed, warning, account/rateLimits/updated, …: dropped

    def _error(self, params: Mapping[str, Any]) -> list[Action]:
        """``error {error, willRetry, turnId}``: a retry notice is not fatal; a final error of
        the running turn is reported once, from its ``turn/completed`` (``failed``)."""
        if params.get("willRetry") or (self._turn_open and params.get("turnId")):
            return []
        return [Emit("error", {"message": error_text(params.get("error"))})]

    def _item_started(self, item: Mapping[str, Any]) -> list[Action]:
        kind, item_id = item.get("type"), str(item.get("id"))
        if kind not in ("commandExecution", "fileChange") or item_id in self._items:
            return []
        self._items[item_id] = item
        return [Emit("tool_use", tool_use_payload(item))]

    def _item_completed(self, item: Mapping[str, Any]) -> list[Action]:
        kind = item.get("type")
        if kind == "agentMessage":
            return [Emit("text", {"text": str(item.get("text", ""))})]
        if kind == "reasoning":
            text = "\n".join(text_parts(item.get("summary")) + text_parts(item.get("content")))
            return [Emit("thinking", {"text": text})] if text else []
        if kind not in ("commandExecution", "fileChange"):
            return []
        actions: list[Action] = []
        if self._items.pop(str(item.get("id")), None) is None:
            actions.append(Emit("tool_use", tool_use_payload(item)))
        actions.append(Emit("tool_result", tool_result_payload(item,
                                                               str(self._context.workspace))))
        return actions

    def _turn_completed(self, turn: Mapping[str, Any]) -> list[Action]:
        """``result``, then the end of the turn: ``completed``; ``interrupted`` → cancelled;
        ``failed`` → an ``error`` event with ``turn.error.message``, then error."""
        if not self._turn_open:
            return []
        status = turn.get("status")
        actions: list[Action] = [Withdraw(token) for token in self._pending]
        self._pending.clear()
        for item_id in list(self._items):
            actions.append(Emit("tool_result", {"tool_use_id": item_id, "is_error": True,
                                                "content": f"not finished: the turn {status}"}))
        self._items.clear()
        if status == "failed":
            actions.append(Emit("error", {"message": error_text(turn.get("error"))}))
        subtype = {"completed": "success", "interrupted": "interrupted"}.get(str(status), "error")
        duration = turn.get("durationMs")
        actions.append(Emit("result", {
            "is_error": status != "completed", "subtype": subtype, "text": "",
            "duration_ms": duration if isinstance(duration, int) else None,
            "usage": self._turn_usage(), "num_turns": 1}))
        actions.append(TurnOver("completed" if status == "completed" else
                                "cancelled" if status == "interrupted" else "error"))
        self._turn_open, self._turn, self._interrupt_wanted = False, None, False
        held, self._held = self._held, []
        if held:  # a prompt that came while the turn ran (the runner sends one at a time)
            actions.append(self._turn_start(held[0]))
            self._held = held[1:]
        return actions

    def _turn_usage(self) -> dict[str, int]:
        """The turn's tokens: the thread's running ``total`` now less at ``turn/started`` (on
        resume, 0.171.0 first reports the restored total, observed), in Claude's names."""
        now, base = self._usage_total or {}, self._usage_base or {}

        def spent(key: str) -> int:
            value, before = now.get(key, 0), base.get(key, 0)
            ok = isinstance(value, int) and isinstance(before, int)
            return max(0, value - before) if ok else 0

        cached = spent("cachedInputTokens")
        return {"input_tokens": max(0, spent("inputTokens") - cached),
                "output_tokens": spent("outputTokens"),
                "cache_read_input_tokens": cached,
                "cache_creation_input_tokens": spent("cacheWriteInputTokens")}
