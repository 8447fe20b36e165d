"""The built-in agents: ``claude`` (Claude Code) and ``local`` (offline, embedded)."""

from __future__ import annotations

import os
import sys

from tether.agents.base import AgentCatalog, inherited_env
from tether.agents.claude import STREAM_JSON_FLAGS, session_flag
from tether.config import Settings


class ClaudeAgent:
    """Claude Code (``@anthropic-ai/claude-code``), driven as the Claude Agent SDK drives it."""

    name = "claude"
    description = "Claude Code: a real coding agent (needs the claude CLI and an API key)."

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def available(self) -> bool:
        path = self._settings.resolve_claude_bin()
        return bool(path) and os.access(path, os.X_OK)  # type: ignore[arg-type]

    def argv(self, agent_session_id: str, resume: bool) -> list[str]:
        binary = self._settings.resolve_claude_bin() or "claude"
        return [binary, *STREAM_JSON_FLAGS, session_flag(agent_session_id, resume)]

    def env(self) -> dict[str, str]:
        # CLAUDE_CODE_ENTRYPOINT as the SDK sets it (PROTOCOLS.md 1.1).
        return inherited_env(CLAUDE_CODE_ENTRYPOINT="sdk-py")


class LocalAgent:
    """``python -m tether.agents.local``: no model, no key, no network; the same protocol."""

    name = "local"
    description = ("Local helper: runs shell commands you approve ($ cmd), diagnostics "
                   "(triage, disk, memory, processes) and questions (ask). No API key.")

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def available(self) -> bool:
        return True

    def argv(self, agent_session_id: str, resume: bool) -> list[str]:
        return [sys.executable, "-m", "tether.agents.local", *STREAM_JSON_FLAGS,
                session_flag(agent_session_id, resume),
                f"--command-timeout={self._settings.command_timeout_seconds:g}",
                f"--word-delay={self._settings.local_word_delay_seconds:g}"]

    def env(self) -> dict[str, str]:
        # The agent imports ``tether``: make sure it finds this very package.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        return inherited_env(PYTHONPATH=path, PYTHONUNBUFFERED="1")


def default_catalog(settings: Settings) -> AgentCatalog:
    return AgentCatalog([LocalAgent(settings), ClaudeAgent(settings)])
