"""The approval and clarify registry: requests that wait for a human (DESIGN.md rule 6).

A request is appended to the session's log (``approval_request`` / ``clarify_request``) and
held here until the first answer, a timeout or a cancel settles it; the settlement is appended
(``approval_resolved`` / ``clarify_resolved``) *before* the waiting runner wakes, so the log
always shows the answer ahead of whatever the agent does with it.

One lock guards the registry: opening, first-answer-wins and the appends of the request and
resolved events happen under it, so no answer can precede its request in the log and exactly
one answer wins. Lock order is registry, then log; the log never calls back.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tether.errors import AlreadyResolved, BadRequest, NotFound
from tether.stores.base import EventLog

Kind = Literal["approval", "clarify"]
Reason = Literal["user", "timeout", "cancelled", "auto"]

#: ``by`` on approvals that auto-approve settled (docs/protocol.md).
AUTO_APPROVE = "auto-approve"


@dataclass(frozen=True, slots=True)
class Resolution:
    """How a request was settled.

    ``decision`` is ``allow``/``deny`` for approvals; for clarify it is ``allow`` when
    ``answers`` came from a person and ``deny`` when the question went unanswered.
    ``updated_input`` (edit-then-allow) and ``updated_permissions`` (Claude Code's
    ``permission_suggestions``, "allow for this session") are passed back to the agent as is.
    ``option_id`` is the agent's own choice the person picked, one of the request's
    ``options`` (Codex's decisions, an ACP agent's permission options).
    """

    decision: Literal["allow", "deny"]
    reason: Reason
    by: str | None = None
    message: str | None = None
    answers: Mapping[str, str] | None = None
    updated_input: Mapping[str, Any] | None = None
    updated_permissions: list[Any] | None = None
    option_id: str | None = None


@dataclass(slots=True)
class PendingRequest:
    """One approval or clarify request. ``fields`` is what its request event carries."""

    request_id: str
    kind: Kind
    fields: dict[str, Any]
    key: str
    created_at: float
    expires_at: float | None
    resolution: Resolution | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def summary(self) -> dict[str, Any]:
        """The shape listed in the session object's ``pending`` (and later the inbox)."""
        return {"request_id": self.request_id, "kind": self.kind, "created_at": self.created_at,
                "expires_at": self.expires_at, **self.fields}


class PromptRegistry:
    """A session's pending approvals and clarify questions.

    :param log: the session's event log; request and resolved events are appended to it.
    :param timeout_seconds: how long a request may wait; 0 waits forever.
    :param clock: Unix time in seconds (swappable in tests).
    :param on_change: called (outside the lock) after a request opens or settles; the
        inbox's :meth:`~tether.inbox.Inbox.changed`.
    """

    def __init__(self, log: EventLog, timeout_seconds: float,
                 clock: Callable[[], float] = time.time,
                 on_change: Callable[[], None] | None = None) -> None:
        self._log = log
        self._timeout = timeout_seconds
        self._clock = clock
        self._on_change = on_change or (lambda: None)
        #: While True, approvals are allowed as they open (``reason: "auto"``). Clarify
        #: questions still wait for a person.
        self.auto_approve = False
        self._lock = threading.Lock()
        self._pending: dict[str, PendingRequest] = {}
        self._settled: dict[str, PendingRequest] = {}

    # -- opening -------------------------------------------------------------------------

    def open_approval(self, tool_name: str, tool_input: Mapping[str, Any],
                      tool_use_id: str | None, **extra: Any) -> tuple[PendingRequest, bool]:
        """Hold a permission request for ``tool_name``; see :meth:`_open`."""
        return self._open("approval", *approval_fields(tool_name, tool_input, tool_use_id,
                                                       **extra))

    def open_clarify(self, questions: list[Mapping[str, Any]],
                     tool_use_id: str | None) -> tuple[PendingRequest, bool]:
        """Hold a question for the user (Claude Code's ``AskUserQuestion``)."""
        return self._open("clarify", *clarify_fields(questions, tool_use_id))

    def _open(self, kind: Kind, fields: dict[str, Any], key: str) -> tuple[PendingRequest, bool]:
        """Open a request, or return the identical one already pending (never stacked).

        With :attr:`auto_approve` on, an approval is settled as ``allow`` (reason ``auto``)
        right after its request event, so the log still shows both.

        :returns: ``(request, created)``; ``created`` is False for a duplicate.
        """
        with self._lock:
            for request in self._pending.values():
                if request.kind == kind and request.key == key:
                    return request, False
            now = self._clock()
            expires = round(now + self._timeout, 3) if self._timeout > 0 else None
            request = PendingRequest(uuid.uuid4().hex, kind, fields, key, round(now, 3), expires)
            # Appended first: an input the log refuses (NaN, say) leaves nothing pending.
            self._log.append(f"{kind}_request",
                             {"request_id": request.request_id, **fields, "expires_at": expires})
            self._pending[request.request_id] = request
            auto = kind == "approval" and self.auto_approve
            if auto:
                self._finish(request, Resolution("allow", "auto", by=AUTO_APPROVE))
        if auto:
            request.done.set()
        self._on_change()
        return request, True

    # -- settling ------------------------------------------------------------------------

    def answer_approval(self, request_id: str, decision: str, *, by: str | None = None,
                        message: str | None = None,
                        updated_input: Mapping[str, Any] | None = None,
                        updated_permissions: list[Any] | None = None,
                        option_id: str | None = None) -> PendingRequest:
        """A person's decision on an approval; ``option_id``: the agent's own option they
        picked (:func:`check_option`, which also refuses an edited input or permission rules
        for a request with options).

        :raises NotFound: no such approval in this session.
        :raises AlreadyResolved: another answer, a timeout or a cancel got there first.
        :raises BadRequest: ``decision`` is neither ``allow`` nor ``deny``; ``option_id`` is
            not one of the request's options, or says the opposite of ``decision``; the
            request has options and the answer edits its input or adds permission rules.
        """
        resolution = person_decision(decision, by, message, updated_input, updated_permissions,
                                     option_id)
        with self._lock:
            request = self._pending.get(request_id)
        if request is not None and request.kind == "approval":
            check_option(request.fields, resolution)
        return self._settle(request_id, "approval", resolution)

    def answer_clarify(self, request_id: str, answers: Mapping[str, str], *,
                       by: str | None = None) -> PendingRequest:
        """A person's answers, keyed by question text (PROTOCOLS.md 2.4).

        :raises NotFound: no such question in this session.
        :raises AlreadyResolved: settled already.
        :raises BadRequest: an answer names a question that was not asked.
        """
        with self._lock:
            request = self._pending.get(request_id) or self._settled.get(request_id)
        if request is not None and request.kind == "clarify":
            asked = {q["question"] for q in request.fields["questions"]}
            unknown = sorted(set(answers) - asked)
            if unknown:
                raise BadRequest(f"answers name questions that were not asked: {unknown}")
        resolution = Resolution("allow", "user", by=by, answers=dict(answers))
        return self._settle(request_id, "clarify", resolution)

    def wait(self, request: PendingRequest) -> Resolution:
        """Block until ``request`` is settled; past its ``expires_at`` settle it as a timeout.

        A timeout resolves an approval as ``deny`` and a question as unanswered, both with
        ``reason: "timeout"``; if a person answered at the same instant, the person wins.
        """
        remaining = None if request.expires_at is None else request.expires_at - self._clock()
        if not request.done.wait(None if remaining is None else max(remaining, 0)):
            message = f"No answer within {self._timeout:g} seconds; Tether denied it."
            self._try_settle(request, Resolution("deny", "timeout", message=message))
        request.done.wait()
        assert request.resolution is not None
        return request.resolution

    def cancel(self, request_id: str, message: str = "The turn was cancelled.") -> bool:
        """Settle one request as ``cancelled`` (the agent withdrew it). False if settled."""
        with self._lock:
            request = self._pending.get(request_id)
        if request is None:
            return False
        return self._try_settle(request, Resolution("deny", "cancelled", message=message))

    def cancel_all(self, message: str = "The turn was cancelled.") -> int:
        """Settle every pending request as ``cancelled``; returns how many it settled."""
        with self._lock:
            requests = list(self._pending.values())
        return sum(self._try_settle(r, Resolution("deny", "cancelled", message=message))
                   for r in requests)

    def pending(self) -> list[PendingRequest]:
        """Requests still waiting, oldest first."""
        with self._lock:
            return sorted(self._pending.values(), key=lambda r: r.created_at)

    def _settle(self, request_id: str, kind: Kind, resolution: Resolution) -> PendingRequest:
        with self._lock:
            request = self._pending.get(request_id)
            if request is None or request.kind != kind:
                settled = self._settled.get(request_id)
                if settled is not None and settled.kind == kind:
                    raise AlreadyResolved(f"{kind} {request_id} is already resolved "
                                          f"({_describe(settled.resolution)})")
                raise NotFound(f"no {kind} request {request_id} in this session")
            self._finish(request, resolution)
        request.done.set()
        self._on_change()
        return request

    def _try_settle(self, request: PendingRequest, resolution: Resolution) -> bool:
        with self._lock:
            if request.request_id not in self._pending:
                return False
            self._finish(request, resolution)
        request.done.set()
        self._on_change()
        return True

    def _finish(self, request: PendingRequest, resolution: Resolution) -> None:
        # Under self._lock: the resolved event is appended before any waiter wakes.
        del self._pending[request.request_id]
        self._settled[request.request_id] = request
        request.resolution = resolution
        self._log.append(f"{request.kind}_resolved",
                         resolved_payload(request.request_id, request.kind, resolution))


def resolved_payload(request_id: str, kind: Kind, resolution: Resolution) -> dict[str, Any]:
    """The payload of the ``approval_resolved`` / ``clarify_resolved`` event that settles
    request ``request_id`` (docs/protocol.md)."""
    payload: dict[str, Any] = {"request_id": request_id, "reason": resolution.reason,
                               "by": resolution.by}
    if kind == "approval":
        # What the agent was actually allowed to do: an edited input, session-wide rules.
        payload.update(decision=resolution.decision, message=resolution.message,
                       updated_input=_plain(resolution.updated_input),
                       updated_permissions=resolution.updated_permissions)
        if resolution.option_id is not None:
            payload["option_id"] = resolution.option_id
    else:
        payload.update(answers=dict(resolution.answers or {}), message=resolution.message)
    return payload


def resolution_from(kind: str, payload: Mapping[str, Any]) -> Resolution:
    """The :class:`Resolution` a resolved event's payload carries (its inverse:
    :func:`resolved_payload`)."""
    if kind == "approval":
        return Resolution(payload.get("decision", "deny"), payload.get("reason", "user"),
                          by=payload.get("by"), message=payload.get("message"),
                          updated_input=payload.get("updated_input"),
                          updated_permissions=payload.get("updated_permissions"),
                          option_id=payload.get("option_id"))
    answers = payload.get("answers") or {}
    return Resolution("allow" if payload.get("reason") == "user" else "deny",
                      payload.get("reason", "user"), by=payload.get("by"),
                      message=payload.get("message"), answers=answers)


def describe(resolution: Resolution | None) -> str:
    """How a request was settled, for the 409 ``already_resolved`` message."""
    return _describe(resolution)


def person_decision(decision: str, by: str | None, message: str | None,
                    updated_input: Mapping[str, Any] | None,
                    updated_permissions: list[Any] | None,
                    option_id: str | None = None) -> Resolution:
    """A person's answer to an approval. :raises BadRequest: ``decision`` is neither
    ``allow`` nor ``deny``."""
    if decision not in ("allow", "deny"):
        raise BadRequest("decision must be 'allow' or 'deny'")
    return Resolution(decision, "user", by=by, message=message,  # type: ignore[arg-type]
                      updated_input=updated_input, updated_permissions=updated_permissions,
                      option_id=option_id)


def check_option(fields: Mapping[str, Any], resolution: Resolution) -> None:
    """An answer's ``option_id`` against the approval's ``options`` (``[{"option_id",
    "label", "kind"}]``, kinds as ACP's ``PermissionOptionKind``: ``allow_once``,
    ``allow_always``, ``reject_once``, ``reject_always``).

    An agent that offers options takes nothing else: no edited input, no permission rules
    (Codex and ACP answer with an option alone; an edited command would be dropped and the
    original one run), so an answer carrying either is refused too.

    :raises BadRequest: the request offers no such option, or offers none at all; or the
        option's kind says the opposite of the decision (an ``allow`` with a ``reject_*``);
        or the request has options and the answer has ``updated_input`` or
        ``updated_permissions``.
    """
    options = [o for o in fields.get("options") or () if isinstance(o, Mapping)]
    if options and (resolution.updated_input is not None
                    or resolution.updated_permissions is not None):
        what = "an edited input" if resolution.updated_input is not None else \
            "permission rules"
        offered = ", ".join(str(o.get("option_id")) for o in options)
        raise BadRequest(f"this agent answers with its own options only and cannot take "
                         f"{what}: send one of {offered} as option_id")
    if resolution.option_id is None:
        return
    chosen = next((o for o in options if o.get("option_id") == resolution.option_id), None)
    if chosen is None:
        offered = ", ".join(str(o.get("option_id")) for o in options) or "none"
        raise BadRequest(f"option_id {resolution.option_id[:80]!r} is not one of this "
                         f"request's options: {offered}")
    kind = str(chosen.get("kind", ""))
    if kind.startswith("reject") != (resolution.decision == "deny"):
        raise BadRequest(f"option {resolution.option_id!r} ({kind}) does not "
                         f"{resolution.decision} the request; send its decision")


def approval_fields(tool_name: str, tool_input: Mapping[str, Any], tool_use_id: str | None,
                    **extra: Any) -> tuple[dict[str, Any], str]:
    """An approval's fields (what its request event carries) and its dedupe key."""
    fields = {"tool_name": tool_name, "input": dict(tool_input), "tool_use_id": tool_use_id,
              **extra}
    return fields, _key(tool_name, tool_input)


def clarify_fields(questions: list[Mapping[str, Any]],
                   tool_use_id: str | None) -> tuple[dict[str, Any], str]:
    """A question's fields (normalized, :func:`_question`) and its dedupe key."""
    normalized = [_question(q) for q in questions]
    return ({"questions": normalized, "tool_use_id": tool_use_id},
            _key("AskUserQuestion", normalized))


def _plain(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(value)


def _key(name: str, value: Any) -> str:
    """A dedupe key: the tool name and its canonical JSON input."""
    return name + ":" + json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _question(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Normalize one AskUserQuestion question (``multiSelect`` becomes ``multi_select``)."""
    options = [{"label": str(o.get("label", "")), "description": str(o.get("description", ""))}
               for o in raw.get("options") or [] if isinstance(o, Mapping)]
    return {"question": str(raw.get("question", "")), "header": str(raw.get("header", "")),
            "options": options, "multi_select": bool(raw.get("multiSelect", False))}


def _describe(resolution: Resolution | None) -> str:
    if resolution is None:
        return "unknown"
    if resolution.reason in ("user", "auto"):
        return f"answered by {resolution.by or 'another client'}"
    return resolution.reason
