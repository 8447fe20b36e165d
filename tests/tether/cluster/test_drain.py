"""Draining a host (tether/cluster/drain.py): two workers on two hosts, in one process, on a
private Redis. A drained host claims no session, lets its running turns finish, gives each
session up once no turn runs in it; the next turn runs on the other host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisServer
from tests.tether.cluster.test_registry import (
    events,
    pending_approval,
    settings_for,
    turn_end,
    wait_until,
    worker,
)
from tether.cluster.drain import main, parse, run
from tether.cluster.registry import ClusterRegistry

Hosts = tuple[ClusterRegistry, ClusterRegistry]


@pytest.fixture
def hosts(tmp_path: Path, redis_server: RedisServer, redis_prefix: str) -> Iterator[Hosts]:
    a = worker(settings_for(tmp_path / "a", redis_server, redis_prefix,
                            TETHER_HOST_ID="host-a"), "1")
    b = worker(settings_for(tmp_path / "b", redis_server, redis_prefix,
                            TETHER_HOST_ID="host-b"), "2")
    yield a, b
    for registry in (a, b):
        registry.shutdown()


def drain(registry: ClusterRegistry, *argv: str) -> int:
    store = registry.redis_store
    return run(store.client, store.prefix, registry.settings.host_id, parse(list(argv)))


def drained(registry: ClusterRegistry) -> None:
    assert drain(registry) == 0
    wait_until(lambda: registry.membership.draining)


def owner(registry: ClusterRegistry, sid: str) -> str:
    store = registry.redis_store
    return (store.client.hget(store.key(sid, "rec"), "owner") or b"").decode()


def test_a_prompt_on_a_drained_host_runs_on_a_worker_of_another(hosts: Hosts) -> None:
    a, b = hosts
    drained(a)
    sid = a.create().id
    assert a.get(sid).submit("hello") == 1
    assert turn_end(a, sid, 1)["reason"] == "completed"
    assert owner(a, sid) == b.worker_id
    assert b.get(sid).owned and b.get(sid).agent_running
    assert not a.get(sid).owned and not a.get(sid).agent_running
    assert [e.kind for e in events(a, sid)].count("user") == 1  # started once


def test_a_turn_running_when_the_drain_begins_ends_normally_then_its_session_moves(
        hosts: Hosts) -> None:
    a, b = hosts
    sid = a.create().id
    a.get(sid).submit("$ echo waiting")  # a claims it and runs the agent
    rid = pending_approval(b, sid)
    drained(a)
    assert owner(a, sid) == a.worker_id  # the turn runs on
    b.get(sid).prompts.answer_approval(rid, "allow")
    assert turn_end(b, sid, 1)["reason"] == "completed"
    wait_until(lambda: owner(a, sid) == "")  # given up once the turn ended
    wait_until(lambda: not a.get(sid).agent_running)
    assert a.get(sid).submit("hello") == 2
    assert turn_end(a, sid, 2)["reason"] == "completed"
    assert owner(a, sid) == b.worker_id


def test_idle_sessions_of_a_drained_host_are_given_up_and_undo_claims_again(
        hosts: Hosts) -> None:
    a, b = hosts
    sid = a.create().id
    a.get(sid).submit("hello")
    turn_end(a, sid, 1)
    assert owner(a, sid) == a.worker_id and a.get(sid).agent_running
    drained(a)
    wait_until(lambda: owner(a, sid) == "")
    wait_until(lambda: not a.get(sid).agent_running)
    assert drain(a, "--undo") == 0
    wait_until(lambda: not a.membership.draining)
    assert a.get(sid).submit("again") == 2
    assert turn_end(a, sid, 2)["reason"] == "completed"
    assert owner(a, sid) == a.worker_id


def test_drain_wait_returns_once_the_host_owns_nothing_and_status_says_so(
        hosts: Hosts, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = hosts
    sid = a.create().id
    a.get(sid).submit("$ echo waiting")
    rid = pending_approval(a, sid)
    assert drain(a, "--wait", "--timeout", "1") == 1  # its turn waits on a person
    assert "still owns 1 session(s)" in capsys.readouterr().err
    b.get(sid).prompts.answer_approval(rid, "allow")
    assert drain(a, "--wait", "--timeout", "30") == 0
    assert "drained (owns no session)" in capsys.readouterr().out
    assert drain(a, "--status") == 0
    status = capsys.readouterr().out
    assert "host-a: draining, 1 worker(s), 0 session(s) owned" in status
    assert "host-b: serving, 1 worker(s)" in status


def test_a_claim_whose_own_control_was_missed_is_found_by_the_audit(
        hosts: Hosts, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = hosts
    monkeypatch.setattr(b, "_claimed", lambda session_id, value: None)  # the control is lost
    drained(a)
    sid = a.create().id
    assert a.get(sid).submit("hello") == 1
    assert owner(a, sid) == b.worker_id
    b._audit_owned()  # what a resync does
    assert turn_end(a, sid, 1)["reason"] == "completed"


def test_the_command_refuses_without_the_redis_store(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TETHER_STORE", "sqlite")
    assert main(["some-host"]) == 2
    assert "TETHER_STORE=redis" in capsys.readouterr().err
