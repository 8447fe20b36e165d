"""Two workers of one cluster, in one process, on a private Redis: every command from either
worker, one agent run on the owner, and a dead worker's turns taken over."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.redis_server import RedisServer
from tether.agents.base import AgentCatalog
from tether.agents.catalog import LocalAgent
from tether.cluster.registry import ClusterRegistry
from tether.config import Settings
from tether.conversations import ClaudeConversations
from tether.errors import AlreadyResolved, ConversationOpen, NotFound, SessionBusy

Workers = tuple[ClusterRegistry, ClusterRegistry]


def settings_for(tmp_path: Path, redis_server: RedisServer, prefix: str,
                 **extra: Any) -> Settings:
    return Settings.from_env({"data_dir": tmp_path, "local_word_delay_seconds": 0,
                              "cancel_grace_seconds": 1, "TETHER_STORE": "redis",
                              "TETHER_REDIS_URL": redis_server.url,
                              "TETHER_REDIS_PREFIX": prefix, "TETHER_LEASE_SECONDS": 1,
                              "TETHER_HEARTBEAT_SECONDS": 0.2, **extra})


def worker(settings: Settings, name: str) -> ClusterRegistry:
    return ClusterRegistry(settings, agents=AgentCatalog([LocalAgent(settings)]),
                           worker=f"{settings.host_id}:{name}:0")


def wait_until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s")


def events(registry: ClusterRegistry, sid: str) -> list[Any]:
    log = registry.get(sid).log
    log.sync(10**9)
    return log.read_after(0)


def kinds(registry: ClusterRegistry, sid: str) -> list[str]:
    return [e.kind for e in events(registry, sid)]


def turn_end(registry: ClusterRegistry, sid: str, turn: int) -> dict[str, Any]:
    def found() -> Any:
        for event in events(registry, sid):
            if event.kind == "turn_end" and event.payload["turn"] == turn:
                return dict(event.payload)
        return None
    return wait_until(found)


def pending_approval(registry: ClusterRegistry, sid: str) -> str:
    def found() -> Any:
        approvals = registry.get(sid).to_dict()["pending"]["approvals"]
        return approvals[0]["request_id"] if approvals else None
    return wait_until(found)


def test_a_session_made_on_one_worker_is_served_by_the_other(workers: Workers) -> None:
    a, b = workers
    session = a.create(title="shared")
    assert b.get(session.id).title == "shared"
    assert [s.id for s in b.list()] == [session.id]
    assert b.get(session.id).to_dict()["state"] == "idle"
    with pytest.raises(NotFound):
        b.get("0" * 32)


def test_a_prompt_on_either_worker_runs_on_the_owner(workers: Workers) -> None:
    a, b = workers
    sid = a.create().id
    assert b.get(sid).submit("hello") == 1  # b claims the session: it runs the agent
    assert turn_end(a, sid, 1)["reason"] == "completed"
    assert a.get(sid).submit("hello again") == 2  # b, alive, still owns it
    assert turn_end(b, sid, 2)["reason"] == "completed"
    assert b.get(sid).agent_running and not a.get(sid).agent_running
    assert [e.data for e in events(a, sid)] == [e.data for e in events(b, sid)]
    assert [e.id for e in events(a, sid)] == list(range(1, len(events(a, sid)) + 1))
    # The owner's totals, as every worker reads them once the turn has ended.
    results = [e.payload["session_usage"] for e in events(a, sid) if e.kind == "result"]
    # (saved right after the turn_end, by the owner)
    wait_until(lambda: a.get(sid).to_dict()["usage"] == results[-1])
    assert results[-1]["output_tokens"] > results[0]["output_tokens"] > 0


def test_the_listing_reads_every_session_as_its_own_object_does_without_loading_them(
        tmp_path: Path, redis_server: RedisServer, redis_prefix: str,
        workers: Workers) -> None:
    a, b = workers
    idle = a.create(title="idle").id
    waiting = a.create(title="waiting").id
    a.get(waiting).submit("$ echo waiting")  # an approval open
    pending_approval(a, waiting)
    assert a.get(waiting).prompt("later", queue=True) == {"queued": 1}
    gone = a.create(title="gone").id
    a.delete(gone)
    expected = [a.get(sid).to_dict() for sid in (waiting, idle)]  # newest first
    assert a.summaries() == expected == [s.to_dict() for s in a.list()]
    assert expected[0]["state"] == "waiting" and expected[0]["queue"][0]["text"] == "later"
    # A third worker that never served these sessions lists them as they are, and holds
    # no session object or view of a log afterwards.
    c = worker(settings_for(tmp_path, redis_server, redis_prefix), "3")
    try:
        assert c.summaries() == expected
        assert c._sessions == {} and c.redis_store._logs == {}
    finally:
        c.shutdown()


def test_busy_is_decided_for_the_whole_cluster(workers: Workers) -> None:
    a, b = workers
    sid = a.create().id
    a.get(sid).submit("$ echo waiting")
    pending_approval(b, sid)
    with pytest.raises(SessionBusy):
        b.get(sid).submit("hello")
    assert b.get(sid).prompt("later", queue=True) == {"queued": 1}
    assert [q.text for q in a.get(sid).queue] == ["later"]


def test_an_answer_on_another_worker_reaches_the_agent_and_the_first_wins(
        workers: Workers) -> None:
    a, b = workers
    sid = a.create().id
    a.get(sid).submit("$ echo answered")
    rid = pending_approval(b, sid)
    b.get(sid).prompts.answer_approval(rid, "allow", by="phone")
    with pytest.raises(AlreadyResolved, match="answered by phone"):
        a.get(sid).prompts.answer_approval(rid, "deny", by="desk")
    assert turn_end(a, sid, 1)["reason"] == "completed"
    log = events(b, sid)
    resolved = [e.payload for e in log if e.kind == "approval_resolved"]
    assert [(p["decision"], p["by"]) for p in resolved] == [("allow", "phone")]
    assert any(e.kind == "tool_result" and "answered" in str(e.payload) for e in log)


def test_every_worker_knows_whether_a_turn_runs_without_asking_redis(
        workers: Workers, redis_server: RedisServer, redis_prefix: str, tmp_path: Path) -> None:
    a, b = workers
    sid = a.create().id
    assert not a.get(sid).turn_active
    a.get(sid).submit("$ echo seen")
    rid = pending_approval(b, sid)
    # A worker that opens the session mid-turn reads it from the record, with the last id.
    late = worker(settings_for(tmp_path, redis_server, redis_prefix), "3")
    try:
        assert late.get(sid).turn_active and b.get(sid).turn_active
        b.get(sid).prompts.answer_approval(rid, "allow", by="phone")
        turn_end(late, sid, 1)
        events(b, sid)
        # Each view follows the log: it agrees with the record once it holds the turn_end.
        assert not late.get(sid).turn_active and not b.get(sid).turn_active
        assert a.get(sid).wait_idle(10)
        events(a, sid)
        assert not a.get(sid).turn_active
    finally:
        late.shutdown()


def test_stop_on_a_worker_that_does_not_run_the_turn(workers: Workers) -> None:
    a, b = workers
    sid = a.create().id
    a.get(sid).submit("$ echo never")
    pending_approval(b, sid)
    assert b.get(sid).cancel() is True
    assert turn_end(b, sid, 1)["reason"] == "cancelled"
    assert b.get(sid).cancel() is False
    resolved = [e.payload for e in events(a, sid) if e.kind == "approval_resolved"]
    assert [p["reason"] for p in resolved] == ["cancelled"]


def test_a_completed_turn_sends_the_queue_on_its_owner(workers: Workers) -> None:
    a, b = workers
    sid = a.create().id
    a.get(sid).submit("$ echo first")
    rid = pending_approval(b, sid)
    assert b.get(sid).prompt("hello", queue=True) == {"queued": 1}
    b.get(sid).prompts.answer_approval(rid, "allow")
    assert turn_end(b, sid, 2)["reason"] == "completed"
    assert kinds(b, sid).count("prompt_dequeued") == 1
    assert a.get(sid).queue == []


def test_the_inbox_is_the_clusters(workers: Workers) -> None:
    a, b = workers
    before = b.inbox.snapshot()["revision"]
    sid = a.create(title="asks").id
    a.get(sid).submit("$ echo inbox")
    pending_approval(a, sid)
    wait_until(lambda: b.inbox.revision > before)
    entries = b.inbox.snapshot()["entries"]
    assert [(e["session_id"], e["session_title"], e["kind"]) for e in entries] == \
        [(sid, "asks", "approval")]
    b.get(sid).cancel()
    wait_until(lambda: b.inbox.snapshot()["entries"] == [])


def test_delete_on_a_worker_that_does_not_run_the_turn(workers: Workers) -> None:
    a, b = workers
    sid = a.create().id
    a.get(sid).submit("$ echo never")
    pending_approval(a, sid)
    b.delete(sid)
    with pytest.raises(NotFound):
        b.get(sid)
    wait_until(lambda: _gone(a, sid))
    assert a.list() == []


def test_the_figures_are_the_clusters_but_agent_processes_each_workers(
        workers: Workers) -> None:
    """/metrics's scrape-time figures (tether.metrics): sessions, events appended (counted in
    Redis, a deletion through either worker included) and pending prompts read the same on
    every worker; agent processes are the worker's own."""
    a, b = workers
    kept, dropped = a.create().id, a.create().id
    b.get(kept).submit("$ echo figures")
    pending_approval(a, kept)
    a.get(dropped).submit("hello")
    turn_end(b, dropped, 1)
    appended = len(events(a, kept)) + len(events(a, dropped))
    cluster = {"sessions": 2, "events_appended": appended, "approvals_pending": 1,
               "questions_pending": 0}
    for registry in (a, b):  # each worker runs one of the two agents, and holds both views
        assert registry.figures() == cluster | {"agent_processes": 1, "session_views": 2}
    b.delete(dropped)  # its events stay counted, on the worker that did not delete it too
    assert wait_until(lambda: a.figures()["sessions"] == 1)
    assert a.figures()["events_appended"] == b.figures()["events_appended"] == appended
    assert a.figures()["agent_processes"] == 0  # a ran the deleted session's agent


def _gone(registry: ClusterRegistry, sid: str) -> bool:
    try:
        registry.get(sid)
    except NotFound:
        return True
    return False


def test_a_dead_workers_turn_is_taken_over(tmp_path: Path, redis_server: RedisServer,
                                           redis_prefix: str) -> None:
    settings = settings_for(tmp_path, redis_server, redis_prefix)
    a, b = worker(settings, "1"), worker(settings, "2")
    try:
        sid = a.create().id
        b.get(sid).submit("$ echo orphan")  # b owns it
        rid = pending_approval(a, sid)
        # b dies: its heartbeat stops, nothing of it runs any more (as after SIGKILL).
        b.membership._stop.set()
        b.store._stop.set()  # type: ignore[attr-defined]
        end = turn_end(a, sid, 1)
        assert end["reason"] == "interrupted"
        resolved = [e.payload for e in events(a, sid) if e.kind == "approval_resolved"]
        assert [(p["request_id"], p["reason"]) for p in resolved] == [(rid, "cancelled")]
        # The next prompt claims it again, on a live worker.
        assert a.get(sid).submit("hello") == 2
        assert turn_end(a, sid, 2)["reason"] == "completed"
    finally:
        a.shutdown()
        b.shutdown()


def test_a_turn_begun_while_its_owner_was_dying_is_run_by_the_reaper(
        tmp_path: Path, redis_server: RedisServer, redis_prefix: str) -> None:
    settings = settings_for(tmp_path, redis_server, redis_prefix,
                            TETHER_LEASE_SECONDS=60, TETHER_HEARTBEAT_SECONDS=0.2)
    b = worker(settings, "2")
    try:
        sid = b.create().id
        # A worker that owns the session has just died: its heartbeat is still there.
        client, rec = b.store.client, f"{redis_prefix}:{{{sid}}}:rec"  # type: ignore[attr-defined]
        client.set(f"{redis_prefix}:w:ghost", 1)
        client.sadd(f"{redis_prefix}:workers", "ghost")
        client.sadd(f"{redis_prefix}:w:ghost:owned", sid)
        client.hset(rec, mapping={"owner": "ghost", "fence": 1})
        assert b.get(sid).submit("hello") == 1  # taken: its owner (alive, it seems) runs it
        time.sleep(0.5)
        assert not b.get(sid).owned
        client.delete(f"{redis_prefix}:w:ghost")  # the lease runs out
        end = turn_end(b, sid, 1)
        assert end["reason"] == "completed"  # the prompt was not lost: the reaper ran it
        session = b.get(sid)
        assert session.owned and session.agent_running
        assert client.hget(rec, "fence") == b"2"
    finally:
        b.shutdown()


def test_auto_approve_set_on_one_worker_settles_the_owners_approvals(workers: Workers) -> None:
    a, b = workers
    sid = a.create().id
    b.get(sid).update(auto_approve=True)
    assert a.get(sid).auto_approve and a.get(sid).to_dict()["auto_approve"]
    a.get(sid).submit("$ echo automatic")
    assert turn_end(b, sid, 1)["reason"] == "completed"
    resolved = [e.payload for e in events(b, sid) if e.kind == "approval_resolved"]
    assert [(p["reason"], p["by"]) for p in resolved] == [("auto", "auto-approve")]


def test_an_owner_that_forbids_auto_approve_asks_a_person(
        tmp_path: Path, redis_server: RedisServer, redis_prefix: str) -> None:
    allowing = worker(settings_for(tmp_path, redis_server, redis_prefix), "1")
    strict = worker(settings_for(tmp_path, redis_server, redis_prefix,
                                 TETHER_ALLOW_AUTO_APPROVE=0), "2")
    try:
        sid = allowing.create().id
        allowing.get(sid).update(auto_approve=True)
        strict.get(sid).submit("$ echo asked")  # strict owns it
        rid = pending_approval(allowing, sid)
        allowing.get(sid).prompts.answer_approval(rid, "deny")
        assert turn_end(allowing, sid, 1)["reason"] == "completed"
    finally:
        allowing.shutdown()
        strict.shutdown()


def test_a_conversation_whose_workspace_is_missing_is_not_resumed_elsewhere(
        tmp_path: Path, redis_server: RedisServer, redis_prefix: str) -> None:
    settings = settings_for(tmp_path, redis_server, redis_prefix)
    a, b = worker(settings, "1"), worker(settings, "2")
    try:
        session = a.create()
        sid = session.id
        a.get(sid).submit("hello")
        turn_end(b, sid, 1)
        a.shutdown()  # a stops: the session is free, its conversation to be resumed
        shutil.rmtree(session.workspace)  # a host that does not share the data dir
        assert b.get(sid).submit("hello again") == 2
        end = turn_end(b, sid, 2)
        assert end["reason"] == "error"
        errors = [e.payload["message"] for e in events(b, sid) if e.kind == "error"]
        assert len(errors) == 1 and "shared filesystem" in errors[0]
        assert not session.workspace.exists()  # not made afresh
    finally:
        b.shutdown()


def test_a_turn_end_that_meets_a_redis_blip_is_written_once_redis_answers(
        workers: Workers, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    a, b = workers
    sid = a.create().id
    store = a.store
    call = store.call  # type: ignore[attr-defined]
    failures = {"end_turn": 3}

    def flaky(function: str, *args: Any) -> Any:
        if failures.get(function):
            failures[function] -= 1
            raise redis.exceptions.ConnectionError("Redis went away for a moment")
        return call(function, *args)

    monkeypatch.setattr(store, "call", flaky)
    a.get(sid).submit("hello")
    assert turn_end(b, sid, 1)["reason"] == "completed"
    assert failures["end_turn"] == 0
    assert not b.get(sid).turn_active
    assert b.get(sid).submit("again") == 2


def test_a_session_in_a_project_folder_keeps_it_and_refuses_turns_once_it_is_gone(
        tmp_path: Path, redis_server: RedisServer, redis_prefix: str) -> None:
    """Issue 18: the cluster opens a session in a project folder as the one-process registry
    does; deleting the session leaves the folder; a folder removed meanwhile is an ``error``
    event and a refusal, never a turn in a folder made afresh."""
    from tether.errors import NotADirectory

    root = tmp_path / "projects"
    (root / "app").mkdir(parents=True)
    (root / "app" / "keep.txt").write_text("keep")
    settings = settings_for(tmp_path, redis_server, redis_prefix, data_dir=tmp_path / "data",
                            TETHER_PROJECT_ROOTS=str(root))
    a, b = worker(settings, "1"), worker(settings, "2")
    try:
        session = a.create(cwd=f"{root}/app/")
        sid = session.id
        folder = (root / "app").resolve()
        assert session.workspace == folder
        assert b.get(sid).to_dict()["cwd"] == str(folder) and b.get(sid).project
        assert [s.to_dict()["cwd"] for s in b.list()] == [str(folder)]
        b.get(sid).submit("hello")
        assert turn_end(a, sid, 1)["reason"] == "completed"
        shutil.rmtree(folder)
        with pytest.raises(NotADirectory, match="does not exist"):
            b.get(sid).submit("again")
        assert any(e.kind == "error" and str(folder) in e.payload["message"]
                   for e in events(a, sid))
        assert not folder.exists()
        folder.mkdir()
        (folder / "keep.txt").write_text("keep")
        a.delete(sid)
        assert (folder / "keep.txt").read_text() == "keep"
    finally:
        a.shutdown()
        b.shutdown()


def test_a_project_folder_gone_by_the_time_the_owner_starts_the_turn_is_not_made(
        tmp_path: Path, redis_server: RedisServer, redis_prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The owner's last look before a turn: a project folder removed after the prompt was
    accepted ends the turn with an ``error`` event; the folder is never made afresh."""
    from tether.cluster.sessions import ClusterSession

    root = tmp_path / "projects"
    (root / "app").mkdir(parents=True)
    settings = settings_for(tmp_path, redis_server, redis_prefix, data_dir=tmp_path / "data",
                            TETHER_PROJECT_ROOTS=str(root))
    a = worker(settings, "1")
    try:
        session = a.create(cwd=str(root / "app"))
        shutil.rmtree(session.workspace)
        monkeypatch.setattr(ClusterSession, "_check_folder", lambda self: None)  # raced past
        assert a.get(session.id).submit("hello") == 1
        assert turn_end(a, session.id, 1)["reason"] == "error"
        errors = [e.payload["message"] for e in events(a, session.id) if e.kind == "error"]
        assert len(errors) == 1 and "the session's folder" in errors[0]
        assert not session.workspace.exists()
    finally:
        a.shutdown()


def test_a_mode_set_on_a_non_owner_reaches_the_owners_live_agent(workers: Workers) -> None:
    """Issue 18 item 2: a PATCH on any worker; the owner's follower sees the ``mode`` event
    and sends set_permission_mode to its live agent (never a call between workers)."""
    a, b = workers
    sid = a.create(permission_mode="plan", by="desk").id
    assert b.get(sid).to_dict()["permission_mode"] == "plan"
    a.get(sid).submit("$ echo one")  # a owns it; its agent starts in plan mode
    rid = pending_approval(b, sid)
    plan = next(e.payload for e in events(b, sid) if e.kind == "approval_request")
    assert plan["tool_name"] == "ExitPlanMode" and "echo one" in plan["plan"]
    b.get(sid).prompts.answer_approval(rid, "deny", message="Keep planning", by="phone")
    turn_end(b, sid, 1)
    assert a.get(sid).agent_running  # idle between turns, still alive
    b.get(sid).update(permission_mode="default", by="phone")  # on the non-owner
    assert a.get(sid).permission_mode == "default"
    a.get(sid).submit("$ echo two")
    rid = pending_approval(b, sid)
    request = [e.payload for e in events(b, sid) if e.kind == "approval_request"][-1]
    assert request["tool_name"] == "Bash"  # the live agent left plan mode
    b.get(sid).prompts.answer_approval(rid, "allow", by="phone")
    assert turn_end(a, sid, 2)["reason"] == "completed"
    modes = [(e.payload["permission_mode"], e.payload["by"]) for e in events(a, sid)
             if e.kind == "mode"]
    assert modes == [("plan", "desk"), ("default", "phone")]


def test_plan_approved_on_the_cluster_is_the_records_mode(workers: Workers) -> None:
    a, b = workers
    sid = a.create(permission_mode="plan").id
    a.get(sid).submit("plan Do **this**")
    rid = pending_approval(b, sid)
    b.get(sid).prompts.answer_approval(rid, "allow", by="phone")
    assert turn_end(b, sid, 1)["reason"] == "completed"
    assert wait_until(lambda: b.get(sid).permission_mode == "default")
    assert [e.payload["by"] for e in events(b, sid) if e.kind == "mode"] == ["", "agent"]


class SavedLocal(LocalAgent):
    """The local agent under Claude's name, with conversations saved in ``home`` as Claude
    Code saves them (it takes ``--resume=<id>`` as its session id)."""

    name = "claude"

    def __init__(self, settings: Settings, home: Path) -> None:
        super().__init__(settings)
        self._home = home

    def conversations(self) -> ClaudeConversations:
        return ClaudeConversations(self._home / ".claude")


def test_a_continued_conversation_is_the_same_on_every_worker(
        tmp_path: Path, redis_server: RedisServer, redis_prefix: str) -> None:
    """Issue 18, item 4: the cluster's create takes ``resume`` as the one-process registry
    does: the history events before any turn, the record saying the agent session is
    started (so the owner resumes it), and nothing created for an unknown id."""
    from tests.fakes import conversations as saved

    root, home = tmp_path / "projects", tmp_path / "home"
    (root / "app").mkdir(parents=True)
    folder = (root / "app").resolve()
    conversation, _ = saved.save(home, folder, saved.exchange("earlier prompt", "earlier reply"))
    settings = settings_for(tmp_path, redis_server, redis_prefix, data_dir=tmp_path / "data",
                            TETHER_PROJECT_ROOTS=str(root))
    a, b = (ClusterRegistry(settings, agents=AgentCatalog([SavedLocal(settings, home)]),
                            worker=f"{settings.host_id}:{n}:0") for n in ("1", "2"))
    try:
        with pytest.raises(NotFound):
            a.create(agent="claude", cwd=str(folder),
                     resume="00000000-0000-4000-8000-000000000000")
        assert a.list() == [] and b.list() == []
        session = a.create(agent="claude", cwd=str(folder), resume=conversation)
        sid = session.id
        seen = b.get(sid).to_dict()
        assert seen["agent_session_id"] == conversation
        assert seen["title"] == "earlier prompt"
        history = [e for e in events(b, sid) if e.kind == "history"]
        assert [(e.payload["role"], e.payload["text"]) for e in history] == [
            ("user", "earlier prompt"), ("assistant", "earlier reply")]
        assert kinds(b, sid)[0] == "agent_session"
        with pytest.raises(ConversationOpen):  # on any worker: never two agents on one
            b.create(agent="claude", cwd=str(folder), resume=conversation)
        rec = a.redis_store.key(sid, "rec")
        assert a.redis_store.client.hget(rec, "agent_started") == b"1"
        b.get(sid).submit("hello")
        assert turn_end(a, sid, 1)["reason"] == "completed"
        reported = [e.payload["agent_session_id"] for e in events(a, sid)
                    if e.kind == "agent_session"]
        assert reported == [conversation, conversation]
    finally:
        a.shutdown()
        b.shutdown()
