"""What Tether needs to know about an agent CLI: its argv, its environment, whether it exists.

Every built-in agent speaks Claude Code's stream-json + control protocol (``claude.py``);
a CLI with another protocol (codex, gemini) will bring its own driver next to the spec.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

from tether.config import SECRET_SETTINGS
from tether.conversations import SavedConversations
from tether.errors import BadRequest, NotFound


class AgentSpec(Protocol):
    """An agent Tether can start.

    ``argv`` gets the agent session id (a UUID) and whether the agent already has that
    session (then it must resume it rather than start it).

    An agent may also have ``refused_commands``, ``{name: reason}``: slash commands it
    refuses headless, shown unavailable in the ``commands`` event (tether/agents/commands.py).
    """

    name: str
    description: str
    #: The slash commands its newest process listed (any session's; None until one ran):
    #: what a new session's composer offers before its own agent has answered.
    known_commands: list[dict[str, Any]] | None

    def unavailable(self) -> str | None:
        """Why the agent cannot work on this machine (a missing CLI, no login), saying what
        to install or set; None when it can."""

    def argv(self, agent_session_id: str, resume: bool) -> list[str]:
        """The command line; a list, never shell text (DESIGN.md rule 8)."""

    def env(self) -> dict[str, str]:
        """The child's environment: the server's own (:func:`inherited_env`), so API keys and
        base URLs reach it, less Tether's own secrets."""


@dataclass(frozen=True)
class AgentInfo:
    name: str
    available: bool
    description: str
    #: Why it is not available, and what to do; None when it is.
    reason: str | None = None
    #: The slash commands it listed last (:attr:`AgentSpec.known_commands`).
    commands: list[dict[str, Any]] | None = None


class AgentCatalog:
    """The agents this server offers, by name."""

    def __init__(self, agents: list[AgentSpec]) -> None:
        self._agents = {agent.name: agent for agent in agents}

    def get(self, name: str) -> AgentSpec:
        """:raises NotFound: no agent of that name."""
        try:
            return self._agents[name]
        except KeyError:
            raise NotFound(f"no agent named {name!r}; known: {sorted(self._agents)}") from None

    def describe(self) -> list[AgentInfo]:
        infos = []
        for agent in self._agents.values():
            reason = agent.unavailable()
            infos.append(AgentInfo(agent.name, reason is None, agent.description, reason,
                                   getattr(agent, "known_commands", None)))
        return infos

    def with_conversations(self) -> list[str]:
        """The agents whose own saved conversations Tether can list and continue (those
        with a ``conversations()`` method: ``claude``)."""
        return sorted(name for name, agent in self._agents.items()
                      if callable(getattr(agent, "conversations", None)))

    def conversations(self, name: str) -> SavedConversations:
        """Agent ``name``'s saved conversations.

        :raises BadRequest: this server offers no such agent, or the agent keeps no
            conversations Tether can read (the message names those that do).
        """
        agent = self._agents.get(name)
        get = getattr(agent, "conversations", None)
        if agent is None or not callable(get):
            supported = ", ".join(self.with_conversations()) or "none"
            raise BadRequest(f"agent {name[:80]!r} keeps no saved conversations Tether can "
                             f"read; agents that do: {supported}")
        source: SavedConversations = get()
        return source

    def __contains__(self, name: object) -> bool:
        return name in self._agents


#: Never passed to an agent: ``CLAUDECODE`` (the SDK drops it, PROTOCOLS.md 1.1: a CLI that
#: sees it believes it runs nested inside another Claude Code) and Tether's secret settings
#: (an agent that read the token could drive the server, approve its own tool calls
#: included).
WITHHELD = frozenset({"CLAUDECODE", *SECRET_SETTINGS})


def inherited_env(**extra: str) -> dict[str, str]:
    """``os.environ`` plus ``extra``, less every name in :data:`WITHHELD`.

    Everything else is inherited (``ANTHROPIC_API_KEY``, ``PATH``, ``HOME`` …).
    """
    env = {k: v for k, v in os.environ.items() if k not in WITHHELD}
    env.update(extra)
    return env
