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
from greenlet import greenlet

from blueprints import current_core
from blueprints.fanout import FANOUT, DirectSocket, Fanout, Member, direct_socket
from blueprints.sendguard import REAPER, Reaper, Watch, limit_unsent, stream_socket
from tether import sse
from tether.cursor import parse_cursor, parse_flag
from tether.errors import NotFound
from tether.events import Event
from tether.feed import Delivery, Feed
from tether.metrics import Metrics
from tether.sessions import SessionRegistry

bp = Blueprint("sse", __name__)

# no-store, not DESIGN.md's no-cache: a stream carries session data, which no cache may keep
# (issue 16); EventSource needs neither.
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
#: The last frame of a stream the server closes because it is stopping (docs/protocol.md):
#: the client reconnects, with backoff, from its cursor.
SHUTDOWN = sse.named("shutdown", {"reason": "server stopping"})
#: Bytes per write: frames are joined up to this size (one frame may exceed it).
CHUNK_BYTES = 16 * 1024
#: A wake-up whose last write was larger ends with an empty chunk, so that the server does not
#: hold that write while the stream waits (:func:`_send`).
RELEASE_BYTES = 4 * 1024


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
    direct = direct_socket(request.environ) if core.settings.shared_writer else None
    body = events(Feed(core.epoch), follow, core.settings.keepalive_seconds,
                  core.settings.sse_retry_ms, stream_socket(request.environ), stopping,
                  metrics=core.metrics, direct=direct)
    # direct_passthrough: the server iterates ``body`` itself, not werkzeug's wrappers of it
    # (ClosingIterator over iter_encoded()), which would hold this Response, and add two
    # layers of C stack to what a waiting stream's greenlet keeps (issue 5: memory per idle
    # stream). ``body`` yields bytes and closes itself: the wrappers add nothing to it.
    return Response(body, mimetype="text/event-stream", headers=HEADERS,
                    direct_passthrough=True)


def events(feed: Feed, follow: Callable[[Feed], None], keepalive_seconds: float,
           retry_ms: int, sock: Any = None,
           stopping: Callable[[Delivery], bool] = lambda delivery: False,
           reaper: Reaper = REAPER, metrics: Metrics | None = None,
           direct: DirectSocket | None = None, fanout: Fanout = FANOUT) -> Iterator[bytes]:
    """The stream body. Uses no request context: it outlives the view.

    ``follow(feed)`` subscribes the feed to its sources when the body starts, not in the
    view: a response that is never iterated (a HEAD request, a client gone before the first
    byte) never runs the ``finally`` that unsubscribes. The stream ends when a source closes:
    the session was deleted, or the server is stopping (``stopping(delivery)`` says which),
    which is announced with a last ``event: shutdown`` (:data:`SHUTDOWN`).

    With ``sock`` (the client's socket), ``reaper`` closes the stream when one write takes over
    the send timeout or the peer is gone (blueprints.sendguard); the client resumes from its
    cursor. ``metrics`` counts the stream and what it delivers (tether.metrics).

    With ``direct`` (and ``sock``), the stream lends its session's live tail to the session's
    shared writer whenever it has caught up (blueprints.fanout), and takes it back before it
    writes anything else (an inbox snapshot, a keepalive, the end).
    """
    follow(feed)
    del follow  # its closure is not needed while the stream lasts
    attached = feed.attached
    lending = attached[0] if direct is not None and sock is not None and attached else None
    if metrics is not None:
        metrics.clients.labels("sse").inc()
    # A write that blocks (the client is not reading) pauses the feed until it returns, so
    # that the sources stop waking a stream that cannot write (Feed.pause, sendguard.Watch).
    # The reaper's clock also says when a keepalive is due (feed.tick), so that a stream's
    # wait needs no timer of its own.
    watch = reaper.watch(sock, feed.close, feed.pause, feed.resume, feed.tick,
                         keepalive_seconds) if sock is not None else None
    if sock is not None:
        limit_unsent(sock)
    member: Member | None = None  # while the session's shared writer has the live tail
    try:
        # One generator, no layers under it while the stream waits (in feed.next): every
        # generator a wait is nested in costs the waiting greenlet about 0.6 KB of saved C
        # stack (issue 5). What one wake-up sends goes out through _send.
        yield from _send([sse.retry(retry_ms)], watch)
        timeout = keepalive_seconds if watch is None else None  # None: the reaper ticks (events)
        while True:
            if lending is not None and direct is not None:
                lent = feed.lend(lending)
                if lent is not None:
                    member = Member(direct, lent[1], _event_frame, feed.tick, watch=watch,
                                    metrics=metrics)
                    fanout.join(lent[0], member)
            deliveries = feed.next(timeout)
            handed_back = False
            if member is not None:
                # Back from the shared writer before anything else is written.
                handed_back = member.writer is None
                cursor, pending = fanout.leave(member)
                feed.reclaim(lending, cursor)  # type: ignore[arg-type]
                if member.failed:
                    return  # the socket failed under the writer: the client is gone
                member = None
                if pending and not _write_rest(pending, direct, watch):
                    return
            if watch is not None and watch.aborted:
                return  # the reaper shut the socket: nothing more can be written
            if not deliveries:
                if handed_back:
                    continue  # not a keepalive: the writer handed the stream back (above)
                # A comment for proxies, and a ping that JavaScript can see (DESIGN.md).
                yield from _send([sse.comment("keepalive"),
                                  sse.named("ping", {"ts": round(time.time(), 3)})], watch)
                continue
            if metrics is not None:
                metrics.delivering_all("sse", deliveries)
            yield from _send((frame for d in deliveries for frame in _frames(d, feed.epoch)),
                             watch)
            ended = [d for d in deliveries if d.kind == "detached"]
            if ended:
                if any(stopping(d) for d in ended):
                    yield from _send([SHUTDOWN], watch)
                return
            # Not kept while the stream waits for the next wake-up: a replay's batch of events.
            del deliveries, ended
    finally:
        if member is not None:
            fanout.leave(member)
        if metrics is not None:
            metrics.clients.labels("sse").dec()
        if watch is not None:
            reaper.forget(watch)
        feed.close()


def _send(frames: Iterable[bytes], watch: Watch | None) -> Iterator[bytes]:
    """What one wake-up sends: ``frames`` joined into writes of :data:`CHUNK_BYTES`.

    Frames are built lazily and nothing else is held across a write, so a blocked stream holds
    one chunk (twice: gunicorn copies it to add the chunked framing), not a batch of events.
    The server's loop holds the last chunk it wrote until it gets the next one, which may be
    a keepalive away: after a chunk over :data:`RELEASE_BYTES` an empty one (no write at all:
    PEP 3333, and gunicorn sends nothing for it) replaces it.
    """
    frames = iter(frames)
    size = 0
    while chunk := _take(frames, CHUNK_BYTES):
        size = len(chunk)
        if watch is not None:
            watch.sending()  # until the server asks for the next chunk: one write
        yield chunk
        if watch is not None:
            watch.sent()
    if size > RELEASE_BYTES:
        yield b""


def _event_frame(event: Event) -> bytes:
    return sse.event_frame(event.id, event.data)


def _write_rest(data: bytes, direct: DirectSocket | None, watch: Watch | None) -> bool:
    """Write what the shared writer's last ``send()`` left unwritten, straight to the socket
    (it is already framed), as one timed write (blueprints.sendguard). :returns: False when
    the socket failed."""
    assert direct is not None
    if watch is not None:
        watch.sending()
    try:
        direct.sock.sendall(data)
    except OSError:
        return False
    finally:
        if watch is not None:
            watch.sent()
    return True


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


class ShallowStreams:
    """WSGI middleware: a stream request (``GET`` of a path ending in ``/stream``) is
    dispatched in a short-lived greenlet of its own, so that the connection's greenlet, which
    then iterates the body for as long as the stream lasts, never holds Flask's deep stack.

    CPython 3.11+ keeps each greenlet's Python frames in a data stack of its own (16 KiB
    chunks, taken on the greenlet's first call), whose touched pages stay resident until the
    greenlet ends. Flask's dispatch (werkzeug's routing recursion, the auth and Talisman
    hooks, the view) reaches over one 4 KiB page deep; gunicorn's request handling and the
    stream's body fit in one. Dispatched apart, an idle SSE stream costs one page less
    (issue 5: about 4 KB of the worker's RSS per connection, bench/README.md).

    The dispatch's greenlet has the caller's for parent (greenlet's default): it runs at
    once, and when it ends its result, or its exception, comes back to the caller's
    ``switch()``; a wait inside it (gevent) suspends the caller with it. Any other request
    is passed through as it is: a long-poll or a WebSocket waits inside its dispatch, where
    a second greenlet would cost memory instead of saving it.
    """

    def __init__(self, app: Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
                 ) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        if (environ.get("REQUEST_METHOD") == "GET"
                and str(environ.get("PATH_INFO", "")).endswith("/stream")):
            return greenlet(self.app).switch(environ, start_response)
        return self.app(environ, start_response)
