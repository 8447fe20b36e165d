"""A feed: one client's cursors over several sources, and one flag that wakes it.

A WebSocket may attach several sessions and the inbox; an SSE stream carries one session and,
on request, the inbox. Each source is read by cursor (DESIGN.md rule 2), so a client that
stops reading costs no memory: it is only behind. Sources set the feed's flag when they change
(:meth:`EventLog.watch`, :meth:`Inbox.watch`); the flag carries no data.

The pattern, free of the read-then-wait race: clear the flag, collect, and wait on the flag
only when nothing was collected. A change that lands after the clear sets the flag again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from tether.events import Event
from tether.inbox import Inbox
from tether.stores.base import EventLog

#: Events per source per :meth:`Feed.collect`: bounds one write and keeps sources fair.
BATCH = 500

DeliveryKind = Literal["reset", "events", "caught_up", "detached", "inbox"]


@dataclass(slots=True)
class Delivery:
    """One thing to send.

    - ``reset``: the cursor was past the end of the log or the epoch was stale; a full replay
      follows (``last_event_id`` is the log's).
    - ``events``: ``events`` in id order, after the previous delivery's.
    - ``caught_up``: the replay is done; ``last_event_id`` is the cursor.
    - ``detached``: the session's log closed (deleted, or the server is stopping) and every
      event was delivered; with ``session_id`` None, the inbox closed (server stopping).
    - ``inbox``: ``snapshot`` (:meth:`Inbox.snapshot`).
    """

    kind: DeliveryKind
    session_id: str | None = None
    events: list[Event] = field(default_factory=list)
    last_event_id: int = 0
    snapshot: dict[str, Any] | None = None


@dataclass(slots=True)
class _Attachment:
    log: EventLog
    cursor: int
    reset: bool
    paused: bool = False
    caught_up: bool = False
    #: Its live tail is written by someone else for now (:meth:`Feed.lend`).
    lent: bool = False


class Feed:
    """The sources one client follows. Thread-safe: a reader may attach and detach while a
    sender collects.

    :param epoch: the store's epoch; an ``attach`` naming another one gets a reset.
    :param batch: events per source per collect.
    """

    # One per stream or WebSocket, for as long as it lasts (issue 5: memory per connection).
    __slots__ = ("epoch", "_batch", "_flag", "_lock", "_attachments", "_inbox",
                 "_inbox_snapshots", "_inbox_seen", "_closed", "_paused", "_ticked")

    def __init__(self, epoch: str, batch: int = BATCH) -> None:
        self.epoch = epoch
        self._batch = batch
        self._flag = threading.Event()
        self._lock = threading.Lock()
        self._attachments: dict[str, _Attachment] = {}
        self._inbox: Inbox | None = None
        self._inbox_snapshots = True
        self._inbox_seen = -1
        self._closed = False
        self._paused = False
        self._ticked = False

    # -- sources -----------------------------------------------------------------------

    def attach(self, log: EventLog, after: int = 0, epoch: str | None = None,
               paused: bool = False) -> dict[str, Any]:
        """Follow ``log`` from cursor ``after`` (an event id; 0 replays everything).

        Attaching a session that is already attached moves its cursor. A cursor beyond the
        end of the log, or an ``epoch`` that is not this store's, starts from 0 after a
        ``reset`` delivery.

        :param paused: deliver nothing for it until :meth:`start` (a WebSocket sends its
            reply to ``session.attach`` first).

        :returns: ``{"session_id", "after", "last_event_id", "epoch", "reset"}``.
        """
        # A cursor past this process's view may be one another process served (Redis
        # store): only past the store's end is it a reset.
        last = log.sync(after) if after > log.last_id else log.last_id
        reset = after > last or (epoch is not None and epoch != self.epoch)
        cursor = 0 if reset else after
        with self._lock:
            old = self._attachments.get(log.session_id)
            if old is not None and old.log is not log:
                old.log.unwatch(self._flag)
            self._attachments[log.session_id] = _Attachment(log, cursor, reset, paused)
        log.watch(self._flag)
        self._flag.set()
        return {"session_id": log.session_id, "after": cursor, "last_event_id": last,
                "epoch": self.epoch, "reset": reset}

    def start(self, session_id: str) -> None:
        """Begin delivering a session attached with ``paused=True``."""
        with self._lock:
            attachment = self._attachments.get(session_id)
            if attachment is not None:
                attachment.paused = False
        self._flag.set()

    def detach(self, session_id: str) -> bool:
        """Stop following a session. False when it was not attached."""
        with self._lock:
            attachment = self._attachments.pop(session_id, None)
        if attachment is None:
            return False
        attachment.log.unwatch(self._flag)
        return True

    def subscribe_inbox(self, inbox: Inbox, snapshots: bool = True, seen: int = -1) -> None:
        """Follow the inbox: a snapshot now and after every change, and ``detached`` (with no
        session id) when it closes. With ``snapshots`` False, only the close is delivered:
        how a WebSocket hears that the server is stopping before its client asked for the
        inbox.

        :param seen: the revision the client already has; the first snapshot comes when the
            inbox moves past it (-1: at once).
        """
        with self._lock:
            if self._inbox is not None and self._inbox is not inbox:
                self._inbox.unwatch(self._flag)
            self._inbox = inbox
            self._inbox_snapshots = snapshots
            self._inbox_seen = seen
        inbox.watch(self._flag)
        self._flag.set()

    def unsubscribe_inbox(self) -> bool:
        """Stop following the inbox. False when it was not followed."""
        with self._lock:
            inbox, self._inbox = self._inbox, None
        if inbox is None:
            return False
        inbox.unwatch(self._flag)
        return True

    def pause(self) -> None:
        """Stop being woken by the sources while the client is busy (an SSE stream inside a
        write that may block for seconds): every change of a source costs one set() per
        watching feed, so 500 stalled streams would tax every append. Cursors are kept, and
        the next :meth:`collect` reads by cursor, so nothing is missed. :meth:`resume` undoes
        it; idempotent."""
        with self._lock:
            sources = self._sources() if not self._paused else []
            self._paused = True
        for source in sources:
            source.unwatch(self._flag)

    def resume(self) -> None:
        """Be woken by the sources again; when a change landed while paused, the next
        :meth:`wait` returns at once. Idempotent."""
        with self._lock:
            sources = self._sources() if self._paused and not self._closed else []
            self._paused = False
        for source in sources:
            source.watch(self._flag)
        # Checked after watching again: a change after this point sets the flag itself.
        if sources and self._due():
            self._flag.set()

    def lend(self, session_id: str) -> tuple[EventLog, int] | None:
        """Hand a caught-up session's live tail to another writer (blueprints.fanout: one
        writer per session for every stream that is caught up): until :meth:`reclaim`, the
        log no longer wakes this feed and :meth:`collect` skips it. Other sources (the inbox),
        :meth:`tick`, :meth:`wake` and :meth:`close` still wake it.

        :returns: ``(log, cursor)``, or None when there is something to deliver for it first
            (a reset, the replay, events after the cursor, the close of its log), or it is
            not attached, or the feed is paused or closed.
        """
        with self._lock:
            attachment = self._attachments.get(session_id)
            if (attachment is None or self._closed or self._paused or attachment.paused
                    or attachment.lent or attachment.reset or not attachment.caught_up):
                return None
            log = attachment.log
            if log.closed or attachment.cursor < log.last_id:
                return None
            attachment.lent = True
            cursor = attachment.cursor
        log.unwatch(self._flag)
        return log, cursor

    def reclaim(self, session_id: str, cursor: int) -> None:
        """Take back what :meth:`lend` handed out: ``cursor`` is the last event id the other
        writer wrote (never moved backwards). The next :meth:`next` collects what came after
        it (the flag is set when anything did). Unknown or not lent: nothing."""
        with self._lock:
            attachment = self._attachments.get(session_id)
            if attachment is None or not attachment.lent:
                return
            attachment.lent = False
            attachment.cursor = max(attachment.cursor, cursor)
            log = attachment.log if not (self._paused or self._closed) else None
        if log is not None:
            log.watch(self._flag)
        # Checked after watching again (an append after this point sets the flag itself):
        # what was appended while lent, the next collect reads.
        if self._due():
            self._flag.set()

    def _due(self) -> bool:
        """Whether :meth:`collect` would deliver something now (without delivering it)."""
        with self._lock:
            if self._closed:
                return True
            for attachment in self._attachments.values():
                if attachment.paused or attachment.lent:
                    continue
                log = attachment.log
                if (attachment.reset or not attachment.caught_up or log.closed
                        or attachment.cursor < log.last_id):
                    return True
            inbox = self._inbox
            return inbox is not None and (inbox.closed or (
                self._inbox_snapshots and inbox.revision != self._inbox_seen))

    def _sources(self) -> list[EventLog | Inbox]:
        logs: list[EventLog | Inbox] = [a.log for a in self._attachments.values()
                                        if not a.lent]
        return logs + ([self._inbox] if self._inbox is not None else [])

    def wake(self) -> None:
        """Wake the waiter without a source change (the caller has something else to send)."""
        self._flag.set()

    def tick(self) -> None:
        """Make a :meth:`next` that finds nothing to deliver return ``[]`` now: time for a
        keepalive, by a clock the caller keeps (one for every stream, blueprints.sendguard,
        instead of a timer per wait)."""
        self._ticked = True
        self._flag.set()

    @property
    def attached(self) -> list[str]:
        with self._lock:
            return list(self._attachments)

    def close(self) -> None:
        """Stop following everything (the client went away). Idempotent."""
        with self._lock:
            attachments = list(self._attachments.values())
            self._attachments.clear()
            inbox, self._inbox = self._inbox, None
            self._closed = True
        for attachment in attachments:
            attachment.log.unwatch(self._flag)
        if inbox is not None:
            inbox.unwatch(self._flag)
        self._flag.set()

    # -- delivery ----------------------------------------------------------------------

    def wait(self, timeout: float | None) -> bool:
        """Block until a source changed (or something is left to collect), then clear the
        flag. :returns: False on timeout (``timeout`` in seconds; None waits forever)."""
        woke = self._flag.wait(timeout)
        self._flag.clear()
        return woke

    def collect(self) -> list[Delivery]:
        """Everything due now, without blocking: per session a reset, up to one batch of
        events, ``caught_up`` once the replay is done, ``detached`` once a closed log is
        drained; then, once no replay is under way, an inbox snapshot if the inbox changed.
        When a source has more than one batch waiting, the flag stays set so the next
        :meth:`wait` returns at once.
        """
        out: list[Delivery] = []
        more = False
        with self._lock:
            for session_id, attachment in list(self._attachments.items()):
                if attachment.paused or attachment.lent:
                    continue
                log = attachment.log
                if attachment.reset:
                    attachment.reset = False
                    out.append(Delivery("reset", session_id, last_event_id=log.last_id))
                closed = log.closed  # read before the batch: a close after it is seen next time
                batch = log.read_after(attachment.cursor, self._batch)
                if batch:
                    attachment.cursor = batch[-1].id
                    out.append(Delivery("events", session_id, events=batch))
                if attachment.cursor < log.last_id:
                    more = True
                    continue
                if not attachment.caught_up:
                    attachment.caught_up = True
                    out.append(Delivery("caught_up", session_id,
                                        last_event_id=attachment.cursor))
                if closed:
                    del self._attachments[session_id]
                    log.unwatch(self._flag)
                    out.append(Delivery("detached", session_id,
                                        last_event_id=attachment.cursor))
            inbox = self._inbox
            if more:
                pass  # a replay is still running: the inbox follows it (after caught_up)
            elif inbox is not None and inbox.closed:
                self._inbox = None
                inbox.unwatch(self._flag)
                out.append(Delivery("detached", None))
            elif (inbox is not None and self._inbox_snapshots
                  and inbox.revision != self._inbox_seen):
                snapshot = inbox.snapshot()
                self._inbox_seen = snapshot["revision"]
                out.append(Delivery("inbox", snapshot=snapshot))
        if more:
            self._flag.set()
        return out

    def next(self, timeout: float | None) -> list[Delivery]:
        """Collect, waiting up to ``timeout`` seconds for something to arrive (None: until
        something does, or a :meth:`tick`).

        :returns: the deliveries, or ``[]`` when ``timeout`` passed, or a :meth:`tick` came,
            with nothing new (time for a keepalive), or the feed was closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            if not self._flag.is_set():
                # Nothing changed since the last clear-then-collect (every change, and a
                # batch left over, sets the flag): a collect now would find nothing.
                if deadline is None:
                    self._flag.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._flag.wait(remaining):
                        return []
            self._flag.clear()
            if self._closed:  # a close() between the check and the clear
                break
            out = self.collect()
            if out:
                self._ticked = False  # something goes out: no keepalive due
                return out
            if self._ticked:
                self._ticked = False
                return []
        return []
