"""Server-Sent Events (DESIGN.md, SSE framing; docs/protocol.md, the inbox).

- ``GET /api/sessions/<id>/stream``: ``retry:``, then the replay after the cursor
  (``Last-Event-ID`` wins over ``?after=``), then ``event: caught-up``, then the live tail.
  With ``?inbox=1`` it also carries ``event: inbox`` snapshots, so a tab needs one connection.
- ``GET /api/inbox/stream``: ``event: inbox`` snapshots, now and on every change.

Both send a keepalive when nothing else went out for ``TETHER_KEEPALIVE`` seconds, and both
deliver from a :class:`~tether.feed.Feed`: by cursor from the log, so a slow client is behind,
never a queue on the server (DESIGN.md rule 2). A write that cannot complete within
:data:`~blueprints.sendguard.SEND_TIMEOUT_SECONDS` (10 s), or a peer that is gone (closed,
reset, half-open), closes the stream (blueprints.sendguard); the client resumes from its
cursor. When the server stops, a stream ends with ``event: shutdown`` after the last event of
its log (:data:`SHUTDOWN`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Blueprint, Response, request

from blueprints import current_core
from blueprints.sendguard import REAPER, Reaper, Watch, limit_unsent, stream_socket
from tether import sse
from tether.cursor import parse_cursor, parse_flag
from tether.errors import NotFound
from tether.feed import Delivery, Feed
from tether.metrics import Metrics
from tether.sessions import SessionRegistry

bp = Blueprint("sse", __name__)

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: The last frame of a stream the server closes because it is stopping (docs/protocol.md):
#: the client reconnects, with backoff, from its cursor.
SHUTDOWN = sse.named("shutdown", {"reason": "server stopping"})
#: Bytes per write: frames are joined up to this size (one frame may exceed it).
CHUNK_BYTES = 16 * 1024


@bp.get("/api/sessions/<session_id>/stream")
def stream(session_id: str) -> Response:
    core = current_core()
    session = core.get(session_id)
    # Both are checked; the header, when present, wins (DESIGN.md). Only HTTP's optional
    # whitespace (RFC 9110 5.5: space, tab) is trimmed from it, not str.strip()'s Unicode set.
    cursor = parse_cursor(request.args.get("after"), "after")
    header = request.headers.get("Last-Event-ID")
    if header is not None:
        cursor = parse_cursor(header.strip(" \t"), "Last-Event-ID")
    with_inbox = parse_flag(request.args.get("inbox"), "inbox")
    epoch = request.args.get("epoch")

    def follow(feed: Feed) -> None:
        feed.attach(session.log, cursor or 0, epoch)
        if with_inbox:
            feed.subscribe_inbox(core.inbox)

    return _response(follow, _server_stopping(core))


@bp.get("/api/inbox/stream")
def inbox_stream() -> Response:
    core = current_core()
    return _response(lambda feed: feed.subscribe_inbox(core.inbox), _server_stopping(core))


def _response(follow: Callable[[Feed], None],
              stopping: Callable[[Delivery], bool]) -> Response:
    core = current_core()
    body = events(Feed(core.epoch), follow, core.settings.keepalive_seconds,
                  core.settings.sse_retry_ms, stream_socket(request.environ), stopping,
                  metrics=core.metrics)
    return Response(body, mimetype="text/event-stream", headers=HEADERS)


def events(feed: Feed, follow: Callable[[Feed], None], keepalive_seconds: float,
           retry_ms: int, sock: Any = None,
           stopping: Callable[[Delivery], bool] = lambda delivery: False,
           reaper: Reaper = REAPER, metrics: Metrics | None = None) -> Iterator[bytes]:
    """The stream body. Uses no request context: it outlives the view.

    ``follow(feed)`` subscribes the feed to its sources when the body starts, not in the
    view: a response that is never iterated (a HEAD request, a client gone before the first
    byte) never runs the ``finally`` that unsubscribes. The stream ends when a source closes:
    the session was deleted, or the server is stopping (``stopping(delivery)`` says which),
    which is announced with a last ``event: shutdown`` (:data:`SHUTDOWN`).

    With ``sock`` (the client's socket), ``reaper`` closes the stream when one write takes over
    the send timeout or the peer is gone (blueprints.sendguard); the client resumes from its
    cursor. ``metrics`` counts the stream and what it delivers (tether.metrics).
    """
    follow(feed)
    if metrics is not None:
        metrics.clients.labels("sse").inc()
    watch = reaper.watch(sock, feed.close) if sock is not None else None
    if sock is not None:
        limit_unsent(sock)
    try:
        for batch in _batches(feed, keepalive_seconds, retry_ms, stopping, watch, metrics):
            # Frames are built lazily and written CHUNK_BYTES at a time, and nothing else is
            # held across the write, so a blocked stream holds one chunk (twice: gunicorn
            # copies it to add the chunked framing), not a batch of events.
            frames = iter(batch)
            while chunk := _take(frames, CHUNK_BYTES):
                if watch is not None:
                    watch.sending()  # until the server asks for the next chunk: one write
                feed.pause()  # a write that blocks costs the sources nothing meanwhile
                yield chunk
                feed.resume()
                if watch is not None:
                    watch.sent()
    finally:
        if metrics is not None:
            metrics.clients.labels("sse").dec()
        if watch is not None:
            reaper.forget(watch)
        feed.close()


def _batches(feed: Feed, keepalive_seconds: float, retry_ms: int,
             stopping: Callable[[Delivery], bool], watch: Watch | None,
             metrics: Metrics | None = None) -> Iterator[Iterable[bytes]]:
    """What the stream sends, as one iterable of frames per wake-up of the feed."""
    yield [sse.retry(retry_ms)]
    while True:
        deliveries = feed.next(keepalive_seconds)
        if watch is not None and watch.aborted:
            return  # the reaper shut the socket: nothing more can be written
        if not deliveries:
            # A comment for proxies, and a ping that JavaScript can see (DESIGN.md).
            yield [sse.comment("keepalive"), sse.named("ping", {"ts": round(time.time(), 3)})]
            continue
        if metrics is not None:
            metrics.delivering_all("sse", deliveries)
        yield (frame for d in deliveries for frame in _frames(d, feed.epoch))
        ended = [d for d in deliveries if d.kind == "detached"]
        if ended:
            if any(stopping(d) for d in ended):
                yield [SHUTDOWN]
            return


def _take(frames: Iterator[bytes], limit: int) -> bytes:
    """The next frames joined, up to ``limit`` bytes (or one frame, if longer); b"" at the end."""
    taken: list[bytes] = []
    size = 0
    for frame in frames:
        taken.append(frame)
        size += len(frame)
        if size >= limit:
            break
    return b"".join(taken)


def _server_stopping(core: SessionRegistry) -> Callable[[Delivery], bool]:
    """Whether a ``detached`` delivery means the server is stopping: the inbox closed (it only
    closes at exit), or a session's log closed while the session is still registered (a
    deleted session leaves the registry before its log closes, SessionRegistry.delete)."""

    def stopping(delivery: Delivery) -> bool:
        if delivery.session_id is None:
            return True
        try:
            core.get(delivery.session_id)
        except NotFound:
            return False
        return True

    return stopping


def _frames(delivery: Delivery, epoch: str) -> Iterator[bytes]:
    if delivery.kind == "events":
        # The events' once-encoded JSON, each framed with its id.
        for e in delivery.events:
            yield sse.event_frame(e.id, e.data)
    elif delivery.kind == "caught_up":
        yield sse.named("caught-up", {"last_event_id": delivery.last_event_id, "epoch": epoch})
    elif delivery.kind == "reset":
        yield sse.named("reset", {"epoch": epoch, "last_event_id": delivery.last_event_id})
    elif delivery.kind == "inbox":
        yield sse.named("inbox", delivery.snapshot)
    # detached: the stream ends
