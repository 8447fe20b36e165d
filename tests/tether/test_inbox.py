"""The inbox: revisions, wake-ups, snapshots, entries and their one-line summaries."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tether.inbox import MAX_SUMMARY_CHARS, Inbox, entry, summary
from tether.prompts import PendingRequest, PromptRegistry
from tether.stores.memory import MemoryEventLog

EPOCH = "ep"
QUESTION = {"question": "Which database?", "header": "Database", "multi_select": False,
            "options": [{"label": "PostgreSQL", "description": ""}]}


def approval(tool: str | None = "Bash", tool_input: Any = None, created: float = 1.0,
             request_id: str = "r1", expires: float | None = None) -> PendingRequest:
    fields: dict[str, Any] = {"tool_name": tool, "input": tool_input, "tool_use_id": "t"}
    return PendingRequest(request_id, "approval", fields, "key", created, expires)


def clarify(questions: Any, created: float = 1.0, request_id: str = "q1") -> PendingRequest:
    return PendingRequest(request_id, "clarify", {"questions": questions, "tool_use_id": "t"},
                          "key", created, None)


class Source:
    """A fake registry: ``(session_id, title, pending)`` rows, editable by the test."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, list[PendingRequest]]] = []

    def __call__(self) -> list[tuple[str, str, list[PendingRequest]]]:
        return list(self.rows)


# -- revision and wake-ups -------------------------------------------------------------------

def test_revision_starts_at_zero_and_grows_by_one_per_change() -> None:
    inbox = Inbox(Source(), EPOCH)
    assert inbox.revision == 0 and inbox.epoch == EPOCH and inbox.closed is False
    inbox.changed()
    inbox.changed()
    assert inbox.revision == 2


def test_wait_for_returns_at_once_when_the_revision_differs() -> None:
    inbox = Inbox(Source(), EPOCH)
    assert inbox.wait_for(5, timeout=0) is True
    inbox.changed()
    assert inbox.wait_for(0, timeout=0) is True
    assert inbox.wait_for(1, timeout=0) is False


def test_wait_for_times_out_with_false() -> None:
    inbox = Inbox(Source(), EPOCH)
    started = time.monotonic()
    assert inbox.wait_for(0, timeout=0.05) is False
    assert time.monotonic() - started >= 0.04


def test_wait_for_wakes_on_a_change_from_another_thread() -> None:
    inbox = Inbox(Source(), EPOCH)
    threading.Timer(0.05, inbox.changed).start()
    started = time.monotonic()
    assert inbox.wait_for(0, timeout=10) is True
    assert time.monotonic() - started < 5


def test_close_wakes_waiters_for_good() -> None:
    inbox = Inbox(Source(), EPOCH)
    threading.Timer(0.05, inbox.close).start()
    assert inbox.wait_for(0, timeout=10) is True
    assert inbox.closed is True
    assert inbox.wait_for(0, timeout=10) is True  # at once, every time


def test_watch_sets_the_flag_on_change_and_close_until_unwatch() -> None:
    inbox = Inbox(Source(), EPOCH)
    flag = threading.Event()
    inbox.watch(flag)
    inbox.changed()
    assert flag.is_set()
    flag.clear()
    inbox.close()
    assert flag.is_set()
    flag.clear()
    inbox.unwatch(flag)
    inbox.unwatch(flag)  # unknown flags are ignored
    inbox.unwatch(threading.Event())
    inbox.changed()
    assert not flag.is_set()


# -- snapshots -------------------------------------------------------------------------------

def test_empty_snapshot_shape() -> None:
    assert Inbox(Source(), EPOCH).snapshot() == {"revision": 0, "epoch": EPOCH, "entries": []}


def test_snapshot_lists_every_sessions_requests_oldest_first() -> None:
    source = Source()
    source.rows = [
        ("s2", "second", [approval(created=30.0, request_id="c"),
                          approval(created=10.0, request_id="a")]),
        ("s1", "first", [clarify([QUESTION], created=20.0, request_id="b")]),
        ("s3", "idle", []),
    ]
    inbox = Inbox(source, EPOCH)
    inbox.changed()
    snapshot = inbox.snapshot()
    assert snapshot["revision"] == 1 and snapshot["epoch"] == EPOCH
    assert [(e["session_id"], e["session_title"], e["request_id"])
            for e in snapshot["entries"]] == [("s2", "second", "a"), ("s1", "first", "b"),
                                              ("s2", "second", "c")]


def test_snapshot_is_rebuilt_from_the_source_after_every_change() -> None:
    source = Source()
    inbox = Inbox(source, EPOCH)
    source.rows = [("s", "t", [approval()])]
    inbox.changed()
    assert len(inbox.snapshot()["entries"]) == 1
    source.rows = []
    inbox.changed()
    assert inbox.snapshot()["entries"] == []


def test_one_snapshot_is_shared_while_the_revision_stands() -> None:
    # Every client following the inbox gets the same build: one per revision, not per client.
    source = Source()
    inbox = Inbox(source, EPOCH)
    source.rows = [("s", "t", [approval()])]
    inbox.changed()
    first = inbox.snapshot()
    assert inbox.snapshot() is first
    inbox.changed()
    assert inbox.snapshot() is not first


def test_snapshot_revision_is_read_before_the_entries() -> None:
    # A change that lands while entries are gathered leaves the snapshot's revision behind,
    # so the client asks again: a snapshot may be newer than its revision, never older.
    inbox: Inbox

    def source() -> list[tuple[str, str, list[PendingRequest]]]:
        inbox.changed()
        return []

    inbox = Inbox(source, EPOCH)
    snapshot = inbox.snapshot()
    assert snapshot["revision"] == 0 and inbox.revision == 1


# -- entries ---------------------------------------------------------------------------------

def test_approval_entry_shape() -> None:
    request = approval("Bash", {"command": "ls -la"}, created=1763900000.1, expires=1763900300.1)
    assert entry("sid", "local session", request) == {
        "session_id": "sid", "session_title": "local session", "kind": "approval",
        "request_id": "r1", "summary": "Bash: ls -la", "created_at": 1763900000.1,
        "expires_at": 1763900300.1, "tool_name": "Bash", "input": {"command": "ls -la"},
        "questions": None,
    }


def test_clarify_entry_shape() -> None:
    request = clarify([QUESTION], created=5.0)
    assert entry("sid", "t", request) == {
        "session_id": "sid", "session_title": "t", "kind": "clarify", "request_id": "q1",
        "summary": "Which database?", "created_at": 5.0, "expires_at": None,
        "tool_name": None, "input": None, "questions": [QUESTION],
    }


def test_entry_from_a_real_prompt_registry() -> None:
    registry = PromptRegistry(MemoryEventLog("s"), timeout_seconds=300)
    request, _ = registry.open_approval("Edit", {"file_path": "/tmp/a.py", "old": "x"}, "t1")
    made = entry("s", "title", request)
    assert made["summary"] == "Edit: /tmp/a.py"
    assert made["expires_at"] == pytest.approx(made["created_at"] + 300, abs=0.01)
    assert made["input"] == {"file_path": "/tmp/a.py", "old": "x"}


# -- summaries -------------------------------------------------------------------------------

@pytest.mark.parametrize("tool, tool_input, expected", [
    ("Bash", {"command": "ls -la", "description": "List"}, "Bash: ls -la"),
    ("Write", {"file_path": "/a/b.txt", "content": "..."}, "Write: /a/b.txt"),
    ("NotebookEdit", {"notebook_path": "/n.ipynb"}, "NotebookEdit: /n.ipynb"),
    ("Glob", {"path": "src", "pattern": "*.py"}, "Glob: src"),
    ("WebFetch", {"url": "https://example.com", "prompt": "p"}, "WebFetch: https://example.com"),
    ("Grep", {"pattern": "TODO"}, "Grep: TODO"),
    ("WebSearch", {"query": "flask"}, "WebSearch: flask"),
    ("Task", {"description": "Explore"}, "Task: Explore"),
    # The first named field that holds a non-blank string wins.
    ("Bash", {"command": "   ", "description": "fallback"}, "Bash: fallback"),
    ("Bash", {"command": 5, "path": "p"}, "Bash: p"),
    # No named field: the input as JSON.
    ("Custom", {"x": 1, "y": "é"}, 'Custom: {"x": 1, "y": "é"}'),
    ("Custom", {}, "Custom"),
    ("Custom", None, "Custom"),
    ("Custom", ["not", "a", "mapping"], "Custom"),
    (None, {"command": "ls"}, "tool: ls"),
    ("", None, "tool"),
])
def test_approval_summary(tool: str | None, tool_input: Any, expected: str) -> None:
    assert summary(approval(tool, tool_input)) == expected


def test_summary_is_one_line() -> None:
    request = approval("Bash", {"command": "echo a\n\n  echo\tb\r\n"})
    assert summary(request) == "Bash: echo a echo b"


def test_summary_is_cut_to_the_maximum_with_an_ellipsis() -> None:
    text = summary(approval("Bash", {"command": "x" * 500}))
    assert len(text) == MAX_SUMMARY_CHARS == 200
    assert text.startswith("Bash: xxx") and text.endswith("…")
    exact = "Bash: " + "y" * (MAX_SUMMARY_CHARS - len("Bash: "))
    assert summary(approval("Bash", {"command": exact[6:]})) == exact


@pytest.mark.parametrize("questions, expected", [
    ([QUESTION, {"question": "Second?"}], "Which database?"),
    ([{"question": "Multi\nline   question?"}], "Multi line question?"),
    ([{"question": ""}], "A question"),
    ([{"header": "no question"}], "A question"),
    ([], "A question"),
    (None, "A question"),
])
def test_clarify_summary_is_the_first_question(questions: Any, expected: str) -> None:
    assert summary(clarify(questions)) == expected


def test_clarify_summary_is_cut_too() -> None:
    text = summary(clarify([{"question": "why " * 100}]))
    assert len(text) == MAX_SUMMARY_CHARS and text.endswith("…")
