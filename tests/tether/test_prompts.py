"""The approval and clarify registry: first answer wins, timeouts, cancel, dedupe."""

from __future__ import annotations

import threading

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
