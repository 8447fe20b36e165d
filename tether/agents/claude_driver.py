"""The driver for Claude Code's stream-json + control protocol (and the ``local`` agent, which
speaks it too).

The messages are :mod:`tether.agents.claude`'s (PROTOCOLS.md sections 1 and 2, Claude Code
2.1.328); this module is the state between them: the ``initialize`` request and its answer
(the commands and models the agent offers), the ``can_use_tool`` requests waiting for a
person, the plans Plan mode presented, and the permission modes asked of the live process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tether.agents.claude import (
    ASK_USER_QUESTION,
    control_error,
    control_request,
    control_success,
    permission_response,
    translate,
    user_message,
)
from tether.agents.commands import command_list
from tether.agents.driver import (
    Action,
    Answer,
    Ask,
    DriverContext,
    Emit,
    Offer,
    Prompt,
    Send,
    Started,
    TurnOver,
    Withdraw,
)
from tether.agents.modes import DEFAULT_MODEL, models_from_initialize

#: Fields of a ``can_use_tool`` request shown with an approval (PROTOCOLS.md 2.3).
APPROVAL_EXTRAS = ("description", "decision_reason", "title", "blocked_path",
                   "permission_suggestions", "agent_id")

#: The tool with which Claude Code in Plan mode presents its plan. Its ``can_use_tool``
#: request carries an empty ``input`` (2.1.328 [obs]): the plan is in the ``tool_use``
#: block before it, so the driver adds it to the approval as ``plan``.
EXIT_PLAN_MODE = "ExitPlanMode"


class ClaudeDriver:
    """Claude Code's protocol for one process (:class:`tether.agents.driver.Driver`).

    The session id is on the command line (``--session-id`` / ``--resume``,
    :func:`tether.agents.claude.session_flag`), so :meth:`start` only sends ``initialize``,
    and the driver is ready at once: Claude Code answers a user message sent before its
    ``initialize`` reply (tests/fixtures/claude/no_initialize.jsonl).
    """

    ready = True

    def __init__(self, context: DriverContext) -> None:
        self._context = context
        self._initialize_id: str | None = None
        self._reported_commands: Any = None
        #: ``{request id: the can_use_tool request}`` of the requests waiting for a person.
        self._requests: dict[str, Mapping[str, Any]] = {}
        #: ExitPlanMode inputs by tool_use id (their can_use_tool lacks the plan).
        self._plans: dict[str, Any] = {}
        #: The mode the live process was last told (or reported), and ``(request id, mode,
        #: mode before)`` of the set_permission_mode requests not yet confirmed.
        self._mode = context.permission_mode
        self._asked_modes: list[tuple[str, str, str]] = []

    def start(self, agent_session_id: str | None, resume: bool) -> list[Action]:
        # The SDK's first message (PROTOCOLS.md 2.2).
        initialize = control_request("initialize", hooks=None)
        self._initialize_id = initialize["request_id"]
        return [Send(initialize)]

    def prompt(self, prompt: Prompt) -> list[Action]:
        content: str | list[dict[str, Any]] = prompt.text
        if prompt.images:
            content = [*({"type": "image", "source": {"type": "base64", **image}}
                         for image in prompt.images),
                       {"type": "text", "text": prompt.text}]
        return [Send(user_message(content))]

    def receive(self, message: Mapping[str, Any]) -> list[Action]:
        mtype = message.get("type")
        if mtype == "control_request":
            return self._control_request(message)
        if mtype == "control_cancel_request":
            request_id = str(message.get("request_id"))
            if self._requests.pop(request_id, None) is not None:
                return [Withdraw(request_id)]
            return []
        if mtype == "control_response":
            return self._control_response(message)
        actions: list[Action] = []
        after: list[Action] = []
        if mtype == "system" and message.get("subtype") == "init":
            session_id = message.get("session_id")
            if isinstance(session_id, str) and session_id:
                # /clear starts a new agent session (PROTOCOLS.md 7): a later --resume must
                # name that one, or the cleared conversation comes back.
                actions.append(Started(session_id))
            commands = command_list(self._reported_commands, message.get("slash_commands"),
                                    self._context.refused_commands)
            if commands:  # after its agent_session event
                after.append(Offer(commands=commands))
        elif mtype == "system" and message.get("subtype") == "status":
            actions.extend(self._status(message))
        for kind, payload in translate(message, self._context.agent):
            if kind == "tool_use" and payload.get("name") == EXIT_PLAN_MODE:
                self._plans[str(payload.get("tool_use_id"))] = payload.get("input")
            if kind == "result":
                # The runner turns the running total into the turn's cost (CostMeter).
                payload["total_cost_usd"] = message.get("total_cost_usd")
            actions.append(Emit(kind, payload))
        actions.extend(after)
        if mtype == "result":
            actions.append(TurnOver("error" if message.get("is_error") else "completed"))
        return actions

    def answer(self, token: str, answer: Answer) -> list[Action]:
        request = self._requests.pop(token, None)
        if request is None or answer.decision == "cancelled":
            # Withdrawn by the agent, or the turn is being interrupted: the SDK writes no
            # response in either case (PROTOCOLS.md 2.1, 2.3).
            return []
        return [Send(control_success(token, permission_response(request, answer)))]

    def interrupt(self) -> list[Action]:
        return [Send(control_request("interrupt"))]

    def configure(self, model: str | None, permission_mode: str | None) -> list[Action]:
        """``set_permission_mode`` and ``set_model`` (PROTOCOLS.md 2.5)."""
        actions: list[Action] = []
        if permission_mode is not None and permission_mode != self._mode:
            request = control_request("set_permission_mode", mode=permission_mode)
            self._asked_modes.append((request["request_id"], permission_mode, self._mode))
            self._mode = permission_mode
            actions.append(Send(request))
        if model is not None:
            # Without a model Claude Code goes back to its default (2.1.328 [obs]).
            actions.append(Send(control_request("set_model", model=model)
                                if model != DEFAULT_MODEL else control_request("set_model")))
        return actions

    def closed(self) -> list[Action]:
        return []

    # -- control messages ---------------------------------------------------------------

    def _control_request(self, message: Mapping[str, Any]) -> list[Action]:
        request_id = str(message.get("request_id"))
        request = message.get("request") or {}
        if not isinstance(request, Mapping) or request.get("subtype") != "can_use_tool":
            subtype = request.get("subtype") if isinstance(request, Mapping) else None
            return [Send(control_error(request_id,
                                       f"Unsupported control request subtype: {subtype}"))]
        self._requests[request_id] = request
        tool_input = request.get("input") or {}
        tool_use_id = request.get("tool_use_id")
        questions = tool_input.get("questions") if isinstance(tool_input, Mapping) else None
        if request.get("tool_name") == ASK_USER_QUESTION and isinstance(questions, list):
            return [Ask(request_id, "clarify", {"questions": questions,
                                                "tool_use_id": tool_use_id})]
        fields: dict[str, Any] = {"tool_name": str(request.get("tool_name")),
                                  "input": tool_input, "tool_use_id": tool_use_id}
        fields.update((k, request[k]) for k in APPROVAL_EXTRAS if k in request)
        if request.get("tool_name") == EXIT_PLAN_MODE:
            plan = tool_input.get("plan") if isinstance(tool_input, Mapping) else None
            shown = self._plans.get(str(tool_use_id))
            if not isinstance(plan, str) and isinstance(shown, Mapping):
                plan = shown.get("plan")
            if isinstance(plan, str):
                fields["plan"] = plan
        return [Ask(request_id, "approval", fields)]

    def _control_response(self, message: Mapping[str, Any]) -> list[Action]:
        """The answer to ``initialize`` (its ``commands`` and ``models``, PROTOCOLS.md 2.2, 7),
        or a refused ``set_permission_mode`` (``invalid_mode``, or ``bypassPermissions`` as
        root): then the process is back in the mode before, and every client is told."""
        response = message.get("response")
        if not isinstance(response, Mapping):
            return []
        if response.get("subtype") == "error":
            return self._refused(str(response.get("request_id")),
                                 str(response.get("error") or "refused"))
        body = response.get("response")
        if (response.get("subtype") != "success" or not isinstance(body, Mapping)
                or response.get("request_id") != self._initialize_id):
            return []
        self._reported_commands = body.get("commands")
        listed = models_from_initialize(body.get("models"))
        return [Offer(models=listed)] if listed else []

    def _refused(self, request_id: str, error: str) -> list[Action]:
        for index, (asked_id, mode, before) in enumerate(self._asked_modes):
            if asked_id == request_id:
                del self._asked_modes[index]
                if self._mode != mode:
                    return []  # changed again since: the newer request decides
                self._mode = before
                return [Emit("error", {"message": "the agent refused the permission mode "
                                                  f"change: {error}"}),
                        Emit("mode", {"permission_mode": before, "by": "agent"})]
        return []

    def _status(self, message: Mapping[str, Any]) -> list[Action]:
        """A ``system/status``: a ``permissionMode`` the agent took by itself (Claude Code
        leaves Plan mode when its plan is approved), not in answer to :meth:`configure`,
        becomes a ``mode`` event (``by: "agent"``)."""
        mode = message.get("permissionMode")
        if not isinstance(mode, str) or not mode:
            return []
        asked = [m for _, m, _ in self._asked_modes]
        if mode in asked:
            del self._asked_modes[:asked.index(mode) + 1]
            return []
        if self._asked_modes or mode == self._mode:
            return []
        self._mode = mode
        return [Emit("mode", {"permission_mode": mode, "by": "agent"})]
