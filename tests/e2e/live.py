"""A real Tether server for end-to-end tests: gunicorn, one gevent worker, a free loopback port.

``LiveServer`` starts ``gunicorn -c gunicorn.conf.py`` exactly as ``make run`` does (same config
file, same worker class), waits for ``/healthz``, and on exit stops it and checks that no agent
process it started outlives it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from tests.support import AUTH_HEADERS, TEST_TOKEN

ROOT = Path(__file__).resolve().parents[2]


def fake_api_env(base_url: str, home: Path | None = None) -> dict[str, str]:
    """The environment that points Claude Code at a fake Messages API on loopback and keeps it
    off the network (PROTOCOLS.md 5.1); ``home``: its ``HOME`` (its conversations, settings)."""
    env = {"ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_API_KEY": "sk-ant-fake",
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    if home is not None:
        env["HOME"] = str(home)
    return env


def claude_settings(base_url: str, home: Path | None = None, **extra: Any) -> dict[str, Any]:
    """A server's settings for the real Claude Code CLI against a fake Messages API
    (:func:`fake_api_env`), plus ``extra``."""
    return {"TETHER_AGENT": "claude", "TETHER_CLAUDE_BIN": claude_bin(),
            **fake_api_env(base_url, home), **extra}


def claude_bin() -> str:
    """The Claude Code CLI the tests drive (:func:`pinned_bin`)."""
    return pinned_bin("claude", "TETHER_CLAUDE_BIN", "claude-code")


def codex_bin() -> str:
    """The Codex CLI the tests drive (:func:`pinned_bin`)."""
    return pinned_bin("codex", "TETHER_CODEX_BIN", "codex-cli")


def gemini_bin() -> str:
    """The Gemini CLI the tests drive (:func:`pinned_bin`)."""
    return pinned_bin("gemini", "TETHER_GEMINI_BIN", "gemini-cli")


def pinned_bin(name: str, variable: str, target: str) -> str:
    """An agent CLI the tests drive: ``$variable``, the pinned copy under ``.tools/``
    (``make <target>``), or ``name`` on PATH. Missing: the test fails in CI (``.ci/run``
    installs it) and is skipped elsewhere."""
    import pytest

    candidates = [os.environ.get(variable),
                  str(ROOT / ".tools" / "node_modules" / ".bin" / name),
                  shutil.which(name)]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    if os.environ.get("CI"):
        pytest.fail(f"the {name} CLI is missing in CI: .ci/run must run `make {target}`")
    pytest.skip(f"the {name} CLI is not installed (make {target})")


#: The stores a suite of hostile input and faults runs over (issue 14, item 5): the memory
#: store on one worker, and the Redis store on two workers of one host (a cluster).
STORES = ["memory", "redis"]


def store_settings(request: Any, workers: int = 2) -> dict[str, str]:
    """The settings of ``request.param`` (one of :data:`STORES`) for a :class:`LiveServer`:
    none for memory; for redis, the session's private Redis (the ``redis_server`` fixture)
    under a prefix of this module's own, ``workers`` workers and the worker header (one
    worker for suites that watch the worker process itself: its descriptors, its children).
    """
    if request.param == "memory":
        return {}
    import secrets

    from tests.e2e.rawclients import REDIS_PORTS

    server = request.getfixturevalue("redis_server")
    REDIS_PORTS.add(server.port)
    return {"TETHER_STORE": "redis", "TETHER_REDIS_URL": server.url,
            "TETHER_REDIS_PREFIX": f"e{secrets.token_hex(6)}", "WEB_CONCURRENCY": str(workers),
            "TETHER_DEBUG_WORKER": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """``with LiveServer(tmp_path, TETHER_AGENT="local") as server: server.url``.

    The server runs with ``TETHER_TOKEN`` = :data:`~tests.support.TEST_TOKEN`; :meth:`api`
    sends it, :attr:`login_url` opens the UI as a browser would (the token in the fragment),
    and :meth:`login_cookie` logs a program in as the login form does.
    ``TETHER_ALLOW_ROOT=1`` lets it start as root, as CI runs.
    """

    def __init__(self, workdir: Path, **env: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.login_url = f"{self.url}/#token={TEST_TOKEN}"
        self.workdir = workdir
        self.log_path = workdir / f"gunicorn-{self.port}.log"
        # One worker unless asked: an inherited WEB_CONCURRENCY would be refused (memory and
        # sqlite stores) or split the test's sessions.
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("TETHER_") and k != "WEB_CONCURRENCY"}
        self.env.update({"TETHER_HOST": "127.0.0.1", "TETHER_PORT": str(self.port),
                         "TETHER_DATA_DIR": str(workdir / "data"),
                         "TETHER_LOCAL_WORD_DELAY": "0", "TETHER_CANCEL_GRACE": "1",
                         "TETHER_TOKEN": TEST_TOKEN,
                         # CI runs as root (tether.config.check_user; tests/e2e/test_root.py).
                         "TETHER_ALLOW_ROOT": "1"})
        self.env.update({k: str(v) for k, v in env.items()})
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LiveServer:
        return self.start()

    def start(self) -> LiveServer:
        """Start gunicorn and wait for ``/healthz``; again after :meth:`stop` or :meth:`kill`
        (same workdir, same port, same URL: a restart). Its output is appended to
        :attr:`log_path`."""
        gunicorn = Path(sys.executable).with_name("gunicorn")
        if getattr(self, "_log", None) is not None:
            self._log.close()
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen([str(gunicorn), "-c", "gunicorn.conf.py"], cwd=ROOT,
                                        env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log_text()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    return self
            except (requests.ConnectionError, requests.Timeout):
                # Refused before the bind; a timeout while the worker still boots (the master
                # accepts connections into the backlog first).
                time.sleep(0.1)
        self.__exit__(None, None, None)
        raise RuntimeError(f"gunicorn did not answer /healthz: {self.log_text()}")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self._log.close()
        leftovers = self.wait_no_agent_processes(10)
        if leftovers and exc_type is None:
            raise AssertionError(f"agent processes outlived the server: {leftovers}")

    def stop(self) -> None:
        """SIGTERM, as a process manager stops it; SIGKILL after 20 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    def kill(self) -> None:
        """SIGKILL the server's whole process group (master and worker) at once, as a crash
        or the OOM killer would: no shutdown code runs. Agent processes run in their own
        process groups (tether/process.py), so they are not signalled."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def agent_processes(self) -> list[int]:
        """Processes working in this server's data dir: agents and the tools they run."""
        data = str((self.workdir / "data").resolve())
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    cwd = os.readlink(f"/proc/{entry}/cwd")
                except OSError:
                    continue
                if cwd == data or cwd.startswith(data + os.sep):
                    found.append(int(entry))
        return found

    def wait_no_agent_processes(self, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        while (found := self.agent_processes()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return found

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    # -- small API helpers -----------------------------------------------------------------

    def login_cookie(self) -> str:
        """Log in as the login form does; returns ``name=value`` of the login cookie."""
        session = requests.Session()
        session.post(self.url + "/login", data={"token": TEST_TOKEN},
                     timeout=10).raise_for_status()
        name = f"tether-{self.port}"
        return f"{name}={session.cookies[name]}"

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        kwargs["headers"] = {**AUTH_HEADERS, **kwargs.get("headers", {})}
        return requests.request(method, self.url + path, **kwargs)

    def create_session(self, **body: Any) -> dict[str, Any]:
        response = self.api("POST", "/api/sessions", json=body)
        response.raise_for_status()
        return response.json()

    def events(self, session_id: str, after: int = 0, wait: float = 0) -> dict[str, Any]:
        response = self.api("GET", f"/api/sessions/{session_id}/events",
                            params={"after": after, "wait": wait}, timeout=wait + 10)
        response.raise_for_status()
        return response.json()

    def wait_for_event(self, session_id: str, kind: str, timeout: float = 30,
                       after: int = 0) -> dict[str, Any]:
        """Long-poll until an event of ``kind`` after ``after`` arrives; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            page = self.events(session_id, after,
                               wait=round(max(min(5, deadline - time.monotonic()), 0), 3))
            for event in page["events"]:
                if event["kind"] == kind:
                    return event
            after = page["last_event_id"]
        raise AssertionError(f"no {kind} event in {timeout} s")
