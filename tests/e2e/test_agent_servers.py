"""Any Agent Client Protocol agent, declared in a ``TETHER_AGENT_SERVERS`` file (Zed's
``agent_servers`` shape): the real Gemini CLI declared under a name of the user's, through
Tether's HTTP API against FakeGemini. The entry's ``args`` and ``env`` are all Tether knows of
it: the agent list shows it, and a session of it runs, asks, and stops as ``gemini`` does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.live import LiveServer, gemini_bin
from tests.e2e.test_gemini import (
    MODEL,
    answer,
    no_process_in,
    of,
    option,
    prompt,
    script,
    turn,
    until_turn_end,
    workspace_of,
)
from tests.fakes.gemini_api import FakeGemini
from tests.fakes.record_gemini import gemini_env

pytestmark = [pytest.mark.e2e, pytest.mark.gemini, pytest.mark.timeout(180)]

NAME = "my-gemini"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("agent-servers")
    with FakeGemini(script) as api:
        env = gemini_env(api, str(workdir / "home"))
        (workdir / "home").mkdir(exist_ok=True)
        servers = workdir / "agents.json"
        # The fake's environment goes in the entry, as a user's API key would.
        servers.write_text(json.dumps({NAME: {
            "command": gemini_bin(), "args": ["--acp", "--skip-trust", "-m", MODEL],
            "env": {k: v for k, v in env.items() if k != "PATH"}}}))
        with LiveServer(workdir, TETHER_AGENT_SERVERS=str(servers),
                        HOME=env["HOME"]) as live:
            yield live


def new_session(server: LiveServer) -> str:
    return str(server.create_session(agent=NAME)["id"])


def test_the_declared_agent_is_listed(server: LiveServer) -> None:
    agents = {a["name"]: a for a in server.api("GET", "/api/agents").json()["agents"]}
    assert agents[NAME]["available"] is True, agents[NAME]


def test_a_text_turn(server: LiveServer) -> None:
    sid = new_session(server)
    events = turn(server, sid, "Say hello")
    assert [e["reason"] for e in of(events, "turn_end")] == ["completed"]
    assert of(events, "text")[-1]["text"] == "Hello from the fake Gemini. You said: Say hello"
    assert of(events, "agent_session")[0]["agent"] == NAME
    # Its modes are what it announced in session/new.
    agents = {a["name"]: a for a in server.api("GET", "/api/agents").json()["agents"]}
    assert {"default", "autoEdit", "plan"} <= set(agents[NAME]["permission_modes"])


def test_an_approval_allowed_and_a_stop_with_one_open(server: LiveServer) -> None:
    sid = new_session(server)
    prompt(server, sid, "[bash] make it")
    request = server.wait_for_event(sid, "approval_request", timeout=90)
    answer(server, sid, request, decision="allow",
           option_id=option(request, "allow_once")["option_id"])
    until_turn_end(server, sid)
    assert (workspace_of(server, sid) / "created.txt").exists()

    other = new_session(server)
    prompt(server, other, "[bash] make it")
    server.wait_for_event(other, "approval_request", timeout=90)
    assert server.api("POST", f"/api/sessions/{other}/cancel").json() == {"cancelled": True}
    events = until_turn_end(server, other)
    assert [r["reason"] for r in of(events, "approval_resolved")] == ["cancelled"]
    assert [e["reason"] for e in of(events, "turn_end")] == ["cancelled"]
    assert no_process_in(workspace_of(server, other)) == []
    assert not (workspace_of(server, other) / "created.txt").exists()


def test_a_declared_agent_whose_command_is_gone_is_unavailable(
        tmp_path: Path) -> None:
    servers = tmp_path / "agents.json"
    servers.write_text(json.dumps({"gone": {"command": str(tmp_path / "no-such-agent")}}))
    with LiveServer(tmp_path, TETHER_AGENT_SERVERS=str(servers)) as live:
        agents = {a["name"]: a for a in live.api("GET", "/api/agents").json()["agents"]}
        assert agents["gone"]["available"] is False
        refused = live.api("POST", "/api/sessions", json={"agent": "gone"})
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "agent_unavailable"
