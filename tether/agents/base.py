"""What Tether needs to know about an agent CLI: its argv, its environment, whether it exists.

The spec says how to start the CLI; its driver (``tether.agents.driver``) speaks its
protocol. A spec with a ``driver(context)`` method gives its own (Codex's app-server, the
Agent Client Protocol); one without is driven as Claude Code is
(``tether.agents.claude_driver``: ``claude`` and ``local``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

from tether.agents.modes import UNATTENDED_MODES, default_model
from tether.config import SECRET_SETTINGS
from tether.conversations import SavedConversations
from tether.errors import AgentUnavailable, BadRequest, ModeNotAllowed, NotFound


class AgentSpec(Protocol):
    """An agent Tether can start.

    ``argv`` gets the agent session id (a UUID) and whether the agent already has that
    session (then it must resume it rather than start it).

    An agent may also have ``refused_commands``, ``{name: reason}``: slash commands it
    refuses headless, shown unavailable in the ``commands`` event (tether/agents/commands.py);
    and ``driver(context: DriverContext) -> Driver``, the protocol of its processes (absent:
    Claude Code's).
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


#: What an agent without modes or models of its own offers (a spec that names none).
PLAIN_MODES: tuple[str, ...] = ("default",)
PLAIN_MODELS: tuple[dict[str, Any], ...] = ({"id": "default", "name": "Default",
                                             "default": True},)


def permission_modes(spec: AgentSpec) -> tuple[str, ...]:
    """The permission modes ``spec`` takes, its default first: what its newest process
    offered (``known_modes``, ``[{"id", "name"}]``: an ACP agent's ``modes``), else its own
    list (``permission_modes``)."""
    known = getattr(spec, "known_modes", None)
    if known:
        ids = tuple(str(m["id"]) for m in known if isinstance(m, dict) and m.get("id"))
        if ids:
            return ids
    return tuple(getattr(spec, "permission_modes", PLAIN_MODES))


def models(spec: AgentSpec) -> tuple[list[dict[str, Any]], str]:
    """``(models, source)``: what the agent's newest process listed in its ``initialize``
    answer (``known_models``; source ``"agent"``), else its static list (``static_models``;
    source ``"static"``): ``[{"id", "name", "default"?}]``, the default marked."""
    known = getattr(spec, "known_models", None)
    if known:
        return [dict(m) for m in known], "agent"
    return [dict(m) for m in getattr(spec, "static_models", PLAIN_MODELS)], "static"


def options_argv(spec: AgentSpec, model: str, permission_mode: str) -> list[str]:
    """The flags that start the agent with ``model`` and ``permission_mode``
    (``spec.options_argv``; none for a spec without it)."""
    build = getattr(spec, "options_argv", None)
    return list(build(model, permission_mode)) if callable(build) else []


def check_options(spec: AgentSpec, model: str | None, permission_mode: str | None,
                  allow_bypass: bool) -> None:
    """Check a session's model and permission mode against what ``spec`` offers (None: not
    asked for).

    :raises BadRequest: a model or mode the agent does not offer (the message names the
        allowed ones).
    :raises ModeNotAllowed: a mode that runs tools without asking a person
        (:data:`~tether.agents.modes.UNATTENDED_MODES`) and ``allow_bypass`` is off
        (``TETHER_ALLOW_BYPASS``).
    """
    if permission_mode is not None:
        modes = permission_modes(spec)
        if permission_mode not in modes:
            raise BadRequest(f"permission_mode {permission_mode[:60]!r} is not one of the "
                             f"{spec.name} agent's: {', '.join(modes)}")
        if permission_mode in UNATTENDED_MODES and not allow_bypass:
            raise ModeNotAllowed(
                f"permission mode {permission_mode!r} runs tools without asking anyone, and "
                "this server does not allow it (start it with TETHER_ALLOW_BYPASS=1)")
    if model is not None:
        listed, _ = models(spec)
        ids = [m["id"] for m in listed]
        if model not in ids:
            raise BadRequest(f"model {model[:80]!r} is not one of the {spec.name} agent's: "
                             f"{', '.join(ids)}")


def check_available(spec: AgentSpec) -> None:
    """:raises AgentUnavailable: ``spec`` cannot run here (:meth:`AgentSpec.unavailable`
    says why, naming the setting or the install that fixes it)."""
    reason = spec.unavailable()
    if reason is not None:
        raise AgentUnavailable(f"the {spec.name} agent is not available: {reason}")


def default_options(spec: AgentSpec) -> tuple[str, str]:
    """``(model, permission_mode)`` a new session of ``spec`` starts with."""
    return default_model(models(spec)[0]), permission_modes(spec)[0]


@dataclass(frozen=True)
class AgentInfo:
    name: str
    available: bool
    description: str
    #: Why it is not available, and what to do; None when it is.
    reason: str | None = None
    #: The slash commands it listed last (:attr:`AgentSpec.known_commands`).
    commands: list[dict[str, Any]] | None = None
    #: Its permission modes, default first (:func:`permission_modes`).
    permission_modes: tuple[str, ...] = PLAIN_MODES
    #: Its models, the default marked, and where the list comes from (:func:`models`).
    models: tuple[dict[str, Any], ...] = PLAIN_MODELS
    models_source: str = "static"


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
            listed, source = models(agent)
            infos.append(AgentInfo(agent.name, reason is None, agent.description, reason,
                                   getattr(agent, "known_commands", None),
                                   permission_modes(agent), tuple(listed), source))
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
