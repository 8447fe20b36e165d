"""A tiny runner for tests: one ACP agent process driven by :class:`AcpDriver`.

It does what ``tether.runner`` does with a driver's actions, and no more: ``Send`` is written
to the process's stdin, every stdout line goes to ``receive``, and every action is kept in
``actions`` for the test to look at. Everything runs on the test's thread except a reader
that queues stdout lines. :func:`stop` ends such a process (tests/e2e/test_codex_cli.py's too).
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from tether.agents.acp import AcpDriver
from tether.agents.driver import Action, Answer, Ask, DriverContext, Emit, Prompt, Send, TurnOver


def stop(p: subprocess.Popen[bytes], readers: Iterable[threading.Thread]) -> None:
    """Close ``p``'s stdin, wait for it to exit (killing it after 10 s), join ``readers`` and
    close its output pipes."""
    if p.stdin and not p.stdin.closed:
        p.stdin.close()
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=5)
    for reader in readers:
        reader.join(timeout=5)
    for pipe in (p.stdout, p.stderr):
        if pipe is not None:
            pipe.close()


class AcpProcess:
    """``with AcpProcess(argv, env, workspace) as p: p.start(); p.turn("hi")``."""

    def __init__(self, argv: list[str], env: Mapping[str, str], workspace: Path,
                 transcript: str | None = None, agent: str = "gemini") -> None:
        self.driver = AcpDriver(DriverContext(agent, workspace, transcript=lambda: transcript))
        self.actions: list[Action] = []
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.p = subprocess.Popen(argv, cwd=workspace, env=dict(env), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stderr = b""
        self._readers = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.p.stderr is not None
        self.stderr = self.p.stderr.read()

    def __enter__(self) -> AcpProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        stop(self.p, self._readers)

    def apply(self, actions: list[Action]) -> list[Action]:
        assert self.p.stdin is not None
        for action in actions:
            self.actions.append(action)
            if isinstance(action, Send):
                self.p.stdin.write((json.dumps(action.message) + "\n").encode())
                self.p.stdin.flush()
        return actions

    def until(self, pred: Callable[[Action], bool], timeout: float = 30.0) -> Action:
        """Feed stdout to the driver until an action matches ``pred``; that action."""
        deadline = time.monotonic() + timeout
        start = len(self.actions)
        while True:
            found = next((a for a in self.actions[start:] if pred(a)), None)
            if found is not None:
                return found
            start = len(self.actions)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching action in {timeout}s; stderr: "
                                   f"{self.stderr[-2000:]!r}")
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                raise EOFError(f"the agent exited ({self.p.wait()}): "
                               f"{self.stderr[-2000:]!r}")
            if line.strip():
                self.apply(self.driver.receive(json.loads(line)))

    def start(self, agent_session_id: str | None = None, resume: bool = False) -> None:
        self.apply(self.driver.start(agent_session_id, resume))

    def prompt(self, text: str) -> None:
        self.apply(self.driver.prompt(Prompt(text)))

    def turn(self, text: str, timeout: float = 30.0) -> TurnOver:
        """Send a prompt and wait for its turn to end."""
        self.prompt(text)
        return self.turn_over(timeout)

    def turn_over(self, timeout: float = 30.0) -> TurnOver:
        over = self.until(lambda a: isinstance(a, TurnOver), timeout)
        assert isinstance(over, TurnOver)
        return over

    def ask(self, timeout: float = 30.0) -> Ask:
        found = self.until(lambda a: isinstance(a, Ask), timeout)
        assert isinstance(found, Ask)
        return found

    def answer(self, ask: Ask, answer: Answer) -> None:
        self.apply(self.driver.answer(ask.token, answer))

    def interrupt(self) -> None:
        self.apply(self.driver.interrupt())

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [a.payload for a in self.actions if isinstance(a, Emit) and a.kind == kind]

    def of(self, cls: type) -> list[Any]:
        return [a for a in self.actions if isinstance(a, cls)]
