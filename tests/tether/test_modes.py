"""Model and permission mode per session (issue 18 item 2), with the ``local`` agent: checks,
events, the live agent told mid-session, Plan mode's ExitPlanMode, persistence."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tether.agents.base import AgentCatalog, check_options, models
from tether.agents.catalog import ClaudeAgent, LocalAgent, mode_flags
from tether.agents.modes import CLAUDE_MODELS, models_from_initialize
from tether.config import Settings
from tether.errors import BadRequest, ModeNotAllowed
from tether.sessions import Session, SessionRegistry
from tether.stores.sqlite import SqliteStore


def settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings.from_env({"data_dir": tmp_path, "local_word_delay_seconds": 0,
                              "cancel_grace_seconds": 1, **extra})


@pytest.fixture
def core(tmp_path: Path) -> Iterator[SessionRegistry]:
    config = settings(tmp_path)
    registry = SessionRegistry(config, agents=AgentCatalog([LocalAgent(config)]))
    yield registry
    registry.shutdown()


def kinds(session: Session, *wanted: str) -> list[dict[str, Any]]:
    return [e.as_dict() for e in session.log.read_after(0) if e.kind in wanted]


def wait_for(session: Session, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in session.log.read_after(0):
            if predicate(event.as_dict()):
                return event.as_dict()
        time.sleep(0.02)
    raise AssertionError("no such event: " + repr([e.as_dict() for e in
                                                    session.log.read_after(0)]))


# -- the lists and the checks ---------------------------------------------------------------

def test_models_from_initialize_marks_the_default_and_keeps_names() -> None:
    listed = models_from_initialize([
        {"value": "default", "displayName": "Default (recommended)", "description": "d"},
        {"value": "sonnet", "displayName": "Sonnet"}, {"value": "sonnet"}, {"nope": 1}, 7])
    assert listed == [{"id": "default", "name": "Default (recommended)", "description": "d",
                       "default": True}, {"id": "sonnet", "name": "Sonnet"}]
    assert models_from_initialize([{"value": "x"}]) == [{"id": "x", "name": "x",
                                                         "default": True}]
    assert models_from_initialize(None) is None and models_from_initialize([]) is None


def test_claude_lists_static_models_until_a_process_answered(tmp_path: Path) -> None:
    agent = ClaudeAgent(settings(tmp_path))
    listed, source = models(agent)
    assert source == "static" and [m["id"] for m in listed] == [m["id"] for m in CLAUDE_MODELS]
    agent.known_models = [{"id": "default", "name": "D", "default": True}]
    assert models(agent) == ([{"id": "default", "name": "D", "default": True}], "agent")


def test_mode_flags_leave_defaults_out_and_use_the_equals_form() -> None:
    assert mode_flags("default", "default") == []
    assert mode_flags("sonnet", "plan") == ["--model=sonnet", "--permission-mode=plan"]


@pytest.mark.parametrize("model, mode, error, needle", [
    ("gpt", None, BadRequest, "local"),
    (None, "yolo", BadRequest, "default, acceptEdits, plan, bypassPermissions"),
    (None, "bypassPermissions", ModeNotAllowed, "TETHER_ALLOW_BYPASS=1"),
])
def test_check_options_names_the_allowed_values(tmp_path: Path, model: str | None,
                                                mode: str | None, error: type[Exception],
                                                needle: str) -> None:
    with pytest.raises(error, match=needle):
        check_options(LocalAgent(settings(tmp_path)), model, mode, allow_bypass=False)


def test_bypass_is_allowed_with_the_setting(tmp_path: Path) -> None:
    check_options(LocalAgent(settings(tmp_path)), None, "bypassPermissions", allow_bypass=True)


# -- sessions -------------------------------------------------------------------------------

def test_create_with_a_mode_logs_it_and_the_session_shows_it(core: SessionRegistry) -> None:
    plain = core.create()
    assert plain.to_dict()["model"] == "local"
    assert plain.to_dict()["permission_mode"] == "default"
    assert kinds(plain, "mode", "model") == []
    session = core.create(permission_mode="plan", by="tester")
    assert session.to_dict()["permission_mode"] == "plan"
    assert [(e["permission_mode"], e["by"]) for e in kinds(session, "mode")] == [("plan",
                                                                                  "tester")]


def test_create_refuses_bypass_without_the_setting(core: SessionRegistry) -> None:
    with pytest.raises(ModeNotAllowed):
        core.create(permission_mode="bypassPermissions")
    assert core.list() == []


def test_update_logs_a_change_once_and_names_the_client(core: SessionRegistry) -> None:
    session = core.create()
    session.update(permission_mode="plan", by="phone")
    session.update(permission_mode="plan", by="phone")  # no change: no event
    session.update(permission_mode="default", by="desktop")
    assert [(e["permission_mode"], e["by"]) for e in kinds(session, "mode")] == [
        ("plan", "phone"), ("default", "desktop")]
    with pytest.raises(BadRequest, match="acceptEdits"):
        session.update(permission_mode="manual")
    assert session.permission_mode == "default"


def test_plan_mode_presents_a_plan_and_approving_it_leaves_plan_mode(
        core: SessionRegistry) -> None:
    session = core.create(permission_mode="plan")
    session.submit("$ echo planned")
    request = wait_for(session, lambda e: e["kind"] == "approval_request")
    assert request["tool_name"] == "ExitPlanMode"
    assert request["input"] == {}  # as Claude Code sends it: the plan is in the tool_use
    assert "`echo planned`" in request["plan"]
    session.prompts.answer_approval(request["request_id"], "allow", by="tester")
    mode = wait_for(session, lambda e: e["kind"] == "mode" and e["by"] == "agent")
    assert mode["permission_mode"] == "default"
    command = wait_for(session, lambda e: e["kind"] == "approval_request"
                       and e["tool_name"] == "Bash")
    session.prompts.answer_approval(command["request_id"], "allow", by="tester")
    assert session.wait_idle(10)
    assert session.permission_mode == "default"
    assert any("planned" in e["content"] for e in kinds(session, "tool_result"))


def test_keep_planning_runs_nothing(core: SessionRegistry) -> None:
    session = core.create(permission_mode="plan")
    session.submit("$ touch should-not-exist")
    request = wait_for(session, lambda e: e["kind"] == "approval_request")
    session.prompts.answer_approval(request["request_id"], "deny", message="Keep planning", by="t")
    assert session.wait_idle(10)
    assert not (session.workspace / "should-not-exist").exists()
    assert session.permission_mode == "plan"
    assert [e["by"] for e in kinds(session, "mode")] == [""]  # only the creation's


def test_a_mode_change_reaches_the_live_agent_between_turns(core: SessionRegistry) -> None:
    session = core.create()
    session.submit("help")
    assert session.wait_idle(10) and session.agent_running
    session.update(permission_mode="plan", by="tester")
    session.submit("$ echo x")  # the same process, now in plan mode
    request = wait_for(session, lambda e: e["kind"] == "approval_request")
    assert request["tool_name"] == "ExitPlanMode"
    # The agent's own status after Tether's set_permission_mode is not an agent change.
    assert [e["by"] for e in kinds(session, "mode")] == ["tester"]
    session.cancel()
    assert session.wait_idle(10)


def test_a_mode_change_during_a_turn_reaches_the_agent(core: SessionRegistry) -> None:
    session = core.create()
    session.submit("$ echo one")
    first = wait_for(session, lambda e: e["kind"] == "approval_request")
    session.update(permission_mode="plan", by="tester")  # mid-turn
    session.prompts.answer_approval(first["request_id"], "allow", by="tester")
    assert session.wait_idle(10)
    session.submit("$ echo two")
    request = wait_for(session, lambda e: e["kind"] == "approval_request"
                       and e["request_id"] != first["request_id"])
    assert request["tool_name"] == "ExitPlanMode"
    session.cancel()
    assert session.wait_idle(10)


def test_bypass_runs_commands_unasked_when_allowed(tmp_path: Path) -> None:
    config = settings(tmp_path, allow_bypass=True)
    core = SessionRegistry(config, agents=AgentCatalog([LocalAgent(config)]))
    try:
        session = core.create(permission_mode="bypassPermissions")
        session.submit("$ echo unasked")
        assert session.wait_idle(10)
        assert kinds(session, "approval_request") == []
        assert any("unasked" in e["content"] for e in kinds(session, "tool_result"))
    finally:
        core.shutdown()


def test_model_and_mode_survive_a_restart_with_sqlite(tmp_path: Path) -> None:
    config = settings(tmp_path, store="sqlite")
    core = SessionRegistry(config, agents=AgentCatalog([LocalAgent(config)]))
    session = core.create(permission_mode="plan")
    sid = session.id
    core.shutdown()
    again = SessionRegistry(config, agents=AgentCatalog([LocalAgent(config)]))
    try:
        restored = again.get(sid)
        assert restored.permission_mode == "plan" and restored.model == "local"
    finally:
        again.shutdown()


def test_a_bypass_session_restored_without_the_setting_is_back_to_default(
        tmp_path: Path) -> None:
    allowed = settings(tmp_path, store="sqlite", allow_bypass=True)
    core = SessionRegistry(allowed, agents=AgentCatalog([LocalAgent(allowed)]))
    sid = core.create(permission_mode="bypassPermissions").id
    core.shutdown()
    plain = settings(tmp_path, store="sqlite")
    again = SessionRegistry(plain, agents=AgentCatalog([LocalAgent(plain)]))
    try:
        assert again.get(sid).permission_mode == "default"
    finally:
        again.shutdown()


def test_sqlite_schema_3_file_migrates_to_4(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    store = SqliteStore(path)
    store.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=3")
    db.execute("CREATE TABLE s2 AS SELECT id, agent, title, created_at, workspace, "
               "auto_approve, agent_session_id, turns, title_set, base_commit FROM sessions")
    db.execute("DROP TABLE sessions")
    db.execute("ALTER TABLE s2 RENAME TO sessions")
    db.execute("INSERT INTO sessions VALUES ('a', 'local', 't', 1.0, '/w', 0, '', 0, 1, '')")
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        (record,) = store.sessions()
        assert (record.model, record.permission_mode) == ("", "")
    finally:
        store.close()


class LaxLocal(LocalAgent):
    """Offers a mode the local agent refuses (``invalid_mode``, as Claude Code answers)."""

    permission_modes = ("default", "plan", "weird")


def test_a_mode_the_agent_refuses_is_an_error_and_the_mode_goes_back(tmp_path: Path) -> None:
    config = settings(tmp_path, agent_idle_seconds=60)
    core = SessionRegistry(config, agents=AgentCatalog([LaxLocal(config)]))
    try:
        session = core.create()
        session.submit("help")
        assert session.wait_idle(10) and session.agent_running
        session.update(permission_mode="weird", by="tester")
        assert session.permission_mode == "weird"
        session.submit("help")  # its pump reads the refusal
        assert session.wait_idle(10)
        errors = [e["message"] for e in kinds(session, "error")]
        assert any("refused the permission mode change" in m and "must be one of" in m
                   for m in errors), errors
        assert [(e["permission_mode"], e["by"]) for e in kinds(session, "mode")] == [
            ("weird", "tester"), ("default", "agent")]
        assert session.permission_mode == "default"
    finally:
        core.shutdown()


class LaunchOnlyPlan(LocalAgent):
    """As Claude Code with bypassPermissions: ``plan`` only at launch."""

    launch_only_modes = frozenset({"plan"})


def test_a_launch_only_mode_between_turns_starts_a_new_process(tmp_path: Path) -> None:
    config = settings(tmp_path, agent_idle_seconds=60)
    core = SessionRegistry(config, agents=AgentCatalog([LaunchOnlyPlan(config)]))
    try:
        session = core.create()
        session.submit("help")
        assert session.wait_idle(10)
        first = session._host._process
        assert first is not None and first.alive
        session.update(permission_mode="plan", by="tester")
        assert not session.agent_running  # the idle process is gone
        session.submit("$ echo resumed")
        request = wait_for(session, lambda e: e["kind"] == "approval_request")
        assert request["tool_name"] == "ExitPlanMode"  # started with --permission-mode=plan
        assert session._host._process is not first
        session.cancel()
        assert session.wait_idle(10)
    finally:
        core.shutdown()


def test_the_inbox_says_a_plan_is_ready(core: SessionRegistry) -> None:
    session = core.create(permission_mode="plan")
    session.submit("plan ## Refactor the parser\n\nthen test it")
    wait_for(session, lambda e: e["kind"] == "approval_request")
    (entry,) = core.inbox.snapshot()["entries"]
    assert entry["summary"] == "Plan ready: Refactor the parser"
    session.cancel()
    assert session.wait_idle(10)


def test_a_restart_takes_the_mode_from_the_log_when_the_record_lags(tmp_path: Path) -> None:
    """A server that died mid-turn after the agent left Plan mode saved no record since."""
    config = settings(tmp_path, store="sqlite")
    core = SessionRegistry(config, agents=AgentCatalog([LocalAgent(config)]))
    session = core.create(permission_mode="plan")
    sid = session.id
    session.log.append("mode", {"permission_mode": "default", "by": "agent"})  # record: plan
    core.shutdown()
    again = SessionRegistry(config, agents=AgentCatalog([LocalAgent(config)]))
    try:
        assert again.get(sid).permission_mode == "default"
    finally:
        again.shutdown()
