"""A redis-py connection whose idle check is one system call, even under gevent.

redis-py (8.x) checks every connection it takes from a pool for unread data
(``ConnectionPool.ensure_connection`` calls ``can_read(0)``), through a fresh
``select.poll()``. Under gevent's monkey-patching that is gevent's cooperative ``poll``: an
I/O watcher made, started and stopped, and a switch to the event loop before the command is
even sent. For the cluster's store that was about 15 % of the session owner's CPU and part of
every event's latency (bench/cluster.py, ``--parts hop``; profiled with py-spy).
:class:`Connection` answers the non-blocking check with the real ``poll(2)`` (the one gevent
saved before patching), which never blocks with a zero timeout; a check that may wait, and
the decision for a socket that is readable (a reply left unread, or the server closed it),
stay redis-py's own.
"""

from __future__ import annotations

import select
import sys
from typing import Any

import redis.connection

_poll: Any = None


def real_poll() -> Any:
    """``select.poll`` as the OS gives it: the one gevent saved if it patched ``select``
    (asked of ``gevent.monkey`` only when the process loaded it: the domain does not import
    gevent, DESIGN.md rule 9), ``select.poll`` otherwise."""
    global _poll
    if _poll is None:
        monkey = sys.modules.get("gevent.monkey")
        patched = monkey is not None and monkey.is_module_patched("select")
        _poll = monkey.get_original("select", "poll") if patched else select.poll
    return _poll


class Connection(redis.connection.Connection):
    """A TCP connection (``connection_class=`` of a pool) with a cheap idle check."""

    def can_read(self, timeout: float = 0) -> bool:
        """True if the connection holds unread data or was closed by the server.

        ``timeout`` (seconds): with 0, one ``poll(2)`` on the socket and the parser's buffer;
        otherwise redis-py's own check, which may wait.
        """
        sock = self._sock
        reader = getattr(self._parser, "_reader", None)  # hiredis's, when it parses
        if timeout or sock is None or reader is None:
            return super().can_read(timeout)
        if reader.has_data():
            return True
        poller = real_poll()()
        poller.register(sock.fileno(), select.POLLIN)
        if not poller.poll(0):
            return False
        return super().can_read(timeout)  # readable: redis-py tells data from a close
