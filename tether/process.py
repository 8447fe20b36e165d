"""An agent subprocess: argv only (no shell), its own process group, line I/O, clean stop.

The process belongs to a session, never to a request (DESIGN.md rule 4). It is started with
``start_new_session=True`` so that :meth:`AgentProcess.stop` can signal the agent *and* every
tool it spawned (a ``bash -c`` a tool runs, a ``sleep`` under it) as one group. When the
agent exits, by itself or not, whatever is left of its group is killed at once: a descendant
that keeps stdout open would otherwise hold the turn until its timeout.

Faults it absorbs (tests/tether/test_agent_faults.py): a stdout line of any length (read in
bounded pieces), any amount of stderr (drained on a thread, only a bounded tail kept), an
agent that stops reading stdin (:meth:`AgentProcess.stop` never waits on a stuck write), one
that ignores SIGTERM (SIGKILL follows).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

#: Bytes of stderr kept for error reports (the newest ones).
STDERR_TAIL_BYTES = 16 * 1024
#: A stdout line longer than this is dropped (read in pieces, never buffered whole) and
#: :meth:`AgentProcess.lines` yields None in its place.
MAX_LINE_BYTES = 8 * 1024 * 1024
#: Bytes read at a time while dropping the rest of an over-long line.
_SKIP_BYTES = 64 * 1024
#: Terminal escape sequences (CSI ``ESC [ … letter``, OSC ``ESC ] … BEL``, two-byte ``ESC x``) and
#: control characters other than tab and newline: an agent's logger may colour its stderr
#: even into a pipe (codex 0.171.0 does), and the tail is shown as text in an ``error`` event.
_TERMINAL_CONTROLS = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?"
    r"|[\x00-\x08\x0b-\x1f\x7f\x9b]")
#: Seconds :meth:`AgentProcess.stop` waits for a stuck write to fail once the agent is dead.
_WRITER_WAIT_SECONDS = 5.0


class AgentProcess:
    """A running agent CLI speaking JSON lines on stdin/stdout.

    :param argv: the command as a list; never passed through a shell.
    :param cwd: the session workspace.
    :param env: the full environment for the child (callers start from ``os.environ``).
    :raises OSError: the executable is missing or not executable (from :class:`subprocess.Popen`).
    """

    def __init__(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> None:
        self.argv = list(argv)
        self._proc = subprocess.Popen(
            self.argv, cwd=cwd, env=dict(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, close_fds=True,
        )
        self.pid = self._proc.pid
        self._write_lock = threading.Lock()
        self._stderr: collections.deque[bytes] = collections.deque()
        self._stderr_size = 0
        self._stderr_lock = threading.Lock()
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True,
                                               name=f"stderr-{self.pid}")
        self._stderr_thread.start()
        self._exit_lock = threading.Lock()
        self._exited = False
        self._exit_callbacks: list[Callable[[int], None]] = []
        # When the agent exits, its group goes too (see the module docstring).
        threading.Thread(target=self._reap, daemon=True, name=f"reaper-{self.pid}").start()

    # -- I/O -----------------------------------------------------------------------------

    def send(self, message: Mapping[str, Any]) -> bool:
        """Write one JSON line to the agent's stdin; False if the pipe is closed."""
        # ASCII-only: a lone surrogate in a prompt travels as an escape instead of failing.
        line = json.dumps(message, separators=(",", ":"), ensure_ascii=True) + "\n"
        stdin = self._proc.stdin
        assert stdin is not None
        with self._write_lock:
            try:
                stdin.write(line.encode())
                stdin.flush()
                return True
            except (BrokenPipeError, ValueError, OSError):
                return False

    def lines(self) -> Iterator[bytes | None]:
        """stdout, one line at a time (without the newline), until EOF or :meth:`stop`.

        A last line without a newline is yielded as it is. A line over :data:`MAX_LINE_BYTES`
        is read in pieces and dropped, and None is yielded in its place, so memory stays
        bounded whatever the agent prints.
        """
        stdout: IO[bytes] | None = self._proc.stdout
        assert stdout is not None
        try:
            while True:
                line = stdout.readline(MAX_LINE_BYTES + 1)
                if not line:
                    return
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    del line
                    while True:
                        rest = stdout.readline(_SKIP_BYTES)
                        if not rest or rest.endswith(b"\n"):
                            break
                    yield None
                    continue
                yield line.rstrip(b"\r\n")
        except (ValueError, OSError):
            # stop() closed the pipe under us (ValueError: "readline of closed file").
            return

    def stderr_tail(self, wait_seconds: float = 0) -> str:
        """The newest :data:`STDERR_TAIL_BYTES` of stderr, decoded leniently, without terminal
        escape sequences (colours) or other control characters (``\r\n`` becomes ``\n``).

        :param wait_seconds: first wait up to this long for stderr's EOF, so that an agent that
            just exited has all its last words in the tail.
        """
        if wait_seconds > 0:
            self._stderr_thread.join(wait_seconds)
        with self._stderr_lock:
            data = b"".join(self._stderr)
        text = data.decode("utf-8", "replace").replace("\r\n", "\n")
        return _TERMINAL_CONTROLS.sub("", text).strip()

    def _drain_stderr(self) -> None:
        stderr = self._proc.stderr
        assert stderr is not None
        try:
            for chunk in iter(lambda: stderr.read1(4096), b""):  # type: ignore[attr-defined]
                with self._stderr_lock:
                    self._stderr.append(chunk)
                    self._stderr_size += len(chunk)
                    while self._stderr_size > STDERR_TAIL_BYTES and len(self._stderr) > 1:
                        self._stderr_size -= len(self._stderr.popleft())
        except (ValueError, OSError):
            pass  # the pipe was closed by stop()

    def _reap(self) -> None:
        code = self._proc.wait()
        logger.info("agent pid %s exited with code %s", self.pid, code)
        # Tools it left behind in its group would hold its pipes (and the turn) open.
        self._signal_group(signal.SIGKILL)
        with self._exit_lock:
            self._exited = True
            callbacks, self._exit_callbacks = self._exit_callbacks, []
        for callback in callbacks:
            self._call_exit(callback)

    def on_exit(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(pid)`` once the agent has exited and its group was killed,
        whatever ended it: at once if that already happened, else on the reaper's thread
        (it must not block)."""
        with self._exit_lock:
            if not self._exited:
                self._exit_callbacks.append(callback)
                return
        self._call_exit(callback)

    def _call_exit(self, callback: Callable[[int], None]) -> None:
        try:
            callback(self.pid)
        except Exception:
            logger.exception("agent pid %s: an exit callback failed", self.pid)

    # -- lifetime ------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for exit; the exit code, or None on timeout (seconds)."""
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close_stdin(self, timeout: float = -1) -> bool:
        """EOF on stdin: a stream-json CLI finishes its turn and exits (PROTOCOLS.md 1.1).

        :param timeout: seconds to wait for a write in progress to finish (-1: forever); an
            agent that stopped reading stdin can hold a write forever.
        :returns: False when a write held stdin for all of ``timeout`` (stdin stays open).
        """
        if not self._write_lock.acquire(timeout=timeout):
            return False
        try:
            if self._proc.stdin:
                self._proc.stdin.close()
        except OSError:
            pass  # a broken pipe: the buffered bytes are lost, the descriptor is closed
        finally:
            self._write_lock.release()
        return True

    def stop(self, grace_seconds: float) -> int | None:
        """Stop the agent and its process group: stdin EOF, then SIGTERM, then SIGKILL.

        Each step waits up to ``grace_seconds``; the EOF step is skipped when a write is stuck
        (the agent no longer reads stdin). Reaps the child and closes its pipes, so no process
        or file descriptor is left behind. Safe to call twice, and from several threads.

        :returns: the exit code.
        """
        if self.close_stdin(timeout=min(grace_seconds, 0.5)):
            code = self.wait(grace_seconds) if self.alive else self.returncode
        else:
            code = self.returncode
        if code is None:
            self._signal_group(signal.SIGTERM)
            code = self.wait(grace_seconds)
        if code is None:
            self._signal_group(signal.SIGKILL)
            code = self.wait(None)
        # The agent may be gone while tools it spawned still run in its group.
        self._signal_group(signal.SIGKILL)
        # With every reader dead a stuck write fails (EPIPE) and lets go of stdin.
        if not self.close_stdin(timeout=_WRITER_WAIT_SECONDS):
            logger.warning("agent pid %s: stdin still held by a write", self.pid)
        self._stderr_thread.join(timeout=1)
        for pipe in (self._proc.stdout, self._proc.stderr):
            try:
                if pipe:
                    pipe.close()
            except OSError:
                pass
        return code

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
