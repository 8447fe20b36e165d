"""The cluster's session registry: the transports' one entry point with ``TETHER_STORE=redis``.

The same surface as :class:`tether.sessions.SessionRegistry`; sessions live in Redis, so
any worker serves any session: one this worker has not seen yet is loaded on first use,
one deleted on another worker is forgotten when its ``closed`` control arrives, and one
nobody on this worker followed for ``TETHER_MIRROR_IDLE_SECONDS`` (60 s) is forgotten with
its view of the log (:meth:`ClusterRegistry.sweep_idle`, after every heartbeat), so a
worker's memory does not grow with every session it ever served. The inbox's
revision is the cluster's (``P:inbox:rev``), so every worker's clients see the same
revisions, and a change on any worker wakes the inbox streams of all.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from tether.agents.base import AgentCatalog, check_available, check_options, default_options
from tether.changes import head_commit
from tether.cluster.envelopes import rest
from tether.cluster.errors import available
from tether.cluster.membership import Membership
from tether.cluster.prompts import pending_from
from tether.cluster.sessions import ClusterSession, summary, summary_reads
from tether.config import Settings
from tether.conversations import History
from tether.errors import NotFound, ShuttingDown, TooManySessions
from tether.images import ImageStore
from tether.inbox import Inbox
from tether.prompts import PendingRequest
from tether.sessions import (
    SessionRegistry,
    check_title,
    continuation_events,
    is_own_workspace,
    own_workspace,
)
from tether.stores.base import Store
from tether.stores.redis import RedisStore, Refused

logger = logging.getLogger(__name__)

#: Sessions read per pipeline when listing.
LIST_PAGE = 500
#: The record fields that place a session on a worker (:func:`_placement`).
_PLACEMENT = ["agent", "workspace", "created_at", "closed"]


class ClusterInbox(Inbox):
    """The inbox with the cluster's revision: advanced by ``inbox R`` controls and by every
    snapshot, which reads the revision from Redis first."""

    def __init__(self, source: Any, store: RedisStore) -> None:
        self._store = store
        super().__init__(source, store.epoch, self._read_revision())

    def _read_revision(self) -> int:
        return int(self._store.client.get(f"{self._store.prefix}:inbox:rev") or 0)

    def advance(self, revision: int) -> None:
        """Redis's inbox revision is ``revision`` (or newer): wake waiters if it moved."""
        with self._wakeup.lock:
            if revision > self._revision:
                self._revision = revision
                self._wakeup.notify()

    def changed(self) -> None:
        """Nothing to do: every change of the inbox bumps Redis's revision itself."""

    @available
    def snapshot(self) -> dict[str, Any]:
        revision = self._read_revision()
        if self.epoch != self._store.epoch:  # Redis lost its data: revisions start again
            with self._wakeup.lock:
                self.epoch, self._revision, self._snapshot = self._store.epoch, revision, None
                self._wakeup.notify()
        self.advance(revision)
        return super().snapshot()


class ClusterRegistry(SessionRegistry):
    """Every session of the cluster, as this worker serves them.

    :param store: a :class:`~tether.stores.redis.RedisStore` (by default the one the
        settings name).
    :param worker: this worker's id (several workers in one process, in tests); by default
        :func:`tether.workers.worker_id`.
    :raises redis.exceptions.ConnectionError: Redis is unreachable at start.
    """

    def __init__(self, settings: Settings, store: Store | None = None,
                 agents: AgentCatalog | None = None,
                 clock: Callable[[], float] = time.time, worker: str | None = None) -> None:
        self._worker = worker
        super().__init__(settings, store, agents, clock)

    @property
    def redis_store(self) -> RedisStore:
        assert isinstance(self.store, RedisStore)
        return self.store

    @property
    def worker_id(self) -> str:
        return self.membership.worker_id

    def _restore(self) -> None:
        """Join the cluster (called by the base class's constructor): nothing to restore,
        as the sessions live in Redis; a dead worker's turns are the reaper's."""
        store = self.store
        if not isinstance(store, RedisStore):
            raise TypeError("the cluster registry needs the Redis store (TETHER_STORE=redis)")
        self._stopping = False
        #: Sessions the idle sweep forgot that some caller still holds: get() takes such a
        #: session back instead of making a second one (one object per session, the owner's).
        self._idle: weakref.WeakValueDictionary[str, ClusterSession] = (
            weakref.WeakValueDictionary())
        self.membership = Membership(store, self.settings, self._lost_all, self._worker)
        self.inbox = ClusterInbox(self._pending_by_session, store)
        self.membership.on_adopt = self._adopt
        self.membership.on_drain = self._drain
        self.membership.on_tick = self.sweep_idle
        store.on_control = self._control
        store.on_resync = self._resync
        self.membership.start()

    # -- sessions ----------------------------------------------------------------------

    @available
    def create(self, agent: str | None = None, title: str | None = None,
               cwd: str | None = None, model: str | None = None,
               permission_mode: str | None = None, by: str = "",
               resume: str | None = None) -> ClusterSession:
        """See :meth:`tether.sessions.SessionRegistry.create`; the session limit is the
        cluster's. A continued conversation's record says its agent session is started,
        so whichever worker runs its first turn resumes it."""
        spec = self.agents.get(agent or self.settings.agent)
        check_available(spec)
        check_options(spec, model, permission_mode, self.settings.allow_bypass)
        default_model, default_mode = default_options(spec)
        title = check_title(title) if title is not None and title.strip() else None
        folder = self.projects.resolve(cwd) if cwd is not None else None
        history = self.saved_history(spec.name, folder, resume) if resume is not None else None
        if self._stopping:
            raise ShuttingDown("this server is shutting down; create the session once it is "
                               "back")
        session_id = secrets.token_hex(16)
        workspace = folder or own_workspace(self.settings.data_dir, session_id)
        if folder is None:
            workspace.mkdir(parents=True, exist_ok=True)
        created = round(self._clock(), 3)
        base = (head_commit(folder) or "") if folder is not None else ""
        agent_fields: list[Any] = ["agent_session_id", ""]
        if history is not None:
            agent_fields = ["agent_session_id", history.conversation.id, "agent_started", 1]
            if history.total_cost_usd is not None:
                agent_fields += ["agent_total_cost_usd", repr(history.total_cost_usd)]
        default = history.conversation.title if history else f"{spec.name} session"
        try:
            self.redis_store.call(
                "create", session_id, repr(created), self.settings.max_sessions,
                "agent", spec.name, "title", title or default,
                "title_set", int(title is not None or history is not None),
                "workspace", str(workspace), "auto_approve", 0, *agent_fields,
                "base_commit", base, "model", default_model, "permission_mode", default_mode)
        except Refused as exc:
            if folder is None:  # a project folder is the user's: never removed
                workspace.rmdir()
            if exc.code == "TOO_MANY":
                raise TooManySessions(
                    f"this server holds {self.settings.max_sessions} sessions, its limit "
                    "(TETHER_MAX_SESSIONS); delete one first") from None
            raise
        if history is not None and folder is not None:
            self._show_history(session_id, spec.name, folder, history)
        logger.info("created session %s (agent %s)", session_id, spec.name)
        session = self.get(session_id)
        if model is not None or permission_mode is not None:
            session.update(model=model, permission_mode=permission_mode, by=by)
        return session

    def _show_history(self, session_id: str, agent: str, folder: Path,
                      history: History) -> None:
        """Append a continued conversation's opening events in one call (nobody owns the
        session yet: no fence). If that fails, the session is deleted: never a session
        that would resume a conversation it does not show."""
        log = self.redis_store.open_log(session_id)
        try:
            log.append_many([log.draft(kind, payload) for kind, payload
                             in continuation_events(agent, folder, history)])
        except Exception:
            try:
                self.delete(session_id)
            except Exception:  # the append's own failure is the one to report
                logger.exception("session %s: not deleted after its history failed",
                                 session_id)
            raise

    @available
    def get(self, session_id: str) -> ClusterSession:
        """:raises NotFound: unknown (or deleted) session."""
        session = self._held(session_id)
        if session is not None:
            session.log.touch()  # a view the sweep dropped is taken back here
            if not session.log.closed:
                return session
        placed = _placement(self.redis_store.client.hmget(
            self.redis_store.key(session_id, "rec"), _PLACEMENT))
        if placed is None:
            raise NotFound(f"no session {session_id[:80]!r}")
        return self._build(session_id, *placed)

    def _held(self, session_id: str) -> ClusterSession | None:
        """The session object this worker holds for ``session_id``, if any: registered, or
        forgotten by the idle sweep but still held by a caller (registered again)."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                session = self._idle.pop(session_id, None)
                if session is not None:
                    self._sessions[session_id] = session
        return session  # type: ignore[return-value]

    def _build(self, session_id: str, agent: str, workspace: str,
               created_at: float) -> ClusterSession:
        try:
            spec = self.agents.get(agent)
        except NotFound:
            raise NotFound(f"session {session_id[:80]!r} runs agent {agent!r}, which this "
                           "server does not offer") from None
        log = self.redis_store.open_log(session_id)
        session = ClusterSession(
            session_id, spec, Path(workspace), created_at, log, self.redis_store,
            self.settings, me=lambda: self.membership.worker_id,
            take_over=self._take_over, stopping=lambda: self._stopping,
            on_turn_ended=self.metrics.turn_ended,
            on_turn_end=partial(self._turn_end, session_id),
            on_process=self._agent_process, clock=self._clock,
            projects=None if is_own_workspace(Path(workspace), session_id) else self.projects,
            claimant=self.membership.claimant, draining=lambda: self.membership.draining,
            on_own=self._owned)
        with self._lock:
            current = self._sessions.get(session_id) or self._idle.pop(session_id, None)
            if current is not None and not current.log.closed:
                self._sessions[session_id] = current
                return current  # type: ignore[return-value]
            self._sessions[session_id] = session  # type: ignore[assignment]
        return session

    def _owned(self, session: ClusterSession) -> None:
        """``session`` is owned here now: registered, even if the idle sweep had forgotten it
        while a request held it (the owner's object is the one controls reach)."""
        with self._lock:
            if self._idle.get(session.id) is session:
                del self._idle[session.id]
            self._sessions.setdefault(session.id, session)  # type: ignore[arg-type]

    def sweep_idle(self, idle_seconds: float | None = None) -> int:
        """Forget the sessions nobody on this worker follows: those it does nothing for
        (:attr:`ClusterSession.busy_here`) whose view of the log had no watcher, waiter or
        follower and no use for ``idle_seconds`` (default ``TETHER_MIRROR_IDLE_SECONDS``).
        The store stops feeding their views; the registry lets go of their session objects.
        The next request for one loads it again from Redis (or takes back the object a
        caller still holds); its ids and epoch are Redis's, so a cursor resumes exactly.
        Runs after every heartbeat (Membership.on_tick); no Redis call.

        :returns: how many views were dropped.
        """
        idle = self.settings.mirror_idle_seconds if idle_seconds is None else idle_seconds
        with self._lock:
            busy = {sid for sid, s in self._sessions.items()
                    if isinstance(s, ClusterSession) and s.busy_here}
        dropped = self.redis_store.drop_idle(idle, keep=busy)
        with self._lock:
            for session_id in dropped:
                session = self._sessions.get(session_id)
                # Owned since the first look (own() sets the fence, then registers): kept.
                if not isinstance(session, ClusterSession) or session.busy_here:
                    continue
                del self._sessions[session_id]
                if not session.log.closed:
                    self._idle[session_id] = session
        return len(dropped)

    @available
    def list(self) -> list[ClusterSession]:  # type: ignore[override]
        """Every session of the cluster, newest first (ties by id, as the other stores)."""
        client = self.redis_store.client
        ordered = self._session_ids()[::-1]
        sessions: list[ClusterSession] = []
        with self._lock:
            known = dict(self._sessions)
        missing = [sid for sid in ordered if sid not in known or known[sid].log.closed]
        loaded: dict[str, ClusterSession] = {}
        for start in range(0, len(missing), LIST_PAGE):
            page = missing[start:start + LIST_PAGE]
            pipe = client.pipeline(transaction=False)
            for sid in page:
                pipe.hmget(self.redis_store.key(sid, "rec"), _PLACEMENT)
            for sid, values in zip(page, pipe.execute(), strict=True):
                placed = _placement(values)
                if placed is None:
                    continue
                try:
                    loaded[sid] = self._build(sid, *placed)
                except NotFound as exc:
                    logger.warning("%s; not listed", exc.message)
        for sid in ordered:
            session = loaded.get(sid) or known.get(sid)
            if session is not None and not session.log.closed:
                sessions.append(session)  # type: ignore[arg-type]
        return sessions

    @available
    def summaries(self) -> list[dict[str, Any]]:
        """Every session's object (DESIGN.md section 4), newest first, as :meth:`list`
        with ``to_dict`` each, but read in one round trip per :data:`LIST_PAGE` sessions
        (a snapshot of each page: ``MULTI``), without loading a session object or a view of
        its log on this worker."""
        client = self.redis_store.client
        ordered = self._session_ids()[::-1]
        with self._lock:
            known = dict(self._sessions)
        out: list[dict[str, Any]] = []
        for start in range(0, len(ordered), LIST_PAGE):
            page = ordered[start:start + LIST_PAGE]
            pipe = client.pipeline(transaction=True)
            for sid in page:
                summary_reads(pipe, self.redis_store, sid)
            replies = pipe.execute()
            for i, sid in enumerate(page):
                raw_rec, raw_pending, raw_queue = replies[3 * i:3 * i + 3]
                placed = _placement(raw_rec.get(name.encode()) for name in _PLACEMENT)
                if placed is None:
                    continue  # deleted meanwhile
                agent, workspace, created_at = placed
                try:
                    spec = self.agents.get(agent)
                except NotFound:
                    logger.warning("session %r runs agent %r, which this server does not "
                                   "offer; not listed", sid[:80], agent)
                    continue
                held = known.get(sid)
                out.append(summary(
                    sid, spec, Path(workspace), created_at,
                    not is_own_workspace(Path(workspace), sid), raw_rec, raw_pending,
                    raw_queue, held.log.last_id if held is not None else 0))
        return out

    @available
    def delete(self, session_id: str) -> None:
        """Stop the session's turn wherever it runs, then delete it everywhere and remove
        its own workspace.

        :raises NotFound: unknown session.
        :raises ShuttingDown: this worker is stopping (the session stays).
        """
        if self._stopping:
            raise ShuttingDown("this server is shutting down; delete the session once it is "
                               "back")
        session = self.get(session_id)
        session.cancel()
        if not session.wait_idle(self.settings.cancel_grace_seconds * 3 + 5):
            logger.warning("session %s: its turn did not end in time; deleted anyway",
                           session_id)
        with self._lock:
            self._sessions.pop(session_id, None)
            self._idle.pop(session_id, None)
        self.redis_store.drop_log(session_id)
        session.closed_elsewhere()
        self._remove_workspace(session)  # type: ignore[arg-type]
        ImageStore(self.settings.data_dir).remove(session_id)

    def shutdown(self) -> None:
        """This worker stops: the turns it runs end ``interrupted``, its agents stop, its
        sessions are released for other workers, it leaves the cluster; the sessions and
        every other worker's turns go on. Safe to call twice."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._shutting_down = True
            sessions = [s for s in self._sessions.values()
                        if isinstance(s, ClusterSession) and s.owned]
        turns = [turn for turn in (s.stop_here("interrupted") for s in sessions) if turn]
        deadline = time.monotonic() + self.settings.cancel_grace_seconds * 2 + 1
        for turn in turns:
            turn.join(max(deadline - time.monotonic(), 0))
        for session in sessions:
            session.release()
        self.membership.stop()
        self.inbox.close()
        self.store.close()

    # -- the wake reader's controls ------------------------------------------------------

    def _control(self, session_id: str, control: str) -> None:
        name, _, value = control.partition(" ")
        if name == "inbox":
            self.inbox.advance(int(value))  # type: ignore[attr-defined]
            return
        if name == "own":
            self._claimed(session_id, value)
            return
        with self._lock:
            session = self._sessions.get(session_id) or self._idle.get(session_id)
            if name == "closed":
                self._sessions.pop(session_id, None)
                self._idle.pop(session_id, None)
        if not isinstance(session, ClusterSession):
            return
        if name == "cancel" and session.owned:
            threading.Thread(target=session.cancel_here, args=(int(value),), daemon=True).start()
        elif name == "closed":
            threading.Thread(target=session.closed_elsewhere, daemon=True).start()

    def _claimed(self, session_id: str, value: str) -> None:
        """An ``own <worker> <turn> <fence>`` control: a prompt made ``worker`` the owner
        of ``session_id`` to run ``turn``. The worker that asked for it starts the turn
        itself; when that was another worker (a draining host hands its claims over), this
        starts it here."""
        wid, turn, fence = value.split(" ")
        if wid != self.membership.worker_id:
            return
        with self._lock:
            session = self._sessions.get(session_id)
        if isinstance(session, ClusterSession) and session.owned:
            return  # claimed here, by this worker's own prompt: it starts the turn
        threading.Thread(target=self._adopt, args=(session_id, int(turn), fence),
                         daemon=True).start()

    def _drain(self) -> None:
        """At each heartbeat while this worker's host drains (on the heartbeat's thread):
        give up every session it owns where no turn runs (one with a turn is given up when
        the turn ends), and those Redis says it owns unknown to it (:meth:`_audit_owned`)."""
        with self._lock:
            owned = [s for s in self._sessions.values()
                     if isinstance(s, ClusterSession) and s.owned]
        for session in owned:
            session.give_up_if_idle()
        self._audit_owned()

    def _resync(self) -> None:
        """Controls may have been missed: the inbox's revision, Stops of owned turns, and
        claims made for this worker by another (:meth:`_audit_owned`)."""
        self.inbox.advance(self.inbox._read_revision())  # type: ignore[attr-defined]
        with self._lock:
            owned = [s for s in self._sessions.values()
                     if isinstance(s, ClusterSession) and s.owned]
        for session in owned:
            threading.Thread(target=session.check_cancel, daemon=True).start()
        threading.Thread(target=self._audit_owned, daemon=True).start()

    def _audit_owned(self) -> None:
        """The sessions Redis says this worker owns that it does not know it owns (their
        ``own`` control was missed): run the turn claimed for it, or, with none, give the
        session up, so that no turn waits on an owner that does not know it is one."""
        me = self.membership.worker_id
        store = self.redis_store
        try:
            listed = store.client.smembers(f"{self.membership.heartbeat_key(me)}:owned")
            with self._lock:
                known = {sid for sid, s in self._sessions.items()
                         if isinstance(s, ClusterSession) and s.owned}
            for sid in sorted(s.decode() for s in listed if s.decode() not in known):
                owner, fence, active, started = store.client.hmget(
                    store.key(sid, "rec"), ["owner", "fence", "turn_active", "started"])
                if owner is None or owner.decode() != me:
                    continue
                if active not in (None, b"0") and active != started:
                    self._adopt(sid, int(active), str(int(fence or 0)))
                elif active in (None, b"0"):
                    store.call("release", sid, me, str(int(fence or 0)))
        except Exception as exc:  # Redis away, or the session deleted: the next resync
            logger.warning("worker %s: owned sessions not audited: %r", me, exc)

    def _lost_all(self) -> None:
        with self._lock:
            owned = [s for s in self._sessions.values()
                     if isinstance(s, ClusterSession) and s.owned]
        for session in owned:
            session.lost()

    def _take_over(self, session_id: str, dead: str) -> None:
        self.membership.take_over(session_id, dead)

    def _adopt(self, session_id: str, turn: int, fence: str) -> None:
        """The reaper made this worker the owner of ``session_id`` to run turn ``turn``,
        which a dying worker never started: run it, with the prompt its ``user`` event
        holds."""
        try:
            session = self.get(session_id)
            log = session.log
            log.sync(10**18)
            text = None
            after = max(log.last_id - 100, 0)
            while text is None:
                found = [e for e in log.read_after(after)
                         if e.kind == "user" and e.payload.get("turn") == turn]
                if found:
                    text = str(found[-1].payload.get("text", ""))
                elif after == 0:
                    raise RuntimeError(f"no user event for turn {turn}")
                after = 0
            session.own(fence)
            session._run_turn(turn, text)
        except Exception:
            logger.exception("session %s: the adopted turn %s did not start; ending it",
                             session_id, turn)
            end = rest(session_id, self._clock(), "turn_end",
                       {"turn": turn, "reason": "interrupted"})
            try:
                self.redis_store.call("end_turn", session_id, fence, turn, end)
            except Exception as exc:
                logger.warning("session %s: turn %s not ended: %r", session_id, turn, exc)

    # -- figures -----------------------------------------------------------------------

    def _agent_process(self, pid: int, started: bool) -> None:
        """One of this worker's agents started or was stopped: recorded for gunicorn's master
        (which kills a dead worker's agents) and counted for ``/metrics``."""
        self.membership.agent_process(pid, started)
        self.metrics.agent_process(pid, started)

    def figures(self) -> dict[str, int]:
        """See :meth:`tether.sessions.SessionRegistry.figures`: the session figures are the
        cluster's, read from Redis without loading a session here (a scrape must not keep
        every session's view alive), ``events_appended`` from ``P:events`` (this worker
        neither sees every log up to date nor hears of every deletion); ``agent_processes``
        and ``session_views`` are this worker's."""
        ids = self._session_ids()
        pending = [p for _, _, requests in self._pending_by_session() for p in requests]
        approvals = sum(p.kind == "approval" for p in pending)
        with self._lock:
            held = list(self._sessions.values())
        return {"sessions": len(ids), "events_appended": self.redis_store.events_appended(),
                "approvals_pending": approvals, "questions_pending": len(pending) - approvals,
                "agent_processes": sum(s.agent_running for s in held),
                "session_views": self.redis_store.views}

    def _session_ids(self) -> list[str]:
        """Every session id of the cluster, oldest first (Redis orders equal scores by id,
        so reversed it is the other stores' order: newest first, ties by id)."""
        return [raw.decode() for raw in
                self.redis_store.client.zrange(f"{self.store.prefix}:sessions", 0, -1)]

    def _pending_by_session(self) -> list[tuple[str, str, list[PendingRequest]]]:
        ids = self._session_ids()
        ids.reverse()  # newest first, as list() orders them
        client = self.redis_store.client
        found: list[tuple[str, str, list[PendingRequest]]] = []
        for start in range(0, len(ids), LIST_PAGE):
            page = ids[start:start + LIST_PAGE]
            pipe = client.pipeline(transaction=False)
            for sid in page:
                pipe.hget(self.redis_store.key(sid, "rec"), "title")
                pipe.hgetall(self.redis_store.key(sid, "pending"))
            replies = pipe.execute()
            for i, sid in enumerate(page):
                title, pending = replies[2 * i], replies[2 * i + 1]
                if pending:
                    found.append((sid, (title or b"").decode(), pending_from(pending)))
        return found


def _placement(values: Iterable[bytes | None]) -> tuple[str, str, float] | None:
    """``(agent, workspace, created_at)`` from a record's :data:`_PLACEMENT` fields, in
    order; None for a session that is gone or closed."""
    agent, workspace, created_at, closed = (None if v is None else v.decode() for v in values)
    if agent is None or workspace is None or closed == "1":
        return None
    return agent, workspace, float(created_at or 0)
