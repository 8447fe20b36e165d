"""Wake-ups that carry no data (DESIGN.md rule 2): a condition for one waiter at a time, and
flags for feeds that wait on several sources at once (:class:`tether.feed.Feed`)."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Wakeup:
    """A :class:`threading.Condition` plus a set of watcher flags, woken together.

    The owner holds :attr:`lock` while it changes its state, then calls :meth:`notify`
    (under the lock). Waiters use :meth:`wait_for`; a feed registers a flag with
    :meth:`watch` and re-reads the source by cursor when the flag is set.
    """

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self._flags: set[threading.Event] = set()

    def notify(self) -> None:
        """Wake every waiter and set every flag. Call with :attr:`lock` held."""
        self.lock.notify_all()
        for flag in self._flags:
            flag.set()

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Block until ``predicate()`` is true (checked under the lock, so no wake-up is
        missed) or ``timeout`` seconds pass; None waits forever. Returns the predicate."""
        with self.lock:
            return self.lock.wait_for(predicate, timeout=timeout)

    def watch(self, flag: threading.Event) -> None:
        with self.lock:
            self._flags.add(flag)

    def unwatch(self, flag: threading.Event) -> None:
        with self.lock:
            self._flags.discard(flag)

    @property
    def watchers(self) -> int:
        """How many flags are registered (for tests and metrics)."""
        return len(self._flags)
