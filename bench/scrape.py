"""Tether's own figures, scraped from ``GET /metrics`` (tether/metrics.py), for the bench scripts.

A scrape is parsed with prometheus-client's own parser
(:func:`prometheus_client.parser.text_string_to_metric_families`) into a flat mapping of
samples; the scripts scrape before and after a case and read counters and histograms as
deltas. Tether only: the peers in bench/peers/ have no ``/metrics``.

Samples are keyed by sample name (``tether_events_delivered_total``, not the family name)
and labels. The transports' ``transport`` label spells the WebSocket ``websocket``
(:data:`LABELS` maps the bench's ``ws`` to it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import requests
from prometheus_client.parser import text_string_to_metric_families

#: The bench's transport names -> Tether's ``transport`` label (tether.metrics.TRANSPORTS).
LABELS = {"sse": "sse", "ws": "websocket", "poll": "poll"}

#: (sample name, sorted (label, value) pairs) -> value.
Samples = Mapping[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(http: requests.Session, url: str) -> Samples:
    """``GET <url>/metrics`` with ``http`` (which carries the bearer token), parsed.

    :raises requests.RequestException: no answer, or not a 2xx.
    :raises ValueError: the body is not the Prometheus text format.
    """
    try:
        answer = http.get(f"{url}/metrics", timeout=10)
    except requests.ConnectionError:
        # A keep-alive connection the server closed as it was reused: once more, afresh.
        answer = http.get(f"{url}/metrics", timeout=10)
    answer.raise_for_status()
    return parse(answer.text)


def parse(text: str) -> Samples:
    """A ``/metrics`` body (the Prometheus text format) as :data:`Samples`.

    :raises ValueError: not the Prometheus text format.
    """
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the scrape does not have it."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """``after - before`` of one sample (a counter's increase between two scrapes)."""
    return value(after, name, **labels) - value(before, name, **labels)


def delivered(before: Samples, after: Samples, transport: str) -> int:
    """Events Tether handed to connections on ``transport`` (bench name: sse, ws, poll)
    between two scrapes (``tether_events_delivered_total``)."""
    return round(delta(before, after, "tether_events_delivered_total",
                       transport=LABELS[transport]))


def check_delivered(before: Samples, after: Samples, transport: str,
                    client_ids: int) -> dict[str, int | bool]:
    """Tether's count of events delivered on ``transport`` between two scrapes against the
    event ids the load client read over the same span (``ids`` in its result): ``delivered``,
    ``client_ids`` and ``ok`` (equal). Exact only when the clients read everything the server
    handed their connections before the second scrape."""
    count = delivered(before, after, transport)
    return {"delivered": count, "client_ids": client_ids, "ok": count == client_ids}


def connected(samples: Samples, transport: str) -> int:
    """``tether_clients{transport}`` in one scrape: open streams and sockets, waiting polls."""
    return round(value(samples, "tether_clients", transport=LABELS[transport]))


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile (0..1) of a histogram, as Prometheus' ``histogram_quantile`` estimates
    it: linear interpolation inside the bucket that holds the rank, the lowest bucket starting
    at 0, and the highest finite bound when the rank falls in ``+Inf``.

    ``buckets``: (upper bound ``le``, cumulative count), any order, ``+Inf`` included.
    None when the histogram is empty.
    """
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]) or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    b = next((i for i, (_, count) in enumerate(ordered[:-1]) if count >= rank),
             len(ordered) - 1)
    if b == len(ordered) - 1:
        return ordered[-2][0]
    end, count = ordered[b]
    if b == 0 and end <= 0:
        return end
    start, below = ordered[b - 1] if b > 0 else (0.0, 0.0)
    return start + (end - start) * (rank - below) / (count - below)


def latency(before: Samples, after: Samples, transport: str,
            name: str = "tether_delivery_latency_seconds") -> dict[str, float | int | None]:
    """A histogram's increase between two scrapes: ``writes`` (observations), and p50, p99
    (estimated from the buckets, :func:`histogram_quantile`) and mean, in milliseconds.

    For ``tether_delivery_latency_seconds`` an observation is one write to one client, and its
    value the age of the write's oldest event, from its append to the write (tether/metrics.py).
    """
    label = LABELS[transport]
    buckets = [(float(dict(labels)["le"]), v - value(before, sample, **dict(labels)))
               for (sample, labels), v in after.items()
               if sample == f"{name}_bucket" and dict(labels).get("transport") == label]
    writes = round(delta(before, after, f"{name}_count", transport=label))
    seconds = delta(before, after, f"{name}_sum", transport=label)

    def ms(x: float | None) -> float | None:
        return round(x * 1000, 2) if x is not None else None

    return {"writes": writes, "p50_ms": ms(histogram_quantile(0.5, buckets)),
            "p99_ms": ms(histogram_quantile(0.99, buckets)),
            "mean_ms": ms(seconds / writes) if writes else None}


def settle_clients(http: requests.Session, url: str, transport: str, baseline: int,
                   timeout: float) -> tuple[int, float]:
    """Scrape until ``tether_clients{transport}`` is back to ``baseline`` or ``timeout``
    seconds pass; (the last value, seconds waited)."""
    started = time.monotonic()
    while True:
        now = connected(scrape(http, url), transport)
        waited = time.monotonic() - started
        if now == baseline or waited >= timeout:
            return now, round(waited, 2)
        time.sleep(0.1)
