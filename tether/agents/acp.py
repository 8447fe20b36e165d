"""The driver for the Agent Client Protocol (ACP): Gemini CLI's ``--acp`` and any ACP agent.

JSON-RPC 2.0, one object per line each way (PROTOCOLS.md 4.2; the ACP schema,
agentclientprotocol/agent-client-protocol ``schema/schema.json``). Tether is the *client*:

- it asks ``initialize``, then ``session/new`` or ``session/load``, ``session/prompt`` (one
  per turn; its *response* ends the turn), ``session/set_mode``, ``session/set_model``
  (Gemini CLI's unstable method) or ``session/set_config_option``, and notifies
  ``session/cancel``;
- the agent notifies ``session/update`` (the turn's output) and asks
  ``session/request_permission`` (a person's approval) and ``fs/read_text_file`` /
  ``fs/write_text_file`` (served here, inside the workspace only: :mod:`tether.agents.acp_fs`).

The mapping of tool calls and permissions to Tether's events is
:mod:`tether.agents.acp_content`'s, a session's modes and models
:mod:`tether.agents.acp_session`'s, the JSON-RPC framing :mod:`tether.agents.acp_rpc`'s; this
module is the state between them (the requests in flight, the permissions waiting, the load
replay, the text runs). Deliberate choices,
each from a recording of gemini 0.61.0 (tests/fixtures/gemini/, PROTOCOLS.md 4.3):

- **Stop** sends ``session/cancel`` *and* answers every pending permission ``cancelled``:
  the prompt does not end until they are answered.
- **Load replays history after its reply.** The schema says an agent replays the whole
  conversation *before* answering ``session/load``; Gemini CLI sends one update before the
  reply and the rest after it (``load_later_minute.jsonl``), then an
  ``available_commands_update``, and only then the next prompt's output. So after a load,
  updates are dropped until the reply; after the reply, a ``user_message_chunk`` (a live
  turn never echoes the prompt) means the history goes on, and it is dropped up to the next
  ``available_commands_update`` (or a permission request, or the prompt's response). Do not
  "simplify" this to "drop until the next prompt is sent": the runner sends the held prompt
  right after the reply, before the history arrives.
- **A failed load** (``-32603`` "No previous sessions found" within the session's minute) or
  an agent without ``loadSession``: a new session, whose first prompt carries the
  conversation from Tether's log (:attr:`DriverContext.transcript`), and an ``error`` event
  saying so.
- **Mode changes** come back as an ``agent_message_chunk`` ``[MODE_UPDATE] <mode>``, not as
  a ``current_mode_update``: such a chunk is a mode notice, never text.
- **Text** is emitted as ``text_delta`` per chunk and as one ``text`` event per run of
  chunks (a run ends at a tool call, a thought, a permission request or the turn's end), so
  that the log reads in order; the turn's ``result`` text is the last run.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

from tether.agents import acp_fs
from tether.agents.acp_content import (
    FINISHED,
    block_text,
    choose_option,
    permission_fields,
    plan_entries,
    tool_result,
    tool_use,
    usage,
)
from tether.agents.acp_rpc import (
    METHOD_NOT_FOUND,
    error_response,
    error_text,
    notification,
    request,
    response,
)
from tether.agents.acp_session import commands, read_session
from tether.agents.driver import (
    Action,
    Answer,
    Ask,
    DriverContext,
    Emit,
    Offer,
    Prompt,
    Ready,
    Send,
    Started,
    TurnOver,
    Withdraw,
)
from tether.agents.modes import DEFAULT_MODEL

#: The ACP version Tether speaks (``initialize.protocolVersion``; the schema's v1).
PROTOCOL_VERSION = 1
#: What Tether serves itself (ACP ``ClientCapabilities``): files, inside the workspace.
CLIENT_CAPABILITIES = {"fs": {"readTextFile": True, "writeTextFile": True}}
#: ``session/prompt`` ``stopReason`` values (ACP schema ``StopReason``) that end a turn
#: normally but early, with what the ``result`` says.
EARLY_STOPS = {
    "max_tokens": "The agent stopped: it reached its token limit (max_tokens).",
    "max_turn_requests": "The agent stopped: it reached its limit of model requests in one "
                         "turn (max_turn_requests).",
    "refusal": "The agent refused to go on (refusal).",
}
#: How Gemini CLI 0.61.0 reports a mode change: as message text [obs, set_mode.jsonl].
MODE_NOTICE = re.compile(r"\[MODE_UPDATE\] (\S+)")
#: Prefix of a first prompt that carries the conversation from Tether's own log.
TRANSCRIPT_HEADER = ("Earlier in this conversation (from Tether's log; your own history of "
                     "it could not be restored):\n\n")


class AcpDriver:
    """One ACP agent process (:class:`tether.agents.driver.Driver`); see the module
    docstring. Not ready until the agent has opened or loaded its session."""

    ready = False

    def __init__(self, context: DriverContext) -> None:
        self._context = context
        self._ids = itertools.count(1)
        #: ``{our request id: (method, extra)}`` of the requests not yet answered.
        self._asked: dict[int, tuple[str, Any]] = {}
        self._session_id: str | None = None
        self._resume_id: str | None = None
        self._can_load = False
        self._takes_images = False
        self._held: Prompt | None = None
        #: The next prompt carries the transcript (a failed or impossible load).
        self._carry_transcript = False
        #: None, ``loading`` (load sent), ``trailing`` (its reply came) or ``history``
        #: (updates after the reply are still history): see the module docstring.
        self._replay: str | None = None
        self._turn: int | None = None  # the running session/prompt's id
        self._run: tuple[str, list[str]] | None = None  # ("text"|"thinking", chunks)
        self._last_text = ""
        self._deltas = 0
        #: ``{token: (JSON-RPC id, options, toolCallId)}`` of the permissions waiting.
        self._permissions: dict[str, tuple[Any, list[Mapping[str, Any]], str | None]] = {}
        self._tools_seen: set[str] = set()
        self._tools_done: set[str] = set()
        self._mode = context.permission_mode
        self._modes: list[str] = []
        self._model_method: str | None = None  # session/set_model or set_config_option
        self._model_config_id: str | None = None
        #: What to ask for once the session is open (configure before then).
        self._want_mode, self._want_model = context.permission_mode, context.model
        self._last_id = 0

    # -- the Driver protocol ------------------------------------------------------------

    def start(self, agent_session_id: str | None, resume: bool) -> list[Action]:
        """``initialize`` (ACP schema ``InitializeRequest``); the session follows its
        answer."""
        self._resume_id = agent_session_id if resume else None
        return [self._ask("initialize", {"protocolVersion": PROTOCOL_VERSION,
                                         "clientCapabilities": CLIENT_CAPABILITIES})]

    def prompt(self, prompt: Prompt) -> list[Action]:
        if not self.ready:
            self._held = prompt
            return []
        return self._send_prompt(prompt)

    def receive(self, message: Mapping[str, Any]) -> list[Action]:
        method = message.get("method")
        if isinstance(method, str):
            if "id" in message:
                return self._agent_request(message["id"], method, message.get("params") or {})
            if method == "session/update":
                return self._update(message.get("params") or {})
            return []  # a notification Tether does not know: nothing to do
        rid = message.get("id")
        asked = self._asked.pop(rid, None) if isinstance(rid, int) else None
        if asked is None:
            return []
        if "error" in message:
            return self._failed(asked, message.get("error"))
        return self._answered(asked, message.get("result"))

    def answer(self, token: str, answer: Answer) -> list[Action]:
        waiting = self._permissions.pop(token, None)
        if waiting is None:
            return []  # already answered (Stop answers them itself)
        rid, options, call_id = waiting
        outcome = choose_option(options, answer)
        actions: list[Action] = [Send(response(rid, outcome))]
        if outcome["outcome"]["outcome"] == "cancelled" or answer.decision == "deny":
            actions += self._unfinished(call_id, answer.message or (
                "denied" if answer.decision == "deny" else "cancelled"))
        return actions

    def interrupt(self) -> list[Action]:
        """``session/cancel``, and ``cancelled`` for every pending permission (PROTOCOLS.md
        4.3: the prompt ends only once they are answered). A prompt still held (no session
        yet) is dropped and its turn is over at once."""
        if self._turn is None:
            if self._held is not None:
                self._held = None
                return [TurnOver("cancelled")]
            return []
        actions: list[Action] = [Send(notification("session/cancel",
                                                    {"sessionId": self._session_id}))]
        for rid, _, call_id in self._permissions.values():
            actions.append(Send(response(rid, {"outcome": {"outcome": "cancelled"}})))
            actions += self._unfinished(call_id, "cancelled")
        self._permissions.clear()
        return actions

    def configure(self, model: str | None, permission_mode: str | None) -> list[Action]:
        """``session/set_mode {sessionId, modeId}``, and the model by ``session/set_model
        {sessionId, modelId}`` (Gemini CLI 0.61.0: its ``session/new`` lists ``models``;
        it answers ``set_config_option`` with -32601 [obs, set_mode.jsonl]) or by
        ``session/set_config_option {sessionId, configId, value}`` for an agent that lists a
        ``configOptions`` entry of category ``model`` (ACP schema). ``default`` asks for no
        model: ACP has no way back to an agent's own default."""
        actions: list[Action] = []
        if self._session_id is None:  # asked for once it is open
            self._want_mode = permission_mode or self._want_mode
            self._want_model = model or self._want_model
            return actions
        if permission_mode is not None and permission_mode != self._mode:
            actions.append(self._ask("session/set_mode", {"sessionId": self._session_id,
                                                          "modeId": permission_mode},
                                     extra=self._mode))
            self._mode = permission_mode
        if model is not None and model != DEFAULT_MODEL:
            actions += self._set_model(model)
        return actions

    def closed(self) -> list[Action]:
        return self._end_run()

    # -- our requests and their answers -------------------------------------------------

    def _ask(self, method: str, params: Mapping[str, Any], extra: Any = None) -> Send:
        rid = self._last_id = next(self._ids)
        self._asked[rid] = (method, extra)
        return Send(request(rid, method, params))

    def _answered(self, asked: tuple[str, Any], result: Any) -> list[Action]:
        method, extra = asked
        result = result if isinstance(result, Mapping) else {}
        if method == "initialize":
            caps = result.get("agentCapabilities") or {}
            caps = caps if isinstance(caps, Mapping) else {}
            self._can_load = caps.get("loadSession") is True
            prompts = caps.get("promptCapabilities")
            self._takes_images = isinstance(prompts, Mapping) and prompts.get("image") is True
            return self._open_session()
        if method in ("session/new", "session/load"):
            return self._opened(method, result)
        if method == "session/prompt":
            return self._prompt_over(result)
        return []  # set_mode / set_model: the change stands

    def _failed(self, asked: tuple[str, Any], error: Any) -> list[Action]:
        method, extra = asked
        text = error_text(error)
        if method == "session/load":
            self._replay = None
            return self._fallback(f"the agent could not load its session ({text})")
        if method == "session/prompt":
            self._turn = None
            withdrawn: list[Action] = [Withdraw(token) for token in self._permissions]
            self._permissions.clear()
            return [*withdrawn, *self._end_run(), *self._close_tools(),
                    Emit("error", {"message": f"the agent's turn failed: {text}"}),
                    TurnOver("error")]
        if method == "session/set_mode":
            if self._mode == extra:
                return []
            self._mode = str(extra)
            return [Emit("error", {"message": f"the agent refused the permission mode "
                                              f"change: {text}"}),
                    Emit("mode", {"permission_mode": extra, "by": "agent"})]
        if method in ("session/set_model", "session/set_config_option"):
            return [Emit("error", {"message": f"the agent refused the model change: {text}"})]
        # initialize or session/new: the agent cannot work.
        actions: list[Action] = [Emit("error", {"message": f"the agent failed {method}: "
                                                           f"{text}"})]
        if self._held is not None:
            self._held = None
            actions.append(TurnOver("error"))
        return actions

    def _open_session(self) -> list[Action]:
        cwd = str(self._context.workspace)
        if self._resume_id and self._can_load:
            self._replay = "loading"
            return [self._ask("session/load", {"sessionId": self._resume_id, "cwd": cwd,
                                               "mcpServers": []})]
        if self._resume_id:
            return self._fallback("the agent cannot load sessions (no loadSession)")
        return [self._ask("session/new", {"cwd": cwd, "mcpServers": []})]

    def _fallback(self, why: str) -> list[Action]:
        self._carry_transcript = True
        message = (f"{why}: the agent's own history could not be restored; its first prompt "
                   "carries the conversation from Tether's log")
        return [Emit("error", {"message": message}),
                self._ask("session/new", {"cwd": str(self._context.workspace),
                                          "mcpServers": []})]

    def _opened(self, method: str, result: Mapping[str, Any]) -> list[Action]:
        """``session/new`` / ``session/load`` answered (:mod:`tether.agents.acp_session`):
        the session is open; the mode and model asked for before are set, the held prompt
        sent."""
        session_id = result.get("sessionId") if method == "session/new" else self._resume_id
        if not isinstance(session_id, str) or not session_id:
            return self._failed((method, None), {"message": "no sessionId in its answer"})
        self._session_id = session_id
        if method == "session/load":
            self._replay = "trailing"
        self.ready = True
        offer = read_session(result)
        self._modes = offer.mode_ids
        self._model_method, self._model_config_id = offer.model_method, offer.model_config_id
        actions: list[Action] = [
            Started(session_id),
            Emit("agent_session", {"agent": self._context.agent, "agent_session_id": session_id,
                                   "model": offer.current_model or self._context.model,
                                   "cwd": str(self._context.workspace)}),
            Ready(), Offer(models=offer.models, modes=offer.modes)]
        if offer.current_mode is not None:
            self._mode = offer.current_mode
            if self._want_mode != offer.current_mode and self._want_mode in self._modes:
                actions += self.configure(None, self._want_mode)
        model = self._want_model
        if model not in (DEFAULT_MODEL, offer.current_model) and any(
                m["id"] == model for m in offer.models or []):
            actions += self._set_model(model)
        if self._held is not None:
            held, self._held = self._held, None
            actions += self._send_prompt(held)
        return actions

    def _set_model(self, model: str) -> list[Action]:
        if self._model_method == "session/set_config_option" and self._model_config_id:
            return [self._ask("session/set_config_option", {
                "sessionId": self._session_id, "configId": self._model_config_id,
                "value": model})]
        if self._model_method == "session/set_model":
            return [self._ask("session/set_model", {"sessionId": self._session_id,
                                                    "modelId": model})]
        return []

    def _send_prompt(self, prompt: Prompt) -> list[Action]:
        """``session/prompt {sessionId, prompt: [image blocks..., text block]}`` (ACP
        ``ContentBlock``: ``{type: "image", mimeType, data}``, ``{type: "text", text}``)."""
        text = prompt.text
        if self._carry_transcript:
            self._carry_transcript = False
            transcript = self._context.transcript()
            if transcript:
                text = f"{TRANSCRIPT_HEADER}{transcript}\n\n---\n\n{text}"
        actions: list[Action] = []
        images = prompt.images
        if images and not self._takes_images:  # the schema's baseline is text only
            actions.append(Emit("error", {"message": "the agent does not take images "
                                                     "(no promptCapabilities.image): "
                                                     "sent the text only"}))
            images = []
        blocks: list[dict[str, Any]] = [
            {"type": "image", "mimeType": image.get("media_type"), "data": image.get("data")}
            for image in images]
        blocks.append({"type": "text", "text": text})
        self._run, self._last_text, self._deltas = None, "", 0
        actions.append(self._ask("session/prompt", {"sessionId": self._session_id,
                                                    "prompt": blocks}))
        self._turn = self._last_id
        return actions

    def _prompt_over(self, result: Mapping[str, Any]) -> list[Action]:
        """The ``session/prompt`` response ``{stopReason, usage?, _meta?}`` ends the turn:
        ``end_turn`` and the :data:`EARLY_STOPS` complete it, ``cancelled`` cancels it."""
        self._turn = None
        self._replay = None
        stop = str(result.get("stopReason") or "end_turn")
        withdrawn: list[Action] = [Withdraw(token) for token in self._permissions]
        self._permissions.clear()  # the agent no longer waits for them
        actions = [*withdrawn, *self._end_run(), *self._close_tools()]
        text = EARLY_STOPS.get(stop, self._last_text)
        actions.append(Emit("result", {"is_error": False, "subtype": stop, "text": text,
                                       "stop_reason": stop, "duration_ms": None,
                                       "usage": usage(result)}))
        actions.append(TurnOver("cancelled" if stop == "cancelled" else "completed"))
        return actions

    # -- what the agent sends -----------------------------------------------------------

    def _agent_request(self, rid: Any, method: str, params: Mapping[str, Any]) -> list[Action]:
        if method == "session/request_permission":
            self._replay = None  # never history
            return self._permission(rid, params)
        if method in ("fs/read_text_file", "fs/write_text_file"):
            try:
                if method == "fs/read_text_file":
                    return [Send(response(rid, acp_fs.read_text_file(self._context.workspace,
                                                                     params)))]
                acp_fs.write_text_file(self._context.workspace, params)
                return [Send(response(rid, None))]
            except acp_fs.FsError as e:
                return [Send(error_response(rid, e.code, e.message))]
        return [Send(error_response(rid, METHOD_NOT_FOUND, f"Method not found: {method}"))]

    def _permission(self, rid: Any, params: Mapping[str, Any]) -> list[Action]:
        """``session/request_permission {sessionId, toolCall, options}``: an approval. No
        ``tool_call`` precedes it in Gemini CLI 0.61.0 (PROTOCOLS.md 4.3), so its call is
        announced as a ``tool_use`` the first time its id is seen."""
        token = str(rid)
        fields = permission_fields(params, self._context.workspace)
        options = [o for o in params.get("options") or [] if isinstance(o, Mapping)]
        call = params.get("toolCall")
        call_id = fields["tool_use_id"]
        self._permissions[token] = (rid, options, call_id)
        actions = self._end_run()
        if isinstance(call, Mapping) and call_id and call_id not in self._tools_seen:
            self._tools_seen.add(call_id)
            actions.append(Emit("tool_use", tool_use(call)))
        actions.append(Ask(token, "approval", fields))
        return actions

    def _update(self, params: Mapping[str, Any]) -> list[Action]:
        update = params.get("update")
        if not isinstance(update, Mapping):
            return []
        if self._session_id is not None and params.get("sessionId") not in (
                None, self._session_id):
            return []
        kind = update.get("sessionUpdate")
        if kind == "available_commands_update":
            if self._replay in ("trailing", "history"):
                self._replay = None
            return [Offer(commands=commands(update.get("availableCommands")))]
        if self._replaying(kind):
            return []
        if kind == "agent_message_chunk":
            text = block_text(update.get("content"))
            notice = MODE_NOTICE.fullmatch(text.strip())
            if notice and (not self._modes or notice.group(1) in self._modes):
                return self._mode_changed(notice.group(1))
            return self._chunk("text", text)
        if kind == "agent_thought_chunk":
            return self._chunk("thinking", block_text(update.get("content")))
        if kind in ("tool_call", "tool_call_update"):
            return self._tool(update)
        if kind == "plan":
            return [*self._end_run(), Emit("plan", {"entries": plan_entries(
                update.get("entries"))})]
        if kind == "current_mode_update":
            return self._mode_changed(str(update.get("currentModeId") or ""))
        return []  # user_message_chunk (our own prompt), and what Tether does not show

    def _replaying(self, kind: Any) -> bool:
        """Whether an update is history replayed by ``session/load`` (module docstring)."""
        if self._replay == "loading" or self._replay == "history":
            return True
        if self._replay == "trailing":
            if kind == "user_message_chunk":
                self._replay = "history"
                return True
            self._replay = None
        return False

    def _mode_changed(self, mode: str) -> list[Action]:
        if not mode or mode == self._mode:
            return []
        self._mode = mode
        return [Emit("mode", {"permission_mode": mode, "by": "agent"})]

    def _chunk(self, kind: str, text: str) -> list[Action]:
        if not text:
            return []
        actions: list[Action] = []
        if self._run is None or self._run[0] != kind:
            actions += self._end_run()
            self._run = (kind, [])
            if kind == "text":
                self._deltas += 1
        self._run[1].append(text)
        if kind == "text":
            actions.append(Emit("text_delta", {"text": text, "index": self._deltas - 1}))
        return actions

    def _end_run(self) -> list[Action]:
        """The ``text`` or ``thinking`` event of the chunks so far, if any."""
        if self._run is None:
            return []
        kind, chunks = self._run
        self._run = None
        text = "".join(chunks)
        if kind == "text":
            self._last_text = text
        return [Emit(kind, {"text": text})]

    def _tool(self, update: Mapping[str, Any]) -> list[Action]:
        call_id = str(update.get("toolCallId") or "")
        if not call_id or call_id in self._tools_done:
            return []
        actions = self._end_run()
        if call_id not in self._tools_seen:
            self._tools_seen.add(call_id)
            actions.append(Emit("tool_use", tool_use(update)))
        if update.get("status") in FINISHED:
            self._tools_done.add(call_id)
            actions.append(Emit("tool_result", tool_result(update, self._context.workspace)))
        return actions

    def _unfinished(self, call_id: str | None, why: str) -> list[Action]:
        """A ``tool_result`` (``is_error``) for a call the person denied or Stop cancelled:
        Gemini CLI 0.61.0 sends no ``tool_call_update`` after a reject (PROTOCOLS.md 4.3)."""
        if not call_id or call_id in self._tools_done or call_id not in self._tools_seen:
            return []
        self._tools_done.add(call_id)
        return [Emit("tool_result", {"tool_use_id": call_id, "content": why,
                                     "is_error": True})]

    def _close_tools(self) -> list[Action]:
        """At a turn's end, a ``tool_result`` for every call that never finished."""
        actions: list[Action] = []
        for call_id in sorted(self._tools_seen - self._tools_done):
            actions += self._unfinished(call_id, "the turn ended before the tool finished")
        return actions
