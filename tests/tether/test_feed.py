"""The feed: one client's cursors over several event logs and the inbox, woken by one flag."""

from __future__ import annotations

import threading
import time
from typing import Any

from tether.feed import Delivery, Feed
from tether.inbox import Inbox
from tether.stores.memory import MemoryEventLog

EPOCH = "epoch-1"


def fill(log: MemoryEventLog, count: int) -> None:
    for i in range(count):
        log.append("text", {"text": f"event {i + 1}"})


def make_log(session_id: str = "s", count: int = 0) -> MemoryEventLog:
    log = MemoryEventLog(session_id)
    fill(log, count)
    return log


def make_inbox() -> Inbox:
    return Inbox(lambda: [], EPOCH)


def summary(deliveries: list[Delivery]) -> list[tuple[Any, ...]]:
    """Deliveries as small tuples: easy to compare whole."""
    out: list[tuple[Any, ...]] = []
    for d in deliveries:
        if d.kind == "events":
            out.append(("events", d.session_id, [e.id for e in d.events]))
        elif d.kind == "inbox":
            assert d.snapshot is not None
            out.append(("inbox", d.snapshot["revision"]))
        else:
            out.append((d.kind, d.session_id, d.last_event_id))
    return out


def watchers(source: MemoryEventLog | Inbox) -> set[threading.Event]:
    # A small private peek: the set of flags a source sets on change.
    return source._wakeup._flags


def run_in_thread(target: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    """Run ``target(*args)`` in a daemon thread; its return value lands in the list."""
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(target(*args)), daemon=True)
    thread.start()
    return thread, box


# -- attach, replay, caught-up ---------------------------------------------------------------

def test_attach_returns_the_cursor_info_and_replays_everything() -> None:
    log = make_log(count=3)
    feed = Feed(EPOCH)
    info = feed.attach(log)
    assert info == {"session_id": "s", "after": 0, "last_event_id": 3, "epoch": EPOCH,
                    "reset": False}
    assert feed.attached == ["s"]
    assert summary(feed.collect()) == [("events", "s", [1, 2, 3]), ("caught_up", "s", 3)]
    assert feed.collect() == []


def test_attach_after_a_cursor_replays_only_newer_events() -> None:
    log = make_log(count=5)
    feed = Feed(EPOCH)
    info = feed.attach(log, after=3, epoch=EPOCH)
    assert info["after"] == 3 and info["reset"] is False
    assert summary(feed.collect()) == [("events", "s", [4, 5]), ("caught_up", "s", 5)]


def test_attach_at_the_end_is_caught_up_at_once() -> None:
    log = make_log(count=2)
    feed = Feed(EPOCH)
    feed.attach(log, after=2)
    assert summary(feed.collect()) == [("caught_up", "s", 2)]


def test_empty_log_is_caught_up_at_zero() -> None:
    feed = Feed(EPOCH)
    feed.attach(make_log())
    assert summary(feed.collect()) == [("caught_up", "s", 0)]


def test_replay_comes_in_batches_and_keeps_the_flag_set_until_done() -> None:
    log = make_log(count=5)
    feed = Feed(EPOCH, batch=2)
    feed.attach(log)
    assert feed.wait(0) is True  # attach set the flag
    assert summary(feed.collect()) == [("events", "s", [1, 2])]
    assert feed.wait(0) is True  # more is waiting: the flag stays set
    assert summary(feed.collect()) == [("events", "s", [3, 4])]
    assert feed.wait(0) is True
    assert summary(feed.collect()) == [("events", "s", [5]), ("caught_up", "s", 5)]
    assert feed.wait(0) is False  # drained: nothing left to wake for
    assert feed.collect() == []


def test_caught_up_is_delivered_once_then_only_live_events() -> None:
    log = make_log(count=1)
    feed = Feed(EPOCH)
    feed.attach(log)
    assert summary(feed.collect()) == [("events", "s", [1]), ("caught_up", "s", 1)]
    log.append("text", {"text": "live"})
    assert summary(feed.collect()) == [("events", "s", [2])]
    fill(log, 2)
    assert summary(feed.collect()) == [("events", "s", [3, 4])]


def test_live_events_beyond_a_batch_are_split_too() -> None:
    log = make_log()
    feed = Feed(EPOCH, batch=2)
    feed.attach(log)
    assert summary(feed.collect()) == [("caught_up", "s", 0)]
    fill(log, 3)
    assert summary(feed.collect()) == [("events", "s", [1, 2])]
    assert summary(feed.collect()) == [("events", "s", [3])]


def test_several_logs_each_get_a_batch_per_collect() -> None:
    a, b = make_log("a", 3), make_log("b", 3)
    feed = Feed(EPOCH, batch=2)
    feed.attach(a)
    feed.attach(b)
    assert sorted(feed.attached) == ["a", "b"]
    assert summary(feed.collect()) == [("events", "a", [1, 2]), ("events", "b", [1, 2])]
    assert summary(feed.collect()) == [("events", "a", [3]), ("caught_up", "a", 3),
                                       ("events", "b", [3]), ("caught_up", "b", 3)]


# -- reset -----------------------------------------------------------------------------------

def test_cursor_past_the_end_resets_and_replays_from_the_start() -> None:
    log = make_log(count=3)
    feed = Feed(EPOCH)
    info = feed.attach(log, after=10)
    assert info == {"session_id": "s", "after": 0, "last_event_id": 3, "epoch": EPOCH,
                    "reset": True}
    assert summary(feed.collect()) == [("reset", "s", 3), ("events", "s", [1, 2, 3]),
                                       ("caught_up", "s", 3)]
    # The reset is delivered once.
    log.append("text", {"text": "more"})
    assert summary(feed.collect()) == [("events", "s", [4])]


def test_stale_epoch_resets_even_with_a_valid_cursor() -> None:
    log = make_log(count=3)
    feed = Feed(EPOCH)
    info = feed.attach(log, after=2, epoch="another-epoch")
    assert info["reset"] is True and info["after"] == 0
    assert summary(feed.collect()) == [("reset", "s", 3), ("events", "s", [1, 2, 3]),
                                       ("caught_up", "s", 3)]


def test_matching_or_absent_epoch_does_not_reset() -> None:
    log = make_log(count=3)
    feed = Feed(EPOCH)
    assert feed.attach(log, after=2, epoch=EPOCH)["reset"] is False
    assert feed.attach(log, after=2, epoch=None)["reset"] is False
    assert summary(feed.collect()) == [("events", "s", [3]), ("caught_up", "s", 3)]


def test_reset_with_batches_comes_first_and_only_once() -> None:
    log = make_log(count=3)
    feed = Feed(EPOCH, batch=2)
    feed.attach(log, after=99)
    assert summary(feed.collect()) == [("reset", "s", 3), ("events", "s", [1, 2])]
    assert summary(feed.collect()) == [("events", "s", [3]), ("caught_up", "s", 3)]


# -- re-attach, pause, detach ----------------------------------------------------------------

def test_reattach_moves_the_cursor_and_replays_again() -> None:
    log = make_log(count=4)
    feed = Feed(EPOCH)
    feed.attach(log)
    assert summary(feed.collect())[-1] == ("caught_up", "s", 4)
    info = feed.attach(log, after=2)
    assert info["after"] == 2 and info["reset"] is False
    assert feed.attached == ["s"]
    assert summary(feed.collect()) == [("events", "s", [3, 4]), ("caught_up", "s", 4)]
    assert watchers(log) == {feed._flag}  # still one watch, not two


def test_reattach_to_a_new_log_object_unwatches_the_old_one() -> None:
    old, new = make_log("s", 2), make_log("s", 1)
    feed = Feed(EPOCH)
    feed.attach(old)
    feed.collect()
    feed.attach(new)
    assert watchers(old) == set()
    assert len(watchers(new)) == 1
    assert summary(feed.collect()) == [("events", "s", [1]), ("caught_up", "s", 1)]
    old.append("text", {"text": "ignored"})
    assert feed.collect() == []


def test_paused_attach_delivers_nothing_until_start() -> None:
    log = make_log(count=2)
    feed = Feed(EPOCH)
    info = feed.attach(log, after=50, paused=True)
    assert info["reset"] is True
    assert feed.collect() == []
    log.append("text", {"text": "while paused"})
    assert feed.collect() == []
    feed.wait(0)
    feed.start("s")
    assert feed.wait(0) is True  # start wakes the sender
    assert summary(feed.collect()) == [("reset", "s", 3), ("events", "s", [1, 2, 3]),
                                       ("caught_up", "s", 3)]


def test_start_of_an_unknown_session_is_harmless() -> None:
    feed = Feed(EPOCH)
    feed.start("nope")
    assert feed.collect() == []


def test_a_paused_session_does_not_hold_up_the_others() -> None:
    paused, running = make_log("p", 2), make_log("r", 1)
    feed = Feed(EPOCH)
    feed.attach(paused, paused=True)
    feed.attach(running)
    assert summary(feed.collect()) == [("events", "r", [1]), ("caught_up", "r", 1)]


def test_detach_stops_delivery_and_unwatches() -> None:
    log = make_log(count=2)
    feed = Feed(EPOCH)
    feed.attach(log)
    feed.collect()
    assert feed.detach("s") is True
    assert feed.detach("s") is False
    assert feed.detach("never") is False
    assert feed.attached == []
    assert watchers(log) == set()
    feed.wait(0)
    log.append("text", {"text": "after detach"})
    assert feed.wait(0) is False  # public check: the log no longer sets the flag
    assert feed.collect() == []


# -- closed logs -----------------------------------------------------------------------------

def test_closed_log_delivers_the_rest_then_detached() -> None:
    log = make_log(count=3)
    feed = Feed(EPOCH)
    feed.attach(log)
    log.close()
    assert summary(feed.collect()) == [("events", "s", [1, 2, 3]), ("caught_up", "s", 3),
                                       ("detached", "s", 3)]
    assert feed.attached == []
    assert watchers(log) == set()
    assert feed.collect() == []


def test_closed_log_drains_in_batches_before_detached() -> None:
    log = make_log(count=5)
    feed = Feed(EPOCH, batch=2)
    feed.attach(log)
    log.close()
    assert summary(feed.collect()) == [("events", "s", [1, 2])]
    assert feed.attached == ["s"]
    assert summary(feed.collect()) == [("events", "s", [3, 4])]
    assert summary(feed.collect()) == [("events", "s", [5]), ("caught_up", "s", 5),
                                       ("detached", "s", 5)]
    assert feed.attached == []


def test_log_closing_after_caught_up_is_only_detached() -> None:
    log = make_log(count=1)
    feed = Feed(EPOCH)
    feed.attach(log)
    feed.collect()
    feed.wait(0)
    log.close()
    assert feed.wait(0) is True  # the close set the flag
    assert summary(feed.collect()) == [("detached", "s", 1)]


# -- the inbox -------------------------------------------------------------------------------

def test_inbox_snapshot_at_once_then_only_when_the_revision_changes() -> None:
    inbox = make_inbox()
    feed = Feed(EPOCH)
    feed.subscribe_inbox(inbox)
    first = feed.collect()
    assert summary(first) == [("inbox", 0)]
    assert first[0].session_id is None
    assert first[0].snapshot == {"revision": 0, "epoch": EPOCH, "entries": []}
    assert feed.collect() == []
    feed.wait(0)
    inbox.changed()
    assert feed.wait(0) is True
    assert summary(feed.collect()) == [("inbox", 1)]
    inbox.changed()
    inbox.changed()
    assert summary(feed.collect()) == [("inbox", 3)]  # whole snapshots: only the newest
    assert feed.collect() == []


def test_inbox_seen_delays_the_first_snapshot_until_a_change() -> None:
    inbox = make_inbox()
    inbox.changed()
    inbox.changed()
    feed = Feed(EPOCH)
    feed.subscribe_inbox(inbox, seen=2)
    assert feed.collect() == []
    inbox.changed()
    assert summary(feed.collect()) == [("inbox", 3)]


def test_inbox_seen_that_differs_delivers_at_once() -> None:
    inbox = make_inbox()
    feed = Feed(EPOCH)
    feed.subscribe_inbox(inbox, seen=7)  # e.g. a revision from before a restart
    assert summary(feed.collect()) == [("inbox", 0)]


def test_subscribe_without_snapshots_delivers_only_the_close() -> None:
    inbox = make_inbox()
    feed = Feed(EPOCH)
    feed.subscribe_inbox(inbox, snapshots=False)
    assert feed.collect() == []
    inbox.changed()
    assert feed.collect() == []
    inbox.close()
    closed = feed.collect()
    assert summary(closed) == [("detached", None, 0)]
    assert closed[0].session_id is None
    assert watchers(inbox) == set()
    assert feed.collect() == []


def test_resubscribe_switches_snapshots_on_from_a_seen_revision() -> None:
    # How a WebSocket's inbox.subscribe works: close-only first, snapshots after its reply.
    inbox = make_inbox()
    feed = Feed(EPOCH)
    feed.subscribe_inbox(inbox, snapshots=False)
    inbox.changed()
    assert feed.collect() == []
    feed.subscribe_inbox(inbox, snapshots=True, seen=inbox.revision)
    assert feed.collect() == []
    inbox.changed()
    assert summary(feed.collect()) == [("inbox", 2)]
    assert len(watchers(inbox)) == 1


def test_inbox_close_delivers_detached_with_no_session() -> None:
    inbox = make_inbox()
    feed = Feed(EPOCH)
    feed.subscribe_inbox(inbox)
    feed.collect()
    feed.wait(0)
    inbox.close()
    assert feed.wait(0) is True
    closed = feed.collect()
    assert [(d.kind, d.session_id) for d in closed] == [("detached", None)]
    assert watchers(inbox) == set()
    assert feed.unsubscribe_inbox() is False  # the close already dropped it


def test_subscribing_to_another_inbox_unwatches_the_first() -> None:
    first, second = make_inbox(), make_inbox()
    feed = Feed(EPOCH)
    feed.subscribe_inbox(first)
    feed.subscribe_inbox(second)
    assert watchers(first) == set() and len(watchers(second)) == 1


def test_unsubscribe_inbox() -> None:
    inbox = make_inbox()
    feed = Feed(EPOCH)
    assert feed.unsubscribe_inbox() is False
    feed.subscribe_inbox(inbox)
    assert feed.unsubscribe_inbox() is True
    assert feed.unsubscribe_inbox() is False
    assert watchers(inbox) == set()
    inbox.changed()
    assert feed.collect() == []


def test_sessions_come_before_the_inbox_in_one_collect() -> None:
    log, inbox = make_log(count=1), make_inbox()
    feed = Feed(EPOCH)
    feed.attach(log)
    feed.subscribe_inbox(inbox)
    assert summary(feed.collect()) == [("events", "s", [1]), ("caught_up", "s", 1),
                                       ("inbox", 0)]


def test_inbox_and_sessions_are_independent() -> None:
    log, inbox = make_log(count=1), make_inbox()
    feed = Feed(EPOCH)
    feed.attach(log)
    feed.subscribe_inbox(inbox)
    feed.collect()
    inbox.close()
    log.append("text", {"text": "still attached"})
    assert summary(feed.collect()) == [("events", "s", [2]), ("detached", None, 0)]
    assert feed.attached == ["s"]


# -- next(), wait(), threads -----------------------------------------------------------------

def test_next_returns_what_is_due_without_waiting() -> None:
    feed = Feed(EPOCH)
    feed.attach(make_log(count=2))
    started = time.monotonic()
    assert summary(feed.next(30)) == [("events", "s", [1, 2]), ("caught_up", "s", 2)]
    assert time.monotonic() - started < 5


def test_next_times_out_with_an_empty_list() -> None:
    feed = Feed(EPOCH)
    feed.attach(make_log(count=1))
    feed.next(1)
    started = time.monotonic()
    assert feed.next(0.05) == []
    assert 0.04 <= time.monotonic() - started < 5
    assert Feed(EPOCH).next(0) == []


def test_next_ignores_changes_that_deliver_nothing() -> None:
    # A paused session's append sets the flag; next() keeps waiting for a real delivery.
    paused, live = make_log("p"), make_log("l")
    feed = Feed(EPOCH)
    feed.attach(paused, paused=True)
    feed.attach(live)
    feed.next(1)  # live's caught_up
    threading.Timer(0.02, paused.append, ("text", {"text": "x"})).start()
    threading.Timer(0.1, live.append, ("text", {"text": "y"})).start()
    assert summary(feed.next(30)) == [("events", "l", [1])]


def test_an_append_during_a_wait_wakes_it() -> None:
    log = make_log()
    feed = Feed(EPOCH)
    feed.attach(log)
    assert summary(feed.next(1)) == [("caught_up", "s", 0)]
    thread, box = run_in_thread(feed.next, 30)
    started = time.monotonic()
    log.append("text", {"text": "wake up"})
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - started < 5
    assert summary(box[0]) == [("events", "s", [1])]


def test_an_inbox_change_during_a_wait_wakes_it() -> None:
    inbox = make_inbox()
    feed = Feed(EPOCH)
    feed.subscribe_inbox(inbox)
    assert summary(feed.next(1)) == [("inbox", 0)]
    thread, box = run_in_thread(feed.next, 30)
    inbox.changed()
    thread.join(10)
    assert not thread.is_alive()
    assert summary(box[0]) == [("inbox", 1)]


def test_a_concurrent_attach_during_a_wait_wakes_it() -> None:
    feed = Feed(EPOCH)
    thread, box = run_in_thread(feed.next, 30)
    feed.attach(make_log(count=1))
    thread.join(10)
    assert not thread.is_alive()
    # Whether the wait saw the attach or not, nothing is lost: what is due is collected.
    got = summary(box[0]) + summary(feed.collect())
    assert got == [("events", "s", [1]), ("caught_up", "s", 1)]


def test_wait_returns_false_on_timeout_and_clears_the_flag() -> None:
    feed = Feed(EPOCH)
    assert feed.wait(0.01) is False
    feed.wake()
    assert feed.wait(0) is True
    assert feed.wait(0) is False


def test_many_appends_from_threads_are_all_delivered_in_order() -> None:
    log = make_log()
    feed = Feed(EPOCH, batch=7)
    feed.attach(log)

    def writer() -> None:
        for _ in range(100):
            log.append("text", {"text": "x"})

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    ids: list[int] = []
    deadline = time.monotonic() + 30
    while len(ids) < 300 and time.monotonic() < deadline:
        for d in feed.next(1):
            if d.kind == "events":
                ids.extend(e.id for e in d.events)
    for t in threads:
        t.join(10)
    assert ids == list(range(1, 301))


# -- close -----------------------------------------------------------------------------------

def test_close_is_idempotent_and_unwatches_everything() -> None:
    a, b, inbox = make_log("a", 1), make_log("b", 1), make_inbox()
    feed = Feed(EPOCH)
    feed.attach(a)
    feed.attach(b, paused=True)
    feed.subscribe_inbox(inbox)
    feed.close()
    feed.close()
    assert feed.attached == []
    assert watchers(a) == set() and watchers(b) == set() and watchers(inbox) == set()
    assert feed.collect() == []
    feed.wait(0)
    a.append("text", {"text": "x"})
    inbox.changed()
    assert feed.wait(0) is False  # public check: nothing sets the flag any more
    assert feed.unsubscribe_inbox() is False
    assert feed.detach("a") is False


def test_next_after_close_returns_at_once() -> None:
    feed = Feed(EPOCH)
    feed.attach(make_log(count=3))
    feed.close()
    started = time.monotonic()
    assert feed.next(30) == []
    assert time.monotonic() - started < 5


def test_close_wakes_a_waiting_next() -> None:
    log = make_log()
    feed = Feed(EPOCH)
    feed.attach(log)
    feed.next(1)
    thread, box = run_in_thread(feed.next, 30)
    feed.close()
    thread.join(10)
    assert not thread.is_alive()
    assert box == [[]]


class _CloseBeforeClear(threading.Event):
    """A flag whose first ``clear`` lets ``feed.close()`` run first: the interleaving where
    another thread closes the feed between ``next()``'s closed-check and its clear."""

    def __init__(self) -> None:
        super().__init__()
        self.feed: Feed | None = None

    def clear(self) -> None:
        feed, self.feed = self.feed, None
        if feed is not None:
            feed.close()
        super().clear()


def test_close_between_the_closed_check_and_the_clear_is_not_lost() -> None:
    feed = Feed(EPOCH)
    flag = _CloseBeforeClear()
    feed._flag = flag
    flag.feed = feed
    flag.set()  # as attach() leaves it
    started = time.monotonic()
    assert feed.next(2) == []
    assert time.monotonic() - started < 1


def test_pause_unwatches_every_source_and_resume_misses_nothing() -> None:
    log, inbox = make_log(count=2), make_inbox()
    feed = Feed(EPOCH)
    feed.attach(log)
    feed.subscribe_inbox(inbox, snapshots=False)
    assert feed.collect()  # the replay
    feed.pause()
    feed.pause()  # idempotent
    assert log._wakeup.watchers == 0 and inbox._wakeup.watchers == 0
    fill(log, 3)  # appended while paused: no wake-up...
    feed.wait(0)
    assert not feed.wait(0)
    feed.resume()
    assert log._wakeup.watchers == 1 and inbox._wakeup.watchers == 1
    assert feed.wait(0)  # ...but resume wakes the feed, and the cursor has them all
    assert summary(feed.collect()) == [("events", "s", [3, 4, 5])]
    feed.pause()
    feed.close()
    feed.resume()  # a closed feed stays unsubscribed
    assert log._wakeup.watchers == 0 and inbox._wakeup.watchers == 0


def test_resume_wakes_only_when_something_is_due() -> None:
    # A stream pauses around every write; waking it after each would cost a wasted collect.
    log, inbox = make_log(count=2), make_inbox()
    feed = Feed(EPOCH)
    feed.attach(log)
    feed.subscribe_inbox(inbox)
    assert feed.collect()  # the replay, caught_up and the snapshot
    feed.wait(0)
    feed.pause()
    feed.resume()
    assert not feed.wait(0)
    for change in (lambda: fill(log, 1), inbox.changed,
                   lambda: log.close()):
        feed.pause()
        change()
        feed.resume()
        assert feed.wait(0)
        assert feed.collect()


def test_a_tick_ends_a_wait_without_a_timeout_only_when_nothing_is_due() -> None:
    # The SSE stream waits with no timer of its own; the reaper's clock ticks for keepalives.
    log = make_log(count=1)
    feed = Feed(EPOCH)
    feed.attach(log)
    assert summary(feed.next(None)) == [("events", "s", [1]), ("caught_up", "s", 1)]
    timer = threading.Timer(0.05, feed.tick)
    timer.start()
    assert feed.next(None) == []  # the tick: time for a keepalive
    timer.join()
    feed.tick()
    fill(log, 1)
    assert summary(feed.next(None)) == [("events", "s", [2])]  # data wins over the tick
    threading.Timer(0.05, fill, (log, 1)).start()
    assert summary(feed.next(None)) == [("events", "s", [3])]  # and the tick was spent


# -- lend and reclaim (blueprints.fanout's shared writer) ---------------------------------

def caught_up_feed(log: MemoryEventLog) -> Feed:
    feed = Feed(EPOCH)
    feed.attach(log, 0)
    feed.collect()
    return feed


def test_lend_hands_out_a_caught_up_tail_and_stops_the_log_waking_the_feed() -> None:
    log = make_log(count=3)
    feed = caught_up_feed(log)
    feed.wait(0)
    lent = feed.lend("s")
    assert lent == (log, 3)
    assert len(watchers(log)) == 0
    fill(log, 2)
    assert not feed.wait(0)  # the log no longer wakes it
    assert feed.collect() == []  # and collect leaves it to the other writer
    assert feed.lend("s") is None  # lent once


def test_lend_refuses_while_something_is_due_first() -> None:
    log = make_log(count=3)
    feed = Feed(EPOCH)
    feed.attach(log, 0)
    assert feed.lend("s") is None  # the replay is not done
    feed.collect()
    log.append("text", {"text": "new"})
    assert feed.lend("s") is None  # an event after the cursor
    feed.collect()
    assert feed.lend("nope") is None
    log.close()
    assert feed.lend("s") is None  # the close is still to deliver
    reset = Feed(EPOCH)
    reset.attach(make_log(count=1), 5)
    assert reset.lend("s") is None


def test_lend_refuses_a_paused_or_closed_feed() -> None:
    log = make_log(count=1)
    feed = caught_up_feed(log)
    feed.pause()
    assert feed.lend("s") is None
    feed.resume()
    feed.close()
    assert feed.lend("s") is None


def test_reclaim_moves_the_cursor_and_delivers_what_came_after_it() -> None:
    log = make_log(count=3)
    feed = caught_up_feed(log)
    feed.lend("s")
    fill(log, 4)  # events 4..7; the other writer wrote up to 5
    feed.reclaim("s", 5)
    assert len(watchers(log)) == 1
    assert feed.wait(0)
    assert summary(feed.collect()) == [("events", "s", [6, 7])]
    log.append("text", {"text": "live"})
    assert feed.wait(0)  # watched again


def test_reclaim_never_moves_the_cursor_back_and_ignores_what_is_not_lent() -> None:
    log = make_log(count=3)
    feed = caught_up_feed(log)
    feed.reclaim("s", 1)  # not lent: nothing
    assert summary(feed.collect()) == []
    feed.lend("s")
    feed.reclaim("s", 1)
    assert summary(feed.collect()) == []
    feed.reclaim("nope", 9)


def test_a_lent_session_leaves_the_inbox_and_other_sessions_alone() -> None:
    log, other = make_log("s", 1), make_log("t", 1)
    inbox = make_inbox()
    feed = Feed(EPOCH)
    feed.attach(log, 0)
    feed.attach(other, 0)
    feed.collect()
    feed.subscribe_inbox(inbox)
    feed.collect()
    feed.lend("s")
    feed.wait(0)
    other.append("text", {"text": "t2"})
    fill(log, 1)
    assert feed.wait(0)
    assert summary(feed.collect()) == [("events", "t", [2])]


def test_a_paused_feed_resumes_without_rewatching_a_lent_log() -> None:
    log = make_log(count=1)
    feed = caught_up_feed(log)
    feed.lend("s")
    feed.pause()
    feed.resume()
    assert len(watchers(log)) == 0
    feed.reclaim("s", 1)
    assert len(watchers(log)) == 1


def test_reclaim_with_nothing_new_leaves_the_flag_clear() -> None:
    log = make_log(count=2)
    feed = caught_up_feed(log)
    feed.wait(0)
    feed.lend("s")
    feed.reclaim("s", 2)
    assert not feed.wait(0)  # a sender that loops lend, wait, reclaim must not spin
