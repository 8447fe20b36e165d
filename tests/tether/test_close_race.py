"""Deleting a session while its prompt is still starting (found by bench/fanout.py).

``Session.submit`` publishes the new :class:`~tether.runner.Turn` (``self._turn``) and appends
``user`` under the session lock, then calls ``turn.start()`` outside it. Under gevent,
``Thread.start`` yields while it waits for the new greenlet, so a ``DELETE`` handled in that
window reaches ``finish_close`` -> ``turn.join`` on a thread that has not started, and
``threading`` raises ``RuntimeError: cannot join thread before it is started``: a 500 to the
client, and the session half closed (seen with 10,000 SSE clients attaching while the bench
posted a prompt and, after a client timeout, deleted the session). The test holds
``Turn.start`` at that seam, as the yield does, and deletes meanwhile. (Fixed: ``Turn.join``
now waits for the turn's end event, which needs no started thread.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether import runner
from tether.agents.base import AgentCatalog
from tether.agents.catalog import LocalAgent
from tether.config import Settings
from tether.sessions import SessionRegistry


@pytest.fixture
def core(tmp_path: Path) -> Iterator[SessionRegistry]:
    config = Settings.from_env({"data_dir": tmp_path, "local_word_delay_seconds": 0,
                                "cancel_grace_seconds": 1})
    registry = SessionRegistry(config, agents=AgentCatalog([LocalAgent(config)]))
    yield registry
    registry.shutdown()


@pytest.mark.timeout(60)
def test_delete_while_the_turn_is_starting(core: SessionRegistry,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    session = core.create()
    starting, release = threading.Event(), threading.Event()
    original = runner.Turn.start

    def held_start(turn: runner.Turn) -> None:
        starting.set()
        release.wait(10)
        original(turn)

    monkeypatch.setattr(runner.Turn, "start", held_start)
    submitter = threading.Thread(target=session.submit, args=("hello",))
    submitter.start()
    try:
        assert starting.wait(10)
        core.delete(session.id)  # what DELETE /api/sessions/<id> runs
    finally:
        release.set()
        submitter.join(10)
    assert session.log.closed
