"""The one interface between the turn runner and an agent's protocol.

A :class:`Driver` speaks one agent CLI's protocol over the process's stdin and stdout (one
JSON object per line each way): Claude Code's stream-json + control protocol
(``tether.agents.claude_driver``), Codex's ``app-server`` (``tether.agents.codex``), the
Agent Client Protocol (``tether.agents.acp``). The runner (``tether.runner``) knows no
protocol: it owns the process, the event log, the prompt registry, timeouts and Stop, and it
does what the driver's :data:`Action` list says.

A driver is *sans-IO*: every method takes what happened (a message the agent printed, a
person's answer, Stop) and returns the actions it causes; it never writes to the process,
the log or the registry itself, and never imports them (``make lint`` checks it). So each
driver is tested message by message from recorded real output, with no process at all.

The runner calls one driver from one thread at a time (it holds a lock around each call), so
a driver needs no lock of its own. :meth:`Driver.receive`'s actions are carried out on the
turn's thread, in order; :meth:`~Driver.answer`'s and :meth:`~Driver.interrupt`'s may be
carried out on another, and only their :class:`Send` and :class:`Emit` count there (events
are dropped once the turn is ending); :meth:`~Driver.start`'s and :meth:`~Driver.configure`'s
must be :class:`Send` only. One driver instance serves one agent process, across
that process's turns; a new process (after the idle timeout, a restart, a takeover) gets a
new driver, started with ``resume=True`` once the agent has named its session (:class:`Started`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

# -- what a driver returns ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``message`` to the agent's stdin as one JSON line."""

    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Emit:
    """Append one event to the session's log: ``kind`` and ``payload`` as DESIGN.md section 3
    (and docs/protocol.md) define them. ``turn_end``, ``*_request`` and ``*_resolved`` are
    the runner's, never a driver's."""

    kind: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Ask:
    """The agent waits for a person: open an approval or a question in the registry.

    ``token`` is the driver's own handle for the request (the agent's JSON-RPC id, say); the
    runner passes it back to :meth:`Driver.answer` once the request is settled.

    ``fields`` for ``kind="approval"``: ``tool_name`` (str), ``input`` (dict), ``tool_use_id``
    (str or None), and any extras the approval card shows (``description``, ``reason``,
    ``cwd``, ``plan``, ``diff``, ``options``: the agent's own choices,
    ``[{"option_id", "label", "kind"}]`` with ACP's kinds ``allow_once`` / ``allow_always`` /
    ``reject_once`` / ``reject_always``).
    ``fields`` for ``kind="clarify"``: ``questions`` (Claude Code's AskUserQuestion shape:
    ``[{"question", "header", "options": [{"label", "description"}], "multiSelect"}]``) and
    ``tool_use_id``.
    """

    token: str
    kind: Literal["approval", "clarify"]
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Withdraw:
    """The agent no longer waits for request ``token``: settle it ``cancelled``."""

    token: str


@dataclass(frozen=True, slots=True)
class Started:
    """The agent's own conversation exists, under ``agent_session_id`` (Claude Code's session
    id, Codex's thread id, ACP's session id): a later process resumes it by that id.

    The driver also emits an ``agent_session`` event with the id (``agent``,
    ``agent_session_id``, ``model``, ``cwd``): the log is how a restarted server or another
    worker learns which conversation to resume (tether.recovery, tether.cluster)."""

    agent_session_id: str


@dataclass(frozen=True, slots=True)
class Ready:
    """The handshake is over (the agent answered ``initialize`` and opened or resumed its
    conversation): the runner stops its start-up timer."""


@dataclass(frozen=True, slots=True)
class Offer:
    """What the agent says it offers, for ``GET /api/agents`` and the session header: its
    models (``[{"id", "name", "default"?}]``), its modes (``[{"id", "name"}]``) and its slash
    commands (``[{"name", "description", ...}]``); None leaves one as it was."""

    models: list[dict[str, Any]] | None = None
    modes: list[dict[str, Any]] | None = None
    commands: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class TurnOver:
    """The agent's turn is over: ``completed`` (its result was appended), ``error`` (it
    failed; the driver emitted an ``error`` or an ``is_error`` result first) or
    ``cancelled`` (it stopped on :meth:`Driver.interrupt`)."""

    reason: Literal["completed", "error", "cancelled"]


Action = Send | Emit | Ask | Withdraw | Started | Ready | Offer | TurnOver


# -- what a driver is given ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """How a person (or a timeout, or Stop) settled a request the driver asked for.

    :ivar decision: ``allow``, ``deny``, or ``cancelled`` (Stop, the agent withdrew it, the
        session went away: most protocols then want no answer, ACP wants ``cancelled``).
    :ivar message: the person's words to the agent (a deny's reason), or the timeout's.
    :ivar option_id: the agent's own option the person picked (ACP ``optionId``; Codex's
        ``acceptForSession``), when the card offered the agent's options.
    :ivar scope: ``session`` for "allow for this session" (Codex ``acceptForSession``, ACP
        an ``allow_always`` option), else ``once``.
    :ivar answers: a question's answers, ``{question text: answer}``.
    :ivar updated_input: an edited tool input (Claude Code's edit-then-allow).
    :ivar updated_permissions: Claude Code's permission rules to add (its
        ``permission_suggestions``).
    """

    decision: Literal["allow", "deny", "cancelled"]
    message: str | None = None
    option_id: str | None = None
    scope: Literal["once", "session"] = "once"
    answers: Mapping[str, str] | None = None
    updated_input: Mapping[str, Any] | None = None
    updated_permissions: list[Any] | None = None


@dataclass(frozen=True, slots=True)
class Prompt:
    """One user turn: ``text`` and ``images`` (``[{"media_type", "data"}]``, ``data`` in
    base64), images first in the agent's message."""

    text: str
    images: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DriverContext:
    """What a driver knows of its session.

    :ivar agent: the agent's name (``claude``, ``codex``, a ``TETHER_AGENT_SERVERS`` entry),
        reported in ``agent_session``.
    :ivar workspace: the session's folder, absolute: the agent's ``cwd``, and the only place
        an ACP ``fs/*`` request may touch.
    :ivar model: the model the session runs, or ``default``.
    :ivar permission_mode: the session's mode (the agent's own mode names).
    :ivar refused_commands: ``{name: reason}``: slash commands the agent refuses headless.
    :ivar transcript: the conversation so far from Tether's own log, as text (for an agent
        that cannot restore its own history: ACP without ``session/load``); None when there
        is none.
    """

    agent: str
    workspace: Path
    model: str = "default"
    permission_mode: str = "default"
    refused_commands: Mapping[str, str] = field(default_factory=dict)
    transcript: Callable[[], str | None] = lambda: None


class Driver(Protocol):
    """One agent process's protocol (see the module docstring).

    :attr:`ready` is False until the handshake is over; the runner then fails the turn if
    :class:`Ready` does not come within its start-up timeout (a CLI that never answers
    ``initialize``). A driver that needs no handshake is ready at once.
    """

    ready: bool

    def start(self, agent_session_id: str | None, resume: bool) -> list[Action]:
        """The first messages to a new process: the handshake, then open the conversation
        ``agent_session_id`` (resume it when ``resume``; None: a new one)."""

    def prompt(self, prompt: Prompt) -> list[Action]:
        """Send one user turn. Before :class:`Ready` a driver holds it and sends it once the
        handshake is over."""

    def receive(self, message: Mapping[str, Any]) -> list[Action]:
        """One JSON object the agent printed on stdout."""

    def answer(self, token: str, answer: Answer) -> list[Action]:
        """A request the driver asked for (:class:`Ask`) was settled."""

    def interrupt(self) -> list[Action]:
        """Stop the turn (a person's Stop, the turn timeout). The driver answers its own
        pending requests as its protocol wants; the runner settles them ``cancelled`` in the
        registry, and kills the process if no :class:`TurnOver` comes in the grace period."""

    def configure(self, model: str | None, permission_mode: str | None) -> list[Action]:
        """The session's model or mode changed (None: unchanged), between or during turns:
        tell the live process if the protocol can (else the next process starts with it)."""

    def closed(self) -> list[Action]:
        """stdout ended. What is left to say (usually nothing: the runner reports the exit
        code and stderr)."""
