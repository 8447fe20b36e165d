"""Server-Sent Events: ``GET /api/sessions/<id>/stream`` (DESIGN.md, SSE framing).

``retry:``, then the replay after the cursor (``Last-Event-ID`` wins over ``?after=``), then
``event: caught-up``, then the live tail, with a keepalive when nothing else went out for
``TETHER_KEEPALIVE`` seconds. Delivery is by cursor from the log: a slow client is behind,
never a queue on the server (DESIGN.md rule 2).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Blueprint, Response, request

from blueprints import current_core
from tether import sse
from tether.cursor import parse_cursor
from tether.events import Event
from tether.stores.base import EventLog

bp = Blueprint("sse", __name__)

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

#: Events per write during replay and tail; several frames are coalesced into one write.
BATCH = 500


@bp.get("/api/sessions/<session_id>/stream")
def stream(session_id: str) -> Response:
    core = current_core()
    session = core.get(session_id)
    header = request.headers.get("Last-Event-ID")
    if header is not None:
        cursor = parse_cursor(header.strip(), "Last-Event-ID")
    else:
        cursor = parse_cursor(request.args.get("after"), "after")
    epoch = request.args.get("epoch")
    settings = core.settings
    body = events(session.log, cursor or 0, core.epoch, settings.keepalive_seconds,
                  settings.sse_retry_ms, reset=epoch not in (None, core.epoch))
    return Response(body, mimetype="text/event-stream", headers=HEADERS)


def events(log: EventLog, cursor: int, epoch: str, keepalive_seconds: float, retry_ms: int,
           reset: bool = False) -> Iterator[bytes]:
    """The stream body. Uses no request context: it outlives the view.

    A cursor beyond the end of the log, or a stale ``epoch``, gets ``event: reset`` and the
    full replay: never silence, never a guess.
    """
    yield sse.retry(retry_ms)
    if reset or cursor > log.last_id:
        yield sse.named("reset", {"epoch": epoch, "last_event_id": log.last_id})
        cursor = 0
    while batch := log.read_after(cursor, BATCH):
        yield _frames(batch)
        cursor = batch[-1].id
    yield sse.named("caught-up", {"last_event_id": cursor, "epoch": epoch})
    while not log.closed:
        if log.wait_for(cursor, keepalive_seconds):
            batch = log.read_after(cursor, BATCH)
            if batch:
                yield _frames(batch)
                cursor = batch[-1].id
        else:
            # A comment for proxies, and a ping that JavaScript can see (DESIGN.md).
            yield sse.comment("keepalive") + sse.named("ping", {"ts": round(time.time(), 3)})


def _frames(batch: list[Event]) -> bytes:
    """One write for a batch: the events' once-encoded JSON, each framed with its id."""
    return b"".join(sse.frame(e.data, e.id) for e in batch)
