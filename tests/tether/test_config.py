"""Settings of issue 16: running as root, and whether auto-approve may be switched on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tether.config import Settings, check_user


def test_root_is_refused_without_allow_root_and_the_message_says_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(ValueError, match="refusing to run as root") as refused:
        check_user(Settings.from_env())
    message = str(refused.value)
    assert "server's rights" in message and "root shell" in message
    assert "TETHER_ALLOW_ROOT=1" in message and "dedicated" in message


@pytest.mark.parametrize("value", ["1", "true"])
def test_root_is_allowed_with_allow_root(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("TETHER_ALLOW_ROOT", value)
    check_user(Settings.from_env())


def test_another_user_needs_no_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    check_user(Settings.from_env())
    check_user(Settings.from_env({"TETHER_ALLOW_ROOT": "0"}))


def test_allow_root_is_off_and_auto_approve_allowed_by_default() -> None:
    settings = Settings.from_env()
    assert settings.allow_root is False and settings.allow_auto_approve is True


def test_allow_auto_approve_reads_zero_as_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_ALLOW_AUTO_APPROVE", "0")
    assert Settings.from_env().allow_auto_approve is False


def test_a_bad_boolean_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_ALLOW_ROOT", "maybe")
    with pytest.raises(ValueError, match="TETHER_ALLOW_ROOT"):
        Settings.from_env()


def test_project_roots_are_read_from_the_environment_resolved(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert Settings.from_env().project_roots == ()
    monkeypatch.setenv("TETHER_PROJECT_ROOTS", f"{tmp_path}/a{os.pathsep}{tmp_path}/b/../b")
    assert Settings.from_env().project_roots == ((tmp_path / "a").resolve(),
                                                 (tmp_path / "b").resolve())


@pytest.mark.parametrize("value, needle", [("src", "not an absolute path"),
                                           ("/no/such/folder", "does not exist")])
def test_a_bad_project_root_is_refused_at_start_naming_it(
        monkeypatch: pytest.MonkeyPatch, value: str, needle: str) -> None:
    monkeypatch.setenv("TETHER_PROJECT_ROOTS", value)
    with pytest.raises(ValueError, match="TETHER_PROJECT_ROOTS") as refused:
        Settings.from_env()
    assert needle in str(refused.value) and value in str(refused.value)
