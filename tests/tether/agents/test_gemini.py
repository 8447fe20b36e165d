"""GeminiAgent: how Tether starts Gemini CLI over ACP, and when it says it cannot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tether.agents.acp import AcpDriver
from tether.agents.base import check_options, default_options
from tether.agents.driver import DriverContext
from tether.agents.gemini import GeminiAgent, gemini_login_missing
from tether.config import Settings
from tether.errors import ModeNotAllowed


def agent(tmp_path: Path, binary: str | None = None) -> GeminiAgent:
    return GeminiAgent(Settings.from_env({"data_dir": tmp_path, "gemini_bin": binary}))


def test_argv_is_acp_with_the_model_flag_unless_default(tmp_path: Path) -> None:
    spec = agent(tmp_path, "/opt/gemini")
    assert spec.argv("any-id", True) == ["/opt/gemini", "--acp", "--skip-trust"]
    assert spec.options_argv("gemini-2.5-pro", "yolo") == ["--model=gemini-2.5-pro"]
    assert spec.options_argv("default", "plan") == []
    assert isinstance(spec.driver(DriverContext("gemini", tmp_path)), AcpDriver)


def test_modes_and_models(tmp_path: Path) -> None:
    spec = agent(tmp_path)
    assert default_options(spec) == ("default", "default")
    check_options(spec, "gemini-2.5-pro", "autoEdit", allow_bypass=False)
    with pytest.raises(ModeNotAllowed):
        check_options(spec, None, "yolo", allow_bypass=False)
    check_options(spec, None, "yolo", allow_bypass=True)


def test_a_missing_binary_names_the_setting_and_the_make_target(tmp_path: Path) -> None:
    reason = agent(tmp_path, str(tmp_path / "nope")).unavailable()
    assert reason and "TETHER_GEMINI_BIN" in reason and "make gemini-cli" in reason


def test_resolve_gemini_bin_prefers_the_setting(tmp_path: Path) -> None:
    assert Settings.from_env({"TETHER_GEMINI_BIN": "/x/gemini"}).resolve_gemini_bin() == (
        "/x/gemini")


def test_login(tmp_path: Path) -> None:
    assert gemini_login_missing({"GEMINI_API_KEY": "k", "HOME": str(tmp_path)}) is None
    missing = gemini_login_missing({"HOME": str(tmp_path)})
    assert missing and "GEMINI_API_KEY" in missing
    settings = tmp_path / ".gemini" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"security": {"auth": {"selectedType": "oauth-personal"}}}))
    assert gemini_login_missing({"HOME": str(tmp_path)}) is None
