"""The inbox: every session's pending approvals and clarify questions, in one place.

One open tab (or phone) hears about any session that needs a person. The inbox keeps no copy
of the requests: a snapshot is built from the sessions' prompt registries when asked, and a
``revision`` counter says when to ask again. Prompt registries call :meth:`Inbox.changed`
after every open and settle; the session registry calls it when a session goes away.

Wake-ups work as for event logs (DESIGN.md rule 2): :meth:`Inbox.wait_for` for one waiter,
:meth:`Inbox.watch` for a :class:`tether.feed.Feed` that waits on several sources at once.
Shapes: docs/protocol.md, "The inbox".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tether.prompts import PendingRequest
from tether.wakeup import Wakeup, WakeupSource

#: Longest ``summary``, in characters.
MAX_SUMMARY_CHARS = 200

#: Which input field names an approval best, per Claude Code tool (PROTOCOLS.md, tool inputs).
_SUMMARY_FIELDS = ("command", "file_path", "notebook_path", "path", "url", "pattern", "query",
                   "description")

#: ``(session_id, session_title, pending requests)`` for every session.
Source = Callable[[], Iterable[tuple[str, str, list[PendingRequest]]]]


class Inbox(WakeupSource):
    """Pending requests across sessions, with a revision that grows on every change.

    :param source: yields each session's id, title and pending requests.
    :param epoch: the store's epoch; revisions restart with it.
    :param revision: the first revision. A server whose epoch outlives it (a durable store)
        starts past every revision its predecessor gave out, so that a client's old revision
        never names a different snapshot.
    """

    def __init__(self, source: Source, epoch: str, revision: int = 0) -> None:
        self._source = source
        self.epoch = epoch
        self._revision = revision
        self._snapshot: dict[str, Any] | None = None
        self._wakeup = Wakeup()
        self._closed = False

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def closed(self) -> bool:
        return self._closed

    def changed(self) -> None:
        """Something pending was opened, settled or dropped: bump the revision, wake waiters."""
        with self._wakeup.lock:
            self._revision += 1
            self._wakeup.notify()

    def wait_for(self, after: int, timeout: float | None) -> bool:
        """Block until the revision is not ``after`` (or the inbox closes).

        :param timeout: seconds; None waits forever.
        :returns: False on timeout.
        """
        return self._wakeup.wait_for(lambda: self._closed or self._revision != after, timeout)

    def snapshot(self) -> dict[str, Any]:
        """``{"revision", "epoch", "entries"}``, oldest entry first.

        The revision is read before the entries, so a change that lands while they are
        gathered bumps the revision past this one and the client asks again: a snapshot may
        be newer than its revision says, never older.

        The dict is built once per revision and shared: callers must not change it.
        """
        revision = self._revision
        cached = self._snapshot
        if cached is not None and cached["revision"] == revision:
            return cached  # every client following the inbox shares one build per revision
        entries = [entry(session_id, title, request)
                   for session_id, title, pending in self._source()
                   for request in pending]
        entries.sort(key=lambda e: e["created_at"])
        snapshot = {"revision": revision, "epoch": self.epoch, "entries": entries}
        self._snapshot = snapshot
        return snapshot


def entry(session_id: str, session_title: str, request: PendingRequest) -> dict[str, Any]:
    """One inbox entry (docs/protocol.md)."""
    fields = request.fields
    approval = request.kind == "approval"
    return {
        "session_id": session_id,
        "session_title": session_title,
        "kind": request.kind,
        "request_id": request.request_id,
        "summary": summary(request),
        "created_at": request.created_at,
        "expires_at": request.expires_at,
        "tool_name": fields.get("tool_name") if approval else None,
        "input": fields.get("input") if approval else None,
        "questions": None if approval else fields.get("questions"),
    }


def summary(request: PendingRequest) -> str:
    """One line: ``Bash: ls -la`` for an approval, the first question for a clarify."""
    fields = request.fields
    if request.kind == "clarify":
        questions = fields.get("questions") or []
        text = str(questions[0].get("question", "")) if questions else ""
        return _one_line(text or "A question")
    tool = str(fields.get("tool_name") or "tool")
    plan = fields.get("plan")
    if tool == "ExitPlanMode":  # Plan mode's plan (tether.runner): its first line says it
        first = next((line.strip(" #") for line in str(plan or "").splitlines()
                      if line.strip(" #")), "")
        return _one_line(f"Plan ready: {first}" if first else "Plan ready for approval")
    tool_input = fields.get("input")
    detail = ""
    if isinstance(tool_input, Mapping):
        for name in _SUMMARY_FIELDS:
            value = tool_input.get(name)
            if isinstance(value, str) and value.strip():
                detail = value
                break
        else:
            detail = json.dumps(tool_input, ensure_ascii=False, default=str) if tool_input else ""
    return _one_line(f"{tool}: {detail}" if detail else tool)


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= MAX_SUMMARY_CHARS:
        return flat
    return flat[: MAX_SUMMARY_CHARS - 1] + "…"
