"""The Redis store's own promises, with two stores on one Redis standing for two workers: ids
without gaps under concurrent appenders, the same bytes everywhere, wake-ups across processes,
cursors ahead of a process's view, deletes, the epoch across restarts and data loss, and a
wake reader that outlives a Redis restart. The shared contract is in test_contract.py.

Waits are bounded by generous timeouts, never timed (DESIGN.md rule 9: plain threads here).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.redis_server import RedisServer
from tether.config import Settings
from tether.feed import Feed
from tether.stores import open_store
from tether.stores.base import EventLog, SessionRecord
from tether.stores.memory import MemoryStore
from tether.stores.redis import EpochChanged, RedisStore

CLOCK = 1763900000.1234
#: Seconds any cross-process wait may take before the test fails (it normally takes ms).
BOUND = 30

StoreMaker = Callable[..., RedisStore]


@pytest.fixture
def make_store(redis_server: RedisServer, redis_prefix: str) -> Iterator[StoreMaker]:
    """Stores on the shared server under this test's prefix: two of them are two workers."""
    stores: list[RedisStore] = []

    def factory(url: str | None = None, **kwargs: Any) -> RedisStore:
        store = RedisStore(url or redis_server.url, redis_prefix, clock=lambda: CLOCK, **kwargs)
        stores.append(store)
        return store

    yield factory
    for store in stores:
        store.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop, restart or flush."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


def record(session_id: str, **fields: Any) -> SessionRecord:
    base: dict[str, Any] = {"agent": "local", "title": "t", "created_at": 1.5,
                            "workspace": "/w", "auto_approve": False,
                            "agent_session_id": "a", "turns": 0}
    return SessionRecord(session_id, **{**base, **fields})


def datas(log: EventLog) -> list[bytes]:
    return [e.data for e in log.read_after(0)]


class HeldWakes:
    """Holds a store's wake reader before it handles a batch, until :meth:`release`: the
    process's view of its logs then lags Redis, as a slow worker's would."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._handle = store._handle
        self._go = threading.Event()
        self.held = threading.Event()
        store._handle = self._wrapped  # type: ignore[method-assign]

    def _wrapped(self, *args: Any) -> int:
        self.held.set()
        self._go.wait(BOUND)
        return self._handle(*args)

    def release(self) -> None:
        self._go.set()


# -- appends from several processes ---------------------------------------------------------

def test_concurrent_appends_from_two_stores_give_ids_without_gaps_and_the_same_bytes(
        make_store: StoreMaker) -> None:
    a, b = make_store(), make_store()
    log_a = a.create_log("s")
    log_b = b.open_log("s")
    appended: list[int] = []
    lock = threading.Lock()

    def fill(log: EventLog, who: str) -> None:
        for i in range(150):
            event = log.append("text", {"text": f"{who} {i} \u2028 é"})
            with lock:
                appended.append(event.id)

    threads = [threading.Thread(target=fill, args=(log, f"{name}{t}"))
               for t in range(3) for name, log in (("a", log_a), ("b", log_b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = 6 * 150
    assert sorted(appended) == list(range(1, total + 1))  # no gap, no duplicate
    for log in (log_a, log_b):
        assert log.wait_for(total - 1, timeout=BOUND)
        assert log.last_id == total
    assert [e.id for e in log_a.read_after(0)] == list(range(1, total + 1))
    assert datas(log_a) == datas(log_b)
    # Each writer's own events are in the order it appended them.
    texts = [e.payload["text"] for e in log_b.read_after(0)]
    for who in ("a0", "b1", "a2"):
        mine = [t for t in texts if t.startswith(who + " ")]
        assert mine == [f"{who} {i} \u2028 é" for i in range(150)]


def test_appends_give_the_bytes_the_memory_store_gives(make_store: StoreMaker) -> None:
    memory = MemoryStore(clock=lambda: CLOCK)
    redis_log = make_store().create_log("sess-1")
    memory_log = memory.create_log("sess-1")
    appends: list[tuple[str, dict[str, Any]]] = [
        ("user", {"turn": 1, "text": "hi\n\u2028\ud800 \"quoted\" \\ </script>"}),
        ("turn_end", {}),
        ("tool_use", {"tool_use_id": "t1", "name": "Bash",
                      "input": {"command": "echo hi", "n": [1, 2.5, None, True]}}),
        ("text", {"text": "x" * 5000}),  # past the wake entry's 1 KiB: fetched, not carried
        ("result", {"is_error": False, "cost_usd": 0.1, "usage": {}}),
    ]
    for kind, payload in appends:
        assert redis_log.append(kind, payload).data == memory_log.append(kind, payload).data
    assert datas(redis_log) == datas(memory_log)
    memory.close()


# -- delivery to another process -----------------------------------------------------------

def test_wait_for_in_another_store_wakes_when_one_appends(make_store: StoreMaker) -> None:
    a, b = make_store(), make_store()
    log_a = a.create_log("s")
    log_b = b.open_log("s")
    flag = threading.Event()
    log_b.watch(flag)
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(log_b.wait_for(0, timeout=BOUND)))
    waiter.start()
    small = log_a.append("text", {"text": "carried in the wake entry"})
    waiter.join()
    assert woke == [True] and flag.is_set()
    assert datas(log_b) == [small.data]
    # An event over 1 KiB travels without its bytes: B fetches it from the log stream.
    big = log_a.append("text", {"text": "y" * 4000})
    assert log_b.wait_for(1, timeout=BOUND)
    assert datas(log_b) == [small.data, big.data]
    assert log_b.read_after(1)[0].payload == {"text": "y" * 4000}


def test_a_cursor_ahead_of_this_process_is_served_after_a_sync_not_reset(
        make_store: StoreMaker) -> None:
    a, b = make_store(), make_store()
    log_a = a.create_log("s")
    log_b = b.open_log("s")
    log_a.append("text", {"text": "1"})
    assert log_b.wait_for(0, timeout=BOUND)  # B's reader is past its start, following wakes
    held = HeldWakes(b)
    try:
        written = [log_a.append("text", {"text": str(i)}) for i in range(2, 6)]
        assert held.held.wait(BOUND)
        assert log_b.last_id == 1  # B has not heard of 2..5
        # A client that A served up to 5 reaches B: it resumes, it is not reset.
        feed = Feed(b.epoch)
        info = feed.attach(log_b, after=5)
        assert (info["reset"], info["after"], info["last_event_id"]) == (False, 5, 5)
        assert log_b.read_after(3) == [e for e in log_b.read_after(0) if e.id > 3]
        assert [e.data for e in log_b.read_after(1)] == [e.data for e in written]
        # Past Redis's end it is a reset.
        assert feed.attach(log_b, after=6)["reset"] is True
        feed.close()
    finally:
        held.release()


def test_a_gap_in_wake_ids_resyncs_every_open_log(make_store: StoreMaker,
                                                  redis_server: RedisServer,
                                                  redis_prefix: str) -> None:
    a, b = make_store(), make_store()
    log_a = a.create_log("s")
    log_b = b.open_log("s")
    log_a.append("text", {"text": "1"})
    assert log_b.wait_for(0, timeout=BOUND)
    held = HeldWakes(b)
    try:
        log_a.append("text", {"text": "2"})
        assert held.held.wait(BOUND)  # B holds the batch with event 2's wake
        written = [log_a.append("text", {"text": str(i)}) for i in range(3, 6)]
        with redis_server.client() as client:
            # Event 4's wake is lost (as when a reader falls past MAXLEN): B must not wait
            # for it, nor skip event 4.
            entries = client.xrange(f"{redis_prefix}:wake")
            lost = [i for i, f in entries if f.get(b"n") == b"4"]
            assert client.xdel(f"{redis_prefix}:wake", *lost) == 1
    finally:
        held.release()
    assert log_b.wait_for(4, timeout=BOUND)
    assert datas(log_b)[2:] == [e.data for e in written]
    # One blocking reader per store, even through the resync's pipeline (redis-py runs a
    # pipeline on a connection of the client's pool: the reader's pool holds one).
    with redis_server.client() as client:
        names = [c["name"] for c in client.client_list()]
    assert names.count(f"{redis_prefix}:wake-reader") == 2  # A's and B's
    assert 2 <= names.count(f"{redis_prefix}:commands") <= 2 * 64


def test_drop_in_one_store_closes_the_log_in_the_other(make_store: StoreMaker) -> None:
    a, b = make_store(), make_store()
    log_a = a.create_log("s")
    a.save_session(record("s"))
    log_a.append("text", {"text": "before"})
    log_b = b.open_log("s")
    a.drop_log("s")
    assert log_a.closed
    assert log_b.wait_for(1, timeout=BOUND) and log_b.closed
    with pytest.raises(RuntimeError, match="closed"):
        log_b.append("text", {"text": "after"})
    assert b.sessions() == [] and a.sessions() == []
    assert b.open_log("s") is not log_b  # B forgot the deleted log (no mirror kept for it)


def test_a_log_of_a_deleted_session_refuses_appends_even_before_it_hears_of_it(
        make_store: StoreMaker) -> None:
    a, b = make_store(), make_store()
    a.create_log("s")
    log_b = b.open_log("s")
    held = HeldWakes(b)
    try:
        a.drop_log("s")
        # B's reader has not delivered the delete: Redis refuses the append, ids are never
        # started again from 1 for a deleted session.
        with pytest.raises(RuntimeError, match="closed"):
            log_b.append("text", {"text": "late"})
        assert log_b.closed
    finally:
        held.release()


# -- the epoch and restarts ----------------------------------------------------------------

def test_sessions_logs_and_epoch_survive_a_store_and_a_redis_restart(
        private_redis: RedisServer, redis_prefix: str) -> None:
    store = RedisStore(private_redis.url, redis_prefix, clock=lambda: CLOCK)
    log = store.create_log("s")
    written = [log.append("text", {"text": f"{i} \u2028 é"}) for i in range(30)]
    store.save_session(record("s", title="kept", turns=2, auto_approve=True, title_set=True))
    store.save_session(record("older", created_at=0.5))
    store.create_log("gone").append("text", {"text": "x"})
    store.save_session(record("gone"))
    store.drop_log("gone")
    epoch = store.epoch
    store.close()

    again = RedisStore(private_redis.url, redis_prefix, clock=lambda: CLOCK, tail=4)
    try:
        assert again.epoch == epoch
        assert [r.id for r in again.sessions()] == ["older", "s"]
    finally:
        again.close()

    private_redis.stop()
    private_redis.start()  # the AOF brings everything back
    again = RedisStore(private_redis.url, redis_prefix, clock=lambda: CLOCK, tail=4)
    try:
        assert again.epoch == epoch
        assert again.sessions() == [record("older", created_at=0.5),
                                    record("s", title="kept", turns=2, auto_approve=True,
                                           title_set=True)]
        log = again.open_log("s")
        assert log.last_id == 30
        assert [(e.id, e.ts, e.kind, e.payload, e.data) for e in log.read_after(0)] == \
            [(e.id, e.ts, e.kind, e.payload, e.data) for e in written]
        assert log.append("text", {"text": "next"}).id == 31
        assert again.open_log("gone").last_id == 0
    finally:
        again.close()


def test_after_redis_loses_its_data_appends_refuse_and_every_store_takes_one_new_epoch(
        private_redis: RedisServer, redis_prefix: str) -> None:
    old = RedisStore(private_redis.url, redis_prefix, clock=lambda: CLOCK)
    try:
        log = old.create_log("s")
        for i in range(3):
            log.append("text", {"text": str(i)})
        first = old.epoch
        with private_redis.client() as client:
            client.flushall()
        with pytest.raises(EpochChanged, match="lost its data"):
            log.append("text", {"text": "would be id 1 again"})
        assert log.closed
        assert old.epoch != first  # taken at once, without a restart
        new = RedisStore(private_redis.url, redis_prefix, clock=lambda: CLOCK)
        try:
            assert new.epoch == old.epoch  # the cluster's: one new epoch for every process
            assert new.sessions() == []
        finally:
            new.close()
        with private_redis.client() as client:
            assert client.exists(f"{redis_prefix}:{{s}}:log") == 0  # nothing written
    finally:
        old.close()


def test_the_wake_reader_survives_a_redis_restart_and_catches_up(
        private_redis: RedisServer, redis_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tether.stores.redis")
    a = RedisStore(private_redis.url, redis_prefix, clock=lambda: CLOCK)
    b = RedisStore(private_redis.url, redis_prefix, clock=lambda: CLOCK)
    try:
        log_a = a.create_log("s")
        log_b = b.open_log("s")
        log_a.append("text", {"text": "before"})
        assert log_b.wait_for(0, timeout=BOUND)

        private_redis.stop()
        private_redis.start()
        # Appended as soon as Redis is back, while B's reader is still reconnecting.
        after = [log_a.append("text", {"text": f"after {i}"}) for i in range(5)]
        assert log_b.wait_for(5, timeout=BOUND)
        assert datas(log_b)[1:] == [e.data for e in after]
        # And it follows the live wakes again.
        last = log_a.append("text", {"text": "live"})
        assert log_b.wait_for(6, timeout=BOUND)
        assert datas(log_b)[-1] == last.data
    finally:
        a.close()
        b.close()
    warnings = [r for r in caplog.records if "wake reader" in r.getMessage()]
    assert len(warnings) <= 2  # once per store whose reader saw the outage, not per retry
    assert not b._reader.is_alive() and not a._reader.is_alive()


def test_close_stops_the_reader_and_closes_every_log(make_store: StoreMaker) -> None:
    store = make_store()
    logs = [store.create_log(f"s{i}") for i in range(3)]
    store.close()
    assert not store._reader.is_alive()
    assert all(log.closed for log in logs)
    with pytest.raises(RuntimeError):
        logs[0].append("text", {"text": "late"})


def test_open_store_builds_the_redis_store_from_the_settings(
        redis_server: RedisServer, redis_prefix: str, tmp_path: Path) -> None:
    settings = Settings.from_env({"TETHER_STORE": "redis", "TETHER_REDIS_URL": redis_server.url,
                                  "TETHER_REDIS_PREFIX": redis_prefix,
                                  "TETHER_DATA_DIR": tmp_path})
    store = open_store(settings)
    try:
        assert isinstance(store, RedisStore) and store.durable
        store.create_log("s").append("text", {"text": "x"})
        with redis_server.client() as client:
            keys = sorted(k.decode() for k in client.keys(f"{redis_prefix}:*"))
        assert keys == [f"{redis_prefix}:epoch", f"{redis_prefix}:events",
                        f"{redis_prefix}:wake", f"{redis_prefix}:wake:seq",
                        f"{redis_prefix}:{{s}}:log", f"{redis_prefix}:{{s}}:rec"]
        assert store.events_appended() == 1
    finally:
        store.close()


def test_the_prefix_must_be_safe_in_a_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="redis_prefix|REDIS_PREFIX"):
        Settings.from_env({"TETHER_REDIS_PREFIX": "a{b}"})
    assert Settings.from_env({}).redis_prefix == "tether"
    assert Settings.from_env({}).redis_url.get_secret_value() == "redis://127.0.0.1:6379/0"


def test_a_follower_gets_only_its_kinds_each_once_in_order(make_store: StoreMaker) -> None:
    a, b = make_store(), make_store()
    mine = a.create_log("f1")
    mine.append("text", {"text": "before"})
    theirs = b.open_log("f1")
    got: list[tuple[int, str]] = []
    arrived = threading.Event()

    def deliver(event: Any) -> None:
        got.append((event.id, event.kind))
        if event.kind == "turn_end":
            arrived.set()

    assert theirs.follow(frozenset({"user", "turn_end"}), deliver) == 1
    for kind, payload in [("user", {"turn": 1, "text": "hi"}), ("text", {"text": "x"}),
                          ("text", {"text": "y"}), ("turn_end", {"turn": 1,
                                                                 "reason": "completed"})]:
        mine.append(kind, payload)
    assert arrived.wait(BOUND)
    theirs.sync(10)
    assert got == [(2, "user"), (5, "turn_end")]
    theirs.unfollow()
    mine.append("user", {"turn": 2, "text": "again"})
    assert theirs.wait_for(5, BOUND)
    assert got == [(2, "user"), (5, "turn_end")]
