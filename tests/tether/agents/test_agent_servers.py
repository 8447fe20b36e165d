"""TETHER_AGENT_SERVERS: the file of ACP agents (Zed's ``agent_servers`` shape), and its
checks."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tether.agents.acp import AcpDriver
from tether.agents.agent_servers import (
    BUILTIN_NAMES,
    AcpServerAgent,
    AgentServersError,
    load_agent_servers,
)
from tether.agents.driver import DriverContext
from tether.config import Settings


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "agents.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_entries_become_agents_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, {
        "mine": {"command": sys.executable, "args": ["-m", "agent"], "env": {"A": "1"}},
        "other": {"command": "definitely-not-installed-xyz"}})
    mine, other = load_agent_servers(path, BUILTIN_NAMES)
    assert isinstance(mine, AcpServerAgent) and mine.name == "mine"
    assert mine.argv("ignored", True) == [sys.executable, "-m", "agent"]
    assert mine.env()["A"] == "1" and mine.unavailable() is None
    assert isinstance(mine.driver(DriverContext("mine", tmp_path)), AcpDriver)
    assert other.args == [] and other.extra_env == {}
    reason = other.unavailable()
    assert reason and "'other'" in reason and str(path) in reason


@pytest.mark.parametrize(("data", "words"), [
    ("{not json", "is not JSON"),
    ([], "must hold a JSON object"),
    ({"a": "cmd"}, "entry 'a': must be an object"),
    ({"a": {}}, "entry 'a': \"command\" must be a non-blank string"),
    ({"a": {"command": "  "}}, "\"command\" must be a non-blank string"),
    ({"a": {"command": 3}}, "\"command\" must be a non-blank string"),
    ({"a": {"command": "x", "args": "--acp"}}, "\"args\" must be a list of strings"),
    ({"a": {"command": "x", "args": ["--acp", 1]}}, "\"args\" must be a list of strings"),
    ({"a": {"command": "x", "env": ["A=1"]}}, "\"env\" must be an object of strings"),
    ({"a": {"command": "x", "env": {"A": 1}}}, "\"env\" must be an object of strings"),
    ({"a": {"command": "x", "env": {"TETHER_TOKEN": "t"}}}, "may not set TETHER_TOKEN"),
    ({"gemini": {"command": "x"}}, "entry 'gemini': the name is a built-in agent's"),
    ({"claude": {"command": "x"}}, "built-in"),
    ({"local": {"command": "x"}}, "built-in"),
    ({"codex": {"command": "x"}}, "built-in"),
    ({"a b": {"command": "x"}}, "a name is 1-64"),
])
def test_a_bad_file_is_refused_naming_the_file_and_the_entry(tmp_path: Path, data: Any,
                                                             words: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(AgentServersError) as info:
        load_agent_servers(path, BUILTIN_NAMES)
    assert words in str(info.value) and str(path) in str(info.value)
    assert "TETHER_AGENT_SERVERS" in str(info.value)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AgentServersError, match="cannot read"):
        load_agent_servers(tmp_path / "nope.json")


def test_settings_check_the_file_at_start(tmp_path: Path) -> None:
    good = write(tmp_path, {"mine": {"command": "x"}})
    assert Settings.from_env({"TETHER_AGENT_SERVERS": str(good)}).agent_servers == good
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"gemini": {"command": "x"}}))
    refused = "TETHER_AGENT_SERVERS: Value error, /.*bad.json, entry 'gemini'"
    with pytest.raises(ValueError, match=refused):
        Settings.from_env({"TETHER_AGENT_SERVERS": str(bad)})
    assert Settings.from_env({}).agent_servers is None


def test_a_relative_command_is_looked_up_on_path(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    tool = tmp_path / "bin" / "my-acp"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    agent, = load_agent_servers(write(tmp_path, {"a": {"command": "my-acp"}}))
    assert agent.argv("x", False) == [str(tool)]
