"""Server-Sent Events (DESIGN.md, SSE framing; docs/protocol.md, the inbox).

- ``GET /api/sessions/<id>/stream``: ``retry:``, then the replay after the cursor
  (``Last-Event-ID`` wins over ``?after=``), then ``event: caught-up``, then the live tail.
  With ``?inbox=1`` it also carries ``event: inbox`` snapshots, so a tab needs one connection.
- ``GET /api/inbox/stream``: ``event: inbox`` snapshots, now and on every change.

Both send a keepalive when nothing else went out for ``TETHER_KEEPALIVE`` seconds, and both
deliver from a :class:`~tether.feed.Feed`: by cursor from the log, so a slow client is behind,
never a queue on the server (DESIGN.md rule 2).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from flask import Blueprint, Response, request

from blueprints import current_core
from tether import sse
from tether.cursor import parse_cursor, parse_flag
from tether.feed import Delivery, Feed

bp = Blueprint("sse", __name__)

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@bp.get("/api/sessions/<session_id>/stream")
def stream(session_id: str) -> Response:
    core = current_core()
    session = core.get(session_id)
    header = request.headers.get("Last-Event-ID")
    if header is not None:
        cursor = parse_cursor(header.strip(), "Last-Event-ID")
    else:
        cursor = parse_cursor(request.args.get("after"), "after")
    with_inbox = parse_flag(request.args.get("inbox"), "inbox")
    epoch = request.args.get("epoch")

    def follow(feed: Feed) -> None:
        feed.attach(session.log, cursor or 0, epoch)
        if with_inbox:
            feed.subscribe_inbox(core.inbox)

    return _response(follow)


@bp.get("/api/inbox/stream")
def inbox_stream() -> Response:
    inbox = current_core().inbox
    return _response(lambda feed: feed.subscribe_inbox(inbox))


def _response(follow: Callable[[Feed], None]) -> Response:
    core = current_core()
    body = events(Feed(core.epoch), follow, core.settings.keepalive_seconds,
                  core.settings.sse_retry_ms)
    return Response(body, mimetype="text/event-stream", headers=HEADERS)


def events(feed: Feed, follow: Callable[[Feed], None], keepalive_seconds: float,
           retry_ms: int) -> Iterator[bytes]:
    """The stream body. Uses no request context: it outlives the view.

    ``follow(feed)`` subscribes the feed to its sources when the body starts, not in the
    view: a response that is never iterated (a HEAD request, a client gone before the first
    byte) never runs the ``finally`` that unsubscribes. The stream ends when a source closes:
    the session was deleted, or the server is stopping (which closes the inbox too).
    """
    follow(feed)
    try:
        yield sse.retry(retry_ms)
        while True:
            deliveries = feed.next(keepalive_seconds)
            if deliveries:
                yield b"".join(_frame(d, feed.epoch) for d in deliveries)
                if any(d.kind == "detached" for d in deliveries):
                    return
            else:
                # A comment for proxies, and a ping that JavaScript can see (DESIGN.md).
                yield sse.comment("keepalive") + sse.named("ping", {"ts": round(time.time(), 3)})
    finally:
        feed.close()


def _frame(delivery: Delivery, epoch: str) -> bytes:
    if delivery.kind == "events":
        # The events' once-encoded JSON, each framed with its id: one write per batch.
        return b"".join(sse.frame(e.data, e.id) for e in delivery.events)
    if delivery.kind == "caught_up":
        return sse.named("caught-up", {"last_event_id": delivery.last_event_id, "epoch": epoch})
    if delivery.kind == "reset":
        return sse.named("reset", {"epoch": epoch, "last_event_id": delivery.last_event_id})
    if delivery.kind == "inbox":
        return sse.named("inbox", delivery.snapshot)
    return b""  # detached: the stream ends
