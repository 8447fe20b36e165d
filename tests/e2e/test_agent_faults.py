"""Agent faults through a real gunicorn + gevent server (issue 4, "Agent faults").

The server's ``claude`` agent is ``tests/fixtures/faulty_cli.py`` (``TETHER_CLAUDE_BIN`` points
at a copy of it), so the faults travel the production path: the claude catalog entry, the
monkey-patched subprocess and pipes, the HTTP API. Each row makes one turn fail and asserts,
through the API and ``/proc``: exactly one ``turn_end`` with the expected reason; an ``error``
event holding the row's needles (none when Stop is the cause: then only ``turn_end``
``reason: "cancelled"``); Stop answers at once; no child of the worker and no process the
fake started survives; the worker's open file descriptors (``/proc/<worker>/fd``) come back
to their count before the turn; and the session's next prompt completes.
``tests/tether/test_agent_faults.py`` has the full table on plain threads.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.live import ROOT, STORES, LiveServer, store_settings
from tests.e2e.rawclients import fd_count
from tests.support import Tally

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

FAKE = ROOT / "tests" / "fixtures" / "faulty_cli.py"
TURN_TIMEOUT = 2.0  # seconds (TETHER_TURN_TIMEOUT of this server)
BIG_PROMPT = "y" * 200_000  # over a pipe's 64 KiB buffer, under TETHER_MAX_PROMPT_BYTES


@dataclass
class Fault:
    id: str
    mode: str
    reason: str = "error"
    needles: tuple[str, ...] = ()
    stop: bool = False
    prompt: str = "hello"
    measure_rss: bool = False


FAULTS = [
    Fault("exits 3 at once", "exit3_now", needles=("code 3", "fatal: no API key")),
    Fault("exits non-zero mid-turn", "exit_mid_turn", needles=("code 2", "crashed mid-turn")),
    Fault("garbage lines then exit", "garbage_exit",
          needles=("not a JSON object", "code 0")),
    Fault("half a JSON line then EOF", "half_line", needles=("not a JSON object", "code 0")),
    Fault("64 MiB line without newline", "huge_line", needles=("longer than", "code 0"),
          measure_rss=True),
    Fault("megabytes of stderr then exit 1", "stderr_flood",
          needles=("code 1", "the last line of a flood of stderr")),
    Fault("hangs: turn timeout", "hang", reason="timeout", needles=("TETHER_TURN_TIMEOUT",)),
    Fault("hangs: Stop", "hang", reason="cancelled", stop=True),
    Fault("never reads stdin, big prompt: Stop", "silent_no_stdin", reason="cancelled",
          stop=True, prompt=BIG_PROMPT),
    Fault("never reads stdin, big prompt: timeout", "silent_no_stdin", reason="timeout",
          prompt=BIG_PROMPT, needles=("TETHER_TURN_TIMEOUT",)),
    Fault("ignores SIGTERM: Stop", "ignore_term", reason="cancelled", stop=True),
    Fault("exits, child keeps stdout open", "orphan_exit", needles=("code 1",)),
    Fault("hangs, child ignores SIGTERM: Stop", "orphan_hang", reason="cancelled", stop=True),
    Fault("closes stdout, keeps running", "close_stdout", needles=("closed its output",)),
]


@dataclass
class Rig:
    server: LiveServer
    claude: Path  # TETHER_CLAUDE_BIN
    mode: Path
    pids: Path


@pytest.fixture(scope="module", params=STORES)
def rig(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("faults")
    claude = workdir / "bin" / "claude"
    claude.parent.mkdir()
    shutil.copy(FAKE, claude)
    claude.chmod(0o755)
    mode, pids = workdir / "mode", workdir / "pids"
    with LiveServer(workdir, TETHER_CLAUDE_BIN=claude, TETHER_TURN_TIMEOUT=TURN_TIMEOUT,
                    TETHER_CANCEL_GRACE=0.3, TETHER_AGENT_IDLE_TIMEOUT=0,
                    FAULTY_CLI_MODE=mode, FAULTY_CLI_PIDS=pids,
                    # a credential, so that /api/agents judges the binary alone
                    ANTHROPIC_API_KEY="sk-ant-fake",
                    **store_settings(request, workers=1)) as server:
        yield Rig(server, claude, mode, pids)


# -- /proc ------------------------------------------------------------------------------------

def stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` after the command name: state, ppid, pgrp, …; [] when gone."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()
    except OSError:
        return []


def running(pid: int) -> bool:
    fields = stat_fields(pid)
    return bool(fields) and fields[0] != "Z"  # a zombie runs nothing, holds no descriptor


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields and fields[1] == str(pid) and fields[0] != "Z":
                found.append(int(entry))
    return found


def worker_pid(server: LiveServer) -> int:
    assert server.process is not None
    [worker] = children(server.process.pid)  # gunicorn.conf.py: exactly one worker
    return worker


def open_fds(pid: int) -> int:
    return fd_count(pid)  # its Redis pool aside (tests/e2e/rawclients.py)


def quiet_fds(pid: int, seconds: float = 1.0) -> int:
    """The fewest descriptors ``pid`` holds over ``seconds``: the worker closes an HTTP
    connection a moment after the client does, so one reading may still count it."""
    fewest = open_fds(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
        fewest = min(fewest, open_fds(pid))
    return fewest


def leaked_fds(pid: int, before: int) -> int:
    """Descriptors over ``before`` once the worker settles (0 when none leaked)."""
    return eventually(lambda: max(open_fds(pid) - before, 0))


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """``check()`` once it is falsy, polling up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (value := check()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def rss(pid: int) -> int:
    """Resident set size of ``pid``, bytes."""
    with open(f"/proc/{pid}/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """The peak RSS growth (bytes) of ``pid`` while it runs, sampled every few ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = self.peak = rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak - self.baseline


def recorded_pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def all_events(server: LiveServer, session_id: str) -> list[dict[str, Any]]:
    return server.events(session_id)["events"]


def run_turn(server: LiveServer, session_id: str, text: str, stop: bool = False,
             started: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Prompt, optionally press Stop once ``started()``; the turn's ``turn_end`` event."""
    after = server.events(session_id)["last_event_id"]
    response = server.api("POST", f"/api/sessions/{session_id}/prompt", json={"text": text})
    assert response.status_code == 202, response.text
    if stop:
        deadline = time.monotonic() + 15
        while started is not None and not started():
            assert time.monotonic() < deadline, "the turn never started"
            time.sleep(0.05)
        time.sleep(0.2)
        cancelled = server.api("POST", f"/api/sessions/{session_id}/cancel", timeout=10)
        assert cancelled.status_code == 200 and cancelled.json() == {"cancelled": True}
    return server.wait_for_event(session_id, "turn_end", timeout=20, after=after)


# -- tests ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_agent_fault_through_the_server(rig: Rig, fault: Fault, tally: Tally) -> None:
    server = rig.server
    worker = worker_pid(server)
    rig.mode.write_text(fault.mode)
    rig.pids.unlink(missing_ok=True)
    session = server.create_session(agent="claude")["id"]
    fds_before = quiet_fds(worker)

    tally.add("faults injected", 1)

    def started() -> bool:
        if not recorded_pids(rig.pids):
            return False
        return fault.mode == "silent_no_stdin" or any(
            e["kind"] == "agent_session" for e in all_events(server, session))

    sampler = RssSampler(worker) if fault.measure_rss else None
    end = run_turn(server, session, fault.prompt, fault.stop, started)
    if sampler is not None:
        # The line is 64 MiB; the reader keeps at most 8 MiB of it (tether/process.py).
        growth = sampler.stop()
        assert growth <= 40 * 2**20, f"the worker grew by {growth / 2**20:.1f} MiB"
    assert (end["turn"], end["reason"]) == (1, fault.reason)
    events = all_events(server, session)
    assert [e["kind"] for e in events].count("turn_end") == 1 and events[-1] == end
    messages = [e["message"] for e in events if e["kind"] == "error"]
    if fault.needles:
        for needle in fault.needles:
            assert needle in "\n".join(messages), f"{needle!r} not in {messages!r}"
        assert len(messages) <= 2 and all(len(m) <= 4096 for m in messages)
        assert not any("internal error" in m for m in messages)
    else:
        assert messages == []

    pids = recorded_pids(rig.pids)
    assert pids, "the fake never ran"
    assert eventually(lambda: [p for p in pids if running(p)]) == []
    assert eventually(lambda: children(worker)) == []
    assert leaked_fds(worker, fds_before) == 0, "a descriptor leaked"

    rig.mode.write_text("ok")
    end = run_turn(server, session, "again")
    assert (end["turn"], end["reason"]) == (2, "completed")
    assert eventually(lambda: children(worker)) == []
    assert leaked_fds(worker, fds_before) == 0
    assert server.api("DELETE", f"/api/sessions/{session}").status_code == 204


def test_missing_claude_binary(rig: Rig, tally: Tally) -> None:
    """``TETHER_CLAUDE_BIN`` names a file that is gone: ``/api/agents`` says so and a new
    session is a 400 ``agent_unavailable`` naming the setting; a session made before it went
    gets a clear ``error`` at its prompt, never a 500; once the file is back it works."""
    server = rig.server
    worker = worker_pid(server)
    created = server.api("POST", "/api/sessions", json={"agent": "claude"})
    assert created.status_code == 201, created.text
    session = created.json()["id"]
    hidden = rig.claude.with_name("claude.away")
    rig.claude.rename(hidden)
    try:
        agents = server.api("GET", "/api/agents").json()["agents"]
        available = {a["name"]: a["available"] for a in agents}
        assert available["local"] is True and available["claude"] is False
        refused = server.api("POST", "/api/sessions", json={"agent": "claude"})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "agent_unavailable"
        assert "TETHER_CLAUDE_BIN" in refused.json()["error"]["message"]
        fds_before = quiet_fds(worker)
        tally.add("faults injected", 1)
        end = run_turn(server, session, "hello")
        assert (end["turn"], end["reason"]) == (1, "error")
        [message] = [e["message"] for e in all_events(server, session) if e["kind"] == "error"]
        assert "could not start the claude agent" in message and str(rig.claude) in message
        assert leaked_fds(worker, fds_before) == 0
    finally:
        hidden.rename(rig.claude)
    agents = server.api("GET", "/api/agents").json()["agents"]
    assert {a["name"]: a["available"] for a in agents}["claude"] is True
    rig.mode.write_text("ok")
    end = run_turn(server, session, "again")
    assert (end["turn"], end["reason"]) == (2, "completed")
