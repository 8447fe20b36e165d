"""The Redis store: every session's log and record in Redis, shared by every process that opens
it (``TETHER_STORE=redis``; /work/shared/SCALE-OUT.md sections 3-5).

Keys (``P`` is ``TETHER_REDIS_PREFIX``; ``{sid}`` is a hash tag, literally in braces)
    ``P:epoch``         string: the store's epoch (16 hex digits), ``SET NX`` at the first start.
    ``P:sessions``      zset: session ids scored by ``created_at`` (Unix seconds).
    ``P:{sid}:rec``     hash: the :class:`SessionRecord` fields, plus ``last`` (newest event id)
                        and ``closed`` (1 once deleted).
    ``P:{sid}:log``     stream: one entry per event, entry id ``N-0`` for event ``N``, one field
                        ``d`` holding the envelope bytes (DESIGN.md rule 3). Never trimmed.
    ``P:wake``          stream, ``MAXLEN ~ 50000``: one entry per change, entry id ``q-0`` with
                        ``q`` from ``INCR P:wake:seq`` (so wake ids have no gaps); fields ``s``
                        (session id) and either ``n`` (its newest event id) and ``d`` (that
                        event's bytes when at most 1 KiB, else empty), or ``c`` (a control:
                        ``closed`` when the session was deleted).
    ``P:wake:seq``      string: the wake counter.
    ``P:events``        string: events appended to any log since Redis first held the store
                        (deleted sessions' included): ``tether_events_appended_total``.

Appends
    Every append is one call of the Redis Function ``tether_v<N>_append`` (library
    ``tether_v<N>``, :data:`LIBRARY`): it checks the epoch and that the session is neither
    closed nor gone, takes ``last + 1``, ``XADD``\\ s the event with that explicit id (which
    Redis refuses at or below the stream's top: a second guard against reusing ids), sets
    ``last``, and adds the wake entry; all in one atomic step, so ids have no gaps and no
    duplicates however many processes append. Python encodes the envelope as
    :func:`tether.events.make_event` does; the function only puts ``{"id":N`` in front, so
    the bytes are the other stores' bytes. ``tether_v<N>_append_many`` does the same for a
    burst in one call (:meth:`RedisEventLog.append_many`): a session's owner writes its
    runner's events that way (tether/cluster/owner_log.py).

Delivery
    Each process serves the logs it opened from memory (a mirror: ``last_id``, ``closed`` and
    the newest ``tail`` events), reads older events from the stream in pages, and wakes its
    waiters on a local :class:`~tether.wakeup.Wakeup`. One wake reader per store (a daemon
    thread; a greenlet under gevent), on one connection of its own, follows ``P:wake`` with a
    blocking ``XREAD`` and brings each open log up to date: it applies an event carried in the
    wake entry when it is the next one, fetches the rest with ``XRANGE``, and wakes each
    changed log once per batch. A jump in the wake ids (a reconnect, or a reader that fell
    more than ``MAXLEN`` behind) resyncs every open log from Redis. The appender applies its
    own event at once, so its clients pay one round trip and nothing more. Wake entries are
    only hints (DESIGN.md rule 2): the log streams are the truth.

Views come and go
    A view with no local interest (no watcher, no waiter in ``wait_for``, no follower) that
    nobody used for :data:`MIRROR_IDLE_SECONDS` is dropped by :meth:`RedisStore.drop_idle`,
    which the cluster's registry calls on every heartbeat: the wake reader stops applying
    wakes to it, and memory stays bounded however many sessions the worker ever served. A
    dropped view is kept only weakly: as long as some caller still holds it, the next
    :meth:`RedisStore.open_log` of that session returns it again, and any use of it (a read,
    a wait, a watch, a sync, an append, a follow) takes it back first: registered again,
    then brought up to Redis, as a fresh open is. So one session never has two live views in
    a process, and no caller ever waits on a view the wake reader no longer feeds.

A cursor ahead of this process's view
    Another process may have served a client events this one has not heard of yet. Callers
    that would treat a cursor past ``last_id`` as a reset first call
    :meth:`RedisEventLog.sync`, which reads ``last`` and the missing events from Redis; only a
    cursor past Redis's ``last`` is past the end.

Durability
    As durable as Redis is configured: with ``appendonly yes`` and ``appendfsync everysec``,
    a Tether crash loses nothing, a crash of the Redis host at most about one second (as with
    SQLite's ``synchronous=NORMAL``, a client then past the end gets ``reset``). If Redis loses
    its data (a FLUSHALL, a restart without persistence), the epoch key goes with it: appends
    on the old logs raise :class:`EpochChanged` instead of starting ids again at 1, and the
    next start gets a new epoch. ``maxmemory-policy`` must be ``noeviction`` (a warning is
    logged when Redis reports another): evicting a record would restart its ids.

Errors
    Redis being unreachable makes a command raise :class:`redis.exceptions.ConnectionError`
    (or :class:`~redis.exceptions.TimeoutError`) to its caller; the wake reader logs it once,
    retries with a back-off and resyncs every open log when Redis is back.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tether.errors import Fenced
from tether.events import Event, make_event
from tether.stores.base import SessionRecord, StoredPayload, split_read
from tether.stores.redis_connection import Connection
from tether.wakeup import Wakeup, WakeupSource

logger = logging.getLogger(__name__)

#: Events each log keeps in memory (its newest).
DEFAULT_TAIL = 1024
#: Entries per ``XRANGE`` when reading a log from Redis; other greenlets run between pages.
PAGE_ROWS = 1000
#: ``MAXLEN ~`` of the wake stream: how far (in entries) a reader may fall behind before it
#: must resync every log instead of following the wakes.
WAKE_MAXLEN = 50000
#: Wake entries carry the event's bytes up to this size (bytes); larger ones are fetched.
WAKE_DATA_BYTES = 1024
#: Milliseconds the wake reader blocks in one ``XREAD``.
WAKE_BLOCK_MS = 5000
#: Wake entries per ``XREAD``.
WAKE_COUNT = 1000
#: Seconds: the command connections' socket timeout, the pool's wait for a free connection,
#: the wake reader's socket timeout (longer than the block), its longest back-off.
COMMAND_TIMEOUT = 10.0
POOL_TIMEOUT = 5.0
READER_SOCKET_TIMEOUT = WAKE_BLOCK_MS / 1000 + 5.0
READER_MAX_BACKOFF = 5.0
#: Connections in the command pool (the wake reader has one of its own): a worker holds at
#: most ``MAX_CONNECTIONS + 1``, whatever its clients. ``CLIENT LIST`` names them
#: ``<prefix>:commands`` and ``<prefix>:wake-reader``.
MAX_CONNECTIONS = 64
#: Seconds a view with no local interest stays after its last use (SCALE-OUT.md section 5,
#: "Mirror lifetime"); :meth:`RedisStore.drop_idle` drops it after that.
MIRROR_IDLE_SECONDS = 60.0

#: Version of the Redis Function library below: bump it with every change of the Lua code.
LIBRARY_VERSION = 4
LIBRARY = f"tether_v{LIBRARY_VERSION}"
#: Codes of the functions' refusals (:class:`Refused`).
REFUSALS = frozenset({"CLOSED", "BUSY", "QUEUE_FULL", "TOO_MANY", "NOT_FOUND",
                      "EXISTS", "CORRUPT"})

# Redis Functions (Redis 7): one library (redis_functions.lua), loaded at start when missing
# or different. Error replies start with a code the store matches.
_LIBRARY_CODE = (resources.files("tether.stores").joinpath("redis_functions.lua")
                 .read_text(encoding="utf-8")
                 .replace("@LIBRARY@", LIBRARY)
                 .replace("@WAKE_MAXLEN@", str(WAKE_MAXLEN))
                 .replace("@WAKE_DATA_BYTES@", str(WAKE_DATA_BYTES)))

_RECORD_FIELDS = ("agent", "title", "created_at", "workspace", "auto_approve",
                  "agent_session_id", "turns", "title_set", "base_commit", "model",
                  "permission_mode")


class EpochChanged(RuntimeError):
    """Redis no longer holds this store's epoch: it lost its data (a FLUSHALL, a restart
    without persistence). Nothing is appended under a stale epoch, so ids are never reused;
    every open log of the store is closed, and the store takes the new epoch (clients get
    ``reset``)."""


class Refused(RuntimeError):
    """A Redis Function refused a change; ``code`` says why (:data:`REFUSALS`): the session
    is closed or gone (CLOSED), the caller no longer owns it (FENCED), a turn runs (BUSY)…"""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RedisEventLog(WakeupSource):
    """One session's log as this process sees it: ``last_id``, ``closed`` and the newest
    ``tail`` events in memory (ids contiguous, ending at ``last_id``), older events read from
    the ``P:{sid}:log`` stream. Made by :meth:`RedisStore.create_log` /
    :meth:`RedisStore.open_log`, never directly.
    """

    def __init__(self, store: RedisStore, session_id: str, last_id: int, tail: int,
                 turn_active: bool = False) -> None:
        self.session_id = session_id
        self._store = store
        self._tail_size = max(tail, 1)
        #: The newest events, ids contiguous and ending at ``_last_id`` (perhaps none).
        self._tail: list[Event] = []
        self._last_id = last_id
        self._turn_active = turn_active
        #: The follower (:meth:`follow`): the kinds it takes and where they go.
        self._followed: frozenset[str] = frozenset()
        self._deliver: Callable[[Event], None] | None = None
        self._wakeup = Wakeup()
        self._closed = False
        # One append of this process at a time: its own event is applied in id order.
        self._append_lock = threading.Lock()
        # Interest, under the wakeup lock: callers inside wait_for; when it was last used
        # (the store's monotonic clock, seconds); dropped by RedisStore.drop_idle, so the wake
        # reader no longer feeds it until it is taken back (_in_use).
        self._waiters = 0
        self._used = store._monotonic()
        self._dropped = False

    @property
    def last_id(self) -> int:
        return self._last_id

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def turn_active(self) -> bool:
        """Whether a turn runs, as of :attr:`last_id`: a ``user`` event opens a turn and its
        ``turn_end`` closes it, and the functions change the record's ``turn_active`` in the
        same step as they append those events, so this view agrees with the record at every
        id; read without a round trip (a long-poll answer carries it)."""
        return self._turn_active

    def follow(self, kinds: frozenset[str], deliver: Callable[[Event], None]) -> int:
        """Hand every event of ``kinds`` this view takes in from now on to ``deliver``, in id
        order, each once: how a session's owner hears of the turns and answers other workers
        wrote without waking for every event. ``deliver`` runs under the view's lock (on the
        wake reader, or an appender's thread): it must only queue the event. One follower
        per log; a second call replaces the first.

        :returns: :attr:`last_id` when it took effect: events up to it are not handed over.
        """
        with self._wakeup.lock:
            self._followed, self._deliver = kinds, deliver
        self._in_use()
        with self._wakeup.lock:
            return self._last_id

    def unfollow(self) -> None:
        """End :meth:`follow`."""
        with self._wakeup.lock:
            self._followed, self._deliver = frozenset(), None

    def append(self, kind: str, payload: Mapping[str, Any], fence: str = "") -> Event:
        """See :meth:`tether.stores.base.EventLog.append`; also

        :param fence: the caller's fencing token as the session's owner (``""``: any
            process may append this event, such as an answer).
        :raises tether.errors.Fenced: another worker owns the session now.

        :raises RuntimeError: the log is closed here, or the session was deleted (by any
            process).
        :raises EpochChanged: Redis lost its data (a RuntimeError too).
        :raises redis.exceptions.ConnectionError: Redis is unreachable; the event may or
            may not be in the log (the wake reader brings it in if it is).
        """
        self._in_use()
        with self._append_lock:
            if self._closed:
                raise RuntimeError(f"log of session {self.session_id} is closed")
            event = self._store._append(self, kind, payload, fence)
            if not self._apply([event]):
                # Another process appended ids in between, and their wakes are not here yet.
                self._store._refresh([self])
        return event

    def draft(self, kind: str, payload: Mapping[str, Any]) -> Event:
        """``kind`` and ``payload`` encoded now as an event with id 0, for
        :meth:`append_many` (its ``ts`` is this moment, not the moment it is appended).

        :raises ValueError: unknown kind, envelope keys in ``payload``, NaN/infinity.
        """
        return make_event(0, self.session_id, self._store._clock(), kind, payload)

    def append_many(self, drafts: Sequence[Event], fence: str = "") -> list[Event]:
        """Append ``drafts`` (from :meth:`draft`, in order) in one Redis Function call: their
        ids follow each other without a gap and no other append comes between them, so an
        owner's burst costs one round trip instead of one per event.

        :param fence: as for :meth:`append`.
        :returns: the events as appended, with their ids.
        :raises tether.errors.Fenced: another worker owns the session now (nothing appended).
        :raises RuntimeError: the log is closed, or the session was deleted.
        :raises redis.exceptions.ConnectionError: Redis is unreachable; the events may or may
            not be in the log (all of them or none: the call is atomic).
        """
        if not drafts:
            return []
        self._in_use()
        with self._append_lock:
            if self._closed:
                raise RuntimeError(f"log of session {self.session_id} is closed")
            events = self._store._append_many(self, drafts, fence)
            if not self._apply(events):
                self._store._refresh([self])
        return events

    def read_after(self, after: int, limit: int | None = None) -> list[Event]:
        self._in_use()
        with self._wakeup.lock:
            start, older, cached = split_read(after, limit, self._last_id, self._tail)
        if older <= start:
            return cached
        # Older than the tail: stream entries, which never change, read outside the lock.
        return self._store._read(self, start, older) + cached

    def wait_for(self, after: int, timeout: float | None) -> bool:
        """See :meth:`tether.stores.base.EventLog.wait_for`. A waiter is interest: the view
        is not dropped while one waits (nor the time it waited counted as idle)."""
        with self._wakeup.lock:
            self._waiters += 1
        try:
            self._in_use()
            return self._wakeup.wait_for(lambda: self._closed or self._last_id > after,
                                         timeout)
        finally:
            with self._wakeup.lock:
                self._waiters -= 1
                self._used = self._store._monotonic()

    def watch(self, flag: threading.Event) -> None:
        """See :meth:`tether.stores.base.EventLog.watch`. A watcher is interest: the view is
        not dropped while ``flag`` is registered."""
        self._wakeup.watch(flag)
        self._in_use()

    def sync(self, after: int) -> int:
        """Make sure this process's view holds every event up to ``after`` that Redis holds:
        when ``after`` is past ``last_id`` (a client that another process served), read the
        record's ``last`` and the missing events from Redis. Returns ``last_id``; a cursor
        still past it is past the end of the log.

        :raises redis.exceptions.ConnectionError: Redis is unreachable.
        """
        self._in_use()
        if after > self._last_id and not self._closed:
            self._store._refresh([self])
        return self._last_id

    def touch(self) -> None:
        """Count now as a use (the view's idle time starts again), without reading."""
        self._in_use()

    # -- lifetime in the store (RedisStore.drop_idle) --------------------------------------

    def _in_use(self) -> None:
        """A caller uses this view: stamp the time, and if the store dropped it, take it back
        (registered again, then brought up to Redis: :meth:`RedisStore._take_back`) before
        the caller reads or waits. Interest already registered (a watcher, a waiter, a
        follower) comes first, under the same lock the drop decides under, so either the
        drop saw it and kept the view, or this sees the drop.

        :raises redis.exceptions.ConnectionError: Redis is unreachable (the view is
            registered again all the same: the wake reader's next resync brings it up).
        """
        with self._wakeup.lock:
            self._used = self._store._monotonic()
            dropped = self._dropped
        if dropped:
            self._store._take_back(self)

    def _drop_if_idle(self, now: float, idle_seconds: float) -> bool:
        """Under the store's lock: mark this view dropped if nothing holds interest in it
        and it was not used for ``idle_seconds`` (``now`` on the store's monotonic clock).
        Returns whether it was."""
        with self._wakeup.lock:
            if (self._wakeup.watchers or self._waiters or self._deliver is not None
                    or now - self._used < idle_seconds):
                return False
            self._dropped = True
            return True

    # -- for RedisStore ----------------------------------------------------------------

    def _apply(self, events: Iterable[Event]) -> bool:
        """Take ``events`` (ascending ids) into the view: those at or below ``last_id`` are
        already there, the next one is added; wake waiters once if anything was. Returns
        False when an event was not the next one (a gap: fetch from Redis)."""
        with self._wakeup.lock:
            changed = False
            contiguous = True
            for event in events:
                if event.id <= self._last_id:
                    continue
                if event.id != self._last_id + 1:
                    contiguous = False
                    break
                self._tail.append(event)
                self._last_id = event.id
                if event.kind == "user":
                    self._turn_active = True
                elif event.kind == "turn_end":
                    self._turn_active = False
                if event.kind in self._followed and self._deliver is not None:
                    self._deliver(event)
                changed = True
            if len(self._tail) >= 2 * self._tail_size:
                del self._tail[:len(self._tail) - self._tail_size]
            if changed:
                self._wakeup.notify()
        return contiguous


class RedisStore:
    """Logs, session records and the epoch in Redis; see the module docstring.

    :param url: ``redis://[[user]:password@]host:port/db`` (``TETHER_REDIS_URL``).
    :param prefix: the start of every key (``TETHER_REDIS_PREFIX``).
    :param tail: events each log keeps in memory.
    :param monotonic: the clock (seconds) views' idle times are measured by
        (:meth:`drop_idle`); tests pass their own.
    :raises redis.exceptions.ConnectionError: Redis is unreachable.
    :raises RuntimeError: Redis is older than 7.0 (no Functions).
    """

    durable = True

    def __init__(self, url: str, prefix: str = "tether", clock: Callable[[], float] = time.time,
                 tail: int = DEFAULT_TAIL,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.prefix = prefix
        self._clock = clock
        self._monotonic = monotonic
        self._tail = tail
        self._url = url
        self._keys = _Keys(prefix)
        self._lock = threading.Lock()  # the dicts of open and dropped logs
        #: The views the wake reader feeds.
        self._logs: dict[str, RedisEventLog] = {}
        #: Views dropped for idleness (drop_idle) that some caller may still hold: the next
        #: open or use takes such a view back rather than make a second one.
        self._dropped: weakref.WeakValueDictionary[str, RedisEventLog] = (
            weakref.WeakValueDictionary())
        self._closed = False
        self._pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=POOL_TIMEOUT,
            socket_timeout=COMMAND_TIMEOUT, socket_connect_timeout=POOL_TIMEOUT,
            socket_keepalive=True, client_name=f"{prefix}:commands", **_connection_class(url))
        self._redis = redis.Redis(connection_pool=self._pool)
        try:
            self._check_server()
            self._load_library()
            self._redis.set(self._keys.epoch, secrets.token_hex(8), nx=True)
            epoch = self._redis.get(self._keys.epoch)
            if epoch is None:
                raise RuntimeError("Redis dropped the epoch key right after it was set")
            self.epoch = epoch.decode()
        except BaseException:
            self._pool.disconnect()
            raise
        #: Called by the wake reader with ``(session_id, control)`` for every control wake
        #: (``cancel N``, ``inbox R``, ``rec``, ``closed``), whether or not a log of that
        #: session is open here; and with no argument after every resync (a reconnect, a
        #: jump in the wake ids, a quiet spell), when controls may have been missed. Both
        #: run on the reader: they must not block.
        self.on_control: Callable[[str, str], None] | None = None
        self._restart_reader = False
        self.on_resync: Callable[[], None] | None = None
        self._stop = threading.Event()
        #: The reader's own stop signal: a stream only this store writes, at close.
        self._stop_key = f"{prefix}:stop:{secrets.token_hex(8)}"
        self._reader = threading.Thread(target=self._read_wakes, daemon=True,
                                        name=f"tether-redis-wake-{prefix}")
        self._reader.start()

    @property
    def client(self) -> redis.Redis:
        """The command client (a blocking pool of :data:`MAX_CONNECTIONS`): short commands
        only, never a blocking one."""
        return self._redis

    def key(self, session_id: str, name: str) -> str:
        """A session's key: ``<prefix>:{<session id>}:<name>``."""
        return f"{self.prefix}:{{{session_id}}}:{name}"

    # -- logs --------------------------------------------------------------------------

    def create_log(self, session_id: str) -> RedisEventLog:
        """A log for a new session id (empty: session ids are random, never reused). Creates
        its record (``last`` 0), which appends require."""
        self._redis.hsetnx(self._keys.rec(session_id), "last", 0)
        return self.open_log(session_id)

    def open_log(self, session_id: str) -> RedisEventLog:
        """The log of ``session_id`` as Redis holds it (empty if it holds none; a session
        whose record is gone opens closed).

        :raises redis.exceptions.ConnectionError: Redis is unreachable.
        """
        with self._lock:
            log = self._logs.get(session_id)
            dropped = self._dropped.get(session_id) if log is None else None
        if log is not None:
            log.touch()
            return log
        if dropped is not None:  # still held by someone: the same view, taken back
            dropped.touch()
            if not dropped.closed:
                return dropped
        # One read: the turn's state as of the last id (the view follows it from there).
        last, active = self._redis.hmget(self._keys.rec(session_id), ["last", "turn_active"])
        fresh = RedisEventLog(self, session_id, int(last or 0), self._tail,
                              turn_active=active not in (None, b"0"))
        with self._lock:
            log = self._logs.setdefault(session_id, fresh)
            if self._closed:
                log.close()
        if log is fresh:
            # Registered before this read: a wake that raced the open is applied or fetched.
            self._refresh([log])
        return log

    def drop_log(self, session_id: str) -> None:
        """Delete a session everywhere: its record and log are removed from Redis, it leaves
        ``P:sessions``, and a ``closed`` wake closes its log in every process (here at once).
        Unknown ids are ignored."""
        with self._lock:
            log = self._logs.pop(session_id, None) or self._dropped.pop(session_id, None)
        if log is not None:
            log.close()
        self.call("drop", session_id)

    # -- idle views ----------------------------------------------------------------------

    @property
    def views(self) -> int:
        """How many views the wake reader feeds now (the ``tether_session_views`` gauge)."""
        with self._lock:
            return len(self._logs)

    def drop_idle(self, idle_seconds: float = MIRROR_IDLE_SECONDS,
                  keep: Collection[str] = ()) -> list[str]:
        """Stop feeding the views nobody is interested in: no watcher, no waiter, no
        follower, not in ``keep`` (the sessions this worker owns or runs a turn of), and not
        used for ``idle_seconds`` (by the store's monotonic clock). Each leaves the map the
        wake reader feeds; it is freed once nobody holds it, and taken back (registered,
        then brought up to Redis) if anyone uses it first. O(views held), no Redis call.

        :returns: the session ids whose views were dropped.
        """
        now = self._monotonic()
        dropped: list[str] = []
        with self._lock:
            for session_id, log in list(self._logs.items()):
                if session_id in keep or not (log.closed or log._drop_if_idle(now, idle_seconds)):
                    continue
                del self._logs[session_id]
                if not log.closed:
                    self._dropped[session_id] = log
                dropped.append(session_id)
        return dropped

    def _take_back(self, log: RedisEventLog) -> None:
        """``log`` was dropped and someone uses it: register it again, then bring it up to
        Redis (the wakes it missed meanwhile), in the order a fresh open follows, so that a
        wake racing this is either applied or fetched again. A view of a deleted session, or
        one this store no longer knows (its data was lost), is closed instead.

        :raises redis.exceptions.ConnectionError: Redis is unreachable; the view is dropped
            again (the next use tries again), never left registered but behind.
        """
        session_id = log.session_id
        with self._lock:
            with log._wakeup.lock:
                if not log._dropped:
                    return  # taken back by another caller meanwhile
                log._dropped = False
            known = self._dropped.get(session_id) is log and not self._closed
            if known:
                del self._dropped[session_id]
                # open_log makes a view only when neither map holds one: no other is here.
                known = self._logs.setdefault(session_id, log) is log
        if not known:  # lost with the data, or the store closed: never a view no wake reaches
            log.close()
            return
        try:
            self._refresh([log])
        except BaseException:
            with self._lock:
                if self._logs.get(session_id) is log:
                    del self._logs[session_id]
                    self._dropped[session_id] = log
                    with log._wakeup.lock:
                        log._dropped = True
            raise

    # -- session records ---------------------------------------------------------------

    def save_session(self, record: SessionRecord) -> None:
        fields = {"agent": record.agent, "title": record.title,
                  "created_at": repr(float(record.created_at)), "workspace": record.workspace,
                  "auto_approve": int(record.auto_approve),
                  "agent_session_id": record.agent_session_id, "turns": record.turns,
                  "title_set": int(record.title_set), "base_commit": record.base_commit,
                  "model": record.model, "permission_mode": record.permission_mode}
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._keys.rec(record.id), mapping=fields)
        pipe.zadd(self._keys.sessions, {record.id: float(record.created_at)})
        pipe.execute()

    def sessions(self) -> list[SessionRecord]:
        """Oldest ``created_at`` first, ties by id (as the SQLite store orders them)."""
        ids = [raw.decode() for raw in self._redis.zrange(self._keys.sessions, 0, -1)]
        records: list[SessionRecord] = []
        for start in range(0, len(ids), PAGE_ROWS):
            page = ids[start:start + PAGE_ROWS]
            pipe = self._redis.pipeline(transaction=False)
            for session_id in page:
                pipe.hmget(self._keys.rec(session_id), _RECORD_FIELDS)
            for session_id, values in zip(page, pipe.execute(), strict=True):
                if values[0] is None:
                    continue  # deleted between the two reads
                f = dict(zip(_RECORD_FIELDS, ("" if v is None else v.decode() for v in values),
                             strict=True))
                records.append(SessionRecord(
                    session_id, f["agent"], f["title"], float(f["created_at"]), f["workspace"],
                    f["auto_approve"] == "1", f["agent_session_id"], int(f["turns"]),
                    f["title_set"] == "1", f["base_commit"], f["model"],
                    f["permission_mode"]))
        return records

    def events_appended(self) -> int:
        """Events appended to any log of this store, deleted sessions' included, since Redis
        first held it (``P:events``, counted by the functions' every append): the cluster's
        figure, which no worker could sum from the logs it sees.

        :raises redis.exceptions.ConnectionError: Redis is unreachable.
        """
        return int(self._redis.get(self._keys.events) or 0)

    # -- lifetime ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the wake reader, close every log (here only: other processes keep theirs)
        and release the connections. Idempotent. Redis persists on its own (AOF)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            logs = list(self._logs.values()) + list(self._dropped.values())
            self._dropped.clear()
        for log in logs:
            log.close()
        self._stop.set()
        try:  # wake the reader out of its XREAD
            pipe = self._redis.pipeline(transaction=False)
            pipe.xadd(self._stop_key, {"x": "1"})
            pipe.expire(self._stop_key, 60)
            pipe.execute()
        except (RedisConnectionError, RedisTimeoutError):
            pass  # Redis is gone: the reader is in its back-off, which the stop flag ends
        self._reader.join(READER_SOCKET_TIMEOUT + 1)
        if self._reader.is_alive():
            logger.warning("the Redis wake reader did not stop within %.0f s",
                           READER_SOCKET_TIMEOUT + 1)
        try:
            self._redis.unlink(self._stop_key)
        except (RedisConnectionError, RedisTimeoutError):
            pass
        self._redis.close()
        self._pool.disconnect()

    # -- for RedisEventLog -------------------------------------------------------------

    def _append(self, log: RedisEventLog, kind: str, payload: Mapping[str, Any],
                fence: str = "") -> Event:
        """One FCALL: the event with the next id, encoded as make_event does."""
        draft = make_event(0, log.session_id, self._clock(), kind, payload)
        rest = draft.data[len(_ID0):]  # the envelope after '{"id":0'
        sid = log.session_id
        try:
            n = int(self.call("append", sid, fence, rest))
        except Refused as exc:
            if exc.code == "CLOSED":
                log.close()
                raise RuntimeError(f"log of session {sid} is closed ({exc})") from None
            raise
        return Event(n, sid, draft.ts, kind, draft.payload, b'{"id":%d' % n + rest)

    def _append_many(self, log: RedisEventLog, drafts: Sequence[Event],
                     fence: str) -> list[Event]:
        """One FCALL for a burst of drafts (id 0): the events with the next ids."""
        sid = log.session_id
        rests = [draft.data[len(_ID0):] for draft in drafts]
        try:
            first = int(self.call("append_many", sid, fence, *rests))
        except Refused as exc:
            if exc.code == "CLOSED":
                log.close()
                raise RuntimeError(f"log of session {sid} is closed ({exc})") from None
            raise
        return [Event(first + i, sid, draft.ts, draft.kind, draft.payload,
                      b'{"id":%d' % (first + i) + rest)
                for i, (draft, rest) in enumerate(zip(drafts, rests, strict=True))]

    def call(self, function: str, session_id: str, *args: Any) -> Any:
        """Call Redis Function ``<library>_<function>`` on session ``session_id`` (its
        arguments after the prefix, the epoch and the session id: redis_functions.lua).

        :raises EpochChanged: Redis lost its data (every open log is closed).
        :raises tether.errors.Fenced: the caller's fencing token is stale (another worker
            owns the session now).
        :raises Refused: the function refused (``code``: CLOSED, BUSY, QUEUE_FULL,
            TOO_MANY, NOT_FOUND, EXISTS, CORRUPT).
        :raises redis.exceptions.ConnectionError: Redis is unreachable.
        """
        try:
            return self._fcall(f"{LIBRARY}_{function}", [],
                               [self.prefix, self.epoch, session_id, *args])
        except ResponseError as exc:
            code, _, message = str(exc).partition(" ")
            if code == "EPOCH":
                self._lost_data()
                raise EpochChanged(
                    f"Redis lost its data: nothing was written to session {session_id}, "
                    f"which is gone; the store's epoch is now {self.epoch}") from None
            if code == "FENCED":
                raise Fenced(f"session {session_id}: {message}") from None
            if code in REFUSALS:
                raise Refused(code, message) from None
            raise

    def _read(self, log: RedisEventLog, after: int, upto: int) -> list[Event]:
        """Events ``after < id <= upto`` from the stream, in pages of :data:`PAGE_ROWS`."""
        events: list[Event] = []
        key = self._keys.log(log.session_id)
        while after < upto:
            entries = self._redis.xrange(key, min=str(after + 1), max=str(upto),
                                         count=PAGE_ROWS)
            events.extend(self._decode(log.session_id, entries))
            if len(entries) < PAGE_ROWS:
                break  # the session was deleted meanwhile, or this was the last page
            after = events[-1].id
            time.sleep(0)  # under gevent: let other greenlets run between pages
        return events

    def _refresh(self, logs: Iterable[RedisEventLog], client: redis.Redis | None = None) -> None:
        """Bring ``logs`` up to Redis: each record's ``closed`` and whether it still exists,
        and the events after each log's ``last_id`` (one pipeline; further pages per log).
        A log whose session is closed or gone is closed here, after its last events."""
        logs = [log for log in logs if not log.closed]
        if not logs:
            return
        client = client or self._redis
        pipe = client.pipeline(transaction=False)
        for log in logs:
            rec = self._keys.rec(log.session_id)
            pipe.exists(rec)
            pipe.hget(rec, "closed")
            pipe.xrange(self._keys.log(log.session_id), min=str(log.last_id + 1), max="+",
                        count=PAGE_ROWS)
        results = pipe.execute()
        for i, log in enumerate(logs):
            exists, closed, entries = results[3 * i:3 * i + 3]
            while entries:
                log._apply(self._decode(log.session_id, entries))
                if len(entries) < PAGE_ROWS:
                    break
                time.sleep(0)
                entries = client.xrange(self._keys.log(log.session_id),
                                        min=str(log.last_id + 1), max="+", count=PAGE_ROWS)
            if not exists or closed == b"1":
                log.close()
                with self._lock:  # deleted (by any process): this store forgets it too
                    if self._logs.get(log.session_id) is log:
                        del self._logs[log.session_id]

    def _lost_data(self) -> None:
        """Redis lost its data (a FLUSHALL, a restart without persistence): close every open
        log, as their ids cannot continue, and take the cluster's new epoch (set it if no
        process has yet), so that every client's next request gets ``reset``. The wake
        reader starts again from the new wake stream."""
        with self._lock:
            logs = list(self._logs.values()) + list(self._dropped.values())
            self._logs.clear()
            self._dropped.clear()
        for log in logs:
            log.close()
        old = self.epoch
        try:
            self._redis.set(self._keys.epoch, secrets.token_hex(8), nx=True)
            epoch = self._redis.get(self._keys.epoch)
        except (RedisConnectionError, RedisTimeoutError):
            epoch = None  # the next call or resync tries again (its epoch still differs)
        if epoch is not None:
            self.epoch = epoch.decode()
            self._restart_reader = True
        logger.error("Redis no longer holds this store's epoch %s (prefix %s): it lost its "
                     "data (FLUSHALL, or a restart without persistence). Every log was closed; "
                     "the epoch is now %s, and clients start again from reset.", old,
                     self.prefix, self.epoch)

    def _decode(self, session_id: str, entries: list[Any]) -> list[Event]:
        return [_event_from(session_id, int(entry_id.split(b"-", 1)[0]), fields[b"d"])
                for entry_id, fields in entries]

    def _fcall(self, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return self._redis.fcall(name, len(keys), *keys, *args)
        except ResponseError as exc:
            if "function not found" not in str(exc).lower():
                raise
        self._load_library()  # FUNCTION FLUSH, or a Redis that lost its data and functions
        return self._redis.fcall(name, len(keys), *keys, *args)

    # -- start -------------------------------------------------------------------------

    def _check_server(self) -> None:
        version = str(self._redis.info("server").get("redis_version", "0"))
        if int(version.split(".")[0]) < 7:
            raise RuntimeError(f"TETHER_STORE=redis needs Redis 7.0 or later (Functions); "
                               f"this one is {version}")
        try:
            reply = self._redis.config_get("maxmemory-policy")
        except ResponseError:
            return  # CONFIG is disabled (managed Redis): the operator's word is taken
        policy = {_text(k): _text(v) for k, v in reply.items()}.get("maxmemory-policy")
        if policy not in (None, "noeviction"):
            logger.warning("Redis has maxmemory-policy %s: Tether needs noeviction (an evicted "
                           "session record would restart its event ids)", policy)

    def _load_library(self) -> None:
        """Load :data:`LIBRARY` when Redis lacks it or holds other code under its name."""
        listed = self._redis.function_list(library=LIBRARY, withcode=True)
        for library in listed:
            entry = {_text(k): v for k, v in _pairs(library)}
            if _text(entry.get("library_name")) == LIBRARY:
                if _text(entry.get("library_code")) == _LIBRARY_CODE:
                    return
        self._redis.function_load(_LIBRARY_CODE, replace=True)

    # -- the wake reader ---------------------------------------------------------------

    def _read_wakes(self) -> None:
        """The reader's loop (its own thread or greenlet, its own connection): follow
        ``P:wake`` and bring every open log up to date; survive Redis going away."""
        # A pool of one, not ``single_connection_client``: redis-py runs a pipeline (the
        # resync's) on a connection of the client's pool, which would be a second one.
        pool = redis.BlockingConnectionPool.from_url(
            self._url, max_connections=1, timeout=POOL_TIMEOUT,
            socket_timeout=READER_SOCKET_TIMEOUT, socket_connect_timeout=POOL_TIMEOUT,
            socket_keepalive=True, client_name=f"{self.prefix}:wake-reader",
            **_connection_class(self._url))
        client = redis.Redis(connection_pool=pool)
        seen: int | None = None  # the newest wake id handled; None: resync first
        backoff = 0.0
        failing = False
        try:
            while not self._stop.is_set():
                try:
                    if self._restart_reader:  # a new epoch: its wake stream starts afresh
                        self._restart_reader, seen = False, None
                    if seen is None:
                        # Where the wakes stand now, then every log from Redis: any change
                        # after that point comes as a wake (those already applied are skipped).
                        top = client.xrevrange(self._keys.wake, count=1)
                        seen = int(top[0][0].split(b"-", 1)[0]) if top else 0
                        self._resync(client)
                    reply = client.xread({self._keys.wake: f"{seen}-0", self._stop_key: "0-0"},
                                         count=WAKE_COUNT, block=WAKE_BLOCK_MS)
                    if failing:
                        logger.info("Redis is reachable again: following its wakes")
                        failing, backoff = False, 0.0
                    if not reply:
                        self._resync(client)  # quiet for a while: check positions anyway
                        continue
                    for stream, entries in reply:
                        if stream.decode() == self._keys.wake:
                            seen = self._handle(client, seen, entries)
                    # Let the clients' writers this batch woke run before the next XREAD is
                    # sent: under gevent they would otherwise wait for the whole command.
                    time.sleep(0)
                except (RedisConnectionError, RedisTimeoutError, ResponseError, OSError) as exc:
                    if self._stop.is_set():
                        break
                    if not failing:
                        logger.warning("Redis wake reader: %r; retrying (the logs resync when "
                                       "Redis is back)", exc)
                        failing = True
                    seen = None
                    backoff = min(max(backoff * 2, 0.1), READER_MAX_BACKOFF)
                    self._stop.wait(backoff)
                except Exception:  # a bug must not end delivery for good
                    logger.exception("Redis wake reader failed; resyncing")
                    seen = None
                    self._stop.wait(1.0)
        finally:
            pool.disconnect()

    def _handle(self, client: redis.Redis, seen: int, entries: list[Any]) -> int:
        """One batch of wake entries: apply what is carried and next, fetch the rest, close
        deleted sessions' logs. Returns the newest wake id."""
        dirty: dict[str, RedisEventLog] = {}
        jumped = False
        for entry_id, fields in entries:
            q = int(entry_id.split(b"-", 1)[0])
            jumped = jumped or q != seen + 1
            seen = q
            session_id = fields[b"s"].decode()
            if b"c" in fields and self.on_control is not None:
                try:
                    self.on_control(session_id, fields[b"c"].decode())
                except Exception:  # a handler's bug must not stop delivery
                    logger.exception("Redis wake reader: control %r of session %s failed",
                                     fields[b"c"], session_id)
            log = self._logs.get(session_id)
            if log is None or log.closed:
                continue
            if b"c" in fields:
                if fields[b"c"] == b"closed":
                    dirty[session_id] = log  # its events first, then the close (_refresh)
                continue
            if session_id in dirty:
                continue
            n = int(fields[b"n"])
            data = fields.get(b"d") or b""
            if n <= log.last_id:
                continue
            if n == log.last_id + 1 and data:
                log._apply([_event_from(session_id, n, data)])
            else:
                dirty[session_id] = log
        if jumped:
            self._resync(client)
        elif dirty:
            self._refresh(dirty.values(), client)
        return seen

    def _resync(self, client: redis.Redis) -> None:
        """Every open log from Redis (after a reconnect, a jump in wake ids, a quiet spell),
        and the epoch: if Redis lost it, every log closes."""
        epoch = client.get(self._keys.epoch)
        if epoch is None or epoch.decode() != self.epoch:
            self._lost_data()
            return
        with self._lock:
            logs = list(self._logs.values())
        for start in range(0, len(logs), PAGE_ROWS):
            self._refresh(logs[start:start + PAGE_ROWS], client)
        if self.on_resync is not None:
            try:
                self.on_resync()
            except Exception:
                logger.exception("Redis wake reader: the resync handler failed")


_ID0 = b'{"id":0'


def _connection_class(url: str) -> dict[str, Any]:
    """``connection_class=`` for a pool of ``url``: ours (a cheap idle check) for plain TCP;
    redis-py's own choice for ``rediss://`` (TLS) and ``unix://``."""
    return {"connection_class": Connection} if url.startswith("redis://") else {}


class _Keys:
    """Key names under a prefix (module docstring)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.epoch = f"{prefix}:epoch"
        self.sessions = f"{prefix}:sessions"
        self.wake = f"{prefix}:wake"
        self.wake_seq = f"{prefix}:wake:seq"
        self.events = f"{prefix}:events"

    def rec(self, session_id: str) -> str:
        return f"{self.prefix}:{{{session_id}}}:rec"

    def log(self, session_id: str) -> str:
        return f"{self.prefix}:{{{session_id}}}:log"


def _event_from(session_id: str, event_id: int, data: bytes) -> Event:
    """An :class:`Event` from its stored bytes: ``ts`` and ``kind`` are read from the head
    of the envelope, the payload is decoded only if someone asks for it (rule 3)."""
    head = b'{"id":%d,"session_id":%s,"ts":' % (event_id, json.dumps(session_id).encode())
    try:
        if not data.startswith(head):
            raise ValueError("unexpected envelope head")
        ts_end = data.index(b',"kind":"', len(head))
        kind_end = data.index(b'"', ts_end + 9)
        ts = float(data[len(head):ts_end])
        kind = data[ts_end + 9:kind_end].decode()
    except ValueError:  # not the shape make_event writes: decode it all
        envelope = json.loads(data)
        ts, kind = float(envelope["ts"]), str(envelope["kind"])
    return Event(event_id, session_id, ts, kind, StoredPayload(data), data)


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(library: Any) -> Iterable[tuple[Any, Any]]:
    """FUNCTION LIST's entry for one library: a flat list of names and values (RESP2), or a
    dict (RESP3)."""
    if isinstance(library, dict):
        return library.items()
    return zip(library[::2], library[1::2], strict=True)
