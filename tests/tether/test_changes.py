"""The Changes panel's domain on real git repositories: added, modified, deleted, renamed,
binary, non-UTF-8 and huge changes; paths that leave the folder; files outside git."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether import changes
from tether.changes import (
    EMPTY_TREE,
    git_changes,
    git_diff,
    head_commit,
    inside,
    read_file,
    tool_changes,
    tool_diff,
    written_files,
)
from tether.errors import BadRequest, NotADirectory, NotFound, PathNotAllowed


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "T")
    (root / "a.txt").write_text("one\ntwo\nthree\n")
    (root / "gone.txt").write_text("bye\n")
    (root / "old name.txt").write_text("moving\nalong\n")
    (root / "img.bin").write_bytes(b"\x89PNG\0\0\0" + bytes(range(256)))
    (root / "latin.txt").write_bytes(b"caf\xe9\n")
    (root / "ignored.log").write_text("noise\n")
    (root / ".gitignore").write_text("*.log\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "start")
    return root


def by_path(result: changes.Changes) -> dict[str, dict]:
    return {f.path: f.as_dict() for f in result.files}


def test_every_kind_of_change_against_the_base(repo: Path) -> None:
    base = head_commit(repo)
    assert base is not None and len(base) == 40
    (repo / "a.txt").write_text("one\n2\nthree\nfour\n")
    (repo / "gone.txt").unlink()
    git(repo, "mv", "old name.txt", "new name.txt")
    (repo / "img.bin").write_bytes(b"\x89PNG\0\0\1" + bytes(range(255, -1, -1)))
    (repo / "latin.txt").write_bytes(b"caf\xe9\nna\xefve\n")
    (repo / "new.txt").write_text("fresh\nlines\n")
    (repo / "more.log").write_text("ignored\n")
    # A commit made during the session is still part of its changes.
    (repo / "committed.txt").write_text("x\n")
    git(repo, "add", "committed.txt")
    git(repo, "commit", "-q", "-m", "agent")
    result = git_changes(repo, base)
    assert result.base == base and result.git and not result.truncated
    files = by_path(result)
    assert files["a.txt"] == {"path": "a.txt", "status": "modified", "additions": 2,
                              "deletions": 1}
    assert files["gone.txt"]["status"] == "deleted" and files["gone.txt"]["deletions"] == 1
    assert files["new name.txt"]["status"] == "renamed"
    assert files["new name.txt"]["old_path"] == "old name.txt"
    assert files["img.bin"]["status"] == "binary"
    assert files["latin.txt"]["status"] == "modified"
    assert files["new.txt"] == {"path": "new.txt", "status": "added", "additions": 2,
                                "deletions": 0}
    assert files["committed.txt"]["status"] == "added"
    assert "more.log" not in files and "ignored.log" not in files
    assert list(files) == sorted(files)


def test_diffs_of_one_file(repo: Path) -> None:
    base = head_commit(repo)
    (repo / "a.txt").write_text("one\n2\nthree\n")
    (repo / "new.txt").write_text("fresh\n")
    (repo / "latin.txt").write_bytes(b"caf\xe9 au lait\n")
    (repo / "img.bin").write_bytes(b"\0\1\2")
    diff = git_diff(repo, base, "a.txt")
    assert "-two" in diff.text and "+2" in diff.text and not diff.truncated
    assert diff.text.startswith("diff --git a/a.txt b/a.txt")
    assert "+fresh" in git_diff(repo, base, "new.txt").text
    assert "caf\ufffd au lait" in git_diff(repo, base, "latin.txt").text
    assert git_diff(repo, base, "img.bin").binary
    with pytest.raises(NotFound):
        git_diff(repo, base, "unchanged.txt")


def test_a_session_in_a_subfolder_sees_its_own_part(repo: Path) -> None:
    sub = repo / "pkg"
    sub.mkdir()
    (sub / "mod.py").write_text("x = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "pkg")
    base = head_commit(sub)
    (sub / "mod.py").write_text("x = 2\n")
    (repo / "a.txt").write_text("outside the subfolder\n")
    (sub / "new.py").write_text("y = 1\n")
    assert set(by_path(git_changes(sub, base))) == {"mod.py", "new.py"}
    assert "+x = 2" in git_diff(sub, base, "mod.py").text


def test_a_repository_without_commits_compares_against_the_empty_tree(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    assert head_commit(tmp_path) == EMPTY_TREE
    (tmp_path / "first.txt").write_text("hello\n")
    assert by_path(git_changes(tmp_path, EMPTY_TREE))["first.txt"]["status"] == "added"
    git(tmp_path, "add", "first.txt")
    assert by_path(git_changes(tmp_path, EMPTY_TREE))["first.txt"]["additions"] == 1


def test_outside_git_there_is_no_base(tmp_path: Path) -> None:
    assert head_commit(tmp_path) is None


def test_ten_thousand_changed_files_are_listed_truncated(repo: Path) -> None:
    base = head_commit(repo)
    many = repo / "many"
    many.mkdir()
    for n in range(10_000):
        (many / f"f{n:05}.txt").write_text(f"{n}\n")
    result = git_changes(repo, base)
    assert result.truncated and len(result.files) == changes.MAX_FILES


def test_a_fifty_megabyte_diff_is_cut_at_the_bound(repo: Path) -> None:
    base = head_commit(repo)
    line = b"x" * 99 + b"\n"
    with open(repo / "a.txt", "wb") as handle:
        for _ in range(500_000):
            handle.write(line)
    diff = git_diff(repo, base, "a.txt")
    assert diff.truncated and len(diff.text.encode()) <= changes.MAX_DIFF_BYTES


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x", "a\x00b", "", ".",
                                  "sub/../..", "x" * 5000])
def test_paths_that_leave_the_folder_are_refused(repo: Path, path: str) -> None:
    with pytest.raises(PathNotAllowed):
        inside(repo.resolve(), path)
    with pytest.raises(PathNotAllowed):
        read_file(repo, path)
    with pytest.raises(PathNotAllowed):
        git_diff(repo, None, path)


def test_a_symlink_out_of_the_folder_is_refused(repo: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("key\n")
    (repo / "link").symlink_to(secret)
    (repo / "dirlink").symlink_to(tmp_path)
    for path in ("link", "dirlink/secret.txt"):
        with pytest.raises(PathNotAllowed):
            read_file(repo, path)
    # An untracked symlink out is listed, never read.
    files = by_path(git_changes(repo, head_commit(repo)))
    assert files["link"]["additions"] == 0


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.sampled_from(["..", ".", "a", "b", "in", "out", "loop", ""]),
                      min_size=1, max_size=6))
def test_no_accepted_path_resolves_outside_the_folder(tmp_path_factory: pytest.TempPathFactory,
                                                      parts: list[str]) -> None:
    root = tmp_path_factory.mktemp("h")
    folder = root / "folder"
    (folder / "a" / "b").mkdir(parents=True)
    (root / "outside").mkdir()
    (folder / "in").symlink_to(folder / "a")
    (folder / "out").symlink_to(root / "outside")
    (folder / "loop").symlink_to(folder / "loop")
    path = "/".join(parts)
    try:
        target, relative = inside(folder.resolve(), path)
    except PathNotAllowed:
        return
    assert target.is_relative_to(folder.resolve()) and target != folder.resolve()
    assert os.path.realpath(folder / path).startswith(str(folder.resolve()) + os.sep)
    assert not relative.startswith("..")


def test_reading_files(repo: Path) -> None:
    view = read_file(repo, "a.txt")
    assert view.as_dict() == {"path": "a.txt", "size": 14, "binary": False,
                              "truncated": False, "text": "one\ntwo\nthree\n"}
    assert read_file(repo, "img.bin").binary and read_file(repo, "img.bin").text == ""
    assert read_file(repo, "latin.txt").text == "caf\ufffd\n"
    (repo / "big.txt").write_bytes(b"y" * (changes.MAX_FILE_BYTES + 10))
    big = read_file(repo, "big.txt")
    assert big.truncated and len(big.text) == changes.MAX_FILE_BYTES
    assert big.size == changes.MAX_FILE_BYTES + 10
    with pytest.raises(NotFound):
        read_file(repo, "missing.txt")
    (repo / "dir").mkdir()
    with pytest.raises(BadRequest):
        read_file(repo, "dir")


def test_a_folder_removed_under_the_session_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "gone"
    folder.mkdir()
    folder.rmdir()
    for call in (lambda: git_changes(folder, None), lambda: read_file(folder, "a"),
                 lambda: git_diff(folder, None, "a")):
        with pytest.raises(NotADirectory):
            call()


def test_outside_git_the_changes_come_from_the_tool_calls(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "notes.md").write_text("new text\n")
    (folder / "app.py").write_text("print('hi')\n")
    uses = [
        {"tool_use_id": "t1", "name": "Write",
         "input": {"file_path": str(folder / "notes.md"), "content": "new text\n"}},
        {"tool_use_id": "t2", "name": "Edit",
         "input": {"file_path": "app.py", "old_string": "print('hello')",
                   "new_string": "print('hi')"}},
        {"tool_use_id": "t3", "name": "Write",
         "input": {"file_path": str(tmp_path / "elsewhere.txt"), "content": "x"}},
        {"tool_use_id": "t4", "name": "Bash", "input": {"command": "ls"}},
        {"tool_use_id": "t5", "name": "Write",
         "input": {"file_path": str(folder / "removed.txt"), "content": "a\nb\n"}},
    ]
    written = written_files(folder.resolve(), uses, created={"t1", "t5"})
    assert set(written) == {"notes.md", "app.py", "removed.txt"}
    result = tool_changes(folder, written)
    assert not result.git and result.base is None
    files = by_path(result)
    assert files["notes.md"] == {"path": "notes.md", "status": "added", "additions": 1,
                                 "deletions": 0}
    assert files["app.py"] == {"path": "app.py", "status": "modified", "additions": 1,
                               "deletions": 1}
    assert files["removed.txt"]["status"] == "deleted"
    diff = tool_diff(folder, written, "app.py").text
    assert "-print('hello')" in diff and "+print('hi')" in diff
    with pytest.raises(NotFound):
        tool_diff(folder, written, "other.txt")
    with pytest.raises(PathNotAllowed):
        tool_diff(folder, written, "../elsewhere.txt")
