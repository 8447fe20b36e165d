"""The failed-login throttle: failures are counted per client address, never successes.

As code-server does, only a failure (a wrong token, in a header, a form or a login URL) is
counted; a right token or a valid login cookie is accepted whatever the count, so nobody can
lock the operator out by failing on purpose, from their address or from a page that makes
their browser fail. Past :data:`MAX_FAILURES` in :data:`WINDOW_SECONDS` an address's further
failures are answered 429 with the seconds to wait, and are not counted. A success neither
counts nor clears anything.

An IPv6 client counts as its /64 network, the block one subscriber usually holds. Two
throttles keep the count, with the same rules (a moving window; a refused failure is not
counted; an address is forgotten :data:`WINDOW_SECONDS` after its last counted failure):

- :class:`FailureThrottle`, in this process's memory (the memory and sqlite stores, one
  worker): a bounded table (:data:`MAX_ADDRESSES`, least recently used evicted first); the
  check and the count happen under one lock.
- :class:`RedisFailureThrottle` (``TETHER_STORE=redis``): in Redis, so that every worker of
  every host spends one budget per address, not one each. The check and the count are one
  Lua script, atomic in Redis as the lock makes them in memory.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis
from cachetools import TTLCache

from tether.errors import StoreUnavailable

logger = logging.getLogger(__name__)

#: Failures one address may make in any :data:`WINDOW_SECONDS` before it gets 429s.
MAX_FAILURES = 10
#: The counting window, in seconds (a moving window).
WINDOW_SECONDS = 60.0
#: Addresses remembered at once; past it the least recently failing one is forgotten.
MAX_ADDRESSES = 10_000


def address_key(address: str) -> str:
    """The key an address counts under: itself (IPv4, anything unparsable), or its /64
    network for IPv6 (IPv4-mapped IPv6 counts as the IPv4 address)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class Throttle(Protocol):
    """What the edge (:mod:`blueprints.auth`) asks of a throttle."""

    def fail(self, address: str) -> float:
        """Count a failure: 0.0 when counted, else the seconds to wait (not counted)."""

    def blocked_for(self, address: str) -> float:
        """Seconds until ``address`` may fail again; 0.0 when it is not blocked."""


class FailureThrottle:
    """At most ``limit`` counted failures per address in any ``window_seconds``, in this
    process's memory.

    :param limit: failures counted per window; the next one is refused.
    :param window_seconds: the moving window, in seconds.
    :param max_addresses: addresses remembered at once.
    :param clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, limit: int = MAX_FAILURES, window_seconds: float = WINDOW_SECONDS,
                 max_addresses: int = MAX_ADDRESSES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        # address key -> monotonic times of its counted failures in the window, oldest first
        self._failures: TTLCache[str, tuple[float, ...]] = TTLCache(
            maxsize=max_addresses, ttl=window_seconds, timer=clock)

    def fail(self, address: str) -> float:
        """Count a failure from ``address``, if it is within the limit.

        :returns: 0.0 when the failure was counted (answer 401); otherwise the seconds until
            this address may fail again (answer 429; nothing was counted).
        """
        key = address_key(address)
        with self._lock:
            now = self._clock()
            recent = self._recent(key, now)
            if len(recent) >= self.limit:
                return max(recent[0] + self.window_seconds - now, 0.001)
            self._failures[key] = (*recent, now)  # re-set: its expiry restarts
            return 0.0

    def blocked_for(self, address: str) -> float:
        """Seconds until ``address`` may fail again; 0.0 when it is not blocked."""
        key = address_key(address)
        with self._lock:
            now = self._clock()
            recent = self._recent(key, now)
            if len(recent) < self.limit:
                return 0.0
            return max(recent[0] + self.window_seconds - now, 0.001)

    def __len__(self) -> int:
        """Addresses remembered (at most ``max_addresses``)."""
        with self._lock:
            return len(self._failures)

    def _recent(self, key: str, now: float) -> tuple[float, ...]:
        since = now - self.window_seconds
        return tuple(t for t in self._failures.get(key, ()) if t > since)


# KEYS[1]: an address's counted failures, times in ms, newest first, at most ARGV[1] of them.
# ARGV: limit, window (ms), now (ms; empty: Redis's own clock), "1" to count or "0" to look.
# Returns 0 (counted, or not blocked) or the ms until the address may fail again (nothing
# counted). The `limit`-th newest failure decides: inside the window, `limit` failures are.
_FAIL_SCRIPT = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local oldest = tonumber(redis.call('LINDEX', KEYS[1], limit - 1))
if oldest and oldest > now - window then
  return oldest + window - now
end
if ARGV[4] == '1' then
  redis.call('LPUSH', KEYS[1], string.format('%d', now))
  redis.call('LTRIM', KEYS[1], 0, limit - 1)
  redis.call('PEXPIRE', KEYS[1], window)
end
return 0
"""


class RedisFailureThrottle:
    """At most ``limit`` counted failures per address in any ``window_seconds``, counted in
    Redis under ``<prefix>:throttle:<address key>``: one budget for every worker and host.

    The key is a list of the times of the address's counted failures (at most ``limit``,
    newest first), that expires ``window_seconds`` after the last one; a failure is counted
    unless the ``limit``-th newest is still inside the window, and the check and the count are
    one script (atomic). Times are Redis's own clock (``TIME``), the one clock every host
    shares, unless a test passes ``clock``.

    **When Redis does not answer**, the failure is counted in this worker's memory instead (a
    :class:`FailureThrottle`, the budget per worker there was before the shared one), and
    :meth:`fail` says so by raising :class:`~tether.errors.StoreUnavailable` once it has
    counted it. It fails neither open nor closed, and why:

    - Not closed (refusing every failure with an error): that stops no guessing, since the
      token was compared before the throttle is asked, and a right token is still accepted
      (it must be: the login form and the login URL need nothing from Redis, and the throttle
      must never lock the operator out). Only refusing the right token too would stop a
      guesser, and that is the lock-out the throttle exists to avoid.
    - Not open (counting nothing): the throttle is what keeps a guesser from flooding the
      log and the workers, and an outage is no time to lift it. The per-worker budget keeps
      a bound (workers × :data:`MAX_FAILURES` per window), and the shared one is back as soon
      as Redis is: the fallback's counts are not carried over.

    What the edge answers then (:func:`blueprints.auth._failed`): past this worker's budget,
    429 as always (it is true). Within it, the page and the login form answer as they always
    do, 401 and the form saying the token is wrong: the login needs nothing from Redis, and a
    429 or an error page would tell a person who mistyped the token something false. The API
    answers 503 ``store_unavailable``, what every API route answers while Redis is away: a
    program, whatever token it holds, is told what is true of the server then and retries;
    once Redis is back, a wrong token gets its 401.

    :param client: a redis-py client (the store's, ``RedisStore.client``).
    :param prefix: the key prefix (``TETHER_REDIS_PREFIX``).
    :param limit: failures counted per window; the next one is refused.
    :param window_seconds: the moving window, in seconds (counted in whole milliseconds).
    :param clock: seconds (tests pass a fake one); None: Redis's clock.
    """

    def __init__(self, client: redis.Redis, prefix: str, limit: int = MAX_FAILURES,
                 window_seconds: float = WINDOW_SECONDS,
                 clock: Callable[[], float] | None = None) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self.prefix = prefix
        self._clock = clock
        self._window_ms = max(round(window_seconds * 1000), 1)
        self._script = client.register_script(_FAIL_SCRIPT)
        self._fallback = FailureThrottle(limit, window_seconds)
        self._away = False  # Redis did not answer the last call: logged once per outage

    def key(self, address: str) -> str:
        """The Redis key ``address`` counts under: ``<prefix>:throttle:<address key>``."""
        return f"{self.prefix}:throttle:{address_key(address)}"

    def fail(self, address: str) -> float:
        """Count a failure from ``address``, if it is within the limit.

        :returns: 0.0 when the failure was counted (answer 401); otherwise the seconds until
            this address may fail again (answer 429; nothing was counted).
        :raises StoreUnavailable: Redis did not answer, and this worker's own count took the
            failure (within its limit; past it, the seconds to wait are returned).
        """
        try:
            return self._run(address, count=True)
        except redis.RedisError as exc:
            self._redis_away(exc)
        retry = self._fallback.fail(address)
        if retry:
            return retry
        raise StoreUnavailable("the Redis store does not answer; retry once it is back")

    def blocked_for(self, address: str) -> float:
        """Seconds until ``address`` may fail again; 0.0 when it is not blocked (while Redis
        does not answer, by this worker's own count)."""
        try:
            return self._run(address, count=False)
        except redis.RedisError as exc:
            self._redis_away(exc)
        return self._fallback.blocked_for(address)

    def _run(self, address: str, count: bool) -> float:
        now = "" if self._clock is None else str(round(self._clock() * 1000))
        wait_ms = int(self._script(keys=[self.key(address)],
                                   args=[self.limit, self._window_ms, now, int(count)]))
        if self._away:
            self._away = False
            logger.warning("the Redis store answers again: failed logins are counted in it")
        return wait_ms / 1000

    def _redis_away(self, exc: redis.RedisError) -> None:
        if not self._away:
            self._away = True
            logger.warning("the Redis store does not answer (%s: %s): failed logins are "
                           "counted in this worker's memory until it does",
                           exc.__class__.__name__, exc)
