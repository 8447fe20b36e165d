"""What every test shares: the API token, secrets an agent must never see, and the trust
tally printed at the end of a run.

The tally (issue 4, "a test run shows the counts") adds up what the trust suites did: inputs
tried, faults injected, reconnects, restarts, events checked, and events lost, duplicated or
out of order, which must stay at zero. Tests add to it through the ``tally`` fixture.
"""

from __future__ import annotations

from collections import Counter

#: The token every test server runs with (``TETHER_TOKEN``); at least 16 characters.
TEST_TOKEN = "test-token-0123456789abcdef"

#: Headers that authenticate an HTTP or WebSocket client with :data:`TEST_TOKEN`.
AUTH_HEADERS = {"Authorization": f"Bearer {TEST_TOKEN}"}

#: Secret settings (tether.config.SECRET_SETTINGS) an end-to-end server starts with besides
#: ``TETHER_TOKEN``, to check that no agent sees them. Long random-looking values, valid for
#: whatever checks these settings get.
OTHER_SECRETS = {
    "TETHER_SECRET_KEY": "k3y-Zq9VbT7mWc2LxR4pN8sJ1hD6fG0aYeUoQiKt5Ew",
    "TETHER_VAPID_PRIVATE_KEY": "vap1d-Hn3Xr8QmZ2cW7bV5tL9pK4sJ6dF1gA0yEuOiR",
    "TETHER_REDIS_URL": "redis://:r3dis-Pa55word-Xq7Zm@127.0.0.1:6379/0",
}


def leaks(text: str, names: bool = True) -> list[str]:
    """The secret values of :data:`TEST_TOKEN` and :data:`OTHER_SECRETS` found in ``text``
    (the Redis password on its own too), and with ``names`` the settings' names."""
    needles = [TEST_TOKEN, *OTHER_SECRETS.values(), "r3dis-Pa55word"]
    if names:
        needles += ["TETHER_TOKEN", *OTHER_SECRETS]
    return [needle for needle in needles if needle in text]


#: The tally's lines, in print order; the last three must be zero.
TALLY_NAMES = ("inputs tried", "faults injected", "reconnects", "restarts", "events checked",
               "events lost", "events duplicated", "events out of order")


class Tally:
    """Counts for the end-of-run summary: ``tally.add("reconnects", 1000)``."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, name: str, count: int = 1) -> None:
        """:raises KeyError: ``name`` is not one of :data:`TALLY_NAMES`."""
        if name not in TALLY_NAMES:
            raise KeyError(f"unknown tally line {name!r}; one of {TALLY_NAMES}")
        self.counts[name] += count

    def check_exact(self, expected_ids: list[int], got_ids: list[int]) -> None:
        """Tally a delivery check and assert it exact: ``got_ids`` equals ``expected_ids``.

        Counts events checked, and lost / duplicated / out-of-order ids, before asserting.
        """
        seen: set[int] = set()
        duplicated = out_of_order = 0
        last = None
        for event_id in got_ids:
            if event_id in seen:
                duplicated += 1
            elif last is not None and event_id < last:
                out_of_order += 1
            seen.add(event_id)
            last = event_id
        lost = len(set(expected_ids) - seen)
        self.add("events checked", len(expected_ids))
        self.add("events lost", lost)
        self.add("events duplicated", duplicated)
        self.add("events out of order", out_of_order)
        assert got_ids == expected_ids, (
            f"{lost} lost, {duplicated} duplicated, {out_of_order} out of order "
            f"(expected {len(expected_ids)} ids, got {len(got_ids)})")


#: The run's one tally (pytest runs in one process).
TALLY = Tally()
