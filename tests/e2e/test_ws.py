"""The WebSocket JSON-RPC transport against a real gunicorn + gevent server, driven by a real
client library (websocket-client): every method, every error code a client can cause, resume
after a dropped socket, and the same events as SSE and long-poll (docs/protocol.md)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sseclient

from tests.e2e.live import LiveServer
from tests.e2e.wsclient import RpcFailure, WsClient
from tests.support import AUTH_HEADERS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("ws"), TETHER_KEEPALIVE=0.5) as server:
        yield server


@pytest.fixture
def client(server: LiveServer) -> Iterator[WsClient]:
    with WsClient(server.url) as client:
        yield client


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in events]


def failure(client: WsClient, method: str, **params: Any) -> RpcFailure:
    with pytest.raises(RpcFailure) as caught:
        client.call(method, **params)
    return caught.value


# -- methods -------------------------------------------------------------------------------

def test_gateway_ready_on_connect(client: WsClient, server: LiveServer) -> None:
    ready = client.ready
    assert ready["version"] and ready["keepalive_seconds"] == 0.5
    assert ready["epoch"] == server.api("GET", "/api/sessions").json()["epoch"]


def test_session_create_list_get_update_delete(client: WsClient, server: LiveServer) -> None:
    session = client.call("session.create", agent="local", title="from ws")
    sid = session["id"]
    assert session["title"] == "from ws" and session["state"] == "idle"
    assert sid in [s["id"] for s in client.call("session.list")["sessions"]]
    assert client.call("session.get", session_id=sid)["id"] == sid
    updated = client.call("session.update", session_id=sid, title="renamed", auto_approve=True)
    assert updated["title"] == "renamed" and updated["auto_approve"] is True
    # The same session over HTTP: one core, two transports.
    assert server.api("GET", f"/api/sessions/{sid}").json()["title"] == "renamed"
    assert client.call("session.delete", session_id=sid) == {"deleted": True}
    assert server.api("GET", f"/api/sessions/{sid}").status_code == 404


def test_attach_replays_then_caught_up_then_tails(client: WsClient, server: LiveServer) -> None:
    sid = client.call("session.create")["id"]
    client.call("prompt.submit", session_id=sid, text="hello")
    server.wait_for_event(sid, "turn_end")
    total = server.events(sid)["last_event_id"]
    attached = client.call("session.attach", session_id=sid)
    assert attached == {"session_id": sid, "after": 0, "last_event_id": total,
                        "epoch": client.ready["epoch"], "reset": False}
    replay = client.events_until(sid, "turn_end")
    assert [e["id"] for e in replay] == list(range(1, total + 1))
    caught_up = client.notification("caught_up")
    assert caught_up["session_id"] == sid and caught_up["last_event_id"] == total
    # The live tail: a second turn arrives as it happens.
    assert client.call("prompt.submit", session_id=sid, text="hello again") == {"turn": 2}
    live = client.events_until(sid, "turn_end")
    assert live[0]["id"] == total + 1 and live[0]["kind"] == "user"


def test_attach_after_and_reset(client: WsClient, server: LiveServer) -> None:
    sid = client.call("session.create")["id"]
    client.call("prompt.submit", session_id=sid, text="hello")
    server.wait_for_event(sid, "turn_end")
    total = server.events(sid)["last_event_id"]
    client.call("session.attach", session_id=sid, after=total - 2)
    assert [e["id"] for e in client.events_until(sid, "turn_end")] == [total - 1, total]
    client.notification("caught_up")
    # Past the end: a reset, then everything.
    reply = client.call("session.attach", session_id=sid, after=total + 50)
    assert reply["reset"] is True and reply["after"] == 0
    assert client.notification("reset")["last_event_id"] == total
    assert client.events_until(sid, "turn_end")[0]["id"] == 1
    client.notification("caught_up")
    # A stale epoch: the same.
    assert client.call("session.attach", session_id=sid, after=3, epoch="old")["reset"] is True
    client.notification("reset")


def test_several_sessions_on_one_socket(client: WsClient, server: LiveServer) -> None:
    sids = [client.call("session.create")["id"] for _ in range(2)]
    for sid in sids:
        client.call("session.attach", session_id=sid)
        client.notification("caught_up")
    for sid in sids:
        client.call("prompt.submit", session_id=sid, text="hello")
    ended: dict[str, list[int]] = {sid: [] for sid in sids}
    deadline = time.monotonic() + 30
    while any(not ids or ids[-1] > 0 for ids in ended.values()) and time.monotonic() < deadline:
        note = client.notification("event")
        event = note["event"]
        assert note["session_id"] == event["session_id"]
        ended[event["session_id"]].append(-event["id"] if event["kind"] == "turn_end"
                                          else event["id"])
    for ids in ended.values():
        assert [abs(i) for i in ids] == list(range(1, len(ids) + 1)) and ids[-1] < 0


def test_detach_stops_delivery(client: WsClient, server: LiveServer) -> None:
    sid = client.call("session.create")["id"]
    client.call("session.attach", session_id=sid)
    client.notification("caught_up")
    assert client.call("session.detach", session_id=sid) == {"detached": True}
    assert client.call("session.detach", session_id=sid) == {"detached": False}
    client.call("prompt.submit", session_id=sid, text="hello")
    server.wait_for_event(sid, "turn_end")
    assert client.call("ping")["ts"] > 0
    assert not [n for n in client.notifications if n["method"] == "event"]


def test_approval_respond_and_inbox(client: WsClient, server: LiveServer) -> None:
    sid = client.call("session.create")["id"]
    snapshot = client.call("inbox.subscribe")
    assert set(snapshot) == {"revision", "epoch", "entries"}
    client.call("session.attach", session_id=sid)
    client.call("prompt.submit", session_id=sid, text="$ echo from-ws")
    request = client.events_until(sid, "approval_request")[-1]
    inbox = client.notification("inbox")
    while request["request_id"] not in [e["request_id"] for e in inbox["entries"]]:
        inbox = client.notification("inbox")
    entry = next(e for e in inbox["entries"] if e["request_id"] == request["request_id"])
    assert entry["session_id"] == sid and entry["kind"] == "approval"
    assert entry["summary"] == "Bash: echo from-ws"
    result = client.call("approval.respond", session_id=sid, request_id=request["request_id"],
                         decision="allow", client="ws-test")
    assert result == {"request_id": request["request_id"], "resolved": True,
                      "decision": "allow"}
    events = client.events_until(sid, "turn_end")
    resolved = next(e for e in events if e["kind"] == "approval_resolved")
    assert resolved["by"] == "ws-test" and resolved["decision"] == "allow"
    assert "from-ws" in next(e for e in events if e["kind"] == "tool_result")["content"]
    # The entry left the inbox.
    while request["request_id"] in [e["request_id"] for e in inbox["entries"]]:
        inbox = client.notification("inbox")
    assert client.call("inbox.unsubscribe") == {"unsubscribed": True}
    assert client.call("inbox.unsubscribe") == {"unsubscribed": False}


def test_clarify_respond(client: WsClient, server: LiveServer) -> None:
    sid = client.call("session.create")["id"]
    client.call("session.attach", session_id=sid)
    client.call("prompt.submit", session_id=sid, text="ask Which database? PostgreSQL | SQLite")
    request = client.events_until(sid, "clarify_request")[-1]
    question = request["questions"][0]["question"]
    result = client.call("clarify.respond", session_id=sid, request_id=request["request_id"],
                         answers={question: "SQLite"})
    assert result["resolved"] is True
    events = client.events_until(sid, "turn_end")
    resolved = next(e for e in events if e["kind"] == "clarify_resolved")
    assert resolved["answers"] == {question: "SQLite"} and resolved["by"].startswith("ws ")


def test_turn_cancel(client: WsClient, server: LiveServer) -> None:
    sid = client.call("session.create")["id"]
    client.call("session.attach", session_id=sid)
    client.call("prompt.submit", session_id=sid, text="$ sleep 30")
    request = client.events_until(sid, "approval_request")[-1]
    client.call("approval.respond", session_id=sid, request_id=request["request_id"],
                decision="allow")
    client.events_until(sid, "approval_resolved")
    assert client.call("turn.cancel", session_id=sid) == {"cancelled": True}
    end = client.events_until(sid, "turn_end")[-1]
    assert end["reason"] == "cancelled"
    assert client.call("turn.cancel", session_id=sid) == {"cancelled": False}


def test_auto_approve_settles_approvals_on_the_server(client: WsClient,
                                                      server: LiveServer) -> None:
    sid = client.call("session.create")["id"]
    client.call("session.update", session_id=sid, auto_approve=True)
    client.call("session.attach", session_id=sid)
    client.call("prompt.submit", session_id=sid, text="$ echo auto")
    events = client.events_until(sid, "turn_end")
    resolved = next(e for e in events if e["kind"] == "approval_resolved")
    assert (resolved["reason"], resolved["by"], resolved["decision"]) == (
        "auto", "auto-approve", "allow")
    assert kinds(events).index("approval_request") < kinds(events).index("approval_resolved")


def test_deleting_an_attached_session_detaches_it(client: WsClient,
                                                   server: LiveServer) -> None:
    sid = client.call("session.create")["id"]
    client.call("session.attach", session_id=sid)
    client.notification("caught_up")
    server.api("DELETE", f"/api/sessions/{sid}")
    assert client.notification("detached") == {"method": "detached", "session_id": sid,
                                               "reason": "ended"}


def test_keepalive_ping_when_idle(client: WsClient) -> None:
    assert client.notification("ping", timeout=5, skip=())["ts"] > 0


# -- errors -------------------------------------------------------------------------------

def raw(client: WsClient, frame: str) -> Any:
    client.send_raw(frame)
    return client.recv()


def test_parse_error_has_a_null_id(client: WsClient) -> None:
    reply = raw(client, "{not json")
    assert reply["id"] is None and reply["error"]["code"] == -32700
    assert raw(client, "NaN")["error"]["code"] == -32700


@pytest.mark.parametrize("frame", [
    "42", '"text"', '{"id": 1, "method": "ping"}', '{"jsonrpc": "1.0", "id": 1, "method": "ping"}',
    '{"jsonrpc": "2.0", "id": true, "method": "ping"}', '{"jsonrpc": "2.0", "id": 1}',
    '{"jsonrpc": "2.0", "id": 1, "method": ""}', "[]",
])
def test_invalid_requests(client: WsClient, frame: str) -> None:
    reply = raw(client, frame)
    reply = reply[0] if isinstance(reply, list) else reply
    assert reply["error"]["code"] == -32600


def test_binary_frames_are_invalid_requests(client: WsClient) -> None:
    client.socket.send_binary(b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}')
    assert client.recv()["error"]["code"] == -32600


def test_method_not_found(client: WsClient) -> None:
    assert failure(client, "session.explode").code == -32601


@pytest.mark.parametrize("method, params, names", [
    ("session.get", {}, "session_id"),
    ("session.attach", {"session_id": "x", "after": -1}, "after"),
    ("session.attach", {"session_id": "x", "after": "7"}, "after"),
    ("prompt.submit", {"session_id": 7, "text": "hi"}, "session_id"),
    ("approval.respond", {"session_id": "x", "request_id": "y", "decision": "maybe"},
     "decision"),
    ("clarify.respond", {"session_id": "x", "request_id": "y", "answers": ["a"]}, "answers"),
])
def test_invalid_params_name_the_param(client: WsClient, method: str, params: dict[str, Any],
                                       names: str) -> None:
    error = failure(client, method, **params)
    assert error.code == -32602 and names in error.message


def test_params_must_be_an_object(client: WsClient) -> None:
    reply = raw(client, '{"jsonrpc": "2.0", "id": 9, "method": "ping", "params": [1]}')
    assert reply["id"] == 9 and reply["error"]["code"] == -32602


def test_tether_errors_have_their_own_codes(client: WsClient, server: LiveServer) -> None:
    assert failure(client, "session.get", session_id="nope").code == -32001
    sid = client.call("session.create")["id"]
    client.call("session.attach", session_id=sid)
    client.call("prompt.submit", session_id=sid, text="$ echo busy")
    busy = failure(client, "prompt.submit", session_id=sid, text="again")
    assert busy.code == -32002 and busy.data == {"code": "session_busy"}
    request = client.events_until(sid, "approval_request")[-1]
    client.call("approval.respond", session_id=sid, request_id=request["request_id"],
                decision="deny")
    again = failure(client, "approval.respond", session_id=sid,
                    request_id=request["request_id"], decision="allow")
    assert again.code == -32003
    assert failure(client, "approval.respond", session_id=sid, request_id="nope",
                   decision="allow").code == -32001
    empty = failure(client, "prompt.submit", session_id=sid, text="   ")
    assert empty.code == -32602 and empty.data == {"code": "bad_request"}
    client.events_until(sid, "turn_end")


def test_batches_follow_the_specification(client: WsClient) -> None:
    replies = raw(client, json.dumps([
        {"jsonrpc": "2.0", "id": "a", "method": "ping"},
        {"jsonrpc": "2.0", "method": "ping"},
        {"jsonrpc": "2.0", "id": "b", "method": "nope"},
        7,
    ]))
    assert [r["id"] for r in replies] == ["a", "b", None]
    assert "result" in replies[0] and replies[1]["error"]["code"] == -32601
    assert replies[2]["error"]["code"] == -32600
    # Notifications only: no reply at all, so the next frame answers the next request.
    client.send_raw(json.dumps([{"jsonrpc": "2.0", "method": "ping"}] * 3))
    assert client.call("ping")["ts"] > 0
    too_many = [{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(101)]
    assert raw(client, json.dumps(too_many))["error"]["code"] == -32600


def test_a_frame_over_one_mebibyte_closes_the_socket(server: LiveServer) -> None:
    with WsClient(server.url) as client:
        client.send_raw(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping",
                                    "params": {"pad": "x" * (1 << 20)}}))
        assert client.close_code() == 1009  # message too big
    # The server is fine.
    with WsClient(server.url) as client:
        assert client.call("ping")["ts"] > 0


def test_plain_http_on_the_socket_url_is_a_json_error(server: LiveServer) -> None:
    response = server.api("GET", "/api/ws")
    assert 400 <= response.status_code < 500
    assert "error" in response.json()


# -- resume and equivalence ----------------------------------------------------------------

def test_a_socket_closed_mid_turn_resumes_with_after_and_misses_nothing(
        server: LiveServer) -> None:
    client = WsClient(server.url)
    sid = client.call("session.create")["id"]
    client.call("session.attach", session_id=sid)
    client.call("prompt.submit", session_id=sid,
                text="$ for i in 1 2 3; do echo $i; sleep 0.3; done")
    before = client.events_until(sid, "approval_request")
    request, seen = before[-1], [e["id"] for e in before]
    client.call("approval.respond", session_id=sid, request_id=request["request_id"],
                decision="allow")
    client.close()  # the turn goes on without any client
    time.sleep(0.5)
    with WsClient(server.url) as again:
        again.call("session.attach", session_id=sid, after=seen[-1])
        rest = again.events_until(sid, "turn_end")
    ids = seen + [e["id"] for e in rest]
    assert ids == list(range(1, ids[-1] + 1))
    assert rest[-1]["reason"] == "completed"


def test_sse_websocket_and_long_poll_see_identical_sequences(server: LiveServer) -> None:
    sid = server.create_session()["id"]
    results: dict[str, list[tuple[int, str]]] = {}
    response = requests.get(f"{server.url}/api/sessions/{sid}/stream", stream=True,
                            headers=AUTH_HEADERS, timeout=(5, 30))
    ws = WsClient(server.url)
    ws.call("session.attach", session_id=sid)

    def read_sse() -> None:
        out = []
        for message in sseclient.SSEClient(response).events():
            if message.event == "message":
                event = json.loads(message.data)
                out.append((event["id"], event["kind"]))
                if event["kind"] == "turn_end":
                    break
        results["sse"] = out

    def read_ws() -> None:
        results["ws"] = [(e["id"], e["kind"]) for e in ws.events_until(sid, "turn_end")]

    def read_poll() -> None:
        after, out = 0, []
        while not out or out[-1][1] != "turn_end":
            page = server.events(sid, after=after, wait=5)
            out += [(e["id"], e["kind"]) for e in page["events"]]
            after = page["last_event_id"]
        results["poll"] = out

    threads = [threading.Thread(target=f) for f in (read_sse, read_ws, read_poll)]
    for thread in threads:
        thread.start()
    server.api("POST", f"/api/sessions/{sid}/prompt", json={"text": "$ echo same"})
    request = server.wait_for_event(sid, "approval_request")
    server.api("POST", f"/api/sessions/{sid}/approvals/{request['request_id']}",
               json={"decision": "allow"})
    for thread in threads:
        thread.join(30)
    response.close()
    ws.close()
    assert results["sse"] == results["ws"] == results["poll"]
    assert [i for i, _ in results["ws"]] == list(range(1, len(results["ws"]) + 1))


def test_sigterm_closes_sockets_with_going_away(tmp_path: Path) -> None:
    server = LiveServer(tmp_path)
    with server:
        client = WsClient(server.url)
        sid = client.call("session.create")["id"]
        client.call("session.attach", session_id=sid)
        client.notification("caught_up")
        started = time.monotonic()
        server.stop()
        assert client.close_code() == 1001  # going away
        assert time.monotonic() - started < 9
        client.close()
