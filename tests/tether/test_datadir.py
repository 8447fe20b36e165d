"""The data dir's modes (tether.datadir): 0700 for the directory, 0600 for Tether's files."""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.config import Settings
from tether.datadir import prepare, private_file, read_or_create
from tether.sessions import SessionRegistry


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def wide_umask() -> Iterator[None]:
    # What a careless service manager might set: everything created is 0777 / 0666 unless
    # the code asks for less.
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.mark.usefixtures("wide_umask")
def test_a_new_data_dir_is_created_0700_without_warnings(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert prepare(data) == []
    assert mode(data) == 0o700


def test_a_looser_data_dir_and_its_private_files_are_tightened_with_warnings(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    private = ["tether.sqlite3", "tether.sqlite3-wal", "tether.sqlite3-shm",
               "tether.sqlite3.lock", "cookie.key", "vapid-token.json"]
    for name in [*private, "notes.txt"]:
        (data / name).write_text("x")
        (data / name).chmod(0o644)
    (data / "sessions" / "abc").mkdir(parents=True)
    (data / "sessions" / "abc" / "build.token").write_text("x")  # an agent's file
    (data / "sessions" / "abc" / "build.token").chmod(0o644)

    warnings = prepare(data)

    assert mode(data) == 0o700
    assert {name: mode(data / name) for name in private} == dict.fromkeys(private, 0o600)
    assert mode(data / "notes.txt") == 0o644  # not Tether's
    assert mode(data / "sessions" / "abc" / "build.token") == 0o644  # workspaces keep theirs
    assert len(warnings) == 1 + len(private)
    assert all(any(str(data / name) in w for w in warnings) for name in private)
    assert any(f"{data} was open to other users (mode 0755)" in w and "now 0700" in w
               for w in warnings)
    assert prepare(data) == []  # nothing left to tighten


def test_prepare_keeps_tighter_modes_and_leaves_symlinks_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "tether.sqlite3").write_text("x")
    (data / "tether.sqlite3").chmod(0o400)
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("x")
    elsewhere.chmod(0o644)
    (data / "linked.key").symlink_to(elsewhere)
    assert prepare(data) == []
    assert mode(data / "tether.sqlite3") == 0o400
    assert mode(elsewhere) == 0o644


@pytest.mark.usefixtures("wide_umask")
def test_private_file_is_0600_from_creation_and_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    private_file(path, b"first\n")
    assert mode(path) == 0o600 and path.read_bytes() == b"first\n"
    path.chmod(0o644)
    private_file(path, b"second\n")
    assert mode(path) == 0o600 and path.read_bytes() == b"second\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.key"]  # no temp file left


@pytest.mark.usefixtures("wide_umask")
def test_read_or_create_makes_the_value_once_and_reads_it_back(tmp_path: Path) -> None:
    path = tmp_path / "cookie.key"
    calls = []

    def make() -> str:
        calls.append(1)
        return "generated-value"

    assert read_or_create(path, make) == "generated-value"
    assert mode(path) == 0o600
    assert read_or_create(path, make) == "generated-value"
    assert calls == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cookie.key"]


def test_read_or_create_tightens_a_looser_file_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cookie.key"
    path.write_text("  operator-made \n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="tether.datadir"):
        assert read_or_create(path, lambda: "unused") == "operator-made"
    assert mode(path) == 0o600
    assert f"{path} was open to other users (mode 0644)" in caplog.text


def test_read_or_create_refuses_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "cookie.key"
    path.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        read_or_create(path, lambda: "unused")


def test_concurrent_read_or_create_agree_on_one_value(tmp_path: Path) -> None:
    path = tmp_path / "cookie.key"
    barrier = threading.Barrier(8)
    results: list[str] = []

    def make() -> str:
        barrier.wait(5)  # every caller found the file missing and is making its own
        return f"value-{threading.get_ident()}"

    threads = [threading.Thread(target=lambda: results.append(read_or_create(path, make)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 8 and len(set(results)) == 1
    assert path.read_text().strip() == results[0]


@pytest.mark.usefixtures("wide_umask")
def test_the_registry_prepares_the_data_dir_at_start(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    settings = Settings.from_env({"TETHER_DATA_DIR": data, "TETHER_STORE": "sqlite"})
    with caplog.at_level(logging.WARNING, logger="tether.sessions"):
        registry = SessionRegistry(settings)
    try:
        session = registry.create("local")
        assert f"{data} was open to other users (mode 0777)" in caplog.text
        assert mode(data) == 0o700
        for name in ("tether.sqlite3", "tether.sqlite3-wal", "tether.sqlite3-shm",
                     "tether.sqlite3.lock"):
            assert mode(data / name) == 0o600, name
        # The umask is the process's own: a workspace inside keeps ordinary modes.
        assert mode(session.workspace) == 0o777
    finally:
        registry.shutdown()
