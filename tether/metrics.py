"""What the server is doing, as Prometheus metrics (prometheus-client), served at ``/metrics``.

Two kinds:

- counted as they happen, by the transports and the sessions: clients connected per transport,
  events delivered per transport, delivery latency, turns ended and their durations;
- read from the core at scrape time, so the hot paths pay nothing: sessions, events appended,
  pending approvals and questions, agent processes.

Each app has its own :class:`prometheus_client.CollectorRegistry`, so two apps in one process
(tests) do not mix their figures. Names follow the Prometheus conventions
(https://prometheus.io/docs/practices/naming/): base units (seconds), ``_total`` on counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from tether.events import Event
from tether.feed import Delivery

#: The transports, as the ``transport`` label spells them.
TRANSPORTS = ("sse", "websocket", "poll")

#: Delivery latency buckets, in seconds: the issue-5 targets sit at 2 ms, 10 ms, 50 ms, 100 ms.
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Turn duration buckets, in seconds.
TURN_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class CoreFigures(Protocol):
    """What the scrape-time collector reads (:class:`tether.sessions.SessionRegistry`)."""

    def figures(self) -> dict[str, int]:
        """``sessions``, ``events_appended``, ``approvals_pending``, ``questions_pending``,
        ``agent_processes``, ``session_views``."""


class Metrics:
    """The metrics of one app. Cheap to call from the hot paths: a lock and an add."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        self._clock = clock
        self.clients = Gauge(
            "tether_clients", "Clients connected now: open SSE streams, open WebSockets, "
            "long-polls waiting", ["transport"], registry=self.registry)
        self.delivered = Counter(
            "tether_events_delivered", "Events handed to a client's connection",
            ["transport"], registry=self.registry)
        self.latency = Histogram(
            "tether_delivery_latency_seconds", "Age of the oldest event of each write to a "
            "client: from its append to the write, seconds", ["transport"],
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.turns = Counter(
            "tether_turns", "Turns ended, by turn_end reason", ["reason"],
            registry=self.registry)
        self.turn_seconds = Histogram(
            "tether_turn_duration_seconds", "Turn durations, from the prompt to turn_end, "
            "seconds", buckets=TURN_BUCKETS, registry=self.registry)
        # Present from the first scrape, at 0; bound once, so that the hot path skips
        # ``labels()`` (a lock and a dict lookup per call).
        self._delivered = {t: self.delivered.labels(t) for t in TRANSPORTS}
        self._latency = {t: self.latency.labels(t) for t in TRANSPORTS}
        for transport in TRANSPORTS:
            self.clients.labels(transport)

    def watch(self, core: CoreFigures) -> None:
        """Report ``core``'s figures at every scrape."""
        self.registry.register(_CoreCollector(core))

    def delivering(self, transport: str, events: Sequence[Event]) -> None:
        """Count ``events`` as delivered on ``transport`` now (they are being written), and
        observe the oldest one's age. Empty: nothing."""
        if events:
            self.delivered_now(transport, len(events), events[0].ts)

    def delivered_now(self, transport: str, count: int, oldest_ts: float) -> None:
        """:meth:`delivering` from figures: ``count`` events written now on ``transport``, the
        oldest appended at ``oldest_ts`` (Unix time, seconds)."""
        self._delivered[transport].inc(count)
        self._latency[transport].observe(max(self._clock() - oldest_ts, 0.0))

    def delivering_all(self, transport: str, deliveries: Sequence[Delivery]) -> None:
        """:meth:`delivering` for every ``events`` delivery of a feed's wake-up."""
        for delivery in deliveries:
            if delivery.events:
                self.delivering(transport, delivery.events)

    def turn_ended(self, reason: str, seconds: float) -> None:
        self.turns.labels(reason).inc()
        self.turn_seconds.observe(seconds)


class _CoreCollector:
    def __init__(self, core: CoreFigures) -> None:
        self._core = core

    def describe(self) -> list[Metric]:
        return []  # figures are read at collect time only

    def collect(self) -> Iterator[Metric]:
        figures = self._core.figures()
        yield GaugeMetricFamily("tether_sessions", "Sessions this server holds",
                                value=figures["sessions"])
        yield CounterMetricFamily(
            "tether_events_appended", "Events in the logs of the sessions held, plus those "
            "of sessions deleted since start", value=figures["events_appended"])
        pending = GaugeMetricFamily("tether_pending_prompts",
                                    "Approvals and questions waiting for an answer",
                                    labels=["kind"])
        pending.add_metric(["approval"], figures["approvals_pending"])
        pending.add_metric(["clarify"], figures["questions_pending"])
        yield pending
        yield GaugeMetricFamily("tether_agent_processes", "Agent processes running",
                                value=figures["agent_processes"])
        yield GaugeMetricFamily(
            "tether_session_views", "Session logs this worker holds in memory and keeps up to "
            "date (with TETHER_STORE=redis, those of the sessions its clients followed lately "
            "and those it owns)", value=figures["session_views"])
