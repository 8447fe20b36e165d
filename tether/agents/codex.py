"""Codex (``@openai/codex``), driven as ``codex app-server``: JSON-RPC over stdio, the only
Codex interface with an approval channel (PROTOCOLS.md 3.1, 3.2).

:class:`CodexAgent` is the spec (tether.agents.base.AgentSpec); the protocol is
:class:`~tether.agents.codex_driver.CodexDriver`, re-exported here.
"""

from __future__ import annotations

import os
from typing import Any

from tether.agents.base import inherited_env
from tether.agents.codex_driver import CodexDriver
from tether.agents.codex_items import CODEX_MODES
from tether.agents.driver import DriverContext
from tether.config import Settings

__all__ = ["CODEX_MODELS", "CODEX_PERMISSION_MODES", "CodexAgent", "CodexDriver"]

#: Tether's modes for Codex (:data:`~tether.agents.codex_items.CODEX_MODES`), ``default``
#: (ask before every command and change) first; ``full-access`` is unattended
#: (tether.agents.modes.UNATTENDED_MODES).
CODEX_PERMISSION_MODES = tuple(CODEX_MODES)
#: ``default`` is the model in Codex's own ``config.toml``; the others are what ``model/list``
#: answered with codex 0.171.0 (observed; the first was its ``isDefault``).
CODEX_MODELS: tuple[dict[str, Any], ...] = (
    {"id": "default", "name": "Default (Codex's configured model)", "default": True},
    {"id": "gpt-6.2-sol", "name": "GPT-6.2-Sol"},
    {"id": "gpt-6.2-astra", "name": "GPT-6.2-Astra"},
    {"id": "gpt-6.1-terra", "name": "GPT-6.1 Terra"},
    {"id": "gpt-6.1-sol", "name": "GPT-6.1-Sol"},
)


class CodexAgent:
    """OpenAI's Codex CLI. One process serves a session's turns; a new process resumes the
    thread with ``thread/resume`` (PROTOCOLS.md 3.3)."""

    name = "codex"
    description = ("Codex: OpenAI's coding agent (needs the codex CLI and an OpenAI login or "
                   "API key).")
    known_commands: list[dict[str, Any]] | None = None
    permission_modes = CODEX_PERMISSION_MODES
    static_models = CODEX_MODELS
    known_models: list[dict[str, Any]] | None = None
    refused_commands: dict[str, str] = {}

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def unavailable(self) -> str | None:
        path = self._settings.resolve_codex_bin()
        if not path or not os.access(path, os.X_OK):
            return ("the codex CLI is not installed: `npm install -g @openai/codex` (or `make "
                    "codex-cli`, the version the tests drive, under .tools/), or set "
                    "TETHER_CODEX_BIN")
        return None

    def argv(self, agent_session_id: str, resume: bool) -> list[str]:
        """``[codex, "app-server"]``: the thread to resume goes in ``thread/resume``, not argv."""
        return [self._settings.resolve_codex_bin() or "codex", "app-server"]

    def env(self) -> dict[str, str]:
        return inherited_env()

    def driver(self, context: DriverContext) -> CodexDriver:
        return CodexDriver(context)
