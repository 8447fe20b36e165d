"""The store interface: where session logs (and later, session records) live.

A store hands out one :class:`EventLog` per session. Transports use only
:meth:`EventLog.read_after` and :meth:`EventLog.wait_for` (DESIGN.md rule 7); the runner and
the prompt registry use :meth:`EventLog.append`. Backends: ``memory`` (one process, the
default); ``sqlite`` and ``redis`` slot in behind the same protocol.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Protocol

from tether.events import Event


class EventLog(Protocol):
    """One session's append-only log. Ids run 1, 2, 3 … with no gaps."""

    session_id: str

    @property
    def last_id(self) -> int:
        """The id of the newest event; 0 when the log is empty."""

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran: waiters return and streams end."""

    def append(self, kind: str, payload: Mapping[str, Any]) -> Event:
        """Append one event, encode it once, wake every waiter; returns it with its id.

        :raises ValueError: unknown kind, envelope keys in ``payload``, NaN/infinity.
        :raises RuntimeError: the log is closed.
        """

    def read_after(self, after: int, limit: int | None = None) -> list[Event]:
        """Events with ``id > after`` in id order, at most ``limit`` of them (None: all)."""

    def wait_for(self, after: int, timeout: float | None) -> bool:
        """Block until an event with ``id > after`` exists or the log closes.

        Free of the read-then-wait race: the check and the wait happen under one lock, so an
        event appended between a caller's read and this call ends the wait at once.

        :param timeout: seconds; None waits forever; 0 only checks.
        :returns: True when an event after ``after`` exists (or the log closed), False on
            timeout.
        """

    def watch(self, flag: threading.Event) -> None:
        """Set ``flag`` on every append and on close, until :meth:`unwatch`.

        How one client waits on several sources at once (a WebSocket with several sessions,
        a stream that also carries the inbox): see :class:`tether.feed.Feed`. The flag carries
        no data; the watcher re-reads by cursor.
        """

    def unwatch(self, flag: threading.Event) -> None:
        """Stop setting ``flag``. Unknown flags are ignored."""

    def close(self) -> None:
        """Refuse further appends and wake every waiter and watcher."""


class Store(Protocol):
    """Owns every session's log, and the epoch that names this store's lifetime."""

    #: Random id of the store's lifetime (DESIGN.md rule 1): a client that sees it change
    #: knows event ids restarted.
    epoch: str

    def create_log(self, session_id: str) -> EventLog:
        """A new, empty log for ``session_id``."""

    def drop_log(self, session_id: str) -> None:
        """Close and forget a session's log. Unknown ids are ignored."""
