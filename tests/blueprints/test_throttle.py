"""The failed-login throttle (blueprints/throttle.py): exact under concurrency, bounded,
a moving window, IPv6 counted by /64; in process memory and in Redis (TETHER_STORE=redis),
where every worker shares one budget and an outage falls back to each worker's own."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from blueprints.throttle import (
    MAX_FAILURES,
    WINDOW_SECONDS,
    FailureThrottle,
    RedisFailureThrottle,
    Throttle,
    address_key,
)
from tests.redis_server import RedisServer
from tether.errors import StoreUnavailable

ThrottleMaker = Callable[..., Throttle]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pooled_client(url: str) -> redis.Redis:
    """A client on a blocking pool, as the Redis store's (tether/stores/redis.py)."""
    return redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
        url, max_connections=64, timeout=5, socket_timeout=10, socket_connect_timeout=5))


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = pooled_client(redis_server.url)
    yield client
    client.close()


@pytest.fixture(params=["memory", "redis"])
def make_throttle(request: pytest.FixtureRequest) -> ThrottleMaker:
    """Throttles of one backend: in memory, or in the test's private Redis under its own
    prefix (two made here are two workers sharing it)."""
    if request.param == "memory":
        def in_memory(clock: Callable[[], float] | None = None, **kwargs: Any) -> Throttle:
            return FailureThrottle(**kwargs, **({"clock": clock} if clock else {}))
        return in_memory
    client = request.getfixturevalue("redis_client")
    prefix = request.getfixturevalue("redis_prefix")

    def in_redis(**kwargs: Any) -> Throttle:
        return RedisFailureThrottle(client, prefix, **kwargs)
    return in_redis


def test_failures_past_the_limit_are_refused_and_not_counted(
        make_throttle: ThrottleMaker) -> None:
    clock = FakeClock()
    throttle = make_throttle(limit=3, window_seconds=60, clock=clock)
    assert [throttle.fail("10.0.0.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert throttle.fail("10.0.0.1") == pytest.approx(60)
    clock.now += 59
    assert throttle.fail("10.0.0.1") == pytest.approx(1)
    assert throttle.blocked_for("10.0.0.1") == pytest.approx(1)
    assert throttle.blocked_for("10.0.0.2") == 0.0


def test_the_window_moves(make_throttle: ThrottleMaker) -> None:
    clock = FakeClock()
    throttle = make_throttle(limit=2, window_seconds=60, clock=clock)
    throttle.fail("a")
    clock.now += 30
    throttle.fail("a")
    clock.now += 31  # the first failure left the window; the second has not
    assert throttle.fail("a") == 0.0
    assert throttle.fail("a") == pytest.approx(29)


def test_concurrent_failures_never_exceed_the_limit(make_throttle: ThrottleMaker) -> None:
    # 2,000 guesses at once from one address: exactly `limit` are counted (401), the rest
    # refused (429), however the threads interleave.
    throttle = make_throttle(limit=10)
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
    # In memory only: Redis holds one key per failing address, each gone a window after its
    # last failure.
    throttle = FailureThrottle(limit=1, max_addresses=100)
    for n in range(1000):
        throttle.fail(f"10.0.{n // 256}.{n % 256}")
    assert len(throttle) == 100
    # The most recent addresses are the ones remembered.
    assert throttle.blocked_for("10.0.3.231") > 0


def test_entries_expire_after_the_window(make_throttle: ThrottleMaker) -> None:
    clock = FakeClock()
    throttle = make_throttle(limit=1, window_seconds=60, clock=clock)
    throttle.fail("a")
    clock.now += 61
    assert throttle.blocked_for("a") == 0.0
    if isinstance(throttle, FailureThrottle):
        assert len(throttle) == 0
    assert throttle.fail("a") == 0.0


def test_a_success_neither_counts_nor_clears(make_throttle: ThrottleMaker) -> None:
    # The throttle is asked only about failures: a right token in between changes nothing.
    throttle = make_throttle(limit=2)
    throttle.fail("10.0.0.3")
    throttle.fail("10.0.0.3")
    assert throttle.blocked_for("10.0.0.3") > 0
    assert throttle.fail("10.0.0.3") > 0


def test_an_ipv6_64_shares_one_budget(make_throttle: ThrottleMaker) -> None:
    throttle = make_throttle(limit=2)
    throttle.fail("2001:db8:1:2::1")
    throttle.fail("2001:db8:1:2:ffff::9")
    assert throttle.fail("2001:db8:1:2:abcd::5") > 0
    assert throttle.fail("2001:db8:1:3::1") == 0.0


@pytest.mark.parametrize("address, key", [
    ("192.0.2.1", "192.0.2.1"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
    ("::ffff:192.0.2.1", "192.0.2.1"),
    ("unknown", "unknown"),
])
def test_an_ipv6_client_counts_as_its_64(address: str, key: str) -> None:
    assert address_key(address) == key


# ---------------------------------------------------------------- in Redis


def test_redis_counts_under_the_prefix_on_its_own_clock_for_one_window(
        redis_client: redis.Redis, redis_prefix: str) -> None:
    # No test clock: Redis's TIME, the one clock every host shares; the key expires (in
    # Redis) a window after the last counted failure.
    throttle = RedisFailureThrottle(redis_client, redis_prefix, limit=2, window_seconds=0.5)
    key = f"{redis_prefix}:throttle:2001:db8::/64"
    assert throttle.key("2001:db8::7") == key
    assert throttle.fail("2001:db8::7") == 0.0
    assert throttle.fail("2001:db8::8") == 0.0
    assert 0 < throttle.fail("2001:db8::9") <= 0.5
    assert redis_client.llen(key) == 2  # the refused one was not counted
    assert 0 < redis_client.pttl(key) <= 500
    time.sleep(0.6)
    assert redis_client.exists(key) == 0
    assert throttle.blocked_for("2001:db8::7") == 0.0


@pytest.fixture
def make_client() -> Iterator[Callable[[str], redis.Redis]]:
    """Pooled clients, closed after the test: one per worker."""
    clients: list[redis.Redis] = []

    def factory(url: str) -> redis.Redis:
        clients.append(pooled_client(url))
        return clients[-1]

    yield factory
    for client in clients:
        client.close()


def test_two_workers_on_one_redis_spend_one_budget(
        redis_server: RedisServer, redis_prefix: str,
        make_client: Callable[[str], redis.Redis]) -> None:
    workers = [RedisFailureThrottle(make_client(redis_server.url), redis_prefix)
               for _ in range(2)]
    counted = [workers[n % 2].fail("198.51.100.4") for n in range(MAX_FAILURES)]
    assert counted == [0.0] * MAX_FAILURES
    for throttle in workers:
        assert 0 < throttle.fail("198.51.100.4") <= WINDOW_SECONDS
        assert throttle.blocked_for("198.51.100.4") > 0
    # Another prefix (another deployment on the same Redis) has a budget of its own.
    other = RedisFailureThrottle(make_client(redis_server.url), redis_prefix + "x")
    assert other.fail("198.51.100.4") == 0.0


def test_redis_away_falls_back_to_this_workers_count_and_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        make_client: Callable[[str], redis.Redis]) -> None:
    with RedisServer(tmp_path / "redis") as server:  # its own: it is stopped
        throttle = RedisFailureThrottle(make_client(server.url), "t", limit=3)
        assert throttle.fail("192.0.2.8") == 0.0  # counted in Redis
        server.stop()
        caplog.set_level(logging.WARNING, logger="blueprints.throttle")
        # Counted in this worker's memory, said by StoreUnavailable; past its own limit,
        # refused as always. Never another error.
        for _ in range(3):
            with pytest.raises(StoreUnavailable):
                throttle.fail("192.0.2.8")
        assert 0 < throttle.fail("192.0.2.8") <= WINDOW_SECONDS
        assert throttle.blocked_for("192.0.2.8") > 0
        assert throttle.blocked_for("192.0.2.9") == 0.0
        away = [r for r in caplog.records if "does not answer" in r.getMessage()]
        assert len(away) == 1  # once per outage, not once per failure
        server.start()
        # Redis's own count again (it kept the first failure, in its AOF).
        assert [throttle.fail("192.0.2.8") for _ in range(2)] == [0.0, 0.0]
        assert throttle.fail("192.0.2.8") > 0
        assert any("answers again" in r.getMessage() for r in caplog.records)


def test_a_redis_that_never_answered_is_no_crash(
        make_client: Callable[[str], redis.Redis]) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    throttle = RedisFailureThrottle(make_client(f"redis://127.0.0.1:{port}/0"), "t", limit=1)
    with pytest.raises(StoreUnavailable):
        throttle.fail("192.0.2.1")
    assert throttle.fail("192.0.2.1") > 0
