"""Project roots and folder checks (tether.projects): parsing the roots, resolving a requested
folder (never outside a root, whatever links and ``..`` say), listing, git branches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tether.errors import NotADirectory, PathNotAllowed
from tether.projects import MAX_PATH_CHARS, Projects, git_branch, parse_roots


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "app" / "src").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / ".hidden").mkdir()
    (root / "notes.txt").write_text("a file\n")
    return root


@pytest.fixture
def projects(root: Path, tmp_path: Path) -> Projects:
    return Projects(parse_roots(str(root)), tmp_path / "data")


# -- roots -----------------------------------------------------------------------------------

def test_parse_roots_splits_on_pathsep_resolves_and_drops_empties_and_duplicates(
        tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (tmp_path / "link").symlink_to(a)
    value = os.pathsep.join([str(a), "", f" {b} ", str(tmp_path / "link")])
    assert parse_roots(value) == (a.resolve(), b.resolve())
    assert parse_roots("") == ()


@pytest.mark.parametrize("value, needle", [
    ("relative/dir", "not an absolute path"),
    ("/no/such/dir/anywhere", "does not exist"),
])
def test_parse_roots_refuses_relative_and_missing(value: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_roots(value)


def test_parse_roots_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="not a directory"):
        parse_roots(str(tmp_path / "f"))


# -- resolve ---------------------------------------------------------------------------------

def test_resolve_accepts_a_root_and_folders_inside_it(projects: Projects, root: Path) -> None:
    assert projects.resolve(str(root)) == root.resolve()
    assert projects.resolve(f"{root}/app/src/") == (root / "app" / "src").resolve()
    assert projects.resolve(f"{root}/app/../lib") == (root / "lib").resolve()


def test_resolve_follows_a_link_that_stays_inside(projects: Projects, root: Path) -> None:
    (root / "src-link").symlink_to(root / "app" / "src")
    assert projects.resolve(str(root / "src-link")) == (root / "app" / "src").resolve()


@pytest.mark.parametrize("path, error, needle", [
    ("", PathNotAllowed, "empty"),
    ("relative", PathNotAllowed, "not an absolute path"),
    ("/etc", PathNotAllowed, "outside the project folders"),
    ("{root}/../outside", PathNotAllowed, "through '..'"),
    ("{root}/app/\0", PathNotAllowed, "NUL"),
    ("{root}/" + "a" * MAX_PATH_CHARS, PathNotAllowed, "longer than"),
    ("{root}/missing", NotADirectory, "does not exist"),
    ("{root}/notes.txt", NotADirectory, "is a file"),
    ("{root}/notes.txt/x", NotADirectory, "not a folder"),
])
def test_resolve_refuses_with_a_code_that_names_the_problem(
        projects: Projects, root: Path, path: str, error: type[Exception], needle: str) -> None:
    (root.parent / "outside").mkdir()
    with pytest.raises(error, match=needle):
        projects.resolve(path.format(root=root))


def test_resolve_refuses_a_link_that_leads_out(projects: Projects, root: Path,
                                               tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (root / "escape").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PathNotAllowed, match="symbolic link"):
        projects.resolve(str(root / "escape"))
    with pytest.raises(PathNotAllowed, match="symbolic link"):
        projects.resolve(str(root / "escape" / "deeper"))  # missing, but outside first


def test_resolve_refuses_the_data_dir_even_under_a_root(root: Path) -> None:
    (root / "data").mkdir()
    projects = Projects((root.resolve(),), root / "data")
    with pytest.raises(PathNotAllowed, match="data directory"):
        projects.resolve(str(root / "data"))


def test_resolve_without_roots_says_to_set_them(tmp_path: Path) -> None:
    with pytest.raises(PathNotAllowed, match="TETHER_PROJECT_ROOTS"):
        Projects(()).resolve(str(tmp_path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_resolve_refuses_an_unreadable_folder(projects: Projects, root: Path) -> None:
    (root / "lib").chmod(0)
    try:
        with pytest.raises(PathNotAllowed, match="cannot be read"):
            projects.resolve(str(root / "lib"))
    finally:
        (root / "lib").chmod(0o755)


def test_resolve_refuses_an_unreadable_folder_as_access_says(
        projects: Projects, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests may run as root, who reads everything: os.access stands in for the kernel.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(PathNotAllowed, match="permission denied"):
        projects.resolve(str(root / "lib"))


def test_check_refuses_a_folder_removed_or_replaced_by_a_link(
        projects: Projects, root: Path, tmp_path: Path) -> None:
    folder = projects.resolve(str(root / "lib"))
    projects.check(folder)
    folder.rmdir()
    with pytest.raises(NotADirectory, match="does not exist"):
        projects.check(folder)
    (tmp_path / "elsewhere").mkdir()
    folder.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PathNotAllowed):
        projects.check(folder)


# -- property: nothing accepted resolves outside a root --------------------------------------

#: Path parts a generated path is made of: names that exist, links in and out, "..", ".".
PARTS = st.sampled_from(["a", "b", "in", "out", "loop", "file", "..", ".", "missing", ""])


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(PARTS, max_size=8), links=st.lists(
    st.tuples(st.sampled_from(["", "a", "a/b"]), st.sampled_from(["in", "out", "loop"]),
              st.sampled_from(["../..", "..", ".", "a", "/", "b/..", "../outside"])),
    max_size=4))
def test_no_accepted_path_resolves_outside_a_root(tmp_path_factory: pytest.TempPathFactory,
                                                  parts: list[str],
                                                  links: list[tuple[str, str, str]]) -> None:
    base = tmp_path_factory.mktemp("prop")
    root = base / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "file").write_text("")
    (base / "outside").mkdir()
    (root / "in").symlink_to(root / "a")
    (root / "out").symlink_to(base / "outside")
    (root / "loop").symlink_to(root / "loop")
    for where, name, target in links:
        link = root / where / name
        if not link.exists() and not link.is_symlink():
            link.symlink_to(target)
    projects = Projects((root.resolve(),))
    path = "/".join([str(root), *parts])
    try:
        got = projects.resolve(path)
    except (PathNotAllowed, NotADirectory) as exc:
        event(f"refused: {exc.code}")
        return
    event("accepted")
    real = Path(os.path.realpath(path))
    assert got == real and got.is_dir()
    assert got == root.resolve() or root.resolve() in got.parents
    listing = projects.list(path, hidden=True)
    for entry in listing["entries"]:
        target = Path(entry["path"])
        assert target == root.resolve() or root.resolve() in target.parents


# -- listing ---------------------------------------------------------------------------------

def names(listing: dict[str, object]) -> list[str]:
    return [e["name"] for e in listing["entries"]]  # type: ignore[attr-defined,index]


def test_list_without_a_path_gives_the_roots(projects: Projects, root: Path) -> None:
    listing = projects.list()
    assert listing["path"] is None and listing["truncated"] is False
    assert listing["entries"] == [{"name": "root", "path": str(root.resolve()), "git": False}]


def test_list_gives_folders_sorted_by_name_without_hidden_ones(projects: Projects,
                                                               root: Path) -> None:
    (root / "Zeta").mkdir()
    (root / "beta").mkdir()
    listing = projects.list(str(root))
    assert listing["path"] == str(root.resolve()) and listing["parent"] is None
    assert names(listing) == ["app", "beta", "lib", "Zeta"]  # no file, no .hidden
    assert names(projects.list(str(root), hidden=True)) == [".hidden", "app", "beta", "lib",
                                                            "Zeta"]
    sub = projects.list(str(root / "app"))
    assert sub["parent"] == str(root.resolve()) and names(sub) == ["src"]
    assert sub["entries"][0]["path"] == str((root / "app" / "src").resolve())


def test_list_leaves_out_links_that_leave_the_root(projects: Projects, root: Path,
                                                   tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (root / "escape").symlink_to(tmp_path / "elsewhere")
    (root / "dangling").symlink_to(root / "nothing")
    (root / "to-file").symlink_to(root / "notes.txt")
    (root / "inner").symlink_to(root / "app")
    listing = projects.list(str(root))
    assert names(listing) == ["app", "inner", "lib"]
    assert listing["entries"][1]["path"] == str((root / "app").resolve())


def test_list_truncates_past_the_limit(projects: Projects, root: Path) -> None:
    for n in range(12):
        (root / "many" / f"d{n:02}").mkdir(parents=True)
    listing = projects.list(str(root / "many"), limit=10)
    assert listing["truncated"] is True and names(listing) == [f"d{n:02}" for n in range(10)]
    assert projects.list(str(root / "many"), limit=12)["truncated"] is False


def test_list_refuses_what_resolve_refuses(projects: Projects, root: Path) -> None:
    with pytest.raises(PathNotAllowed):
        projects.list("/etc")
    with pytest.raises(NotADirectory):
        projects.list(str(root / "notes.txt"))


# -- git -------------------------------------------------------------------------------------

def test_git_branch_reads_head_of_a_repository_and_of_a_worktree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/feature/x\n")
    assert git_branch(repo) == (True, "feature/x")
    wt = tmp_path / "wt"
    (repo / ".git" / "worktrees" / "wt").mkdir(parents=True)
    (repo / ".git" / "worktrees" / "wt" / "HEAD").write_text("ref: refs/heads/projects\n")
    wt.mkdir()
    (wt / ".git").write_text("gitdir: ../repo/.git/worktrees/wt\n")
    assert git_branch(wt) == (True, "projects")


def test_git_branch_of_a_detached_head_a_broken_pointer_and_no_repository(
        tmp_path: Path) -> None:
    detached = tmp_path / "detached"
    (detached / ".git").mkdir(parents=True)
    (detached / ".git" / "HEAD").write_text("3f2a" * 10 + "\n")
    assert git_branch(detached) == (True, None)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / ".git").write_text("gitdir: /no/such/place\n")
    assert git_branch(broken) == (True, None)
    assert git_branch(tmp_path) == (False, None)


def test_list_shows_git_and_branch(projects: Projects, root: Path) -> None:
    (root / "app" / ".git").mkdir()
    (root / "app" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    entries = projects.list(str(root))["entries"]
    assert entries[0] == {"name": "app", "path": str((root / "app").resolve()), "git": True,
                          "branch": "main"}
    assert entries[1]["git"] is False and "branch" not in entries[1]


# -- recent ----------------------------------------------------------------------------------

def test_recent_keeps_allowed_folders_once_in_order(projects: Projects, root: Path,
                                                    tmp_path: Path) -> None:
    app, lib = (root / "app").resolve(), (root / "lib").resolve()
    gone = root / "gone"
    got = projects.recent([lib, app, lib, tmp_path, gone, (root / "notes.txt")])
    assert [f.path for f in got] == [str(lib), str(app)]
