"""Sessions and the registry: titles, update(), auto-approve, and the registry's inbox."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tether.agents.base import AgentCatalog
from tether.agents.catalog import LocalAgent
from tether.config import Settings
from tether.errors import AutoApproveDisabled, BadRequest, NotFound
from tether.sessions import MAX_TITLE_CHARS, Session, SessionRegistry, check_title


@pytest.fixture
def core(tmp_path: Path) -> Iterator[SessionRegistry]:
    config = Settings.from_env({"data_dir": tmp_path, "local_word_delay_seconds": 0,
                                "cancel_grace_seconds": 1})
    registry = SessionRegistry(config, agents=AgentCatalog([LocalAgent(config)]))
    yield registry
    registry.shutdown()


@pytest.fixture
def session(core: SessionRegistry) -> Session:
    return core.create(title="first")


def open_bash(session: Session, command: str = "ls -la") -> Any:
    request, _ = session.prompts.open_approval("Bash", {"command": command}, "toolu")
    return request


# -- titles ----------------------------------------------------------------------------------

def test_check_title_strips_and_accepts_up_to_the_maximum() -> None:
    assert check_title("  hello  ") == "hello"
    assert check_title("é" * MAX_TITLE_CHARS) == "é" * MAX_TITLE_CHARS
    assert check_title(" " + "x" * MAX_TITLE_CHARS + "\n") == "x" * MAX_TITLE_CHARS


@pytest.mark.parametrize("title, needle", [("", "empty"), ("   \t\n", "empty"),
                                           ("x" * (MAX_TITLE_CHARS + 1), "longer")])
def test_check_title_refuses_empty_and_too_long(title: str, needle: str) -> None:
    with pytest.raises(BadRequest, match=needle):
        check_title(title)


def test_create_uses_a_checked_title_or_the_default(core: SessionRegistry) -> None:
    assert core.create(title="  mine ").title == "mine"
    assert core.create().title == "local session"
    assert core.create(title="   ").title == "local session"
    with pytest.raises(BadRequest):
        core.create(title="x" * (MAX_TITLE_CHARS + 1))


# -- update ----------------------------------------------------------------------------------

def test_update_renames_with_a_stripped_title(session: Session) -> None:
    session.update(title="  renamed  ")
    assert session.title == "renamed"
    assert session.to_dict()["title"] == "renamed"


def test_update_with_nothing_changes_nothing(session: Session) -> None:
    session.update()
    session.update(title=None, auto_approve=None)
    assert session.title == "first" and session.auto_approve is False


@pytest.mark.parametrize("title", ["", "  ", "x" * (MAX_TITLE_CHARS + 1)])
def test_update_with_a_bad_title_changes_nothing(session: Session, title: str) -> None:
    with pytest.raises(BadRequest):
        session.update(title=title, auto_approve=True)
    assert session.title == "first"
    assert session.auto_approve is False


def test_update_switches_auto_approve_on_and_off(session: Session) -> None:
    assert session.to_dict()["auto_approve"] is False
    session.update(auto_approve=True)
    assert session.auto_approve is True and session.prompts.auto_approve is True
    assert session.to_dict()["auto_approve"] is True
    session.update(title="still on")
    assert session.auto_approve is True
    session.update(auto_approve=False)
    assert session.auto_approve is False and session.to_dict()["auto_approve"] is False


def no_auto_approve_registry(data_dir: Path, **settings: Any) -> SessionRegistry:
    config = Settings.from_env({"data_dir": data_dir, "local_word_delay_seconds": 0,
                                "cancel_grace_seconds": 1, **settings})
    return SessionRegistry(config, agents=AgentCatalog([LocalAgent(config)]))


def test_auto_approve_disabled_refuses_switching_it_on_and_changes_nothing(
        tmp_path: Path) -> None:
    core = no_auto_approve_registry(tmp_path, allow_auto_approve=False)
    try:
        session = core.create(title="first")
        with pytest.raises(AutoApproveDisabled, match="TETHER_ALLOW_AUTO_APPROVE=0"):
            session.update(title="renamed", auto_approve=True)
        assert session.title == "first" and session.auto_approve is False
        # Renaming still works, and "off" is what the session has: accepted.
        session.update(title="renamed", auto_approve=False)
        assert session.title == "renamed" and session.auto_approve is False
    finally:
        core.shutdown()


def test_a_session_restored_with_auto_approve_on_has_it_off_when_disabled(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    before = no_auto_approve_registry(tmp_path, store="sqlite")
    sid = before.create().id
    before.get(sid).update(auto_approve=True)
    before.shutdown()
    with caplog.at_level("WARNING", logger="tether.sessions"):
        after = no_auto_approve_registry(tmp_path, store="sqlite", allow_auto_approve=False)
    try:
        assert after.get(sid).auto_approve is False
        assert after.get(sid).prompts.auto_approve is False
        assert f"session {sid} had auto-approve on" in caplog.text
    finally:
        after.shutdown()
    # Saved off: allowing auto-approve again later does not switch it back on by itself.
    again = no_auto_approve_registry(tmp_path, store="sqlite")
    try:
        assert again.get(sid).auto_approve is False
    finally:
        again.shutdown()


def test_auto_approve_on_does_not_settle_pending_approvals(session: Session) -> None:
    request = open_bash(session)
    session.update(auto_approve=True)
    assert [p.request_id for p in session.prompts.pending()] == [request.request_id]
    assert session.to_dict()["pending"]["approvals"][0]["request_id"] == request.request_id


def test_auto_approve_lets_a_turn_run_without_anyone(session: Session) -> None:
    session.update(auto_approve=True)
    assert session.submit("$ echo auto") == 1
    assert session.wait_idle(30)
    events = session.log.read_after(0)
    kinds = [e.kind for e in events]
    assert kinds.index("approval_request") < kinds.index("approval_resolved")
    resolved = next(e for e in events if e.kind == "approval_resolved")
    assert resolved.payload["reason"] == "auto" and resolved.payload["by"] == "auto-approve"
    assert resolved.payload["decision"] == "allow"
    assert events[-1].kind == "turn_end" and events[-1].payload["reason"] == "completed"
    assert any("auto" in str(e.payload.get("content", "")) for e in events
               if e.kind == "tool_result")


# -- the registry's inbox --------------------------------------------------------------------

def test_inbox_shares_the_store_epoch_and_starts_empty(core: SessionRegistry) -> None:
    assert core.inbox.epoch == core.epoch
    assert core.inbox.snapshot() == {"revision": 0, "epoch": core.epoch, "entries": []}


def test_prompts_opening_and_settling_change_the_inbox(core: SessionRegistry,
                                                      session: Session) -> None:
    start = core.inbox.revision
    request = open_bash(session)
    assert core.inbox.revision > start
    entries = core.inbox.snapshot()["entries"]
    assert [(e["session_id"], e["session_title"], e["request_id"], e["summary"])
            for e in entries] == [(session.id, "first", request.request_id, "Bash: ls -la")]
    opened = core.inbox.revision
    session.prompts.answer_approval(request.request_id, "deny")
    assert core.inbox.revision > opened
    assert core.inbox.snapshot()["entries"] == []


def test_inbox_lists_every_sessions_requests(core: SessionRegistry, session: Session) -> None:
    other = core.create(title="second")
    open_bash(session, "a")
    other.prompts.open_clarify([{"question": "Why?", "options": []}], "t")
    entries = core.inbox.snapshot()["entries"]
    assert sorted((e["session_title"], e["kind"]) for e in entries) == [
        ("first", "approval"), ("second", "clarify")]


def test_rename_shows_in_the_next_snapshot(core: SessionRegistry, session: Session) -> None:
    open_bash(session)
    session.update(title="renamed")
    assert core.inbox.snapshot()["entries"][0]["session_title"] == "renamed"


def test_renaming_a_session_with_pending_entries_changes_the_inbox(
        core: SessionRegistry, session: Session) -> None:
    open_bash(session)
    before = core.inbox.revision
    session.update(title="renamed")
    assert core.inbox.revision > before


def test_delete_changes_the_inbox_and_drops_its_entries(core: SessionRegistry,
                                                        session: Session) -> None:
    other = core.create(title="kept")
    open_bash(session)
    kept = open_bash(other, "pwd")
    before = core.inbox.revision
    core.delete(session.id)
    assert core.inbox.revision > before
    entries = core.inbox.snapshot()["entries"]
    assert [e["request_id"] for e in entries] == [kept.request_id]


def test_delete_of_a_session_with_nothing_pending_still_changes_the_inbox(
        core: SessionRegistry, session: Session) -> None:
    before = core.inbox.revision
    core.delete(session.id)
    assert core.inbox.revision == before + 1


def test_delete_wakes_an_inbox_waiter(core: SessionRegistry, session: Session) -> None:
    open_bash(session)
    revision = core.inbox.revision
    box: list[bool] = []
    thread = threading.Thread(target=lambda: box.append(core.inbox.wait_for(revision, 30)),
                              daemon=True)
    thread.start()
    started = time.monotonic()
    core.delete(session.id)
    thread.join(10)
    assert not thread.is_alive() and box == [True]
    assert time.monotonic() - started < 5


def test_delete_of_an_unknown_session_changes_nothing(core: SessionRegistry) -> None:
    before = core.inbox.revision
    with pytest.raises(NotFound):
        core.delete("nope")
    assert core.inbox.revision == before


def test_delete_closes_the_log_and_forgets_the_session(core: SessionRegistry,
                                                       session: Session) -> None:
    core.delete(session.id)
    assert session.log.closed and session.state == "ended"
    with pytest.raises(NotFound):
        core.get(session.id)


def test_shutdown_closes_the_inbox_and_is_safe_twice(core: SessionRegistry,
                                                     session: Session) -> None:
    box: list[bool] = []
    thread = threading.Thread(
        target=lambda: box.append(core.inbox.wait_for(core.inbox.revision, 30)), daemon=True)
    thread.start()
    core.shutdown()
    thread.join(10)
    assert not thread.is_alive() and box == [True]
    assert core.inbox.closed and session.log.closed
    core.shutdown()
    assert core.inbox.closed
