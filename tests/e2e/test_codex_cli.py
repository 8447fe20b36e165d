"""The real ``codex app-server`` (pinned in the Makefile) driven by CodexDriver alone, against
FakeOpenAI on loopback (PROTOCOLS.md 3.3, 5.2): a tiny stand-in for the runner writes the
driver's ``Send`` messages to stdin and feeds it every stdout line. No network, no API key.

The CLI comes from ``make codex-cli`` (``.tools/``), ``TETHER_CODEX_BIN`` or ``PATH``. Without
it these tests skip locally and fail in CI (``CI`` set).
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acp_process import stop
from tests.e2e.live import codex_bin
from tests.fakes.openai_api import (
    Body,
    FakeOpenAI,
    Reply,
    all_user_texts,
    command_reply,
    last_function_output,
    text_reply,
)
from tests.fakes.record_codex import codex_env
from tether.agents.codex import CodexDriver
from tether.agents.driver import (
    Action,
    Answer,
    Ask,
    DriverContext,
    Emit,
    Prompt,
    Send,
    Started,
    TurnOver,
    Withdraw,
)

pytestmark = [pytest.mark.codex, pytest.mark.timeout(120)]

WAIT_SECONDS = 30.0
BASH = "touch created.txt && echo touched"


def codex_script(otherwise: Callable[[str, list[str]], Reply]) -> Callable[[Body], Reply]:
    """A fake model for Codex: a tool result is answered ``Tool said: <its last line>`` (after
    the first call of a ``[twice]`` prompt: the same command again) and a ``[bash]`` or
    ``[twice]`` prompt runs ``BASH``; any other newest user text ``latest`` gets
    ``otherwise(latest, texts)`` (``texts``: every user text, in order)."""

    def script(body: Body) -> Reply:
        texts = all_user_texts(body)
        latest = texts[-1] if texts else ""
        output = last_function_output(body)
        calls = sum(1 for i in body["input"] if i.get("type") == "function_call")
        if output is not None:
            if latest.startswith("[twice]") and calls % 2 == 1:
                return command_reply("Once more.", BASH)
            return text_reply("Tool said: " + (output.strip().splitlines() or [""])[-1])
        if latest.startswith(("[bash]", "[twice]")):
            return command_reply("I'll create the file.", BASH)
        return otherwise(latest, texts)

    return script


def _other(latest: str, texts: list[str]) -> Reply:
    if latest.startswith("[escalate]"):
        return command_reply("", BASH, "May I create created.txt?")
    return text_reply(f"You said: {latest}")


script = codex_script(_other)  # the fake model of these tests


class CodexProcess:
    """One ``codex app-server`` and its driver: what the runner does, minus the log."""

    def __init__(self, binary: str, env: dict[str, str], workspace: Path,
                 resume: str | None = None, mode: str = "default") -> None:
        self.driver = CodexDriver(DriverContext(agent="codex", workspace=workspace,
                                                permission_mode=mode))
        self.actions: list[Action] = []
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.p = subprocess.Popen([binary, "app-server"], cwd=workspace, env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.do(self.driver.start(resume, resume is not None))

    def _read(self) -> None:
        assert self.p.stdout is not None
        for raw in self.p.stdout:
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                continue  # not JSON: skipped, as the runner does (PROTOCOLS.md 6)

    def do(self, actions: list[Action]) -> None:
        for action in actions:
            self.actions.append(action)
            if isinstance(action, Send):
                assert self.p.stdin is not None
                self.p.stdin.write((json.dumps(action.message) + "\n").encode())
                self.p.stdin.flush()

    def pump(self, until: Callable[[Action], bool], timeout: float = WAIT_SECONDS,
             on_ask: Callable[[Ask], Answer | None] | None = None) -> Action:
        """Feed stdout to the driver until an action matches ``until``; an :class:`Ask` gets
        ``on_ask(ask)`` as its answer (None: left pending)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert self.p.poll() is None, f"codex exited {self.p.returncode}"
                continue
            new = self.driver.receive(message)
            self.do(new)
            for action in new:
                if isinstance(action, Ask) and on_ask is not None:
                    answer = on_ask(action)
                    if answer is not None:
                        self.do(self.driver.answer(action.token, answer))
                if until(action):
                    return action
        raise TimeoutError(f"no matching action within {timeout}s")

    def turn(self, text: str, on_ask: Callable[[Ask], Answer | None] | None = None,
             ) -> list[Action]:
        """One prompt, pumped to its :class:`TurnOver`: the actions of that turn."""
        start = len(self.actions)
        self.do(self.driver.prompt(Prompt(text)))
        self.pump(lambda a: isinstance(a, TurnOver), on_ask=on_ask)
        return self.actions[start:]

    def close(self) -> None:
        stop(self.p, [self.reader])

    @property
    def thread(self) -> str:
        return next(a.agent_session_id for a in self.actions if isinstance(a, Started))


def answering(asked: list[Ask], answer: Answer) -> Callable[[Ask], Answer]:
    """An ``on_ask`` that keeps each request in ``asked`` and answers ``answer``."""
    def on_ask(ask: Ask) -> Answer:
        asked.append(ask)
        return answer
    return on_ask


def emitted(actions: list[Action], kind: str) -> list[dict[str, Any]]:
    return [a.payload for a in actions if isinstance(a, Emit) and a.kind == kind]


def turn_overs(actions: list[Action]) -> list[str]:
    return [a.reason for a in actions if isinstance(a, TurnOver)]


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(script) as fake:
        yield fake


@pytest.fixture
def start(api: FakeOpenAI, tmp_path: Path) -> Iterator[Callable[..., CodexProcess]]:
    """Start codex processes on one HOME and workspace; all closed at the end."""
    binary = codex_bin()
    home = tmp_path / "home"
    home.mkdir()
    env = codex_env(api, str(home))
    (tmp_path / "work").mkdir()
    started: list[CodexProcess] = []

    def start_one(**kwargs: Any) -> CodexProcess:
        started.append(CodexProcess(binary, env, tmp_path / "work", **kwargs))
        return started[-1]

    yield start_one
    for proc in started:
        proc.close()


def test_text_turn(start: Callable[..., CodexProcess]) -> None:
    codex = start()
    actions = codex.turn("Say hello")
    assert emitted(actions, "text") == [{"text": "You said: Say hello"}]
    assert "".join(d["text"] for d in emitted(actions, "text_delta")) == "You said: Say hello"
    assert emitted(actions, "result")[0]["is_error"] is False
    assert turn_overs(actions) == ["completed"] and codex.driver.ready


@pytest.mark.parametrize(("decision", "created"), [("allow", True), ("deny", False)])
def test_approval_allow_runs_the_command_and_deny_does_not(
        start: Callable[..., CodexProcess], tmp_path: Path, decision: str,
        created: bool) -> None:
    codex = start()
    asked: list[Ask] = []
    answer = Answer("allow") if decision == "allow" else Answer("deny")
    actions = codex.turn("[bash] create the file", answering(asked, answer))
    (ask,) = asked
    assert ask.fields["tool_name"] == "Bash" and BASH in ask.fields["input"]["command"]
    assert (tmp_path / "work" / "created.txt").exists() is created
    (result,) = emitted(actions, "tool_result")
    assert result["is_error"] is not created
    assert turn_overs(actions) == ["completed"]


def test_accept_for_session_is_not_asked_again(start: Callable[..., CodexProcess],
                                               tmp_path: Path) -> None:
    codex = start()
    asked: list[Ask] = []
    actions = codex.turn("[twice] create it twice",
                         answering(asked, Answer("allow", scope="session")))
    assert len(asked) == 1
    assert [r["is_error"] for r in emitted(actions, "tool_result")] == [False, False]
    assert (tmp_path / "work" / "created.txt").exists()


def test_stop_with_an_approval_pending_ends_the_turn_once(start: Callable[..., CodexProcess],
                                                          tmp_path: Path) -> None:
    codex = start()
    begin = len(codex.actions)
    codex.do(codex.driver.prompt(Prompt("[bash] create the file")))
    codex.pump(lambda a: isinstance(a, Ask))
    codex.do(codex.driver.interrupt())
    codex.pump(lambda a: isinstance(a, TurnOver))
    # The late serverRequest/resolved (PROTOCOLS.md 3.3) must not end or withdraw anything.
    with pytest.raises(TimeoutError):
        codex.pump(lambda a: isinstance(a, TurnOver | Withdraw), timeout=1.0)
    stopped = codex.actions[begin:]
    assert turn_overs(stopped) == ["cancelled"]
    assert not (tmp_path / "work" / "created.txt").exists()
    assert turn_overs(codex.turn("Say hello after the stop")) == ["completed"]


def test_second_turn_carries_the_first_prompt(start: Callable[..., CodexProcess],
                                              api: FakeOpenAI) -> None:
    codex = start()
    codex.turn("Remember the word banana")
    codex.turn("What was the word?")
    assert all_user_texts(api.requests[-1]) == ["Remember the word banana", "What was the word?"]


def test_a_new_process_resumes_the_thread(start: Callable[..., CodexProcess],
                                          api: FakeOpenAI) -> None:
    first = start()
    first.turn("Remember the word banana")
    first.close()
    second = start(resume=first.thread)
    actions = second.turn("What was the word?")
    assert second.thread == first.thread
    assert turn_overs(actions) == ["completed"]
    assert all_user_texts(api.requests[-1]) == ["Remember the word banana", "What was the word?"]


def test_on_request_mode_asks_only_for_escalation_with_its_reason(
        start: Callable[..., CodexProcess]) -> None:
    codex = start(mode="on-request")
    asked: list[Ask] = []
    actions = codex.turn("[escalate] create it", answering(asked, Answer("allow")))
    (ask,) = asked
    assert ask.fields["reason"] == "May I create created.txt?"
    assert turn_overs(actions) == ["completed"]


def test_images_reach_the_model_as_data_urls(start: Callable[..., CodexProcess],
                                             api: FakeOpenAI) -> None:
    codex = start()
    png = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGA"
           "hKmMIQAAAABJRU5ErkJggg==")
    start_at = len(codex.actions)
    codex.do(codex.driver.prompt(Prompt("What is this?", [{"media_type": "image/png",
                                                             "data": png}])))
    codex.pump(lambda a: isinstance(a, TurnOver))
    assert turn_overs(codex.actions[start_at:]) == ["completed"]
    parts = [c for item in api.requests[-1]["input"] if item.get("role") == "user"
             for c in item.get("content") or []]
    images = [c for c in parts if c.get("type") == "input_image"]
    assert images and images[0]["image_url"] == f"data:image/png;base64,{png}"
