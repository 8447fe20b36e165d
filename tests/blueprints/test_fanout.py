"""The shared writer: one per session, writing the live tail of caught-up streams without
blocking, and handing a stream back when its socket does not take a whole write."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from blueprints import fanout
from blueprints.fanout import DirectSocket, Fanout, Member, SessionWriter, direct_socket
from tether import sse
from tether.events import Event
from tether.metrics import Metrics
from tether.stores.memory import MemoryEventLog


def frame(event: Event) -> bytes:
    return sse.event_frame(event.id, event.data)


def fill(log: MemoryEventLog, count: int, size: int = 10) -> None:
    for _ in range(count):
        log.append("text_delta", {"text": "x" * size})


class Pair:
    """A connected pair: ``server`` (non-blocking, the writer's side) and ``client``."""

    def __init__(self) -> None:
        self.server, self.client = socket.socketpair()
        self.server.setblocking(False)
        self.client.settimeout(5)

    def read(self, nbytes: int) -> bytes:
        got = b""
        while len(got) < nbytes:
            chunk = self.client.recv(nbytes - len(got))
            assert chunk, "closed"
            got += chunk
        return got

    def fill_up(self) -> None:
        """Fill the server's send buffer until a send would block."""
        while True:
            try:
                self.server.send(b"\0" * 65536)
            except BlockingIOError:
                return

    def close(self) -> None:
        self.server.close()
        self.client.close()


@pytest.fixture
def pairs() -> Iterator[list[Pair]]:
    made: list[Pair] = []
    yield made
    for pair in made:
        pair.close()


def member(pairs: list[Pair], cursor: int = 0, chunked: bool = True,
           metrics: Metrics | None = None) -> tuple[Member, Pair, list[str]]:
    pair = Pair()
    pairs.append(pair)
    woken: list[str] = []
    m = Member(DirectSocket(pair.server, pair.server, chunked), cursor, frame,
               lambda: woken.append("woken"), metrics=metrics)
    return m, pair, woken


def writer_with(log: MemoryEventLog, *members: Member) -> SessionWriter:
    writer = SessionWriter(log, Fanout())
    for m in members:
        writer.members[m] = None
        m.writer = writer
    return writer


def frames(log: MemoryEventLog, after: int = 0) -> bytes:
    return b"".join(frame(e) for e in log.read_after(after))


def chunk(payload: bytes) -> bytes:
    return b"%X\r\n%s\r\n" % (len(payload), payload)


def test_one_round_writes_the_same_chunk_to_every_member(pairs: list[Pair]) -> None:
    log = MemoryEventLog("s")
    metrics = Metrics()
    a, pa, _ = member(pairs, metrics=metrics)
    b, pb, _ = member(pairs, metrics=metrics)
    writer = writer_with(log, a, b)
    fill(log, 3)
    assert writer.write() == 2
    want = chunk(frames(log))
    assert pa.read(len(want)) == want
    assert pb.read(len(want)) == want
    assert (a.cursor, b.cursor) == (3, 3)
    assert metrics.registry.get_sample_value(
        "tether_events_delivered_total", {"transport": "sse"}) == 6
    assert metrics.registry.get_sample_value(
        "tether_delivery_latency_seconds_count", {"transport": "sse"}) == 2
    assert writer.write() == 0  # nothing new


def test_http_1_0_streams_get_the_frames_unchunked(pairs: list[Pair]) -> None:
    log = MemoryEventLog("s")
    raw, pair, _ = member(pairs, chunked=False)
    writer = writer_with(log, raw)
    fill(log, 2)
    writer.write()
    want = frames(log)
    assert pair.read(len(want)) == want


def test_members_at_different_cursors_get_what_each_lacks(pairs: list[Pair]) -> None:
    log = MemoryEventLog("s")
    fill(log, 5)
    behind, pb, _ = member(pairs, cursor=2)
    ahead, pa, _ = member(pairs, cursor=4)
    done, pd, _ = member(pairs, cursor=5)
    writer = writer_with(log, behind, ahead, done)
    assert writer.write() == 2
    assert pb.read(len(chunk(frames(log, 2)))) == chunk(frames(log, 2))
    assert pa.read(len(chunk(frames(log, 4)))) == chunk(frames(log, 4))
    pd.client.settimeout(0.05)
    with pytest.raises(TimeoutError):
        pd.client.recv(1)
    assert [m.cursor for m in (behind, ahead, done)] == [5, 5, 5]


def test_a_burst_is_written_in_rounds_of_bounded_size(pairs: list[Pair]) -> None:
    log = MemoryEventLog("s")
    m, pair, _ = member(pairs)
    writer = writer_with(log, m)
    fill(log, 100, size=1000)
    pair.client.settimeout(1)  # about 110 KB: the socket pair's buffer holds it all
    rounds = 0
    while writer.write():
        rounds += 1
        writer.flag.clear()
    assert m.cursor == 100 and m in writer.members
    assert rounds > 1 and not writer.flag.is_set()
    data = b""
    try:
        while True:
            data += pair.client.recv(1 << 20)
    except TimeoutError:
        pass
    body, rest, largest = b"", data, 0
    while rest:  # each round is one chunk of at most WRITE_BYTES plus one frame
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        largest = max(largest, n)
        body, rest = body + rest[:n], rest[n + 2:]
    assert body == frames(log)
    assert fanout.WRITE_BYTES <= largest < fanout.WRITE_BYTES + 1200


def test_more_than_one_round_sets_the_flag_again(pairs: list[Pair]) -> None:
    log = MemoryEventLog("s")
    m, _, _ = member(pairs)
    writer = writer_with(log, m)
    fill(log, 40, size=1000)
    writer.write()
    assert writer.flag.is_set()
    assert 0 < m.cursor < 40


def test_a_full_socket_hands_the_member_back_with_its_cursor_kept(pairs: list[Pair]) -> None:
    log = MemoryEventLog("s")
    slow, ps, woken = member(pairs)
    fast, pf, _ = member(pairs)
    writer = writer_with(log, slow, fast)
    ps.fill_up()
    fill(log, 2)
    assert writer.write() == 1
    assert woken == ["woken"]
    assert slow not in writer.members and slow.writer is None
    assert (slow.cursor, slow.pending) == (0, b"")
    assert fast.cursor == 2 and fast in writer.members
    assert pf.read(len(chunk(frames(log)))) == chunk(frames(log))


class TakesPart:
    """An OS socket stand-in whose next send takes only ``room`` bytes."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.got = b""

    def send(self, data: bytes) -> int:
        taken = data[:self.room]
        self.got += taken
        self.room -= len(taken)
        return len(taken)


def test_a_partial_write_hands_the_rest_to_the_stream() -> None:
    log = MemoryEventLog("s")
    raw = TakesPart(room=100)
    woken: list[str] = []
    m = Member(DirectSocket(raw, raw, True), 0, frame,  # type: ignore[arg-type]
               lambda: woken.append("woken"))
    writer = writer_with(log, m)
    fill(log, 5)
    writer.write()
    assert woken == ["woken"] and m.writer is None
    assert m.cursor == 5  # the rest is the stream's to write, then it goes on from 5
    assert len(raw.got) == 100
    assert raw.got + m.pending == chunk(frames(log))


def test_a_failed_socket_marks_the_member_failed(pairs: list[Pair]) -> None:
    log = MemoryEventLog("s")
    m, pair, woken = member(pairs)
    writer = writer_with(log, m)
    pair.client.close()
    fill(log, 1)
    assert writer.write() == 0
    assert m.failed and woken == ["woken"] and not writer.members


def test_a_closed_log_hands_every_member_back_once_written(pairs: list[Pair]) -> None:
    log = MemoryEventLog("s")
    a, pa, woken_a = member(pairs)
    b, _, woken_b = member(pairs, cursor=1)
    writer = writer_with(log, a, b)
    fill(log, 1)
    log.close()
    assert writer.write() == 1  # a gets event 1 first
    assert a.cursor == 1 and woken_a == []
    assert writer.write() == 0
    assert woken_a == woken_b == ["woken"] and not writer.members
    assert pa.read(len(chunk(frames(log)))) == chunk(frames(log))


def test_join_starts_a_writer_that_writes_until_leave_and_then_retires(pairs: list[Pair]
                                                                      ) -> None:
    log = MemoryEventLog("s")
    fan = Fanout()
    m, pair, _ = member(pairs)
    fan.join(log, m)
    assert fan.members == 1
    fill(log, 3)
    want = chunk(frames(log))
    got = b""
    while len(got) < len(want):  # rounds may split it
        got += pair.client.recv(65536)
    assert m.cursor == 3
    assert fan.leave(m) == (3, b"")
    assert m.writer is None and fan.members == 0
    deadline = time.monotonic() + 5
    while fan._writers and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not fan._writers  # retired
    assert log._wakeup.watchers == 0
    assert fan.leave(m) == (3, b"")  # idempotent


def test_join_behind_the_log_is_written_at_once(pairs: list[Pair]) -> None:
    log = MemoryEventLog("s")
    fill(log, 2)
    fan = Fanout()
    m, pair, _ = member(pairs, cursor=1)
    fan.join(log, m)
    want = chunk(frames(log, 1))
    assert pair.read(len(want)) == want
    fan.leave(m)


class _Wrapped:
    """A server socket as gevent's looks to direct_socket: the OS socket under ``_sock``."""

    def __init__(self, raw: socket.socket) -> None:
        self._sock = raw


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> None:
    from gevent import monkey
    monkeypatch.setattr(monkey, "is_module_patched", lambda name: True)


def environ(sock: Any, **extra: Any) -> dict[str, Any]:
    return {"gunicorn.socket": sock, "REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1",
            **extra}


def test_direct_socket_under_gunicorn_and_gevent(patched: None, pairs: list[Pair]) -> None:
    pair = Pair()
    pairs.append(pair)
    wrapped = _Wrapped(pair.server)
    direct = direct_socket(environ(wrapped))
    assert direct == DirectSocket(wrapped, pair.server, chunked=True)
    http10 = direct_socket(environ(wrapped, SERVER_PROTOCOL="HTTP/1.0"))
    assert http10 is not None and not http10.chunked


def test_no_direct_socket_where_it_is_not_sound(patched: None, pairs: list[Pair]) -> None:
    pair = Pair()
    pairs.append(pair)
    assert direct_socket({}) is None  # not gunicorn (the test client, werkzeug, pywsgi)
    assert direct_socket(environ(pair.server)) is None  # not gevent's socket
    assert direct_socket(environ(_Wrapped(pair.server), REQUEST_METHOD="HEAD")) is None
    tls = _Wrapped(pair.server)
    tls.cipher = lambda: None  # type: ignore[attr-defined]
    assert direct_socket(environ(tls)) is None
    blocking = Pair()
    pairs.append(blocking)
    blocking.server.setblocking(True)
    assert direct_socket(environ(_Wrapped(blocking.server))) is None
    # HTTP/2 (gunicorn's h2c): one socket carries every stream, in frames of its own.
    h2 = _Wrapped(pair.server)
    assert direct_socket(environ(h2, SERVER_PROTOCOL="HTTP/2.0", HTTP_VERSION="2")) is None
    assert direct_socket(environ(h2, SERVER_PROTOCOL="HTTP/2.0")) is None
    assert direct_socket(environ(h2, HTTP_VERSION="2")) is None
    assert direct_socket(environ(h2, SERVER_PROTOCOL="")) is None


def test_no_direct_socket_without_gevent_threads(pairs: list[Pair]) -> None:
    from gevent import monkey
    pair = Pair()
    pairs.append(pair)
    if monkey.is_module_patched("threading"):
        pytest.skip("this test process is monkey-patched")
    assert direct_socket(environ(_Wrapped(pair.server))) is None


def test_leave_of_a_member_never_joined_is_harmless(pairs: list[Pair]) -> None:
    m, _, _ = member(pairs, cursor=7)
    assert Fanout().leave(m) == (7, b"")


def test_a_member_whose_socket_is_busy_is_handed_back_unwritten(pairs: list[Pair]) -> None:
    log = MemoryEventLog("s")
    busy, pb, woken = member(pairs)
    busy.busy = lambda: True  # a control frame's write is under way on it
    free, pf, _ = member(pairs)
    free.busy = lambda: False
    writer = writer_with(log, busy, free)
    fill(log, 1)
    assert writer.write() == 1
    assert woken == ["woken"] and busy.cursor == 0 and busy.pending == b""
    pb.client.settimeout(0.05)
    with pytest.raises(TimeoutError):
        pb.client.recv(1)
    assert pf.read(len(chunk(frames(log)))) == chunk(frames(log))


def test_a_partial_write_goes_to_hold_where_the_socket_has_other_writers() -> None:
    log = MemoryEventLog("s")
    raw = TakesPart(room=10)
    held: list[bytes] = []
    m = Member(DirectSocket(raw, raw, False), 0, frame,  # type: ignore[arg-type]
               lambda: None, hold=held.append)
    writer = writer_with(log, m)
    fill(log, 2)
    writer.write()
    assert m.pending == b"" and held == [frames(log)[10:]]
