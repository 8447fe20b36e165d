"""An agent subprocess: argv only (no shell), its own process group, line I/O, clean stop.

The process belongs to a session, never to a request (DESIGN.md rule 4). It is started with
``start_new_session=True`` so that :meth:`AgentProcess.stop` can signal the agent *and* every
tool it spawned (a ``bash -c`` a tool runs, a ``sleep`` under it) as one group.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

#: Bytes of stderr kept for error reports (the newest ones).
STDERR_TAIL_BYTES = 16 * 1024
#: A stdout line longer than this is cut and reported as bad output, never buffered whole.
MAX_LINE_BYTES = 8 * 1024 * 1024


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

    def lines(self) -> Iterator[bytes]:
        """stdout, one line at a time (without the newline), until EOF.

        A line over :data:`MAX_LINE_BYTES` is yielded cut to that size (and so fails to parse
        as JSON) instead of being buffered whole.
        """
        stdout: IO[bytes] | None = self._proc.stdout
        assert stdout is not None
        while True:
            line = stdout.readline(MAX_LINE_BYTES)
            if not line:
                return
            if not line.endswith(b"\n"):
                # Cut: skip the rest of this over-long line.
                while True:
                    rest = stdout.readline(MAX_LINE_BYTES)
                    if not rest or rest.endswith(b"\n"):
                        break
            yield line.rstrip(b"\r\n")

    def stderr_tail(self) -> str:
        """The newest :data:`STDERR_TAIL_BYTES` of stderr, decoded leniently."""
        with self._stderr_lock:
            data = b"".join(self._stderr)
        return data.decode("utf-8", "replace").strip()

    def _drain_stderr(self) -> None:
        stderr = self._proc.stderr
        assert stderr is not None
        for chunk in iter(lambda: stderr.read1(4096), b""):  # type: ignore[attr-defined]
            with self._stderr_lock:
                self._stderr.append(chunk)
                self._stderr_size += len(chunk)
                while self._stderr_size > STDERR_TAIL_BYTES and len(self._stderr) > 1:
                    self._stderr_size -= len(self._stderr.popleft())

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

    def close_stdin(self) -> None:
        """EOF on stdin: a stream-json CLI finishes its turn and exits (PROTOCOLS.md 1.1)."""
        with self._write_lock:
            try:
                if self._proc.stdin:
                    self._proc.stdin.close()
            except OSError:
                pass

    def stop(self, grace_seconds: float) -> int | None:
        """Stop the agent and its process group: stdin EOF, then SIGTERM, then SIGKILL.

        Each step waits up to ``grace_seconds``. Reaps the child and closes its pipes, so no
        process or file descriptor is left behind.

        :returns: the exit code.
        """
        self.close_stdin()
        code = self.wait(grace_seconds) if self.alive else self.returncode
        if code is None:
            self._signal_group(signal.SIGTERM)
            code = self.wait(grace_seconds)
        if code is None:
            self._signal_group(signal.SIGKILL)
            code = self.wait(None)
        # The agent may be gone while tools it spawned still run in its group.
        self._signal_group(signal.SIGKILL)
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
