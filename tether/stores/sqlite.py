"""The SQLite store: every session's log and record in one file, kept across restarts.

One database, ``<TETHER_DATA_DIR>/tether.sqlite3`` (:data:`DB_NAME`), in WAL mode, through the
standard library's :mod:`sqlite3`. Events are stored as the bytes they were encoded to when
appended (:attr:`Event.data`, DESIGN.md rule 3), so a replay sends them as they are; the
store's epoch is kept in the file too, so after a restart ids and epoch are the same and
clients resume with their cursors (DESIGN.md rule 1).

Durability
    Every append is its own transaction, committed before :meth:`SqliteEventLog.append`
    returns, so before any client can see the event. With ``synchronous=NORMAL`` in WAL mode
    a commit reaches the operating system (the ``-wal`` file) but is not fsynced: it survives
    the Tether process dying in any way (SIGKILL, the OOM killer, a crash), but the newest
    transactions may roll back after a power loss or an operating-system crash (SQLite,
    "PRAGMA synchronous"); the file stays consistent either way. A client that had seen such
    lost events holds a cursor past the end of the log and gets ``event: reset``. A graceful
    stop (:meth:`SqliteStore.close`) checkpoints the WAL into the main file, which SQLite
    fsyncs. Disk full or a failing disk makes ``append`` raise :class:`sqlite3.Error`, and the
    event is not in the log.

One process
    A lock file next to the database (``tether.sqlite3.lock``, ``flock``) keeps a second
    server off the same data dir: two writers would hand out the same ids. The database and
    its ``-wal``/``-shm`` files and the lock file are owner-only (0600) whatever the umask, and
    tightened to it if an older server left them looser: they hold every prompt and tool
    output.

gevent
    :mod:`sqlite3` calls do not yield to the gevent hub, so each one here is short: one INSERT
    per append, reads in pages of :data:`PAGE_ROWS` rows with a yield between pages. One
    connection guarded by one lock serves the (one) worker process.

Memory
    Each log keeps its newest ``tail`` events in memory, where live clients read them; older
    events are read from the file when a client replays them (``kind`` and ``ts`` have their
    own columns; the payload is decoded from the bytes only if someone asks for it).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tether.events import Event, make_event
from tether.stores.base import SessionRecord, StoredPayload, split_read
from tether.wakeup import Wakeup, WakeupSource

#: The database's file name under ``TETHER_DATA_DIR``.
DB_NAME = "tether.sqlite3"
#: Events each log keeps in memory (its newest).
DEFAULT_TAIL = 1024
#: Rows read per query when replaying from the file; the hub runs other greenlets between.
PAGE_ROWS = 1000
#: ``PRAGMA user_version`` of the schema below; :data:`_MIGRATIONS` bring older files to it.
SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    title TEXT NOT NULL,
    created_at REAL NOT NULL,
    workspace TEXT NOT NULL,
    auto_approve INTEGER NOT NULL,
    agent_session_id TEXT NOT NULL,
    turns INTEGER NOT NULL,
    title_set INTEGER NOT NULL DEFAULT 0,
    base_commit TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    permission_mode TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE TABLE events (
    session_id TEXT NOT NULL,
    id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    ts REAL NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (session_id, id)
) WITHOUT ROWID;
"""


#: Statements that bring a file of schema ``n - 1`` to schema ``n`` (key ``n``), each run in
#: one transaction with the new ``user_version``.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 2: whether a person chose the title. Sessions of schema 1 had one unless their title is
    # the default "<agent> session" (issue 17: the first prompt names an unnamed session).
    2: ("ALTER TABLE sessions ADD COLUMN title_set INTEGER NOT NULL DEFAULT 0",
        "UPDATE sessions SET title_set = (title != agent || ' session')"),
    # 3: the commit the Changes panel compares against (issue 18); none for older sessions.
    3: ("ALTER TABLE sessions ADD COLUMN base_commit TEXT NOT NULL DEFAULT ''",),
    # 4: the model and permission mode a session runs its agent with (issue 18); '' is the
    # agent's default, which older sessions had.
    4: ("ALTER TABLE sessions ADD COLUMN model TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE sessions ADD COLUMN permission_mode TEXT NOT NULL DEFAULT ''"),
}


class StoreInUse(RuntimeError):
    """Another process holds the store's lock file: one server per data dir."""


class SqliteEventLog(WakeupSource):
    """One session's log: rows in the store's ``events`` table, the newest ``tail`` of them
    also in memory, and one :class:`~tether.wakeup.Wakeup` (gevent's once patched).

    Made by :meth:`SqliteStore.create_log` / :meth:`SqliteStore.open_log`, never directly.
    """

    def __init__(self, store: SqliteStore, session_id: str, last_id: int,
                 clock: Callable[[], float], tail: int) -> None:
        self.session_id = session_id
        self._store = store
        self._clock = clock
        self._tail_size = max(tail, 1)
        #: The newest events, ids contiguous and ending at ``_last_id``.
        self._tail: list[Event] = []
        self._last_id = last_id
        self._wakeup = Wakeup()
        self._closed = False

    @property
    def last_id(self) -> int:
        return self._last_id

    @property
    def closed(self) -> bool:
        return self._closed

    def append(self, kind: str, payload: Mapping[str, Any]) -> Event:
        """See :meth:`tether.stores.base.EventLog.append`; also
        :raises sqlite3.Error: the database refused the write (disk full, I/O error)."""
        with self._wakeup.lock:
            if self._closed:
                raise RuntimeError(f"log of session {self.session_id} is closed")
            event = make_event(self._last_id + 1, self.session_id, self._clock(), kind, payload)
            self._store._insert(event)  # committed before anyone can see it
            self._last_id = event.id
            self._tail.append(event)
            if len(self._tail) >= 2 * self._tail_size:
                del self._tail[:len(self._tail) - self._tail_size]
            self._wakeup.notify()
        return event

    def read_after(self, after: int, limit: int | None = None) -> list[Event]:
        with self._wakeup.lock:
            start, older, cached = split_read(after, limit, self._last_id, self._tail)
        if older <= start:
            return cached
        # Older than the tail: committed rows, which never change, read outside the log's lock.
        return self._store._read(self.session_id, start, older) + cached

    def wait_for(self, after: int, timeout: float | None) -> bool:
        return self._wakeup.wait_for(lambda: self._closed or self._last_id > after, timeout)

    def sync(self, after: int) -> int:
        return self.last_id  # this process holds the whole log


class SqliteStore:
    """Logs, session records and the epoch in one SQLite file; see the module docstring.

    :param path: the database file (created, with its directory, if missing).
    :param tail: events each log keeps in memory.
    :raises StoreInUse: another process has the store open.
    :raises RuntimeError: the file was written by a newer Tether (unknown schema version).
    :raises sqlite3.Error: the file is not a database, or cannot be opened.
    """

    durable = True

    def __init__(self, path: Path, clock: Callable[[], float] = time.time,
                 tail: int = DEFAULT_TAIL) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self._clock = clock
        self._tail = tail
        self._lock = threading.Lock()  # the connection and the dict of open logs
        self._logs: dict[str, SqliteEventLog] = {}
        self._lock_fd: int | None = _take_lock(path.with_name(path.name + ".lock"))
        try:
            # Owner-only, also when an older file was not; SQLite gives the -wal and -shm
            # files it creates the database file's mode.
            _close_private(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            self._db: sqlite3.Connection | None = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False)
            self.epoch = self._prepare(self._db)
            for suffix in ("-wal", "-shm"):  # perhaps left by an older server, with its modes
                try:
                    _close_private(os.open(f"{path}{suffix}", os.O_RDONLY | os.O_CLOEXEC))
                except FileNotFoundError:
                    pass
        except BaseException:
            self._release_lock()
            raise

    @staticmethod
    def _prepare(db: sqlite3.Connection) -> str:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"SQLite refused WAL mode (journal_mode={mode})")
        db.execute("PRAGMA synchronous=NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"the store was written by a newer Tether (schema {version}; "
                               f"this one knows {SCHEMA_VERSION})")
        if version == 0:
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?)",
                       (secrets.token_hex(8),))
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        # A file of an older Tether: one transaction per schema step (version 0 was created at
        # the newest schema just now).
        for target in range(version + 1, SCHEMA_VERSION + 1) if version else ():
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _MIGRATIONS[target]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={target}")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return str(db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])

    # -- logs --------------------------------------------------------------------------

    def create_log(self, session_id: str) -> SqliteEventLog:
        """A log for a new session id (empty: session ids are random, never reused)."""
        return self.open_log(session_id)

    def open_log(self, session_id: str) -> SqliteEventLog:
        with self._lock:
            log = self._logs.get(session_id)
            if log is None:
                row = self._connection().execute(
                    "SELECT MAX(id) FROM events WHERE session_id = ?", (session_id,)).fetchone()
                log = SqliteEventLog(self, session_id, int(row[0] or 0), self._clock,
                                     self._tail)
                self._logs[session_id] = log
        return log

    def drop_log(self, session_id: str) -> None:
        with self._lock:
            log = self._logs.pop(session_id, None)
        if log is not None:
            log.close()
        with self._lock:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM events WHERE session_id = ?", (session_id,))
                db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- session records ---------------------------------------------------------------

    def save_session(self, record: SessionRecord) -> None:
        with self._lock:
            self._connection().execute(
                "INSERT OR REPLACE INTO sessions (id, agent, title, created_at, workspace, "
                "auto_approve, agent_session_id, turns, title_set, base_commit, model, "
                "permission_mode) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.id, record.agent, record.title, record.created_at, record.workspace,
                 int(record.auto_approve), record.agent_session_id, record.turns,
                 int(record.title_set), record.base_commit, record.model,
                 record.permission_mode))

    def sessions(self) -> list[SessionRecord]:
        with self._lock:
            rows = self._connection().execute(
                "SELECT id, agent, title, created_at, workspace, auto_approve, "
                "agent_session_id, turns, title_set, base_commit, model, permission_mode "
                "FROM sessions ORDER BY created_at, id"
            ).fetchall()
        return [SessionRecord(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7], bool(r[8]),
                              r[9], r[10], r[11]) for r in rows]

    # -- lifetime ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._db is None

    def close(self) -> None:
        """Close every log, checkpoint the WAL into the database file (fsynced), close the
        connection and release the lock file. Idempotent."""
        with self._lock:
            logs = list(self._logs.values())
        for log in logs:
            log.close()
        with self._lock:
            db, self._db = self._db, None
            if db is not None:
                try:
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    db.close()
            self._release_lock()

    # -- for SqliteEventLog ------------------------------------------------------------

    def _insert(self, event: Event) -> None:
        with self._lock:
            self._connection().execute(
                "INSERT INTO events (session_id, id, kind, ts, data) VALUES (?, ?, ?, ?, ?)",
                (event.session_id, event.id, event.kind, event.ts, event.data))

    def _read(self, session_id: str, after: int, upto: int) -> list[Event]:
        """Events ``after < id <= upto`` from the file, in pages of :data:`PAGE_ROWS`."""
        events: list[Event] = []
        while after < upto:
            with self._lock:
                rows = self._connection().execute(
                    "SELECT id, ts, kind, data FROM events WHERE session_id = ? AND id > ? "
                    "AND id <= ? ORDER BY id LIMIT ?",
                    (session_id, after, upto, PAGE_ROWS)).fetchall()
            events.extend(Event(row[0], session_id, row[1], row[2], StoredPayload(row[3]),
                                row[3]) for row in rows)
            if len(rows) < PAGE_ROWS:
                break  # the session was dropped meanwhile, or this was the last page
            after = rows[-1][0]
            time.sleep(0)  # under gevent: let other greenlets run between pages
        return events

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"the store {self.path} is closed")
        return self._db

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock


def _close_private(fd: int) -> None:
    """Make the open file ``fd`` owner-only (0600), then close it."""
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def check_free(path: Path) -> None:
    """Check, without keeping it, that no other server holds the store at ``path`` (its lock
    file): a start can then refuse in one line before anything else runs.

    :raises StoreInUse: another process holds the lock.
    """
    if path.parent.is_dir():
        os.close(_take_lock(path.with_name(path.name + ".lock")))


def _take_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreInUse(f"another Tether server is using {path.parent} (it holds {path}); "
                         "stop it, or give this one another TETHER_DATA_DIR") from None
    except BaseException:
        os.close(fd)
        raise
    return fd
