"""The owner's log writer on a private Redis: bursts committed in few calls with ids in order
and the same bytes for every worker, a taken-over owner writing nothing more, bad events
refused alone, and backpressure when Redis is slower than the agent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.redis_server import RedisServer
from tether.cluster import owner_log
from tether.cluster.owner_log import OwnerLog
from tether.errors import Fenced
from tether.stores.redis import RedisEventLog, RedisStore

CLOCK = 1763900000.25
BOUND = 30


@pytest.fixture
def stores(redis_server: RedisServer, redis_prefix: str) -> Iterator[tuple[RedisStore, RedisStore]]:
    """Two stores on one Redis: the owner's worker and another."""
    a = RedisStore(redis_server.url, redis_prefix, clock=lambda: CLOCK)
    b = RedisStore(redis_server.url, redis_prefix, clock=lambda: CLOCK)
    yield a, b
    a.close()
    b.close()


def owned(store: RedisStore, sid: str, fence: str = "7") -> RedisEventLog:
    log = store.create_log(sid)
    store.client.hset(store.key(sid, "rec"), mapping={"fence": fence, "closed": 0})
    return log


def count_calls(log: RedisEventLog, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the ``append_many`` calls made for ``log``."""
    sizes: list[int] = []
    real = log.append_many

    def spy(drafts: Any, fence: str = "") -> Any:
        sizes.append(len(drafts))
        return real(drafts, fence)

    monkeypatch.setattr(log, "append_many", spy)
    return sizes


def test_a_burst_is_committed_in_batches_in_order_with_the_same_bytes_everywhere(
        stores: tuple[RedisStore, RedisStore], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = stores
    log = owned(a, "s1")
    sizes = count_calls(log, monkeypatch)
    writer = OwnerLog(log, "7")
    for n in range(2000):
        writer.append("text_delta", {"text": f"word {n}"})
    writer.flush()
    assert writer.queued == 0
    assert sum(sizes) == 2000
    assert len(sizes) < 2000 and max(sizes) > 1  # batched, not one call per event
    assert max(sizes) <= owner_log.MAX_BATCH_EVENTS
    mine = log.read_after(0)
    assert [e.id for e in mine] == list(range(1, 2001))
    assert [e.payload["text"] for e in mine] == [f"word {n}" for n in range(2000)]
    other = b.open_log("s1")
    assert other.wait_for(1999, BOUND) and other.sync(2000) == 2000
    assert [e.data for e in other.read_after(0)] == [e.data for e in mine]


def test_a_lone_event_is_written_without_waiting_for_a_flush(
        stores: tuple[RedisStore, RedisStore]) -> None:
    a, b = stores
    log = owned(a, "s2")
    other = b.open_log("s2")
    writer = OwnerLog(log, "7")
    writer.append("text", {"text": "alone"})
    # No flush: the flusher writes it by itself, and another worker sees it.
    assert other.wait_for(0, BOUND)
    assert [e.payload["text"] for e in other.read_after(0)] == ["alone"]


def test_a_taken_over_owner_writes_nothing_more(stores: tuple[RedisStore, RedisStore]) -> None:
    a, _ = stores
    log = owned(a, "s3")
    writer = OwnerLog(log, "7")
    writer.append("text", {"text": "mine"})
    writer.flush()
    a.client.hset(a.key("s3", "rec"), "fence", "8")  # another worker took it over
    writer.append("text", {"text": "too late"})
    with pytest.raises(Fenced):
        writer.flush()
    with pytest.raises(Fenced):
        writer.append("text", {"text": "later still"})
    log.sync(10)
    assert [e.payload["text"] for e in log.read_after(0)] == ["mine"]


def test_a_bad_event_is_refused_alone(stores: tuple[RedisStore, RedisStore]) -> None:
    a, _ = stores
    log = owned(a, "s4")
    writer = OwnerLog(log, "7")
    with pytest.raises(ValueError):
        writer.append("text", {"text": float("nan")})
    with pytest.raises(ValueError):
        writer.append("no_such_kind", {})
    writer.append("text", {"text": "fine"})
    writer.flush()
    assert [e.kind for e in log.read_after(0)] == ["text"]


def test_a_deleted_session_ends_the_writes(stores: tuple[RedisStore, RedisStore]) -> None:
    a, b = stores
    log = owned(a, "s5")
    writer = OwnerLog(log, "7")
    writer.append("text", {"text": "before"})
    writer.flush()
    b.drop_log("s5")
    assert log.wait_for(10, BOUND) and log.closed
    with pytest.raises(RuntimeError):
        writer.append("text", {"text": "after"})


def test_appends_block_while_redis_is_behind(stores: tuple[RedisStore, RedisStore],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = stores
    log = owned(a, "s6")
    monkeypatch.setattr(owner_log, "MAX_QUEUED_EVENTS", 5)
    release = threading.Event()
    calls = threading.Event()
    real = log.append_many

    def slow(drafts: Any, fence: str = "") -> Any:
        calls.set()
        assert release.wait(BOUND)
        return real(drafts, fence)

    monkeypatch.setattr(log, "append_many", slow)
    writer = OwnerLog(log, "7")
    writer.append("text", {"text": "0"})
    assert calls.wait(BOUND)  # the first event is in flight, held
    appended = []

    def producer() -> None:
        for n in range(1, 20):
            writer.append("text", {"text": str(n)})
            appended.append(n)

    thread = threading.Thread(target=producer)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive() and len(appended) == 5  # the queue is full: the producer waits
    release.set()
    thread.join(BOUND)
    assert not thread.is_alive()
    writer.flush()
    assert [e.payload["text"] for e in log.read_after(0)] == [str(n) for n in range(20)]
