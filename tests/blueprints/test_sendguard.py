"""The send timeout and dead-peer reaper (blueprints/sendguard.py) on real sockets, with
threads, and the SSE stream's last event when the server stops (in-process)."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from blueprints import sendguard
from blueprints.sendguard import Reaper, stream_socket
from tether.sessions import SessionRegistry


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(server side, client side) of a loopback TCP connection; the client's window is small."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    yield server, client
    server.close()
    client.close()


def test_a_write_stuck_past_the_send_timeout_is_aborted(tcp_pair: Any) -> None:
    server, _client = tcp_pair  # the client never reads
    reaper = Reaper(send_timeout=0.5, sweep_seconds=0.05)
    woken = threading.Event()
    watch = reaper.watch(server, woken.set)
    failure: list[BaseException] = []

    def writer() -> None:
        try:
            while True:
                watch.sending()
                server.sendall(b"x" * 65536)
                watch.sent()
        except OSError as exc:
            failure.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the blocked write was never aborted"
    assert time.monotonic() - started >= 0.5
    assert isinstance(failure[0], BrokenPipeError)  # EPIPE: the quiet error for gunicorn
    # The reaper wakes the stream just after the shutdown that failed the write: on a busy
    # machine the writer's thread can end first.
    assert woken.wait(5)
    assert watch.reason == "stuck" and len(reaper) == 0


def test_a_quiet_healthy_stream_is_left_alone(tcp_pair: Any) -> None:
    server, client = tcp_pair
    reaper = Reaper(send_timeout=0.2, sweep_seconds=60)
    watch = reaper.watch(server, lambda: None)
    server.sendall(b"ping")
    assert client.recv(10) == b"ping"
    time.sleep(0.3)
    assert reaper.sweep() == [] and not watch.aborted and len(reaper) == 1
    reaper.forget(watch)
    assert len(reaper) == 0


@pytest.mark.skipif(sys.platform != "linux", reason="TCP_INFO is Linux's")
@pytest.mark.parametrize("how", ["fin", "rst"])
def test_a_peer_that_closed_is_reaped_at_the_next_sweep(tcp_pair: Any, how: str) -> None:
    server, client = tcp_pair
    reaper = Reaper(sweep_seconds=60)
    woken = threading.Event()
    watch = reaper.watch(server, woken.set)
    if how == "rst":
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    client.close()
    time.sleep(0.1)
    assert reaper.sweep() == [watch]
    assert watch.reason == "closed" and woken.is_set()
    with pytest.raises(OSError):  # shut down: the server's next write fails at once
        for _ in range(3):
            server.sendall(b"event")


def test_half_open_means_unacknowledged_data_for_the_send_timeout(
        tcp_pair: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real half-open peer needs packet loss: tests/e2e/halfopen.py. Here the verdict alone.
    server, _client = tcp_pair
    reaper = Reaper(send_timeout=10)
    watch = sendguard.Watch(server, lambda: None)
    for info, verdict in [((1, 0, 60_000), None),      # idle for a minute, nothing in flight
                          ((1, 3, 9_000), None),       # in flight, acknowledged 9 s ago
                          ((1, 3, 10_500), "half-open"),
                          ((8, 0, 0), "closed"),       # CLOSE_WAIT: the peer sent FIN
                          ((7, 0, 0), "closed")]:      # CLOSE: reset or timed out
        monkeypatch.setattr(sendguard, "tcp_state", lambda sock, info=info: info)
        assert reaper.verdict(watch, time.monotonic()) == verdict, info


def test_a_broken_wake_up_does_not_stop_the_sweep(tcp_pair: Any) -> None:
    server, _client = tcp_pair
    reaper = Reaper(send_timeout=0.0)

    def broken() -> None:
        raise RuntimeError("boom")

    watch = reaper.watch(server, broken)
    watch.sending()
    time.sleep(0.01)
    assert reaper.sweep() == [watch] and watch.reason == "stuck"


def test_stream_socket_finds_each_servers_socket() -> None:
    marker = object()

    class Raw:
        _sock = marker

    class Stream:
        raw = Raw()

    class Input:
        rfile = Stream()

    assert stream_socket({"gunicorn.socket": marker}) is marker
    assert stream_socket({"werkzeug.socket": marker}) is marker
    assert stream_socket({"SERVER_SOFTWARE": "gevent/26.9 Python/3.11",
                          "wsgi.input": Input()}) is marker
    assert stream_socket({"wsgi.input": Input()}) is None  # the Flask test client


def test_socket_options_are_best_effort(tcp_pair: Any) -> None:
    server, _client = tcp_pair
    if sys.platform == "linux":
        assert sendguard.set_user_timeout(server, 10)
        assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 10_000
        assert sendguard.limit_unsent(server, 65536)
        assert sendguard.tcp_state(server)[0] == 1  # ESTABLISHED
    assert not sendguard.set_user_timeout(None)
    assert not sendguard.limit_unsent(object())
    assert sendguard.tcp_state(object()) is None


# -- the SSE stream's end ----------------------------------------------------------------

def blocks(response: Any) -> list[str]:
    body = b"".join(response.response).decode()
    return [block for block in body.split("\n\n") if block]


def test_a_stream_ends_with_a_shutdown_event_when_the_server_stops(
        client: FlaskClient, core: SessionRegistry) -> None:
    sid = client.post("/api/sessions").get_json()["id"]
    core.get(sid).log.append("text", {"text": "hello"})
    response = client.get(f"/api/sessions/{sid}/stream?inbox=1", buffered=False)
    inbox = client.get("/api/inbox/stream", buffered=False)
    threading.Timer(0.3, core.shutdown).start()
    session_blocks, inbox_blocks = blocks(response), blocks(inbox)
    for stream in (session_blocks, inbox_blocks):
        assert stream[-1] == 'event: shutdown\ndata: {"reason":"server stopping"}'
    assert any(b.startswith("id: 1\n") for b in session_blocks)


def test_a_deleted_sessions_stream_ends_without_one(client: FlaskClient) -> None:
    sid = client.post("/api/sessions").get_json()["id"]
    response = client.get(f"/api/sessions/{sid}/stream", buffered=False)
    threading.Timer(0.3, lambda: client.delete(f"/api/sessions/{sid}")).start()
    ended = blocks(response)
    assert ended[-1].startswith("event: caught-up")
    assert not any("shutdown" in b for b in ended)


# -- a blocked write pauses the stream's feed ------------------------------------------------

def test_only_a_write_under_way_past_the_threshold_is_blocked(tcp_pair: Any) -> None:
    server, _client = tcp_pair
    reaper = Reaper(sweep_seconds=60, blocked_seconds=0.05)
    calls: list[str] = []
    watch = reaper.watch(server, lambda: None, lambda: calls.append("pause"),
                         lambda: calls.append("resume"))
    now = time.monotonic()
    assert reaper.block(now + 10) == []  # no write under way: idle streams are not looked at
    watch.sending()
    assert reaper.block(time.monotonic()) == []  # under way, but not for long
    watch.sent()
    assert calls == []  # a write that did not block costs no pause and no resume
    watch.sending()
    assert reaper.block(time.monotonic() + 0.1) == [watch] and watch.blocked
    assert reaper.block(time.monotonic() + 0.2) == []  # once per write
    assert calls == ["pause"]
    watch.sent()
    assert calls == ["pause", "resume"] and not watch.blocked
    watch.sending()
    reaper.forget(watch)  # the stream ended inside a write
    assert reaper.block(time.monotonic() + 10) == []


# -- the keepalive clock ----------------------------------------------------------------------

def test_on_idle_runs_when_no_write_started_for_the_idle_time(tcp_pair: Any) -> None:
    server, _client = tcp_pair
    reaper = Reaper(sweep_seconds=60)
    ticks: list[str] = []
    quiet = reaper.watch(server, lambda: None, on_idle=lambda: ticks.append("quiet"),
                         idle_seconds=1.0)
    busy = reaper.watch(server, lambda: None, on_idle=lambda: ticks.append("busy"),
                        idle_seconds=1.0)
    start = quiet.last_write
    assert reaper.idle(start + 0.5) == [] and ticks == []
    busy.sending()  # a write starts 0.9 s in (the clock reads it when the watch is due)
    busy._since = start + 0.9
    busy.sent()
    assert busy.last_write == start + 0.9
    assert reaper.idle(start + 1.05) == [quiet] and ticks == ["quiet"]
    assert reaper.idle(start + 1.5) == []  # busy is due at 1.9, quiet again at 2.05
    assert reaper.idle(start + 1.95) == [busy]
    assert reaper.idle(start + 2.1) == [quiet]
    reaper.forget(quiet)
    assert reaper.idle(start + 10) == [busy]  # a forgotten watch is dropped from the clock
    assert ticks == ["quiet", "busy", "quiet", "busy"]
    assert len(reaper._idle) == 1
