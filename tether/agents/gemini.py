"""Gemini CLI (``@google/gemini-cli``), driven over the Agent Client Protocol (``--acp``).

Observed with gemini 0.61.0 (PROTOCOLS.md 4.2, 4.3; tests/fixtures/gemini/): ``gemini --acp
--skip-trust`` speaks ACP on stdio (``--skip-trust`` so that a folder it has not seen does
not stop it); ``session/new`` lists the modes ``default``, ``autoEdit``, ``yolo``, ``plan``
and the models; ``-m``/``--model`` picks the model at start. The protocol is
:class:`tether.agents.acp.AcpDriver`'s.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tether.agents.acp import AcpDriver
from tether.agents.base import inherited_env
from tether.agents.driver import DriverContext
from tether.agents.modes import DEFAULT_MODEL, GEMINI_MODELS, GEMINI_PERMISSION_MODES
from tether.config import Settings

#: Environment variables with which Gemini CLI needs no login of its own (its docs,
#: "Authentication": an API key, or Vertex AI).
GEMINI_CREDENTIAL_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI",
                               "GOOGLE_GENAI_USE_GCA")
#: The flags of every Gemini process Tether starts (observed with gemini 0.61.0).
ACP_FLAGS = ("--acp", "--skip-trust")


def gemini_login_missing(environ: Mapping[str, str]) -> str | None:
    """Why Gemini CLI would refuse to start a session, or None when it has a credential: one
    of :data:`GEMINI_CREDENTIAL_VARIABLES`, or a login stored by ``gemini`` itself in
    ``$HOME/.gemini`` (``oauth_creds.json``, or an auth type chosen in ``settings.json``)."""
    if any(environ.get(name) for name in GEMINI_CREDENTIAL_VARIABLES):
        return None
    home = Path(environ.get("HOME") or os.path.expanduser("~")) / ".gemini"
    if (home / "oauth_creds.json").is_file():
        return None
    try:
        settings = json.loads((home / "settings.json").read_text())
        if settings.get("security", {}).get("auth", {}).get("selectedType"):
            return None
    except (OSError, ValueError, AttributeError):
        pass
    return ("Gemini CLI has no login it can use from here: set GEMINI_API_KEY in Tether's "
            f"environment, or run `gemini` once in a terminal to log in (looked in {home})")


class GeminiAgent:
    """Gemini CLI over ACP (:class:`tether.agents.base.AgentSpec`)."""

    name = "gemini"
    description = ("Gemini CLI: Google's coding agent, over the Agent Client Protocol "
                   "(needs the gemini CLI and a Gemini API key or login).")
    known_commands: list[dict[str, Any]] | None = None
    permission_modes = GEMINI_PERMISSION_MODES
    static_models = GEMINI_MODELS
    known_models: list[dict[str, Any]] | None = None
    refused_commands: dict[str, str] = {}

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def unavailable(self) -> str | None:
        path = self._settings.resolve_gemini_bin()
        if not path or not os.access(path, os.X_OK):
            return ("the gemini CLI is not installed: `npm install -g @google/gemini-cli` (or "
                    "`make gemini-cli`, the version the tests drive, under .tools/), or set "
                    "TETHER_GEMINI_BIN")
        return gemini_login_missing(os.environ)

    def argv(self, agent_session_id: str, resume: bool) -> list[str]:
        """The session is opened over ACP (``session/new`` / ``session/load``), not on the
        command line."""
        return [self._settings.resolve_gemini_bin() or "gemini", *ACP_FLAGS]

    def options_argv(self, model: str, permission_mode: str) -> list[str]:
        """``--model=<id>`` unless the default; the mode is set over ACP
        (``session/set_mode``) once the session is open."""
        return [f"--model={model}"] if model and model != DEFAULT_MODEL else []

    def env(self) -> dict[str, str]:
        return inherited_env()

    def driver(self, context: DriverContext) -> AcpDriver:
        return AcpDriver(context)
