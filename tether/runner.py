"""The turn runner: one detached turn per session, from prompt to exactly one ``turn_end``.

A :class:`Turn` runs on its own thread (a greenlet under gevent), never on a request's: it
sends the prompt to the session's agent process, pumps stdout into the log, routes permission
and question requests to the prompt registry, and enforces the turn timeout. :meth:`Turn.cancel`
is Stop: the agent's own interrupt, then SIGTERM, then SIGKILL to the agent's process group,
each after a grace period. :class:`AgentHost` keeps a session's agent process between turns
(one process serves many turns, PROTOCOLS.md 1.1) and stops it when idle.

The runner knows no agent protocol: each process has a driver (:mod:`tether.agents.driver`)
that turns what the agent prints into actions, which the runner carries out.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tether.agents.base import AgentSpec, options_argv
from tether.agents.claude import CostMeter
from tether.agents.claude_driver import ClaudeDriver
from tether.agents.driver import (
    Action,
    Answer,
    Ask,
    Driver,
    DriverContext,
    Emit,
    Offer,
    Prompt,
    Ready,
    Send,
    Started,
    TurnOver,
    Withdraw,
)
from tether.agents.modes import DEFAULT_MODEL
from tether.config import Settings
from tether.errors import Fenced
from tether.process import MAX_LINE_BYTES, AgentProcess
from tether.prompts import PendingRequest, PromptRegistry, Resolution
from tether.stores.base import EventLog
from tether.usage import UsageMeter, turn_usage

logger = logging.getLogger(__name__)

#: Characters of the agent's newest stderr quoted in the ``error`` event of a failed turn.
STDERR_TAIL_CHARS = 2000
#: Bad stdout lines logged per turn (the rest are dropped without a word).
LOGGED_BAD_LINES = 5

#: Lines the runner reads from an agent before it lets other greenlets run (a burst).
YIELD_EVERY_LINES = 16


def make_driver(spec: AgentSpec, context: DriverContext) -> Driver:
    """The driver for a new process of ``spec``: its ``driver(context)``, or Claude Code's
    protocol for a spec without one (``claude``, ``local``)."""
    factory = getattr(spec, "driver", None)
    if callable(factory):
        driver: Driver = factory(context)
        return driver
    return ClaudeDriver(context)


class AgentHost:
    """A session's agent process and its driver, kept across turns.

    The first process starts the agent's conversation (Claude Code: ``--session-id``); once
    the agent has named it (:class:`~tether.agents.driver.Started`), every later process
    resumes it (``--resume``, ``thread/resume``, ``session/load``).

    :param idle_seconds: stop the process after this long without a turn; 0 stops it after
        every turn.
    """

    def __init__(self, spec: AgentSpec, workspace: Path, settings: Settings) -> None:
        self.spec = spec
        self.workspace = workspace
        self.agent_session_id = str(uuid.uuid4())
        self.started = False
        self._grace = settings.cancel_grace_seconds
        self._idle_seconds = settings.agent_idle_seconds
        self._process: AgentProcess | None = None
        self._driver: Driver | None = None
        self._idle_timer: threading.Timer | None = None
        self._lock = threading.Lock()
        #: Held around every call into a driver: drivers are not thread-safe.
        self._driver_lock = threading.Lock()
        #: The session's spend: Claude Code reports a running total of its agent session.
        self.costs = CostMeter()
        #: The session's tokens and cost, summed over its turns.
        self.usage = UsageMeter()
        #: The agent's slash commands as last appended (a ``commands`` event).
        self.commands: list[dict[str, Any]] | None = None
        #: Called with ``(pid, True)`` when an agent process starts and once with
        #: ``(pid, False)`` when it is stopped or exits by itself, a crash between turns
        #: included (the cluster records its agents' process groups, so that gunicorn's
        #: master can kill them if this worker dies: tether.cluster.membership; and counts
        #: them for /metrics).
        self.on_process: Callable[[int, bool], None] | None = None
        self._live_pids: set[int] = set()  # told started, not yet told stopped
        self._live_lock = threading.Lock()
        #: The conversation so far from the session's log, for an agent that cannot restore
        #: its own (:attr:`tether.agents.driver.DriverContext.transcript`).
        self.transcript: Callable[[], str | None] = lambda: None
        #: The model and permission mode the next process starts with and the live one was
        #: last told (:meth:`configure`).
        self.model = DEFAULT_MODEL
        self.permission_mode = "default"
        #: A turn holds the process (from :meth:`acquire` to :meth:`idle` or :meth:`stop`).
        self._in_turn = False

    def resume(self, agent_session_id: str) -> None:
        """Continue an agent session an earlier server started (a session restored from a
        durable store): the next process resumes ``agent_session_id``."""
        with self._lock:
            self.agent_session_id = agent_session_id
            self.started = True

    @property
    def running(self) -> bool:
        """True while an agent process is alive (during a turn, or idle between turns)."""
        process = self._process
        return process is not None and process.alive

    def call(self, method: Callable[..., list[Action]], *args: Any) -> list[Action]:
        """``method(*args)`` of a driver, one call at a time."""
        with self._driver_lock:
            return method(*args)

    def acquire(self) -> tuple[AgentProcess, Driver]:
        """The live process and its driver, or a new process whose driver has sent its first
        messages (:meth:`~tether.agents.driver.Driver.start`).

        :raises OSError: the agent's executable cannot be started.
        :raises Exception: what the driver raised while starting; the process started for it
            is stopped first, and ``on_process(pid, False)`` follows its ``(pid, True)``.
        """
        with self._lock:
            self._cancel_idle_timer()
            self._in_turn = True
            if self._process is not None and self._process.alive \
                    and self._driver is not None:
                return self._process, self._driver
            stale, self._process, self._driver = self._process, None, None
        if stale is not None:
            stale.stop(0)
            self._tell(stale.pid, False)
        argv = [*self.spec.argv(self.agent_session_id, resume=self.started),
                *options_argv(self.spec, self.model, self.permission_mode)]
        process = AgentProcess(argv, self.workspace, self.spec.env())
        logger.info("started agent %s pid %s", self.spec.name, process.pid)
        self._tell(process.pid, True)
        process.on_exit(lambda pid: self._tell(pid, False))  # a crash between turns too
        try:
            driver = make_driver(self.spec, DriverContext(
                agent=self.spec.name, workspace=self.workspace, model=self.model,
                permission_mode=self.permission_mode,
                refused_commands=getattr(self.spec, "refused_commands", {}),
                transcript=self.transcript))
            for action in self.call(driver.start, self.agent_session_id, self.started):
                if isinstance(action, Send):
                    process.send(action.message)
        except BaseException:  # no turn will use it: stopped, and said so
            process.stop(0)
            self._tell(process.pid, False)
            raise
        with self._lock:
            self._process, self._driver = process, driver
        return process, driver

    def configure(self, model: str | None = None, permission_mode: str | None = None) -> None:
        """Run with ``model`` and/or ``permission_mode`` (None leaves one as it is): the next
        process starts with them, and a live one is told at once through its driver
        (Claude Code: ``set_model`` and ``set_permission_mode``, PROTOCOLS.md 2.5), during a
        turn or between turns. Values are not checked here."""
        stale = None
        with self._lock:
            live = self._process is not None and self._process.alive
            process, driver = (self._process, self._driver) if live else (None, None)
            tell_mode = tell_model = None
            if permission_mode is not None and permission_mode != self.permission_mode:
                self.permission_mode = permission_mode
                if (process is not None and not self._in_turn
                        and permission_mode in getattr(self.spec, "launch_only_modes", ())):
                    # A mode the live process cannot take (Claude Code's bypassPermissions
                    # needs its launch flag): the idle process goes, the next turn resumes
                    # the conversation in a new one started in that mode.
                    stale, self._process, self._driver = self._process, None, None
                    process = driver = None
                    self._cancel_idle_timer()
                else:
                    tell_mode = permission_mode
            if model is not None and model != self.model:
                self.model = tell_model = model
        if process is not None and driver is not None \
                and (tell_mode is not None or tell_model is not None):
            for action in self.call(driver.configure, tell_model, tell_mode):
                if isinstance(action, Send):
                    process.send(action.message)
        if stale is not None:
            threading.Thread(target=self._retire, args=(stale,), daemon=True).start()

    def _retire(self, process: AgentProcess) -> None:
        process.stop(self._grace)
        self._tell(process.pid, False)

    def took_mode(self, mode: Any) -> None:
        """The agent runs in ``mode`` now (a ``mode`` event its driver emitted: it changed
        mode by itself, or refused a change): the next process starts in it."""
        if isinstance(mode, str) and mode:
            with self._lock:
                self.permission_mode = mode

    def agent_started(self, agent_session_id: str) -> None:
        """The agent named its conversation (:class:`~tether.agents.driver.Started`)."""
        with self._lock:
            self.started = True
            self.agent_session_id = agent_session_id

    def offer(self, offer: Offer) -> list[dict[str, Any]] | None:
        """Keep what the agent offers on its spec (``GET /api/agents``, and what a session
        may pick). Returns the command list when it changed (a ``commands`` event is due),
        else None."""
        if offer.models and hasattr(self.spec, "known_models"):
            self.spec.known_models = offer.models  # type: ignore[misc]
        if offer.modes:
            # What a session of this agent may pick from now on (tether.agents.base).
            self.spec.known_modes = offer.modes  # type: ignore[attr-defined]
        if not offer.commands or offer.commands == self.commands:
            return None
        self.commands = offer.commands
        # What this agent offers, for the composer of a session whose agent has not run yet.
        self.spec.known_commands = offer.commands
        return offer.commands

    def idle(self) -> None:
        """The turn is over: stop the process after ``idle_seconds`` unless a turn starts."""
        with self._lock:
            self._in_turn = False
            self._cancel_idle_timer()
            if self._idle_seconds > 0 and self._process is not None:
                self._idle_timer = threading.Timer(self._idle_seconds, self.stop)
                self._idle_timer.daemon = True
                self._idle_timer.start()
                return
        self.stop()

    def stop(self) -> None:
        """Stop the process and its group (idempotent)."""
        with self._lock:
            self._in_turn = False
            self._cancel_idle_timer()
            process, self._process, self._driver = self._process, None, None
        if process is not None:
            process.stop(self._grace)
            self._tell(process.pid, False)

    def _tell(self, pid: int, started: bool) -> None:
        """Tell :attr:`on_process`; a stop only of a pid told started and not yet told
        stopped (:meth:`stop` and the process's own exit both tell it, in either order)."""
        with self._live_lock:
            if started:
                self._live_pids.add(pid)
            elif pid in self._live_pids:
                self._live_pids.discard(pid)
            else:
                return
        if self.on_process is not None:
            try:
                self.on_process(pid, started)
            except Exception:  # bookkeeping must not stop an agent starting or stopping
                logger.exception("agent pid %s: on_process failed", pid)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None


@runtime_checkable
class EventSink(Protocol):
    """Where a turn writes its events: :meth:`append` may only queue an event (a sink that
    commits bursts in one round trip, :class:`tether.cluster.owner_log.OwnerLog`), and
    :meth:`flush` returns once every queued event is in the log. The runner flushes before
    anything that must follow its events in the log: a permission request, a withdrawal,
    the turn's end."""

    def append(self, kind: str, payload: Mapping[str, Any]) -> object:
        """Write one event (now, or queued).

        :raises ValueError: not a valid event (nothing is written).
        :raises RuntimeError: the log is closed; or an earlier queued write failed (its
            error again: :class:`tether.errors.Fenced`, a closed log, the store away).
        """

    def flush(self) -> None:
        """Return once every event appended so far is in the log.

        :raises RuntimeError: as :meth:`append`, for a queued write that failed.
        """


class LogSink:
    """An :class:`EventSink` that appends each event at once (the memory and SQLite stores:
    an append costs no round trip, so there is nothing to gain by queueing)."""

    def __init__(self, log: EventLog) -> None:
        self._log = log

    def append(self, kind: str, payload: Mapping[str, Any]) -> object:
        return self._log.append(kind, payload)

    def flush(self) -> None:
        pass


class Turn:
    """One prompt's run. Create it, :meth:`start` it, and it ends by itself.

    :param log: the session's log, or a sink that writes to it (:class:`EventSink`).
    :param finish: called exactly once with ``(turn, reason)`` when the turn is over; it
        appends ``turn_end`` (the session does so under its lock), after every event of the
        turn is in the log.
    """

    def __init__(self, number: int, text: str, host: AgentHost, log: EventLog | EventSink,
                 prompts: PromptRegistry, settings: Settings,
                 finish: Callable[[Turn, str], None],
                 content: Callable[[], Any] | None = None) -> None:
        self.number = number
        self.text = text
        #: The user message's content when it is more than ``text`` (images before it):
        #: read on the turn's thread, when the message is sent.
        self._content = content
        self._host = host
        self._log: EventSink = log if isinstance(log, EventSink) else LogSink(log)
        self._prompts = prompts
        self._settings = settings
        self._finish = finish
        self._lock = threading.Lock()
        self._process: AgentProcess | None = None
        self._cancel_reason: str | None = None
        self._done = threading.Event()
        self._ended = threading.Event()  # set after finish: the turn is wholly over
        #: ``time.monotonic()`` when the turn was created (the prompt): for its duration.
        self.started = time.monotonic()
        self._driver: Driver | None = None
        #: The registry's request for each token the driver asked with (:class:`Ask`).
        self._asked: dict[str, PendingRequest] = {}
        self._got_result = False
        #: The agent did not finish its handshake in time (TETHER_AGENT_START_TIMEOUT).
        self._start_timer: threading.Timer | None = None
        self._start_timed_out = False
        #: A write to the agent's stdin failed (it closed it: it is exiting).
        self._send_failed = False
        #: Set (under the lock) once the turn is ending: events a driver returns off the
        #: turn's thread (an answer, an interrupt) after that are dropped, never written
        #: after ``turn_end``.
        self._closing = False
        self._fenced = False
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"turn-{number}")

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the turn to end (``turn_end`` appended); True if it did within ``timeout``
        seconds. Safe before :meth:`start` has returned: under gevent ``Thread.start`` yields,
        and a Stop or a delete may come in that moment (``Thread.join`` would raise)."""
        return self._ended.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self, reason: str = "cancelled") -> bool:
        """Stop the turn: the agent's interrupt, then terminate, then kill after the grace
        period.

        Open approvals and questions resolve with ``reason: "cancelled"``.

        :param reason: the ``turn_end`` reason: ``cancelled``, ``timeout`` or ``interrupted``.
        :returns: False when the turn is already over or already being cancelled.
        """
        with self._lock:
            if self._done.is_set() or self._cancel_reason is not None:
                return False
            self._cancel_reason = reason
            process, driver = self._process, self._driver
        self._prompts.cancel_all("The turn was cancelled." if reason != "timeout"
                                 else "The turn timed out.")
        if process is not None and driver is not None:
            # Both on threads: Stop must return at once, and the write can block for good
            # when the agent no longer reads stdin (the escalation does not wait for it).
            threading.Thread(target=self._interrupt, args=(process, driver), daemon=True,
                             name=f"interrupt-{self.number}").start()
            threading.Thread(target=self._escalate, args=(process,), daemon=True).start()
        return True

    def _interrupt(self, process: AgentProcess, driver: Driver) -> None:
        actions = self._host.call(driver.interrupt)
        self._perform_aside(process, actions, "interrupt")
        if any(isinstance(a, TurnOver) for a in actions):
            # Over before it began (Stop during the handshake): nothing to wait for.
            process.stop(self._settings.cancel_grace_seconds)

    def _escalate(self, process: AgentProcess) -> None:
        if not self._done.wait(self._settings.cancel_grace_seconds):
            process.stop(self._settings.cancel_grace_seconds)

    # -- the turn ------------------------------------------------------------------------

    def _run(self) -> None:
        reason = "error"
        timer = None
        if self._settings.turn_timeout_seconds > 0:
            timer = threading.Timer(self._settings.turn_timeout_seconds, self.cancel, ("timeout",))
            timer.daemon = True
            timer.start()
        try:
            reason = self._drive()
        except Fenced:
            # Another worker took the session over (this one was stalled past its lease):
            # it wrote the turn's end; this one writes nothing more and stops the agent.
            logger.warning("turn %s: the session is no longer this worker's; stopping its "
                           "agent", self.number)
            self._fenced = True
            reason = "interrupted"
        except OSError as exc:
            self._error(f"could not start the {self._host.spec.name} agent: {exc}")
        except Exception as exc:  # a bug must still end the turn with turn_end
            logger.exception("turn %s failed", self.number)
            self._error(f"internal error in the turn runner: {exc!r}")
        finally:
            with self._lock:
                self._closing = True
            if timer is not None:
                timer.cancel()
            if self._start_timer is not None:
                self._start_timer.cancel()
            if self._cancel_reason == "timeout":
                self._error(f"the turn ran longer than TETHER_TURN_TIMEOUT "
                            f"({self._settings.turn_timeout_seconds:g} s) and was stopped")
            if not self._flushed():
                reason = "interrupted"
            self._done.set()
            self._prompts.cancel_all()
            if self._cancel_reason is not None:
                reason = self._cancel_reason
            if self._got_result and self._cancel_reason is None and not self._fenced:
                self._host.idle()
            else:
                self._host.stop()  # Stop leaves no process behind
            try:
                self._finish(self, reason)
            finally:
                self._ended.set()

    def _flushed(self) -> bool:
        """Every event of the turn in the log before it ends; False when the session was
        taken over meanwhile (the turn then ends ``interrupted``, written by the new owner)."""
        try:
            self._log.flush()
        except Fenced:
            logger.warning("turn %s: the session is no longer this worker's; its last events "
                           "were not written", self.number)
            self._fenced = True
            return False
        except Exception as exc:  # closed, or the store away: the turn still ends
            logger.warning("turn %s: its last events may not be written: %r", self.number, exc)
        return True

    def _drive(self) -> str:
        process, driver = self._host.acquire()
        with self._lock:
            self._process, self._driver = process, driver
            if self._cancel_reason is not None:
                return self._cancel_reason
        if not driver.ready:
            timeout = self._settings.agent_start_timeout_seconds
            self._start_timer = threading.Timer(timeout, self._start_timeout, (process, driver))
            self._start_timer.daemon = True
            self._start_timer.start()
        content = self._content() if self._content is not None else self.text
        reason = self._perform(process, driver,
                               self._host.call(driver.prompt, prompt_of(self.text, content)))
        if self._send_failed:
            return self._ended_early(process)
        return reason if reason is not None else self._pump(process, driver)

    def _start_timeout(self, process: AgentProcess, driver: Driver) -> None:
        """The agent did not finish its handshake in time: stop it (its turn then fails)."""
        if driver.ready:
            return
        self._start_timed_out = True
        process.stop(0)

    def _pump(self, process: AgentProcess, driver: Driver) -> str:
        bad_lines = 0
        for number, raw in enumerate(process.lines(), 1):
            if number % YIELD_EVERY_LINES == 0:
                # Under gevent a pipe with data never blocks, so a burst from the agent would
                # run to its end before any stream could write what it appends; let them.
                time.sleep(0)
            message = None if raw is None else _parse(raw)
            if message is None:
                if raw is None or raw.strip():  # blank lines are harmless
                    bad_lines += 1
                    self._bad_output(raw, bad_lines)
                continue
            reason = self._perform(process, driver, self._host.call(driver.receive, message))
            if reason is not None:
                return reason
        self._perform(process, driver, self._host.call(driver.closed))
        return self._ended_early(process)

    def _perform(self, process: AgentProcess, driver: Driver,
                 actions: list[Action]) -> str | None:
        """Carry out what the driver said, in order; the turn's end reason when it said the
        turn is over (:class:`TurnOver`), else None."""
        over = None
        for action in actions:
            if isinstance(action, Send):
                if not process.send(action.message):
                    self._send_failed = True
            elif isinstance(action, Emit):
                self._emit(action.kind, dict(action.payload))
            elif isinstance(action, Ask):
                self._log.flush()  # the request follows what the agent said before it
                self._ask(process, driver, action)
            elif isinstance(action, Withdraw):
                entry = self._asked.get(action.token)
                if entry is not None:
                    self._log.flush()
                    self._prompts.cancel(entry.request_id, "The agent withdrew the request.")
            elif isinstance(action, Started):
                self._host.agent_started(action.agent_session_id)
            elif isinstance(action, Ready):
                if self._start_timer is not None:
                    self._start_timer.cancel()
            elif isinstance(action, Offer):
                commands = self._host.offer(action)
                if commands is not None:
                    self._log.append("commands", {"commands": commands})
            elif isinstance(action, TurnOver):
                self._got_result = True
                over = action.reason
        return over

    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "result":
            payload.update(self._host.costs.result(payload.pop("total_cost_usd", None)))
            payload["usage"] = turn_usage(payload.get("usage"), payload.get("cost_usd"))
            payload["session_usage"] = self._host.usage.add(
                payload["usage"], payload.get("session_cost_usd"))
            if self._cancel_reason == "cancelled":
                # The agent's answer to a person's Stop (an error result, for the interrupt):
                # the turn was stopped, nothing went wrong (docs/protocol.md, "Stop").
                payload["stopped"] = True
        elif kind == "mode":
            self._host.took_mode(payload.get("permission_mode"))
        self._log.append(kind, payload)

    def _bad_output(self, raw: bytes | None, count: int) -> None:
        """A stdout line that is not a JSON object, or None for one over the length limit.

        The first one of a turn becomes an ``error`` event (DESIGN.md section 3: bad output);
        the first :data:`LOGGED_BAD_LINES` are logged; the rest are dropped without a word, so
        an agent printing junk in a loop floods neither the event log nor the server's log.
        """
        if raw is None:
            what = f"a line longer than {MAX_LINE_BYTES} bytes (the limit)"
        else:
            what = f"a line that is not a JSON object: {raw[:200].decode('utf-8', 'replace')!r}"
        if count <= LOGGED_BAD_LINES:
            logger.warning("turn %s: agent printed %s", self.number, what)
        if count == 1:
            self._error(f"the {self._host.spec.name} agent printed {what}; it was dropped, "
                        "and any more such lines in this turn are dropped too")

    def _ended_early(self, process: AgentProcess) -> str:
        """stdout closed before a ``result``: report the exit and the stderr tail (at most
        :data:`STDERR_TAIL_CHARS` characters)."""
        if self._cancel_reason is not None:
            return self._cancel_reason
        name = self._host.spec.name
        if self._start_timed_out:
            self._error(f"the {name} agent did not finish starting (answer initialize and open "
                        f"its conversation) within TETHER_AGENT_START_TIMEOUT "
                        f"({self._settings.agent_start_timeout_seconds:g} s) and was stopped"
                        + _tail(process.stderr_tail()))
            return "error"
        code = process.wait(self._settings.cancel_grace_seconds)
        if code is None:
            message = (f"the {name} agent closed its output before the turn ended but is "
                       "still running; it is being stopped")
            tail = process.stderr_tail()
        else:
            message = f"the {name} agent exited (code {code}) before the turn ended"
            tail = process.stderr_tail(wait_seconds=1.0)
        tail = tail[-STDERR_TAIL_CHARS:]
        self._error(message + (f": {tail}" if tail else ""))
        return "error"

    def _error(self, message: str) -> None:
        if self._fenced:
            return
        try:
            self._log.append("error", {"message": message})
        except RuntimeError:  # the session was deleted meanwhile, or taken over (Fenced)
            pass
        except Exception as exc:  # the store is away: the turn still ends
            logger.warning("turn %s: error event not written (%r): %s", self.number, exc,
                           message)

    # -- requests for a person ---------------------------------------------------------

    def _ask(self, process: AgentProcess, driver: Driver, ask: Ask) -> None:
        fields = dict(ask.fields)
        if ask.kind == "clarify":
            entry, _ = self._prompts.open_clarify(list(fields.get("questions") or ()),
                                                  fields.get("tool_use_id"))
        else:
            tool_name = str(fields.pop("tool_name", "tool"))
            tool_input = fields.pop("input", None)
            tool_use_id = fields.pop("tool_use_id", None)
            entry, _ = self._prompts.open_approval(
                tool_name, tool_input if isinstance(tool_input, Mapping) else {},
                tool_use_id, **fields)
        self._asked[ask.token] = entry
        threading.Thread(target=self._answer, args=(process, driver, ask.token, entry),
                         daemon=True).start()

    def _answer(self, process: AgentProcess, driver: Driver, token: str,
                entry: PendingRequest) -> None:
        answer = answer_of(self._prompts.wait(entry), entry.fields)
        self._perform_aside(process, self._host.call(driver.answer, token, answer), "answer")

    def _perform_aside(self, process: AgentProcess, actions: list[Action], what: str) -> None:
        """Carry out a driver call made off the turn's thread (an answer, an interrupt): its
        :class:`Send` and :class:`Emit` actions (an ACP agent's denied tool call gets its
        ``tool_result`` here). Events come only while the turn is not ending (never after its
        ``turn_end``); a :class:`TurnOver` is the caller's; anything else is a driver bug,
        logged."""
        for action in actions:
            if isinstance(action, Send):
                process.send(action.message)
            elif isinstance(action, Emit):
                with self._lock:
                    if self._closing:
                        continue
                    try:
                        self._emit(action.kind, dict(action.payload))
                    except Exception as exc:  # the log closed, the store away: logged only
                        logger.warning("turn %s: %s event not written: %r", self.number,
                                       action.kind, exc)
            elif not isinstance(action, TurnOver):
                logger.warning("turn %s: the %s driver's %s returned %r; it is not carried "
                               "out there", self.number, self._host.spec.name, what, action)


def answer_of(resolution: Resolution, fields: Mapping[str, Any]) -> Answer:
    """The driver's view of how request ``fields`` was settled (:class:`Answer`): ``scope``
    is ``session`` when the option picked is an ``allow_always`` one."""
    decision = "cancelled" if resolution.reason == "cancelled" else resolution.decision
    chosen = next((o for o in fields.get("options") or () if isinstance(o, Mapping)
                   and o.get("option_id") == resolution.option_id), None)
    scope = "session" if chosen is not None and chosen.get("kind") == "allow_always" \
        else "once"
    return Answer(decision, message=resolution.message,  # type: ignore[arg-type]
                  answers=resolution.answers, updated_input=resolution.updated_input,
                  updated_permissions=resolution.updated_permissions,
                  option_id=resolution.option_id, scope=scope)


def prompt_of(text: str, content: Any) -> Prompt:
    """A :class:`Prompt` from a user message's content: ``text``, or Messages API content
    blocks with base64 images (:func:`tether.images.content_blocks`)."""
    if not isinstance(content, list):
        return Prompt(content if isinstance(content, str) else text)
    images = [{"media_type": str(block["source"].get("media_type")),
               "data": str(block["source"].get("data"))}
              for block in content
              if isinstance(block, Mapping) and block.get("type") == "image"
              and isinstance(block.get("source"), Mapping)]
    return Prompt(text, images)


def _tail(stderr: str) -> str:
    tail = stderr[-STDERR_TAIL_CHARS:]
    return f": {tail}" if tail else ""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse(raw: bytes) -> dict[str, Any] | None:
    """One stdout line as a JSON object, or None for anything else, blank included."""
    try:
        # NaN and Infinity are not JSON (RFC 8259 section 6): such a line is garbage too.
        message = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    return message if isinstance(message, dict) else None
