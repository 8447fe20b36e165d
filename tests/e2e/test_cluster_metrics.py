"""``/metrics`` with several workers per host (issue 14; tether/metrics.py, gunicorn.conf.py):
each host reports its own workers' figures summed, whichever worker answers the scrape, and the
cluster's session figures once, not once per worker; a killed worker's clients leave the sum,
its counts stay.

The cluster of tests/e2e/cluster.py: host A runs two workers, host B one, on one private Redis.
Scrapes go straight to a host's port (as Prometheus scrapes each host), each on a new
connection, until both of host A's workers have answered.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import sseclient
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.cluster import Cluster, Host, is_worker, on_host, pid_of, worker_of
from tests.support import AUTH_HEADERS

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.timeout(180)]

#: Streams opened on each worker of host A, and on host B's one.
STREAMS_PER_WORKER = 3

Figures = dict[tuple[str, tuple[tuple[str, str], ...]], float]
SSE = ("tether_clients", (("transport", "sse"),))
DELIVERED = ("tether_events_delivered_total", (("transport", "sse"),))
LATENCY_COUNT = ("tether_delivery_latency_seconds_count", (("transport", "sse"),))
SESSIONS = ("tether_sessions", ())
APPENDED = ("tether_events_appended_total", ())
AGENTS = ("tether_agent_processes", ())
TURNS = ("tether_turns_total", (("reason", "completed"),))
TURN_COUNT = ("tether_turn_duration_seconds_count", ())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


def scrape(host: Host) -> tuple[str, Figures]:
    """One scrape of ``host`` on a new connection: the worker that answered, and its figures
    by (sample name, sorted labels)."""
    response = requests.get(host.url + "/metrics", headers=AUTH_HEADERS, timeout=10)
    assert response.status_code == 200, response.text
    wid = worker_of(response)
    assert wid is not None
    figures = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(response.text)
               for sample in family.samples}
    return wid, figures


def scrapes(host: Host, workers: int, least: int = 6) -> dict[str, list[Figures]]:
    """At least ``least`` scrapes of ``host``, until ``workers`` distinct workers answered:
    the figures by the worker that answered."""
    answered: dict[str, list[Figures]] = {}
    for attempt in range(200):
        wid, figures = scrape(host)
        answered.setdefault(wid, []).append(figures)
        if attempt + 1 >= least and len(answered) >= workers:
            return answered
    raise AssertionError(f"only {sorted(answered)} answered 200 scrapes of {host.host_id}")


def open_stream(cluster: Cluster, wid: str, sid: str) -> tuple[requests.Response, Iterator[Any]]:
    """An SSE stream of ``sid`` from the start, served by worker ``wid``, read up to its
    ``caught-up`` (every event delivered): then it stays open, unread. Keep the events
    iterator as long as the stream: once it is collected, urllib3 closes the connection."""
    response = cluster.request_on(is_worker(wid), "GET", f"/api/sessions/{sid}/stream?after=0",
                                  headers={"Accept": "text/event-stream"}, stream=True)
    assert response.status_code == 200, response.text
    events = sseclient.SSEClient(response).events()
    for event in events:
        if event.event == "caught-up":
            return response, events
    raise AssertionError(f"the stream on {wid} ended before caught-up")


def log_length(cluster: Cluster, sid: str) -> int:
    return len(cluster.log(sid))


def wait_for(check: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.1)


def test_every_scrape_of_a_host_reports_its_workers_summed_and_the_cluster_once(
        cluster: Cluster) -> None:
    a, b = cluster.hosts["hostA"], cluster.hosts["hostB"]
    assert len(a.worker_pids()) == 2 and len(b.worker_pids()) == 1, cluster.log_text()
    a_wids = [cluster.worker_id(pid) for pid in a.worker_pids()]
    owner, other = a_wids
    b_wid = cluster.worker_id(b.worker_pids()[0])

    # Two sessions, one made through each host; a turn run by one of host A's workers.
    sid = cluster.request_on(is_worker(owner), "POST", "/api/sessions", json={}).json()["id"]
    quiet = cluster.request_on(on_host("hostB"), "POST", "/api/sessions", json={}).json()["id"]
    taken = cluster.request_on(is_worker(owner), "POST", f"/api/sessions/{sid}/prompt",
                               json={"text": "hello"})
    assert taken.status_code == 202, taken.text
    cluster.wait_log(sid, lambda log: any(e["kind"] == "turn_end" for e in log), 30)
    events = log_length(cluster, sid)
    appended = events + log_length(cluster, quiet)

    opened: list[tuple[requests.Response, Iterator[Any]]] = []
    try:
        for wid in [*a_wids, b_wid]:
            for _ in range(STREAMS_PER_WORKER):
                opened.append(open_stream(cluster, wid, sid))

        # Host A: every scrape, by either worker, reports both workers' streams, deliveries
        # and the agent the owner keeps; the cluster's sessions and events, not doubled.
        on_a = scrapes(a, workers=2)
        assert set(on_a) == set(a_wids)
        for wid, all_figures in on_a.items():
            for figures in all_figures:
                assert figures[SSE] == 2 * STREAMS_PER_WORKER, wid
                assert figures[DELIVERED] == 2 * STREAMS_PER_WORKER * events, wid
                assert figures[LATENCY_COUNT] >= 2 * STREAMS_PER_WORKER, wid
                assert figures[AGENTS] == 1, wid
                assert figures[TURNS] == 1 and figures[TURN_COUNT] == 1, wid
                assert figures[SESSIONS] == 2, wid
                assert figures[APPENDED] == appended, wid
        # Host B: its own worker's figures, the same cluster figures.
        for figures in scrapes(b, workers=1, least=3)[b_wid]:
            assert figures[SSE] == STREAMS_PER_WORKER
            assert figures[DELIVERED] == STREAMS_PER_WORKER * events
            assert figures[AGENTS] == 0 and figures.get(TURNS, 0) == 0
            assert figures[SESSIONS] == 2 and figures[APPENDED] == appended

        # SIGKILL the worker that runs no agent: gunicorn forks another; the dead one's
        # streams leave the clients gauge, its deliveries stay counted.
        old_pid = cluster.worker_pid(other)
        cluster.kill_worker(other)
        wait_for(lambda: len(a.worker_pids()) == 2 and old_pid not in a.worker_pids())
        on_a = scrapes(a, workers=2)
        assert owner in on_a and {pid_of(wid) for wid in on_a} == set(a.worker_pids())
        for wid, all_figures in on_a.items():
            for figures in all_figures:
                assert figures[SSE] == STREAMS_PER_WORKER, wid
                assert figures[DELIVERED] == 2 * STREAMS_PER_WORKER * events, wid
                assert figures[AGENTS] == 1 and figures[TURNS] == 1, wid
                assert figures[SESSIONS] == 2 and figures[APPENDED] == appended, wid
    finally:
        for response, _ in opened:
            response.close()
