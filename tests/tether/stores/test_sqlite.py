"""The SQLite store's own promises: what survives a reopen and a SIGKILL, one server per data
dir, WAL mode, owner-only files, paged replays. The shared contract is in test_contract.py."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tether.config import Settings
from tether.stores import open_store
from tether.stores import sqlite as sqlite_store
from tether.stores.base import SessionRecord
from tether.stores.memory import MemoryStore
from tether.stores.sqlite import DB_NAME, SqliteStore, StoreInUse


def record(session_id: str, **fields: object) -> SessionRecord:
    base: dict[str, object] = {"agent": "local", "title": "t", "created_at": 1.5,
                               "workspace": "/w", "auto_approve": False,
                               "agent_session_id": "a", "turns": 0}
    return SessionRecord(session_id, **{**base, **fields})  # type: ignore[arg-type]


def test_events_records_and_epoch_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    store = SqliteStore(path)
    log = store.create_log("s")
    written = [log.append("text", {"text": f"{i} \u2028 é"}) for i in range(50)]
    store.save_session(record("s", title="kept", turns=2, auto_approve=True))
    store.create_log("gone").append("text", {"text": "x"})
    store.save_session(record("gone"))
    store.drop_log("gone")
    epoch = store.epoch
    store.close()

    again = SqliteStore(path)
    try:
        assert again.epoch == epoch
        assert again.sessions() == [record("s", title="kept", turns=2, auto_approve=True)]
        log = again.open_log("s")
        assert log.last_id == 50
        read = log.read_after(0)
        assert [(e.id, e.ts, e.kind, e.payload, e.data) for e in read] == \
            [(e.id, e.ts, e.kind, e.payload, e.data) for e in written]
        assert log.append("text", {"text": "next"}).id == 51
        assert again.open_log("gone").last_id == 0
    finally:
        again.close()


def test_every_append_survives_a_sigkill_of_the_process(tmp_path: Path) -> None:
    # The writer dies by SIGKILL right after its last append returns: no close, no
    # checkpoint, no atexit. synchronous=NORMAL in WAL mode keeps every committed append.
    path = tmp_path / DB_NAME
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from tether.stores.sqlite import SqliteStore\n"
        "store = SqliteStore(Path(sys.argv[1]))\n"
        "log = store.create_log('s')\n"
        "for i in range(500):\n"
        "    log.append('text', {'text': str(i)})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], timeout=60)
    assert result.returncode == -9
    store = SqliteStore(path)  # the dead writer's lock went with it
    try:
        events = store.open_log("s").read_after(0)
        assert [e.payload["text"] for e in events] == [str(i) for i in range(500)]
    finally:
        store.close()


def test_a_second_store_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    first = SqliteStore(path)
    with pytest.raises(StoreInUse, match="another Tether server"):
        SqliteStore(path)
    first.close()
    SqliteStore(path).close()  # free again once the first one closed


def test_the_database_is_in_wal_mode_and_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "data" / DB_NAME
    store = SqliteStore(path)
    store.create_log("s").append("text", {"text": "secret"})
    try:
        for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", DB_NAME + ".lock"):
            mode = stat.S_IMODE((path.parent / name).stat().st_mode)
            assert mode & 0o077 == 0, (name, oct(mode))
        with sqlite3.connect(path) as other:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()


def store_modes(directory: Path) -> dict[str, int]:
    return {name: stat.S_IMODE((directory / name).stat().st_mode)
            for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", DB_NAME + ".lock")}


def test_the_store_files_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "data" / DB_NAME
    umask = os.umask(0)  # the widest: files would be 0666 unless made otherwise
    try:
        store = SqliteStore(path)
    finally:
        os.umask(umask)
    try:
        store.create_log("s").append("text", {"text": "secret"})
        assert store_modes(path.parent) == dict.fromkeys(store_modes(path.parent), 0o600)
    finally:
        store.close()


def test_looser_store_files_left_by_an_older_server_are_tightened(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    store = SqliteStore(path)
    store.create_log("s").append("text", {"text": "kept"})
    store.close()
    for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", DB_NAME + ".lock"):
        (tmp_path / name).touch()  # an empty -wal and -shm are what SQLite may leave
        (tmp_path / name).chmod(0o666)
    store = SqliteStore(path)
    try:
        assert store_modes(tmp_path) == dict.fromkeys(store_modes(tmp_path), 0o600)
        assert store.open_log("s").read_after(0)[0].payload["text"] == "kept"
    finally:
        store.close()


def test_close_checkpoints_the_wal_into_the_database(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    store = SqliteStore(path)
    for _ in range(200):
        store.create_log("s").append("text", {"text": "x" * 100})
    wal = path.with_name(DB_NAME + "-wal")
    assert wal.stat().st_size > 0
    store.close()
    assert not wal.exists() or wal.stat().st_size == 0


def test_a_database_from_a_newer_tether_is_refused(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(RuntimeError, match="newer Tether"):
        SqliteStore(path)
    SqliteStore(tmp_path / "other.sqlite3").close()  # and its lock was released


#: The schema Tether wrote before issue 17 (user_version 1): no ``title_set`` column.
SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE sessions (id TEXT PRIMARY KEY, agent TEXT NOT NULL, title TEXT NOT NULL,
    created_at REAL NOT NULL, workspace TEXT NOT NULL, auto_approve INTEGER NOT NULL,
    agent_session_id TEXT NOT NULL, turns INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE events (session_id TEXT NOT NULL, id INTEGER NOT NULL, kind TEXT NOT NULL,
    ts REAL NOT NULL, data BLOB NOT NULL, PRIMARY KEY (session_id, id)) WITHOUT ROWID;
INSERT INTO meta VALUES ('epoch', 'old-epoch');
INSERT INTO sessions VALUES ('a', 'local', 'local session', 1.0, '/w', 0, 'x', 0);
INSERT INTO sessions VALUES ('b', 'claude', 'Nightly build', 2.0, '/w', 1, 'y', 3);
INSERT INTO events VALUES ('b', 1, 'text', 2.5, '{"id":1}');
PRAGMA user_version=1;
"""


def test_a_database_of_schema_1_is_migrated_and_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_1)
    store = SqliteStore(path)
    try:
        assert store.epoch == "old-epoch"
        # A default title was no person's choice: the first prompt may still name it.
        assert store.sessions() == [
            record("a", title="local session", created_at=1.0, agent_session_id="x",
                   title_set=False),
            record("b", agent="claude", title="Nightly build", created_at=2.0,
                   auto_approve=True, agent_session_id="y", turns=3, title_set=True)]
        assert store.open_log("b").last_id == 1
        store.save_session(record("a", title="renamed", title_set=True))
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == sqlite_store.SCHEMA_VERSION
    again = SqliteStore(path)
    try:
        assert again.sessions()[0] == record("a", title="renamed", title_set=True)
    finally:
        again.close()


def test_a_replay_from_the_file_reads_page_by_page(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store, "PAGE_ROWS", 7)
    store = SqliteStore(tmp_path / DB_NAME, tail=5)
    try:
        log = store.create_log("s")
        for i in range(100):
            log.append("text", {"text": str(i)})
        assert [e.id for e in log.read_after(0)] == list(range(1, 101))
        assert [e.id for e in log.read_after(13, limit=22)] == list(range(14, 36))
        assert [e.id for e in log.read_after(90, limit=3)] == [91, 92, 93]
    finally:
        store.close()


def test_reads_of_a_closed_store_fail_loudly_rather_than_look_empty(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / DB_NAME, tail=2)
    log = store.create_log("s")
    for i in range(10):
        log.append("text", {"text": str(i)})
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        log.read_after(0)
    assert [e.id for e in log.read_after(8)] == [9, 10]  # the memory tail is still there


def test_open_store_picks_the_store_the_settings_name(tmp_path: Path) -> None:
    memory = open_store(Settings.from_env({"data_dir": tmp_path}))
    assert isinstance(memory, MemoryStore) and not memory.durable
    durable = open_store(Settings.from_env({"TETHER_STORE": "sqlite", "data_dir": tmp_path}))
    try:
        assert isinstance(durable, SqliteStore) and durable.durable
        assert durable.path == tmp_path / DB_NAME
    finally:
        durable.close()
