"""What the server is doing, as Prometheus metrics (prometheus-client), served at ``/metrics``.

Two kinds:

- counted as they happen, by the transports and the sessions: clients connected per transport,
  events delivered per transport, delivery latency, turns ended and their durations;
- read from the core at scrape time, so the hot paths pay nothing: sessions, events appended,
  pending approvals and questions, agent processes.

One process (the stores ``memory`` and ``sqlite``, and tests): each app has its own
:class:`prometheus_client.CollectorRegistry`, so two apps in one process do not mix their
figures.

Several worker processes (``TETHER_STORE=redis`` under gunicorn): gunicorn.conf.py gives the
host's workers one fresh directory in ``PROMETHEUS_MULTIPROC_DIR`` before it forks them, and
prometheus-client's multiprocess mode keeps the counted figures there, one memory-mapped file
per worker (https://prometheus.github.io/client_python/multiprocess/). A scrape, whichever
worker answers, then reports the host:

- summed over the host's workers, live or dead: events delivered, delivery latency, turns and
  their durations (counters and histograms: a dead worker's counts stay);
- summed over the host's live workers: clients and agent processes (gauges in ``livesum``
  mode, each worker adding its own; gunicorn's ``child_exit`` drops a dead worker's, with
  :func:`prometheus_client.multiprocess.mark_process_dead`). Agent processes are then counted
  as they start and stop (:meth:`Metrics.agent_process`), since no worker can read another's;
- the cluster's, read from Redis by the worker that answers, never summed: sessions, events
  appended, pending prompts (every host reports the same figures: take one, or ``max``).

Names follow the Prometheus conventions (https://prometheus.io/docs/practices/naming/): base
units (seconds), ``_total`` on counters; they and their help texts are the same in both modes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from tether.events import Event
from tether.feed import Delivery

#: The environment variable prometheus-client reads, at its import, to store its values in
#: files shared by the processes of a host (multiprocess mode).
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

#: The transports, as the ``transport`` label spells them.
TRANSPORTS = ("sse", "websocket", "poll")

#: Delivery latency buckets, in seconds: the issue-5 targets sit at 2 ms, 10 ms, 50 ms, 100 ms.
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Turn duration buckets, in seconds.
TURN_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

_CLIENTS_HELP = ("Clients connected now: open SSE streams, open WebSockets, long-polls "
                 "waiting")
_AGENTS_HELP = "Agent processes running"


def multiprocess_dir() -> str | None:
    """The host's shared metrics directory (``PROMETHEUS_MULTIPROC_DIR``), or None: this
    process keeps its figures to itself.

    :raises RuntimeError: the variable is set, but prometheus-client was imported before it
        was (its values are then kept in this process only, and a scrape would report one
        worker while claiming the host), or it names no directory.
    """
    path = os.environ.get(MULTIPROC_DIR)
    if not path:
        return None
    if not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError(f"{MULTIPROC_DIR} was set after prometheus-client was imported: "
                           "set it before the process starts (gunicorn.conf.py does)")
    if not os.path.isdir(path):
        raise RuntimeError(f"{MULTIPROC_DIR}={path} is not a directory")
    return path


class CoreFigures(Protocol):
    """What the scrape-time collector reads (:class:`tether.sessions.SessionRegistry`)."""

    def figures(self) -> dict[str, int]:
        """``sessions``, ``events_appended``, ``approvals_pending``, ``questions_pending``,
        ``agent_processes``, ``session_views``."""


class Metrics:
    """The metrics of one app. Cheap to call from the hot paths: a lock and an add (with a
    shared directory, also a write into this worker's memory-mapped file).

    :raises RuntimeError: see :func:`multiprocess_dir`.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        shared = multiprocess_dir()
        #: Whether the figures are the host's (a shared directory), not this process's own.
        self.shared = shared is not None
        #: What ``/metrics`` serves.
        self.registry = CollectorRegistry()
        # Shared: the counted metrics live in the files, which the collector reads for every
        # worker; registering them here too would report this worker's figures twice.
        counted = None if shared else self.registry
        if shared:
            MultiProcessCollector(self.registry, path=shared)
        self._clock = clock
        self.clients = Gauge("tether_clients", _CLIENTS_HELP, ["transport"], registry=counted,
                             multiprocess_mode="livesum")
        self.delivered = Counter(
            "tether_events_delivered", "Events handed to a client's connection",
            ["transport"], registry=counted)
        self.latency = Histogram(
            "tether_delivery_latency_seconds", "Age of the oldest event of each write to a "
            "client: from its append to the write, seconds", ["transport"],
            buckets=LATENCY_BUCKETS, registry=counted)
        self.turns = Counter(
            "tether_turns", "Turns ended, by turn_end reason", ["reason"], registry=counted)
        self.turn_seconds = Histogram(
            "tether_turn_duration_seconds", "Turn durations, from the prompt to turn_end, "
            "seconds", buckets=TURN_BUCKETS, registry=counted)
        # Shared only: no worker can read another's processes at scrape time, so each counts
        # its own as they start and stop (agent_process), and the files sum them.
        self._agents = (Gauge("tether_agent_processes", _AGENTS_HELP, registry=None,
                              multiprocess_mode="livesum") if shared else None)
        # Present from the first scrape, at 0; bound once, so that the hot path skips
        # ``labels()`` (a lock and a dict lookup per call).
        self._delivered = {t: self.delivered.labels(t) for t in TRANSPORTS}
        self._latency = {t: self.latency.labels(t) for t in TRANSPORTS}
        for transport in TRANSPORTS:
            self.clients.labels(transport)

    def watch(self, core: CoreFigures) -> None:
        """Report ``core``'s figures at every scrape (shared: all but its agent processes,
        which :meth:`agent_process` counts)."""
        self.registry.register(_CoreCollector(core, agents=not self.shared))

    def agent_process(self, pid: int, started: bool) -> None:
        """An agent process of this worker started (``started``) or was stopped: counted when
        the figures are shared; otherwise nothing (the scrape reads the core). The shape of
        :attr:`tether.runner.AgentHost.on_process`."""
        if self._agents is not None:
            if started:
                self._agents.inc()
            else:
                self._agents.dec()

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
    """The core's figures, read at each scrape; ``agents``: with its agent processes."""

    def __init__(self, core: CoreFigures, agents: bool = True) -> None:
        self._core = core
        self._agents = agents

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
        if self._agents:
            yield GaugeMetricFamily("tether_agent_processes", _AGENTS_HELP,
                                    value=figures["agent_processes"])
        yield GaugeMetricFamily(
            "tether_session_views", "Session logs the worker answering this scrape holds in "
            "memory and keeps up to date (with TETHER_STORE=redis, those of the sessions its "
            "clients followed lately and those it owns)", value=figures["session_views"])
