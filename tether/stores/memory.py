"""The in-memory store: the default, and the fastest. **Single process only.**

Logs vanish when the process exits and are invisible to other processes, so gunicorn must run
exactly one worker with it (``gunicorn.conf.py`` refuses more).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from tether.events import Event, make_event
from tether.stores.base import SessionRecord
from tether.wakeup import Wakeup, WakeupSource


class MemoryEventLog(WakeupSource):
    """A list of events and one :class:`~tether.wakeup.Wakeup` (gevent's once patched).

    Wake-ups carry no data (DESIGN.md rule 2): waiters re-read the log by cursor.
    """

    def __init__(self, session_id: str, clock: Callable[[], float] = time.time) -> None:
        self.session_id = session_id
        self._clock = clock
        self._events: list[Event] = []
        self._wakeup = Wakeup()
        self._closed = False

    @property
    def last_id(self) -> int:
        return len(self._events)

    @property
    def closed(self) -> bool:
        return self._closed

    def append(self, kind: str, payload: Mapping[str, Any]) -> Event:
        with self._wakeup.lock:
            if self._closed:
                raise RuntimeError(f"log of session {self.session_id} is closed")
            event = make_event(len(self._events) + 1, self.session_id, self._clock(), kind,
                               payload)
            self._events.append(event)
            self._wakeup.notify()
        return event

    def read_after(self, after: int, limit: int | None = None) -> list[Event]:
        # No lock: the list only grows, and a slice of it is taken whole (one bytecode, under
        # the GIL), so a reader sees a prefix of the log; it runs once per client per wake-up.
        start = max(after, 0)
        return self._events[start:] if limit is None else self._events[start:start + max(limit, 0)]

    def wait_for(self, after: int, timeout: float | None) -> bool:
        return self._wakeup.wait_for(lambda: self._closed or len(self._events) > after,
                                     timeout)

    def sync(self, after: int) -> int:
        return self.last_id  # this process holds the whole log


class MemoryStore:
    """Logs and session records in dicts, guarded by a lock. See the module docstring: one
    process only, nothing survives it (``durable`` is False)."""

    durable = False

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.epoch = secrets.token_hex(8)
        self._clock = clock
        self._logs: dict[str, MemoryEventLog] = {}
        self._records: dict[str, SessionRecord] = {}
        self._lock = threading.Lock()

    def create_log(self, session_id: str) -> MemoryEventLog:
        log = MemoryEventLog(session_id, self._clock)
        with self._lock:
            self._logs[session_id] = log
        return log

    def open_log(self, session_id: str) -> MemoryEventLog:
        with self._lock:
            log = self._logs.get(session_id)
        return log if log is not None else self.create_log(session_id)

    def drop_log(self, session_id: str) -> None:
        with self._lock:
            log = self._logs.pop(session_id, None)
            self._records.pop(session_id, None)
        if log is not None:
            log.close()

    def save_session(self, record: SessionRecord) -> None:
        with self._lock:
            self._records[record.id] = record

    def sessions(self) -> list[SessionRecord]:
        with self._lock:
            records = list(self._records.values())
        return sorted(records, key=lambda r: r.created_at)

    def close(self) -> None:
        with self._lock:
            logs = list(self._logs.values())
        for log in logs:
            log.close()
