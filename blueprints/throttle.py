"""The failed-login throttle: failures are counted per client address, never successes.

As code-server does, only a failure (a wrong token, in a header, a form or a login URL) is
counted; a right token or a valid login cookie is accepted whatever the count, so nobody can
lock the operator out by failing on purpose, from their address or from a page that makes
their browser fail. Past :data:`MAX_FAILURES` in :data:`WINDOW_SECONDS` an address's further
failures are answered 429 with the seconds to wait, and are not counted.

The table is bounded (:data:`MAX_ADDRESSES`, least recently used evicted first, each entry
gone :data:`WINDOW_SECONDS` after its last failure), and an IPv6 client counts as its /64
network, the block one subscriber usually holds. Counting is exact under concurrency: the
check and the count happen under one lock.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable

from cachetools import TTLCache

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


class FailureThrottle:
    """At most ``limit`` counted failures per address in any ``window_seconds``.

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
