"""gunicorn.conf.py's master-side hooks, called as gunicorn's master calls them: the worker
count (``nworkers_changed``) and a worker's exit (``child_exit``). Starting real servers with
them is tests/e2e/test_startup.py's part."""

from __future__ import annotations

import logging
import runpy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import tether.cluster.membership
from tests.e2e.live import ROOT, free_port
from tests.redis_server import RedisServer
from tests.support import TEST_TOKEN


def load_conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> dict[str, Any]:
    """gunicorn.conf.py's globals, run with ``env`` as gunicorn would run it."""
    monkeypatch.delenv("GEVENT_TRACK_GREENLET_TREE", raising=False)  # the conf sets it
    # With the Redis store the conf sets these in os.environ, for the workers it forks. Set
    # here first so that monkeypatch puts back their absence (it records nothing for a
    # delenv of an unset name): a PROMETHEUS_MULTIPROC_DIR left set breaks every later test
    # that builds the app's metrics.
    for name in ("PROMETHEUS_MULTIPROC_DIR", "TETHER_METRICS_MASTER"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    settings = {"TETHER_DATA_DIR": str(tmp_path / "data"), "TETHER_PORT": str(free_port()),
                "TETHER_ALLOW_ROOT": "1", "TETHER_TOKEN": TEST_TOKEN, **env}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


class Master:
    """What the hooks use of gunicorn's Arbiter: its log, and the storage of its worker
    count (``Arbiter.num_workers`` is a property over ``_num_workers``)."""

    def __init__(self, workers: int | None) -> None:
        self._num_workers = workers
        self.log = logging.getLogger("test.gunicorn.master")


def test_a_second_worker_asked_later_with_the_memory_store_is_undone_and_logged(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conf = load_conf(monkeypatch, tmp_path)
    with pytest.raises(SystemExit, match="TETHER_STORE=redis"):  # at the start
        conf["nworkers_changed"](Master(None), 2, None)
    conf["nworkers_changed"](Master(None), 1, None)  # one is fine
    # SIGTTIN on a running master: Arbiter.num_workers += 1 stores 2, then calls the hook.
    master = Master(2)
    with caplog.at_level(logging.ERROR):
        conf["nworkers_changed"](master, 2, 1)
    assert master._num_workers == 1
    assert "not changing to 2 workers" in caplog.text and "TETHER_STORE=redis" in caplog.text
    master = Master(0)  # stopping
    conf["nworkers_changed"](master, 0, 1)
    assert master._num_workers == 0


def test_a_worker_exit_is_passed_to_the_cluster_with_the_redis_store(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_server: RedisServer,
        caplog: pytest.LogCaptureFixture) -> None:
    conf = load_conf(monkeypatch, tmp_path, TETHER_STORE="redis",
                     TETHER_REDIS_URL=redis_server.url)
    calls: list[tuple[Any, int]] = []
    monkeypatch.setattr(tether.cluster.membership, "worker_exited",
                        lambda settings, pid: calls.append((settings, pid)))
    master = Master(2)
    conf["nworkers_changed"](master, 2, None)  # allowed: the store is redis
    conf["child_exit"](master, SimpleNamespace(pid=4242))
    assert calls == [(conf["_settings"], 4242)]

    def fails(settings: Any, pid: int) -> None:
        raise ConnectionError("Redis is away")

    monkeypatch.setattr(tether.cluster.membership, "worker_exited", fails)
    with caplog.at_level(logging.ERROR):
        conf["child_exit"](master, SimpleNamespace(pid=4343))  # logged, not raised
    [record] = [r for r in caplog.records if r.name == master.log.name]
    assert "worker 4343" in record.getMessage() and "TETHER_LEASE_SECONDS" in record.getMessage()
    assert record.exc_info and "Redis is away" in str(record.exc_info[1])


def test_a_worker_exit_asks_nothing_of_the_memory_store(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    conf = load_conf(monkeypatch, tmp_path)

    def fails(settings: Any, pid: int) -> None:
        raise AssertionError("called")

    monkeypatch.setattr(tether.cluster.membership, "worker_exited", fails)
    conf["child_exit"](Master(1), SimpleNamespace(pid=4242))


def test_the_metrics_directories_of_dead_masters_are_swept_and_a_fresh_one_made(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_server: RedisServer) -> None:
    import os
    import socket
    import subprocess
    import sys
    import tempfile

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = socket.gethostname()
    left = temp / f"tether-metrics-{dead}.{host}.x1"  # a master SIGKILLed: no on_exit ran
    left.mkdir()
    (left / "counter_1.db").write_bytes(b"\0" * 8)
    alive = temp / f"tether-metrics-{os.getpid()}.{host}.x2"  # a running master's (this)
    elsewhere = temp / f"tether-metrics-{dead}.other-container.x3"  # another pid namespace
    other = temp / "tether-metrics-oldname"  # no pid in its name: not ours to judge
    for kept in (alive, elsewhere, other):
        kept.mkdir()
    conf = load_conf(monkeypatch, tmp_path, TETHER_STORE="redis",
                     TETHER_REDIS_URL=redis_server.url)
    try:
        made = Path(conf["_metrics"])
        assert made.parent == temp
        assert made.name.startswith(f"tether-metrics-{os.getpid()}.{host}.")
        assert not left.exists() and alive.is_dir() and elsewhere.is_dir() and other.is_dir()
    finally:
        conf["on_exit"](None)
    assert not made.exists()
