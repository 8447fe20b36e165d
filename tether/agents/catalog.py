"""The agents a server offers: the built-in ``claude`` (Claude Code), ``codex`` (OpenAI
Codex), ``gemini`` (Gemini CLI over ACP) and ``local`` (offline, embedded), then every Agent
Client Protocol agent of ``TETHER_AGENT_SERVERS``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tether.agents.agent_servers import load_agent_servers
from tether.agents.base import AgentCatalog, AgentSpec, inherited_env
from tether.agents.claude import STREAM_JSON_FLAGS, session_flag
from tether.agents.codex import CodexAgent
from tether.agents.commands import CLAUDE_HEADLESS_REFUSED
from tether.agents.gemini import GeminiAgent
from tether.agents.modes import CLAUDE_MODELS, CLAUDE_PERMISSION_MODES, DEFAULT_MODEL
from tether.config import Settings
from tether.conversations import ClaudeConversations, claude_config_dir

#: Environment variables with which Claude Code needs no login of its own: an API key, a
#: token from `claude setup-token`, or a third-party provider (Claude Code docs, "Identity and
#: Access Management" and "Third-party integrations"; checked against CLI 2.1.328).
CLAUDE_CREDENTIAL_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN",
                               "CLAUDE_CODE_OAUTH_TOKEN", "CLAUDE_CODE_USE_BEDROCK",
                               "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY")


def claude_login_missing(environ: Mapping[str, str]) -> str | None:
    """Why Claude Code would answer "Not logged in" in headless mode, or None when it has a
    credential: one of :data:`CLAUDE_CREDENTIAL_VARIABLES`, or a login stored by `claude
    /login` (``.credentials.json`` in ``CLAUDE_CONFIG_DIR``, else ``~/.claude``; the macOS
    keychain is not looked at), or an ``apiKeyHelper`` in its ``settings.json``.
    ``/login`` itself cannot run headless, so this is checked before a session starts."""
    if any(environ.get(name) for name in CLAUDE_CREDENTIAL_VARIABLES):
        return None
    home = environ.get("HOME") or os.path.expanduser("~")
    config = Path(environ.get("CLAUDE_CONFIG_DIR") or Path(home) / ".claude")
    if (config / ".credentials.json").is_file():
        return None
    try:
        if "apiKeyHelper" in json.loads((config / "settings.json").read_text()):
            return None
    except (OSError, ValueError, TypeError):
        pass
    return ("Claude Code is not logged in, and cannot log in from here: set ANTHROPIC_API_KEY, "
            "or CLAUDE_CODE_OAUTH_TOKEN (a subscription: run `claude setup-token` once), in "
            f"Tether's environment, or run Tether with a HOME where `claude` is logged in "
            f"(looked in {config})")


def mode_flags(model: str, permission_mode: str) -> list[str]:
    """``--model=`` and ``--permission-mode=`` (PROTOCOLS.md 1.4), each left out when it is
    the default; the equals form, so that a value cannot become a flag."""
    flags = []
    if model and model != DEFAULT_MODEL:
        flags.append(f"--model={model}")
    if permission_mode and permission_mode != "default":
        flags.append(f"--permission-mode={permission_mode}")
    return flags


class ClaudeAgent:
    """Claude Code (``@anthropic-ai/claude-code``), driven as the Claude Agent SDK drives it."""

    name = "claude"
    description = "Claude Code: a real coding agent (needs the claude CLI and an API key)."
    known_commands: list[dict[str, Any]] | None = None
    #: Modes and models (tether.agents.modes); ``known_models`` is what the newest process's
    #: ``initialize`` answer listed (None until one ran).
    permission_modes = CLAUDE_PERMISSION_MODES
    static_models = CLAUDE_MODELS
    known_models: list[dict[str, Any]] | None = None
    #: Modes a live process refuses (``bypass_not_launched``, 2.1.328): the host starts a
    #: new process in them (tether.runner.AgentHost.configure).
    launch_only_modes = frozenset({"bypassPermissions"})
    #: Slash commands it refuses headless, with the reason the composer shows.
    refused_commands = CLAUDE_HEADLESS_REFUSED

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._conversations: dict[Path, ClaudeConversations] = {}

    def unavailable(self) -> str | None:
        path = self._settings.resolve_claude_bin()
        if not path or not os.access(path, os.X_OK):
            return ("the claude CLI is not installed: `npm install -g "
                    "@anthropic-ai/claude-code` (or `make claude-code`, the version the tests "
                    "drive, under .tools/), or set TETHER_CLAUDE_BIN")
        return claude_login_missing(os.environ)

    def argv(self, agent_session_id: str, resume: bool) -> list[str]:
        binary = self._settings.resolve_claude_bin() or "claude"
        return [binary, *STREAM_JSON_FLAGS, session_flag(agent_session_id, resume)]

    def options_argv(self, model: str, permission_mode: str) -> list[str]:
        return mode_flags(model, permission_mode)

    def env(self) -> dict[str, str]:
        # CLAUDE_CODE_ENTRYPOINT as the SDK sets it (PROTOCOLS.md 1.1).
        return inherited_env(CLAUDE_CODE_ENTRYPOINT="sdk-py")

    def conversations(self) -> ClaudeConversations:
        """The conversations Claude Code saved, where the agent Tether starts keeps them: in
        the configuration directory of the environment :meth:`env` gives it (the server's
        ``CLAUDE_CONFIG_DIR``, else its ``HOME``)."""
        config = claude_config_dir(self.env())
        if config not in self._conversations:  # one each, for its cache of listings
            self._conversations[config] = ClaudeConversations(config)
        return self._conversations[config]


class LocalAgent:
    """``python -m tether.agents.local``: no model, no key, no network; the same protocol."""

    name = "local"
    known_commands: list[dict[str, Any]] | None = None
    description = ("Local helper: runs shell commands you approve ($ cmd), diagnostics "
                   "(triage, disk, memory, processes) and questions (ask). No API key.")
    refused_commands: dict[str, str] = {}
    #: The modes tether.agents.local emulates (``plan`` refuses commands and presents a plan
    #: through ExitPlanMode; ``bypassPermissions`` runs them without asking).
    permission_modes = ("default", "acceptEdits", "plan", "bypassPermissions")
    static_models: tuple[dict[str, Any], ...] = (
        {"id": "local", "name": "Local (no model)", "default": True},)
    known_models: list[dict[str, Any]] | None = None

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def unavailable(self) -> str | None:
        return None

    def options_argv(self, model: str, permission_mode: str) -> list[str]:
        return mode_flags(model if model != "local" else DEFAULT_MODEL, permission_mode)

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
    builtin: list[AgentSpec] = [LocalAgent(settings), ClaudeAgent(settings),
                                CodexAgent(settings), GeminiAgent(settings)]
    # Checked at start already (Settings): a bad file never gets this far.
    declared = load_agent_servers(settings.agent_servers) if settings.agent_servers else []
    return AgentCatalog([*builtin, *declared])
