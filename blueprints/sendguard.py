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


class Watch:
    """One connection under the reaper. The stream calls :meth:`sending` right before it hands
    a chunk to the server and :meth:`sent` when it is asked for the next one."""

    __slots__ = ("sock", "_on_abort", "_since", "reason")

    def __init__(self, sock: Any, on_abort: Callable[[], None]) -> None:
        self.sock = sock
        self._on_abort = on_abort
        self._since: float | None = None
        #: Why the reaper aborted it (``stuck``, ``closed``, ``half-open``), or None.
        self.reason: str | None = None

    def sending(self) -> None:
        self._since = time.monotonic()

    def sent(self) -> None:
        self._since = None

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
    """

    def __init__(self, send_timeout: float = SEND_TIMEOUT_SECONDS,
                 sweep_seconds: float = SWEEP_SECONDS) -> None:
        self.send_timeout = send_timeout
        self.sweep_seconds = sweep_seconds
        self._watches: set[Watch] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, sock: Any, on_abort: Callable[[], None]) -> Watch:
        """Watch ``sock`` until :meth:`forget`; ``on_abort()`` runs (on the reaper's thread)
        after it is shut down, to wake the stream's generator."""
        watch = Watch(sock, on_abort)
        with self._lock:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tether-reaper",
                                                daemon=True)
                self._thread.start()
        return watch

    def forget(self, watch: Watch) -> None:
        """Stop watching (the stream ended). Idempotent."""
        with self._lock:
            self._watches.discard(watch)

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
            watch.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already shut down or reset: the writer fails either way
        try:
            watch._on_abort()
        except Exception:  # a broken callback must not stop the reaper
            logger.exception("waking an aborted stream failed")

    def _run(self) -> None:
        while True:
            time.sleep(self.sweep_seconds)
            try:
                self.sweep()
            except Exception:  # never let one bad socket end the reaper
                logger.exception("stream reaper sweep failed")


#: The process's reaper, shared by every stream.
REAPER = Reaper()
