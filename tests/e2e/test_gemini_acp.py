"""The real Gemini CLI (``gemini --acp``, 0.61.0) driven by Tether's ACP driver against
FakeGemini: no server, just the driver and the process (tests/acp_process.py), started as
:class:`tether.agents.gemini.GeminiAgent` starts it.

The fake model is tests/fakes/record_gemini.py's script: ``[bash]`` runs ``touch
created.txt``, ``[bash2]`` ``touch second.txt``, anything else gets text back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acp_process import AcpProcess
from tests.e2e.live import gemini_bin
from tests.fakes.gemini_api import FakeGemini, all_user_texts
from tests.fakes.record_gemini import gemini_env, script
from tether.agents.driver import Answer, Ask, Started, TurnOver
from tether.agents.gemini import GeminiAgent
from tether.config import Settings

pytestmark = [pytest.mark.gemini, pytest.mark.timeout(120)]

MODEL = "gemini-2.5-pro"  # not "auto": its router wants classifier JSON (PROTOCOLS.md 5.3)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


@pytest.fixture
def api(workspace: Path) -> Iterator[FakeGemini]:
    with FakeGemini(lambda body: script(body, str(workspace))) as fake:
        yield fake


@pytest.fixture
def env(api: FakeGemini, tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return gemini_env(api, str(home))


def launch(workspace: Path, env: dict[str, str], transcript: str | None = None) -> AcpProcess:
    spec = GeminiAgent(Settings.from_env({"TETHER_GEMINI_BIN": gemini_bin()}))
    argv = spec.argv("unused", False) + spec.options_argv(MODEL, "default")
    return AcpProcess(argv, env, workspace, transcript)


@pytest.fixture
def gemini(workspace: Path, env: dict[str, str]) -> Iterator[AcpProcess]:
    with launch(workspace, env) as p:
        p.start()
        yield p


def test_text_turn(gemini: AcpProcess, api: FakeGemini) -> None:
    assert gemini.turn("Say hello", timeout=60) == TurnOver("completed")
    assert gemini.events("result")[0]["text"] == (
        "Hello from the fake Gemini. You said: Say hello")
    assert api.models == [MODEL]
    assert all(p.startswith("/v1beta/models/") for p in api.paths)


def test_permission_allowed_runs_the_command(gemini: AcpProcess, workspace: Path) -> None:
    gemini.prompt("[bash] make it")
    ask = gemini.ask(timeout=60)
    assert ask.fields["tool_name"] == "touch created.txt && echo touched"
    gemini.answer(ask, Answer("allow"))
    assert gemini.turn_over() == TurnOver("completed")
    assert (workspace / "created.txt").exists()


def test_permission_rejected_does_not(gemini: AcpProcess, workspace: Path) -> None:
    gemini.prompt("[bash] make it")
    gemini.answer(gemini.ask(timeout=60), Answer("deny"))
    assert gemini.turn_over() == TurnOver("completed")
    assert not (workspace / "created.txt").exists()
    assert [r["is_error"] for r in gemini.events("tool_result")] == [True]


def test_allow_for_the_session_is_not_asked_again(gemini: AcpProcess,
                                                  workspace: Path) -> None:
    gemini.prompt("[bash] make it")
    gemini.answer(gemini.ask(timeout=60), Answer("allow", scope="session"))
    gemini.turn_over()
    assert gemini.turn("[bash2] once more") == TurnOver("completed")
    assert (workspace / "second.txt").exists()
    assert len(gemini.of(Ask)) == 1


def test_stop_with_a_permission_pending(gemini: AcpProcess, workspace: Path) -> None:
    gemini.prompt("[bash] make it")
    gemini.ask(timeout=60)
    gemini.interrupt()
    assert gemini.turn_over(timeout=10) == TurnOver("cancelled")
    assert gemini.of(TurnOver) == [TurnOver("cancelled")]
    assert not (workspace / "created.txt").exists()
    assert gemini.turn("Hello again") == TurnOver("completed")


def test_the_second_prompt_carries_the_first(gemini: AcpProcess, api: FakeGemini) -> None:
    gemini.turn("Remember the word banana", timeout=60)
    gemini.turn("What was the word?")
    assert "Remember the word banana" in all_user_texts(api.requests[-1])


def test_a_new_process_resumes_by_load_or_by_the_transcript(
        workspace: Path, env: dict[str, str], api: FakeGemini) -> None:
    with launch(workspace, env) as first:
        first.start()
        first.turn("Remember the word banana", timeout=60)
        sid = first.of(Started)[0].agent_session_id
    with launch(workspace, env, "user: Remember the word banana") as second:
        second.start(sid, resume=True)
        assert second.turn("What was the word?", timeout=60) == TurnOver("completed")
        # In the session's own minute the load fails and the transcript goes instead
        # (PROTOCOLS.md 4.3); in a later one the CLI's own history is back.
        errors = second.events("error")
        loaded = not errors
        assert loaded or "could not be restored" in errors[0]["message"]
        assert any("Remember the word banana" in t for t in all_user_texts(api.requests[-1]))
        texts = [e["text"] for e in second.events("text")]  # the replay is not output
        assert len(texts) == 1 and "You said: Remember" not in texts[0]
