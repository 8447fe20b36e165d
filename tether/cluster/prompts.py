"""A session's approvals and questions, shared by every worker (SCALE-OUT.md section 6).

The same surface as :class:`tether.prompts.PromptRegistry`, with Redis holding the state:
opening (owner only, fenced), answering (any worker: first answer wins across workers, in
one function that moves the request from pending to settled and appends the resolved
event), listing. The owner's waiting runner is woken by its own view of the log: an
``*_resolved`` event for a request it waits on (:meth:`ClusterPrompts.resolved`), never by
a call from the worker that took the answer; so the answer is in the log before the agent
hears of it (DESIGN.md rule 6).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from tether.cluster.envelopes import rest
from tether.cluster.errors import available
from tether.errors import AlreadyResolved, BadRequest, NotFound
from tether.events import Event
from tether.prompts import (
    AUTO_APPROVE,
    Kind,
    PendingRequest,
    Resolution,
    approval_fields,
    check_option,
    clarify_fields,
    describe,
    person_decision,
    resolution_from,
    resolved_payload,
)
from tether.stores.redis import RedisStore, Refused

#: Seconds between a waiter's checks that its session is still its own to wait on.
WAIT_CHECK_SECONDS = 1.0


class ClusterPrompts:
    """Session ``session_id``'s pending approvals and questions, in Redis.

    :param fence: returns this worker's fencing token for the session (``""`` when it does
        not own it); requests are opened under it.
    :param timeout_seconds: how long a request may wait; 0 waits forever.
    :param auto_allowed: ``TETHER_ALLOW_AUTO_APPROVE``: off, no approval this worker opens
        is settled by auto-approve, whatever the session says.
    """

    def __init__(self, store: RedisStore, session_id: str, timeout_seconds: float,
                 fence: Callable[[], str], clock: Callable[[], float] = time.time,
                 auto_allowed: bool = True) -> None:
        self._store = store
        self._auto_allowed = auto_allowed  # TETHER_ALLOW_AUTO_APPROVE on the owner
        self._sid = session_id
        self._timeout = timeout_seconds
        self._fence = fence
        self._clock = clock
        self._lock = threading.Lock()
        #: Requests this worker's runner waits on, by id.
        self._waiting: dict[str, PendingRequest] = {}

    @property
    @available
    def auto_approve(self) -> bool:
        return self._store.client.hget(self._store.key(self._sid, "rec"), "auto_approve") \
            == b"1"

    # -- opening (the owner) -----------------------------------------------------------

    def open_approval(self, tool_name: str, tool_input: Mapping[str, Any],
                      tool_use_id: str | None, **extra: Any) -> tuple[PendingRequest, bool]:
        return self._open("approval", *approval_fields(tool_name, tool_input, tool_use_id,
                                                       **extra))

    def open_clarify(self, questions: list[Mapping[str, Any]],
                     tool_use_id: str | None) -> tuple[PendingRequest, bool]:
        return self._open("clarify", *clarify_fields(questions, tool_use_id))

    def _open(self, kind: Kind, fields: dict[str, Any],
              key: str) -> tuple[PendingRequest, bool]:
        """Open a request, or return the identical one pending (never stacked). With the
        session's auto-approve on (read by the function itself), an approval is settled at
        once, ``reason: "auto"``.

        :raises ValueError: the fields are not JSON (nothing is pending then).
        :raises tether.errors.Fenced: another worker owns the session now.
        """
        now = self._clock()
        expires = round(now + self._timeout, 3) if self._timeout > 0 else None
        request = PendingRequest(uuid.uuid4().hex, kind, fields, key, round(now, 3), expires)
        rid = request.request_id
        auto = Resolution("allow", "auto", by=AUTO_APPROVE)
        request_rest = rest(self._sid, now, f"{kind}_request",
                            {"request_id": rid, **fields, "expires_at": expires})
        auto_rest = rest(self._sid, now, "approval_resolved",
                         resolved_payload(rid, kind, auto))
        pending = json.dumps({"kind": kind, "fields": fields, "key": key,
                              "created_at": request.created_at, "expires_at": expires})
        with self._lock:
            self._waiting[rid] = request  # its resolved event may arrive before the reply
        try:
            got, created, automatic = self._store.call(
                "open_prompt", self._sid, self._fence(), rid, kind, key, pending, request_rest,
                auto_rest, describe(auto), int(self._auto_allowed))
        except BaseException:
            with self._lock:
                self._waiting.pop(rid, None)
            raise
        if not int(created):
            with self._lock:
                self._waiting.pop(rid, None)
                same = self._waiting.get(got.decode())
            return (same or self._load(got.decode()) or request), False
        if int(automatic):
            with self._lock:
                self._waiting.pop(rid, None)
            self._settled(request, auto)
        return request, True

    # -- answering (any worker) ----------------------------------------------------------

    @available
    def answer_approval(self, request_id: str, decision: str, *, by: str | None = None,
                        message: str | None = None,
                        updated_input: Mapping[str, Any] | None = None,
                        updated_permissions: list[Any] | None = None,
                        option_id: str | None = None) -> PendingRequest:
        """See :meth:`tether.prompts.PromptRegistry.answer_approval`."""
        resolution = person_decision(decision, by, message, updated_input, updated_permissions,
                                     option_id)
        if option_id is not None or updated_input is not None \
                or updated_permissions is not None:
            request = self._load(request_id)
            if request is not None and request.kind == "approval":
                check_option(request.fields, resolution)
        return self._settle(request_id, "approval", resolution)

    @available
    def answer_clarify(self, request_id: str, answers: Mapping[str, str], *,
                       by: str | None = None) -> PendingRequest:
        """See :meth:`tether.prompts.PromptRegistry.answer_clarify`."""
        request = self._load(request_id)
        if request is not None and request.kind == "clarify":
            asked = {q["question"] for q in request.fields["questions"]}
            unknown = sorted(set(answers) - asked)
            if unknown:
                raise BadRequest(f"answers name questions that were not asked: {unknown}")
        resolution = Resolution("allow", "user", by=by, answers=dict(answers))
        return self._settle(request_id, "clarify", resolution)

    def _settle(self, request_id: str, kind: Kind, resolution: Resolution) -> PendingRequest:
        """One function: the first answer moves the request to settled and appends its
        resolved event; any other gets :class:`AlreadyResolved`.

        :raises NotFound: no such request of that kind in this session.
        """
        payload = rest(self._sid, self._clock(), f"{kind}_resolved",
                       resolved_payload(request_id, kind, resolution))
        try:
            reply = self._store.call("settle", self._sid, request_id, kind, payload,
                                     describe(resolution))
        except Refused as exc:
            if exc.code == "NOT_FOUND":
                raise NotFound(f"no {kind} request {request_id[:80]} in this session") from None
            raise
        if isinstance(reply, list):
            raise AlreadyResolved(f"{kind} {request_id} is already resolved "
                                  f"({reply[1].decode()})")
        return PendingRequest(request_id, kind, {}, "", 0.0, None, resolution)

    # -- the owner's runner ------------------------------------------------------------

    def wait(self, request: PendingRequest) -> Resolution:
        """Block until ``request`` is settled (its resolved event reached this worker);
        past its ``expires_at`` settle it as a timeout (an answer at the same instant wins).
        A request :meth:`abandon`\\ ed (the session was closed, or taken over) returns
        ``cancelled``."""
        while not request.done.is_set():
            remaining = (None if request.expires_at is None
                         else request.expires_at - self._clock())
            if remaining is not None and remaining <= 0:
                message = f"No answer within {self._timeout:g} seconds; Tether denied it."
                self._try_settle(request, Resolution("deny", "timeout", message=message))
                request.done.wait(WAIT_CHECK_SECONDS)
                continue
            request.done.wait(WAIT_CHECK_SECONDS if remaining is None
                              else min(remaining, WAIT_CHECK_SECONDS))
        assert request.resolution is not None
        return request.resolution

    def cancel(self, request_id: str, message: str = "The turn was cancelled.") -> bool:
        """Settle one request as ``cancelled``. False if it was settled already."""
        with self._lock:
            request = self._waiting.get(request_id)
        return request is not None and self._try_settle(
            request, Resolution("deny", "cancelled", message=message))

    def cancel_all(self, message: str = "The turn was cancelled.") -> int:
        """Settle every request this worker waits on as ``cancelled``."""
        with self._lock:
            requests = list(self._waiting.values())
        return sum(self._try_settle(r, Resolution("deny", "cancelled", message=message))
                   for r in requests)

    def _try_settle(self, request: PendingRequest, resolution: Resolution) -> bool:
        try:
            self._settle(request.request_id, request.kind, resolution)
        except (AlreadyResolved, NotFound, RuntimeError):
            return False  # answered meanwhile (its event wakes the waiter), or closed
        return True

    def resolved(self, event: Event) -> None:
        """A ``*_resolved`` event reached this worker's view of the log: wake the runner
        waiting on that request, with the resolution the event carries."""
        request_id = str(event.payload.get("request_id"))
        with self._lock:
            request = self._waiting.pop(request_id, None)
        if request is not None:
            self._settled(request, resolution_from(request.kind, event.payload))

    def abandon(self, message: str) -> None:
        """Wake every waiter with ``cancelled``, writing nothing (the session is closed, or
        another worker took it over and settled its requests)."""
        with self._lock:
            requests = list(self._waiting.values())
            self._waiting.clear()
        for request in requests:
            self._settled(request, Resolution("deny", "cancelled", message=message))

    @staticmethod
    def _settled(request: PendingRequest, resolution: Resolution) -> None:
        if request.resolution is None:
            request.resolution = resolution
        request.done.set()

    # -- reading -----------------------------------------------------------------------

    @available
    def pending(self) -> list[PendingRequest]:
        """Requests still waiting, oldest first."""
        raw = self._store.client.hgetall(self._store.key(self._sid, "pending"))
        return pending_from(raw)

    def _load(self, request_id: str) -> PendingRequest | None:
        raw = self._store.client.hget(self._store.key(self._sid, "pending"), request_id)
        return None if raw is None else _request(request_id, raw)


def pending_from(raw: Mapping[bytes, bytes]) -> list[PendingRequest]:
    """The requests of a ``pending`` hash (``HGETALL``), oldest first."""
    requests = [_request(rid.decode(), value) for rid, value in raw.items()]
    return sorted(requests, key=lambda r: (r.created_at, r.request_id))


def _request(request_id: str, raw: bytes) -> PendingRequest:
    held = json.loads(raw)
    return PendingRequest(request_id, held["kind"], held["fields"], held["key"],
                          held["created_at"], held["expires_at"])
