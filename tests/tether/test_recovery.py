"""Restarts at the registry level, on plain threads: what a durable store brings back, how a
turn a dead server left open is closed, and what a stopping server refuses.

A "restart" here is one registry shut down (or its store closed, as a dead process leaves it)
and a new registry built on the same ``TETHER_DATA_DIR``. The real thing, gunicorn stopped or
SIGKILLed and started again, is tests/e2e/test_restart.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tether.agents.base import AgentCatalog
from tether.agents.catalog import LocalAgent
from tether.config import Settings
from tether.errors import BadRequest, NotFound, ShuttingDown
from tether.prompts import PromptRegistry
from tether.recovery import RESTART_MESSAGE, close_interrupted, scan
from tether.sessions import Session, SessionRegistry
from tether.stores.base import SessionRecord
from tether.stores.memory import MemoryEventLog, MemoryStore
from tether.stores.sqlite import DB_NAME, SqliteStore

QUESTION = {"question": "Deploy now?", "header": "Deploy", "multiSelect": False,
            "options": [{"label": "yes", "description": ""}, {"label": "no", "description": ""}]}


class RecordingAgent:
    """The local agent, remembering every argv it was started with."""

    def __init__(self, inner: LocalAgent) -> None:
        self._inner = inner
        self.name = inner.name
        self.description = inner.description
        self.calls: list[list[str]] = []

    def unavailable(self) -> str | None:
        return None

    def argv(self, agent_session_id: str, resume: bool) -> list[str]:
        argv = self._inner.argv(agent_session_id, resume)
        self.calls.append(argv)
        return argv

    def env(self) -> dict[str, str]:
        return self._inner.env()


class Server:
    """Registries on one data dir, one after the other, as restarts of one server."""

    def __init__(self, data_dir: Path, store: str = "sqlite") -> None:
        self.settings = Settings.from_env({"data_dir": data_dir, "store": store,
                                           "local_word_delay_seconds": 0,
                                           "cancel_grace_seconds": 1})
        self.agent = RecordingAgent(LocalAgent(self.settings))
        self.core: SessionRegistry | None = None

    def start(self) -> SessionRegistry:
        self.agent.calls.clear()
        self.core = SessionRegistry(self.settings, agents=AgentCatalog([self.agent]))
        return self.core

    def restart(self) -> SessionRegistry:
        assert self.core is not None
        self.core.shutdown()
        return self.start()

    def close(self) -> None:
        if self.core is not None:
            self.core.shutdown()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "data")
    yield server
    server.close()


def run(session: Session, text: str) -> int:
    turn = session.submit(text)
    assert session.wait_idle(30), "the turn did not end"
    return turn


def events(session: Session) -> list[dict[str, Any]]:
    return [e.as_dict() for e in session.log.read_after(0)]


def wait_pending(session: Session) -> None:
    deadline = time.monotonic() + 10
    while not session.prompts.pending():
        assert time.monotonic() < deadline, "nothing pending"
        session.log.wait_for(session.log.last_id, 0.2)


def turn_ends(session: Session) -> list[dict[str, Any]]:
    return [e for e in events(session) if e["kind"] == "turn_end"]


def flags(argv: list[str]) -> list[str]:
    return [a for a in argv if a.startswith(("--resume=", "--session-id="))]


def write_dead_server_log(data_dir: Path) -> tuple[str, int]:
    """A store as a server that died mid-turn leaves it: turn 1 started, the agent reported
    its session, one approval answered, one approval and one question still open. Returns
    the session id and the last event id."""
    store = SqliteStore(data_dir / DB_NAME)
    workspace = data_dir / "sessions" / "dead"
    store.save_session(SessionRecord("dead", "local", "left open", 1763900000.0,
                                      str(workspace), False, "agent-1", 0))
    log = store.create_log("dead")
    log.append("user", {"turn": 1, "text": "$ ls"})
    log.append("agent_session", {"agent": "local", "agent_session_id": "agent-1",
                                 "model": "local", "cwd": str(workspace)})
    log.append("approval_request", {"request_id": "r0", "tool_name": "Bash",
                                    "input": {"command": "ls"}, "tool_use_id": "t0",
                                    "expires_at": None})
    log.append("approval_resolved", {"request_id": "r0", "reason": "user", "by": "tab",
                                     "decision": "allow", "message": None,
                                     "updated_input": None, "updated_permissions": None})
    log.append("approval_request", {"request_id": "r1", "tool_name": "Bash",
                                    "input": {"command": "rm -rf build"}, "tool_use_id": "t1",
                                    "expires_at": None})
    log.append("clarify_request", {"request_id": "r2", "questions": [QUESTION],
                                   "tool_use_id": "t2", "expires_at": None})
    last = log.last_id
    store.close()  # only what was committed: a SIGKILL leaves the same rows
    return "dead", last


# -- what comes back -------------------------------------------------------------------------

def test_sessions_events_and_epoch_come_back_after_a_graceful_restart(server: Server) -> None:
    core = server.start()
    first, second = core.create(title="first"), core.create(title="second")
    run(first, "hello")
    run(first, "hello again")
    first.update(auto_approve=True)
    second.update(title="renamed")
    before = {s.id: (s.to_dict(), [e.data for e in s.log.read_after(0)]) for s in core.list()}
    order = [s.id for s in core.list()]
    assert set(order) == {first.id, second.id}
    epoch = core.epoch
    agent_session_id = next(e["agent_session_id"] for e in events(first)
                            if e["kind"] == "agent_session")

    core = server.restart()

    assert core.epoch == epoch
    assert [s.id for s in core.list()] == order  # newest first, as before
    for session in core.list():
        object_before, data_before = before[session.id]
        assert session.to_dict() == object_before
        assert [e.data for e in session.log.read_after(0)] == data_before
    restored = core.get(first.id)
    assert restored.auto_approve is True and restored.turn == 2
    assert restored.agent_session_id == agent_session_id
    assert core.get(second.id).title == "renamed"

    # The next prompt is turn 3, with the next ids, and the agent resumes its session.
    last = restored.log.last_id
    assert run(restored, "hello") == 3
    new = restored.log.read_after(last)
    assert new[0].id == last + 1 and new[0].payload == {"turn": 3, "text": "hello"}
    assert turn_ends(restored)[-1] == {**turn_ends(restored)[-1], "turn": 3,
                                       "reason": "completed"}
    assert [flags(argv) for argv in server.agent.calls] == [[f"--resume={agent_session_id}"]]


def test_a_session_whose_agent_never_started_starts_it_with_the_same_id(server: Server) -> None:
    core = server.start()
    session = core.create()
    agent_session_id = session.agent_session_id
    core = server.restart()
    assert run(core.get(session.id), "hello") == 1
    assert [flags(argv) for argv in server.agent.calls] == [[f"--session-id={agent_session_id}"]]


def test_a_turn_running_at_shutdown_ends_once_as_interrupted(server: Server) -> None:
    core = server.start()
    session = core.create()
    session.submit("$ sleep 30")
    wait_pending(session)
    core = server.restart()  # graceful: the old server wrote the ends itself

    restored = core.get(session.id)
    log = events(restored)
    [resolved] = [e for e in log if e["kind"] == "approval_resolved"]
    assert resolved["reason"] == "cancelled" and resolved["decision"] == "deny"
    assert log[-1]["kind"] == "turn_end"
    assert turn_ends(restored) == [{**log[-1], "turn": 1, "reason": "interrupted"}]
    assert restored.turn == 1
    last = restored.log.last_id
    core = server.restart()  # nothing left to close: nothing appended
    assert core.get(session.id).log.last_id == last
    assert core.get(session.id).state == "idle"


def test_a_turn_left_open_by_a_dead_server_is_closed_with_the_next_ids(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    session_id, last = write_dead_server_log(data_dir)
    server = Server(data_dir)
    try:
        core = server.start()
        session = core.get(session_id)
        appended = events(session)[last:]
        assert [e["id"] for e in appended] == [last + 1, last + 2, last + 3]
        strip = [{k: v for k, v in e.items() if k not in ("id", "session_id", "ts")}
                 for e in appended]
        assert strip == [
            {"kind": "approval_resolved", "request_id": "r1", "reason": "cancelled", "by": None,
             "decision": "deny", "message": RESTART_MESSAGE, "updated_input": None,
             "updated_permissions": None},
            {"kind": "clarify_resolved", "request_id": "r2", "reason": "cancelled", "by": None,
             "answers": {}, "message": RESTART_MESSAGE},
            {"kind": "turn_end", "turn": 1, "reason": "interrupted"},
        ]
        assert session.state == "idle" and session.prompts.pending() == []
        assert session.to_dict()["turn"] == 1 and session.title == "left open"
        assert core.inbox.snapshot()["entries"] == []

        # The session takes a new prompt, turn 2, and the agent resumes its session.
        assert run(session, "hello") == 2
        assert turn_ends(session)[-1]["reason"] == "completed"
        assert [flags(argv) for argv in server.agent.calls] == [["--resume=agent-1"]]
        assert [e["id"] for e in events(session)] == list(range(1, session.log.last_id + 1))

        core = server.restart()  # and the record now knows turn 2
        assert core.get(session_id).turn == 2
        assert core.store.sessions()[0].turns == 2
    finally:
        server.close()


def test_recovery_writes_what_a_cancel_writes() -> None:
    # The payloads of a restart's cancellations match PromptRegistry's own, key for key.
    live_log = MemoryEventLog("s")
    registry = PromptRegistry(live_log, 0)
    registry.open_approval("Bash", {"command": "ls"}, "t1", description="List")
    registry.open_clarify([QUESTION], "t2")
    assert registry.cancel_all(RESTART_MESSAGE) == 2
    live = live_log.read_after(0)

    log = MemoryEventLog("s")
    for event in live[:2]:  # the two request events, as a dead server left them
        log.append(event.kind, event.payload)
    state = scan(log)
    assert state.pending == [("approval", live[0].payload["request_id"]),
                             ("clarify", live[1].payload["request_id"])]
    assert close_interrupted(log, state) == 2
    recovered = log.read_after(2)
    assert [(e.kind, e.payload) for e in recovered] == [(e.kind, e.payload) for e in live[2:]]


def test_scan_reads_a_long_log_page_by_page() -> None:
    log = MemoryEventLog("s")
    for turn in range(1, 4):
        log.append("user", {"turn": turn, "text": "x"})
        for _ in range(1500):
            log.append("text_delta", {"text": "w", "index": 0})
        if turn < 3:
            log.append("turn_end", {"turn": turn, "reason": "completed"})
    state = scan(log)
    assert (state.turns, state.open_turn, state.pending) == (3, 3, [])
    assert close_interrupted(log, state) == 1
    assert log.read_after(log.last_id - 1)[0].payload == {"turn": 3, "reason": "interrupted"}


def test_a_deleted_session_does_not_come_back(server: Server) -> None:
    core = server.start()
    kept, deleted = core.create(title="kept"), core.create(title="deleted")
    run(deleted, "hello")
    core.delete(deleted.id)
    core = server.restart()
    assert [s.id for s in core.list()] == [kept.id]
    with pytest.raises(NotFound):
        core.get(deleted.id)
    assert [r.id for r in core.store.sessions()] == [kept.id]


def test_a_session_of_an_agent_no_longer_offered_is_kept_but_not_served(server: Server,
                                                                          tmp_path: Path) -> None:
    core = server.start()
    session = core.create()
    run(session, "hello")
    core.shutdown()
    server.core = SessionRegistry(server.settings, agents=AgentCatalog([]))
    assert server.core.list() == []
    assert [r.id for r in server.core.store.sessions()] == [session.id]
    core = server.restart()  # offered again: back with its log
    assert core.get(session.id).log.last_id == session.log.last_id


def test_the_memory_store_forgets_everything(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", store="memory")
    try:
        core = server.start()
        assert isinstance(core.store, MemoryStore)
        core.create()
        epoch = core.epoch
        core = server.restart()
        assert core.list() == [] and core.epoch != epoch
    finally:
        server.close()


# -- shutting down ---------------------------------------------------------------------------

def test_a_stopping_server_refuses_new_work_with_shutting_down(server: Server) -> None:
    core = server.start()
    session = core.create()
    core.shutdown()
    with pytest.raises(ShuttingDown, match="shutting down"):
        session.submit("hello")
    with pytest.raises(ShuttingDown):
        core.create()
    with pytest.raises(ShuttingDown):
        core.delete(session.id)
    with pytest.raises(ShuttingDown):
        session.update(title="too late")
    assert core.get(session.id) is session
    core.shutdown()  # twice is fine


def test_a_deleted_session_still_says_deleted(server: Server) -> None:
    core = server.start()
    session = core.create()
    core.delete(session.id)
    with pytest.raises(BadRequest, match="deleted"):
        session.submit("hello")


def test_inbox_revisions_do_not_restart_when_the_epoch_survives(server: Server) -> None:
    # A client's old revision must never name the new server's snapshot (same epoch).
    core = server.start()
    session = core.create()
    session.submit("$ sleep 30")
    wait_pending(session)
    before = core.inbox.snapshot()
    assert len(before["entries"]) == 1
    core = server.restart()
    after = core.inbox.snapshot()
    assert after["epoch"] == before["epoch"]
    assert after["entries"] == [] and after["revision"] > before["revision"]
    assert core.inbox.wait_for(before["revision"], timeout=0) is True


def test_a_session_that_cannot_be_restored_does_not_stop_the_others(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    store = SqliteStore(data_dir / DB_NAME)
    # Its own workspace (…/sessions/<id>) cannot be made: a file stands where its parent
    # should be. (A project folder is never made, so one that is missing restores: issue 18.)
    store.save_session(SessionRecord("broken", "local", "broken", 1.0,
                                     str(blocker / "sessions" / "broken"), False, "a", 0))
    store.save_session(SessionRecord("fine", "local", "fine", 2.0,
                                     str(data_dir / "sessions" / "fine"), False, "b", 0))
    store.close()
    server = Server(data_dir)
    try:
        core = server.start()
        assert [s.id for s in core.list()] == ["fine"]
        assert [r.id for r in core.store.sessions()] == ["broken", "fine"]  # kept
        assert run(core.get("fine"), "hello") == 1
    finally:
        server.close()
