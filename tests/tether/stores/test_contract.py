"""The store contract (tether/stores/base.py), run against every store: the in-memory one,
the SQLite one, the SQLite one with a two-event memory tail, so that reads stitch rows
from the file to events in memory, and the Redis one (a private redis-server,
tests/redis_server.py), also with a two-event tail, so that reads stitch stream entries to
events in memory.

The memory-only tests stay in tests/tether/test_log.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tether.stores.base import EventLog, SessionRecord, Store
from tether.stores.memory import MemoryStore
from tether.stores.redis import RedisStore
from tether.stores.sqlite import SqliteStore

CLOCK = 1763900000.1234
StoreFactory = Callable[[], Store]


@pytest.fixture(params=["memory", "sqlite", "sqlite-tail-2", "redis", "redis-tail-2"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    stores: list[Store] = []
    if request.param.startswith("redis"):
        server = request.getfixturevalue("redis_server")
        prefix = request.getfixturevalue("redis_prefix")

    def factory() -> Store:
        if request.param == "memory":
            store: Store = MemoryStore(clock=lambda: CLOCK)
        elif request.param.startswith("redis"):
            # Each store its own prefix: a new store is a new Redis "database".
            store = RedisStore(server.url, f"{prefix}-{len(stores)}", clock=lambda: CLOCK,
                               tail=2 if request.param == "redis-tail-2" else 1024)
        else:
            tail = 2 if request.param == "sqlite-tail-2" else 1024
            store = SqliteStore(tmp_path / f"db{len(stores)}" / "tether.sqlite3",
                                clock=lambda: CLOCK, tail=tail)
        stores.append(store)
        return store

    yield factory
    for store in stores:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> Store:
    return make_store()


@pytest.fixture
def log(store: Store) -> EventLog:
    return store.create_log("s")


def fill(log: EventLog, n: int) -> None:
    for i in range(n):
        log.append("text", {"text": str(i)})


def record(session_id: str, created_at: float, **fields: Any) -> SessionRecord:
    base = {"agent": "local", "title": f"title {session_id}", "workspace": f"/w/{session_id}",
            "auto_approve": False, "agent_session_id": f"agent-{session_id}", "turns": 0}
    return SessionRecord(session_id, created_at=created_at, **{**base, **fields})


# -- the log -------------------------------------------------------------------------------

def test_ids_start_at_one_and_have_no_gaps(log: EventLog) -> None:
    assert log.last_id == 0
    assert [log.append("text", {"text": str(i)}).id for i in range(5)] == [1, 2, 3, 4, 5]
    assert log.last_id == 5


def test_read_after_returns_only_newer_events_up_to_limit(log: EventLog) -> None:
    fill(log, 10)
    assert [e.id for e in log.read_after(7)] == [8, 9, 10]
    assert [e.id for e in log.read_after(2, limit=3)] == [3, 4, 5]
    assert [e.id for e in log.read_after(0)] == list(range(1, 11))
    assert log.read_after(10) == []
    assert log.read_after(99) == []
    assert log.read_after(3, limit=0) == []
    assert log.read_after(3, limit=-4) == []
    assert [e.id for e in log.read_after(-3, limit=2)] == [1, 2]


def test_every_window_reads_the_same_events(log: EventLog) -> None:
    # Every (after, limit) pair: with a two-event tail most windows cross file and memory.
    fill(log, 12)
    everything = log.read_after(0)
    assert [e.payload["text"] for e in everything] == [str(i) for i in range(12)]
    for after in range(-1, 14):
        for limit in [None, 0, 1, 2, 3, 5, 11, 12, 20]:
            start = max(after, 0)
            expected = everything[start:] if limit is None else everything[start:start + limit]
            got = log.read_after(after, limit)
            assert [(e.id, e.data) for e in got] == [(e.id, e.data) for e in expected], \
                (after, limit)


def test_event_is_encoded_once_as_the_envelope(log: EventLog) -> None:
    event = log.append("user", {"turn": 1, "text": "hi\n\u2028\ud800"})
    assert json.loads(event.data) == {"id": 1, "session_id": "s", "ts": 1763900000.123,
                                      "kind": "user", "turn": 1, "text": "hi\n\u2028\ud800"}
    assert b"\n" not in event.data and event.data.isascii()
    fill(log, 4)  # push it out of a two-event tail
    [read] = log.read_after(0, limit=1)
    assert read.data == event.data
    assert (read.id, read.session_id, read.ts, read.kind) == (1, "s", 1763900000.123, "user")
    assert read.payload == {"turn": 1, "text": "hi\n\u2028\ud800"}
    assert read.as_dict() == event.as_dict()


def test_append_refuses_unknown_kind_envelope_keys_and_nan(log: EventLog) -> None:
    with pytest.raises(ValueError, match="unknown event kind"):
        log.append("nope", {})
    with pytest.raises(ValueError, match="envelope"):
        log.append("text", {"id": 5})
    with pytest.raises(ValueError):
        log.append("text", {"text": float("nan")})
    assert log.last_id == 0 and log.read_after(0) == []
    assert log.append("text", {"text": "ok"}).id == 1


def test_wait_for_returns_at_once_when_events_exist(log: EventLog) -> None:
    log.append("text", {"text": "a"})
    assert log.wait_for(0, timeout=0) is True
    assert log.wait_for(1, timeout=0) is False


def test_wait_for_wakes_on_append_from_another_thread(log: EventLog) -> None:
    timer = threading.Timer(0.05, log.append, ("text", {"text": "late"}))
    timer.start()
    started = time.monotonic()
    assert log.wait_for(0, timeout=10) is True
    assert time.monotonic() - started < 5
    timer.join()


def test_wait_for_times_out_with_false(log: EventLog) -> None:
    assert log.wait_for(0, timeout=0.01) is False


def test_append_between_read_and_wait_ends_the_wait(log: EventLog) -> None:
    assert log.read_after(0) == []
    log.append("text", {"text": "raced"})
    assert log.wait_for(0, timeout=None) is True


def test_close_wakes_waiters_and_refuses_appends(log: EventLog) -> None:
    fill(log, 3)
    timer = threading.Timer(0.05, log.close)
    timer.start()
    assert log.wait_for(3, timeout=10) is True
    timer.join()
    assert log.closed
    with pytest.raises(RuntimeError):
        log.append("text", {"text": "x"})
    assert [e.id for e in log.read_after(0)] == [1, 2, 3]  # a closed log is still readable


def test_watch_sets_the_flag_on_append_and_close_until_unwatch(log: EventLog) -> None:
    flag = threading.Event()
    log.watch(flag)
    log.append("text", {"text": "a"})
    assert flag.is_set()
    flag.clear()
    log.unwatch(flag)
    log.unwatch(threading.Event())  # unknown flags are ignored
    log.append("text", {"text": "b"})
    assert not flag.is_set()
    log.watch(flag)
    log.close()
    assert flag.is_set()


def test_concurrent_appends_keep_ids_dense_and_ordered(log: EventLog) -> None:
    threads = [threading.Thread(target=fill, args=(log, 200)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e.id for e in log.read_after(0)] == list(range(1, 801))


# -- the store -----------------------------------------------------------------------------

def test_each_new_store_has_its_own_random_epoch(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    assert a.epoch != b.epoch and len(a.epoch) >= 16


def test_drop_log_closes_the_log_and_ignores_unknown_ids(store: Store) -> None:
    log = store.create_log("s1")
    store.save_session(record("s1", 1.0))
    store.drop_log("s1")
    store.drop_log("unknown")
    assert log.closed
    assert store.sessions() == []


def test_logs_are_per_session(store: Store) -> None:
    a, b = store.create_log("a"), store.create_log("b")
    fill(a, 3)
    b.append("text", {"text": "only"})
    assert [e.session_id for e in a.read_after(0)] == ["a"] * 3
    assert [e.payload["text"] for e in b.read_after(0)] == ["only"]
    store.drop_log("a")
    assert [e.id for e in b.read_after(0)] == [1]


def test_open_log_returns_the_log_the_store_holds(store: Store) -> None:
    fill(store.create_log("s"), 3)
    assert [e.id for e in store.open_log("s").read_after(0)] == [1, 2, 3]
    assert store.open_log("new").last_id == 0


def test_session_records_are_saved_replaced_and_listed_oldest_first(store: Store) -> None:
    assert store.sessions() == []
    store.save_session(record("b", 2.0))
    store.save_session(record("a", 1.0, title="é \u2028 x", auto_approve=True, turns=3))
    store.save_session(record("b", 2.0, title="renamed"))
    assert store.sessions() == [record("a", 1.0, title="é \u2028 x", auto_approve=True, turns=3),
                                record("b", 2.0, title="renamed")]


def test_close_closes_every_log_and_is_idempotent(store: Store) -> None:
    logs = [store.create_log(f"s{i}") for i in range(3)]
    store.close()
    store.close()
    assert all(log.closed for log in logs)
    with pytest.raises(RuntimeError):
        logs[0].append("text", {"text": "late"})
