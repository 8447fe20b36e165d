"""Long-poll and poll (DESIGN.md section 4; docs/protocol.md, the inbox).

- ``GET /api/sessions/<id>/events?after=&wait=&limit=&inbox=``: ``wait`` = 0 (the default)
  answers at once; ``wait`` > 0 holds the request until one event exists after ``after``
  (within a wake-up, not a poll interval) or ``wait`` seconds pass, then answers with an empty
  list. With ``inbox=R`` (an inbox revision; 0 for "none yet") the wait also ends when the
  inbox changes, and the answer carries ``"inbox": snapshot`` whenever its revision is not
  ``R``: one connection per tab on the poll transport too.
- ``GET /api/inbox?after=R&wait=S``: the inbox snapshot; with ``wait`` > 0, held until the
  revision is not ``R``.

``wait`` is clamped to :data:`MAX_WAIT_SECONDS`, ``limit`` to :data:`MAX_LIMIT`. A cursor
beyond the end of the log answers from the start with ``"reset": true``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Blueprint, Response, request

from blueprints import current_core
from tether.cursor import parse_cursor, parse_limit, parse_seconds
from tether.feed import Feed
from tether.inbox import Inbox
from tether.metrics import Metrics
from tether.stores.base import EventLog

bp = Blueprint("poll", __name__)

#: The longest long-poll, in seconds: below 60 s, the read timeout of nginx (proxy_read_timeout)
#: and of many other proxies by default, so that a long-poll at its maximum is answered by
#: Tether rather than cut off by a proxy with a 504 (README, Deployment).
MAX_WAIT_SECONDS = 50.0
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
NO_STORE = {"Cache-Control": "no-store"}


@bp.get("/api/sessions/<session_id>/events")
def events(session_id: str) -> Response:
    core = current_core()
    session = core.get(session_id)
    after = parse_cursor(request.args.get("after"), "after") or 0
    wait = parse_seconds(request.args.get("wait"), "wait", 0.0, MAX_WAIT_SECONDS)
    limit = parse_limit(request.args.get("limit"), "limit", DEFAULT_LIMIT, MAX_LIMIT)
    inbox_seen = parse_cursor(request.args.get("inbox"), "inbox")
    log, inbox = session.log, core.inbox
    # Past this worker's view is not past the end until the store says so (EventLog.sync).
    reset = after > log.last_id and after > log.sync(after)
    if reset:
        after = 0
    elif wait > 0:
        with _waiting(core.metrics):
            _wait(core.epoch, log, after, inbox, inbox_seen, wait)
    batch = log.read_after(after, limit)
    core.metrics.delivering("poll", batch)
    # The events' bytes were encoded once, at append; only the frame is built here.
    tail = {"last_event_id": batch[-1].id if batch else after, "turn_active": session.turn_active,
            "epoch": core.epoch, "reset": reset}
    if inbox_seen is not None and inbox.revision != inbox_seen:
        tail["inbox"] = inbox.snapshot()
    body = (b'{"events":[' + b",".join(e.data for e in batch) + b"],"
            + json.dumps(tail, separators=(",", ":")).encode()[1:])
    return Response(body, mimetype="application/json", headers=NO_STORE)


def _wait(epoch: str, log: EventLog, after: int, inbox: Inbox, inbox_seen: int | None,
          wait: float) -> None:
    """Hold the request until an event after ``after`` exists (or, with ``inbox_seen``, the
    inbox revision is not ``inbox_seen``), or ``wait`` seconds pass."""
    if inbox_seen is None:
        log.wait_for(after, wait)
    elif inbox.revision == inbox_seen and log.last_id <= after:
        # Wait on the log and the inbox at once (tether.feed: no read-then-wait race).
        feed = Feed(epoch)
        try:
            feed.attach(log, after)
            feed.subscribe_inbox(inbox)
            feed.wait(0)  # the flag the subscriptions set; the check below re-reads
            if log.last_id <= after and inbox.revision == inbox_seen:
                feed.wait(wait)
        finally:
            feed.close()


@contextmanager
def _waiting(metrics: Metrics) -> Iterator[None]:
    """Count a long-poll as a connected client while it waits."""
    metrics.clients.labels("poll").inc()
    try:
        yield
    finally:
        metrics.clients.labels("poll").dec()


@bp.get("/api/inbox")
def inbox() -> Response:
    core = current_core()
    inbox = core.inbox
    after = parse_cursor(request.args.get("after"), "after")
    wait = parse_seconds(request.args.get("wait"), "wait", 0.0, MAX_WAIT_SECONDS)
    if wait > 0 and after is not None:
        with _waiting(core.metrics):
            inbox.wait_for(after, wait)
    return Response(json.dumps(inbox.snapshot(), separators=(",", ":")),
                    mimetype="application/json", headers=NO_STORE)
