"""A private ``redis-server`` for tests: Debian's binary on a free loopback port, its data in a
temporary directory, AOF on and RDB snapshots off (as ``TETHER_STORE=redis`` is meant to run).
It never touches the Redis on 6379. Missing binary: the test is skipped, or fails in CI (``CI``
set), as the browser tests do for Chromium.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest
import redis

#: Debian's redis-server (apt-get install redis-server; .ci/run installs it).
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_redis_server() -> str:
    """The redis-server binary, or skip (fail in CI) when it is missing."""
    if not os.access(REDIS_SERVER, os.X_OK):
        message = (f"{REDIS_SERVER} is missing: the Redis store tests need Debian's "
                   "redis-server (apt-get install redis-server)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return REDIS_SERVER


class RedisServer:
    """``with RedisServer(tmp_dir) as server: server.url``; :meth:`stop` and :meth:`start`
    restart it on the same port and directory (its AOF brings the data back)."""

    def __init__(self, directory: Path) -> None:
        self.binary = require_redis_server()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self._log = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> RedisServer:
        if self._log is None:
            self._log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--save", "", "--appendonly", "yes",
             "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_text()}")
            try:
                with redis.Redis.from_url(self.url, socket_timeout=1) as client:
                    if client.ping():
                        return self
            except redis.ConnectionError:
                time.sleep(0.05)
            except redis.ResponseError:  # LOADING: replaying the AOF
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer: {self.log_text()}")

    def stop(self) -> None:
        """SIGTERM (Redis flushes its AOF on the way out), then wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def client(self) -> redis.Redis:
        """A plain client (close it)."""
        return redis.Redis.from_url(self.url)

    def log_text(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""
