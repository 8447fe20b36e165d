"""The failed-login throttle (blueprints/throttle.py): exact under concurrency, bounded,
a moving window, IPv6 counted by /64."""

from __future__ import annotations

import threading

import pytest

from blueprints.throttle import FailureThrottle, address_key


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_past_the_limit_are_refused_and_not_counted() -> None:
    clock = FakeClock()
    throttle = FailureThrottle(limit=3, window_seconds=60, clock=clock)
    assert [throttle.fail("10.0.0.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert throttle.fail("10.0.0.1") == pytest.approx(60)
    clock.now += 59
    assert throttle.fail("10.0.0.1") == pytest.approx(1)
    assert throttle.blocked_for("10.0.0.1") == pytest.approx(1)
    assert throttle.blocked_for("10.0.0.2") == 0.0


def test_the_window_moves() -> None:
    clock = FakeClock()
    throttle = FailureThrottle(limit=2, window_seconds=60, clock=clock)
    throttle.fail("a")
    clock.now += 30
    throttle.fail("a")
    clock.now += 31  # the first failure left the window; the second has not
    assert throttle.fail("a") == 0.0
    assert throttle.fail("a") == pytest.approx(29)


def test_concurrent_failures_never_exceed_the_limit() -> None:
    # 2,000 guesses at once from one address: exactly `limit` are counted (401), the rest
    # refused (429), however the threads interleave.
    throttle = FailureThrottle(limit=10)
    start = threading.Barrier(50)
    results: list[float] = []
    lock = threading.Lock()

    def guesser() -> None:
        start.wait()
        mine = [throttle.fail("203.0.113.5") for _ in range(40)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=guesser) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2000
    assert results.count(0.0) == 10


def test_the_table_is_bounded() -> None:
    throttle = FailureThrottle(limit=1, max_addresses=100)
    for n in range(1000):
        throttle.fail(f"10.0.{n // 256}.{n % 256}")
    assert len(throttle) == 100
    # The most recent addresses are the ones remembered.
    assert throttle.blocked_for("10.0.3.231") > 0


def test_entries_expire_after_the_window() -> None:
    clock = FakeClock()
    throttle = FailureThrottle(limit=1, window_seconds=60, clock=clock)
    throttle.fail("a")
    clock.now += 61
    assert throttle.blocked_for("a") == 0.0
    assert len(throttle) == 0


@pytest.mark.parametrize("address, key", [
    ("192.0.2.1", "192.0.2.1"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
    ("::ffff:192.0.2.1", "192.0.2.1"),
    ("unknown", "unknown"),
])
def test_an_ipv6_client_counts_as_its_64(address: str, key: str) -> None:
    assert address_key(address) == key
