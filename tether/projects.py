"""Project folders: where sessions may be opened (``TETHER_PROJECT_ROOTS``), the check that a
requested folder lies inside a root, and the listing the folder picker shows.

Every path is resolved (:func:`os.path.realpath`: symbolic links followed, ``..`` applied)
*before* it is compared with the roots, which are resolved too: a path that leads out of
every root, by ``..`` or through a link, is refused whatever it looks like. A session keeps
the resolved path, so the agent runs exactly where the check looked.

Without roots, no folder is allowed: a session gets its own empty workspace under
``TETHER_DATA_DIR`` (``tether.sessions``). A session's folder is never created, and never
removed with the session: it is the user's.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.errors import NotADirectory, PathNotAllowed

#: Longest path accepted, in characters (Linux's PATH_MAX is 4096 bytes).
MAX_PATH_CHARS = 4096
#: Most folders one listing returns (``truncated`` past it).
MAX_ENTRIES = 1000
#: Most recent folders :meth:`Projects.recent` returns.
MAX_RECENT = 50
#: Bytes read of ``.git`` (a worktree's pointer file) and of ``HEAD``.
MAX_GIT_FILE_BYTES = 4096
#: Longest branch name reported, in characters.
MAX_BRANCH_CHARS = 255


def parse_roots(value: str | Iterable[str | os.PathLike[str]]) -> tuple[Path, ...]:
    """``TETHER_PROJECT_ROOTS``: absolute directories separated by :data:`os.pathsep` (or an
    iterable of them), each resolved; empty parts are skipped, duplicates dropped.

    :raises ValueError: a root is not absolute, does not exist, or is not a directory (the
        message names it).
    """
    parts = value.split(os.pathsep) if isinstance(value, str) else [str(v) for v in value]
    roots: list[Path] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if "\0" in part:
            raise ValueError(f"{part!r} contains a NUL byte")
        if not os.path.isabs(part):
            raise ValueError(f"{part!r} is not an absolute path (separate folders with "
                             f"{os.pathsep!r})")
        real = Path(os.path.realpath(part))
        if not real.exists():
            raise ValueError(f"{part!r} does not exist")
        if not real.is_dir():
            raise ValueError(f"{part!r} is not a directory")
        if real not in roots:
            roots.append(real)
    return tuple(roots)


@dataclass(frozen=True, slots=True)
class Folder:
    """One folder as the picker shows it. ``branch``: the checked-out branch (None when not
    a git work tree, or when ``HEAD`` is detached or unreadable)."""

    name: str
    path: str
    git: bool
    branch: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "path": self.path, "git": self.git}
        if self.branch is not None:
            out["branch"] = self.branch
        return out


def git_branch(folder: Path) -> tuple[bool, str | None]:
    """Whether ``folder`` is a git work tree (it holds ``.git``, a directory, or a file as
    in a linked worktree or submodule: ``gitdir: <path>``), and its branch, read from
    ``HEAD`` (``ref: refs/heads/<branch>``). No ``git`` process is run."""
    dotgit = folder / ".git"
    try:
        if dotgit.is_dir():
            gitdir = dotgit
        elif dotgit.is_file():
            with dotgit.open("rb") as f:
                first = f.read(MAX_GIT_FILE_BYTES).decode("utf-8", "replace").splitlines()
            if not first or not first[0].startswith("gitdir:"):
                return True, None
            gitdir = folder / first[0].removeprefix("gitdir:").strip()  # relative to folder
        else:
            return False, None
        with (gitdir / "HEAD").open("rb") as f:
            head = f.read(MAX_GIT_FILE_BYTES).decode("utf-8", "replace").strip()
    except (OSError, ValueError):
        return dotgit.exists(), None
    ref = head.removeprefix("ref:").strip() if head.startswith("ref:") else ""
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else ""
    if not branch or len(branch) > MAX_BRANCH_CHARS or not branch.isprintable():
        return True, None  # detached (a commit id), or not a name to show
    return True, branch


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _shown(name: str) -> bool:
    """A name the API can carry as it is: valid UTF-8 (no surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Projects:
    """The project roots of one server and the checks on paths under them.

    :param roots: resolved, absolute directories (:func:`parse_roots`); empty: none.
    :param data_dir: ``TETHER_DATA_DIR``: never a project folder, even under a root (it
        holds the server's token and keys).
    """

    def __init__(self, roots: Sequence[Path], data_dir: Path | None = None) -> None:
        self.roots = tuple(Path(os.path.realpath(r)) for r in roots)
        self._data_dir = Path(os.path.realpath(data_dir)) if data_dir is not None else None

    @property
    def enabled(self) -> bool:
        """True when at least one root is configured."""
        return bool(self.roots)

    def root_of(self, path: Path) -> Path | None:
        """The root ``path`` (resolved) lies in, the innermost when roots nest; else None."""
        inside = [root for root in self.roots if _inside(path, root)]
        return max(inside, key=lambda r: len(r.parts)) if inside else None

    def resolve(self, path: str) -> Path:
        """The folder ``path`` names, resolved, once it is known to be a readable directory
        inside a root.

        :raises PathNotAllowed: no roots are configured; ``path`` is empty, not absolute,
            too long or holds a NUL byte; it leads outside every root (itself, by ``..``,
            or through a symbolic link) or into ``TETHER_DATA_DIR``; it cannot be read.
        :raises NotADirectory: it is inside a root but missing, or a file.
        """
        shown = repr(path[:200])
        if not self.roots:
            raise PathNotAllowed("no project folders are configured on this server: set "
                                 "TETHER_PROJECT_ROOTS to the folders sessions may be opened "
                                 "in")
        if "\0" in path:
            raise PathNotAllowed("the path contains a NUL byte")
        if not path:
            raise PathNotAllowed("the path is empty")
        if len(path) > MAX_PATH_CHARS:
            raise PathNotAllowed(f"the path is longer than {MAX_PATH_CHARS} characters")
        if not os.path.isabs(path):
            raise PathNotAllowed(f"{shown} is not an absolute path")
        try:
            real = Path(os.path.realpath(path))
        except (OSError, ValueError) as exc:
            raise PathNotAllowed(f"{shown} cannot be resolved: {exc}") from None
        if self.root_of(real) is None:
            raise PathNotAllowed(self._outside(path, shown))
        if self._data_dir is not None and _inside(real, self._data_dir):
            raise PathNotAllowed(f"{shown} is in Tether's data directory (TETHER_DATA_DIR)")
        return self._check_dir(real, shown)

    def _outside(self, path: str, shown: str) -> str:
        """Why ``path``, which resolves outside every root, is refused, in words."""
        lexical = Path(os.path.normpath(path))
        if self.root_of(lexical) is not None:
            if ".." in Path(path).parts:
                return f"{shown} leads outside the project folders through '..' and a link"
            return f"{shown} leads outside the project folders through a symbolic link"
        if ".." in Path(path).parts and any(_inside(Path(path), r) for r in self.roots):
            return f"{shown} leads outside the project folders through '..'"
        roots = os.pathsep.join(str(r) for r in self.roots)
        return f"{shown} is outside the project folders (TETHER_PROJECT_ROOTS={roots})"

    @staticmethod
    def _check_dir(real: Path, shown: str) -> Path:
        try:
            mode = os.stat(real).st_mode
        except FileNotFoundError:
            raise NotADirectory(f"{shown} does not exist") from None
        except NotADirectoryError:
            raise NotADirectory(f"{shown} is not a folder") from None
        except OSError as exc:
            raise PathNotAllowed(f"{shown} cannot be read: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(mode):
            raise NotADirectory(f"{shown} is a file, not a folder")
        if not os.access(real, os.R_OK | os.X_OK):
            raise PathNotAllowed(f"{shown} cannot be read by the server (permission denied)")
        return real

    def check(self, folder: Path) -> None:
        """A session's folder is still what it was opened as: a readable directory inside a
        root, resolving to itself (no component was replaced by a link since).

        :raises NotADirectory: it was removed (or replaced by a file).
        :raises PathNotAllowed: it cannot be read, is no longer under a root, or now
            resolves elsewhere.
        """
        real = self.resolve(str(folder))
        if real != folder:
            raise PathNotAllowed(f"{str(folder)[:200]!r} now leads to {str(real)[:200]!r}")

    def check_before_turn(self, folder: Path, log: Any) -> None:
        """:meth:`check`, before a session's turn starts: a folder that fails it gets an
        ``error`` event in ``log`` (a :class:`tether.stores.base.EventLog`) saying why, then
        the refusal.

        :raises NotADirectory, PathNotAllowed: as :meth:`check`, with that message.
        """
        try:
            self.check(folder)
        except (NotADirectory, PathNotAllowed) as exc:
            message = f"the session's folder cannot be used: {exc.message}"
            log.append("error", {"message": message})
            raise type(exc)(message) from None

    def folder(self, path: Path, name: str | None = None) -> Folder:
        """``path`` (resolved) as the picker shows it."""
        git, branch = git_branch(path)
        return Folder(name if name is not None else (path.name or str(path)), str(path), git,
                      branch)

    def list(self, path: str | None = None, hidden: bool = False,
             limit: int = MAX_ENTRIES) -> dict[str, Any]:
        """The folders in ``path`` (resolved, inside a root), or with no ``path`` the roots.

        Sorted by name (case-folded, then as is); names starting with ``.`` only with
        ``hidden``; a symbolic link only when it leads to a directory inside a root (its
        ``path`` is where it leads); names that are not valid UTF-8 are left out. At most
        ``limit``, with ``truncated`` true when there were more.

        :returns: ``{"path", "parent", "entries": [Folder.to_dict()], "truncated"}``;
            ``path`` and ``parent`` are None at the top (the roots); ``parent`` is None in a
            root too.
        :raises PathNotAllowed: as :meth:`resolve`, or the folder cannot be listed.
        :raises NotADirectory: as :meth:`resolve`.
        """
        if not path:
            return {"path": None, "parent": None, "truncated": False,
                    "entries": [self.folder(root).to_dict() for root in self.roots]}
        folder = self.resolve(path)
        found = self._scan(folder, hidden)
        found.sort(key=lambda item: (item[0].casefold(), item[0]))
        entries = [self.folder(target, name).to_dict() for name, target in found[:limit]]
        parent = None if folder in self.roots else folder.parent
        return {"path": str(folder), "parent": None if parent is None else str(parent),
                "entries": entries, "truncated": len(found) > limit}

    def _scan(self, folder: Path, hidden: bool) -> list[tuple[str, Path]]:
        """``(name, resolved path)`` of every folder in ``folder`` the listing may show."""
        found: list[tuple[str, Path]] = []
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    name = entry.name
                    if (name.startswith(".") and not hidden) or not _shown(name):
                        continue
                    try:
                        if entry.is_symlink():
                            target = Path(os.path.realpath(entry.path))
                            if self.root_of(target) is None or not target.is_dir():
                                continue  # leads out of the roots, or to no folder
                            found.append((name, target))
                        elif entry.is_dir(follow_symlinks=False):
                            found.append((name, folder / name))
                    except (OSError, ValueError):
                        continue  # vanished meanwhile, or unreadable: not listed
        except FileNotFoundError:
            raise NotADirectory(f"{str(folder)[:200]!r} does not exist") from None
        except OSError as exc:
            raise PathNotAllowed(f"{str(folder)[:200]!r} cannot be listed: "
                                 f"{exc.strerror or exc}") from None
        return found

    def recent(self, folders: Iterable[Path], limit: int = MAX_RECENT) -> list[Folder]:
        """The distinct ``folders`` (sessions' folders, newest first) that are still
        allowed: readable directories inside a root, resolving to themselves. The sessions'
        own workspaces (in ``TETHER_DATA_DIR``) never are."""
        seen: set[Path] = set()
        out: list[Folder] = []
        for folder in folders:
            if folder in seen or len(out) >= limit:
                continue
            seen.add(folder)
            try:
                self.check(folder)
            except (PathNotAllowed, NotADirectory):
                continue
            out.append(self.folder(folder))
        return out
