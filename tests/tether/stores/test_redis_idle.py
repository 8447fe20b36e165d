"""Idle views of the Redis store (SCALE-OUT.md section 5, "Mirror lifetime"): a view nobody
follows is dropped after its idle time, one with a watcher, a waiter or a follower is kept,
a dropped view comes back (registered, then brought up to Redis) on its next use, and a
use racing the drop never leaves a caller on a view the wake reader no longer feeds.

Idle time is measured by a clock the test moves (the store's ``monotonic``), never by
waiting; cross-store waits are bounded by generous timeouts (plain threads here).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.redis_server import RedisServer
from tether.events import Event
from tether.feed import Feed
from tether.stores.redis import MIRROR_IDLE_SECONDS, RedisEventLog, RedisStore

CLOCK = 1763900000.1234
#: Seconds any cross-process wait may take before the test fails (it normally takes ms).
BOUND = 30


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


StoreMaker = Callable[..., RedisStore]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_store(redis_server: RedisServer, redis_prefix: str,
               clock: Clock) -> Iterator[StoreMaker]:
    """Stores on the shared server under this test's prefix, idle time by ``clock``."""
    stores: list[RedisStore] = []

    def factory(**kwargs: Any) -> RedisStore:
        store = RedisStore(redis_server.url, redis_prefix, clock=lambda: CLOCK,
                           monotonic=clock, **kwargs)
        stores.append(store)
        return store

    yield factory
    for store in stores:
        store.close()


def ids(events: list[Event]) -> list[int]:
    return [e.id for e in events]


def fill(log: RedisEventLog, count: int) -> None:
    for i in range(count):
        log.append("text", {"text": f"event {i}"})


def held(store: RedisStore, session_id: str) -> RedisEventLog | None:
    """The view the wake reader feeds for ``session_id``, if any."""
    with store._lock:
        return store._logs.get(session_id)


def next_ids(feed: Feed) -> list[int]:
    """The ids of the next events ``feed`` delivers (past its ``caught_up``)."""
    for _ in range(10):
        got = [e.id for d in feed.next(BOUND) for e in d.events]
        if got:
            return got
    return []


def until(check: Callable[[], Any]) -> Any:
    """Wait (bounded) for ``check()`` to be true: for a thread to reach a wait."""
    done = threading.Event()
    for _ in range(BOUND * 100):
        value = check()
        if value:
            return value
        done.wait(0.01)
    raise AssertionError("not reached in time")


def test_a_view_untouched_for_the_idle_time_is_dropped_and_a_used_one_kept(
        make_store: StoreMaker, clock: Clock) -> None:
    store = make_store()
    old, recent = store.create_log("old"), store.create_log("recent")
    clock.advance(MIRROR_IDLE_SECONDS - 1)
    recent.read_after(0)  # a use: its idle time starts again
    assert store.drop_idle() == []  # nothing idle for the whole time yet
    clock.advance(2)
    assert store.drop_idle() == ["old"]
    assert store.views == 1 and held(store, "old") is None and held(store, "recent") is recent
    assert not old.closed  # dropped, not closed: a caller holding it may use it again


def test_views_with_a_watcher_a_waiter_a_follower_or_kept_by_the_caller_stay(
        make_store: StoreMaker, clock: Clock) -> None:
    store = make_store()
    watched, waited, followed, owned = (store.create_log(s) for s in
                                        ("watched", "waited", "followed", "owned"))
    feed = Feed(store.epoch)
    feed.attach(watched)
    followed.follow(frozenset({"user"}), lambda event: None)
    waiter = threading.Thread(target=waited.wait_for, args=(0, BOUND))
    waiter.start()
    until(lambda: waited._waiters)
    clock.advance(10 * MIRROR_IDLE_SECONDS)
    assert store.drop_idle(keep={"owned"}) == []
    assert store.views == 4
    # Interest gone: all idle (the waiter's end counts as a use, so the clock moves on).
    feed.close()
    followed.unfollow()
    waited.append("text", {"text": "ends the wait"})
    waiter.join(BOUND)
    clock.advance(MIRROR_IDLE_SECONDS)
    assert sorted(store.drop_idle()) == ["followed", "owned", "waited", "watched"]
    assert store.views == 0


def test_a_dropped_view_taken_back_serves_exact_resume_and_live_wakes(
        make_store: StoreMaker, clock: Clock) -> None:
    mine, other = make_store(), make_store()
    writer = other.create_log("s")
    fill(writer, 3)
    view = mine.open_log("s")
    assert view.last_id == 3
    clock.advance(MIRROR_IDLE_SECONDS)
    assert mine.drop_idle() == ["s"]
    fill(writer, 2)  # appended while this worker feeds no view of "s"
    # Its wakes were ignored: the dropped view still ends at 3 (its reader has handled the
    # wakes once a view that is fed has them too).
    probe = mine.create_log("probe")
    other.open_log("probe").append("text", {"text": "after"})
    assert probe.wait_for(0, BOUND)
    assert view.last_id == 3
    # The caller who held it resumes from its cursor: exactly 4 and 5, no reset, no repeat.
    assert ids(view.read_after(3)) == [4, 5]
    assert held(mine, "s") is view  # fed again
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(view.wait_for(5, BOUND)))
    waiter.start()
    writer.append("text", {"text": "live"})
    waiter.join(BOUND)
    assert got == [True] and ids(view.read_after(5)) == [6]


def test_a_dropped_view_nobody_holds_is_freed_and_a_fresh_one_opens_with_the_same_ids(
        make_store: StoreMaker, clock: Clock) -> None:
    mine, other = make_store(), make_store()
    writer = other.create_log("s")
    fill(writer, 3)
    view = mine.open_log("s")
    first = [e.data for e in view.read_after(0)]
    clock.advance(MIRROR_IDLE_SECONDS)
    assert mine.drop_idle() == ["s"]
    del view
    gc.collect()
    assert "s" not in mine._dropped  # freed: nothing of it left in this worker
    fill(writer, 2)
    fresh = mine.open_log("s")
    assert fresh.last_id == 5 and mine.epoch == other.epoch
    assert [e.data for e in fresh.read_after(0)][:3] == first
    assert ids(fresh.read_after(3)) == [4, 5]
    assert fresh.sync(5) == 5  # a cursor at Redis's end is not past it
    writer.append("text", {"text": "live"})
    assert fresh.wait_for(5, BOUND)


def test_open_log_of_a_dropped_view_still_held_returns_the_same_view(
        make_store: StoreMaker, clock: Clock) -> None:
    store = make_store()
    view = store.create_log("s")
    clock.advance(MIRROR_IDLE_SECONDS)
    store.drop_idle()
    assert store.open_log("s") is view and held(store, "s") is view  # never two views


def test_an_attach_that_races_the_drop_decision_keeps_the_view_or_takes_it_back(
        make_store: StoreMaker, clock: Clock) -> None:
    """Both orders, forced with Events: the drop decides first and the attach takes the
    view back (after the drop completes); the attach registers first and the drop keeps
    it. Either way the stream's view is the one the wake reader feeds."""
    mine, other = make_store(), make_store()
    writer = other.create_log("s")
    fill(writer, 2)
    view = mine.open_log("s")
    clock.advance(MIRROR_IDLE_SECONDS)
    decided, go, taking_back = threading.Event(), threading.Event(), threading.Event()
    decide = view._drop_if_idle
    take_back = mine._take_back

    def drop_then_pause(now: float, idle: float) -> bool:
        dropped = decide(now, idle)
        decided.set()
        go.wait(BOUND)  # the sweep holds the store's lock here, the view marked dropped
        return dropped

    def taking(log: RedisEventLog) -> None:
        taking_back.set()
        take_back(log)

    view._drop_if_idle = drop_then_pause  # type: ignore[method-assign]
    mine._take_back = taking  # type: ignore[method-assign]
    swept: list[list[str]] = []
    sweeper = threading.Thread(target=lambda: swept.append(mine.drop_idle()))
    sweeper.start()
    assert decided.wait(BOUND)
    feed = Feed(mine.epoch)
    attacher = threading.Thread(target=feed.attach, args=(view, 2))
    attacher.start()
    assert taking_back.wait(BOUND)  # the attach saw the drop and waits for the sweep
    go.set()
    sweeper.join(BOUND)
    attacher.join(BOUND)
    assert swept == [["s"]]
    assert held(mine, "s") is view and not view._dropped
    writer.append("text", {"text": "reaches the stream"})
    assert next_ids(feed) == [3]
    feed.close()

    # The other order: the watch is registered before the drop decides: kept.
    clock.advance(MIRROR_IDLE_SECONDS)
    decided.clear()
    go.clear()
    started = threading.Event()

    def pause_then_decide(now: float, idle: float) -> bool:
        started.set()
        go.wait(BOUND)
        return decide(now, idle)

    view._drop_if_idle = pause_then_decide  # type: ignore[method-assign]
    sweeper = threading.Thread(target=lambda: swept.append(mine.drop_idle()))
    sweeper.start()
    assert started.wait(BOUND)
    flag = threading.Event()
    view._wakeup.watch(flag)  # what Feed.attach registers, before the view checks the drop
    go.set()
    sweeper.join(BOUND)
    assert swept[-1] == [] and held(mine, "s") is view


def test_a_dropped_view_of_a_session_deleted_meanwhile_closes_when_used(
        make_store: StoreMaker, clock: Clock) -> None:
    mine, other = make_store(), make_store()
    other.create_log("s").append("text", {"text": "x"})
    view = mine.open_log("s")
    clock.advance(MIRROR_IDLE_SECONDS)
    mine.drop_idle()
    other.drop_log("s")
    assert view.wait_for(1, BOUND)  # woken by the close, not left waiting
    assert view.closed and held(mine, "s") is None


def test_losing_the_data_closes_dropped_views_too(make_store: StoreMaker,
                                                   clock: Clock) -> None:
    store = make_store()
    view = store.create_log("s")
    clock.advance(MIRROR_IDLE_SECONDS)
    store.drop_idle()
    store._lost_data()
    assert view.closed
    assert view.wait_for(0, 0)  # returns at once: a stream on it ends (detached)
