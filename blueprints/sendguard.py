"""The send timeout and the dead-peer reaper for streamed responses (SSE).

A stream body is a generator the WSGI server iterates, writing each chunk it yields with a
blocking ``sendall`` (gunicorn's gevent worker; gevent's pywsgi under ``python app.py``). A
client that stops reading fills its receive window and then our send buffer, and that write
parks the stream's greenlet forever; a peer that vanishes without closing (half-open: its
machine slept, its network dropped) never acknowledges the keepalive, and nothing fails for
the kernel's ``tcp_retries2`` (about 15 minutes). Delivery is by cursor, so neither costs a
queue, but each holds a greenlet, a descriptor and a socket buffer.

One :class:`Reaper` per process (one thread, a greenlet once gevent has patched) sweeps every
watched connection every :data:`SWEEP_SECONDS` and aborts one that

- ``stuck``: has been inside one write for over :data:`SEND_TIMEOUT_SECONDS` (the time from
  ``yield`` until the server asks for the next chunk is the write);
- ``closed`` (Linux, ``TCP_INFO``): is no longer ESTABLISHED: the client closed (FIN: as Go's
  net/http, a client that half-closes is taken as gone) or reset it;
- ``half-open`` (Linux, ``TCP_INFO``): has data in flight and no acknowledgement for
  :data:`SEND_TIMEOUT_SECONDS`. A live client, even one that stopped reading, acknowledges
  within a round trip (its zero window included), so only a vanished peer trips this. The
  keepalive (``TETHER_KEEPALIVE``) guarantees data in flight, so a half-open stream is reaped
  within max(keepalive, send timeout) + one sweep.

Aborting is ``shutdown(SHUT_RDWR)``: a blocked write fails at once with EPIPE, which gunicorn
and pywsgi drop quietly, and the watch's ``on_abort`` wakes an idle stream so that its
generator returns; the server then closes the descriptor and the greenlet ends. The client
resumes from its cursor (``Last-Event-ID``).

Why not ``TCP_USER_TIMEOUT`` for SSE: the kernel would abort a stalled reader's connection
(Linux 5.11+ applies it to zero-window probes) at about the same time as the stuck check, and
gunicorn logs the resulting ETIMEDOUT from its own write as an error with a traceback. The
WebSocket, whose reader reads the socket and so sees such an abort quietly, does set it
(:func:`set_user_timeout`).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

#: A write that takes longer than this (seconds) closes the connection (issue 4, DESIGN.md).
SEND_TIMEOUT_SECONDS = 10.0
#: How often (seconds) the reaper looks at every watched connection.
SWEEP_SECONDS = 1.0
#: A write still under way after this many seconds is blocked (the client is not reading):
#: the reaper pauses the stream's feed until the write returns (:meth:`Watch.sending`).
BLOCKED_SECONDS = 0.05
#: Bytes a stream socket may hold that the peer's window does not yet admit (Linux
#: ``TCP_NOTSENT_LOWAT``); past it a write waits.
UNSENT_BYTES = 64 * 1024

_ESTABLISHED = 1  # include/net/tcp_states.h
# struct tcp_info (include/uapi/linux/tcp.h): u8 tcpi_state at 0, u32 tcpi_unacked at 24
# (segments in flight), u32 tcpi_last_ack_recv at 56 (milliseconds since the last ACK).
_TCP_INFO = struct.Struct("=B23xI28xI")
_HAS_TCP_INFO = hasattr(socket, "TCP_INFO")


def stream_socket(environ: Mapping[str, Any]) -> Any | None:
    """The client's socket from a WSGI ``environ``, or None when the server hides it (the Flask
    test client): ``gunicorn.socket`` (gunicorn), ``werkzeug.socket`` (werkzeug's server), or
    for gevent's pywsgi the socket under ``wsgi.input`` (found the way simple-websocket finds
    it, simple_websocket/ws.py)."""
    for key in ("gunicorn.socket", "werkzeug.socket"):
        if environ.get(key) is not None:
            return environ[key]
    if str(environ.get("SERVER_SOFTWARE", "")).startswith("gevent"):
        stream = environ.get("wsgi.input")
        stream = getattr(stream, "rfile", stream)
        raw = getattr(stream, "raw", None)
        return getattr(raw, "_sock", None)
    return None


def set_user_timeout(sock: Any, seconds: float = SEND_TIMEOUT_SECONDS) -> bool:
    """Linux ``TCP_USER_TIMEOUT``: the kernel aborts the connection (ETIMEDOUT) when data it sent
    stays unacknowledged, or the peer's window stays zero, for ``seconds``. :returns: False
    where the option or the socket is missing."""
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is None or sock is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, int(seconds * 1000))
    except (OSError, AttributeError):
        return False
    return True


def limit_unsent(sock: Any, nbytes: int = UNSENT_BYTES) -> bool:
    """``TCP_NOTSENT_LOWAT`` (Linux, macOS): a write waits once ``nbytes`` are queued that the
    peer has not made room for. Without it the kernel grows a stalled client's send buffer up to
    ``net.ipv4.tcp_wmem``'s maximum (4 MiB; on loopback, with its 64 KiB segments, it does),
    so a client that stopped reading goes on costing the server CPU and memory until that
    fills. Data in flight (the congestion window) is not limited, so a reading client's
    throughput is not either. :returns: False where the option is missing."""
    option = getattr(socket, "TCP_NOTSENT_LOWAT", None)
    if option is None or sock is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, nbytes)
    except (OSError, AttributeError):
        return False
    return True


def tcp_state(sock: Any) -> tuple[int, int, int] | None:
    """``(state, unacked segments, milliseconds since the last ACK)`` from Linux ``TCP_INFO``;
    None elsewhere, or for a socket that is not TCP or is closed."""
    if not _HAS_TCP_INFO:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
    except (OSError, AttributeError, ValueError):
        return None
    if len(raw) < _TCP_INFO.size:
        return None
    return _TCP_INFO.unpack(raw)


def _nothing() -> None:
    pass


class Watch:
    """One connection under the reaper. The stream calls :meth:`sending` right before it hands
    a chunk to the server and :meth:`sent` when it is asked for the next one.

    A write still under way after :data:`BLOCKED_SECONDS` is blocked: the reaper calls
    ``on_blocked`` (the stream pauses its feed, so that the sources stop waking a stream that
    cannot write), and :meth:`sent` calls ``on_unblocked`` once that write returns. Writes
    that do not block, nearly all of them, cost a lock and a set operation, not a pause.
    """

    __slots__ = ("sock", "_on_abort", "_on_blocked", "_on_unblocked", "_since", "_blocked",
                 "_lock", "_inflight", "_last", "reason")

    def __init__(self, sock: Any, on_abort: Callable[[], None],
                 on_blocked: Callable[[], None] = _nothing,
                 on_unblocked: Callable[[], None] = _nothing,
                 inflight: set[Watch] | None = None) -> None:
        self.sock = sock
        self._on_abort = on_abort
        self._on_blocked = on_blocked
        self._on_unblocked = on_unblocked
        self._since: float | None = None
        self._last = time.monotonic()  # when the last write started (or the watch, if none)
        self._blocked = False
        self._lock = threading.Lock()
        self._inflight = inflight if inflight is not None else set()
        #: Why the reaper aborted it (``stuck``, ``closed``, ``half-open``), or None.
        self.reason: str | None = None

    def sending(self) -> None:
        self._since = time.monotonic()
        self._inflight.add(self)

    def sent(self) -> None:
        self._inflight.discard(self)
        # Under the lock that block() takes: a write that ends while the reaper decides is
        # either seen as ended (no pause) or paused and then resumed here, never left paused.
        with self._lock:
            self._last = self._since or self._last
            self._since = None
            blocked, self._blocked = self._blocked, False
        if blocked:
            self._on_unblocked()

    def wrote(self) -> None:
        """Note a write the reaper does not time (the WebSocket's sender writes on its own):
        the keepalive clock counts from it (:meth:`Reaper.idle`)."""
        self._last = time.monotonic()

    @property
    def last_write(self) -> float:
        """:func:`time.monotonic` when the last write started (when the watch began, before
        any write)."""
        return self._last

    def block(self, now: float, after: float = BLOCKED_SECONDS) -> bool:
        """Call ``on_blocked`` if the write under way started over ``after`` seconds before
        ``now`` and it was not called for it yet. :returns: whether it was called."""
        with self._lock:
            since = self._since
            if self._blocked or since is None or now - since <= after:
                return False
            self._blocked = True
            self._on_blocked()
        return True

    @property
    def blocked(self) -> bool:
        return self._blocked

    @property
    def aborted(self) -> bool:
        return self.reason is not None

    def stuck_for(self, now: float | None = None) -> float:
        """Seconds the current write has been blocked (0 when none is under way)."""
        since = self._since
        return 0.0 if since is None else (time.monotonic() if now is None else now) - since


class Reaper:
    """Aborts watched connections whose write is stuck or whose peer is gone (module doc).

    :param send_timeout: seconds one write, or unacknowledged data, may wait.
    :param sweep_seconds: seconds between sweeps; the thread starts with the first watch.
    :param blocked_seconds: a write under way for longer is blocked (:class:`Watch`); writes
        under way are looked at every ``blocked_seconds``.
    """

    def __init__(self, send_timeout: float = SEND_TIMEOUT_SECONDS,
                 sweep_seconds: float = SWEEP_SECONDS,
                 blocked_seconds: float = BLOCKED_SECONDS) -> None:
        self.send_timeout = send_timeout
        self.sweep_seconds = sweep_seconds
        self.blocked_seconds = blocked_seconds
        self._watches: set[Watch] = set()
        self._inflight: set[Watch] = set()  # watches inside a write (Watch.sending)
        # The keepalive clock: (when, tie-breaker, watch, idle seconds, on_idle), soonest first.
        self._idle: list[tuple[float, int, Watch, float, Callable[[], None]]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, sock: Any, on_abort: Callable[[], None],
              on_blocked: Callable[[], None] = _nothing,
              on_unblocked: Callable[[], None] = _nothing,
              on_idle: Callable[[], None] | None = None, idle_seconds: float = 0.0) -> Watch:
        """Watch ``sock`` (None: only the keepalive clock) until :meth:`forget`; ``on_abort()``
        runs (on the reaper's thread)
        after it is shut down, to wake the stream's generator; ``on_blocked()`` (on the
        reaper's thread) and ``on_unblocked()`` (on the stream's) bracket a blocked write.

        With ``on_idle``, it runs (on the reaper's thread) whenever no write has started for
        ``idle_seconds`` (> 0), within about :data:`BLOCKED_SECONDS`: one clock for every
        stream's keepalive, instead of a timer per stream per wait (:meth:`idle`).
        """
        watch = Watch(sock, on_abort, on_blocked, on_unblocked, self._inflight)
        with self._lock:
            self._watches.add(watch)
            if on_idle is not None and idle_seconds > 0:
                heapq.heappush(self._idle, (watch.last_write + idle_seconds, next(self._order),
                                            watch, idle_seconds, on_idle))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tether-reaper",
                                                daemon=True)
                self._thread.start()
        return watch

    def forget(self, watch: Watch) -> None:
        """Stop watching (the stream ended). Idempotent."""
        with self._lock:
            self._watches.discard(watch)
        self._inflight.discard(watch)

    def idle(self, now: float | None = None) -> list[Watch]:
        """Run ``on_idle`` for every watch with no write started for its ``idle_seconds``, and
        schedule the next look at each watch due now. Looks only at the watches due, so it
        is cheap with many streams. :returns: the watches whose ``on_idle`` ran."""
        now = time.monotonic() if now is None else now
        fired: list[tuple[Watch, Callable[[], None]]] = []
        with self._lock:
            while self._idle and self._idle[0][0] <= now:
                _, _, watch, seconds, on_idle = heapq.heappop(self._idle)
                if watch not in self._watches:
                    continue  # forgotten: the stream ended
                due = watch.last_write + seconds
                if due <= now:
                    fired.append((watch, on_idle))
                    due = now + seconds
                heapq.heappush(self._idle, (due, next(self._order), watch, seconds, on_idle))
        for _, on_idle in fired:
            on_idle()
        return [watch for watch, _ in fired]

    def block(self, now: float | None = None) -> list[Watch]:
        """Mark every write under way for over ``blocked_seconds`` as blocked (its
        ``on_blocked`` runs once per write). Looks only at writes under way, so it is cheap
        with many idle streams. :returns: the watches newly blocked."""
        now = time.monotonic() if now is None else now
        return [w for w in list(self._inflight) if w.block(now, self.blocked_seconds)]

    def __len__(self) -> int:
        return len(self._watches)

    def sweep(self) -> list[Watch]:
        """Look at every watch once; abort and forget the dead ones. :returns: those aborted."""
        with self._lock:
            watches = list(self._watches)
        now = time.monotonic()
        dead = []
        for watch in watches:
            reason = self.verdict(watch, now)
            if reason is not None:
                dead.append(watch)
                self._abort(watch, reason)
        return dead

    def verdict(self, watch: Watch, now: float) -> str | None:
        """Why ``watch`` should be aborted now, or None (module doc)."""
        if watch.sock is None:
            return None  # only on the keepalive clock
        if watch.stuck_for(now) > self.send_timeout:
            return "stuck"
        info = tcp_state(watch.sock)
        if info is None:
            return None
        state, unacked, last_ack_ms = info
        if state != _ESTABLISHED:
            return "closed"
        if unacked and last_ack_ms > self.send_timeout * 1000:
            return "half-open"
        return None

    def _abort(self, watch: Watch, reason: str) -> None:
        self.forget(watch)
        watch.reason = reason
        if reason != "closed":
            logger.info("closing a stream: %s (send timeout %gs)", reason, self.send_timeout)
        try:
            # Consume a pending ETIMEDOUT/ECONNRESET so the server's next write fails with a
            # plain EPIPE, which it drops quietly.
            watch.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            # The OS socket under gevent's: gevent's shutdown() also throws EBADF
            # (cancel_wait_ex) into a write waiting on it, which gunicorn logs as an error with
            # a traceback; the OS-level shutdown wakes that write, which then fails with EPIPE.
            getattr(watch.sock, "_sock", watch.sock).shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already shut down or reset: the writer fails either way
        try:
            watch._on_abort()
        except Exception:  # a broken callback must not stop the reaper
            logger.exception("waking an aborted stream failed")

    def _run(self) -> None:
        tick = min(self.blocked_seconds, self.sweep_seconds)
        next_sweep = time.monotonic() + self.sweep_seconds
        while True:
            time.sleep(tick)
            try:
                self.block()
                self.idle()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.sweep_seconds
                    self.sweep()
            except Exception:  # never let one bad socket end the reaper
                logger.exception("stream reaper sweep failed")


#: The process's reaper, shared by every stream.
REAPER = Reaper()
