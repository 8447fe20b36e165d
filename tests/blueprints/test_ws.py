"""The WebSocket connection on plain threads, with a fake socket whose writes can block: a
client that stops reading costs no memory and is cut off after the send timeout, while its
session's turn goes on. (Every method and error code over a real socket: tests/e2e/test_ws.py.)
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from simple_websocket import ConnectionClosed

from blueprints import ws as ws_module
from blueprints.ws import Connection
from tether.sessions import SessionRegistry

WAIT = 10  # seconds; every wait in these tests is bounded by it


class StuckSocket:
    """A raw socket whose ``sendall`` blocks while ``stuck`` is set, until ``shutdown``."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.stuck = threading.Event()
        self.shut = threading.Event()
        self.blocked = threading.Event()  # a write is waiting

    def sendall(self, data: bytes) -> None:
        if self.stuck.is_set():
            self.blocked.set()
            self.shut.wait(WAIT)
        if self.shut.is_set():
            raise OSError("socket shut down")
        self.frames.append(data)

    def shutdown(self, how: int) -> None:
        self.shut.set()

    @property
    def shut_down(self) -> bool:
        return self.shut.is_set()


class NulFraming:
    """Stands for wsproto's ``WSConnection.send``: a text message is its bytes and a NUL."""

    def send(self, event: Any) -> bytes:
        return event.data.encode() + b"\0"


class FakeWebSocket:
    """The part of ``simple_websocket.Server`` a :class:`Connection` uses."""

    close_reason, close_message = 1000, ""

    def __init__(self) -> None:
        self.raw = StuckSocket()
        self.sock: Any = self.raw  # the Connection wraps it
        self.ws = NulFraming()
        self.incoming: queue.Queue[str | None] = queue.Queue()
        self.connected = True

    def send(self, text: str) -> None:
        if not self.connected:
            raise ConnectionClosed(1000, "")
        self.sock.send(text.encode() + b"\0")

    def receive(self, timeout: float | None = None) -> str | None:
        try:
            frame = self.incoming.get(timeout=timeout)
        except queue.Empty:
            return None
        if frame is None or self.raw.shut_down:
            raise ConnectionClosed(1000, "")
        return frame

    def close(self, reason: int | None = None, message: str | None = None) -> None:
        self.connected = False

    def request(self, request_id: int, method: str, **params: Any) -> None:
        self.incoming.put(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method,
                                      "params": params}))

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(m) for write in self.raw.frames for m in write.split(b"\0") if m]


@pytest.fixture
def fast_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ws_module, "SEND_TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(ws_module, "WATCHDOG_SECONDS", 0.1)


@pytest.fixture
def running(core: SessionRegistry) -> Iterator[tuple[FakeWebSocket, Connection, threading.Thread]]:
    fake = FakeWebSocket()
    connection = Connection(fake, core, "ws test")
    reader = threading.Thread(target=connection.run, daemon=True)
    reader.start()
    yield fake, connection, reader
    fake.incoming.put(None)
    reader.join(WAIT)


def wait_until(predicate: Any, timeout: float = WAIT) -> bool:
    done = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return True
        done.wait(0.02)
    return predicate()


def test_a_client_that_stops_reading_costs_no_memory_and_is_cut_off(
        core: SessionRegistry, running: Any, fast_timeouts: None) -> None:
    fake, connection, reader = running
    session = core.create()
    fake.request(1, "session.attach", session_id=session.id)
    assert wait_until(lambda: any(m.get("method") == "caught_up" for m in fake.messages()))
    fake.raw.stuck.set()  # the client stops reading
    session.submit("help")  # a turn streams many events
    assert fake.raw.blocked.wait(WAIT)
    assert session.wait_idle(WAIT)
    # Everything the turn wrote is in the log, and nothing per client grew: the feed holds a
    # cursor, the outbox is bounded and empty.
    assert session.log.last_id > 5
    assert connection.outbox.qsize() == 0
    # The write that blocked is cut off after the send timeout; the reader ends.
    reader.join(WAIT)
    assert not reader.is_alive()
    assert connection.closed.is_set()
    assert session.log.read_after(session.log.last_id - 1)[0].kind == "turn_end"


def test_replies_queue_is_bounded_while_the_sender_is_stuck(
        core: SessionRegistry, running: Any, fast_timeouts: None) -> None:
    fake, connection, reader = running
    fake.raw.stuck.set()
    for i in range(ws_module.OUTBOX_SIZE * 3):
        fake.request(i, "ping")
    assert fake.raw.blocked.wait(WAIT)
    assert wait_until(lambda: connection.outbox.full() or not reader.is_alive())
    assert connection.outbox.qsize() <= ws_module.OUTBOX_SIZE


def test_the_attach_reply_precedes_the_replay(core: SessionRegistry, running: Any) -> None:
    fake, _, _ = running
    session = core.create()
    session.submit("help")
    assert session.wait_idle(WAIT)
    fake.request(7, "session.attach", session_id=session.id)
    assert wait_until(lambda: any(m.get("method") == "caught_up" for m in fake.messages()))
    messages = [m for m in fake.messages() if m.get("method") not in ("gateway.ready", "ping")]
    assert messages[0]["id"] == 7 and messages[0]["result"]["last_event_id"] > 0
    ids = [m["params"]["event"]["id"] for m in messages if m.get("method") == "event"]
    assert ids == list(range(1, session.log.last_id + 1))


def test_closing_the_socket_leaves_the_turn_running(core: SessionRegistry,
                                                    running: Any) -> None:
    fake, connection, reader = running
    session = core.create()
    fake.request(1, "session.attach", session_id=session.id)
    fake.request(2, "prompt.submit", session_id=session.id, text="help")
    assert wait_until(lambda: session.turn >= 1)
    fake.incoming.put(None)  # the client goes away
    reader.join(WAIT)
    assert not reader.is_alive()
    assert session.wait_idle(WAIT)
    assert session.log.read_after(session.log.last_id - 1)[0].kind == "turn_end"
    assert connection.feed.attached == []


def test_a_wake_up_s_events_go_out_in_few_writes(core: SessionRegistry, running: Any) -> None:
    # One write per CHUNK_BYTES of frames, not one per event (issue 5: coalesced writes).
    fake, _, _ = running
    session = core.create()
    for n in range(300):
        session.log.append("text_delta", {"text": f"{n:04} " + "x" * 100})
    fake.request(1, "session.attach", session_id=session.id)
    assert wait_until(lambda: any(m.get("method") == "caught_up" for m in fake.messages()))
    writes = [w for w in fake.raw.frames if b'"method":"event"' in w]
    ids = [m["params"]["event"]["id"] for m in fake.messages() if m.get("method") == "event"]
    assert ids == list(range(1, 301))
    replay_bytes = sum(len(w) for w in writes)
    assert len(writes) <= replay_bytes // ws_module.CHUNK_BYTES + 1 < 300
    assert all(len(w) < ws_module.CHUNK_BYTES + 1000 for w in writes)  # one frame past, at most


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frame_is_what_wsproto_frames(size: int) -> None:
    # The shared framing of uncompressed connections (RFC 6455 section 5.2) against wsproto's,
    # which frames compressed connections and parses the client side in the e2e tests.
    from wsproto import ConnectionType
    from wsproto.connection import Connection as WsprotoConnection
    from wsproto.events import TextMessage

    text = ("é" * size)[: size // 2] + "x" * (size - size // 2)
    expected = WsprotoConnection(ConnectionType.SERVER).send(TextMessage(data=text))
    assert ws_module.text_frame(text.encode()) == expected


class Recording:
    """An OS socket stand-in that records what is sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)


def test_held_rest_of_a_shared_write_goes_out_before_anything_else() -> None:
    raw = Recording()
    sends = ws_module._WholeSends(raw)
    assert not sends.busy()
    sends.flush()
    assert raw.sent == []  # nothing held: no write
    sends.hold(b"tail of a frame")
    sends.send(b"pong")
    assert raw.sent == [b"tail of a frame" + b"pong"]
    sends.hold(b"more")
    sends.flush()
    assert raw.sent[-1] == b"more"


def test_a_socket_the_shared_writer_found_failed_ends_the_sender(core: SessionRegistry
                                                                 ) -> None:
    from blueprints.fanout import DirectSocket, Member

    connection = Connection(FakeWebSocket(), core, "ws test")
    member = Member(DirectSocket(None, None, False), 3,  # type: ignore[arg-type]
                    lambda e: b"", lambda: None, failed=True)
    with pytest.raises(ConnectionClosed):
        connection._reclaim([("s", member)])


def test_session_update_auto_approve_is_refused_when_the_server_disables_it(
        make_app: Any) -> None:
    core = make_app(TETHER_ALLOW_AUTO_APPROVE="0").extensions["tether"]
    sid = core.create(title="t").id
    fake = FakeWebSocket()
    reader = threading.Thread(target=Connection(fake, core, "ws test").run, daemon=True)
    reader.start()
    try:
        fake.request(1, "session.update", session_id=sid, auto_approve=True)
        fake.request(2, "session.update", session_id=sid, title="renamed")
        assert wait_until(lambda: {m.get("id") for m in fake.messages()} >= {1, 2})
        replies = {m["id"]: m for m in fake.messages() if m.get("id") in (1, 2)}
        error = replies[1]["error"]
        assert error["code"] == -32007 and error["data"] == {"code": "auto_approve_disabled"}
        assert replies[2]["result"]["title"] == "renamed"
        assert replies[2]["result"]["auto_approve"] is False
    finally:
        fake.incoming.put(None)
        reader.join(WAIT)
