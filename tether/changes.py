"""What an agent changed in a session's folder, and read-only views of its files (issue 18,
item 3).

In a git folder the changes are the working tree against the commit that was ``HEAD`` when
the session started (its ``base``), untracked files included (``added``), as git itself
computes them: argv lists only, never a shell, ``--no-ext-diff``, ``-c core.quotepath=off``,
NUL-separated output (``-z``, git-diff(1) "Raw output format"), a timeout, and output read
only up to a bound, so a repository with 10,000 changed files or a 50 MB diff answers in
bounded time and memory, saying it was truncated. Outside git, the changes are the files the
agent wrote through its tools (Claude Code's ``Write``, ``Edit``, ``MultiEdit`` and
``NotebookEdit``, whose inputs carry the text: PROTOCOLS.md 1.3), their diffs rebuilt from
those inputs with :mod:`difflib`.

Every path a client names is checked first (:func:`inside`): resolved, symlinks included,
it must lie inside the folder. No Flask here: the routes are in ``blueprints/changes.py``.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tether.errors import BadRequest, GitFailed, NotADirectory, NotFound, PathNotAllowed

#: Seconds any one git command may run before it is killed.
GIT_TIMEOUT_SECONDS = 10.0
#: Files listed at most in a change list (``truncated`` past it).
MAX_FILES = 1000
#: Bytes of one file's diff returned at most (``truncated`` past it).
MAX_DIFF_BYTES = 1024 * 1024
#: Bytes of a file's text returned at most by :func:`read_file` (``truncated`` past it).
MAX_FILE_BYTES = 1024 * 1024
#: Bytes of git's change list read at most (about 30 bytes per file: ample for MAX_FILES).
MAX_LIST_BYTES = 4 * 1024 * 1024
#: Bytes looked at for a NUL to call a file binary (git's own rule: buffer_is_binary).
BINARY_PROBE_BYTES = 8000
#: The empty tree's id (``git hash-object -t tree /dev/null``): the base of a repository that
#: had no commit when the session started.
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
#: Claude Code's tools that write files, and the input field naming the file.
WRITING_TOOLS = {"Write": "file_path", "Edit": "file_path", "MultiEdit": "file_path",
                 "NotebookEdit": "notebook_path"}

Status = Literal["added", "modified", "deleted", "renamed", "binary"]


@dataclass(frozen=True, slots=True)
class FileChange:
    """One changed file: ``path`` relative to the folder (``/``-separated); ``old_path`` for a
    rename; line counts (0 for binary files)."""

    path: str
    status: Status
    additions: int
    deletions: int
    old_path: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "status": self.status,
                               "additions": self.additions, "deletions": self.deletions}
        if self.old_path is not None:
            out["old_path"] = self.old_path
        return out


@dataclass(frozen=True, slots=True)
class Changes:
    """A session's changes: ``base`` is the commit compared against (None outside git),
    ``files`` sorted by path, ``truncated`` when more than :data:`MAX_FILES` changed."""

    base: str | None
    git: bool
    files: list[FileChange] = field(default_factory=list)
    truncated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"base": self.base, "git": self.git,
                "files": [f.as_dict() for f in self.files], "truncated": self.truncated}


@dataclass(frozen=True, slots=True)
class Diff:
    """One file's unified diff (UTF-8, undecodable bytes replaced); ``truncated`` past
    :data:`MAX_DIFF_BYTES`; ``binary`` when git saw a binary file (no text diff then)."""

    path: str
    text: str
    truncated: bool
    binary: bool

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "diff": self.text, "truncated": self.truncated,
                "binary": self.binary}


@dataclass(frozen=True, slots=True)
class FileView:
    """A file's contents for reading: ``text`` (UTF-8, undecodable bytes replaced; empty for
    a binary file), ``size`` in bytes, ``truncated`` past :data:`MAX_FILE_BYTES`."""

    path: str
    size: int
    binary: bool
    truncated: bool
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "binary": self.binary,
                "truncated": self.truncated, "text": self.text}


# -- paths ---------------------------------------------------------------------------------

def check_folder(folder: Path) -> Path:
    """``folder`` resolved, when it is a readable directory (a session's folder may be
    removed or made unreadable while the session lives).

    :raises NotADirectory: it is gone, or not a directory.
    :raises PathNotAllowed: it is unreadable.
    """
    try:
        resolved = folder.resolve(strict=True)
    except (OSError, RuntimeError):
        raise NotADirectory(f"the session's folder {folder} is gone") from None
    if not resolved.is_dir():
        raise NotADirectory(f"the session's folder {folder} is not a directory")
    if not os.access(resolved, os.R_OK | os.X_OK):
        raise PathNotAllowed(f"the session's folder {folder} is not readable")
    return resolved


def inside(folder: Path, path: str) -> tuple[Path, str]:
    """The file ``path`` (relative, ``/``-separated) names in ``folder`` (resolved: see
    :func:`check_folder`), and that path relative to the folder.

    The path is resolved with its symlinks (a missing last part is allowed: a deleted file),
    and must stay inside the folder.

    :raises PathNotAllowed: empty, absolute, NUL, over 4,096 bytes, or leaving the folder.
    """
    if not path or "\x00" in path or len(path.encode("utf-8", "surrogatepass")) > 4096:
        raise PathNotAllowed("the path must be 1 to 4,096 bytes with no NUL")
    if path.startswith("/") or Path(path).is_absolute():
        raise PathNotAllowed(f"{path[:200]!r} is absolute: name a path inside the folder")
    try:
        target = (folder / path).resolve(strict=False)
    except (OSError, RuntimeError):  # a symlink loop
        raise PathNotAllowed(f"{path[:200]!r} cannot be resolved") from None
    if target == folder or not target.is_relative_to(folder):
        raise PathNotAllowed(f"{path[:200]!r} is not inside the session's folder")
    return target, target.relative_to(folder).as_posix()


# -- running git ---------------------------------------------------------------------------

def _git_env() -> dict[str, str]:
    # Nothing from the server's environment decides where git looks or what it runs.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_OPTIONAL_LOCKS="0", GIT_TERMINAL_PROMPT="0", LC_ALL="C",
               GIT_CONFIG_NOSYSTEM="1")
    return env


def run_git(folder: Path, args: Sequence[str], max_bytes: int,
            ok_codes: Iterable[int] = (0,)) -> tuple[bytes, bool]:
    """Run ``git -C folder <args>`` and read at most ``max_bytes`` of its stdout.

    :returns: ``(stdout, truncated)``; when truncated, git was stopped.
    :raises GitFailed: an exit code not in ``ok_codes``, or more than
        :data:`GIT_TIMEOUT_SECONDS` seconds.
    """
    argv = ["git", "-C", str(folder), "-c", "core.quotepath=off", "-c", "color.ui=false",
            "-c", "diff.external=", *args]
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=_git_env(), close_fds=True)
    except OSError as exc:
        raise GitFailed(f"git could not be started: {exc}") from None
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        process.kill()

    timer = threading.Timer(GIT_TIMEOUT_SECONDS, stop)
    timer.daemon = True
    timer.start()
    try:
        assert process.stdout is not None and process.stderr is not None
        out = process.stdout.read(max_bytes + 1)
        truncated = len(out) > max_bytes
        if truncated:
            process.kill()
            out = out[:max_bytes]
        err = process.stderr.read(4096)
        code = process.wait()
    finally:
        timer.cancel()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    if timed_out.is_set():
        raise GitFailed(f"git {args[0]} took longer than {GIT_TIMEOUT_SECONDS:g} s")
    if not truncated and code not in tuple(ok_codes):
        message = err.decode("utf-8", "replace").strip()[:300]
        raise GitFailed(f"git {args[0]} failed (exit {code}): {message}")
    return out, truncated


def is_git(folder: Path) -> bool:
    """True when ``folder`` is inside a git work tree."""
    try:
        out, _ = run_git(folder, ["rev-parse", "--is-inside-work-tree"], 64)
    except GitFailed:
        return False
    return out.strip() == b"true"


def head_commit(folder: Path) -> str | None:
    """The commit ``HEAD`` names in ``folder``; :data:`EMPTY_TREE` in a repository with no
    commit yet; None outside git (the base a session records when it starts)."""
    if not is_git(folder):
        return None
    try:
        out, _ = run_git(folder, ["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], 64)
    except GitFailed:
        return EMPTY_TREE
    return out.decode().strip() or EMPTY_TREE


# -- changes in git --------------------------------------------------------------------------

_STATUS: dict[str, Status] = {"A": "added", "C": "added", "D": "deleted", "M": "modified",
                              "T": "modified", "U": "modified", "R": "renamed"}


def git_changes(folder: Path, base: str | None) -> Changes:
    """The working tree of ``folder`` against ``base`` (``HEAD`` when None: a session that
    started before bases were recorded), untracked files included.

    :raises FolderUnavailable: the folder is gone.
    :raises GitFailed: git failed (a base that no longer exists, say).
    """
    folder = check_folder(folder)
    against = base or "HEAD"
    # --relative (and ls-files ".") give paths relative to the folder, which may lie below
    # the top of the work tree, and leave out changes outside it.
    status_out, cut1 = run_git(folder, ["diff", "--no-ext-diff", "--no-textconv", "-M",
                                        "--name-status", "-z", "--relative", against, "--"],
                               MAX_LIST_BYTES)
    numstat_out, cut2 = run_git(folder, ["diff", "--no-ext-diff", "--no-textconv", "-M",
                                         "--numstat", "-z", "--relative", against, "--"],
                                MAX_LIST_BYTES)
    untracked_out, cut3 = run_git(folder, ["ls-files", "--others", "--exclude-standard", "-z",
                                           "--", "."], MAX_LIST_BYTES)
    counts = _numstat(numstat_out)
    files: dict[str, FileChange] = {}
    for letter, path, old in _name_status(status_out):
        status = _STATUS.get(letter, "modified")
        added, deleted, binary = counts.get(path, (0, 0, False))
        files[path] = FileChange(path, "binary" if binary else status, added, deleted,
                                 old if status == "renamed" else None)
    for raw in untracked_out.split(b"\0"):
        if not raw:
            continue
        path = raw.decode("utf-8", "surrogateescape")
        if path in files:
            continue
        files[path] = _untracked(folder, path)
    ordered = sorted(files.values(), key=lambda f: f.path)
    truncated = cut1 or cut2 or cut3 or len(ordered) > MAX_FILES
    return Changes(base or None, True, ordered[:MAX_FILES], truncated)


def _name_status(out: bytes) -> Iterable[tuple[str, str, str | None]]:
    """``(letter, path, old path)`` from ``--name-status -z``: ``X\\0path\\0`` or, for renames
    and copies, ``R100\\0old\\0new\\0``."""
    parts = out.split(b"\0")
    i = 0
    while i < len(parts) and parts[i]:
        letter = parts[i][:1].decode()
        if letter in ("R", "C") and i + 2 < len(parts):
            old, new = parts[i + 1], parts[i + 2]
            yield letter, new.decode("utf-8", "surrogateescape"), \
                old.decode("utf-8", "surrogateescape")
            i += 3
        elif i + 1 < len(parts):
            yield letter, parts[i + 1].decode("utf-8", "surrogateescape"), None
            i += 2
        else:
            break


def _numstat(out: bytes) -> dict[str, tuple[int, int, bool]]:
    """``{path: (added, deleted, binary)}`` from ``--numstat -z``: ``A\\tD\\tpath\\0``, or for a
    rename ``A\\tD\\t\\0old\\0new\\0``; binary files show ``-\\t-``."""
    counts: dict[str, tuple[int, int, bool]] = {}
    parts = out.split(b"\0")
    i = 0
    while i < len(parts) and parts[i]:
        fields = parts[i].split(b"\t", 2)
        if len(fields) < 3:
            break
        added, deleted, path = fields
        if not path and i + 2 < len(parts):  # a rename: old and new follow
            path = parts[i + 2]
            i += 3
        else:
            i += 1
        binary = added == b"-"
        counts[path.decode("utf-8", "surrogateescape")] = (
            0 if binary else int(added), 0 if binary else int(deleted), binary)
    return counts


def _untracked(folder: Path, path: str) -> FileChange:
    """An untracked file as ``added``: its lines counted up to :data:`MAX_DIFF_BYTES` (a
    symlink is not followed out of the folder)."""
    try:
        target, _ = inside(folder, path)
        with open(target, "rb") as handle:
            data = handle.read(MAX_DIFF_BYTES)
    except (OSError, PathNotAllowed):
        return FileChange(path, "added", 0, 0)
    if b"\0" in data[:BINARY_PROBE_BYTES]:
        return FileChange(path, "binary", 0, 0)
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return FileChange(path, "added", lines, 0)


def git_diff(folder: Path, base: str | None, path: str) -> Diff:
    """The unified diff of one file of ``folder`` against ``base`` (an untracked file: against
    nothing).

    :raises PathNotAllowed: the path leaves the folder.
    :raises NotFound: the file has no change.
    """
    folder = check_folder(folder)
    target, relative = inside(folder, path)
    against = base or "HEAD"
    out, truncated = run_git(folder, ["diff", "--no-ext-diff", "--no-textconv", "-M",
                                      against, "--", relative], MAX_DIFF_BYTES)
    if not out:
        tracked, _ = run_git(folder, ["ls-files", "-z", "--", relative], 4096)
        if not tracked and target.is_file():
            # Untracked: against nothing (exit 1 means "they differ", not failure).
            out, truncated = run_git(folder, ["diff", "--no-ext-diff", "--no-textconv",
                                              "--no-index", "--", os.devnull, relative],
                                     MAX_DIFF_BYTES, ok_codes=(0, 1))
    if not out:
        raise NotFound(f"{relative[:200]!r} has no change in this session")
    binary = b"\nBinary files " in out[:4096] or out.startswith(b"Binary files ")
    return Diff(relative, out.decode("utf-8", "replace"), truncated, binary)


# -- changes outside git ---------------------------------------------------------------------

@dataclass
class _Written:
    edits: list[tuple[str, str]] = field(default_factory=list)  # (old text, new text)
    created: bool = False


def written_files(folder: Path, tool_uses: Iterable[Mapping[str, Any]],
                  created: Iterable[str] = ()) -> dict[str, _Written]:
    """The files Claude Code's writing tools changed, by path relative to ``folder``, with
    the text each call replaced; ``created``: the tool_use ids whose result said the file was
    created. Paths outside the folder are left out."""
    created_ids = set(created)
    files: dict[str, _Written] = {}
    for use in tool_uses:
        name = use.get("name")
        key = WRITING_TOOLS.get(str(name))
        data = use.get("input")
        if key is None or not isinstance(data, Mapping):
            continue
        raw = data.get(key)
        if not isinstance(raw, str) or not raw:
            continue
        candidate = raw if not os.path.isabs(raw) else os.path.relpath(raw, folder)
        try:
            _, relative = inside(folder, candidate)
        except PathNotAllowed:
            continue
        entry = files.setdefault(relative, _Written())
        if name == "Write":
            entry.edits.append(("", str(data.get("content", ""))))
            if use.get("tool_use_id") in created_ids and len(entry.edits) == 1:
                entry.created = True
        elif name == "Edit":
            entry.edits.append((str(data.get("old_string", "")),
                                str(data.get("new_string", ""))))
        elif name == "MultiEdit":
            for edit in data.get("edits") or []:
                if isinstance(edit, Mapping):
                    entry.edits.append((str(edit.get("old_string", "")),
                                        str(edit.get("new_string", ""))))
        else:  # NotebookEdit: the new cell's source
            entry.edits.append(("", str(data.get("new_source", ""))))
    return files


def _edit_diff(relative: str, old: str, new: str) -> list[str]:
    return list(difflib.unified_diff(old.splitlines(), new.splitlines(), f"a/{relative}",
                                     f"b/{relative}", lineterm=""))


def tool_changes(folder: Path, written: Mapping[str, _Written]) -> Changes:
    """The change list outside git: every written file, ``deleted`` when it is gone."""
    folder = check_folder(folder)
    files = []
    for relative, entry in sorted(written.items()):
        added = deleted = 0
        for old, new in entry.edits:
            for line in _edit_diff(relative, old, new)[2:]:
                if line.startswith("+"):
                    added += 1
                elif line.startswith("-"):
                    deleted += 1
        status: Status = ("deleted" if not (folder / relative).exists()
                          else "added" if entry.created else "modified")
        files.append(FileChange(relative, status, added, deleted))
    return Changes(None, False, files[:MAX_FILES], len(files) > MAX_FILES)


def tool_diff(folder: Path, written: Mapping[str, _Written], path: str) -> Diff:
    """One written file's changes outside git: each tool call's edit as a hunk.

    :raises PathNotAllowed: the path leaves the folder.
    :raises NotFound: the agent wrote no such file in this session.
    """
    folder = check_folder(folder)
    _, relative = inside(folder, path)
    entry = written.get(relative)
    if entry is None:
        raise NotFound(f"the agent wrote no file {relative[:200]!r} in this session")
    lines: list[str] = []
    for old, new in entry.edits:
        lines.extend(_edit_diff(relative, old, new))
    text = "\n".join(lines) + ("\n" if lines else "")
    data = text.encode()
    truncated = len(data) > MAX_DIFF_BYTES
    if truncated:
        text = data[:MAX_DIFF_BYTES].decode("utf-8", "ignore")
    return Diff(relative, text, truncated, False)


# -- reading a file --------------------------------------------------------------------------

def read_file(folder: Path, path: str) -> FileView:
    """A file of ``folder`` for reading: at most :data:`MAX_FILE_BYTES` of it.

    :raises PathNotAllowed: the path leaves the folder.
    :raises NotFound: no such file.
    :raises BadRequest: not a regular file (a directory, a device).
    """
    folder = check_folder(folder)
    target, relative = inside(folder, path)
    try:
        info = target.stat()
    except FileNotFoundError:
        raise NotFound(f"no file {relative[:200]!r} in the session's folder") from None
    except OSError as exc:
        raise BadRequest(f"{relative[:200]!r} cannot be read: {exc.strerror}") from None
    if not target.is_file():
        raise BadRequest(f"{relative[:200]!r} is not a regular file")
    try:
        with open(target, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise BadRequest(f"{relative[:200]!r} cannot be read: {exc.strerror}") from None
    truncated = len(data) > MAX_FILE_BYTES
    data = data[:MAX_FILE_BYTES]
    binary = b"\0" in data[:BINARY_PROBE_BYTES]
    text = "" if binary else data.decode("utf-8", "replace")
    return FileView(relative, info.st_size, binary, truncated, text)


class ToolWrites:
    """The files a session's agent wrote through its tools, kept up to date from its log:
    each call of :meth:`update` reads only the events after the last one it saw.

    :param folder: the session's folder (resolved).
    """

    #: The start of Claude Code's ``Write`` result for a file that did not exist (2.1.328).
    CREATED_PREFIX = "File created successfully"

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._lock = threading.Lock()
        self._after = 0
        self._uses: list[Mapping[str, Any]] = []
        self._created: set[str] = set()

    def update(self, log: Any) -> dict[str, _Written]:
        """Take in the log's new events (``log``: a :class:`tether.stores.base.EventLog`);
        returns the written files, as :func:`written_files` does."""
        with self._lock:
            for event in log.read_after(self._after):
                self._after = event.id
                if event.kind == "tool_use" and event.payload.get("name") in WRITING_TOOLS:
                    self._uses.append(dict(event.payload))
                elif event.kind == "tool_result":
                    content = event.payload.get("content")
                    if isinstance(content, str) and content.startswith(self.CREATED_PREFIX):
                        self._created.add(str(event.payload.get("tool_use_id")))
            return written_files(self._folder, self._uses, self._created)
