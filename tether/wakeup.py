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


class WakeupSource:
    """What every source a :class:`~tether.feed.Feed` follows shares (the event logs, the
    inbox): a :class:`Wakeup` in ``_wakeup``, a ``_closed`` flag, and these three methods."""

    _wakeup: Wakeup
    _closed: bool

    def watch(self, flag: threading.Event) -> None:
        """Set ``flag`` on every change, and on close, until :meth:`unwatch`."""
        self._wakeup.watch(flag)

    def unwatch(self, flag: threading.Event) -> None:
        """Stop setting ``flag``. Unknown flags are ignored."""
        self._wakeup.unwatch(flag)

    def close(self) -> None:
        """Refuse further changes and wake every waiter and watcher, for good."""
        with self._wakeup.lock:
            self._closed = True
            self._wakeup.notify()
