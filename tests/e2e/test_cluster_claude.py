"""The cluster with the real Claude Code CLI (issue 14): two gunicorn hosts on one Redis behind
the round-robin proxy, the CLI against the fake Messages API on loopback (PROTOCOLS.md 5.1).

An approval the CLI asks on one worker is answered through another; a worker killed after a
turn leaves a conversation the next owner resumes (``--resume``), which is checked in what
the fake API receives.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import Cluster, other_than, worker_of
from tests.e2e.live import claude_settings
from tests.e2e.test_cluster import check_log, has, turn_ends, wait_approval
from tests.fakes.anthropic_api import (
    FakeAnthropic,
    Reply,
    all_user_texts,
    last_tool_result,
    text_reply,
    tool_reply,
    tool_result_text,
)
from tests.support import Tally

pytestmark = [pytest.mark.e2e, pytest.mark.claude, pytest.mark.cluster,
              pytest.mark.timeout(240)]


def script(body: dict[str, Any]) -> Reply:
    """The fake model: acts on the newest tagged prompt, answers tool results."""
    prompt = next((t for t in reversed(all_user_texts(body)) if t.startswith("[")), "")
    result = last_tool_result(body)
    if result is not None:
        return text_reply("Tool said: " + tool_result_text(result))
    if prompt.startswith("[bash]"):
        return tool_reply("I'll create the file.", "Bash",
                          {"command": "touch created.txt && echo touched",
                           "description": "Create a file"})
    if prompt.startswith("[recall]"):
        earlier = [t for t in all_user_texts(body) if t.startswith("[remember]")]
        return text_reply("I remember: " + (earlier[0] if earlier else "nothing"))
    return text_reply("Hello from the fake model, " + prompt)


@pytest.fixture(scope="module")
def api() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(script) as api:
        yield api


@pytest.fixture(scope="module")
def cluster(api: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("cluster-claude"),
                 **claude_settings(api.base_url, TETHER_AGENT_IDLE_TIMEOUT=600)) as cluster:
        yield cluster


def prompt(cluster: Cluster, sid: str, text: str) -> str | None:
    response = cluster.api("POST", f"/api/sessions/{sid}/prompt", json={"text": text})
    assert response.status_code == 202, response.text
    return worker_of(response)


def test_an_approval_asked_on_one_worker_is_answered_through_another(
        cluster: Cluster, tally: Tally) -> None:
    sid = cluster.api("POST", "/api/sessions", json={"title": "approve"}).json()["id"]
    prompt(cluster, sid, "[bash] make a file")
    request = wait_approval(cluster, sid, timeout=60)
    owner = cluster.owner_of(sid)
    answered = cluster.request_on(other_than(owner), "POST",
                                  f"/api/sessions/{sid}/approvals/{request['request_id']}",
                                  json={"decision": "allow", "client": "other worker"})
    assert answered.status_code == 200, answered.text
    events, _ = cluster.wait_log(sid, has("turn_end", turn=1), 60)
    assert turn_ends(events) == [(1, "completed")]
    assert (Path(cluster.workspace(sid)) / "created.txt").exists()
    assert any(e["kind"] == "tool_result" and "touched" in str(e["content"]) for e in events)
    check_log(tally, events)


def test_a_killed_owners_conversation_is_resumed_by_the_next_owner(
        cluster: Cluster, api: FakeAnthropic, tally: Tally) -> None:
    sid = cluster.api("POST", "/api/sessions", json={"title": "resume"}).json()["id"]
    prompt(cluster, sid, "[remember] the password is swordfish")
    first, _ = cluster.wait_log(sid, has("turn_end", turn=1), 60)
    owner = cluster.owner_of(sid)  # its agent stays up between turns (idle timeout 600 s)
    agents = cluster.kill_worker(owner)
    tally.add("faults injected")
    assert cluster.wait_gone(agents, 5) == [], "the dead worker's agent outlived it"

    sent = len(api.requests)
    taken = cluster.request_on(other_than(owner), "POST", f"/api/sessions/{sid}/prompt",
                               json={"text": "[recall] what did I say?"})
    assert taken.status_code == 202, taken.text
    events, _ = cluster.wait_log(sid, has("turn_end", turn=2), 90)
    assert turn_ends(events) == [(1, "completed"), (2, "completed")], cluster.log_text()[-4000:]
    text = [e["text"] for e in events[len(first):] if e["kind"] == "text"][-1]
    assert "I remember: [remember] the password is swordfish" in text
    # What the fake API received for turn 2 carries turn 1: the conversation was resumed.
    assert any("[remember] the password is swordfish" in all_user_texts(body)
               for body in api.requests[sent:])
    agent_sessions = {e["agent_session_id"] for e in events if e["kind"] == "agent_session"}
    assert len(agent_sessions) == 1, agent_sessions
    check_log(tally, events)
