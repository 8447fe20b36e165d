"""The approval and clarify registry: first answer wins, timeouts, cancel, dedupe."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from tether.errors import AlreadyResolved, BadRequest, NotFound
from tether.prompts import PromptRegistry
from tether.stores.memory import MemoryEventLog

QUESTION = {"question": "Which database?", "header": "Database", "multiSelect": False,
            "options": [{"label": "PostgreSQL", "description": "Relational"},
                        {"label": "SQLite", "description": "Embedded"}]}


def kinds(log: MemoryEventLog) -> list[str]:
    return [e.kind for e in log.read_after(0)]


@pytest.fixture
def log() -> MemoryEventLog:
    return MemoryEventLog("s")


@pytest.fixture
def registry(log: MemoryEventLog) -> PromptRegistry:
    return PromptRegistry(log, timeout_seconds=600)


def test_open_approval_appends_request_event_with_expiry(log, registry) -> None:
    request, created = registry.open_approval("Bash", {"command": "ls"}, "toolu_1",
                                              description="List")
    assert created
    event = log.read_after(0)[0]
    assert event.kind == "approval_request"
    assert event.payload["request_id"] == request.request_id
    assert event.payload["tool_name"] == "Bash"
    assert event.payload["input"] == {"command": "ls"}
    assert event.payload["tool_use_id"] == "toolu_1"
    assert event.payload["description"] == "List"
    assert event.payload["expires_at"] == pytest.approx(event.ts + 600, abs=0.01)
    assert [p.request_id for p in registry.pending()] == [request.request_id]


def test_first_answer_wins_and_second_is_already_resolved(log, registry) -> None:
    request, _ = registry.open_approval("Bash", {"command": "ls"}, "t")
    registry.answer_approval(request.request_id, "allow", by="phone")
    with pytest.raises(AlreadyResolved, match="answered by phone"):
        registry.answer_approval(request.request_id, "deny", by="laptop")
    assert kinds(log) == ["approval_request", "approval_resolved"]
    resolved = log.read_after(1)[0].payload
    assert resolved["decision"] == "allow" and resolved["by"] == "phone"
    assert resolved["reason"] == "user"
    assert registry.wait(request).decision == "allow"
    assert registry.pending() == []


def test_concurrent_answers_resolve_exactly_once(log, registry) -> None:
    request, _ = registry.open_approval("Bash", {"command": "ls"}, "t")
    outcomes: list[str] = []
    barrier = threading.Barrier(50)

    def answer(i: int) -> None:
        barrier.wait()
        try:
            registry.answer_approval(request.request_id, "allow", by=f"c{i}")
            outcomes.append("ok")
        except AlreadyResolved:
            outcomes.append("already")

    threads = [threading.Thread(target=answer, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["already"] * 49 + ["ok"]
    assert kinds(log).count("approval_resolved") == 1


def test_unknown_request_and_wrong_kind_are_not_found(registry) -> None:
    with pytest.raises(NotFound):
        registry.answer_approval("nope", "allow")
    clarify, _ = registry.open_clarify([QUESTION], "t")
    with pytest.raises(NotFound):
        registry.answer_approval(clarify.request_id, "allow")


def test_bad_decision_is_bad_request(registry) -> None:
    request, _ = registry.open_approval("Bash", {"command": "ls"}, "t")
    with pytest.raises(BadRequest):
        registry.answer_approval(request.request_id, "maybe")


def test_timeout_resolves_as_deny_with_reason_timeout(log) -> None:
    registry = PromptRegistry(log, timeout_seconds=0.05)
    request, _ = registry.open_approval("Bash", {"command": "ls"}, "t")
    resolution = registry.wait(request)
    assert (resolution.decision, resolution.reason) == ("deny", "timeout")
    resolved = log.read_after(0)[-1]
    assert resolved.kind == "approval_resolved" and resolved.payload["reason"] == "timeout"
    with pytest.raises(AlreadyResolved):
        registry.answer_approval(request.request_id, "allow")


def test_clarify_timeout_is_unanswered(log) -> None:
    registry = PromptRegistry(log, timeout_seconds=0.05)
    request, _ = registry.open_clarify([QUESTION], "t")
    resolution = registry.wait(request)
    assert resolution.reason == "timeout" and not resolution.answers
    assert log.read_after(0)[-1].payload["answers"] == {}


def test_zero_timeout_waits_forever(log) -> None:
    registry = PromptRegistry(log, timeout_seconds=0)
    request, _ = registry.open_approval("Bash", {"command": "ls"}, "t")
    assert log.read_after(0)[0].payload["expires_at"] is None
    threading.Timer(0.1, registry.answer_approval, (request.request_id, "deny")).start()
    assert registry.wait(request).decision == "deny"


def test_cancel_all_resolves_open_requests_as_cancelled(log, registry) -> None:
    first, _ = registry.open_approval("Bash", {"command": "ls"}, "t1")
    second, _ = registry.open_clarify([QUESTION], "t2")
    assert registry.cancel_all() == 2
    assert registry.wait(first).reason == "cancelled"
    assert registry.wait(second).reason == "cancelled"
    assert [e.payload["reason"] for e in log.read_after(2)] == ["cancelled", "cancelled"]
    assert registry.cancel_all() == 0


def test_identical_pending_requests_are_not_stacked(log, registry) -> None:
    first, created_first = registry.open_approval("Bash", {"command": "ls"}, "t1")
    again, created_again = registry.open_approval("Bash", {"command": "ls"}, "t2")
    other, created_other = registry.open_approval("Bash", {"command": "pwd"}, "t3")
    assert created_first and not created_again and created_other
    assert again is first and other is not first
    assert kinds(log) == ["approval_request", "approval_request"]
    registry.answer_approval(first.request_id, "allow")
    # Once settled, the same request may be asked again.
    _, created = registry.open_approval("Bash", {"command": "ls"}, "t4")
    assert created


def test_clarify_round_trip_normalizes_questions(log, registry) -> None:
    request, _ = registry.open_clarify([QUESTION], "t")
    event = log.read_after(0)[0]
    assert event.kind == "clarify_request"
    assert event.payload["questions"] == [{
        "question": "Which database?", "header": "Database", "multi_select": False,
        "options": [{"label": "PostgreSQL", "description": "Relational"},
                    {"label": "SQLite", "description": "Embedded"}]}]
    registry.answer_clarify(request.request_id, {"Which database?": "SQLite"}, by="tab")
    resolution = registry.wait(request)
    assert resolution.answers == {"Which database?": "SQLite"}
    assert log.read_after(1)[0].payload["answers"] == {"Which database?": "SQLite"}


def test_clarify_answer_for_unasked_question_is_bad_request(registry) -> None:
    request, _ = registry.open_clarify([QUESTION], "t")
    with pytest.raises(BadRequest, match="not asked"):
        registry.answer_clarify(request.request_id, {"Something else?": "x"})
    assert registry.pending()


def test_answer_beats_a_simultaneous_timeout_only_once(log) -> None:
    registry = PromptRegistry(log, timeout_seconds=0.01)
    for _ in range(50):
        request, _ = registry.open_approval("Bash", {"command": "ls"}, "t")
        try:
            registry.answer_approval(request.request_id, "allow")
        except AlreadyResolved:
            pass
        registry.wait(request)
    assert kinds(log).count("approval_resolved") == 50


# -- auto-approve (docs/protocol.md, REST additions) -----------------------------------------

def test_auto_approve_is_off_by_default(registry) -> None:
    assert registry.auto_approve is False
    registry.open_approval("Bash", {"command": "ls"}, "t")
    assert len(registry.pending()) == 1


def test_auto_approve_allows_at_once_and_logs_request_then_resolved(log, registry) -> None:
    registry.auto_approve = True
    request, created = registry.open_approval("Bash", {"command": "rm -rf build"}, "t")
    assert created
    assert request.done.is_set()
    assert registry.pending() == []
    assert kinds(log) == ["approval_request", "approval_resolved"]
    opened, resolved = log.read_after(0)
    assert opened.payload["request_id"] == resolved.payload["request_id"] == request.request_id
    assert resolved.payload == {"request_id": request.request_id, "reason": "auto",
                                "by": "auto-approve", "decision": "allow", "message": None,
                                "updated_input": None, "updated_permissions": None}
    resolution = registry.wait(request)  # returns at once
    assert (resolution.decision, resolution.reason, resolution.by) == ("allow", "auto",
                                                                       "auto-approve")


def test_auto_approved_request_cannot_be_answered_again(registry) -> None:
    registry.auto_approve = True
    request, _ = registry.open_approval("Bash", {"command": "ls"}, "t")
    with pytest.raises(AlreadyResolved, match="answered by auto-approve"):
        registry.answer_approval(request.request_id, "deny", by="phone")
    assert registry.cancel(request.request_id) is False


def test_auto_approve_never_answers_clarify(log, registry) -> None:
    registry.auto_approve = True
    request, created = registry.open_clarify([QUESTION], "t")
    assert created and not request.done.is_set()
    assert [p.request_id for p in registry.pending()] == [request.request_id]
    assert kinds(log) == ["clarify_request"]


def test_auto_approve_does_not_stack_dedupe_on_settled_requests(log, registry) -> None:
    registry.auto_approve = True
    first, _ = registry.open_approval("Bash", {"command": "ls"}, "t1")
    again, created = registry.open_approval("Bash", {"command": "ls"}, "t2")
    assert created and again is not first
    assert kinds(log) == ["approval_request", "approval_resolved"] * 2


def test_switching_auto_approve_on_leaves_pending_approvals_for_a_person(log, registry) -> None:
    request, _ = registry.open_approval("Bash", {"command": "ls"}, "t1")
    registry.auto_approve = True
    assert [p.request_id for p in registry.pending()] == [request.request_id]
    assert not request.done.is_set()
    registry.open_approval("Bash", {"command": "pwd"}, "t2")  # the new one is auto-approved
    assert [p.request_id for p in registry.pending()] == [request.request_id]
    registry.auto_approve = False
    later, _ = registry.open_approval("Bash", {"command": "whoami"}, "t3")
    assert not later.done.is_set() and len(registry.pending()) == 2


def test_auto_approve_waiter_in_another_thread_sees_allow(log) -> None:
    registry = PromptRegistry(log, timeout_seconds=0)
    registry.auto_approve = True
    request, _ = registry.open_approval("Bash", {"command": "ls"}, "t")
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(registry.wait(request)), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and box[0].reason == "auto"


# -- on_change (the inbox's changed) -----------------------------------------------------------

class Changes:
    """An on_change that counts calls and records what the registry looked like then."""

    def __init__(self, log: MemoryEventLog) -> None:
        self.log = log
        self.registry: PromptRegistry | None = None
        self.calls: list[tuple[int, list[str]]] = []

    def __call__(self) -> None:
        assert self.registry is not None
        # pending() takes the registry's lock: this deadlocks if called under it.
        pending = [p.request_id for p in self.registry.pending()]
        self.calls.append((self.log.last_id, pending))


@pytest.fixture
def changes(log: MemoryEventLog) -> Changes:
    return Changes(log)


@pytest.fixture
def watched(log: MemoryEventLog, changes: Changes) -> PromptRegistry:
    registry = PromptRegistry(log, timeout_seconds=600, on_change=changes)
    changes.registry = registry
    return registry


def in_thread(function: Any, *args: Any) -> Any:
    """Run in a daemon thread, bounded: a deadlock fails the test instead of hanging it."""
    box: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            box.append(function(*args))
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "deadlock: on_change ran under the registry lock"
    if errors:
        raise errors[0]
    return box[0]


def test_on_change_after_open_outside_the_lock_with_the_event_logged(watched, changes) -> None:
    request, _ = in_thread(watched.open_approval, "Bash", {"command": "ls"}, "t")
    assert changes.calls == [(1, [request.request_id])]


def test_on_change_after_an_answer(watched, changes) -> None:
    request, _ = watched.open_approval("Bash", {"command": "ls"}, "t")
    in_thread(lambda: watched.answer_approval(request.request_id, "allow"))
    assert changes.calls[-1] == (2, [])
    assert len(changes.calls) == 2


def test_on_change_after_a_clarify_answer(watched, changes) -> None:
    request, _ = watched.open_clarify([QUESTION], "t")
    in_thread(lambda: watched.answer_clarify(request.request_id,
                                             {"Which database?": "SQLite"}))
    assert changes.calls == [(1, [request.request_id]), (2, [])]


def test_on_change_once_for_an_auto_approved_request(watched, changes) -> None:
    watched.auto_approve = True
    in_thread(watched.open_approval, "Bash", {"command": "ls"}, "t")
    assert changes.calls == [(2, [])]  # request and resolved both logged, nothing pending


def test_on_change_on_cancel_cancel_all_and_timeout(log, changes) -> None:
    registry = PromptRegistry(log, timeout_seconds=0.05, on_change=changes)
    changes.registry = registry
    first, _ = registry.open_approval("Bash", {"command": "a"}, "t")
    assert in_thread(registry.cancel, first.request_id) is True
    assert len(changes.calls) == 2
    registry.open_approval("Bash", {"command": "b"}, "t")
    registry.open_clarify([QUESTION], "t")
    assert in_thread(registry.cancel_all) == 2
    assert len(changes.calls) == 6 and changes.calls[-1][1] == []
    timed, _ = registry.open_approval("Bash", {"command": "c"}, "t")
    assert in_thread(registry.wait, timed).reason == "timeout"
    assert len(changes.calls) == 8 and changes.calls[-1] == (log.last_id, [])


def test_no_on_change_when_nothing_changed(watched, changes) -> None:
    request, _ = watched.open_approval("Bash", {"command": "ls"}, "t")
    assert len(changes.calls) == 1
    _, created = watched.open_approval("Bash", {"command": "ls"}, "t2")  # a duplicate
    assert not created
    with pytest.raises(NotFound):
        watched.answer_approval("unknown", "allow")
    with pytest.raises(BadRequest):
        watched.answer_approval(request.request_id, "maybe")
    assert watched.cancel("unknown") is False
    assert len(changes.calls) == 1
    watched.answer_approval(request.request_id, "allow")
    with pytest.raises(AlreadyResolved):
        watched.answer_approval(request.request_id, "deny")
    assert watched.cancel(request.request_id) is False
    assert watched.cancel_all() == 0
    assert len(changes.calls) == 2


def test_without_on_change_nothing_breaks(log) -> None:
    registry = PromptRegistry(log, timeout_seconds=600, on_change=None)
    request, _ = registry.open_approval("Bash", {"command": "ls"}, "t")
    registry.answer_approval(request.request_id, "allow")
    assert kinds(log) == ["approval_request", "approval_resolved"]


def test_the_resolved_event_records_an_edited_input_and_session_rules() -> None:
    log = MemoryEventLog("s")
    registry = PromptRegistry(log, 0)
    request, _ = registry.open_approval("Bash", {"command": "rm -rf build"}, "toolu_1")
    rules = [{"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "ls:*"}],
              "behavior": "allow", "destination": "session"}]
    registry.answer_approval(request.request_id, "allow", by="tab",
                             updated_input={"command": "rm -rf build/tmp"},
                             updated_permissions=rules)
    resolved = json.loads(log.read_after(1)[0].data)
    assert resolved["updated_input"] == {"command": "rm -rf build/tmp"}
    assert resolved["updated_permissions"] == rules


def test_a_request_the_log_refuses_leaves_nothing_pending() -> None:
    log = MemoryEventLog("s")
    registry = PromptRegistry(log, 0)
    with pytest.raises(ValueError):
        registry.open_approval("Bash", {"x": float("nan")}, "toolu_1")
    assert registry.pending() == [] and log.last_id == 0


OPTIONS = [{"option_id": "proceed_once", "label": "Allow", "kind": "allow_once"},
           {"option_id": "proceed_always", "label": "Allow always", "kind": "allow_always"},
           {"option_id": "cancel", "label": "Reject", "kind": "reject_once"}]


def test_an_answer_may_pick_one_of_the_agents_own_options(log, registry) -> None:
    request, _ = registry.open_approval("touch x", {"command": "touch x"}, "call_1",
                                        options=OPTIONS)
    registry.answer_approval(request.request_id, "allow", option_id="proceed_always")
    resolved = log.read_after(1)[0].payload
    assert resolved["decision"] == "allow" and resolved["option_id"] == "proceed_always"
    assert registry.wait(request).option_id == "proceed_always"


def test_an_option_the_request_does_not_offer_is_bad_request_and_settles_nothing(
        log, registry) -> None:
    request, _ = registry.open_approval("touch x", {}, "call_1", options=OPTIONS)
    with pytest.raises(BadRequest, match="not one of this request's options: proceed_once"):
        registry.answer_approval(request.request_id, "allow", option_id="yolo")
    # An option that says the opposite of the decision:
    with pytest.raises(BadRequest, match="does not allow"):
        registry.answer_approval(request.request_id, "allow", option_id="cancel")
    plain, _ = registry.open_approval("Bash", {"command": "ls"}, "t2")
    with pytest.raises(BadRequest, match="options: none"):
        registry.answer_approval(plain.request_id, "deny", option_id="cancel")
    assert kinds(log) == ["approval_request", "approval_request"]
    registry.answer_approval(request.request_id, "deny", option_id="cancel")
    assert log.read_after(0)[-1].payload["option_id"] == "cancel"


def test_without_an_option_the_resolved_event_has_no_option_id(log, registry) -> None:
    request, _ = registry.open_approval("Bash", {"command": "ls"}, "t")
    registry.answer_approval(request.request_id, "allow")
    assert "option_id" not in log.read_after(1)[0].payload


def test_a_request_with_options_takes_no_edited_input_and_no_rules(log, registry) -> None:
    """Codex and ACP agents answer with an option alone: an edited command would be dropped
    and the original one run, so the answer is refused and settles nothing."""
    request, _ = registry.open_approval("Bash", {"command": "rm -rf build"}, "call_1",
                                        options=OPTIONS)
    with pytest.raises(BadRequest, match="cannot take an edited input: send one of "
                                         "proceed_once, proceed_always, cancel as option_id"):
        registry.answer_approval(request.request_id, "allow",
                                 updated_input={"command": "ls build"})
    with pytest.raises(BadRequest, match="cannot take permission rules"):
        registry.answer_approval(request.request_id, "allow", option_id="proceed_always",
                                 updated_permissions=[{"type": "addRules"}])
    assert kinds(log) == ["approval_request"]
    # Claude Code's requests (no options) still take both.
    plain, _ = registry.open_approval("Bash", {"command": "ls"}, "t2")
    registry.answer_approval(plain.request_id, "allow", updated_input={"command": "ls -a"})
    assert log.read_after(0)[-1].payload["updated_input"] == {"command": "ls -a"}
