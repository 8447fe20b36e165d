"""No secret reaches an agent, and the data dir is private (issue 16, item 2), on a real
gunicorn server: a ``local`` session's ``$ env`` shows none of Tether's secret settings, a
worker that gunicorn re-forks still knows the token the master generated, and the data dir
and its files have their modes. Claude Code's Bash tool: tests/e2e/test_claude.py."""

from __future__ import annotations

import os
import re
import signal
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.live import LiveServer
from tests.e2e.rawclients import worker_pid
from tests.support import OTHER_SECRETS, TEST_TOKEN, leaks

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

def run_approved(server: LiveServer, sid: str, text: str) -> list[dict[str, Any]]:
    """Prompt ``text``, allow its approval, and return the turn's events."""
    after = server.events(sid)["last_event_id"]
    assert server.api("POST", f"/api/sessions/{sid}/prompt", json={"text": text}).ok
    request = server.wait_for_event(sid, "approval_request", after=after)
    answer = server.api("POST", f"/api/sessions/{sid}/approvals/{request['request_id']}",
                        json={"decision": "allow", "client": "e2e"})
    assert answer.status_code == 200
    server.wait_for_event(sid, "turn_end", after=after)
    return list(server.events(sid, after)["events"])


def test_env_in_a_local_session_shows_no_secret_setting(tmp_path: Path) -> None:
    with LiveServer(tmp_path, TETHER_AGENT="local", MARKER_FROM_SERVER="inherited",
                    **OTHER_SECRETS) as server:
        sid = server.create_session()["id"]
        events = run_approved(server, sid, "$ env")
        [result] = [e for e in events if e["kind"] == "tool_result"]
        output = result["content"]
        assert result["is_error"] is False
        assert "MARKER_FROM_SERVER=inherited" in output  # it is the server's environment
        assert "TETHER_PORT=" in output  # other settings are no secret
        assert leaks(output) == []
        # The log names no value but the token, once: the login URL printed at start.
        log = server.log_text()
        assert [line for line in log.splitlines() if leaks(line, names=False)] == [
            f"    {server.url}/#token={TEST_TOKEN}"]


def test_a_worker_gunicorn_reforks_still_has_the_generated_token(tmp_path: Path) -> None:
    with LiveServer(tmp_path, TETHER_TOKEN="") as server:
        [token] = re.findall(rf"{re.escape(server.url)}/#token=([\w-]+)", server.log_text())
        bearer = {"Authorization": f"Bearer {token}"}
        assert requests.get(server.url + "/api/sessions", headers=bearer, timeout=10).ok
        assert server.process is not None
        first = worker_pid(server.process.pid)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            try:
                second = worker_pid(server.process.pid, timeout=1)
                if second != first and requests.get(server.url + "/healthz", timeout=1).ok:
                    break
            except (AssertionError, requests.ConnectionError, requests.Timeout):
                pass
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.1)
        # The master kept the token it generated (a worker drops it from its own environment
        # once read): the new worker knows the same one.
        answer = requests.get(server.url + "/api/sessions", headers=bearer, timeout=10)
        assert answer.status_code == 200, server.log_text()
        assert requests.get(server.url + "/api/sessions", timeout=10).status_code == 401


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_dir_is_0700_and_its_files_0600_tightened_with_a_warning(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)
    (data / "old.key").write_text("left by someone\n")
    (data / "old.key").chmod(0o644)
    with LiveServer(tmp_path, TETHER_STORE="sqlite") as server:
        sid = server.create_session()["id"]
        run_approved(server, sid, "$ echo private")
        assert mode(data) == 0o700
        for name in ("tether.sqlite3", "tether.sqlite3-wal", "tether.sqlite3-shm",
                     "tether.sqlite3.lock", "old.key"):
            assert mode(data / name) == 0o600, name
        log = server.log_text()
        assert f"{data} was open to other users (mode 0755)" in log
        assert f"{data / 'old.key'} was open to other users (mode 0644)" in log
