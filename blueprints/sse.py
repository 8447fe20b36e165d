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
from collections.abc import Iterator

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
    feed = Feed(core.epoch)
    feed.attach(session.log, cursor or 0, request.args.get("epoch"))
    if with_inbox:
        feed.subscribe_inbox(core.inbox)
    return _response(feed)


@bp.get("/api/inbox/stream")
def inbox_stream() -> Response:
    feed = Feed(current_core().epoch)
    feed.subscribe_inbox(current_core().inbox)
    return _response(feed)


def _response(feed: Feed) -> Response:
    settings = current_core().settings
    body = events(feed, settings.keepalive_seconds, settings.sse_retry_ms)
    return Response(body, mimetype="text/event-stream", headers=HEADERS)


def events(feed: Feed, keepalive_seconds: float, retry_ms: int) -> Iterator[bytes]:
    """The stream body. Uses no request context: it outlives the view.

    The stream ends when a source it follows closes: the session was deleted, or the server
    is stopping (which closes the inbox too).
    """
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
