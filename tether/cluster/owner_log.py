"""The owner's writes to a session's log, committed in bursts (SCALE-OUT.md section 5).

With the Redis store every append is a round trip, and an agent printing a burst of lines
would wait for one per event: about 2,500 events/s per worker. :class:`OwnerLog` queues the
runner's events and a flusher (a thread; a greenlet under gevent) writes whatever has
queued in one Redis Function call (``append_many``), as soon as the call before it returned:
group commit. An event alone is written at once, so a slow agent's events are not delayed;
a burst costs one round trip per batch. Under gevent the runner reads every line the agent's
pipe holds before the flusher runs, so a batch is the burst the pipe held.

Every write carries the owner's fencing token. A failed write (another worker took the
session over, the session was deleted, Redis went away) drops what was queued after it,
and every later :meth:`OwnerLog.append` and :meth:`OwnerLog.flush` raises its error: the
turn ends.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from tether.events import Event
from tether.stores.redis import RedisEventLog

logger = logging.getLogger(__name__)

#: Events in one ``append_many`` call, at most.
MAX_BATCH_EVENTS = 256
#: Bytes of events in one call, at most (a single larger event goes alone).
MAX_BATCH_BYTES = 1024 * 1024
#: Events queued before :meth:`OwnerLog.append` blocks (backpressure: the runner stops
#: reading the agent's pipe, and the agent blocks on its writes).
MAX_QUEUED_EVENTS = 4096
#: Seconds an idle flusher waits for more events before it ends (the next append starts
#: another).
FLUSHER_IDLE_SECONDS = 2.0


class OwnerLog:
    """Session ``log.session_id``'s log as its owner's runner writes it (an
    :class:`tether.runner.EventSink`).

    :param log: this worker's view of the session's log.
    :param fence: the owner's fencing token; its writes are refused
        (:class:`tether.errors.Fenced`) once another worker took the session over.
    """

    def __init__(self, log: RedisEventLog, fence: str) -> None:
        self._log = log
        self._fence = fence
        self.session_id = log.session_id
        self._cond = threading.Condition()
        self._queue: deque[Event] = deque()
        self._in_flight = 0  # events of the batch being written
        self._error: BaseException | None = None
        self._flusher: threading.Thread | None = None

    def append(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Queue one event; it is in the log within one round trip (two under a burst).

        :raises ValueError: not a valid event (nothing is queued).
        :raises RuntimeError: the log is closed here; or an earlier write failed (its error
            again: :class:`tether.errors.Fenced`, a deleted session, Redis away).
        """
        draft = self._log.draft(kind, payload)
        with self._cond:
            self._check()
            while len(self._queue) >= MAX_QUEUED_EVENTS:
                self._cond.wait()
                self._check()
            self._queue.append(draft)
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                                 name=f"owner-log-{self.session_id[:8]}")
                self._flusher.start()
            else:
                self._cond.notify_all()

    def flush(self) -> None:
        """Return once every event appended so far is in the log.

        :raises RuntimeError: as :meth:`append`, for a write that failed.
        """
        with self._cond:
            while (self._queue or self._in_flight) and self._error is None:
                self._cond.wait()
            self._check()

    @property
    def queued(self) -> int:
        """Events appended and not yet written (queued or in flight)."""
        with self._cond:
            return len(self._queue) + self._in_flight

    def _check(self) -> None:
        # Under _cond.
        if self._error is not None:
            raise self._error
        if self._log.closed:
            raise RuntimeError(f"log of session {self.session_id} is closed")

    def _flush_loop(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._cond.wait(FLUSHER_IDLE_SECONDS)
                    if not self._queue:
                        self._flusher = None
                        return
                batch = _take(self._queue)
                self._in_flight = len(batch)
            try:
                self._log.append_many(batch, self._fence)
                error: BaseException | None = None
            except Exception as exc:
                error = exc
            with self._cond:
                self._in_flight = 0
                if error is not None:
                    self._error = error
                    dropped = len(self._queue)
                    self._queue.clear()
                    self._flusher = None
                self._cond.notify_all()
            if error is not None:
                logger.warning("session %s: %d events not written, %d dropped after them: %r",
                               self.session_id, len(batch), dropped, error)
                return


def _take(queue: deque[Event]) -> list[Event]:
    """The next batch off ``queue``: at most :data:`MAX_BATCH_EVENTS` events and
    :data:`MAX_BATCH_BYTES` bytes (at least one event)."""
    batch = [queue.popleft()]
    size = len(batch[0].data)
    while queue and len(batch) < MAX_BATCH_EVENTS:
        size += len(queue[0].data)
        if size > MAX_BATCH_BYTES:
            break
        batch.append(queue.popleft())
    return batch
