"""Fault injection at the read-then-wait seam (DESIGN.md rule 7).

A client reads (``read_after``, a feed's ``collect``, an inbox ``snapshot``), finds nothing
new, then waits. A change that lands between the read and the wait must end the wait at once:
the waiter checks the source under the same lock the wait uses, or a flag that was set by the
change and cleared *before* the read.

The change is injected into the seam in two ways:

- **synchronously**, 100,000 times per source: the reader's own thread appends (or bumps the
  inbox revision) right after the read, before the wait. Every such wait must return at once,
  so a single lost wake-up shows up as a 5-second wait that returns False, and the run stops.
- **from another thread**, 10,000 times per source: the reader hands the injection to a
  helper thread after its read; on even runs it waits (bounded) until the change has landed
  before it starts waiting, on odd runs it starts waiting at once, so the change lands
  before or during the wait.

Each test counts its runs, the changes injected and the waits that returned true, and asserts
those counts; no timing is asserted except "did not time out". A mutant with the classic
lost-wake-up bug shows the harness catches it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from tether.feed import Delivery, Feed
from tether.inbox import Inbox
from tether.stores.memory import MemoryEventLog

RUNS = 100_000
THREADED_RUNS = 10_000
#: Every wait is bounded; a lost wake-up costs one WAIT and fails the run.
WAIT = 5.0
EPOCH = "epoch-race"


@dataclass
class Counts:
    runs: int = 0
    injected: int = 0
    prompt: int = 0  # waits that returned True (the change was seen, no timeout)

    def report(self, seam: str) -> None:
        """Print the counts (shown with ``pytest -s``); the tests assert them."""
        print(f"{seam}: {self.runs} runs, {self.injected} changes injected, "
              f"{self.prompt} waits ended by the change, {self.injected - self.prompt} timed out")


def append(log: MemoryEventLog) -> None:
    log.append("text_delta", {"text": "x", "index": 0})


class Injector:
    """A helper thread that runs ``action`` once per request, acknowledging each."""

    def __init__(self, action: Callable[[], None]) -> None:
        self._action = action
        self._requests: queue.Queue[bool] = queue.Queue()
        self._acks: queue.Queue[bool] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while self._requests.get(timeout=60):
            self._action()
            self._acks.put(True)

    def request(self) -> None:
        self._requests.put(True)

    def landed(self) -> bool:
        """Block (bounded) until the requested change has landed."""
        return self._acks.get(timeout=WAIT)

    def stop(self) -> None:
        self._requests.put(False)
        self._thread.join(WAIT)
        assert not self._thread.is_alive()


def threaded(runs: int, action: Callable[[], None],
             read: Callable[[], object], wait: Callable[[], bool],
             check: Callable[[], None]) -> Counts:
    """``read`` (must find nothing), hand ``action`` to another thread, ``wait``."""
    counts = Counts()
    injector = Injector(action)
    try:
        for run in range(runs):
            assert not read()
            injector.request()
            counts.injected += 1
            if run % 2 == 0:
                assert injector.landed()  # the change is in the seam, the wait not started
                if not wait():
                    break
            else:
                if not wait():  # the change lands before or during this wait
                    break
                assert injector.landed()
            counts.prompt += 1
            check()
            counts.runs += 1
    finally:
        injector.stop()
    return counts


# -- the event log: read_after, then wait_for ------------------------------------------------

def log_seam(log: MemoryEventLog, runs: int, timeout: float) -> Counts:
    counts, cursor = Counts(), log.last_id
    for _ in range(runs):
        assert log.read_after(cursor) == []  # the client's read: nothing new
        append(log)                          # injected: lands in the seam
        counts.injected += 1
        if not log.wait_for(cursor, timeout):
            break
        counts.prompt += 1
        (event,) = log.read_after(cursor)
        assert event.id == cursor + 1
        cursor = event.id
        counts.runs += 1
    return counts


def test_log_append_in_the_seam_ends_the_wait_at_once() -> None:
    log = MemoryEventLog("s")
    counts = log_seam(log, RUNS, WAIT)
    counts.report("log_append_in_the_seam_ends_the_wait_at_once")
    assert counts == Counts(runs=RUNS, injected=RUNS, prompt=RUNS)
    assert log.last_id == RUNS


class LostWakeupLog(MemoryEventLog):
    """A mutant with the classic race: it forgets wake-ups that came before the wait."""

    def __init__(self, session_id: str) -> None:
        super().__init__(session_id)
        self._flag = threading.Event()
        self.watch(self._flag)

    def wait_for(self, after: int, timeout: float | None) -> bool:
        self._flag.clear()
        return self._flag.wait(timeout)


def test_the_harness_catches_a_lost_wakeup() -> None:
    counts = log_seam(LostWakeupLog("s"), runs=3, timeout=0.01)
    counts.report("the_harness_catches_a_lost_wakeup")
    assert counts == Counts(runs=0, injected=1, prompt=0)


def test_log_append_from_another_thread_in_the_seam_ends_the_wait() -> None:
    log = MemoryEventLog("s")
    cursor = [0]

    def check() -> None:
        (event,) = log.read_after(cursor[0])
        assert event.id == cursor[0] + 1
        cursor[0] = event.id

    counts = threaded(THREADED_RUNS, lambda: append(log),
                      read=lambda: log.read_after(cursor[0]),
                      wait=lambda: log.wait_for(cursor[0], WAIT), check=check)
    counts.report("log_append_from_another_thread_in_the_seam_ends_the_wait")
    assert counts == Counts(THREADED_RUNS, THREADED_RUNS, THREADED_RUNS)
    assert log.last_id == THREADED_RUNS


# -- the feed: clear, collect, wait ----------------------------------------------------------

class _SeamFlag(threading.Event):
    """The feed's flag, which runs the feed's injection when ``is_set`` finds it clear: a change
    that lands between :meth:`Feed.next`'s check of the flag and its wait on it."""

    def __init__(self, feed: SeamFeed) -> None:
        super().__init__()
        self._feed = feed

    def is_set(self) -> bool:
        flag = super().is_set()
        if not flag:
            self._feed.inject_once()
        return flag


class SeamFeed(Feed):
    """A feed that runs ``inject`` once per :meth:`next`, at the first seam it reaches: its
    check of the flag finding it clear, or a ``collect`` that found nothing (a change that
    lands between the collect and the wait on the flag)."""

    def __init__(self, epoch: str, inject: Callable[[], None] | None = None) -> None:
        super().__init__(epoch)
        self.inject = inject
        self.injected = 0
        self.armed = False
        self._flag = _SeamFlag(self)

    def inject_once(self) -> None:
        if self.armed and self.inject is not None:
            self.armed = False
            self.inject()
            self.injected += 1

    def next(self, timeout: float) -> list[Delivery]:
        self.armed = True
        return super().next(timeout)

    def collect(self) -> list[Delivery]:
        out = super().collect()
        if not out:
            self.inject_once()
        return out


def only_event(deliveries: list[Delivery], session_id: str = "s") -> int:
    (delivery,) = deliveries
    assert delivery.kind == "events" and delivery.session_id == session_id
    (event,) = delivery.events
    return event.id


def attached_feed(log: MemoryEventLog, inject: Callable[[], None] | None) -> SeamFeed:
    feed = SeamFeed(EPOCH)
    feed.attach(log, 0)
    assert [d.kind for d in feed.next(0)] == ["caught_up"]
    feed.inject = inject
    return feed


def feed_seam(feed: SeamFeed, runs: int, timeout: float) -> Counts:
    counts = Counts()
    for run in range(runs):
        deliveries = feed.next(timeout)  # [] means the wait timed out
        if not deliveries:
            break
        counts.prompt += 1
        assert only_event(deliveries) == run + 1
        counts.runs += 1
    counts.injected = feed.injected
    return counts


def test_feed_next_wakes_for_an_append_between_collect_and_wait() -> None:
    log = MemoryEventLog("s")
    feed = attached_feed(log, lambda: append(log))
    counts = feed_seam(feed, RUNS, WAIT)
    counts.report("feed_next_wakes_for_an_append_between_collect_and_wait")
    assert counts == Counts(runs=RUNS, injected=RUNS, prompt=RUNS)
    assert log.last_id == RUNS and log._wakeup.watchers == 1
    feed.close()
    assert log._wakeup.watchers == 0


class LostWakeupFeed(SeamFeed):
    """A mutant of :meth:`Feed.next` that clears the flag after collecting, not before."""

    def next(self, timeout: float) -> list[Delivery]:
        self.armed = True
        out = self.collect()
        if out:
            return out
        self._flag.clear()
        if not self._flag.wait(timeout):
            return []
        return self.collect()


def test_the_harness_catches_a_feed_that_clears_after_collecting() -> None:
    log = MemoryEventLog("s")
    feed = LostWakeupFeed(EPOCH)
    feed.attach(log, 0)
    assert [d.kind for d in feed.collect()] == ["caught_up"]
    feed.inject = lambda: append(log)
    assert feed_seam(feed, runs=3, timeout=0.01) == Counts(runs=0, injected=1, prompt=0)
    feed.close()


def test_feed_wait_then_collect_wakes_for_an_append_after_an_empty_collect() -> None:
    # The WebSocket sender's loop: wait (clears the flag once woken), collect, repeat.
    log = MemoryEventLog("s")
    feed = attached_feed(log, None)
    counts = Counts()
    for run in range(RUNS):
        assert feed.collect() == []
        append(log)  # injected between the empty collect and the wait
        counts.injected += 1
        if not feed.wait(WAIT):
            break
        counts.prompt += 1
        assert only_event(feed.collect()) == run + 1
        counts.runs += 1
    counts.report("feed_wait_then_collect_wakes_for_an_append_after_an_empty_collect")
    assert counts == Counts(RUNS, RUNS, RUNS)
    feed.close()


def test_poll_style_check_then_wait_wakes_for_an_append_after_the_check() -> None:
    # blueprints/poll.py with ?inbox=: attach, subscribe, wait(0) to clear, check, wait.
    log, inbox = MemoryEventLog("s"), Inbox(lambda: [], EPOCH)
    counts = Counts()
    for run in range(RUNS):
        after, seen = log.last_id, inbox.revision
        feed = Feed(EPOCH)
        feed.attach(log, after)
        feed.subscribe_inbox(inbox)
        feed.wait(0)
        assert log.last_id <= after and inbox.revision == seen  # the check: nothing new
        if run % 2:  # injected between the check and the wait
            append(log)
        else:
            inbox.changed()
        counts.injected += 1
        woke = feed.wait(WAIT)
        feed.close()
        if not woke:
            break
        counts.prompt += 1
        assert log.last_id > after or inbox.revision != seen
        counts.runs += 1
    counts.report("poll_style_check_then_wait_wakes_for_an_append_after_the_check")
    assert counts == Counts(RUNS, RUNS, RUNS)
    assert log._wakeup.watchers == 0 and inbox._wakeup.watchers == 0


def test_feed_wakes_for_an_append_from_another_thread_in_the_seam() -> None:
    log = MemoryEventLog("s")
    feed = attached_feed(log, None)
    last = [0]
    pending: list[list[Delivery]] = []

    def read() -> list[Delivery]:
        # Feed.next's first half: clear the flag, then collect (nothing is new).
        feed._flag.clear()
        return feed.collect()

    def wait() -> bool:
        # Its second half: wait on the flag, then clear and collect again.
        if not feed._flag.wait(WAIT):
            return False
        feed._flag.clear()
        pending.append(feed.collect())
        return True

    def check() -> None:
        assert only_event(pending.pop()) == last[0] + 1 and not pending
        last[0] += 1

    counts = threaded(THREADED_RUNS, lambda: append(log), read, wait, check)
    counts.report("feed_wakes_for_an_append_from_another_thread_in_the_seam")
    assert counts == Counts(THREADED_RUNS, THREADED_RUNS, THREADED_RUNS)
    assert last[0] == THREADED_RUNS
    feed.close()


# -- the inbox: snapshot, then wait_for ------------------------------------------------------

def test_inbox_change_between_snapshot_and_wait_ends_the_wait_at_once() -> None:
    during = [False]

    def source() -> list[tuple[str, str, list]]:  # type: ignore[type-arg]
        if during[0]:
            during[0] = False
            inbox.changed()  # injected while the snapshot gathers its entries
        return []

    inbox = Inbox(source, EPOCH)
    counts = Counts()
    for run in range(RUNS):
        during[0] = run % 2 == 1
        snapshot = inbox.snapshot()
        if run % 2 == 0:
            inbox.changed()  # injected after the snapshot, before the wait
        else:
            assert not during[0]  # the change landed inside snapshot()
        counts.injected += 1
        if not inbox.wait_for(snapshot["revision"], WAIT):
            break
        counts.prompt += 1
        # A snapshot may be newer than its revision says, never older.
        assert inbox.revision == snapshot["revision"] + 1 == run + 1
        counts.runs += 1
    counts.report("inbox_change_between_snapshot_and_wait_ends_the_wait_at_once")
    assert counts == Counts(runs=RUNS, injected=RUNS, prompt=RUNS)


def test_feed_wakes_for_an_inbox_change_between_collect_and_wait() -> None:
    inbox = Inbox(lambda: [], EPOCH)
    feed = SeamFeed(EPOCH)
    feed.subscribe_inbox(inbox)
    (first,) = feed.next(0)
    assert first.kind == "inbox" and first.snapshot is not None
    feed.inject = inbox.changed
    counts = Counts()
    for run in range(RUNS):
        deliveries = feed.next(WAIT)
        if not deliveries:
            break
        counts.prompt += 1
        (delivery,) = deliveries
        assert delivery.kind == "inbox" and delivery.snapshot is not None
        assert delivery.snapshot["revision"] == run + 1
        counts.runs += 1
    counts.injected = feed.injected
    counts.report("feed_wakes_for_an_inbox_change_between_collect_and_wait")
    assert counts == Counts(RUNS, RUNS, RUNS)
    feed.close()
    assert inbox._wakeup.watchers == 0


def test_inbox_change_from_another_thread_in_the_seam_ends_the_wait() -> None:
    inbox = Inbox(lambda: [], EPOCH)
    seen = [0]

    def read() -> bool:
        seen[0] = inbox.snapshot()["revision"]
        return False  # a snapshot is never "nothing", but the client has this revision

    def check() -> None:
        assert inbox.revision == seen[0] + 1

    counts = threaded(THREADED_RUNS, inbox.changed, read,
                      wait=lambda: inbox.wait_for(seen[0], WAIT), check=check)
    counts.report("inbox_change_from_another_thread_in_the_seam_ends_the_wait")
    assert counts == Counts(THREADED_RUNS, THREADED_RUNS, THREADED_RUNS)
    assert inbox.revision == THREADED_RUNS
