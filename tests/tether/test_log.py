"""The in-memory event log: ids, cursors, wake-ups, encode-once."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tether.stores.memory import MemoryEventLog, MemoryStore


def test_ids_start_at_one_and_have_no_gaps() -> None:
    log = MemoryEventLog("s")
    ids = [log.append("text", {"text": str(i)}).id for i in range(5)]
    assert ids == [1, 2, 3, 4, 5]
    assert log.last_id == 5


def test_read_after_returns_only_newer_events_up_to_limit() -> None:
    log = MemoryEventLog("s")
    for i in range(10):
        log.append("text", {"text": str(i)})
    assert [e.id for e in log.read_after(7)] == [8, 9, 10]
    assert [e.id for e in log.read_after(2, limit=3)] == [3, 4, 5]
    assert log.read_after(10) == []
    assert log.read_after(99) == []
    assert [e.id for e in log.read_after(-3, limit=2)] == [1, 2]


def test_event_is_encoded_once_as_the_envelope() -> None:
    log = MemoryEventLog("sess", clock=lambda: 1763900000.1234)
    event = log.append("user", {"turn": 1, "text": "hi\n\u2028"})
    assert json.loads(event.data) == {"id": 1, "session_id": "sess", "ts": 1763900000.123,
                                      "kind": "user", "turn": 1, "text": "hi\n\u2028"}
    assert b"\n" not in event.data and event.data.isascii()
    assert log.read_after(0)[0].data is event.data


def test_append_refuses_unknown_kind_envelope_keys_and_nan() -> None:
    log = MemoryEventLog("s")
    with pytest.raises(ValueError, match="unknown event kind"):
        log.append("nope", {})
    with pytest.raises(ValueError, match="envelope"):
        log.append("text", {"id": 5})
    with pytest.raises(ValueError):
        log.append("text", {"text": float("nan")})
    assert log.last_id == 0


def test_wait_for_returns_at_once_when_events_exist() -> None:
    log = MemoryEventLog("s")
    log.append("text", {"text": "a"})
    assert log.wait_for(0, timeout=0) is True
    assert log.wait_for(1, timeout=0) is False


def test_wait_for_wakes_on_append_from_another_thread() -> None:
    log = MemoryEventLog("s")
    threading.Timer(0.05, log.append, ("text", {"text": "late"})).start()
    started = time.monotonic()
    assert log.wait_for(0, timeout=10) is True
    assert time.monotonic() - started < 5


def test_wait_for_times_out_with_false() -> None:
    assert MemoryEventLog("s").wait_for(0, timeout=0.01) is False


def test_append_between_read_and_wait_ends_the_wait() -> None:
    # The read-then-wait seam: the reader saw nothing, then an event lands before it waits.
    log = MemoryEventLog("s")
    assert log.read_after(0) == []
    log.append("text", {"text": "raced"})
    assert log.wait_for(0, timeout=None) is True


def test_close_wakes_waiters_and_refuses_appends() -> None:
    log = MemoryEventLog("s")
    threading.Timer(0.05, log.close).start()
    assert log.wait_for(0, timeout=10) is True
    assert log.closed
    with pytest.raises(RuntimeError):
        log.append("text", {"text": "x"})


def test_store_epoch_is_random_and_drop_closes_the_log() -> None:
    a, b = MemoryStore(), MemoryStore()
    assert a.epoch != b.epoch and len(a.epoch) >= 16
    log = a.create_log("s1")
    a.drop_log("s1")
    a.drop_log("unknown")
    assert log.closed


def test_concurrent_appends_keep_ids_dense_and_ordered() -> None:
    log = MemoryEventLog("s")
    threads = [threading.Thread(target=lambda: [log.append("text", {"text": "x"})
                                                for _ in range(200)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e.id for e in log.read_after(0)] == list(range(1, 801))
