"""Sessions and the registry that owns them: Tether's core.

A :class:`Session` owns its event log, its prompt registry and its agent process; turns run
detached from every client (DESIGN.md rules 1, 4, 5). :class:`SessionRegistry` is what the
transports call: create, get, list and delete sessions. With a durable store
(``TETHER_STORE=sqlite``) the registry restores every session at start and closes the turns a
dead server left open (:mod:`tether.recovery`).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from tether.agents.base import (
    AgentCatalog,
    AgentSpec,
    check_available,
    check_options,
    default_options,
)
from tether.agents.catalog import default_catalog
from tether.agents.modes import UNATTENDED_MODES
from tether.changes import head_commit
from tether.config import Settings
from tether.conversations import History
from tether.datadir import prepare as prepare_data_dir
from tether.errors import (
    AutoApproveDisabled,
    BadRequest,
    ConversationOpen,
    NotADirectory,
    NotFound,
    PathNotAllowed,
    PayloadTooLarge,
    QueueFull,
    SessionBusy,
    ShuttingDown,
    TooManySessions,
)
from tether.images import ImageRef, ImageStore, content_blocks
from tether.inbox import Inbox
from tether.metrics import Metrics
from tether.projects import Projects
from tether.prompts import PendingRequest, PromptRegistry
from tether.recap import recap
from tether.recovery import close_interrupted, scan
from tether.runner import AgentHost, Turn
from tether.stores import open_store
from tether.stores.base import EventLog, SessionRecord, Store
from tether.usage import UsageMeter

logger = logging.getLogger(__name__)

State = Literal["idle", "running", "waiting", "ended"]

#: Longest session title, in characters.
MAX_TITLE_CHARS = 200
#: Longest title the first prompt gives a session, in characters ("…" included).
PROMPT_TITLE_CHARS = 60
#: Most prompts one session's queue holds (409 ``queue_full`` beyond it).
MAX_QUEUED = 20


@dataclass(frozen=True, slots=True)
class QueuedPrompt:
    """A prompt waiting for the running turn to end. ``queue_id``: 32 hex digits;
    ``images``: the images it carries (kept files, :mod:`tether.images`)."""

    queue_id: str
    text: str
    images: tuple[ImageRef, ...] = ()

    def summary(self, n: int) -> dict[str, Any]:
        """Its entry in the session object's ``queue`` (``n``: its position, from 1)."""
        out: dict[str, Any] = {"n": n, "queue_id": self.queue_id, "text": self.text}
        if self.images:
            out["images"] = [ref.as_dict() for ref in self.images]
        return out


def user_payload(turn: int | object, text: str,
                 images: Sequence[ImageRef] = ()) -> dict[str, Any]:
    """A ``user`` event's payload: ``images`` only when it carries some."""
    payload: dict[str, Any] = {"turn": turn, "text": text}
    if images:
        payload["images"] = [ref.as_dict() for ref in images]
    return payload


def images_of(payload: Mapping[str, Any]) -> tuple[ImageRef, ...]:
    """The images a ``user`` or ``prompt_queued`` event carries (bad entries left out)."""
    found = []
    for held in payload.get("images") or ():
        try:
            found.append(ImageRef.from_dict(held))
        except (ValueError, AttributeError):
            continue
    return tuple(found)


class Session:
    """One agent conversation: its log, its pending prompts, its turns.

    :param agent: the agent this session runs (``local``, ``claude``).
    :param workspace: the agent's working directory: its own (created by the registry), or
        a project folder the session was opened in (``projects`` given).
    :param projects: the project roots, for a session opened in a project folder: before
        each turn its folder is checked (:meth:`tether.projects.Projects.check`); a folder
        removed or made unreadable meanwhile gives an ``error`` event and the refusal
        (:class:`~tether.errors.NotADirectory`, :class:`~tether.errors.PathNotAllowed`),
        never a turn in the wrong place. None: the session's own workspace.
    :param on_prompts_changed: called when an approval or question opens or settles (the
        inbox's :meth:`~tether.inbox.Inbox.changed`).
    :param on_record_changed: called with the session when what :meth:`record` returns
        changed (title, auto-approve, a turn ended); the registry saves it in the store.
    :param on_turn_ended: called with ``(reason, seconds)`` when a turn ends (metrics).
    :param title_set: a person chose ``title`` (at creation, or by renaming it since); when
        False the first prompt names the session (:func:`title_from_prompt`).

    Prompts sent while a turn runs may be queued (:meth:`prompt` with ``queue=True``): the
    queue is state the server shows (``queue`` in :meth:`to_dict`; ``prompt_queued`` and
    ``prompt_dequeued`` events) and the user controls (:meth:`send_queued`,
    :meth:`remove_queued`). Its first prompt is sent by itself when a turn ends
    ``completed``; a turn that was stopped, timed out, failed or interrupted leaves it.
    """

    def __init__(self, session_id: str, agent: AgentSpec, title: str, workspace: Path,
                 log: EventLog, settings: Settings, created_at: float,
                 on_prompts_changed: Callable[[], None] | None = None,
                 on_record_changed: Callable[[Session], None] | None = None,
                 on_turn_ended: Callable[[str, float], None] | None = None,
                 on_turn_end: Callable[[int, str], None] | None = None,
                 title_set: bool = True, projects: Projects | None = None,
                 base_commit: str = "", model: str = "", permission_mode: str = "") -> None:
        self.id = session_id
        self.agent = agent
        self.title = title
        self.title_set = title_set
        self.workspace = workspace
        #: The commit HEAD named in the workspace at creation ("" outside git).
        self.base_commit = base_commit
        #: Opened in a project folder (which deleting the session leaves in place).
        self.project = projects is not None
        self._projects = projects
        self.created_at = created_at
        self.log = log
        self.prompts = PromptRegistry(log, settings.prompt_timeout_seconds,
                                      on_change=on_prompts_changed)
        self._on_prompts_changed = on_prompts_changed or (lambda: None)
        self._on_record_changed = on_record_changed or (lambda session: None)
        self._on_turn_ended = on_turn_ended or (lambda reason, seconds: None)
        self._on_turn_end = on_turn_end or (lambda turn, reason: None)
        self._settings = settings
        self._host = AgentHost(agent, workspace, settings)
        self._host.transcript = lambda: recap(self.log.read_after(0))
        self._images = ImageStore(settings.data_dir)
        default_model, default_mode = default_options(agent)
        self._host.model = model or default_model
        self._host.permission_mode = permission_mode or default_mode
        self._lock = threading.Lock()
        self._options_lock = threading.Lock()
        self._turn: Turn | None = None
        self._turns = 0
        self._queue: list[QueuedPrompt] = []
        self._closed = False
        self._shutting_down = False

    @property
    def agent_running(self) -> bool:
        """True while this session's agent process is alive."""
        return self._host.running

    @property
    def agent_session_id(self) -> str:
        return self._host.agent_session_id

    @property
    def auto_approve(self) -> bool:
        return self.prompts.auto_approve

    @property
    def model(self) -> str:
        """The model the agent runs with (an id of ``GET /api/agents``' ``models``)."""
        return self._host.model

    @property
    def permission_mode(self) -> str:
        """The agent's permission mode (``default``, ``plan`` …); the agent may change it by
        itself (Claude Code leaves ``plan`` when its plan is approved)."""
        return self._host.permission_mode

    @property
    def turn_active(self) -> bool:
        return self._turn is not None

    @property
    def turn(self) -> int:
        """The number of the newest turn (0 before the first prompt)."""
        return self._turns

    @property
    def state(self) -> State:
        if self._closed:
            return "ended"
        if self._turn is None:
            return "idle"
        return "waiting" if self.prompts.pending() else "running"

    def submit(self, text: str) -> int:
        """Start a turn with ``text``; returns its number (1, 2, …).

        The ``user`` event is in the log before this returns. The first prompt names a session
        whose title no person chose (:func:`title_from_prompt`).

        :raises SessionBusy: a turn is running (DESIGN.md rule 5: never queued silently).
        :raises BadRequest: empty text, or the session was deleted.
        :raises ShuttingDown: the server is stopping.
        :raises PayloadTooLarge: ``text`` is over ``TETHER_MAX_PROMPT_BYTES`` in UTF-8.
        """
        started = self.prompt(text)
        return started["turn"]

    def prompt(self, text: str, queue: bool = False,
               images: Sequence[ImageRef] = ()) -> dict[str, int]:
        """Start a turn with ``text`` or, with ``queue`` while a turn runs, queue it.

        :param images: kept images the prompt carries (:class:`tether.images.ImageStore`),
            sent to the agent before the text.

        :returns: ``{"turn": n}`` (a turn started; its ``user`` event is in the log), or
            ``{"queued": n}`` (``n`` its position in the queue, from 1; its ``prompt_queued``
            event is in the log).
        :raises SessionBusy: a turn is running and ``queue`` is False.
        :raises QueueFull: the queue holds :data:`MAX_QUEUED` prompts already.
        :raises BadRequest: empty text, or the session was deleted.
        :raises ShuttingDown: the server is stopping.
        :raises PayloadTooLarge: ``text`` is over ``TETHER_MAX_PROMPT_BYTES`` in UTF-8.
        """
        self._check_text(text)
        with self._lock:
            self._check_open()
            if self._turn is not None:
                if not queue:
                    raise SessionBusy(f"turn {self._turns} is still running")
                if len(self._queue) >= MAX_QUEUED:
                    raise QueueFull(f"the queue holds {MAX_QUEUED} prompts, its limit; send or "
                                    "remove one first")
                item = QueuedPrompt(secrets.token_hex(16), text, tuple(images))
                position = len(self._queue) + 1
                queued: dict[str, Any] = {"queue_id": item.queue_id, "position": position,
                                          "text": text}
                if images:
                    queued["images"] = [ref.as_dict() for ref in images]
                self.log.append("prompt_queued", queued)
                self._queue.append(item)  # once the log holds it
                return {"queued": position}
            self._check_folder()
            turn, named = self._start_locked(text, images)
        self._started(turn, named)
        return {"turn": turn.number}

    def send_queued(self, position: int, queue_id: str | None = None) -> int:
        """Send queued prompt ``position`` (from 1) now, as a new turn; returns its number.

        :param queue_id: when given, the prompt at ``position`` must be this one (a client
            that saw an older queue gets :class:`NotFound` rather than another prompt).
        :raises NotFound: no such position (or it holds another prompt).
        :raises SessionBusy: a turn is running (the prompt stays queued).
        :raises BadRequest: the session was deleted.
        :raises ShuttingDown: the server is stopping.
        """
        with self._lock:
            self._check_open()
            index = self._queue_index(position, queue_id)
            if self._turn is not None:
                raise SessionBusy(f"turn {self._turns} is still running; queued prompt "
                                  f"{position} is sent when it ends")
            self._check_folder()
            item = self._queue.pop(index)
            self.log.append("prompt_dequeued", {"queue_id": item.queue_id,
                                                "position": position, "reason": "sent"})
            turn, named = self._start_locked(item.text, item.images)
        self._started(turn, named)
        return turn.number

    def remove_queued(self, position: int, queue_id: str | None = None) -> None:
        """Remove queued prompt ``position`` (from 1); the ones after it move up.

        :param queue_id: as for :meth:`send_queued`.
        :raises NotFound: no such position (or it holds another prompt).
        :raises BadRequest: the session was deleted.
        :raises ShuttingDown: the server is stopping.
        """
        with self._lock:
            self._check_open()
            item = self._queue.pop(self._queue_index(position, queue_id))
            self.log.append("prompt_dequeued", {"queue_id": item.queue_id,
                                                "position": position, "reason": "removed"})

    @property
    def queue(self) -> list[QueuedPrompt]:
        """The queued prompts, first to be sent first."""
        with self._lock:
            return list(self._queue)

    def _check_text(self, text: str) -> None:
        check_prompt(text, self._settings.max_prompt_bytes)

    def _check_open(self) -> None:
        # Under the lock.
        if self._closed:
            if self._shutting_down:
                raise ShuttingDown("the server is shutting down; prompt again once it is "
                                   "back (the session and its log are kept)")
            raise BadRequest("the session was deleted")

    def _check_folder(self) -> None:
        """Under the lock, before a turn starts: a project folder is still there and
        readable. :raises NotADirectory, PathNotAllowed: it is not (an ``error`` event says
        so first)."""
        if self._projects is not None:
            self._projects.check_before_turn(self.workspace, self.log)

    def _folder_ok(self) -> bool:
        """:meth:`_check_folder`, as a yes or no."""
        try:
            self._check_folder()
        except (NotADirectory, PathNotAllowed):
            return False
        except Exception:  # the error event was not written: the queue waits all the same
            logger.exception("session %s: folder check failed", self.id)
            return False
        return True

    def _queue_index(self, position: int, queue_id: str | None) -> int:
        # Under the lock.
        if not 1 <= position <= len(self._queue):
            raise NotFound(f"no queued prompt {position}: the queue holds {len(self._queue)}")
        if queue_id is not None and self._queue[position - 1].queue_id != queue_id:
            raise NotFound(f"queued prompt {position} is not {queue_id[:40]!r} (the queue "
                           "changed); read the session again")
        return position - 1

    def _start_locked(self, text: str,
                      images: Sequence[ImageRef] = ()) -> tuple[Turn, bool]:
        """Under the lock: the next turn, created, its ``user`` event appended (not started).
        :returns: the turn, and whether this prompt named the session."""
        named = False
        if self._turns == 0 and not self.title_set:
            self.title = title_from_prompt(text, self.title)
            named = True
        self._turns += 1
        turn = Turn(self._turns, text, self._host, self.log, self.prompts, self._settings,
                    self._turn_finished, content=self._content(text, images))
        self._turn = turn
        self.log.append("user", user_payload(turn.number, text, images))
        return turn, named

    def _content(self, text: str, images: Sequence[ImageRef]) -> Callable[[], Any] | None:
        """The user message's content for the agent, read when the turn sends it: None
        for text alone."""
        if not images:
            return None
        refs = tuple(images)
        return lambda: content_blocks(self._images, self.id, text, refs)

    def _started(self, turn: Turn, named: bool) -> None:
        """Outside the lock: start ``turn``; tell the inbox and the store of a new title."""
        turn.start()
        if named:
            self._on_prompts_changed()  # inbox entries carry the title
            self._save_record()

    def update(self, title: str | None = None, auto_approve: bool | None = None,
               model: str | None = None, permission_mode: str | None = None,
               by: str = "") -> None:
        """Rename the session, switch auto-approve, change its model or permission mode (None
        leaves a field as it is). A model or mode change is a ``model`` / ``mode`` event
        naming ``by`` (the client), and reaches the agent at once: its live process through
        control requests, during a turn or between turns; otherwise its next process.

        Switching auto-approve on does not settle approvals already pending: a person
        answers those (the card is on screen).

        :raises BadRequest: an empty or too long title (nothing changed).
        :raises AutoApproveDisabled: ``auto_approve`` is True and ``TETHER_ALLOW_AUTO_APPROVE``
            is off (nothing changed; False is accepted: it is what the session has).
        :raises ShuttingDown: the server is stopping (nothing changed).
        :raises BadRequest: a model or mode the agent does not offer (nothing changed).
        :raises ModeNotAllowed: a mode that runs tools unasked without
            ``TETHER_ALLOW_BYPASS=1`` (nothing changed).
        """
        if self._shutting_down:
            raise ShuttingDown("the server is shutting down; change the session once it is "
                               "back")
        check_options(self.agent, model, permission_mode, self._settings.allow_bypass)
        if auto_approve and not self._settings.allow_auto_approve:
            raise AutoApproveDisabled(
                "auto-approve is disabled on this server (TETHER_ALLOW_AUTO_APPROVE=0): every "
                "tool call waits for a person")
        if title is not None:
            self.title = check_title(title)
            self.title_set = True  # a person's title: the first prompt leaves it
            self._on_prompts_changed()  # inbox entries carry the title
        if auto_approve is not None:
            self.prompts.auto_approve = auto_approve
        changed = self._configure(model, permission_mode, by)
        if title is not None or auto_approve is not None or changed:
            self._on_record_changed(self)

    def _configure(self, model: str | None, permission_mode: str | None, by: str) -> bool:
        """Log and apply a model / mode change (checked already); True when one changed.

        One change at a time (``_options_lock``), so the log's order is the agent's; not
        under the session's lock, which a write to an agent that stopped reading its stdin
        would hold for good.
        """
        with self._options_lock:
            if model == self.model:
                model = None
            if permission_mode == self.permission_mode:
                permission_mode = None
            if model is not None:
                self.log.append("model", {"model": model, "by": by})
            if permission_mode is not None:
                self.log.append("mode", {"permission_mode": permission_mode, "by": by})
            self._host.configure(model=model, permission_mode=permission_mode)
        return model is not None or permission_mode is not None

    def cancel(self) -> bool:
        """Stop the running turn (Stop in the UI). False when no turn is running."""
        turn = self._turn
        return turn.cancel("cancelled") if turn is not None else False

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no turn runs; True if idle within ``timeout`` seconds."""
        turn = self._turn
        return True if turn is None else turn.join(timeout)

    def close(self, reason: str = "cancelled") -> None:
        """End the session: cancel its turn, stop its agent, close its log."""
        self.begin_close(reason)
        self.finish_close(self._settings.cancel_grace_seconds * 3 + 5)

    def begin_close(self, reason: str = "cancelled") -> None:
        """Refuse new turns and cancel the running one, without waiting (``turn_end`` reason
        ``reason``)."""
        with self._lock:
            self._closed = True
            self._shutting_down = reason == "interrupted"  # the server is stopping
            turn = self._turn
        if turn is not None:
            turn.cancel(reason)

    def finish_close(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the turn to end, stop the agent, close the log."""
        turn = self._turn
        if turn is not None:
            turn.join(timeout)
        self._host.stop()
        self.log.close()

    def record(self) -> SessionRecord:
        """What the store keeps about this session (besides its log)."""
        return SessionRecord(self.id, self.agent.name, self.title, self.created_at,
                             str(self.workspace), self.auto_approve, self.agent_session_id,
                             self._turns, self.title_set, self.base_commit, self.model,
                             self.permission_mode)

    def restore(self, turns: int, auto_approve: bool, agent_session_id: str,
                resume: bool, queued: list[tuple[str, str, list[Any]]] | None = None,
                session_cost_usd: float = 0.0,
                agent_total_cost_usd: float | None = None,
                session_usage: dict[str, Any] | None = None) -> None:
        """Take back what a previous server knew (the registry restoring from a durable
        store), before any turn runs.

        :param turns: the newest turn number; the next prompt is turn ``turns + 1``.
        :param resume: the agent reported ``agent_session_id`` (``agent_session`` event), so
            the next process continues it (``--resume``) instead of starting it.
        :param auto_approve: what the session had; off whatever it was when
            ``TETHER_ALLOW_AUTO_APPROVE`` is off now.
        :param queued: ``(queue_id, text)`` of the prompts its log shows queued and neither
            sent nor removed (:func:`tether.recovery.scan`); they stay queued until a person
            sends or removes them (the turn they waited for ended with the server).
        :param session_cost_usd: what the session's turns cost so far, and
        :param agent_total_cost_usd: the agent's running total then (its log's newest
            ``result`` says both): a resumed Claude Code carries its total on, so the next
            turn's cost is the difference from it (:class:`~tether.agents.claude.CostMeter`).
        :param session_usage: the session's token and cost totals (:mod:`tether.usage`).
        """
        with self._lock:
            self._turns = turns
            self._queue = [QueuedPrompt(queue_id, text, images_of({"images": images}))
                           for queue_id, text, images in queued or ()]
        self._host.costs.session_usd = session_cost_usd
        self._host.costs.last_total = agent_total_cost_usd
        self._host.usage = UsageMeter(session_usage)
        if auto_approve and not self._settings.allow_auto_approve:
            logger.warning("session %s had auto-approve on; it is off, as "
                           "TETHER_ALLOW_AUTO_APPROVE=0 says", self.id)
            auto_approve = False
        self.prompts.auto_approve = auto_approve
        if self.permission_mode in UNATTENDED_MODES and not self._settings.allow_bypass:
            logger.warning("session %s ran in permission mode %s; it is back to default, as "
                           "TETHER_ALLOW_BYPASS is off", self.id, self.permission_mode)
            self._host.permission_mode = default_options(self.agent)[1]
        if resume:
            self._host.resume(agent_session_id)
        else:
            self._host.agent_session_id = agent_session_id

    def continue_conversation(self, history: History) -> None:
        """Before any turn: make this session the continuation of a conversation the agent
        saved on its own (``--resume`` from its next process on), and show the conversation's
        newest entries as read-only ``history`` events (:func:`continuation_events`)."""
        for kind, payload in continuation_events(self.agent.name, self.workspace, history):
            self.log.append(kind, payload)
        self._host.resume(history.conversation.id)
        self._host.costs.last_total = history.total_cost_usd

    def to_dict(self) -> dict[str, Any]:
        """The session object of DESIGN.md section 4."""
        pending = self.prompts.pending()
        return {
            "id": self.id,
            "agent": self.agent.name,
            "title": self.title,
            "cwd": str(self.workspace),
            "project": self.project,
            "created_at": self.created_at,
            "state": self.state,
            "turn_active": self.turn_active,
            "turn": self._turns,
            "last_event_id": self.log.last_id,
            "agent_session_id": self.agent_session_id,
            "auto_approve": self.auto_approve,
            "usage": dict(self._host.usage.totals),
            "model": self.model,
            "permission_mode": self.permission_mode,
            "queue": [item.summary(n) for n, item in enumerate(self.queue, 1)],
            "pending": {
                "approvals": [p.summary() for p in pending if p.kind == "approval"],
                "clarify": [p.summary() for p in pending if p.kind == "clarify"],
            },
        }

    def _turn_finished(self, turn: Turn, reason: str) -> None:
        # Under the session lock: turn_end and the freed slot are one step, so a client that
        # sees turn_end can prompt again at once, and no prompt slips in before turn_end. A
        # turn that completed sends the first queued prompt in the same step, so no prompt
        # sent meanwhile overtakes the queue.
        follow: Turn | None = None
        with self._lock:
            try:
                self.log.append("turn_end", {"turn": turn.number, "reason": reason})
            except RuntimeError:
                logger.info("session %s closed before turn %s ended", self.id, turn.number)
            if self._turn is turn:
                self._turn = None
            if (reason == "completed" and self._queue and not self._closed
                    and self._folder_ok()):
                item = self._queue.pop(0)
                try:
                    self.log.append("prompt_dequeued", {"queue_id": item.queue_id,
                                                        "position": 1, "reason": "sent"})
                    follow, _ = self._start_locked(item.text, item.images)
                except Exception:  # the store refused the write: the prompt stays queued
                    logger.exception("session %s: queued prompt not sent", self.id)
                    self._queue.insert(0, item)
        self._on_turn_ended(reason, time.monotonic() - turn.started)
        self._on_turn_end(turn.number, reason)
        if follow is not None:
            follow.start()
        self._save_record()

    def _save_record(self) -> None:
        try:
            self._on_record_changed(self)  # the title, the turn counter, the agent session
        except Exception as exc:  # the log already holds the truth; recovery reads it
            logger.warning("session %s: record not saved: %r", self.id, exc)


def title_from_prompt(text: str, fallback: str) -> str:
    """A session's title from its first prompt: the first line that is not blank, its
    whitespace collapsed, at most :data:`PROMPT_TITLE_CHARS` characters, cut at a word
    boundary when it can be and ended with "…" when cut. ``fallback`` when nothing is left."""
    line = next((line for line in text.splitlines() if line.strip()), "")
    title = re.sub(r"\s+", " ", line).strip()
    if not title:
        return fallback
    if len(title) <= PROMPT_TITLE_CHARS:
        return title
    cut = title[:PROMPT_TITLE_CHARS - 1]
    space = cut.rfind(" ")
    if space >= PROMPT_TITLE_CHARS // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"


def continuation_events(agent: str, folder: Path, history: History
                        ) -> list[tuple[str, dict[str, Any]]]:
    """The events that open a session continuing a saved conversation, before its first
    turn: ``agent_session`` with the conversation's id and ``resumed: true`` (so a restart
    resumes it too: :func:`tether.recovery.scan`), then one ``history`` event per entry
    shown (docs/protocol.md, "Conversations started elsewhere")."""
    session: dict[str, Any] = {"agent": agent, "agent_session_id": history.conversation.id,
                               "model": None, "cwd": str(folder), "resumed": True}
    if history.total_cost_usd is not None:
        # The CLI carries its running total on through --resume (CostMeter).
        session["agent_total_cost_usd"] = history.total_cost_usd
    return [("agent_session", session), *(("history", p) for p in history.payloads())]


def check_prompt(text: str, max_bytes: int) -> None:
    """:raises BadRequest: ``text`` is empty or blank.
    :raises PayloadTooLarge: it is over ``max_bytes`` (``TETHER_MAX_PROMPT_BYTES``) in UTF-8.
    """
    if not text.strip():
        raise BadRequest("text must not be empty")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise PayloadTooLarge(f"text is {size} bytes; the limit is {max_bytes} "
                              "(TETHER_MAX_PROMPT_BYTES)")


def own_workspace(data_dir: Path, session_id: str) -> Path:
    """A session's own workspace: ``<TETHER_DATA_DIR>/sessions/<session id>``, resolved."""
    return (data_dir / "sessions" / session_id).resolve()


def is_own_workspace(workspace: Path, session_id: str) -> bool:
    """True when ``workspace`` is a session's own (``…/sessions/<session id>``, wherever the
    data dir was then), False for a project folder it was opened in. Only a session's own
    workspace is ever created for it (and removed with it: see
    :meth:`SessionRegistry._remove_workspace`, which checks more)."""
    return workspace.name == session_id and workspace.parent.name == "sessions"


def check_title(title: str) -> str:
    """A title, stripped. :raises BadRequest: empty, or over :data:`MAX_TITLE_CHARS`."""
    title = title.strip()
    if not title:
        raise BadRequest("title must not be empty")
    if len(title) > MAX_TITLE_CHARS:
        raise BadRequest(f"title is longer than {MAX_TITLE_CHARS} characters")
    return title


class SessionRegistry:
    """Every session of this server. Lock-guarded; the transports' one entry point.

    :param store: where logs and session records live; by default the one
        ``TETHER_STORE`` names (:func:`tether.stores.open_store`). With a durable store every
        session it holds is restored here (see :meth:`_restore`).
    :param agents: the agents offered; the built-ins by default.

    ``TETHER_DATA_DIR`` is created 0700, or tightened to it, and Tether's files in it to 0600
    (:func:`tether.datadir.prepare`; a warning is logged for each path tightened).
    :raises OSError: the data dir cannot be created or its modes changed.
    """

    def __init__(self, settings: Settings, store: Store | None = None,
                 agents: AgentCatalog | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        # The data dir first: 0700, and Tether's files in it 0600 (tether.datadir).
        for warning in prepare_data_dir(settings.data_dir):
            logger.warning(warning)
        self.store: Store = store if store is not None else open_store(settings, clock)
        self.agents = agents if agents is not None else default_catalog(settings)
        #: The folders sessions may be opened in (TETHER_PROJECT_ROOTS).
        self.projects = Projects(settings.project_roots, settings.data_dir)
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._creating = 0  # creates past the limit check, not yet in _sessions
        self._shutting_down = False
        self._deleted_events = 0  # events of deleted sessions, for tether_events_appended
        self._lock = threading.Lock()
        #: Prometheus metrics (tether.metrics); the transports count deliveries in it.
        self.metrics = Metrics(clock)
        self.metrics.watch(self)
        #: Every session's pending approvals and questions (docs/protocol.md). With a
        #: durable store the epoch survives a restart, so revisions must not restart: they
        #: start at the start time in milliseconds, past every revision of a predecessor that
        #: saw fewer than 1,000 inbox changes a second.
        first_revision = int(clock() * 1000) if self.store.durable else 0
        self.inbox = Inbox(self._pending_by_session, self.store.epoch, first_revision)
        #: Called with ``(session_id, turn, reason)`` after each turn this process ran ends
        #: (Web Push's "turn finished": tether.push.dispatch).
        self.turn_listeners: list[Callable[[str, int, str], None]] = []
        self._restore()

    def _turn_end(self, session_id: str, turn: int, reason: str) -> None:
        for listener in list(self.turn_listeners):
            try:
                listener(session_id, turn, reason)
            except Exception:  # a listener never breaks a turn's end
                logger.exception("session %s: a turn listener failed", session_id)

    @property
    def epoch(self) -> str:
        return self.store.epoch

    def create(self, agent: str | None = None, title: str | None = None,
               cwd: str | None = None, model: str | None = None,
               permission_mode: str | None = None, by: str = "",
               resume: str | None = None) -> Session:
        """A new idle session with its own workspace under ``TETHER_DATA_DIR``, or opened in
        the project folder ``cwd`` (resolved; never created, never removed with it), its
        agent run with ``model`` and ``permission_mode`` (None: the agent's defaults; others
        are ``model`` / ``mode`` events naming ``by``, its first ones).

        :param resume: the id of a conversation the agent saved for ``cwd`` on its own
            (:meth:`conversations`): the session continues it (``--resume``), its newest
            entries shown first as ``history`` events, and takes its title unless ``title``
            is given.
        :raises NotFound: no agent of that name; ``resume`` is not an id, or no conversation
            of that id was saved for ``cwd`` (no session is created).
        :raises BadRequest: the title is too long; a model or mode the agent does not offer;
            ``resume`` without ``cwd``, or for an agent that keeps no conversations Tether can
            read.
        :raises ModeNotAllowed: a mode that runs tools unasked without
            ``TETHER_ALLOW_BYPASS=1``.
        :raises AgentUnavailable: the agent cannot run here (its CLI is missing …).
        :raises PathNotAllowed: ``cwd`` is not inside a project root, or not readable
            (:meth:`tether.projects.Projects.resolve`).
        :raises NotADirectory: ``cwd`` is missing, or a file.
        :raises TooManySessions: ``TETHER_MAX_SESSIONS`` sessions exist already.
        :raises ShuttingDown: the server is stopping.
        """
        spec = self.agents.get(agent or self.settings.agent)
        check_available(spec)
        check_options(spec, model, permission_mode, self.settings.allow_bypass)
        title = check_title(title) if title is not None and title.strip() else None
        folder = self.projects.resolve(cwd) if cwd is not None else None
        history = self.saved_history(spec.name, folder, resume) if resume is not None else None
        session_id = secrets.token_hex(16)  # 128 bits: unguessable
        with self._lock:
            if self._shutting_down:
                raise ShuttingDown("the server is shutting down; create the session once it "
                                   "is back")
            # Counted and reserved under the lock, so concurrent creates cannot overshoot.
            if len(self._sessions) + self._creating >= self.settings.max_sessions:
                raise TooManySessions(
                    f"this server holds {self.settings.max_sessions} sessions, its limit "
                    "(TETHER_MAX_SESSIONS); delete one first")
            self._creating += 1
        try:
            workspace = folder or own_workspace(self.settings.data_dir, session_id)
            if folder is None:
                workspace.mkdir(parents=True, exist_ok=True)
            created = round(self._clock(), 3)
            # What the Changes panel compares against (a new workspace is no git tree).
            base = (head_commit(folder) or "") if folder is not None else ""
            default = history.conversation.title if history else f"{spec.name} session"
            session = Session(session_id, spec, title or default, workspace,
                              self.store.create_log(session_id), self.settings, created,
                              on_prompts_changed=self.inbox.changed,
                              on_record_changed=self._save,
                              on_turn_ended=self.metrics.turn_ended,
                              on_turn_end=partial(self._turn_end, session_id),
                              # A continued conversation keeps its title: its next prompt
                              # is not its first.
                              title_set=title is not None or history is not None,
                              projects=self.projects if folder is not None else None,
                              base_commit=base)
            if history is not None:
                try:
                    session.continue_conversation(history)
                except Exception:
                    self.store.drop_log(session_id)
                    raise
            session.update(model=model, permission_mode=permission_mode, by=by)
            self.store.save_session(session.record())
            with self._lock:
                self._sessions[session_id] = session
        finally:
            with self._lock:
                self._creating -= 1
        logger.info("created session %s (agent %s%s)", session_id, spec.name,
                    f", in {folder}" if folder is not None else "")
        return session

    def conversations(self, path: str, agent: str) -> dict[str, Any]:
        """The conversations agent ``agent`` saved on its own for the folder ``path``, newest
        first: ``{"path", "agent", "conversations": [{"id", "title", "updated_at",
        "messages", "partial"}], "truncated"}``.

        :raises PathNotAllowed: as :meth:`tether.projects.Projects.resolve`.
        :raises NotADirectory: as :meth:`tether.projects.Projects.resolve`.
        :raises BadRequest: the agent keeps no saved conversations Tether can read.
        """
        folder = self.projects.resolve(path)
        found, truncated = self.agents.conversations(agent).list(folder)
        open_in = {s.agent_session_id: s.id for s in reversed(self.list())
                   if s.agent.name == agent and s.workspace == folder}
        return {"path": str(folder), "agent": agent, "truncated": truncated,
                "conversations": [{**c.to_dict(), "session_id": open_in.get(c.id)}
                                  for c in found]}

    def saved_history(self, agent: str, folder: Path | None, conversation_id: str) -> History:
        """What a session continuing conversation ``conversation_id`` shows first.

        :raises BadRequest: no ``folder`` (``cwd``), or the agent keeps no saved
            conversations Tether can read.
        :raises NotFound: no such conversation for that folder.
        :raises ConversationOpen: a session of this server continues it already (two agent
            processes would write one transcript, each unaware of the other's turns).
        """
        if folder is None:
            raise BadRequest("resume needs cwd: the folder the conversation was saved for")
        history = self.agents.conversations(agent).history(folder, conversation_id)
        for session in self.list():
            if session.agent_session_id == conversation_id and session.agent.name == agent:
                raise ConversationOpen(f"session {session.id} ({session.title[:80]!r}) "
                                       "continues this conversation already: open it",
                                       session.id)
        return history

    def get(self, session_id: str) -> Session:
        """:raises NotFound: unknown (or deleted) session."""
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise NotFound(f"no session {session_id[:80]!r}")
        return session

    def list(self) -> list[Session]:
        """Every session, newest first."""
        with self._lock:
            sessions = list(self._sessions.values())
        # Ties (two sessions in one millisecond) by id, as the durable store orders them, so
        # the order survives a restart.
        return sorted(sessions, key=lambda s: (s.created_at, s.id), reverse=True)

    def summaries(self) -> list[dict[str, Any]]:
        """Every session's object (DESIGN.md section 4: :meth:`Session.to_dict`), newest
        first: ``GET /api/sessions`` and the WebSocket's ``sessions.list``."""
        return [s.to_dict() for s in self.list()]

    def delete(self, session_id: str) -> None:
        """Stop the session's turn and agent, forget it, and remove its own workspace
        (``<TETHER_DATA_DIR>/sessions/<id>/``, see :meth:`_remove_workspace`).

        :raises NotFound: unknown session.
        :raises ShuttingDown: the server is stopping (the session stays).
        """
        with self._lock:
            if self._shutting_down:
                raise ShuttingDown("the server is shutting down; delete the session once it "
                                   "is back")
            session = self._sessions.pop(session_id, None)
        if session is None:
            raise NotFound(f"no session {session_id[:80]!r}")
        session.close()
        with self._lock:
            self._deleted_events += session.log.last_id
        self.store.drop_log(session_id)
        self.inbox.changed()  # its entries are gone
        self._remove_workspace(session)
        ImageStore(self.settings.data_dir).remove(session_id)

    def _remove_workspace(self, session: Session) -> None:
        """Remove the session's workspace, once its turn and agent have stopped, when it is the
        session's own: exactly ``<TETHER_DATA_DIR>/sessions/<session id>``, a real directory
        (not a symbolic link), resolved inside ``<TETHER_DATA_DIR>/sessions``. Any other
        folder (one the session was opened in) is left alone. Symbolic links inside are
        removed, never followed (:func:`shutil.rmtree`), so their targets survive. Failures
        are logged: the session is gone either way."""
        root = (self.settings.data_dir / "sessions").resolve()
        own = root / session.id
        workspace = Path(os.path.abspath(session.workspace))
        if workspace != own or own.is_symlink() or own.resolve().parent != root:
            logger.info("session %s: workspace %s is not its own; left in place", session.id,
                        session.workspace)
            return
        if not own.is_dir():
            return
        try:
            shutil.rmtree(own)
        except OSError as exc:
            logger.warning("session %s: workspace %s not removed: %r", session.id, own, exc)

    def shutdown(self) -> None:
        """Server exit: new sessions, prompts and deletes are refused (:class:`ShuttingDown`),
        every turn ends as ``interrupted``, every agent process stops, every log closes (so
        streams and long-polls end), then the store is flushed and closed. Turns are
        cancelled all at once, then awaited, so shutdown takes about one cancel grace period
        however many sessions run. Safe to call twice.
        """
        with self._lock:
            self._shutting_down = True
        sessions = self.list()
        for session in sessions:
            session.begin_close("interrupted")
        deadline = time.monotonic() + self.settings.cancel_grace_seconds * 2 + 1
        for session in sessions:
            session.finish_close(max(deadline - time.monotonic(), 0))
        self.inbox.close()
        self.store.close()

    def _save(self, session: Session) -> None:
        # A session's record changed (Session's on_record_changed). Saved under the lock, so
        # a delete (which pops the session under it first) cannot be undone by a late save.
        with self._lock:
            if self._sessions.get(session.id) is not session:
                return  # deleted meanwhile: its record is gone for good
            self.store.save_session(session.record())

    def _restore(self) -> None:
        """Bring back every session the store holds (none with the memory store).

        A turn the previous server left open (it died: SIGKILL, a crash) gets its pending
        requests resolved as ``cancelled`` and a ``turn_end`` with reason ``interrupted``
        (:mod:`tether.recovery`); a session whose agent reported its conversation id resumes
        it on the next prompt (``--resume``). A session of an agent this server does not
        offer, or whose own workspace cannot be created, is kept in the store but not served
        (logged). A project folder is never created: a session whose folder is gone is
        restored, and its next prompt gets an ``error`` event saying so.
        """
        for record in self.store.sessions():
            try:
                spec = self.agents.get(record.agent)
            except NotFound:
                logger.warning("session %s: agent %r is not offered; not restored", record.id,
                               record.agent)
                continue
            log = self.store.open_log(record.id)
            workspace = Path(record.workspace)
            own = is_own_workspace(workspace, record.id)
            try:
                state = scan(log)
                closed = close_interrupted(log, state)
                if own:
                    workspace.mkdir(parents=True, exist_ok=True)
                elif not workspace.is_dir():
                    logger.warning("session %s: its folder %s is missing; restored, and left "
                                   "as it is", record.id, workspace)
            except (OSError, ValueError) as exc:  # one damaged session must not stop the server
                logger.error("session %s: not restored: %r", record.id, exc)
                continue
            session = Session(record.id, spec, record.title, workspace, log, self.settings,
                              record.created_at, on_prompts_changed=self.inbox.changed,
                              on_record_changed=self._save,
                              on_turn_ended=self.metrics.turn_ended,
                              on_turn_end=partial(self._turn_end, record.id),
                              title_set=record.title_set, base_commit=record.base_commit,
                              projects=None if own else self.projects,
                              model=state.model or record.model,
                              permission_mode=state.permission_mode or record.permission_mode)
            session.restore(max(record.turns, state.turns), record.auto_approve,
                            state.agent_session_id or record.agent_session_id,
                            resume=state.agent_session_id is not None, queued=state.queued,
                            session_cost_usd=state.session_cost_usd,
                            agent_total_cost_usd=state.agent_total_cost_usd,
                            session_usage=state.session_usage)
            with self._lock:
                self._sessions[record.id] = session
            if closed or session.record() != record:
                self.store.save_session(session.record())
            logger.info("restored session %s (%s events%s)", record.id, log.last_id,
                        f"; closed an interrupted turn with {closed} events" if closed else "")

    def figures(self) -> dict[str, int]:
        """Scrape-time figures for :mod:`tether.metrics`: ``sessions``, ``events_appended``
        (in the logs held, plus those of sessions deleted since start), ``approvals_pending``,
        ``questions_pending``, ``agent_processes``, ``session_views`` (logs held in memory:
        here, every session's)."""
        sessions = self.list()
        pending = [p for _, _, requests in self._pending_by_session() for p in requests]
        approvals = sum(p.kind == "approval" for p in pending)
        return {"sessions": len(sessions),
                "events_appended": self._events_appended(sessions),
                "approvals_pending": approvals,
                "questions_pending": len(pending) - approvals,
                "agent_processes": sum(s.agent_running for s in sessions),
                "session_views": len(sessions)}

    def _events_appended(self, sessions: list[Session]) -> int:
        """Events in the logs of ``sessions`` (those held) plus those of the sessions deleted
        since start."""
        with self._lock:
            deleted = self._deleted_events
        return deleted + sum(s.log.last_id for s in sessions)

    def _pending_by_session(self) -> list[tuple[str, str, list[PendingRequest]]]:
        return [(s.id, s.title, s.prompts.pending()) for s in self.list()]
