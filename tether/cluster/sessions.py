"""One session as a worker of the cluster serves it (SCALE-OUT.md sections 6 and 7).

Every worker can serve every session: it reads the session's state from Redis when asked
(no copy to go stale), and changes it through the Redis Functions. One worker, the owner,
runs the agent. A prompt on any worker starts the turn in one function
(``begin_turn``: busy is decided for the whole cluster); the worker that claimed the session
(it had no live owner) starts the turn itself, otherwise the owner starts it when the
``user`` event reaches its view of the log: the log is the command channel. A Stop sets
the session's ``cancel`` and wakes the owner with a ``cancel N`` control. The owner's
writes carry its fencing token, so a worker that was taken over writes nothing more.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tether.agents.base import AgentSpec, check_options, default_options
from tether.agents.modes import UNATTENDED_MODES
from tether.cluster.envelopes import HOLE, rest, template
from tether.cluster.errors import available
from tether.cluster.owner_log import OwnerLog
from tether.cluster.prompts import ClusterPrompts, pending_from
from tether.config import Settings
from tether.errors import (
    AutoApproveDisabled,
    BadRequest,
    Fenced,
    NotFound,
    QueueFull,
    SessionBusy,
    ShuttingDown,
)
from tether.events import Event
from tether.images import ImageRef, ImageStore, content_blocks
from tether.projects import Projects
from tether.recap import recap
from tether.runner import AgentHost, Turn
from tether.sessions import (
    MAX_QUEUED,
    QueuedPrompt,
    State,
    check_prompt,
    check_title,
    images_of,
    title_from_prompt,
    user_payload,
)
from tether.stores.redis import RedisEventLog, RedisStore, Refused
from tether.usage import UsageMeter

logger = logging.getLogger(__name__)

#: Seconds between a closing session's checks that its turn has ended.
CLOSE_POLL_SECONDS = 0.05
#: Seconds between tries of an owner's write while Redis does not answer.
OWNER_RETRY_SECONDS = 0.5
#: The events a session's owner acts on: a turn begun on any worker, an answer given on
#: any, the agent's conversation id (saved for the next owner), a model or mode change.
#: A ``mode`` or ``model`` event is a command too: the owner tells its live agent
#: (set_permission_mode, set_model), wherever the change was made.
FOLLOWED_KINDS = frozenset({"user", "approval_resolved", "clarify_resolved", "agent_session",
                            "mode", "model"})


class ClusterSession:
    """Session ``session_id`` on this worker. Made by the cluster registry.

    :param me: this worker's id (it changes if the worker re-registers after a lapse).
    :param take_over: ``(session_id, dead_owner)``: end what a dead owner left open
        (:meth:`tether.cluster.membership.Membership.take_over`).
    :param stopping: True once this worker shuts down (its refusals say so).
    :param projects: the project roots, for a session opened in a project folder (see
        :class:`tether.sessions.Session`); None: its own workspace.
    :param claimant: the worker that claims the session for a turn asked here when it has
        no live owner (:meth:`tether.cluster.membership.Membership.claimant`); by default
        this one.
    :param draining: True while this worker's host is drained: the session is given up as
        soon as no turn runs in it (:meth:`give_up_if_idle`).
    :param on_own: called with this session once this worker owns it (after the fence is
        set): the registry keeps an owned session, whatever its idle sweep decided.
    """

    def __init__(self, session_id: str, agent: AgentSpec, workspace: Path, created_at: float,
                 log: RedisEventLog, store: RedisStore, settings: Settings,
                 me: Callable[[], str], take_over: Callable[[str, str], None],
                 stopping: Callable[[], bool],
                 on_turn_ended: Callable[[str, float], None] | None = None,
                 on_turn_end: Callable[[int, str], None] | None = None,
                 on_process: Callable[[int, bool], None] | None = None,
                 clock: Callable[[], float] = time.time,
                 projects: Projects | None = None,
                 claimant: Callable[[], str] | None = None,
                 draining: Callable[[], bool] | None = None,
                 on_own: Callable[[ClusterSession], None] | None = None) -> None:
        self.id = session_id
        self._on_own = on_own or (lambda session: None)
        self.agent = agent
        self.workspace = workspace
        self.project = projects is not None
        self._projects = projects
        self.created_at = created_at
        self.log = log
        self._store = store
        self._settings = settings
        self._me = me
        self._claimant = claimant or me
        self._draining = draining or (lambda: False)
        self._take_over = take_over
        self._stopping = stopping
        self._on_turn_ended = on_turn_ended or (lambda reason, seconds: None)
        self._on_turn_end = on_turn_end or (lambda turn, reason: None)
        self._on_process = on_process
        self._clock = clock
        self._rec = store.key(session_id, "rec")
        # The fence through a weak reference: no cycle, so a session the registry forgets
        # (sweep_idle) is freed at once, not at the next full collection.
        self.prompts = ClusterPrompts(store, session_id, settings.prompt_timeout_seconds,
                                      partial(_fence_of, weakref.ref(self)), clock,
                                      auto_allowed=settings.allow_auto_approve)
        # What this worker does as the owner, under _lock.
        self._lock = threading.Lock()
        self._fence = ""  # this worker's fencing token; "" while it is not the owner
        self._host: AgentHost | None = None
        self._turn: Turn | None = None
        self._started = 0  # the newest turn this worker started (or saw start elsewhere)
        self._cancel_for = 0  # a Stop for this turn number arrived
        self._follower: threading.Thread | None = None  # under _lock
        self._follow_queue: deque[Event] = deque()
        self._follow_ready = threading.Event()

    # -- reading (any worker) ------------------------------------------------------------

    def _fields(self, *names: str) -> list[str | None]:
        values = self._store.client.hmget(self._rec, names)
        return [None if v is None else v.decode() for v in values]

    @property
    @available
    def title(self) -> str:
        return self._fields("title")[0] or ""

    @property
    @available
    def auto_approve(self) -> bool:
        return self._fields("auto_approve")[0] == "1"

    @property
    def turn_active(self) -> bool:
        """As of this worker's view of the log (:attr:`RedisEventLog.turn_active`): no round
        trip, and it agrees with the events a client was given."""
        return self.log.turn_active

    @property
    @available
    def turn(self) -> int:
        return int(self._fields("turns")[0] or 0)

    @property
    @available
    def model(self) -> str:
        return self._fields("model")[0] or default_options(self.agent)[0]

    @property
    @available
    def permission_mode(self) -> str:
        return self._fields("permission_mode")[0] or default_options(self.agent)[1]

    @property
    @available
    def base_commit(self) -> str:
        """The commit HEAD named in the workspace at creation ("" outside git)."""
        return self._fields("base_commit")[0] or ""

    @property
    @available
    def agent_session_id(self) -> str:
        return self._fields("agent_session_id")[0] or ""

    @property
    def agent_running(self) -> bool:
        host = self._host
        return host is not None and host.running

    @property
    @available
    def state(self) -> State:
        return self.to_dict()["state"]

    @property
    @available
    def queue(self) -> list[QueuedPrompt]:
        raw = self._store.client.lrange(self._store.key(self.id, "queue"), 0, -1)
        return [_queued(item) for item in raw]

    @available
    def to_dict(self) -> dict[str, Any]:
        """The session object of DESIGN.md section 4, read from Redis in one round trip."""
        pipe = self._store.client.pipeline(transaction=True)
        summary_reads(pipe, self._store, self.id)
        raw_rec, raw_pending, raw_queue = pipe.execute()
        return summary(self.id, self.agent, self.workspace, self.created_at, self.project,
                       raw_rec, raw_pending, raw_queue, self.log.last_id)

    # -- commands (any worker) ---------------------------------------------------------

    @available
    def submit(self, text: str) -> int:
        """See :meth:`tether.sessions.Session.submit`."""
        return self.prompt(text)["turn"]

    @available
    def prompt(self, text: str, queue: bool = False,
               images: Sequence[ImageRef] = ()) -> dict[str, int]:
        """See :meth:`tether.sessions.Session.prompt`; busy is decided for the whole
        cluster, in one Redis Function."""
        self._check_text(text)
        self._check_running()
        self._check_folder()
        while True:
            now = self._clock()
            user_head, user_tail = template(self.id, now, "user",
                                            user_payload(HOLE, text, images))
            args: list[Any] = [self._claimant(), title_from_prompt(text, ""), user_head,
                               user_tail]
            if queue:
                queue_id = secrets.token_hex(16)
                queued: dict[str, Any] = {"queue_id": queue_id, "position": HOLE, "text": text}
                if images:
                    queued["images"] = [ref.as_dict() for ref in images]
                queued_head, queued_tail = template(self.id, now, "prompt_queued", queued)
                args += [MAX_QUEUED, _item(queue_id, text, images), queued_head, queued_tail]
            reply = self._call("begin_turn", *args)
            what = reply[0].decode()
            if what == "takeover":
                self._take_over(self.id, reply[1].decode())
                continue
            if what == "queued":
                return {"queued": int(reply[1])}
            number = int(reply[1])
            self._started_elsewhere_or_here(number, text, reply, tuple(images))
            return {"turn": number}

    @available
    def send_queued(self, position: int, queue_id: str | None = None) -> int:
        """See :meth:`tether.sessions.Session.send_queued`."""
        self._check_running()
        self._check_folder()
        while True:
            item = self._queue_item(position, queue_id)
            queued = _queued(item)
            now = self._clock()
            dequeued = rest(self.id, now, "prompt_dequeued",
                            {"queue_id": queued.queue_id, "position": position,
                             "reason": "sent"})
            user_head, user_tail = template(self.id, now, "user",
                                            user_payload(HOLE, queued.text, queued.images))
            reply = self._call("dequeue", position, item, dequeued, self._claimant(), "",
                               user_head, user_tail, queue_position=position)
            if reply[0].decode() == "takeover":
                self._take_over(self.id, reply[1].decode())
                continue
            number = int(reply[1])
            self._started_elsewhere_or_here(number, queued.text, reply, queued.images)
            return number

    @available
    def remove_queued(self, position: int, queue_id: str | None = None) -> None:
        """See :meth:`tether.sessions.Session.remove_queued`."""
        self._check_running()
        item = self._queue_item(position, queue_id)
        dequeued = rest(self.id, self._clock(), "prompt_dequeued",
                        {"queue_id": _queued(item).queue_id, "position": position,
                         "reason": "removed"})
        self._call("dequeue", position, item, dequeued, queue_position=position)

    @available
    def update(self, title: str | None = None, auto_approve: bool | None = None,
               model: str | None = None, permission_mode: str | None = None,
               by: str = "") -> None:
        """See :meth:`tether.sessions.Session.update`. A model or mode change is written to
        the record and appended as a ``model`` / ``mode`` event; the owner, wherever it
        runs, follows that event to its live agent (FOLLOWED_KINDS)."""
        self._check_running()
        check_options(self.agent, model, permission_mode, self._settings.allow_bypass)
        if auto_approve and not self._settings.allow_auto_approve:
            raise AutoApproveDisabled(
                "auto-approve is disabled on this server (TETHER_ALLOW_AUTO_APPROVE=0): every "
                "tool call waits for a person")
        fields: list[Any] = []
        if title is not None:
            fields += ["title", check_title(title), "title_set", 1]
        if auto_approve is not None:
            fields += ["auto_approve", int(auto_approve)]
        current_model, current_mode = self.model, self.permission_mode
        model = None if model == current_model else model
        permission_mode = None if permission_mode == current_mode else permission_mode
        if model is not None:
            fields += ["model", model]
        if permission_mode is not None:
            fields += ["permission_mode", permission_mode]
        if fields:
            # Inbox entries carry the title.
            self._call("update", 1 if title is not None else 0, *fields)
        if model is not None:
            self.log.append("model", {"model": model, "by": by})
        if permission_mode is not None:
            self.log.append("mode", {"permission_mode": permission_mode, "by": by})

    @available
    def cancel(self) -> bool:
        """Stop the running turn, wherever it runs. False when no turn is running (or it is
        being stopped already)."""
        reply = self._call("request_cancel")
        if isinstance(reply, list):  # its owner is dead: end the turn now
            self._take_over(self.id, reply[1].decode())
            return True
        return bool(int(reply))

    @available
    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no turn runs in the cluster; True if idle within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._fields("turn_active")[0] not in (None, "0"):  # the record, not the view
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(CLOSE_POLL_SECONDS)
        return True

    def _call(self, function: str, *args: Any, queue_position: int | None = None) -> Any:
        try:
            return self._store.call(function, self.id, *args)
        except Refused as exc:
            if exc.code == "BUSY":
                raise SessionBusy(exc.message) from None
            if exc.code == "QUEUE_FULL":
                raise QueueFull(f"the queue holds {MAX_QUEUED} prompts, its limit; send or "
                                "remove one first") from None
            if exc.code == "NOT_FOUND" and queue_position is not None:
                raise NotFound(f"no queued prompt {queue_position}: the queue changed; read "
                               "the session again") from None
            if exc.code == "CLOSED":
                raise BadRequest("the session was deleted") from None
            raise

    def _queue_item(self, position: int, queue_id: str | None) -> bytes:
        items = self._store.client.lrange(self._store.key(self.id, "queue"), 0, -1)
        if not 1 <= position <= len(items):
            raise NotFound(f"no queued prompt {position}: the queue holds {len(items)}")
        item = items[position - 1]
        if queue_id is not None and _queued(item).queue_id != queue_id:
            raise NotFound(f"queued prompt {position} is not {queue_id[:40]!r} (the queue "
                           "changed); read the session again")
        return item

    def _check_text(self, text: str) -> None:
        check_prompt(text, self._settings.max_prompt_bytes)

    def _check_folder(self) -> None:
        """A project folder is still there and readable (see
        :meth:`tether.sessions.Session._check_folder`)."""
        if self._projects is not None:
            self._projects.check_before_turn(self.workspace, self.log)

    def _check_running(self) -> None:
        if self._stopping():
            raise ShuttingDown("this server is shutting down; try again (another worker, or "
                               "this one once it is back, takes it)")

    # -- the owner ---------------------------------------------------------------------

    def _started_elsewhere_or_here(self, number: int, text: str, reply: list[Any],
                                   images: tuple[ImageRef, ...] = ()) -> None:
        """After ``begin_turn``/``dequeue``: the owner it names starts turn ``number``; when
        that is this worker, now (else its view of the log brings the ``user`` event, or, to
        a worker that has just claimed the session for this one, an ``own`` control)."""
        owner, fence = reply[2].decode(), str(int(reply[3]))
        if owner == self._me():
            self.own(fence)
            self._run_turn(number, text, images)

    def own(self, fence: str) -> None:
        """This worker owns the session under ``fence``: follow its log for turns begun and
        requests answered on other workers."""
        with self._lock:
            if self._fence == fence:
                return
            fresh = self._fence == ""
            self._fence = fence
            if fresh:
                self._load_agent_state()
            if self._follower is None or not self._follower.is_alive():
                # Events appended before this worker owned the session are not followed:
                # answers to its requests cannot be among them, turns are not its to start
                # (_started).
                self.log.follow(FOLLOWED_KINDS, self._followed_event)
                self._follower = threading.Thread(target=self._follow, daemon=True,
                                                  name=f"owner-{self.id[:8]}")
                self._follower.start()
        self._on_own(self)  # after the fence is set: the registry's sweep reads it

    @property
    def owned(self) -> bool:
        return self._fence != ""

    @property
    def busy_here(self) -> bool:
        """Whether this worker does anything for the session beyond serving reads: it owns
        it, runs (or ends) a turn of it, holds its agent or follows its log. Such a session
        and its view are never dropped as idle."""
        return (self._fence != "" or self._turn is not None or self._host is not None
                or self._follower is not None)

    def _load_agent_state(self) -> None:
        # Under _lock: the agent's conversation and spend as the previous owner left them.
        agent_session_id, started, spent, total, turns, usage, model, mode = self._fields(
            "agent_session_id", "agent_started", "session_cost_usd", "agent_total_cost_usd",
            "turns", "session_usage", "model", "permission_mode")
        host = AgentHost(self.agent, self.workspace, self._settings)
        host.on_process = self._on_process
        host.transcript = lambda: recap(self.log.read_after(0))
        default_model, default_mode = default_options(self.agent)
        if mode in UNATTENDED_MODES and not self._settings.allow_bypass:
            mode = None  # as tether.sessions.Session.restore: TETHER_ALLOW_BYPASS is off now
        host.model, host.permission_mode = model or default_model, mode or default_mode
        if agent_session_id:
            if started == "1":
                host.resume(agent_session_id)
            else:
                host.agent_session_id = agent_session_id
        host.costs.session_usd = float(spent or 0)
        host.costs.last_total = float(total) if total else None
        host.usage = UsageMeter(_usage(usage))
        if self._host is not None:
            self._host.stop()
        self._host = host
        # Turns begun before this claim are not this worker's to start.
        self._started = max(self._started, int(turns or 0) - 1)

    def _run_turn(self, number: int, text: str, images: tuple[ImageRef, ...] = ()) -> None:
        """Start turn ``number`` here, once (this worker is the owner)."""
        with self._lock:
            if number <= self._started or not self._fence or self._host is None:
                return
            self._started = number
            fence, host = self._fence, self._host
            if not self.workspace.is_dir() and (host.started or self.project):
                turn = None  # never a mkdir of a project folder
            else:
                self.workspace.mkdir(parents=True, exist_ok=True)
                content = None
                if images:
                    store = ImageStore(self._settings.data_dir)
                    content = partial(content_blocks, store, self.id, text, images)
                turn = Turn(number, text, host, OwnerLog(self.log, fence), self.prompts,
                            self._settings, self._turn_finished, content=content)
                self._turn = turn
            cancelled = self._cancel_for >= number
        if turn is None:
            self._missing_workspace(number, fence)
            return
        try:
            # Marked before the agent hears of it: from now on a takeover ends this turn
            # rather than running it again elsewhere.
            running = int(self._owner_call("mark_started", fence, number))
        except Fenced:
            running = 0
            self.lost()
        except Exception as exc:  # Redis away: the turn cannot be recorded as started
            logger.warning("session %s: turn %s not started: %r", self.id, number, exc)
            running = 0
        if not running:
            with self._lock:
                if self._turn is turn:
                    self._turn = None
            return
        if cancelled:
            turn.cancel("cancelled")
        turn.start()

    def _missing_workspace(self, number: int, fence: str) -> None:
        """The conversation to resume lives in a workspace this host does not have, or the
        project folder is gone: say so and end the turn, rather than start it afresh in an
        empty folder."""
        message = (f"the workspace {self.workspace} is missing on this host, so the agent's "
                   "conversation cannot be resumed here: across hosts TETHER_DATA_DIR and the "
                   "agent's HOME must be one shared filesystem, mounted at the same path")
        if self.project:
            message = (f"the session's folder {self.workspace} is missing on this host: it "
                       "was removed, or is not on this host's filesystem")
        try:
            self.log.append("error", {"message": message}, fence=fence)
            end = rest(self.id, self._clock(), "turn_end", {"turn": number, "reason": "error"})
            self._owner_call("end_turn", fence, number, end)
        except (Fenced, RuntimeError) as exc:
            logger.warning("session %s: turn %s not ended: %r", self.id, number, exc)

    def _turn_finished(self, turn: Turn, reason: str) -> None:
        """The owner's turn is over: ``turn_end``, and the freed slot, in one function; a
        completed turn sends the queue's first prompt in the same step."""
        fence = self._fence
        follow: tuple[int, str, tuple[ImageRef, ...]] | None = None
        try:
            head = None
            if reason == "completed":
                head = self._store.client.lindex(self._store.key(self.id, "queue"), 0)
            now = self._clock()
            args: list[Any] = [fence, turn.number,
                               rest(self.id, now, "turn_end",
                                    {"turn": turn.number, "reason": reason})]
            if head is not None:
                queued = _queued(head)
                user_head, user_tail = template(self.id, now, "user",
                                                user_payload(HOLE, queued.text, queued.images))
                args += [head, rest(self.id, now, "prompt_dequeued",
                                    {"queue_id": queued.queue_id, "position": 1,
                                     "reason": "sent"}), user_head, user_tail]
                follow = (0, queued.text, queued.images)
            ended, number = (int(v) for v in self._owner_call("end_turn", *args))
            if number > 0 and follow is not None:
                follow = (number, follow[1], follow[2])
            elif number < 0:  # the queue changed meanwhile: send its head as a client would
                follow = None
                self._send_head()
            else:
                follow = None
            self._save_agent_state(fence)
        except Fenced:
            logger.warning("session %s: turn %s ended after another worker took the session "
                           "over", self.id, turn.number)
            self.lost()
        except Exception as exc:  # closed, or Redis away: the reaper ends it if need be
            logger.warning("session %s: turn %s: turn_end not written: %r", self.id,
                           turn.number, exc)
        with self._lock:
            if self._turn is turn:
                self._turn = None
        self._on_turn_ended(reason, time.monotonic() - turn.started)
        self._on_turn_end(turn.number, reason)
        if follow is not None:
            self._run_turn(*follow)
        elif self._draining():
            self.give_up_if_idle()

    def _owner_call(self, function: str, *args: Any) -> Any:
        """A write only the owner makes (a turn's start or end): retried while Redis does not
        answer, so that an outage leaves no turn marked running for good. An outage longer
        than the lease ends here too: the heartbeat lapsed, the reaper ended the turn, and
        the retry is refused as :class:`~tether.errors.Fenced`."""
        pause = OWNER_RETRY_SECONDS
        while True:
            try:
                return self._store.call(function, self.id, *args)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                logger.warning("session %s: %s not written yet (%r); retrying in %.1f s",
                               self.id, function, exc, pause)
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    def _send_head(self) -> None:
        try:
            self.send_queued(1)
        except Exception as exc:  # a prompt raced it in: the queue waits for its turn
            logger.info("session %s: queued prompt not sent: %r", self.id, exc)

    def _save_agent_state(self, fence: str) -> None:
        host = self._host
        if host is None:
            return
        fields: dict[str, Any] = {"agent_session_id": host.agent_session_id,
                                  "agent_started": int(host.started),
                                  "permission_mode": host.permission_mode,
                                  "session_cost_usd": repr(host.costs.session_usd),
                                  "session_usage": json.dumps(host.usage.totals)}
        if host.costs.last_total is not None:
            fields["agent_total_cost_usd"] = repr(host.costs.last_total)
        if self._fence == fence:
            self._store.client.hset(self._rec, mapping=fields)

    def _followed_event(self, event: Event) -> None:
        # Under the log view's lock (RedisEventLog.follow): queue it, nothing more.
        self._follow_queue.append(event)
        self._follow_ready.set()

    def _follow(self) -> None:
        """The owner's follower, while this worker owns the session: turns begun on other
        workers, answers given on any. It wakes for those events only (FOLLOWED_KINDS), not
        for every event of the session."""
        while True:
            self._follow_ready.wait(self._settings.heartbeat_seconds)
            self._follow_ready.clear()
            while self._follow_queue:
                event = self._follow_queue.popleft()
                try:
                    self._act_on(event)
                except Exception:  # Redis away, or a bug: the follower must go on
                    logger.exception("session %s: event %s (%s) not acted on", self.id,
                                     event.id, event.kind)
            with self._lock:
                if not self._fence or self.log.closed:
                    self.log.unfollow()
                    self._follow_queue.clear()
                    self._follower = None
                    return

    def _act_on(self, event: Event) -> None:
        if event.kind == "user":
            self._run_turn(int(event.payload.get("turn") or 0),
                           str(event.payload.get("text", "")), images_of(event.payload))
        elif event.kind in ("approval_resolved", "clarify_resolved"):
            self.prompts.resolved(event)
        elif event.kind in ("mode", "model") and self._fence and self._host is not None:
            # A change made on any worker (or by the agent itself, then the host has it):
            # the owner tells its live agent, and writes the record as the log has it.
            model = event.payload.get("model") if event.kind == "model" else None
            mode = event.payload.get("permission_mode") if event.kind == "mode" else None
            self._host.configure(model=model if isinstance(model, str) else None,
                                 permission_mode=mode if isinstance(mode, str) else None)
            field, value = ("model", model) if event.kind == "model" else ("permission_mode",
                                                                           mode)
            if isinstance(value, str):
                self._store.client.hset(self._rec, field, value)
        elif event.kind == "agent_session" and self._fence:
            # Saved at once: if this worker dies mid-turn, the next owner resumes it.
            self._store.client.hset(self._rec, mapping={
                "agent_session_id": str(event.payload.get("agent_session_id", "")),
                "agent_started": 1})

    def cancel_here(self, number: int) -> None:
        """A ``cancel N`` control: stop turn ``number`` if it runs here (or once it starts)."""
        with self._lock:
            self._cancel_for = max(self._cancel_for, number)
            turn = self._turn
        if turn is not None and turn.number == number:
            turn.cancel("cancelled")

    def check_cancel(self) -> None:
        """After a resync (wakes may have been missed): act on a Stop not yet seen."""
        turn = self._turn
        if turn is None:
            return
        cancel = self._fields("cancel")[0]
        if cancel and int(cancel) == turn.number:
            self.cancel_here(turn.number)

    def lost(self) -> None:
        """This worker no longer owns the session (taken over, or its heartbeat lapsed):
        stop its agent and wake its waiters, writing nothing."""
        self._let_go("interrupted", "This worker lost the session to another.")

    def _let_go(self, reason: str, message: str) -> None:
        """Stop being the owner here: wake the waiters (``message``), cancel the turn
        (``reason``), stop the agent (on a thread: it may take the cancel grace)."""
        with self._lock:
            turn, host = self._turn, self._host
            self._fence, self._host = "", None
        self.prompts.abandon(message)
        if turn is not None:
            turn.cancel(reason)
        if host is not None:
            threading.Thread(target=host.stop, daemon=True).start()

    def stop_here(self, reason: str = "interrupted") -> Turn | None:
        """This worker stops (or the session was deleted): cancel the turn it runs, with
        ``reason``; returns it, to wait for."""
        with self._lock:
            turn = self._turn
        if turn is not None:
            turn.cancel(reason)
        return turn

    def release(self) -> None:
        """After :meth:`stop_here` and the turn's end: stop the agent, give the session up."""
        with self._lock:
            fence, host = self._fence, self._host
            self._fence, self._host = "", None
        if host is not None:
            host.stop()
        self.prompts.abandon("The server stopped.")
        if fence:
            try:
                self._store.call("release", self.id, self._me(), fence)
            except Exception as exc:
                logger.info("session %s: not released: %r", self.id, exc)

    def give_up_if_idle(self) -> bool:
        """While this worker's host drains: give the session up if no turn runs in it, so
        that its next turn is claimed by a worker of another host; its agent is stopped
        (the next owner resumes the conversation). True when given up.

        Under the lock throughout: a ``user`` event the follower takes meanwhile waits for
        the answer, then starts its turn here if the session was kept (the release refuses
        while a turn runs) and leaves it to its new owner if not.
        """
        with self._lock:
            if self._turn is not None or not self._fence:
                return False
            try:
                released = self._store.call("release", self.id, self._me(), self._fence)
            except Exception as exc:  # Redis away: the next heartbeat's pass tries again
                logger.info("session %s: not given up: %r", self.id, exc)
                return False
            if not released:
                return False
            host = self._host
            self._fence, self._host = "", None
        logger.info("session %s: given up by a draining worker", self.id)
        if host is not None:  # on a thread: a stop may take the cancel grace
            threading.Thread(target=host.stop, daemon=True).start()
        return True

    def closed_elsewhere(self) -> None:
        """The session was deleted (by any worker): stop what runs here."""
        self._let_go("cancelled", "The session was deleted.")
        self.log.close()


def _fence_of(session: weakref.ref[ClusterSession]) -> str:
    """The fence of ``session`` ("" once it is gone)."""
    held = session()
    return "" if held is None else held._fence


def _item(queue_id: str, text: str, images: Sequence[ImageRef] = ()) -> str:
    """A queued prompt as the ``queue`` list holds it."""
    held: dict[str, Any] = {"queue_id": queue_id, "text": text}
    if images:
        held["images"] = [ref.as_dict() for ref in images]
    return json.dumps(held, separators=(",", ":"))


def summary_reads(pipe: Any, store: RedisStore, session_id: str) -> None:
    """Queue on ``pipe`` (a redis-py pipeline) the three reads :func:`summary` takes, in its
    order: the record (``HGETALL``), the pending requests (``HGETALL``), the queue
    (``LRANGE``)."""
    pipe.hgetall(store.key(session_id, "rec"))
    pipe.hgetall(store.key(session_id, "pending"))
    pipe.lrange(store.key(session_id, "queue"), 0, -1)


def summary(session_id: str, agent: AgentSpec, workspace: Path, created_at: float,
            project: bool, raw_rec: Mapping[bytes, bytes], raw_pending: Mapping[bytes, bytes],
            raw_queue: list[bytes], last_seen: int = 0) -> dict[str, Any]:
    """The session object of DESIGN.md section 4 from the replies of :func:`summary_reads`
    (``last_seen``: the newest event id a view of the log here holds, if any)."""
    rec = {k.decode(): v.decode() for k, v in raw_rec.items()}
    pending = pending_from(raw_pending)
    active = rec.get("turn_active", "0") != "0"
    closed = rec.get("closed") == "1" or not rec
    state: State = ("ended" if closed else "idle" if not active
                    else "waiting" if pending else "running")
    queue = [_queued(item) for item in raw_queue]
    return {
        "id": session_id,
        "agent": agent.name,
        "title": rec.get("title", ""),
        "cwd": str(workspace),
        "project": project,
        "created_at": created_at,
        "state": state,
        "turn_active": active,
        "turn": int(rec.get("turns", 0)),
        "last_event_id": max(int(rec.get("last", 0)), last_seen),
        "agent_session_id": rec.get("agent_session_id", ""),
        "auto_approve": rec.get("auto_approve") == "1",
        "usage": _usage(rec.get("session_usage")),
        "model": rec.get("model") or default_options(agent)[0],
        "permission_mode": rec.get("permission_mode") or default_options(agent)[1],
        "queue": [item.summary(n) for n, item in enumerate(queue, 1)],
        "pending": {
            "approvals": [p.summary() for p in pending if p.kind == "approval"],
            "clarify": [p.summary() for p in pending if p.kind == "clarify"],
        },
    }


def _usage(raw: str | None) -> dict[str, Any]:
    """A session's totals as its record keeps them (JSON), or zeros."""
    try:
        held = json.loads(raw) if raw else {}
    except ValueError:
        held = {}
    return UsageMeter(held if isinstance(held, dict) else {}).totals


def _queued(item: bytes) -> QueuedPrompt:
    held = json.loads(item)
    return QueuedPrompt(held["queue_id"], held["text"], images_of(held))
