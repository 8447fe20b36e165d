"""The store interface: where session logs (and later, session records) live.

A store hands out one :class:`EventLog` per session. Transports use only
:meth:`EventLog.read_after` and :meth:`EventLog.wait_for` (DESIGN.md rule 7); the runner and
the prompt registry use :meth:`EventLog.append`. A store also keeps one
:class:`SessionRecord` per session, so that a durable store can bring sessions back after a
restart. Backends: ``memory`` (one process, the default), ``sqlite`` (durable, one host),
``redis`` (durable, its logs shared by every process that opens it).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tether.events import ENVELOPE_KEYS, Event


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

    def sync(self, after: int) -> int:
        """Make this process's view of the log hold every event up to ``after`` that the
        store holds, and return :attr:`last_id`. Call it before treating a cursor past
        ``last_id`` as past the end (a reset): with the Redis store another process may have
        served that client events this one has not heard of yet. Memory and SQLite logs are
        the whole truth already: it only returns ``last_id``."""

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


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What a store keeps about a session besides its log: enough to rebuild it at start.

    ``created_at`` is Unix time in seconds; ``workspace`` an absolute path; ``turns`` the
    number of the newest turn; ``agent_session_id`` the agent's conversation id (Claude Code's
    session id, which ``--resume`` takes); ``base_commit`` the commit ``HEAD`` named in the
    workspace when the session was created (``""``: it was not a git work tree; the Changes
    panel compares against it, :mod:`tether.changes`); ``title_set`` whether a person chose
    the title (at creation or by renaming): False while it is the default or the one the
    first prompt gave, so that the first prompt may name the session; ``model`` and
    ``permission_mode`` what the session runs its agent with (tether.agents.modes).
    """

    id: str
    agent: str
    title: str
    created_at: float
    workspace: str
    auto_approve: bool
    agent_session_id: str
    turns: int
    title_set: bool = False
    base_commit: str = ""
    #: The session's model and permission mode ("": the agent's default; a record of an
    #: older schema).
    model: str = ""
    permission_mode: str = ""


class Store(Protocol):
    """Owns every session's log and record, and the epoch that names this store's lifetime."""

    #: Random id of the store's lifetime (DESIGN.md rule 1): a client that sees it change
    #: knows event ids restarted. A durable store keeps it across restarts.
    epoch: str

    #: True when logs and records survive the process (then the registry restores them).
    durable: bool

    def create_log(self, session_id: str) -> EventLog:
        """A new, empty log for ``session_id``."""

    def open_log(self, session_id: str) -> EventLog:
        """The log the store holds for ``session_id`` (empty if it holds none), for restoring
        a session at start."""

    def drop_log(self, session_id: str) -> None:
        """Close and forget a session's log and its record. Unknown ids are ignored."""

    def save_session(self, record: SessionRecord) -> None:
        """Insert or replace the record of ``record.id``."""

    def sessions(self) -> list[SessionRecord]:
        """Every record the store holds, oldest ``created_at`` first."""

    def close(self) -> None:
        """Server exit: close every log, flush everything written to stable storage, release
        the store. Idempotent."""


def split_read(after: int, limit: int | None, last: int,
               tail: list[Event]) -> tuple[int, int, list[Event]]:
    """Plan a ``read_after`` on a log that keeps its newest events in ``tail`` (contiguous,
    ending at ``last``) and the rest in storage. Call it under the log's lock.

    :returns: ``(start, older, cached)``: the events ``start+1 .. older`` must come from
        storage (none when ``older <= start``), followed by ``cached``, from the tail.
    """
    start = max(after, 0)
    stop = last if limit is None else min(last, start + max(limit, 0))
    if stop <= start:
        return start, start, []
    first_cached = last - len(tail) + 1
    low = max(start + 1, first_cached)
    cached = tail[low - first_cached:stop - first_cached + 1] if stop >= low else []
    return start, min(stop, first_cached - 1), cached


class StoredPayload(Mapping[str, Any]):
    """The payload of an event read back from the file, decoded from its stored bytes on
    first use: a replay sends the bytes as they are and never needs it (rule 3)."""

    __slots__ = ("_data", "_decoded")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._decoded: dict[str, Any] | None = None

    def _payload(self) -> dict[str, Any]:
        if self._decoded is None:  # two threads may both decode: same result, no harm
            envelope = json.loads(self._data)
            self._decoded = {k: v for k, v in envelope.items() if k not in ENVELOPE_KEYS}
        return self._decoded

    def __getitem__(self, key: str) -> Any:
        return self._payload()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._payload())

    def __len__(self) -> int:
        return len(self._payload())

    def __repr__(self) -> str:
        return repr(self._payload())
