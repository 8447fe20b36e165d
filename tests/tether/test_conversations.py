"""tether/conversations.py: Claude Code's saved conversations, listed and turned into history.

The folder names are the ones the real CLI (2.1.328) made; the file contents are built with
tests/fakes/conversations.py in the shapes it writes, plus bad lines and huge files.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fakes import conversations as saved
from tether import conversations
from tether.conversations import (
    ClaudeConversations,
    claude_config_dir,
    entries_of,
    is_conversation_id,
    parse_line,
    project_dir_name,
    shorten,
)
from tether.errors import NotFound

#: Observed with Claude Code 2.1.328: the folder -> the directory its conversations went to.
OBSERVED = [
    ("/src/my_app.v2", "-src-my-app-v2"),
    ("/tmp/hx/w/src/my_app.v2", "-tmp-hx-w-src-my-app-v2"),
    ("/tmp/hx/w2/src/émoji_😀 dir", "-tmp-hx-w2-src--moji----dir"),  # é: one -, 😀: two
    ("/tmp/hx/w2/src/" + "/".join(f"a-very-long-folder-name-{i:02d}" for i in range(9)),
     "-tmp-hx-w2-src-a-very-long-folder-name-00-a-very-long-folder-name-01-a-very-long-"
     "folder-name-02-a-very-long-folder-name-03-a-very-long-folder-name-04-a-very-long-"
     "folder-name-05-a-very-long-folder-name-j1sr3g"),
]


@pytest.mark.parametrize("folder, name", OBSERVED)
def test_project_dir_name_is_what_the_cli_made(folder: str, name: str) -> None:
    assert project_dir_name(folder) == name


@given(st.text(min_size=0, max_size=300))
def test_project_dir_name_keeps_ascii_letters_and_digits_only(folder: str) -> None:
    name = project_dir_name(folder)
    units = len(folder.encode("utf-16-le", "surrogatepass")) // 2
    if units <= conversations.CLAUDE_NAME_CHARS:
        assert len(name) == units
        assert re.fullmatch(r"[A-Za-z0-9-]*", name)
        for a, b in zip(folder, name, strict=False):
            if a.isascii() and a.isalnum():
                assert a == b
            else:
                break  # past a non-BMP character the positions shift
    else:
        head, _, tail = name.rpartition("-")
        assert len(head) == conversations.CLAUDE_NAME_CHARS
        assert re.fullmatch(r"[0-9a-z]+", tail)


def test_config_dir_is_claude_config_dir_else_home(tmp_path: Path) -> None:
    assert claude_config_dir({"HOME": "/home/me"}) == Path("/home/me/.claude")
    assert claude_config_dir({"HOME": "/home/me", "CLAUDE_CONFIG_DIR": "/etc/cc"}) \
        == Path("/etc/cc")


@pytest.mark.parametrize("value, ok", [
    ("95459d3e-68ac-4d0d-aaf8-b1cb54fa6b17", True),
    ("95459D3E-68AC-4D0D-AAF8-B1CB54FA6B17", False),
    ("../../etc/passwd", False), ("", False), ("95459d3e68ac4d0daaf8b1cb54fa6b17", False),
    ("95459d3e-68ac-4d0d-aaf8-b1cb54fa6b17\n", False),
])
def test_conversation_ids_are_lowercase_uuids(value: str, ok: bool) -> None:
    assert is_conversation_id(value) is ok


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "my_app.v2"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def source(home: Path) -> ClaudeConversations:
    return ClaudeConversations(home / ".claude")


def test_list_is_newest_first_with_title_time_and_messages(home: Path, folder: Path,
                                                           source: ClaudeConversations) -> None:
    old, old_path = saved.save(home, folder, [*saved.bookkeeping("x"),
                                              *saved.exchange("First one\nmore", "Hi")])
    new, new_path = saved.save(home, folder, [
        *saved.bookkeeping("y"), saved.user("run echo please"),
        *saved.assistant(saved.text("I'll run echo."),
                         saved.tool_use("Bash", {"command": "echo hi"}), message_id="m1"),
        saved.tool_result("hi"), *saved.assistant(saved.text("Tool said: hi"))])
    os.utime(old_path, (1000, 1000))
    os.utime(new_path, (2000, 2000))
    found, truncated = source.list(folder)
    assert not truncated
    assert [c.to_dict() for c in found] == [
        {"id": new, "title": "run echo please", "updated_at": 2000, "messages": 3,
         "partial": False},
        {"id": old, "title": "First one", "updated_at": 1000, "messages": 2, "partial": False},
    ]


def test_list_of_a_folder_without_conversations_is_empty(folder: Path,
                                                         source: ClaudeConversations) -> None:
    assert source.list(folder) == ([], False)


def test_list_leaves_out_other_files_and_empty_conversations(home: Path, folder: Path,
                                                             source: ClaudeConversations) -> None:
    sid, path = saved.save(home, folder, saved.exchange("keep me", "ok"))
    (path.parent / "notes.jsonl").write_text(path.read_text())
    (path.parent / "memory").mkdir()
    saved.save(home, folder, saved.bookkeeping("z"))  # no prompt, no reply
    assert [c.id for c in source.list(folder)[0]] == [sid]


def test_list_is_capped_and_says_truncated(home: Path, folder: Path,
                                           source: ClaudeConversations) -> None:
    ids = []
    for n in range(5):
        sid, path = saved.save(home, folder, saved.exchange(f"prompt {n}", "ok"))
        os.utime(path, (1000 + n, 1000 + n))
        ids.append(sid)
    found, truncated = source.list(folder, limit=3)
    assert truncated and [c.id for c in found] == ids[::-1][:3]


def test_custom_title_wins_over_the_first_prompt(home: Path, folder: Path,
                                                 source: ClaudeConversations) -> None:
    saved.save(home, folder, [*saved.exchange("the first prompt", "ok"),
                              {"type": "custom-title", "customTitle": "Release notes"}])
    assert source.list(folder)[0][0].title == "Release notes"


def test_bad_lines_are_skipped(home: Path, folder: Path, source: ClaudeConversations) -> None:
    sid, _ = saved.save(home, folder, [
        b"not json\n", b"\xff\xfe binary \x00\n", b"[1, 2]\n", b'{"type": "user"}\n',
        b'{"type": "user", "message": "a string"}\n',
        b'{"type": "assistant", "message": {"content": [1, null, {"type": "text"}]}}\n',
        b'{"type": "user", "message": {"content": 5}}\n',
        b'{"type":"user","timestamp":"yesterday","message":{"content":"real prompt"}}\n',
        b'{"type": "user", ' + b'[' * 100000 + b'\n',  # deeper than the parser recurses
        *[json.dumps(line).encode() + b"\n" for line in saved.assistant(saved.text("reply"))],
        b'{"type": "assistant", "message": {"content": [{"type": "text", "text": "unfin',
    ], "11111111-2222-4333-8444-555555555555")
    found = source.list(folder)[0]
    assert [(c.id, c.title, c.messages) for c in found] == [(sid, "real prompt", 2)]
    history = source.history(folder, sid)
    assert history.payloads() == [{"role": "user", "text": "real prompt"},
                                  {"role": "assistant", "text": "reply",
                                   "at": history.entries[1].ts}]


def test_meta_sidechain_tool_results_and_thinking_are_not_history(
        home: Path, folder: Path, source: ClaudeConversations) -> None:
    sid, _ = saved.save(home, folder, [
        saved.user("<local-command-caveat>Caveat</local-command-caveat>", isMeta=True),
        saved.user("<command-name>/model</command-name>\n<command-message>model"
                   "</command-message>\n<command-args>opus</command-args>"),
        saved.user("<local-command-stdout>Set model to opus</local-command-stdout>"),
        saved.user([saved.text("<system-reminder>\nhidden\n</system-reminder>"),
                    saved.text("Look at this"), {"type": "image", "source": {}}]),
        *saved.assistant({"type": "thinking", "thinking": "hmm", "signature": "s"},
                         saved.text("A reply"), saved.tool_use("Read", {"file_path": "/a/b"})),
        saved.tool_result("file contents"),
        saved.user("a subagent's prompt", isSidechain=True),
        *saved.assistant(saved.text("a subagent's reply"), isSidechain=True),
    ])
    texts = [(p["role"], p["text"], p.get("tool")) for p in source.history(folder, sid).payloads()]
    assert texts == [("user", "/model opus", None), ("user", "Look at this\n\n[image]", None),
                     ("assistant", "A reply", None),
                     ("assistant", "", {"name": "Read", "summary": "/a/b"})]


def test_history_keeps_the_newest_entries_and_says_truncated(
        home: Path, folder: Path, source: ClaudeConversations) -> None:
    lines = [line for n in range(30) for line in saved.exchange(f"prompt {n}", f"reply {n}")]
    sid, _ = saved.save(home, folder, lines)
    history = source.history(folder, sid, limit=10)
    payloads = history.payloads()
    assert len(payloads) == 10 and history.omitted == 50 and not history.unread
    assert payloads[0]["truncated"] is True and payloads[0]["omitted"] == 50
    assert payloads[0]["text"] == "prompt 25" and payloads[-1]["text"] == "reply 29"
    assert "truncated" not in payloads[1]
    assert history.conversation.title == "prompt 0" and history.conversation.messages == 60


def test_history_of_a_huge_file_reads_its_end_only(home: Path, folder: Path,
                                                   source: ClaudeConversations,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conversations, "MAX_HISTORY_BYTES", 64 * 1024)
    monkeypatch.setattr(conversations, "MAX_LINE_BYTES", 16 * 1024)
    big = saved.tool_result("x" * 10_000)  # a line of 20 KB, over the line cap: skipped
    lines = [saved.user("the very first prompt"), big,
             *[line for n in range(400) for line in saved.exchange(f"p{n}", f"r{n}")],
             big, *saved.exchange("last prompt", "last reply")]
    sid, path = saved.save(home, folder, lines)
    assert path.stat().st_size > 64 * 1024
    history = source.history(folder, sid)
    payloads = history.payloads()
    assert history.unread and payloads[0]["truncated"] is True
    assert payloads[-2:] == [{"role": "user", "text": "last prompt", "at": payloads[-2]["at"]},
                             {"role": "assistant", "text": "last reply",
                              "at": payloads[-1]["at"]}]
    assert history.conversation.partial  # its messages count the part read


def test_a_huge_file_is_listed_from_its_start(home: Path, folder: Path,
                                              source: ClaudeConversations,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conversations, "MAX_SCAN_BYTES", 32 * 1024)
    lines = [line for n in range(500) for line in saved.exchange(f"prompt {n}", "ok")]
    saved.save(home, folder, lines)
    (found,), _ = source.list(folder)
    assert found.partial and found.title == "prompt 0" and 0 < found.messages < 1000


def test_long_text_is_clipped(home: Path, folder: Path, source: ClaudeConversations) -> None:
    sid, _ = saved.save(home, folder, saved.exchange("p" * 20_000, "short"))
    first = source.history(folder, sid).payloads()[0]
    assert first["clipped"] is True
    assert len(first["text"]) == conversations.MAX_HISTORY_TEXT_CHARS


def test_lone_surrogates_become_valid_text(home: Path, folder: Path,
                                           source: ClaudeConversations) -> None:
    sid, _ = saved.save(home, folder, [b'{"type":"user","message":{"content":"a\\ud800b"}}\n'])
    assert source.history(folder, sid).payloads()[0]["text"] == "a?b"


def test_cost_state_is_the_running_total(home: Path, folder: Path,
                                         source: ClaudeConversations) -> None:
    sid, _ = saved.save(home, folder, [*saved.exchange("p", "r"),
                                       {"type": "cost-state", "totalCostUSD": 0.1},
                                       {"type": "cost-state", "totalCostUSD": 0.25}])
    assert source.history(folder, sid).total_cost_usd == 0.25


@pytest.mark.parametrize("bad", ["not-a-uuid", "../x", "95459D3E-68AC-4D0D-AAF8-B1CB54FA6B17",
                                 "00000000-0000-4000-8000-000000000000"])
def test_unknown_or_invalid_ids_are_not_found(folder: Path, source: ClaudeConversations,
                                              bad: str) -> None:
    with pytest.raises(NotFound):
        source.history(folder, bad)


def test_an_id_of_another_folder_is_not_found(home: Path, folder: Path, tmp_path: Path,
                                              source: ClaudeConversations) -> None:
    other = tmp_path / "other"
    other.mkdir()
    sid, _ = saved.save(home, other, saved.exchange("elsewhere", "ok"))
    with pytest.raises(NotFound):
        source.history(folder, sid)
    assert source.history(other, sid).entries


def test_parse_line_skips_lines_nobody_reads() -> None:
    assert parse_line(b'{"type":"attachment","message":{"role":"user"}}') is None
    assert parse_line(b'{"type": "user", "message": {"content": "x"}}') is not None
    assert entries_of({"type": "api-request-blob",
                       "message": {"role": "user", "content": "no"}}) == []


@pytest.mark.parametrize("text, title", [
    ("Fix the failing test", "Fix the failing test"),
    ("\n\n  first   line \nsecond", "first line"),
    ("word " * 40, ("word " * 15).strip() + "…"),
    ("", ""),
])
def test_shorten(text: str, title: str) -> None:
    assert shorten(text) == title


def test_a_listing_reads_only_files_that_changed(home: Path, folder: Path,
                                                 source: ClaudeConversations,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sid, path = saved.save(home, folder, saved.exchange("first", "ok"))
    assert source.list(folder)[0][0].messages == 2
    read = []
    real = conversations._lines
    monkeypatch.setattr(conversations, "_lines", lambda f, limit: read.append(1) or real(f, limit))
    assert source.list(folder)[0][0].messages == 2 and read == []  # unchanged: not read
    with path.open("a") as f:
        for line in saved.exchange("second", "ok"):
            f.write(json.dumps(line) + "\n")
    assert source.list(folder)[0][0].messages == 4 and read == [1]
