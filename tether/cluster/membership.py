"""Who is alive in the cluster: heartbeats, the reaper, takeover (SCALE-OUT.md section 7).

Keys (``P`` is ``TETHER_REDIS_PREFIX``)
    ``P:w:<wid>``         string with a TTL of ``TETHER_LEASE_SECONDS``: the worker's
                          heartbeat, renewed every ``TETHER_HEARTBEAT_SECONDS`` with ``XX``.
    ``P:workers``         set: every worker id that registered and was not reaped yet.
    ``P:w:<wid>:owned``   set: the sessions the worker owns.
    ``P:w:<wid>:pgids``   set: its agents' process groups (for gunicorn's master).
    ``P:reaper``          string, 1 s: one reaper pass at a time (an efficiency lock only:
                          takeover is a compare-and-set, safe to race).
    ``P:draining``        set: the hosts (``TETHER_HOST_ID``) being drained
                          (``python -m tether.cluster.drain``). Their workers claim no
                          session: a turn asked of one starts on a live worker of another
                          host; and they give each session up as soon as no turn runs in it.
                          Each worker reads it at every heartbeat.

A worker whose ``XX`` renewal finds its heartbeat gone was declared dead: it stops every
agent it runs and forgets its sessions (another worker took them over), then registers
again under a new id. A worker that cannot reach Redis for longer than the lease less one
heartbeat stops its agents too, before its lease can pass to another ("expire early").
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tether.cluster.envelopes import rest
from tether.config import Settings
from tether.prompts import Resolution, resolved_payload
from tether.stores.redis import RedisStore, Refused
from tether.workers import host_of, ids_of_process, renamed, worker_id

logger = logging.getLogger(__name__)

#: The ``message`` of requests a dead worker left pending.
TAKEOVER_MESSAGE = "The worker running the turn stopped."
#: Compare-and-set attempts of one takeover.
TAKEOVER_ATTEMPTS = 10


class Membership:
    """This worker's heartbeat and reaper.

    :param wid: this worker's id; by default :func:`tether.workers.worker_id`.
    :param on_lost: called with no argument when this worker learns it was declared dead
        (or lost Redis for longer than its lease allows): stop every agent, forget every
        session.
    """

    def __init__(self, store: RedisStore, settings: Settings,
                 on_lost: Callable[[], None], wid: str | None = None) -> None:
        self._store = store
        self._client = store.client
        self._prefix = store.prefix
        self._lease_ms = int(settings.lease_seconds * 1000)
        self._interval = settings.heartbeat_seconds
        self._host_id = settings.host_id
        self._on_lost = on_lost
        #: This worker's id (:mod:`tether.workers`; ``wid`` for several in one process).
        self.worker_id = wid or worker_id(self._host_id)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_renewal = time.monotonic()
        #: ``(session_id, turn, fence)``: this worker adopted a turn a dead worker never
        #: started (:meth:`take_over`); None: turns are never adopted, always ended.
        self.on_adopt: Callable[[str, int, str], None] | None = None
        #: Whether this worker's host is being drained (``P:draining``), as of the last
        #: heartbeat.
        self.draining = False
        #: Called with no argument at every heartbeat while this worker's host drains.
        self.on_drain: Callable[[], None] | None = None
        #: Called with no argument after every heartbeat (on the heartbeat's thread): local
        #: housekeeping that must not block, such as dropping idle session views.
        self.on_tick: Callable[[], None] | None = None

    def heartbeat_key(self, wid: str) -> str:
        return f"{self._prefix}:w:{wid}"

    # -- draining ------------------------------------------------------------------------

    def check_drain(self) -> bool:
        """Read whether this worker's host is being drained; while it is, run
        :attr:`on_drain` (at every heartbeat: what could not be given up at one pass is at
        the next). Returns :attr:`draining`.

        :raises redis.exceptions.ConnectionError: Redis is unreachable.
        """
        draining = bool(self._client.sismember(draining_key(self._prefix), self._host_id))
        if draining and not self.draining:
            logger.warning("host %s is being drained: worker %s claims no session and gives "
                           "each one up once no turn runs in it", self._host_id,
                           self.worker_id)
        elif self.draining and not draining:
            logger.warning("host %s is no longer drained", self._host_id)
        self.draining = draining
        if draining and self.on_drain is not None:
            self.on_drain()
        return draining

    def claimant(self) -> str:
        """The worker that claims a session this worker is asked to start a turn in (when
        it has no live owner): this one, or while its host drains, a live worker of a host
        that does not, at random (this one when there is none).

        :raises redis.exceptions.ConnectionError: Redis is unreachable.
        """
        if not self.draining:
            return self.worker_id
        drained = {h.decode() for h in self._client.smembers(draining_key(self._prefix))}
        wids = [w.decode() for w in self._client.smembers(f"{self._prefix}:workers")]
        candidates = [w for w in wids if host_of(w) not in drained]
        if not candidates:
            return self.worker_id
        pipe = self._client.pipeline(transaction=False)
        for wid in candidates:
            pipe.exists(self.heartbeat_key(wid))
        alive = [w for w, beating in zip(candidates, pipe.execute(), strict=True) if beating]
        return random.choice(alive) if alive else self.worker_id

    # -- lifetime ------------------------------------------------------------------------

    def start(self) -> None:
        """Register this worker and start its heartbeat and reaper. A first reaper pass runs
        at once: a host that restarts after a crash ends what its dead workers left open
        before it serves anyone (their processes are gone, so no lease is waited for)."""
        self._register()
        try:
            self.check_drain()
            self.reap()
        except Exception:  # the periodic passes retry
            logger.exception("worker %s: the first reaper pass failed", self.worker_id)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"tether-membership-{self.worker_id}")
        self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat and leave the cluster (a graceful stop: call after the
        sessions were released). A session still owned (its turn did not end in time) is
        left to the reaper, which ends it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._interval + 5)
        key = self.heartbeat_key(self.worker_id)
        try:
            self._client.delete(key)  # from now on, what it still owns is the reaper's
            if not self._client.scard(f"{key}:owned"):
                pipe = self._client.pipeline(transaction=True)
                pipe.delete(f"{key}:owned", f"{key}:pgids")
                pipe.srem(f"{self._prefix}:workers", self.worker_id)
                pipe.execute()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            logger.warning("worker %s: not unregistered (the reaper will): %r", self.worker_id,
                           exc)

    def _register(self) -> None:
        pipe = self._client.pipeline(transaction=True)
        pipe.set(self.heartbeat_key(self.worker_id), os.getpid(), px=self._lease_ms)
        pipe.sadd(f"{self._prefix}:workers", self.worker_id)
        pipe.execute()
        self._last_renewal = time.monotonic()
        logger.info("worker %s joined the cluster (prefix %s)", self.worker_id, self._prefix)

    def _run(self) -> None:
        while not self._stop.wait(self._interval * random.uniform(0.8, 1.0)):
            try:
                self._renew()
                self.check_drain()
                self.reap()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                silent = time.monotonic() - self._last_renewal
                if silent > self._lease_ms / 1000 - self._interval:
                    logger.error("worker %s: Redis unreachable for %.1f s, close to the lease "
                                 "(TETHER_LEASE_SECONDS): stopping this worker's agents; %r",
                                 self.worker_id, silent, exc)
                    self._lost()
                else:
                    logger.warning("worker %s: heartbeat failed: %r", self.worker_id, exc)
            except Exception:  # a bug must not end the heartbeat
                logger.exception("worker %s: heartbeat pass failed", self.worker_id)
            self._tick()

    def _tick(self) -> None:
        if self.on_tick is None:
            return
        try:
            self.on_tick()
        except Exception:  # housekeeping's bug must not end the heartbeat
            logger.exception("worker %s: housekeeping after the heartbeat failed",
                             self.worker_id)

    def _renew(self) -> None:
        renewed = self._client.set(self.heartbeat_key(self.worker_id), os.getpid(),
                                   px=self._lease_ms, xx=True)
        if renewed:
            self._last_renewal = time.monotonic()
            return
        logger.error("worker %s was declared dead (its heartbeat lapsed: a stall longer than "
                     "TETHER_LEASE_SECONDS?): its sessions were taken over; stopping its "
                     "agents and joining again", self.worker_id)
        self._lost()

    def _lost(self) -> None:
        self._on_lost()
        self.worker_id = renamed(self.worker_id)
        try:
            self._register()
        except (RedisConnectionError, RedisTimeoutError):
            self._last_renewal = time.monotonic()  # joins again at the next renewal

    # -- processes -----------------------------------------------------------------------

    def agent_process(self, pid: int, started: bool) -> None:
        """Record (or forget) one of this worker's agents' process groups."""
        key = f"{self.heartbeat_key(self.worker_id)}:pgids"
        try:
            if started:
                self._client.sadd(key, pid)
            else:
                self._client.srem(key, pid)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            logger.warning("agent pid %s not recorded: %r", pid, exc)

    # -- the reaper ----------------------------------------------------------------------

    def reap(self) -> int:
        """One reaper pass: take over the sessions of every worker whose heartbeat is gone.
        Workers of this host whose process no longer exists are declared dead at once.
        Returns how many sessions were taken over."""
        if not self._client.set(f"{self._prefix}:reaper", self.worker_id, nx=True, px=1000):
            return 0
        wids = sorted(w.decode() for w in self._client.smembers(f"{self._prefix}:workers"))
        if not wids:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for wid in wids:
            pipe.exists(self.heartbeat_key(wid))
        alive = pipe.execute()
        taken = 0
        for wid, beating in zip(wids, alive, strict=True):
            if wid == self.worker_id:
                continue
            if beating and not self._died_here(wid):
                continue
            if beating:  # its process is gone from this host: no need to wait for the lease
                self._client.delete(self.heartbeat_key(wid))
                kill_groups(self._client, self.heartbeat_key(wid))
            owned = self._client.smembers(f"{self.heartbeat_key(wid)}:owned")
            for sid in sorted(s.decode() for s in owned):
                taken += self.take_over(sid, wid, adopt=True)
            if not self._client.scard(f"{self.heartbeat_key(wid)}:owned"):
                pipe = self._client.pipeline(transaction=True)
                pipe.srem(f"{self._prefix}:workers", wid)
                pipe.delete(f"{self.heartbeat_key(wid)}:owned")
                pipe.execute()
                logger.info("reaped worker %s", wid)
        return taken

    def _died_here(self, wid: str) -> bool:
        host_id, pid, _ = wid.rsplit(":", 2)
        if host_id != self._host_id or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def take_over(self, session_id: str, dead: str, adopt: bool = False) -> int:
        """End what worker ``dead`` left open in session ``session_id``: its pending requests
        resolved ``cancelled``, its turn ended ``interrupted``; the session is then free.
        A compare-and-set, retried while the session changes under it. Returns 1 when this
        call did it, 0 when there was nothing to do (or another worker did it).

        :param adopt: a turn the dead worker never started (its prompt came while it was
            dying) is adopted rather than ended: this worker becomes the owner and
            :attr:`on_adopt` runs it (the reaper's way; a Stop or a new prompt ends it).
        """
        adopter = self.worker_id if adopt and self.on_adopt is not None else ""
        for _ in range(TAKEOVER_ATTEMPTS):
            args = self.takeover_args(session_id, dead, adopter)
            if args is None:
                return 0
            reply = self.commit_takeover(session_id, args)
            if isinstance(reply, list):  # ADOPTED, turn, fence
                logger.warning("session %s: worker %s died before it started turn %s; this "
                               "worker runs it", session_id, dead, reply[1])
                assert self.on_adopt is not None
                self.on_adopt(session_id, int(reply[1]), str(int(reply[2])))
                return 1
            if reply == "OK":
                logger.warning("session %s: took over from worker %s (turn %s ended "
                               "interrupted, %s requests cancelled)", session_id, dead,
                               args[2] if args[2] != "0" else "none", (len(args) - 5) // 2)
                return 1
            if reply != "RETRY":
                return 0
        logger.warning("session %s: takeover from %s kept racing; the next pass retries",
                       session_id, dead)
        return 0

    def takeover_args(self, session_id: str, dead: str,
                      adopter: str = "") -> list[Any] | None:
        """Read the session as ``dead`` left it: the arguments of the ``takeover`` function
        (which checks that nothing changed since), or None when ``dead`` does not own it."""
        store = self._store
        pipe = self._client.pipeline(transaction=True)
        pipe.hmget(store.key(session_id, "rec"), ["owner", "fence", "turn_active"])
        pipe.hgetall(store.key(session_id, "pending"))
        (owner, fence, active), pending = pipe.execute()
        if owner is None or owner.decode() != dead:
            return None
        now = time.time()
        number = int(active or 0)
        args: list[Any] = [dead, (fence or b"0").decode(), str(number), adopter,
                           rest(session_id, now, "turn_end",
                                {"turn": number, "reason": "interrupted"}) if number else ""]
        cancelled = Resolution("deny", "cancelled", message=TAKEOVER_MESSAGE)
        for rid, raw in pending.items():
            kind = json.loads(raw)["kind"]
            args += [rid, rest(session_id, now, f"{kind}_resolved",
                               resolved_payload(rid.decode(), kind, cancelled))]
        return args

    def commit_takeover(self, session_id: str, args: list[Any]) -> Any:
        """Call ``takeover`` with :meth:`takeover_args`: ``OK`` (done), ``RETRY`` (the
        session changed since it was read), ``GONE`` (no longer the dead worker's, or that
        worker is alive after all), ``CLOSED`` (deleted), or ``[b"ADOPTED", turn, fence]``
        (the adopter owns the session now, to run that turn)."""
        try:
            reply = self._store.call("takeover", session_id, *args)
        except Refused as exc:
            if exc.code == "CLOSED":
                return "CLOSED"
            raise
        if isinstance(reply, list):
            return reply
        return reply.decode() if isinstance(reply, bytes) else str(reply)


def draining_key(prefix: str) -> str:
    """The set of the hosts being drained (module docstring)."""
    return f"{prefix}:draining"


def kill_groups(client: redis.Redis, heartbeat_key: str) -> None:
    """SIGKILL every agent process group a worker recorded, and forget them."""
    key = f"{heartbeat_key}:pgids"
    for raw in client.smembers(key):
        try:
            os.killpg(int(raw), signal.SIGKILL)
        except (ProcessLookupError, PermissionError, ValueError):
            pass
    client.delete(key)


def worker_exited(settings: Settings, pid: int) -> None:
    """gunicorn's master saw worker ``pid`` exit (its ``child_exit`` hook): kill the agents
    it ran (they run in sessions of their own, so they outlive it) and drop its heartbeat,
    so that the next reaper pass, on any worker, takes its sessions over at once rather
    than after the lease. Connects afresh (the master holds no Redis client)."""
    url = settings.redis_url.get_secret_value()
    prefix = settings.redis_prefix
    with redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3) as client:
        wids = [w.decode() for w in client.smembers(f"{prefix}:workers")]
        for wid in ids_of_process(wids, settings.host_id, pid):
            key = f"{prefix}:w:{wid}"
            client.delete(key)  # first: a prompt from now on claims the session itself
            kill_groups(client, key)
