"""Idle sessions on a worker of the cluster (SCALE-OUT.md section 5, "Mirror lifetime"): a
session a worker only served reads of is forgotten, with its view of the log, once the sweep
finds it idle; the owner keeps its own; the next request loads it again from Redis and a
cursor resumes exactly; a session object a request still holds is taken back, never doubled.

The sweep is called with an idle time of 0 (what it drops is then everything without
interest), so nothing here waits for time to pass.
"""

from __future__ import annotations

import gc
import weakref

from tests.tether.cluster.test_registry import (
    Workers,
    events,
    turn_end,
    wait_until,
)
from tether.cluster.registry import ClusterRegistry


def held(registry: ClusterRegistry, sid: str) -> bool:
    with registry._lock:
        return sid in registry._sessions


def test_a_session_only_read_here_is_forgotten_and_served_again_exactly(
        workers: Workers) -> None:
    a, b = workers
    sid = a.create().id
    a.get(sid).submit("first")
    turn_end(a, sid, 1)
    seen = [e.id for e in events(b, sid)]  # b serves a reader: it holds a view
    assert held(b, sid) and b.figures()["session_views"] == 1
    assert b.sweep_idle(idle_seconds=0) == 1
    assert a.sweep_idle(idle_seconds=0) == 0  # a owns it (its agent is warm): kept
    assert not held(b, sid) and held(a, sid)
    gc.collect()
    assert b.figures()["session_views"] == 0  # the scrape itself loads no session
    assert b.figures()["sessions"] == 1
    a.get(sid).submit("second")
    turn_end(a, sid, 2)
    log = b.get(sid).log  # loaded again from Redis
    after = log.read_after(seen[-1])
    assert after and after[0].id == seen[-1] + 1
    assert [e.data for e in log.read_after(0)] == [e.data for e in events(a, sid)]
    assert b.figures()["session_views"] == 1


def test_a_forgotten_session_a_request_holds_is_taken_back_and_kept_once_owned(
        workers: Workers) -> None:
    a, b = workers
    sid = a.create().id
    session = b.get(sid)  # a request on b holds it …
    assert b.sweep_idle(idle_seconds=0) == 1  # … while the sweep forgets it
    assert not held(b, sid)
    assert b.get(sid) is session  # never a second object for one session
    assert b.sweep_idle(idle_seconds=0) == 1
    # The held object claims the session (no owner yet): registered again, and kept, as
    # the owner's object is the one Stops and the reaper reach.
    assert session.submit("$ sleep 30") == 1
    assert held(b, sid) and b._sessions[sid] is session
    wait_until(lambda: session.agent_running)
    assert b.sweep_idle(idle_seconds=0) == 0
    assert a.get(sid).cancel()  # a Stop from the other worker reaches it
    assert turn_end(a, sid, 1)["reason"] == "cancelled"


def test_a_forgotten_session_and_its_view_are_freed_without_waiting_for_the_collector(
        workers: Workers) -> None:
    a, b = workers
    sid = a.create().id
    session = weakref.ref(b.get(sid))
    view = weakref.ref(b.get(sid).log)
    gc.disable()  # freed by reference counting alone: no cycle keeps them for a full pass
    try:
        assert b.sweep_idle(idle_seconds=0) == 1
        assert session() is None and view() is None
    finally:
        gc.enable()
