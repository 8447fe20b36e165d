"""Agent faults end cleanly (issue 4, "Faults" / "Agent faults").

Each row of :data:`FAULTS` starts a session whose agent is ``tests/fixtures/faulty_cli.py``,
makes its first turn fail in one way, and asserts that:

- the turn ends with exactly one ``turn_end``, the log's last event, with the expected reason;
- an ``error`` event says what happened (its message holds the row's needles); when Stop is the
  cause there is no ``error`` event, only ``turn_end`` ``reason: "cancelled"``;
- no process survives: not the CLI (by pid), not anything in its process group, not a child it
  started (by pid; a zombie waiting for init to reap it counts as gone: it runs nothing and
  holds no file descriptor);
- no file descriptor leaks: ``/proc/self/fd`` has as many entries as before the turn, exactly;
- the session takes another prompt that completes (the fake reads its mode from a file that
  the test then rewrites to ``ok``).

Turns run on plain threads (DESIGN.md rule 9); ``tests/e2e/test_agent_faults.py`` repeats the
faults through a real gunicorn worker.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import faulty_cli
from tests.support import Tally
from tether.agents.base import AgentCatalog, inherited_env
from tether.agents.catalog import default_catalog
from tether.agents.claude import STREAM_JSON_FLAGS, session_flag
from tether.config import Settings
from tether.errors import AgentUnavailable
from tether.process import MAX_LINE_BYTES
from tether.sessions import Session, SessionRegistry

FAKE = Path(faulty_cli.__file__)

#: Seconds between SIGTERM steps: small, so that a CLI that ignores SIGTERM dies quickly.
GRACE = 0.3
#: Seconds a hanging turn may run in the timeout rows.
SHORT_TIMEOUT = 1.0
#: Seconds any other turn may run: a turn that hangs where it should not ends as ``timeout``
#: and fails its row's reason check instead of hanging the test.
LONG_TIMEOUT = 20.0
#: Generous bound (seconds) for a turn, a cleanup or a Stop call; never a speed assertion.
BOUND = 15.0
#: Peak RSS growth (bytes) allowed while a 64 MiB line without a newline streams in: the
#: reader keeps at most one MAX_LINE_BYTES (8 MiB) cut of a line, plus a copy or two.
RSS_GROWTH_LIMIT = 40 * 1024 * 1024
#: A prompt bigger than a pipe's buffer (64 KiB on Linux) and under TETHER_MAX_PROMPT_BYTES.
BIG_PROMPT = "y" * 200_000


class FaultyAgent:
    """``faulty_cli.py`` as an agent, or ``executable`` (a path) when a test sets one."""

    name = "faulty"
    description = "a CLI that misbehaves on purpose"

    def __init__(self, mode_file: Path, pids_file: Path) -> None:
        self.mode_file = mode_file
        self.pids_file = pids_file
        self.executable: Path | None = None

    def unavailable(self) -> str | None:
        return None

    def argv(self, agent_session_id: str, resume: bool) -> list[str]:
        program = [str(self.executable)] if self.executable else [sys.executable, str(FAKE)]
        return [*program, *STREAM_JSON_FLAGS, session_flag(agent_session_id, resume)]

    def env(self) -> dict[str, str]:
        return inherited_env(FAULTY_CLI_MODE=str(self.mode_file),
                             FAULTY_CLI_PIDS=str(self.pids_file))


@dataclass(frozen=True)
class Fault:
    """One row: the fake's ``mode``; ``stop``: the test presses Stop once the turn runs;
    ``reason``: the expected ``turn_end`` reason; ``needles``: text the ``error`` events must
    hold (none expected when empty); ``executable``: ``missing`` or ``not_executable``."""

    id: str
    mode: str = "ok"
    reason: str = "error"
    needles: tuple[str, ...] = ()
    stop: bool = False
    timeout: float = LONG_TIMEOUT
    prompt: str = "hello"
    executable: str | None = None
    measure_rss: bool = False
    also: tuple[str, ...] = ()  # event kinds the first turn must also have


FAULTS = [
    Fault("missing executable", executable="missing",
          needles=("could not start the faulty agent", "no-such-cli")),
    Fault("not executable", executable="not_executable",
          needles=("could not start the faulty agent", "Permission denied")),
    Fault("exits 0 at once", "exit0_now", needles=("exited (code 0) before the turn ended",)),
    Fault("exits 3 at once", "exit3_now", needles=("code 3", "fatal: no API key")),
    Fault("exits non-zero mid-turn", "exit_mid_turn", needles=("code 2", "crashed mid-turn"),
          also=("agent_session", "text")),
    Fault("garbage lines then exit", "garbage_exit",
          needles=("printed a line that is not a JSON object", "this is not json", "code 0")),
    Fault("garbage lines then a result", "garbage_then_result", reason="completed",
          needles=("printed a line that is not a JSON object",), also=("result",)),
    Fault("half a JSON line then EOF", "half_line",
          needles=("printed a line that is not a JSON object", "code 0"), also=("agent_session",)),
    Fault("64 MiB line without newline", "huge_line", measure_rss=True,
          needles=(f"longer than {MAX_LINE_BYTES} bytes", "code 0")),
    Fault("64 MiB line then a result", "huge_line_then_result", reason="completed",
          measure_rss=True, needles=(f"longer than {MAX_LINE_BYTES} bytes",),
          also=("result",)),
    Fault("megabytes of stderr then exit 1", "stderr_flood",
          needles=("code 1", faulty_cli.STDERR_LAST_LINE)),
    Fault("hangs: turn timeout", "hang", reason="timeout", timeout=SHORT_TIMEOUT,
          needles=("TETHER_TURN_TIMEOUT",)),
    Fault("hangs: Stop", "hang", reason="cancelled", stop=True),
    Fault("silent from the start: turn timeout", "silent_no_stdin", reason="timeout",
          timeout=SHORT_TIMEOUT, needles=("TETHER_TURN_TIMEOUT",)),
    Fault("never reads stdin, big prompt: timeout", "silent_no_stdin", reason="timeout",
          timeout=SHORT_TIMEOUT, prompt=BIG_PROMPT, needles=("TETHER_TURN_TIMEOUT",)),
    Fault("never reads stdin, big prompt: Stop", "silent_no_stdin", reason="cancelled",
          stop=True, prompt=BIG_PROMPT),
    Fault("ignores SIGTERM: turn timeout", "ignore_term", reason="timeout",
          timeout=SHORT_TIMEOUT, needles=("TETHER_TURN_TIMEOUT",)),
    Fault("ignores SIGTERM: Stop", "ignore_term", reason="cancelled", stop=True),
    Fault("exits, child keeps stdout open", "orphan_exit", needles=("code 1",)),
    Fault("hangs, child ignores SIGTERM: Stop", "orphan_hang", reason="cancelled", stop=True),
    Fault("closes stdout, keeps running", "close_stdout",
          needles=("closed its output", "still running")),
]


# -- helpers ---------------------------------------------------------------------------------

def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            state = file.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and running(int(entry)):
                    members.append(int(entry))
            except ProcessLookupError:
                pass
    return members


def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """``check()`` once it is falsy (a list of leftovers, say), polling up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while (value := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def recorded_pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def events(session: Session) -> list[tuple[str, dict[str, Any]]]:
    return [(e.kind, dict(e.payload)) for e in session.log.read_after(0)]


def errors(session: Session) -> list[str]:
    return [payload["message"] for kind, payload in events(session) if kind == "error"]


def turn_ends(session: Session) -> list[dict[str, Any]]:
    return [payload for kind, payload in events(session) if kind == "turn_end"]


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


class RssSampler:
    """Samples this process's resident set size (bytes) every few ms on a thread."""

    def __init__(self) -> None:
        self.baseline = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def stop(self) -> int:
        """The peak growth over the baseline, in bytes."""
        self._stop.set()
        self._thread.join()
        return self.peak - self.baseline


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[Callable[..., tuple[SessionRegistry, FaultyAgent]]]:
    cores: list[SessionRegistry] = []

    def build(**settings: Any) -> tuple[SessionRegistry, FaultyAgent]:
        agent = FaultyAgent(tmp_path / "mode", tmp_path / "pids")
        config = Settings.from_env({"data_dir": tmp_path / "data", "cancel_grace_seconds": GRACE,
                                    "agent_idle_seconds": 0, **settings})
        core = SessionRegistry(config, agents=AgentCatalog([agent]))
        cores.append(core)
        return core, agent

    yield build
    for core in cores:
        core.shutdown()


# -- the table -------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_agent_fault_ends_the_turn_cleanly(fault: Fault, faulty: Any, tmp_path: Path,
                                           tally: Tally) -> None:
    core, agent = faulty(turn_timeout_seconds=fault.timeout)
    agent.mode_file.write_text(fault.mode)
    if fault.executable == "missing":
        agent.executable = tmp_path / "no-such-cli"
    elif fault.executable == "not_executable":
        agent.executable = tmp_path / "not-executable-cli"
        agent.executable.write_text("#!/bin/sh\nexit 0\n")
        agent.executable.chmod(0o644)
    session = core.create(agent="faulty")
    fds_before = open_fds()
    sampler = RssSampler() if fault.measure_rss else None

    tally.add("faults injected", 1)
    assert session.submit(fault.prompt) == 1
    if fault.stop:
        # The CLI is up and in its turn (a hanging writer for the big prompt) before Stop.
        wait_until(lambda: recorded_pids(agent.pids_file), "the CLI started")
        if fault.mode != "silent_no_stdin":
            wait_until(lambda: any(k == "agent_session" for k, _ in events(session)),
                       "the turn started")
        time.sleep(0.2)
        stopper = threading.Thread(target=session.cancel, daemon=True)
        stopper.start()
        stopper.join(BOUND)
        assert not stopper.is_alive(), "Stop blocked"
    assert session.wait_idle(BOUND), "the turn did not end"
    growth = sampler.stop() if sampler is not None else 0

    log = events(session)
    assert [p for k, p in log if k == "turn_end"] == [{"turn": 1, "reason": fault.reason}]
    assert log[-1][0] == "turn_end"
    messages = errors(session)
    if fault.needles:
        joined = "\n".join(messages)
        for needle in fault.needles:
            assert needle in joined, f"{needle!r} not in the error events {messages!r}"
    else:
        assert messages == []
    for kind in fault.also:
        assert kind in [k for k, _ in log]
    # At most one for bad output and one for the end; a bounded tail of stderr in each.
    assert len(messages) <= 2 and all(len(m) <= 4096 for m in messages)
    assert not any("internal error" in m for m in messages)
    assert growth <= RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB"

    # Nothing survives: the CLI, its group, its children.
    pids = recorded_pids(agent.pids_file)
    if fault.executable is None:
        assert pids, "the fake never ran"
        assert eventually(lambda: [p for p in pids if running(p)]) == []
        assert eventually(lambda: group_members(pids[0])) == []
    # At most as many as before: in a full run other tests' servers and files close meanwhile.
    assert eventually(lambda: max(open_fds() - fds_before, 0)) == 0, "a file descriptor leaked"

    # The session is usable: the next prompt completes.
    agent.mode_file.write_text("ok")
    agent.executable = None
    assert session.submit("again") == 2
    assert session.wait_idle(BOUND)
    assert turn_ends(session)[-1] == {"turn": 2, "reason": "completed"}
    assert [p for k, p in events(session) if k == "result"][-1]["text"] == "ok: again"
    later = recorded_pids(agent.pids_file)[len(pids):]
    assert later and eventually(lambda: [p for p in later if running(p)]) == []
    assert eventually(lambda: max(open_fds() - fds_before, 0)) == 0


def test_stop_after_the_cli_exited_by_itself(faulty: Any, tally: Tally) -> None:
    """Stop racing a CLI that just died: still one ``turn_end`` (either reason is right)."""
    core, agent = faulty()
    agent.mode_file.write_text("exit_mid_turn")
    session = core.create(agent="faulty")
    for number in range(1, 6):
        tally.add("faults injected", 1)
        session.submit("go")
        session.cancel()
        assert session.wait_idle(BOUND)
        ends = turn_ends(session)
        assert len(ends) == number and ends[-1]["reason"] in ("error", "cancelled")
    assert not any("internal error" in m for m in errors(session))
    pids = recorded_pids(agent.pids_file)
    assert len(pids) == 5 and eventually(lambda: [p for p in pids if running(p)]) == []


# -- the real claude path ----------------------------------------------------------------------

def test_missing_claude_binary_is_unavailable_and_a_clear_turn_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "bin" / "claude"
    config = Settings.from_env({"data_dir": tmp_path / "data", "claude_bin": str(missing),
                                "cancel_grace_seconds": GRACE})
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fake")
    core = SessionRegistry(config, agents=default_catalog(config))
    try:
        available = {a.name: a.available for a in core.agents.describe()}
        assert available["local"] is True and available["claude"] is False
        # No session for an agent that cannot run: the error names the setting to fix.
        with pytest.raises(AgentUnavailable, match="TETHER_CLAUDE_BIN"):
            core.create(agent="claude")
        assert core.list() == []
        # A CLI that goes missing after the session was made: a clear error at the turn.
        missing.parent.mkdir()
        missing.write_text("#!/bin/sh\n")
        missing.chmod(0o755)
        session = core.create(agent="claude")
        missing.unlink()
        fds_before = open_fds()
        session.submit("hello")
        assert session.wait_idle(BOUND)
        assert turn_ends(session) == [{"turn": 1, "reason": "error"}]
        [message] = errors(session)
        assert "could not start the claude agent" in message and str(missing) in message
        assert open_fds() == fds_before
    finally:
        core.shutdown()
