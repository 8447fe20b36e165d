"""The SSE stream in-process: framing, replay, resume, caught-up, keepalive, reset."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from greenlet import greenlet

from blueprints.sse import RELEASE_BYTES, ShallowStreams
from tether.sessions import SessionRegistry


def fill(core: SessionRegistry, sid: str, count: int) -> None:
    log = core.get(sid).log
    for i in range(count):
        log.append("text", {"text": f"event {i + 1}"})


def frames(response: Any) -> Iterator[str]:
    """Yield SSE blocks (separated by a blank line) as text."""
    buffer = ""
    for chunk in response.response:
        buffer += chunk.decode()
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            yield block


def live(response: Any) -> Iterator[str]:
    """The stream's blocks after ``caught-up``: the live tail."""
    stream = frames(response)
    for block in stream:
        if "caught-up" in block:
            return stream
    raise AssertionError("stream ended before caught-up")


def read_until(response: Any, marker: str) -> list[str]:
    out = []
    for block in frames(response):
        out.append(block)
        if marker in block:
            return out
    raise AssertionError(f"stream ended before {marker!r}")


@pytest.fixture
def sid(client: FlaskClient, core: SessionRegistry) -> str:
    sid = client.post("/api/sessions").get_json()["id"]
    fill(core, sid, 5)
    return sid


def test_stream_headers_and_full_replay(client: FlaskClient, sid: str, core) -> None:
    response = client.get(f"/api/sessions/{sid}/stream", buffered=False)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Accel-Buffering"] == "no"
    blocks = read_until(response, "event: caught-up")
    response.close()
    assert blocks[0] == "retry: 2000"
    assert blocks[1].startswith("id: 1\ndata: {")
    ids = [int(b.split("\n")[0][4:]) for b in blocks if b.startswith("id: ")]
    assert ids == [1, 2, 3, 4, 5]
    data = json.loads(blocks[1].split("\n")[1][6:])
    assert data["kind"] == "text" and data["id"] == 1
    assert blocks[-1] == ('event: caught-up\ndata: {"last_event_id":5,"epoch":"'
                          + core.epoch + '"}')


def test_after_replays_only_newer_events(client: FlaskClient, sid: str) -> None:
    response = client.get(f"/api/sessions/{sid}/stream?after=3", buffered=False)
    blocks = read_until(response, "caught-up")
    response.close()
    assert [b.split("\n")[0] for b in blocks if b.startswith("id:")] == ["id: 4", "id: 5"]


def test_last_event_id_wins_over_after(client: FlaskClient, sid: str) -> None:
    response = client.get(f"/api/sessions/{sid}/stream?after=1", buffered=False,
                          headers={"Last-Event-ID": "4"})
    blocks = read_until(response, "caught-up")
    response.close()
    assert [b.split("\n")[0] for b in blocks if b.startswith("id:")] == ["id: 5"]


def test_live_tail_after_caught_up(client: FlaskClient, sid: str, core) -> None:
    response = client.get(f"/api/sessions/{sid}/stream?after=5", buffered=False)
    stream = live(response)
    threading.Timer(0.05, fill, (core, sid, 1)).start()
    block = next(stream)
    response.close()
    assert block.startswith("id: 6\ndata: ")


def test_keepalive_when_idle(make_app: Any) -> None:
    app = make_app(TETHER_KEEPALIVE=0.05)
    client = app.test_client()
    sid = client.post("/api/sessions").get_json()["id"]
    response = client.get(f"/api/sessions/{sid}/stream", buffered=False)
    blocks = read_until(response, "event: ping")
    response.close()
    assert ": keepalive" in blocks
    ping = blocks[-1]
    assert ping.startswith("event: ping\ndata: {\"ts\":") and "id:" not in ping


@pytest.mark.parametrize("query, headers", [("?after=99", {}), ("", {"Last-Event-ID": "6"}),
                                            ("?epoch=stale", {})])
def test_cursor_past_the_end_or_stale_epoch_resets(client: FlaskClient, sid: str,
                                                   query: str, headers: dict[str, str],
                                                   core) -> None:
    response = client.get(f"/api/sessions/{sid}/stream{query}", buffered=False,
                          headers=headers)
    blocks = read_until(response, "caught-up")
    response.close()
    assert blocks[1] == ('event: reset\ndata: {"epoch":"' + core.epoch
                         + '","last_event_id":5}')
    assert [b.split("\n")[0] for b in blocks if b.startswith("id:")][0] == "id: 1"


@pytest.mark.parametrize("query, headers, field", [
    ("?after=abc", {}, "after"), ("?after=-1", {}, "after"), ("?after=%2B7", {}, "after"),
    ("?after=", {}, "after"), ("", {"Last-Event-ID": "1.5"}, "Last-Event-ID"),
    ("?after=2", {"Last-Event-ID": "x"}, "Last-Event-ID"),
])
def test_bad_cursor_is_400_naming_it(client: FlaskClient, sid: str, query: str,
                                     headers: dict[str, str], field: str) -> None:
    response = client.get(f"/api/sessions/{sid}/stream{query}", headers=headers)
    assert response.status_code == 400
    assert field in response.get_json()["error"]["message"]


def test_stream_ends_when_the_session_is_deleted(client: FlaskClient, sid: str, core) -> None:
    response = client.get(f"/api/sessions/{sid}/stream", buffered=False)
    stream = live(response)
    threading.Timer(0.05, core.delete, (sid,)).start()
    assert list(stream) == []


def wsgi_environ(method: str, path: str) -> dict[str, Any]:
    return {"REQUEST_METHOD": method, "PATH_INFO": path}


def test_a_stream_is_dispatched_in_a_greenlet_of_its_own_and_nothing_else_is() -> None:
    seen: list[greenlet] = []

    def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(greenlet.getcurrent())
        start_response("200 OK", [])
        return [environ["PATH_INFO"].encode()]

    app, here, started = ShallowStreams(inner), greenlet.getcurrent(), []
    for path in ("/api/sessions/s1/stream", "/api/inbox/stream"):
        seen.clear()
        assert app(wsgi_environ("GET", path), lambda *args: started.append(args)) == [
            path.encode()]
        (child,) = seen
        # Run at once, by a child of the caller that ended before the body came back.
        assert child is not here and child.parent is here and child.dead
    for method, path in (("GET", "/api/sessions/s1/events"), ("GET", "/api/ws"),
                         ("POST", "/api/sessions/s1/stream"), ("HEAD", "/api/inbox/stream")):
        seen.clear()
        assert app(wsgi_environ(method, path), lambda *args: started.append(args)) == [
            path.encode()]
        assert seen == [here]
    assert len(started) == 6


def test_a_stream_dispatch_that_raises_raises_in_the_caller() -> None:
    def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("broken view")

    with pytest.raises(RuntimeError, match="broken view"):
        ShallowStreams(inner)(wsgi_environ("GET", "/api/inbox/stream"), lambda *args: None)


def test_the_app_dispatches_its_streams_apart(app: Flask, client: FlaskClient) -> None:
    where: dict[str, greenlet] = {}
    app.before_request(lambda: where.__setitem__(request.path, greenlet.getcurrent()))
    sid = client.post("/api/sessions").get_json()["id"]
    response = client.get(f"/api/sessions/{sid}/stream", buffered=False)
    read_until(response, "caught-up")
    response.close()
    assert client.get(f"/api/sessions/{sid}").status_code == 200
    here = greenlet.getcurrent()
    assert where[f"/api/sessions/{sid}"] is here
    assert where[f"/api/sessions/{sid}/stream"] is not here


def test_a_large_write_is_followed_by_an_empty_chunk_so_the_server_drops_it(
        client: FlaskClient, sid: str, core) -> None:
    fill(core, sid, 2 * RELEASE_BYTES // 100)  # a replay of about twice RELEASE_BYTES
    response = client.get(f"/api/sessions/{sid}/stream", buffered=False)
    chunks = iter(response.response)
    assert next(chunks) == b"retry: 2000\n\n"  # small: no empty chunk after it
    replay = next(chunks)
    assert len(replay) > RELEASE_BYTES and replay.endswith(b"\n\n")
    assert b"event: caught-up" in replay
    assert next(chunks) == b""
    core.get(sid).log.append("text", {"text": "live"})
    live_chunk = next(chunks)
    assert live_chunk.startswith(b"id: ") and len(live_chunk) < RELEASE_BYTES
    response.close()
