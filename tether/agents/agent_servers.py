"""More agents from ``TETHER_AGENT_SERVERS``: any program that speaks the Agent Client Protocol.

The file is JSON in the shape of Zed's ``agent_servers`` setting (zed.dev/docs/ai/
external-agents, "custom agents")::

    {
      "my-agent": {"command": "/usr/local/bin/my-agent", "args": ["--acp"],
                   "env": {"MY_AGENT_LOG": "warn"}}
    }

Each entry becomes an :class:`AcpServerAgent` named by its key, driven by
:class:`tether.agents.acp.AcpDriver`. ``args`` and ``env`` are optional; ``env`` is added to
the environment every agent gets (:func:`tether.agents.base.inherited_env`, Tether's secrets
withheld). A name may not shadow a built-in agent (:data:`BUILTIN_NAMES`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from tether.agents.acp import AcpDriver
from tether.agents.base import WITHHELD, inherited_env
from tether.agents.driver import DriverContext

#: The agents Tether itself offers; an entry may not take their names.
BUILTIN_NAMES = ("claude", "local", "codex", "gemini")
#: What an agent's name may be: it is used in URLs and the agent picker.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class AgentServersError(ValueError):
    """``TETHER_AGENT_SERVERS`` names a file Tether cannot use; the message names the file and
    the entry."""


class AcpServerAgent:
    """One ``TETHER_AGENT_SERVERS`` entry (:class:`tether.agents.base.AgentSpec`)."""

    known_commands: list[dict[str, Any]] | None = None
    known_models: list[dict[str, Any]] | None = None
    refused_commands: dict[str, str] = {}

    def __init__(self, name: str, command: str, args: list[str], env: Mapping[str, str],
                 source: Path | None = None) -> None:
        self.name = name
        self.command = command
        self.args = list(args)
        self.extra_env = dict(env)
        self.source = source
        self.description = (f"{name}: an Agent Client Protocol agent ({Path(command).name}), "
                            "from TETHER_AGENT_SERVERS.")

    def resolve_command(self) -> str | None:
        """The executable: ``command`` itself when it is a path, else found on ``PATH``."""
        if os.sep in self.command:
            return self.command if os.access(self.command, os.X_OK) else None
        return shutil.which(self.command)

    def unavailable(self) -> str | None:
        if self.resolve_command() is None:
            return (f"{self.command!r} is not an executable on this machine: fix the "
                    f"{self.name!r} entry of TETHER_AGENT_SERVERS ({self.source})")
        return None

    def argv(self, agent_session_id: str, resume: bool) -> list[str]:
        """The session is opened over ACP, not on the command line."""
        return [self.resolve_command() or self.command, *self.args]

    def env(self) -> dict[str, str]:
        return inherited_env(**self.extra_env)

    def driver(self, context: DriverContext) -> AcpDriver:
        return AcpDriver(context)


def load_agent_servers(path: Path | str, builtin_names: Collection[str] = BUILTIN_NAMES
                       ) -> list[AcpServerAgent]:
    """The agents ``path`` lists, in its order.

    :raises AgentServersError: the file cannot be read or is not JSON, is not an object, or
        an entry has a bad name (or one of ``builtin_names``), is not an object, has a
        missing or blank ``command``, ``args`` that are not a list of strings, or ``env``
        that is not an object of strings or that sets one of Tether's secret settings.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise AgentServersError(f"TETHER_AGENT_SERVERS: cannot read {path}: "
                                f"{e.strerror or e}") from None
    except ValueError as e:
        raise AgentServersError(f"TETHER_AGENT_SERVERS: {path} is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise AgentServersError(f"TETHER_AGENT_SERVERS: {path} must hold a JSON object of "
                                'agents, like {"my-agent": {"command": "my-agent"}}')
    return [_entry(path, name, entry, builtin_names) for name, entry in data.items()]


def _entry(path: Path, name: str, entry: Any, builtin_names: Collection[str]
           ) -> AcpServerAgent:
    where = f"TETHER_AGENT_SERVERS: {path}, entry {name!r}"
    if not NAME.fullmatch(name):
        raise AgentServersError(f"{where}: a name is 1-64 letters, digits, '_', '.' or '-'")
    if name in builtin_names:
        raise AgentServersError(f"{where}: the name is a built-in agent's "
                                f"({', '.join(builtin_names)}); choose another")
    if not isinstance(entry, dict):
        raise AgentServersError(f"{where}: must be an object with a \"command\"")
    command = entry.get("command")
    if not isinstance(command, str) or not command.strip():
        raise AgentServersError(f"{where}: \"command\" must be a non-blank string")
    args = entry.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise AgentServersError(f"{where}: \"args\" must be a list of strings")
    env = entry.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise AgentServersError(f"{where}: \"env\" must be an object of strings")
    withheld = sorted(set(env) & WITHHELD)
    if withheld:
        raise AgentServersError(f"{where}: \"env\" may not set {', '.join(withheld)}: "
                                "Tether never passes its secrets to an agent")
    return AcpServerAgent(name, command.strip(), args, env, path)
