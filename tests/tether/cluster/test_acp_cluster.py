"""An Agent Client Protocol agent on the Redis store: two workers of one cluster, the
scripted ACP agent (tests/fixtures/acp_agent.py) as a ``TETHER_AGENT_SERVERS`` entry. The
agent's own options are answered from the worker that does not run it, checked there; and a
turn after the owner died loads the agent's conversation on another worker."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.redis_server import RedisServer
from tests.tether.cluster.test_registry import (
    Workers,
    events,
    pending_approval,
    settings_for,
    turn_end,
)
from tether.agents.agent_servers import load_agent_servers
from tether.agents.base import AgentCatalog
from tether.cluster.registry import ClusterRegistry
from tether.config import Settings
from tether.errors import BadRequest

AGENT = Path(__file__).parents[2] / "fixtures" / "acp_agent.py"

pytestmark = pytest.mark.timeout(60)


def acp_worker(settings: Settings, name: str) -> ClusterRegistry:
    assert settings.agent_servers is not None
    return ClusterRegistry(settings, agents=AgentCatalog(load_agent_servers(
        settings.agent_servers)), worker=f"{settings.host_id}:{name}:0")


@pytest.fixture
def settings(tmp_path: Path, redis_server: RedisServer, redis_prefix: str) -> Settings:
    servers = tmp_path / "agents.json"
    servers.write_text(json.dumps({"scripted": {
        "command": sys.executable, "args": [str(AGENT), "--state", str(tmp_path / "state")],
        "env": {"PYTHONUNBUFFERED": "1"}}}))
    return settings_for(tmp_path, redis_server, redis_prefix,
                        TETHER_AGENT_SERVERS=str(servers), TETHER_AGENT="scripted")


@pytest.fixture
def workers(settings: Settings) -> Iterator[Workers]:
    a, b = acp_worker(settings, "1"), acp_worker(settings, "2")
    yield a, b
    for registry in (a, b):
        registry.shutdown()


def payloads(registry: ClusterRegistry, sid: str, kind: str) -> list[dict[str, Any]]:
    return [dict(e.payload) for e in events(registry, sid) if e.kind == kind]


def test_the_agents_option_is_checked_and_answered_on_another_worker(
        workers: Workers) -> None:
    a, b = workers
    sid = a.create().id
    a.get(sid).submit("[tool]")  # a owns it
    rid = pending_approval(b, sid)
    with pytest.raises(BadRequest, match="not one of this request's options"):
        b.get(sid).prompts.answer_approval(rid, "allow", option_id="yolo")
    with pytest.raises(BadRequest, match="does not allow"):
        b.get(sid).prompts.answer_approval(rid, "allow", option_id="no")
    with pytest.raises(BadRequest):  # the option alone is the answer: no edited input
        b.get(sid).prompts.answer_approval(rid, "allow", option_id="yes",
                                           updated_input={"path": "/etc/passwd"})
    b.get(sid).prompts.answer_approval(rid, "allow", option_id="yes", by="phone")
    assert turn_end(a, sid, 1)["reason"] == "completed"
    [resolved] = payloads(b, sid, "approval_resolved")
    assert (resolved["option_id"], resolved["by"]) == ("yes", "phone")
    workspace = Path(a.get(sid).to_dict()["cwd"])
    assert (workspace / "made.txt").read_text() == "made\n"


def test_a_dead_owners_session_loads_the_agents_conversation_elsewhere(
        settings: Settings) -> None:
    a, b = acp_worker(settings, "1"), acp_worker(settings, "2")
    try:
        sid = a.create().id
        b.get(sid).submit("remember the number 42")  # b owns it
        assert turn_end(b, sid, 1)["reason"] == "completed"
        # b dies: its heartbeat stops, nothing of it runs any more (as after SIGKILL).
        b.membership._stop.set()
        b.store._stop.set()  # type: ignore[attr-defined]
        b.get(sid)._host.stop()
        assert a.get(sid).submit("[history]") == 2
        assert turn_end(a, sid, 2)["reason"] == "completed"
        text = [p["text"] for p in payloads(a, sid, "text")][-1]
        assert "remember the number 42" in text
        ids = {p["agent_session_id"] for p in payloads(a, sid, "agent_session")}
        assert len(ids) == 1  # the same ACP session, loaded
    finally:
        a.shutdown()
        b.shutdown()
