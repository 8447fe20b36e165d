"""The turn runner: one detached turn per session, from prompt to exactly one ``turn_end``.

A :class:`Turn` runs on its own thread (a greenlet under gevent), never on a request's: it
sends the prompt to the session's agent process, pumps stdout into the log, routes permission
and question requests to the prompt registry, and enforces the turn timeout. :meth:`Turn.cancel`
is Stop: a control ``interrupt``, then SIGTERM, then SIGKILL to the agent's process group, each
after a grace period. :class:`AgentHost` keeps a session's agent process between turns (one
process serves many turns, PROTOCOLS.md 1.1) and stops it when idle.
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

from tether.agents.base import AgentSpec
from tether.agents.claude import (
    ASK_USER_QUESTION,
    CostMeter,
    control_error,
    control_request,
    control_success,
    permission_response,
    translate,
    user_message,
)
from tether.agents.commands import command_list
from tether.config import Settings
from tether.errors import Fenced
from tether.process import MAX_LINE_BYTES, AgentProcess
from tether.prompts import PendingRequest, PromptRegistry
from tether.stores.base import EventLog
from tether.usage import UsageMeter, turn_usage

logger = logging.getLogger(__name__)

#: Characters of the agent's newest stderr quoted in the ``error`` event of a failed turn.
STDERR_TAIL_CHARS = 2000
#: Bad stdout lines logged per turn (the rest are dropped without a word).
LOGGED_BAD_LINES = 5

#: Fields of a ``can_use_tool`` request shown with an approval (PROTOCOLS.md 2.3).
APPROVAL_EXTRAS = ("description", "decision_reason", "title", "blocked_path",
                   "permission_suggestions", "agent_id")


#: Lines the runner reads from an agent before it lets other greenlets run (a burst).
YIELD_EVERY_LINES = 16


class AgentHost:
    """A session's agent process, kept across turns.

    The first process starts the agent session with ``--session-id``; once the agent has
    reported it (``system/init``), every later process resumes it with ``--resume``.

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
        self._idle_timer: threading.Timer | None = None
        self._lock = threading.Lock()
        #: The session's spend: the CLI reports a running total of its agent session.
        self.costs = CostMeter()
        #: The session's tokens and cost, summed over its turns.
        self.usage = UsageMeter()
        #: The agent's slash commands as last appended (a ``commands`` event), and what the
        #: live process's ``initialize`` response listed.
        self.commands: list[dict[str, Any]] | None = None
        self._reported_commands: Any = None
        self._initialize_id: str | None = None
        #: Called with ``(pid, True)`` when an agent process starts and ``(pid, False)`` when
        #: it is stopped (the cluster records its agents' process groups, so that gunicorn's
        #: master can kill them if this worker dies: tether.cluster.membership).
        self.on_process: Callable[[int, bool], None] | None = None

    def resume(self, agent_session_id: str) -> None:
        """Continue an agent session an earlier server started (a session restored from a
        durable store): the next process gets ``--resume=<agent_session_id>``."""
        with self._lock:
            self.agent_session_id = agent_session_id
            self.started = True

    @property
    def running(self) -> bool:
        """True while an agent process is alive (during a turn, or idle between turns)."""
        process = self._process
        return process is not None and process.alive

    def acquire(self) -> AgentProcess:
        """The live process, or a new one that got the ``initialize`` request.

        :raises OSError: the agent's executable cannot be started.
        """
        with self._lock:
            self._cancel_idle_timer()
            if self._process is not None and self._process.alive:
                return self._process
            stale, self._process = self._process, None
        if stale is not None:
            stale.stop(0)
            self._tell(stale.pid, False)
        argv = self.spec.argv(self.agent_session_id, resume=self.started)
        process = AgentProcess(argv, self.workspace, self.spec.env())
        logger.info("started agent %s pid %s", self.spec.name, process.pid)
        self._tell(process.pid, True)
        # The SDK's first message (PROTOCOLS.md 2.2); answered before any user message.
        initialize = control_request("initialize", hooks=None)
        with self._lock:
            self._initialize_id = initialize["request_id"]
            self._reported_commands = None
        process.send(initialize)
        with self._lock:
            self._process = process
        return process

    def initialized(self, message: Mapping[str, Any]) -> None:
        """A ``control_response`` from the agent: keep the ``commands`` of the answer to our
        ``initialize`` (PROTOCOLS.md 2.2, 7)."""
        response = message.get("response")
        if not isinstance(response, Mapping) or response.get("subtype") != "success":
            return
        body = response.get("response")
        if response.get("request_id") == self._initialize_id and isinstance(body, Mapping):
            self._reported_commands = body.get("commands")

    def agent_init(self, message: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        """A ``system/init``: the agent session is started, under the id it reports (``/clear``
        starts a new one, PROTOCOLS.md 7: a later ``--resume`` must name that one, or the
        cleared conversation comes back). Returns the command list when it changed (a
        ``commands`` event is due), else None."""
        self.started = True
        session_id = message.get("session_id")
        if isinstance(session_id, str) and session_id:
            self.agent_session_id = session_id
        commands = command_list(self._reported_commands, message.get("slash_commands"),
                                getattr(self.spec, "refused_commands", {}))
        if not commands or commands == self.commands:
            return None
        self.commands = commands
        # What this agent offers, for the composer of a session whose agent has not run yet.
        self.spec.known_commands = commands
        return commands

    def idle(self) -> None:
        """The turn is over: stop the process after ``idle_seconds`` unless a turn starts."""
        with self._lock:
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
            self._cancel_idle_timer()
            process, self._process = self._process, None
        if process is not None:
            process.stop(self._grace)
            self._tell(process.pid, False)

    def _tell(self, pid: int, started: bool) -> None:
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
        self._cli_requests: dict[str, PendingRequest] = {}
        self._got_result = False
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
        """Stop the turn: interrupt, then terminate, then kill after the grace period.

        Open approvals and questions resolve with ``reason: "cancelled"``.

        :param reason: the ``turn_end`` reason: ``cancelled``, ``timeout`` or ``interrupted``.
        :returns: False when the turn is already over or already being cancelled.
        """
        with self._lock:
            if self._done.is_set() or self._cancel_reason is not None:
                return False
            self._cancel_reason = reason
            process = self._process
        self._prompts.cancel_all("The turn was cancelled." if reason != "timeout"
                                 else "The turn timed out.")
        if process is not None:
            # Both on threads: Stop must return at once, and the write can block for good
            # when the agent no longer reads stdin (the escalation does not wait for it).
            threading.Thread(target=process.send, args=(control_request("interrupt"),),
                             daemon=True, name=f"interrupt-{self.number}").start()
            threading.Thread(target=self._escalate, args=(process,), daemon=True).start()
        return True

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
            if timer is not None:
                timer.cancel()
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
        process = self._host.acquire()
        with self._lock:
            self._process = process
            if self._cancel_reason is not None:
                return self._cancel_reason
        content = self._content() if self._content is not None else self.text
        if not process.send(user_message(content)):
            return self._ended_early(process)
        return self._pump(process)

    def _pump(self, process: AgentProcess) -> str:
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
            mtype = message.get("type")
            if mtype == "control_request":
                self._log.flush()  # the request follows what the agent said before it
                self._on_control_request(process, message)
            elif mtype == "control_cancel_request":
                entry = self._cli_requests.get(str(message.get("request_id")))
                if entry is not None:
                    self._log.flush()
                    self._prompts.cancel(entry.request_id, "The agent withdrew the request.")
            elif mtype == "control_response":
                self._host.initialized(message)
            else:
                commands = None
                if mtype == "system" and message.get("subtype") == "init":
                    commands = self._host.agent_init(message)
                for kind, payload in translate(message, self._host.spec.name):
                    if kind == "result":
                        payload.update(self._host.costs.result(message.get("total_cost_usd")))
                        payload["usage"] = turn_usage(payload.get("usage"),
                                                      payload.get("cost_usd"))
                        payload["session_usage"] = self._host.usage.add(
                            payload["usage"], payload.get("session_cost_usd"))
                        if self._cancel_reason == "cancelled":
                            # The agent's answer to a person's Stop (an error result, for the
                            # interrupt): the turn was stopped, nothing went wrong
                            # (docs/protocol.md, "Stop").
                            payload["stopped"] = True
                    self._log.append(kind, payload)
                if commands is not None:
                    self._log.append("commands", {"commands": commands})
                if mtype == "result":
                    self._got_result = True
                    return "error" if message.get("is_error") else "completed"
        return self._ended_early(process)

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
        code = process.wait(self._settings.cancel_grace_seconds)
        name = self._host.spec.name
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

    # -- control requests from the agent -------------------------------------------------

    def _on_control_request(self, process: AgentProcess, message: Mapping[str, Any]) -> None:
        cli_id = str(message.get("request_id"))
        request = message.get("request") or {}
        if request.get("subtype") != "can_use_tool":
            subtype = request.get("subtype")
            process.send(control_error(cli_id, f"Unsupported control request subtype: {subtype}"))
            return
        entry = self._open_prompt(request)
        self._cli_requests[cli_id] = entry
        threading.Thread(target=self._answer, args=(process, cli_id, request, entry),
                         daemon=True).start()

    def _open_prompt(self, request: Mapping[str, Any]) -> PendingRequest:
        tool_input = request.get("input") or {}
        tool_use_id = request.get("tool_use_id")
        questions = tool_input.get("questions") if isinstance(tool_input, Mapping) else None
        if request.get("tool_name") == ASK_USER_QUESTION and isinstance(questions, list):
            entry, _ = self._prompts.open_clarify(questions, tool_use_id)
            return entry
        extras = {k: request[k] for k in APPROVAL_EXTRAS if k in request}
        entry, _ = self._prompts.open_approval(str(request.get("tool_name")), tool_input,
                                               tool_use_id, **extras)
        return entry

    def _answer(self, process: AgentProcess, cli_id: str, request: Mapping[str, Any],
                entry: PendingRequest) -> None:
        resolution = self._prompts.wait(entry)
        if resolution.reason == "cancelled":
            # Withdrawn by the agent, or the turn is being interrupted: the SDK writes no
            # response in either case (PROTOCOLS.md 2.1, 2.3).
            return
        process.send(control_success(cli_id, permission_response(request, resolution)))


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
