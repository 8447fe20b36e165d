"""One writer per session for the live tail of caught-up streams, SSE and WebSocket (issue 5:
wide fan-out).

Without it, every append wakes every attached stream's greenlet, and each one collects the
event from the log, frames it and hands it to the server to write: about 50 us per client per
event, so one event reached the last of 1,000 clients some 50 ms after the first.

With it, a stream that has caught up lends its session's cursor to the session's
:class:`SessionWriter` (:meth:`tether.feed.Feed.lend`) and waits only for what else it carries
(an inbox change, a keepalive, a close). On an append the writer frames the new events once
and writes the same bytes to every member's socket without blocking: a ``send()`` on the OS
socket under gevent's, which is non-blocking, so the writer never waits on a client. A member
whose socket does not take the whole write (a client that reads slowly), or fails, is handed
back (:meth:`Fanout.leave`): the stream first writes what that ``send()`` left unwritten, then
goes on from its cursor as any stream does, with the send timeout and the blocked-write pause
of blueprints.sendguard, and joins again once it has caught up. One slow client never delays
the others, and nothing is queued for it.

Only where that is sound (:func:`direct_socket`): gunicorn's gevent worker, where every
greenlet runs on one thread, so the writer's loop, which never yields, cannot interleave with
a stream's own writes (a stream leaves before it writes anything); a plain TCP socket (never
TLS); and the body framing gunicorn gives the response, HTTP/1.1 chunked (RFC 9112 section 7.1)
or HTTP/1.0 raw (gunicorn/http/wsgi.py, ``Response.is_chunked``). A WebSocket joins only
without permessage-deflate, whose messages are the same bytes for every client (RFC 6455
section 5.2); its sender is parked while it is a member, and its control frames (pong, close,
written by simple-websocket) make the writer hand it back (``Member.busy``, ``Member.hold``).
"""

from __future__ import annotations

import _socket
import bisect
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from blueprints.sendguard import Watch
from tether.events import Event
from tether.metrics import Metrics
from tether.stores.base import EventLog

logger = logging.getLogger(__name__)

#: Events read from the log per round (a burst is written in rounds).
BATCH = 500
#: Bytes of frames per write: a round stops adding events past it (at least one event).
WRITE_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class DirectSocket:
    """A client's socket the shared writer may write to (:func:`direct_socket`).

    ``sock`` is the server's (gevent's) socket, ``raw`` the OS socket under it, non-blocking;
    ``chunked``: the response body is framed in HTTP/1.1 chunks.
    """

    sock: Any
    raw: _socket.socket
    chunked: bool


def direct_socket(environ: Mapping[str, Any]) -> DirectSocket | None:
    """The client's socket for the shared writer, or None where writing to it from another
    greenlet is not sound (module doc): not gunicorn, gevent has not patched ``threading``
    (a threaded worker), TLS, a method other than GET, or a protocol other than HTTP/1.1
    and HTTP/1.0 (gunicorn 27 serves HTTP/2 where ``http_protocols`` asks for it)."""
    sock = environ.get("gunicorn.socket")
    raw = getattr(sock, "_sock", None)
    if raw is None or environ.get("REQUEST_METHOD") != "GET" or hasattr(sock, "cipher"):
        return None
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return None
    # gevent's socket wraps an OS socket (``_socket.socket``) it keeps non-blocking.
    if not monkey.is_module_patched("threading") or not isinstance(raw, _socket.socket):
        return None
    try:
        if raw.gettimeout() != 0.0:
            return None
    except OSError:
        return None
    protocol = str(environ.get("SERVER_PROTOCOL", "")).upper()
    if protocol not in ("HTTP/1.1", "HTTP/1.0") or environ.get("HTTP_VERSION") == "2":
        # HTTP/2 (gunicorn's h2c, off by default): the socket carries every stream of the
        # connection in frames of its own; bytes written to it would corrupt them all.
        return None
    # gunicorn frames in chunks unless the request is HTTP/1.0 (no Content-Length is set, the
    # status is 200 and the method GET: Response.is_chunked).
    return DirectSocket(sock, raw, chunked=protocol == "HTTP/1.1")


@dataclass(eq=False, slots=True)
class Member:
    """One stream whose live tail a :class:`SessionWriter` writes.

    :param cursor: the last event id the client was sent; the writer moves it.
    :param frame: an event's bytes on this stream (an SSE frame); members sharing ``frame``
        and ``chunked`` and a cursor get the very same bytes.
    :param wake: called (on the writer's greenlet) when the writer hands the stream back.
    :param busy: whether someone else is writing to the socket now (the WebSocket's control
        frames): the writer then hands the stream back instead of writing.
    :param hold: takes the unwritten rest of a partial write, where the socket's other
        writers must write it before anything of theirs (the WebSocket); without it the rest
        waits in :attr:`pending` for the stream.
    """

    direct: DirectSocket
    cursor: int
    frame: Callable[[Event], bytes]
    wake: Callable[[], None]
    transport: str = "sse"
    watch: Watch | None = None
    metrics: Metrics | None = None
    busy: Callable[[], bool] | None = None
    hold: Callable[[bytes], None] | None = None
    #: The bytes of a write the socket took only part of: the stream writes them first.
    pending: bytes = b""
    #: The socket failed (reset, closed): the stream should end.
    failed: bool = False
    writer: SessionWriter | None = field(default=None, repr=False)


class SessionWriter:
    """Writes one session's new events to its members (module doc). Runs on a thread of its
    own (a greenlet, under gevent) from the first member's join until the last one leaves."""

    def __init__(self, log: EventLog, fanout: Fanout) -> None:
        self.log = log
        self.members: dict[Member, None] = {}
        self.flag = threading.Event()
        self._fanout = fanout

    def run(self) -> None:
        log, flag = self.log, self.flag
        log.watch(flag)
        try:
            while True:
                flag.wait()
                flag.clear()
                if self._fanout._retire(self):
                    return
                try:
                    self.write()
                except Exception:  # hand every stream back rather than leave it unserved
                    logger.exception("the shared writer of a session failed")
                    for member in list(self.members):
                        self.evict(member)
        finally:
            log.unwatch(flag)

    def write(self) -> int:
        """One round: the events after the lowest member cursor, up to :data:`WRITE_BYTES` of
        frames, written to every member that lacks them. Sets :attr:`flag` again when more
        are left. When the log has closed and nothing is left, hands every member back (each
        stream then ends as it does for a closed log).

        :returns: how many members were written to.
        """
        members = list(self.members)
        if not members:
            return 0
        log = self.log
        closed = log.closed  # read before the batch: a close after it is seen next round
        events = log.read_after(min(m.cursor for m in members), BATCH)
        if not events:
            if closed:
                for member in members:
                    self.evict(member)
            return 0
        # As many events as fit in one write by the first member's framing; the members with
        # another (SSE and WebSocket on one session) get the same events in theirs.
        first = members[0].frame
        taken: list[bytes] = []
        size = 0
        for event in events:
            taken.append(first(event))
            size += len(taken[-1])
            if size >= WRITE_BYTES:
                break
        frames = {first: taken}
        events = events[:len(taken)]
        if events[-1].id < log.last_id:
            self.flag.set()  # more after this round
        ids = [event.id for event in events]
        last = ids[-1]
        writes: dict[tuple[Callable[[Event], bytes], bool, int], tuple[bytes, int]] = {}
        written = 0
        for member in members:
            if member.cursor >= last:
                continue
            if member.busy is not None and member.busy():
                self.evict(member)  # another write is under way on its socket
                continue
            key = (member.frame, member.direct.chunked, member.cursor)
            prepared = writes.get(key)
            if prepared is None:
                start = bisect.bisect_right(ids, member.cursor)
                framed = frames.get(member.frame)
                if framed is None:
                    framed = frames[member.frame] = [member.frame(e) for e in events]
                payload = b"".join(framed[start:])
                if member.direct.chunked:
                    payload = b"%X\r\n%s\r\n" % (len(payload), payload)
                prepared = writes[key] = (payload, start)
            data, start = prepared
            try:
                sent = member.direct.raw.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                member.failed = True
                self.evict(member)
                continue
            if sent == 0:
                self.evict(member)  # nothing went out: the stream writes it from its cursor
                continue
            member.cursor = last
            written += 1
            if member.watch is not None:
                member.watch.wrote()
            if member.metrics is not None:
                member.metrics.delivered_now(member.transport, len(ids) - start,
                                             events[start].ts)
            if sent < len(data):
                self.evict(member, data[sent:])
        return written

    def evict(self, member: Member, pending: bytes = b"") -> None:
        """Hand ``member`` back to its stream, with the unwritten rest of a write."""
        if member in self.members:
            del self.members[member]
            member.writer = None
            if pending and member.hold is not None:
                member.hold(pending)
            else:
                member.pending = pending
            member.wake()


class Fanout:
    """The shared writers of a process, one per event log with members."""

    def __init__(self) -> None:
        self._writers: dict[int, SessionWriter] = {}
        self._lock = threading.Lock()

    def join(self, log: EventLog, member: Member) -> None:
        """Let the session's writer write ``log``'s events after ``member.cursor`` to it, until
        :meth:`leave` or until the writer hands it back (``member.wake``)."""
        with self._lock:
            writer = self._writers.get(id(log))
            start = writer is None
            if writer is None:  # the writer holds the log, so its id is not reused meanwhile
                writer = self._writers[id(log)] = SessionWriter(log, self)
            writer.members[member] = None
            member.writer = writer
        if start:
            threading.Thread(target=writer.run, name="tether-fanout", daemon=True).start()
        if member.cursor < log.last_id or log.closed:
            writer.flag.set()

    def leave(self, member: Member) -> tuple[int, bytes]:
        """Take ``member`` back from its writer, if it still has it.

        :returns: ``(cursor, pending)``: the last event id written to the client, and bytes of
            a write the socket took only in part, which the stream must write before anything
            else.
        """
        writer = member.writer
        if writer is not None:
            writer.members.pop(member, None)
            member.writer = None
            if not writer.members:
                writer.flag.set()  # let it retire
        pending, member.pending = member.pending, b""
        return member.cursor, pending

    def _retire(self, writer: SessionWriter) -> bool:
        """Forget ``writer`` if it has no members left. :returns: whether it should end."""
        with self._lock:
            if writer.members:
                return False
            if self._writers.get(id(writer.log)) is writer:
                del self._writers[id(writer.log)]
            return True

    @property
    def members(self) -> int:
        """Streams written by a shared writer now (for tests and metrics)."""
        with self._lock:
            return sum(len(writer.members) for writer in self._writers.values())


#: The process's shared writers.
FANOUT = Fanout()
