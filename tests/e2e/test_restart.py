"""Server restarts lose nothing (issue 4): a real gunicorn with ``TETHER_STORE=sqlite``, or
``TETHER_STORE=redis`` on a private redis-server (issue 14), stopped gracefully (SIGTERM) or
killed (SIGKILL to its whole process group), then started again on the same data dir and port.

After either, every session and every event is back with the same ids and the same epoch, a
client resumes with its cursor and gets exactly the rest, a turn that was running ends once
with ``turn_end`` ``reason: "interrupted"`` and its open requests resolve as ``cancelled``, and
the session takes the next prompt. A Claude Code session restarted between two prompts
continues its conversation (``--resume``): the fake Messages API sees the first prompt in the
second request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
import sseclient

from tests.e2e.live import LiveServer, claude_bin
from tests.fakes.anthropic_api import FakeAnthropic, Reply, all_user_texts, text_reply
from tests.support import AUTH_HEADERS, Tally

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def all_events(server: LiveServer, sid: str) -> list[dict[str, Any]]:
    """The whole log, page by page."""
    out: list[dict[str, Any]] = []
    while True:
        page = server.events(sid, after=out[-1]["id"] if out else 0)
        if not page["events"]:
            return out
        out.extend(page["events"])


def prompt(server: LiveServer, sid: str, text: str) -> int:
    response = server.api("POST", f"/api/sessions/{sid}/prompt", json={"text": text})
    assert response.status_code == 202, response.text
    return int(response.json()["turn"])


def turn_ends(events: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(e["turn"], e["reason"]) for e in events if e["kind"] == "turn_end"]


def sse_after(server: LiveServer, sid: str, last_event_id: int,
              until: int) -> tuple[list[int], dict[str, Any]]:
    """Resume a stream with ``Last-Event-ID``: the ids replayed, and the caught-up marker."""
    headers = {"Accept": "text/event-stream", "Last-Event-ID": str(last_event_id),
               **AUTH_HEADERS}
    response = requests.get(f"{server.url}/api/sessions/{sid}/stream", headers=headers,
                            stream=True, timeout=(5, 30))
    assert response.status_code == 200
    ids: list[int] = []
    try:
        for event in sseclient.SSEClient(response).events():
            if event.event == "message":
                ids.append(int(event.id))
            elif event.event == "caught-up":
                marker = json.loads(event.data)
                if marker["last_event_id"] >= until:
                    return ids, marker
            elif event.event == "reset":
                raise AssertionError(f"unexpected reset: {event.data}")
    finally:
        response.close()
    raise AssertionError("the stream ended before it caught up")


@pytest.fixture(params=["sqlite", "redis"])
def durable(request: pytest.FixtureRequest) -> dict[str, str]:
    """The settings of a durable store: SQLite in the data dir, or a private Redis under this
    test's own key prefix."""
    if request.param == "sqlite":
        return {"TETHER_STORE": "sqlite"}
    server = request.getfixturevalue("redis_server")
    return {"TETHER_STORE": "redis", "TETHER_REDIS_URL": server.url,
            "TETHER_REDIS_PREFIX": request.getfixturevalue("redis_prefix")}


def check_log(tally: Tally, events: list[dict[str, Any]]) -> None:
    """Ids 1..N, each once, in order (tallied)."""
    tally.check_exact(list(range(1, len(events) + 1)), [e["id"] for e in events])


def test_sigterm_and_start_bring_back_every_session_and_event(
        tmp_path: Path, tally: Tally, durable: dict[str, str]) -> None:
    with LiveServer(tmp_path, **durable) as server:
        done = server.create_session(title="done")["id"]
        prompt(server, done, "hello")
        first_end = server.wait_for_event(done, "turn_end")
        prompt(server, done, "hello again")
        server.wait_for_event(done, "turn_end", after=first_end["id"])
        waiting = server.create_session(title="waiting")["id"]
        prompt(server, waiting, "$ echo never")
        request = server.wait_for_event(waiting, "approval_request")
        assert server.api("PATCH", f"/api/sessions/{done}",
                          json={"auto_approve": True}).status_code == 200

        listing = server.api("GET", "/api/sessions").json()
        before = {sid: all_events(server, sid) for sid in (done, waiting)}
        # A client that has read half of the finished session's log.
        cursor = len(before[done]) // 2
        seen = [e["id"] for e in before[done][:cursor]]

        server.stop()
        tally.add("restarts")
        if durable["TETHER_STORE"] == "sqlite":
            # The stop left everything in the database file: the WAL checkpointed and emptied.
            wal = tmp_path / "data" / "tether.sqlite3-wal"
            assert not wal.exists() or wal.stat().st_size == 0
        server.start()

        again = server.api("GET", "/api/sessions").json()
        assert again["epoch"] == listing["epoch"]
        assert [s["id"] for s in again["sessions"]] == [waiting, done]
        restored = {s["id"]: s for s in again["sessions"]}
        assert restored[done]["auto_approve"] is True and restored[done]["turn"] == 2
        assert restored[done]["title"] == "done" and restored[waiting]["title"] == "waiting"
        assert all(s["state"] == "idle" and s["pending"] == {"approvals": [], "clarify": []}
                   for s in again["sessions"])

        after = {sid: all_events(server, sid) for sid in (done, waiting)}
        assert after[done] == before[done]
        # The stop ended the waiting turn itself: its approval cancelled, one turn_end.
        assert after[waiting][:len(before[waiting])] == before[waiting]
        resolved = [e for e in after[waiting] if e["kind"] == "approval_resolved"]
        assert [(e["request_id"], e["reason"]) for e in resolved] == \
            [(request["request_id"], "cancelled")]
        assert turn_ends(after[waiting]) == [(1, "interrupted")]
        for events in after.values():
            check_log(tally, events)

        # The client resumes with its cursor and gets exactly the rest, under the same epoch.
        rest, marker = sse_after(server, done, cursor, until=len(before[done]))
        assert marker == {"last_event_id": len(before[done]), "epoch": listing["epoch"]}
        tally.add("reconnects")
        tally.check_exact([e["id"] for e in before[done]], seen + rest)

        # Both sessions take new prompts, with the next ids.
        assert prompt(server, waiting, "hello") == 2
        end = server.wait_for_event(waiting, "turn_end", after=len(after[waiting]))
        assert (end["turn"], end["reason"]) == (2, "completed")
        assert end["id"] > len(after[waiting])
        check_log(tally, all_events(server, waiting))


def test_sigkill_mid_turn_then_start_interrupts_the_turn_and_cancels_its_requests(
        tmp_path: Path, tally: Tally, durable: dict[str, str]) -> None:
    # Words 0.1 s apart: the help text streams for seconds, so the kill lands mid-turn.
    with LiveServer(tmp_path, TETHER_LOCAL_WORD_DELAY=0.1, **durable) as server:
        asking = server.create_session(title="asking")["id"]
        prompt(server, asking, "$ echo back")
        request = server.wait_for_event(asking, "approval_request")
        streaming = server.create_session(title="streaming")["id"]
        prompt(server, streaming, "hello")
        server.wait_for_event(streaming, "text_delta")
        epoch = server.api("GET", "/api/sessions").json()["epoch"]
        seen = {sid: all_events(server, sid) for sid in (asking, streaming)}
        assert turn_ends(seen[streaming]) == [], "the turn ended before the kill"

        server.kill()
        tally.add("faults injected")
        tally.add("restarts")
        # The agents lose their server's pipes and exit by themselves.
        assert server.wait_no_agent_processes(15) == []
        server.start()

        assert server.api("GET", "/api/sessions").json()["epoch"] == epoch
        for sid in (asking, streaming):
            events = all_events(server, sid)
            # Every event a client saw before the crash is back, byte for byte the same.
            assert events[:len(seen[sid])] == seen[sid]
            assert turn_ends(events) == [(1, "interrupted")]
            assert events[-1]["kind"] == "turn_end"
            check_log(tally, events)
            session = server.api("GET", f"/api/sessions/{sid}").json()
            assert session["state"] == "idle" and session["turn"] == 1
        events = all_events(server, asking)
        resolved = [e for e in events if e["kind"] == "approval_resolved"]
        assert [(e["request_id"], e["reason"], e["decision"]) for e in resolved] == \
            [(request["request_id"], "cancelled", "deny")]
        assert [e["kind"] for e in events[-2:]] == ["approval_resolved", "turn_end"]

        # The session takes a new prompt that completes.
        last = events[-1]["id"]
        assert prompt(server, asking, "$ echo back") == 2
        again = server.wait_for_event(asking, "approval_request", after=last)
        assert server.api("POST", f"/api/sessions/{asking}/approvals/{again['request_id']}",
                          json={"decision": "allow", "client": "e2e"}).status_code == 200
        end = server.wait_for_event(asking, "turn_end", after=last)
        assert (end["turn"], end["reason"]) == (2, "completed")
        events = all_events(server, asking)
        assert any(e["kind"] == "tool_result" and "back" in json.dumps(e["content"])
                   for e in events[last:])
        check_log(tally, events)


# -- Claude Code: the conversation continues across a restart ------------------------------

def recall(body: dict[str, Any]) -> Reply:
    texts = all_user_texts(body)
    if texts and texts[-1].startswith("[recall]"):
        earlier = [t for t in texts if t.startswith("[remember]")]
        return text_reply("I remember: " + (earlier[0] if earlier else "nothing"))
    return text_reply("Noted.")


@pytest.mark.claude
@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_claude_session_resumes_its_conversation_after_a_restart(
        tmp_path: Path, tally: Tally, how: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with FakeAnthropic(recall) as api, LiveServer(
            tmp_path, TETHER_STORE="sqlite", TETHER_AGENT="claude",
            TETHER_CLAUDE_BIN=claude_bin(), TETHER_AGENT_IDLE_TIMEOUT=0,
            ANTHROPIC_BASE_URL=api.base_url, ANTHROPIC_API_KEY="sk-ant-fake", HOME=str(home),
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1") as server:
        sid = server.create_session()["id"]
        prompt(server, sid, "[remember] the password is swordfish")
        first_end = server.wait_for_event(sid, "turn_end", timeout=90)
        assert first_end["reason"] == "completed"
        first = next(e for e in all_events(server, sid) if e["kind"] == "agent_session")

        if how == "stop":
            server.stop()
        else:
            server.kill()
            tally.add("faults injected")
        tally.add("restarts")
        assert server.wait_no_agent_processes(15) == []
        server.start()

        assert prompt(server, sid, "[recall] what did I say?") == 2
        end = server.wait_for_event(sid, "turn_end", after=first_end["id"], timeout=90)
        assert end["reason"] == "completed"
        events = all_events(server, sid)
        text = "".join(e["text"] for e in events[first_end["id"]:] if e["kind"] == "text")
        assert "I remember: [remember] the password is swordfish" in text
        # The CLI resumed the same agent session, and sent the model the earlier turn.
        second = [e for e in events[first_end["id"]:] if e["kind"] == "agent_session"]
        assert [e["agent_session_id"] for e in second] == [first["agent_session_id"]]
        assert "[remember] the password is swordfish" in all_user_texts(api.requests[-1])
        check_log(tally, events)
