"""The Redis cluster, end to end (issue 14; docs/SCALE-OUT.md section 10): two hosts
of gunicorn workers on one Redis behind a round-robin proxy with no affinity
(tests/e2e/cluster.py), driven with the ``local`` agent, behave like one process, and killing or
stalling any one of them loses no event and leaves no turn hanging.

Marked ``cluster`` (``pytest -m cluster`` runs the cluster suites alone). Each test keeps to
one session; those that kill or stall a process or Redis get a cluster of their own
(``fresh``).

How the local agent is scripted (tether/agents/local.py): ``$ <command>`` asks for approval,
then runs it in the workspace; ``bench <count> <bytes> <rate>`` streams ``count`` text deltas
at ``rate`` per second with no tool call (a long turn with no approval); anything else streams
the help text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.e2e.cluster import (
    AUTH_HEADERS,
    FOLLOWERS,
    HOSTS,
    LEASE_SECONDS,
    Cluster,
    Event,
    Follower,
    Host,
    WorkerTest,
    host_of,
    on_host,
    other_than,
    worker_of,
)
from tests.e2e.live import ROOT
from tests.support import Tally

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.timeout(180)]

#: LiveServer's TETHER_CANCEL_GRACE for every test server (seconds).
CANCEL_GRACE = 1.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster of the test's own, for the tests that kill or stop a part of it."""
    with Cluster(tmp_path_factory.mktemp("fresh")) as cluster:
        yield cluster


# -- small steps -------------------------------------------------------------------------

def create(cluster: Cluster, title: str, wanted: WorkerTest | None = None) -> str:
    path = "/api/sessions"
    response = (cluster.request_on(wanted, "POST", path, json={"title": title}) if wanted
                else cluster.api("POST", path, json={"title": title}))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def prompt(cluster: Cluster, sid: str, text: str, wanted: WorkerTest | None = None,
           turn: int | None = None) -> requests.Response:
    """A prompt through the proxy (on a wanted worker); it must be taken (202, turn ``turn``)."""
    path = f"/api/sessions/{sid}/prompt"
    response = (cluster.request_on(wanted, "POST", path, json={"text": text}) if wanted
                else cluster.api("POST", path, json={"text": text}))
    assert response.status_code == 202, response.text
    if turn is not None:
        assert response.json()["turn"] == turn
    return response


def answer(cluster: Cluster, sid: str, request_id: str, decision: str = "allow",
           client: str = "e2e") -> requests.Response:
    response = cluster.api("POST", f"/api/sessions/{sid}/approvals/{request_id}",
                           json={"decision": decision, "client": client})
    assert response.status_code == 200, response.text
    return response


def kinds(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e["kind"] == kind]


def has(kind: str, **fields: Any) -> Callable[[list[Event]], bool]:
    """A :meth:`Cluster.wait_log` condition: an event of ``kind`` with those fields."""
    return lambda events: any(e["kind"] == kind and all(e.get(k) == v for k, v in fields.items())
                              for e in events)


def both(*conditions: Callable[[list[Event]], bool]) -> Callable[[list[Event]], bool]:
    return lambda events: all(condition(events) for condition in conditions)


def turn_ends(events: list[Event]) -> list[tuple[int, str]]:
    return [(e["turn"], e["reason"]) for e in kinds(events, "turn_end")]


def check_log(tally: Tally, events: list[Event]) -> None:
    """Ids 1..N, each once, in order."""
    tally.check_exact(list(range(1, len(events) + 1)), [e["id"] for e in events])


def same_log(cluster: Cluster, sid: str, log: list[Event], hosts: list[Host]) -> None:
    """Each host serves exactly ``log`` (once its mirror has caught up: a worker that did not
    write the newest events may see them a few milliseconds later)."""
    for host in hosts:
        seen, _ = cluster.wait_log(sid, lambda events: len(events) >= len(log), 10, via=host)
        assert seen == log, f"{host.host_id} serves another log"


def resumed_with(cluster: Cluster, sid: str, events: list[Event]) -> None:
    """The session's agent now running was started with ``--resume=<its agent session>``: the
    new owner continues the conversation rather than starting one (the flag Claude Code
    takes; the local agent is started the same way)."""
    agent_session = kinds(events, "agent_session")[0]["agent_session_id"]
    argvs = [cluster.cmdline(pid) for pid in cluster.processes_in(sid, "tether.agents.local")]
    assert len(argvs) == 1, argvs
    assert f"--resume={agent_session}" in argvs[0], argvs[0]


def wait_approval(cluster: Cluster, sid: str, after: int = 0, timeout: float = 20) -> Event:
    events, _ = cluster.wait_log(
        sid, lambda evs: any(e["kind"] == "approval_request" and e["id"] > after for e in evs),
        timeout)
    return next(e for e in events if e["kind"] == "approval_request" and e["id"] > after)


def run_turn(cluster: Cluster, sid: str, text: str, turn: int) -> list[Event]:
    """Prompt through the proxy, allow its approval if it asks (``$ …``), and wait for the turn
    to complete; :returns: the log."""
    before = cluster.log(sid)
    last = before[-1]["id"] if before else 0
    prompt(cluster, sid, text, turn=turn)
    if text.startswith("$"):
        request = wait_approval(cluster, sid, after=last)
        answer(cluster, sid, request["request_id"])
    events, _ = cluster.wait_log(sid, has("turn_end", turn=turn), 30)
    assert turn_ends(events)[-1] == (turn, "completed")
    return events


def start_followers(cluster: Cluster, sid: str, per_transport: int = 1) -> list[Follower]:
    followers = [FOLLOWERS[kind](cluster.url, sid, name=f"{kind}-{n}")
                 for kind in ("sse", "ws", "poll") for n in range(per_transport)]
    for follower in followers:
        follower.start()
    return followers


def check_followers(tally: Tally, followers: list[Follower], log: list[Event],
                    timeout: float = 30) -> None:
    """Every follower got exactly the log, in order, under one epoch, with no reset."""
    last = log[-1]["id"]
    for follower in followers:
        finished = follower.finish(last, timeout)
        assert finished, (f"{follower.name} stopped at {follower.last} of {last}; "
                          f"last errors {follower.errors[-3:]}")
        tally.add("reconnects", max(follower.connections - 1, 0))
        assert follower.resets == [], (follower.name, follower.resets)
        tally.check_exact(list(range(1, last + 1)), follower.ids)
        assert follower.kinds == [(e["id"], e["kind"]) for e in log], follower.name
        assert follower.events == log, f"{follower.name}: same ids, different events"
        assert len(follower.epochs - {""}) == 1, (follower.name, follower.epochs)


def session_owned_by(cluster: Cluster, wanted: WorkerTest, text: str,
                     started: Callable[[list[Event]], bool], tries: int = 8
                     ) -> tuple[str, str, list[Event]]:
    """A session whose turn (``text``) runs on a worker ``wanted`` accepts, whatever rule the
    core uses to place it: the prompt is sent on such a worker, and a session that ends up
    elsewhere is cancelled and another one tried. :returns: (session id, owner, log once
    ``started``)."""
    placed = []
    for n in range(tries):
        sid = create(cluster, f"placed {n}", wanted)
        prompt(cluster, sid, text, wanted, turn=1)
        events, _ = cluster.wait_log(sid, started, 20)
        owner = cluster.owner_of(sid)
        if wanted(owner):
            return sid, owner, events
        placed.append(owner)
        assert cluster.api("POST", f"/api/sessions/{sid}/cancel").status_code == 200
    raise AssertionError(f"no session ran on a wanted worker in {tries} tries: {placed}")


# -- the topology ------------------------------------------------------------------------

def test_host_a_runs_two_workers_and_host_b_one(cluster: Cluster) -> None:
    for name, workers in HOSTS.items():
        assert len(cluster.hosts[name].worker_pids()) == workers, (
            f"{name} runs {cluster.hosts[name].worker_pids()}, not WEB_CONCURRENCY={workers}")
    # New connections reach every worker (the kernel picks among a host's workers: no order).
    wids: set[str | None] = set()
    for _ in range(200):
        wids.add(worker_of(requests.get(cluster.url + "/healthz", timeout=5)))
        if len(wids) == sum(HOSTS.values()):
            break
    assert len(wids) == sum(HOSTS.values()) and None not in wids, wids


# -- (1) exactly once, in order, through severed connections -----------------------------

def test_six_clients_see_the_same_log_while_the_proxy_severs_every_300_ms(
        cluster: Cluster, tally: Tally) -> None:
    """2 SSE, 2 WebSocket and 2 long-poll clients follow one session through the proxy while
    every connection is cut every 300 ms, over 12 turns prompted and answered alternately on
    both hosts: each client's events are ids 1..n, each once, identical to the log."""
    assert cluster.proxy is not None
    hosts = list(cluster.hosts.values())
    sid = hosts[0].create_session(title="severed")["id"]
    followers = start_followers(cluster, sid, per_transport=2)
    stop = threading.Event()
    severs = 0

    def sever_every_300_ms() -> None:
        nonlocal severs
        while not stop.wait(0.3):
            cluster.proxy.sever()
            severs += 1

    severer = threading.Thread(target=sever_every_300_ms, daemon=True)
    severer.start()
    texts = ["bench 60 48 60", "$ echo turn {n}", "hello"]
    last = 0
    try:
        # The driver talks to the hosts straight (the proxy's cuts are for the clients): each
        # turn is prompted on one host and answered and awaited on the other.
        for n in range(1, 13):
            asker, other = hosts[n % 2], hosts[(n + 1) % 2]
            text = texts[n % 3].format(n=n)
            response = asker.api("POST", f"/api/sessions/{sid}/prompt", json={"text": text})
            assert response.status_code == 202, response.text
            assert response.json()["turn"] == n
            if text.startswith("$"):
                request = other.wait_for_event(sid, "approval_request", after=last)
                reply = other.api("POST", f"/api/sessions/{sid}/approvals/"
                                  f"{request['request_id']}", json={"decision": "allow"})
                assert reply.status_code == 200, reply.text
            end = other.wait_for_event(sid, "turn_end", after=last)
            assert (end["turn"], end["reason"]) == (n, "completed")
            last = end["id"]
    finally:
        stop.set()
        severer.join(5)
    log, _ = cluster.wait_log(sid, lambda events: len(events) >= last, 10, via=hosts[0])
    assert log[-1]["id"] == last and len(kinds(log, "turn_end")) == 12
    check_log(tally, log)
    same_log(cluster, sid, log, hosts)
    try:
        check_followers(tally, followers, log)
    finally:
        for follower in followers:
            follower.halt()
    tally.add("faults injected", severs)
    assert severs >= 10
    assert all(f.connections >= 5 for f in followers), [f.connections for f in followers]
    served = set().union(*(f.workers for f in followers)) - {"(no header)"}
    assert len({host_of(w) for w in served}) == 2, served
    assert len(served) >= min(3, cluster.worker_ids_expected()), served


# -- (2) first answer wins ---------------------------------------------------------------

def test_fifty_concurrent_answers_one_wins_the_rest_get_already_resolved(
        cluster: Cluster, tally: Tally) -> None:
    sid = create(cluster, "fifty answers")
    prompt(cluster, sid, "$ echo fifty", turn=1)
    request = wait_approval(cluster, sid)
    rid = request["request_id"]
    go = threading.Barrier(50)

    def answer_one(i: int) -> requests.Response:
        go.wait(10)
        # Even ones allow, odd ones deny: the winner decides whether the tool runs.
        body = ({"decision": "allow", "client": f"answer-{i}"} if i % 2 == 0 else
                {"decision": "deny", "message": f"no from {i}", "client": f"answer-{i}"})
        return cluster.api("POST", f"/api/sessions/{sid}/approvals/{rid}", json=body, timeout=30)

    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(answer_one, range(50)))
    tally.add("inputs tried", 50)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 1, 409: 49}, statuses
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == \
        {"already_resolved"}
    winner = next(i for i, r in enumerate(responses) if r.status_code == 200)
    served = {worker_of(r) for r in responses} - {None}
    assert len({host_of(w) for w in served}) == 2, served

    events, _ = cluster.wait_log(sid, has("turn_end", turn=1), 20)
    resolved = kinds(events, "approval_resolved")
    assert [(e["request_id"], e["by"]) for e in resolved] == [(rid, f"answer-{winner}")]
    assert resolved[0]["decision"] == ("allow" if winner % 2 == 0 else "deny")
    assert resolved[0]["reason"] == "user"
    results = kinds(events, "tool_result")
    assert len(results) == 1
    if winner % 2 == 0:
        assert not results[0]["is_error"] and "fifty" in json.dumps(results[0]["content"])
    else:
        assert results[0]["is_error"] and f"no from {winner}" in json.dumps(results[0]["content"])
    assert turn_ends(events) == [(1, "completed")]
    check_log(tally, events)


# -- (3) busy, for the whole cluster -----------------------------------------------------

def test_twenty_concurrent_prompts_one_is_taken_the_rest_get_session_busy(
        cluster: Cluster, tally: Tally) -> None:
    sid = create(cluster, "twenty prompts")
    go = threading.Barrier(20)

    def prompt_one(i: int) -> requests.Response:
        go.wait(10)
        # Each asks for approval first, so the winner's turn is still on when the rest land.
        return cluster.api("POST", f"/api/sessions/{sid}/prompt",
                           json={"text": f"$ echo busy-{i}"}, timeout=30)

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(prompt_one, range(20)))
    tally.add("inputs tried", 20)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {202: 1, 409: 19}, statuses
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == \
        {"session_busy"}
    winner = next(i for i, r in enumerate(responses) if r.status_code == 202)
    assert responses[winner].json()["turn"] == 1

    wait_approval(cluster, sid)
    assert cluster.api("POST", f"/api/sessions/{sid}/cancel").json() == {"cancelled": True}
    events, _ = cluster.wait_log(sid, has("turn_end", turn=1), 20)
    assert [(e["turn"], e["text"]) for e in kinds(events, "user")] == [(1, f"$ echo busy-{winner}")]
    assert turn_ends(events) == [(1, "cancelled")]
    assert cluster.session(sid)["turn"] == 1
    check_log(tally, events)


# -- (4) Stop from another worker --------------------------------------------------------

def test_stop_through_a_worker_that_does_not_own_the_turn_cancels_it(
        cluster: Cluster, tally: Tally) -> None:
    sid = create(cluster, "stop elsewhere")
    prompt(cluster, sid, "$ sleep 29.5", turn=1)
    answer(cluster, sid, wait_approval(cluster, sid)["request_id"])
    deadline = time.monotonic() + 10
    while not cluster.processes_in(sid, "sleep 29.5"):
        assert time.monotonic() < deadline, "the approved command did not start"
        time.sleep(0.05)
    owner = cluster.owner_of(sid)

    stop = cluster.request_on(other_than(owner), "POST", f"/api/sessions/{sid}/cancel")
    assert stop.status_code == 200 and stop.json() == {"cancelled": True}, stop.text
    assert worker_of(stop) != owner
    events, took = cluster.wait_log(sid, has("turn_end", turn=1), 20)
    assert turn_ends(events) == [(1, "cancelled")]
    # The interrupt, then SIGTERM and SIGKILL a grace apart at worst, plus the Redis hops.
    assert took <= 2 * CANCEL_GRACE + 3, f"turn_end {took:.1f} s after the Stop"
    assert cluster.wait_gone(cluster.processes_in(sid, "sleep 29.5"), 5) == []
    check_log(tally, events)
    # The session takes the next prompt.
    run_turn(cluster, sid, "hello", turn=2)


# -- (5) kill -9 of the owner worker -----------------------------------------------------

def test_kill_9_of_the_owner_worker_mid_turn_interrupts_it_within_2_s(
        fresh: Cluster, tally: Tally) -> None:
    cluster = fresh
    sid = create(cluster, "owner killed")
    prompt(cluster, sid, "$ echo never", turn=1)
    request = wait_approval(cluster, sid)
    owner = cluster.owner_of(sid)
    followers = start_followers(cluster, sid)
    try:
        agents = cluster.kill_worker(owner)
        tally.add("faults injected")
        assert agents, "the owner ran no agent"
        events, took = cluster.wait_log(
            sid, both(has("approval_resolved", reason="cancelled"),
                      has("turn_end", reason="interrupted")), 20)
        assert took <= 5, f"the turn was interrupted {took:.1f} s after the kill (target 2 s)"
        resolved = kinds(events, "approval_resolved")
        assert [(e["request_id"], e["reason"], e["decision"]) for e in resolved] == \
            [(request["request_id"], "cancelled", "deny")]
        assert turn_ends(events) == [(1, "interrupted")]
        assert [e["kind"] for e in events[-2:]] == ["approval_resolved", "turn_end"]
        check_log(tally, events)
        # gunicorn's master saw the worker die and killed its agents (child_exit).
        assert cluster.wait_gone(agents, 5) == [], "the dead worker's agents outlived it"

        # The next prompt runs, on another worker.
        last = events[-1]["id"]
        taken = prompt(cluster, sid, "$ echo again", turn=2)
        assert worker_of(taken) != owner
        request = wait_approval(cluster, sid, after=last)
        resumed_with(cluster, sid, events)
        answer(cluster, sid, request["request_id"])
        events, _ = cluster.wait_log(sid, has("turn_end", turn=2), 30)
        assert turn_ends(events) == [(1, "interrupted"), (2, "completed")]
        assert any(e["kind"] == "tool_result" and "again" in json.dumps(e["content"])
                   for e in events[last:])
        check_log(tally, events)
        # The clients of every worker, the dead one's too, resumed with nothing lost or doubled.
        check_followers(tally, followers, events)
    finally:
        for follower in followers:
            follower.halt()


# -- (6) kill -9 of a whole host ---------------------------------------------------------

def test_kill_9_of_a_whole_host_has_its_turn_interrupted_by_the_other_within_the_lease(
        fresh: Cluster, tally: Tally) -> None:
    cluster = fresh
    sid, owner, events = session_owned_by(cluster, on_host("hostB"), "$ echo never",
                                          has("approval_request"))
    request = kinds(events, "approval_request")[0]
    followers = start_followers(cluster, sid)
    try:
        agents = cluster.kill_host("hostB")
        tally.add("faults injected")
        events, took = cluster.wait_log(
            sid, both(has("approval_resolved", reason="cancelled"),
                      has("turn_end", reason="interrupted")), LEASE_SECONDS + 15)
        assert took <= LEASE_SECONDS + 4, (
            f"the turn was interrupted {took:.1f} s after the host died (lease {LEASE_SECONDS} s)")
        assert [(e["request_id"], e["reason"]) for e in kinds(events, "approval_resolved")] == \
            [(request["request_id"], "cancelled")]
        assert turn_ends(events) == [(1, "interrupted")]
        check_log(tally, events)
        # Nobody was left on host B to kill its agents: the test does.
        cluster.reap(agents)

        last = events[-1]["id"]
        taken = prompt(cluster, sid, "$ echo on A", turn=2)
        assert host_of(worker_of(taken) or "?:0:0") == "hostA"
        request = wait_approval(cluster, sid, after=last)
        resumed_with(cluster, sid, events)
        answer(cluster, sid, request["request_id"])
        events, _ = cluster.wait_log(sid, has("turn_end", turn=2), 30)
        assert turn_ends(events) == [(1, "interrupted"), (2, "completed")]
        check_log(tally, events)
        check_followers(tally, followers, events)
    finally:
        for follower in followers:
            follower.halt()


# -- (7) a stalled owner is fenced -------------------------------------------------------

def test_sigstop_of_the_owner_past_twice_the_lease_then_sigcont_fences_it(
        fresh: Cluster, tally: Tally) -> None:
    cluster = fresh
    assert cluster.proxy is not None
    host_b = cluster.hosts["hostB"]
    # 60 s of text deltas, no approval: the owner has output to write the moment it wakes.
    sid, owner, _ = session_owned_by(cluster, on_host("hostB"), "bench 3000 48 50",
                                     has("text_delta"))
    agents = cluster.agent_pids_of(owner)
    # New connections go to host A while B's only worker is stopped (they would wait in its
    # backlog), and B's open connections are cut.
    cluster.proxy.fail(host_b.port)
    cluster.proxy.sever(host_b.port)
    try:
        cluster.stop_worker(owner)
        stopped = time.monotonic()
        tally.add("faults injected")
        time.sleep(max(0.0, stopped + 2 * LEASE_SECONDS + 1 - time.monotonic()))
        events, _ = cluster.wait_log(sid, has("turn_end", turn=1), 10)
        assert turn_ends(events) == [(1, "interrupted")], "no takeover while the owner slept"
        assert events[-1]["kind"] == "turn_end"
        check_log(tally, events)

        cluster.cont_worker(owner)
        time.sleep(3)
        # The woken worker wrote nothing more: its buffered deltas were refused (fenced).
        after = cluster.log(sid)
        assert after == events, [(e["id"], e["kind"]) for e in after[len(events):][:5]]
        # And it killed its agent.
        assert cluster.wait_gone(agents, 5) == [], "the fenced worker's agent still runs"
    finally:
        cluster.cont_worker(owner)
        cluster.proxy.restore(host_b.port)
    events = run_turn(cluster, sid, "hello", turn=2)
    assert turn_ends(events) == [(1, "interrupted"), (2, "completed")]
    check_log(tally, events)


# -- (8) Redis restarts ------------------------------------------------------------------

def retry(call: Callable[[], requests.Response], timeout: float = 15,
          idempotent: bool = True) -> requests.Response:
    """``call()`` until it answers other than 503 ``store_unavailable``, as a client would
    while Redis comes back; a connection error is tried again only for an ``idempotent``
    call (a POST cut off may have been taken)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = call()
            if response.status_code != 503:
                return response
        except requests.RequestException:
            if not idempotent or time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def test_a_redis_restart_with_its_aof_keeps_epoch_ids_and_streams(
        fresh: Cluster, tally: Tally) -> None:
    cluster = fresh
    sid = create(cluster, "redis restart")
    events = run_turn(cluster, sid, "hello", turn=1)
    epoch = cluster.epoch()
    followers = start_followers(cluster, sid)
    try:
        cluster.restart_redis()
        tally.add("restarts")
        listing = retry(lambda: cluster.api("GET", "/api/sessions"))
        assert listing.status_code == 200, listing.text
        assert listing.json()["epoch"] == epoch
        assert [s["id"] for s in listing.json()["sessions"]] == [sid]
        same_log(cluster, sid, events, list(cluster.hosts.values()))

        last = events[-1]["id"]
        taken = retry(lambda: cluster.api("POST", f"/api/sessions/{sid}/prompt",
                                          json={"text": "bench 30 48 60"}), idempotent=False)
        assert taken.status_code == 202 and taken.json()["turn"] == 2, taken.text
        events, _ = cluster.wait_log(sid, has("turn_end", turn=2), 30)
        assert turn_ends(events) == [(1, "completed"), (2, "completed")]
        assert events[last]["id"] == last + 1
        check_log(tally, events)
        check_followers(tally, followers, events)
        assert all(f.epochs - {""} == {epoch} for f in followers)
    finally:
        for follower in followers:
            follower.halt()


def test_redis_stopped_gives_503_store_unavailable_and_keepalives_then_recovers(
        fresh: Cluster, tally: Tally) -> None:
    cluster = fresh
    sid = create(cluster, "redis away")
    events = run_turn(cluster, sid, "hello", turn=1)
    followers = start_followers(cluster, sid)
    try:
        cluster.redis.stop()
        tally.add("faults injected")
        statuses: dict[str, set[int]] = {}
        for _ in range(6):  # every worker of both hosts, through the proxy
            for name, (method, path, body) in {
                    "prompt": ("POST", f"/api/sessions/{sid}/prompt", {"text": "hello"}),
                    "create": ("POST", "/api/sessions", {"title": "no"}),
                    "list": ("GET", "/api/sessions", None),
                    "stop": ("POST", f"/api/sessions/{sid}/cancel", None)}.items():
                response = cluster.api(method, path, json=body, timeout=15)
                statuses.setdefault(name, set()).add(response.status_code)
                if response.status_code == 503:
                    assert response.json()["error"]["code"] == "store_unavailable", \
                        response.text
        assert all(codes == {503} for codes in statuses.values()), statuses
        # A stream opened now stays open on keepalives, without an error.
        stream = requests.get(f"{cluster.url}/api/sessions/{sid}/stream?after={len(events)}",
                              headers=AUTH_HEADERS, stream=True, timeout=10)
        try:
            assert stream.status_code == 200, stream.text
            first = next(stream.iter_lines(chunk_size=1, decode_unicode=True))
            assert first is not None
        finally:
            stream.close()
        time.sleep(2)
        cluster.redis.start()
        tally.add("restarts")
        taken = retry(lambda: cluster.api("POST", f"/api/sessions/{sid}/prompt",
                                          json={"text": "hello"}), timeout=30, idempotent=False)
        assert taken.status_code == 202 and taken.json()["turn"] == 2, taken.text
        events, _ = cluster.wait_log(sid, has("turn_end", turn=2), 30)
        check_log(tally, events)
        check_followers(tally, followers, events)
    finally:
        for follower in followers:
            follower.halt()


def told(follower: Follower) -> bool:
    """Whether the follower learnt that its cursor is void: a reset, or the session gone."""
    return bool(follower.resets) or any("404" in error for error in follower.errors)


def test_a_flushed_redis_means_a_new_epoch_and_no_client_trusts_its_old_cursor(
        fresh: Cluster, tally: Tally) -> None:
    """After FLUSHALL the data is gone: the cluster takes a new epoch, and no client is
    answered silence or reused ids for its old cursor: each gets ``reset``, or finds the
    session gone (404). (The contract leaves open which; both stop a client trusting ids the
    store no longer has.)"""
    cluster = fresh
    sid = create(cluster, "flushed")
    events = run_turn(cluster, sid, "hello", turn=1)
    epoch = cluster.epoch()
    followers = [FOLLOWERS[kind](cluster.url, sid) for kind in ("sse", "poll")]
    for follower in followers:
        follower.start()
    try:
        deadline = time.monotonic() + 10
        while any(f.last < events[-1]["id"] for f in followers):
            assert time.monotonic() < deadline, "the followers did not catch up"
            time.sleep(0.05)
        cluster.flush_redis()
        tally.add("faults injected")
        deadline = time.monotonic() + 10
        while (new_epoch := retry(lambda: cluster.api("GET", "/api/sessions")).json()["epoch"]
               ) == epoch:
            assert time.monotonic() < deadline, "the epoch did not change after FLUSHALL"
            time.sleep(0.1)
        assert new_epoch
        assert cluster.api("GET", f"/api/sessions/{sid}").status_code == 404
        deadline = time.monotonic() + 10
        while not all(told(f) for f in followers):
            assert time.monotonic() < deadline, [(f.name, f.errors[-2:]) for f in followers]
            time.sleep(0.1)
        # One that was not reset was given nothing more under its old cursor.
        for follower in followers:
            assert follower.resets or follower.events == events, follower.name
        # A new session starts its ids at 1 under the new epoch.
        sid2 = create(cluster, "after the flush")
        events2 = run_turn(cluster, sid2, "hello", turn=1)
        check_log(tally, events2)
        assert cluster.epoch() == new_epoch
    finally:
        for follower in followers:
            follower.halt()


# -- (8b) a host drained, then stopped --------------------------------------------------

def test_a_drained_host_finishes_its_turn_hands_its_sessions_over_and_stops_interrupting_none(
        fresh: Cluster, tally: Tally) -> None:
    """``python -m tether.cluster.drain hostA --wait`` (README, Several hosts): while it waits,
    a prompt given to a host A worker runs on host B, host A's running turn (waiting on an
    approval) finishes normally; the command returns once host A owns nothing; host A is then
    stopped (SIGTERM) and the session's next turn resumes its conversation on host B. No
    turn ends ``interrupted``."""
    cluster = fresh
    sid, owner, _ = session_owned_by(cluster, on_host("hostA"), "$ echo drained",
                                     has("approval_request"))
    request = wait_approval(cluster, sid)
    other = create(cluster, "asked of a drained host")
    drain = subprocess.Popen(
        [sys.executable, "-m", "tether.cluster.drain", "hostA", "--wait", "--timeout", "60"],
        cwd=ROOT, env={**os.environ, **{k: str(v) for k, v in cluster.env.items()}},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert drain.stdout is not None
        assert drain.stdout.readline().startswith("hostA: draining, 1 session(s) owned")
        time.sleep(float(cluster.env["TETHER_HEARTBEAT_SECONDS"]) * 2)  # every worker read it
        taken = prompt(cluster, other, "hello", wanted=on_host("hostA"), turn=1)
        assert host_of(worker_of(taken) or "") == "hostA"
        cluster.wait_log(other, has("turn_end", turn=1), 30)
        assert host_of(cluster.owner_of(other)) == "hostB"
        assert drain.poll() is None, "drained while a turn still ran on host A"
        answer(cluster, sid, request["request_id"])
        events, _ = cluster.wait_log(sid, has("turn_end", turn=1), 30)
        out, err = drain.communicate(timeout=30)
        assert drain.returncode == 0, err
        assert "hostA: drained (owns no session)" in out
    finally:
        if drain.poll() is None:
            drain.kill()
    assert turn_ends(events) == [(1, "completed")]
    cluster.hosts["hostA"].stop()
    taken = prompt(cluster, sid, "$ echo after", turn=2)
    assert host_of(worker_of(taken) or "") == "hostB"
    request = wait_approval(cluster, sid, after=events[-1]["id"])
    resumed_with(cluster, sid, events)
    answer(cluster, sid, request["request_id"])
    events, _ = cluster.wait_log(sid, has("turn_end", turn=2), 30)
    assert turn_ends(events) == [(1, "completed"), (2, "completed")]
    other_events, _ = cluster.wait_log(other, has("turn_end", turn=1), 5)
    assert turn_ends(other_events) == [(1, "completed")]
    check_log(tally, events)
    check_log(tally, other_events)


# -- (9) one session, two hosts ----------------------------------------------------------

@pytest.mark.parametrize("creator", ["hostA", "hostB"])
def test_a_session_created_through_one_host_is_answered_from_the_other(
        cluster: Cluster, tally: Tally, creator: str) -> None:
    made = cluster.hosts[creator]
    other = next(host for name, host in cluster.hosts.items() if name != creator)
    sid = made.create_session(title=f"from {creator}")["id"]
    assert sid in [s["id"] for s in other.api("GET", "/api/sessions").json()["sessions"]]
    response = made.api("POST", f"/api/sessions/{sid}/prompt",
                        json={"text": f"$ echo made on {creator}"})
    assert response.status_code == 202, response.text
    request = other.wait_for_event(sid, "approval_request")
    # The other host's inbox lists it, and its session object shows it pending (within a
    # wake-up: a worker may serve its cached inbox until the change reaches it).
    deadline = time.monotonic() + 5
    while True:
        inbox = other.api("GET", "/api/inbox").json()
        pending = other.api("GET", f"/api/sessions/{sid}").json()["pending"]["approvals"]
        if (request["request_id"] in json.dumps(inbox)
                and [p["request_id"] for p in pending] == [request["request_id"]]):
            break
        assert time.monotonic() < deadline, (inbox, pending)
        time.sleep(0.05)
    reply = other.api("POST", f"/api/sessions/{sid}/approvals/{request['request_id']}",
                      json={"decision": "allow", "client": "other host"})
    assert reply.status_code == 200, reply.text
    end = other.wait_for_event(sid, "turn_end")
    assert (end["turn"], end["reason"]) == (1, "completed")
    events = cluster.log(sid, via=other)
    same_log(cluster, sid, events, [made, other])
    assert [e["by"] for e in kinds(events, "approval_resolved")] == ["other host"]
    assert any(e["kind"] == "tool_result" and f"made on {creator}" in json.dumps(e["content"])
               for e in events)
    for host in (made, other):
        deadline = time.monotonic() + 5
        while True:
            session = host.api("GET", f"/api/sessions/{sid}").json()
            state = (session["state"], session["turn"], session["last_event_id"])
            if state == ("idle", 1, events[-1]["id"]):
                break
            assert time.monotonic() < deadline, (host.host_id, state)
            time.sleep(0.05)
    check_log(tally, events)


def test_a_mode_changed_through_a_worker_that_does_not_own_the_agent_reaches_it(
        cluster: Cluster, tally: Tally) -> None:
    """Issue 18 item 2: a PATCH on a non-owner worker becomes a ``mode`` event; the owner's
    follower sends set_permission_mode to its live agent (the same process, mid-turn)."""
    sid = create(cluster, "mode elsewhere")
    prompt(cluster, sid, "$ echo one", turn=1)
    request = wait_approval(cluster, sid)
    owner = cluster.owner_of(sid)
    agents = cluster.processes_in(sid, "tether.agents.local")
    assert len(agents) == 1
    patched = cluster.request_on(other_than(owner), "PATCH", f"/api/sessions/{sid}",
                                 json={"permission_mode": "plan", "client": "phone"})
    assert patched.status_code == 200 and patched.json()["permission_mode"] == "plan"
    assert worker_of(patched) != owner
    answer(cluster, sid, request["request_id"])
    events, _ = cluster.wait_log(sid, has("turn_end", turn=1), 30)
    prompt(cluster, sid, "$ echo two", turn=2)
    plan = wait_approval(cluster, sid, after=events[-1]["id"])
    assert plan["tool_name"] == "ExitPlanMode"
    assert cluster.processes_in(sid, "tether.agents.local") == agents  # told, not restarted
    assert "--permission-mode" not in cluster.cmdline(agents[0])
    answer(cluster, sid, plan["request_id"], "deny")
    events, _ = cluster.wait_log(sid, has("turn_end", turn=2), 30)
    assert [(e["permission_mode"], e["by"]) for e in kinds(events, "mode")] == [
        ("plan", "phone")]
    check_log(tally, events)
