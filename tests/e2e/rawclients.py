"""Raw-socket clients for fault tests, and what /proc says about the server.

Each client owns its TCP socket, so a test can drop it the three ways a network does:
:func:`reset` (RST: ``SO_LINGER`` 0, then close), :func:`fin` (FIN: ``shutdown(SHUT_WR)``,
then close; Linux still sends an RST after the FIN when received bytes were left unread) and a
cut mid-frame (read part of a frame, then close). Parsing is incremental: h11 for HTTP/1.1
(chunked bodies included), wsproto for WebSocket frames, and a small SSE framer, so a partial
frame is visible as such.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from tests.support import TEST_TOKEN

AUTH = ("Authorization", f"Bearer {TEST_TOKEN}")


# -- the server process ------------------------------------------------------------------

def worker_pid(master_pid: int, timeout: float = 10) -> int:
    """The pid of gunicorn's (only) worker, a child of ``master_pid``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(f"/proc/{master_pid}/task/{master_pid}/children") as f:
                children = f.read().split()
        except OSError:
            children = []
        if children:
            return int(children[0])
        if time.monotonic() > deadline:
            raise AssertionError(f"gunicorn {master_pid} has no worker")
        time.sleep(0.05)


#: Ports of the Redis servers tests started (tests/e2e/live.py's ``store_settings``): a worker's
#: connections to them are its Redis pool, which grows on demand to a bounded size (64), not
#: descriptors a client's fault could leak; :func:`fd_count` leaves them out.
REDIS_PORTS: set[int] = set()


def fd_count(pid: int) -> int:
    """Open descriptors of process ``pid``, its connections to a test's Redis left out."""
    names = os.listdir(f"/proc/{pid}/fd")
    if not REDIS_PORTS:
        return len(names)
    pool = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as file:
                rows = file.readlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[2].rsplit(":", 1)[1], 16) in REDIS_PORTS:
                pool.add(f"socket:[{fields[9]}]")
    count = 0
    for name in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") in pool:
                continue
        except OSError:
            continue  # closed meanwhile
        count += 1
    return count


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of ``pid`` from /proc/<pid>/status, in KiB (``VmRSS``, ``VmHWM``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def server_inode(server_port: int, client_port: int) -> int:
    """The inode of the server side of a loopback TCP connection (/proc/net/tcp), to tell
    whether the server still holds that very socket; 0 when there is none."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], int(fields[9])
            if (int(local.split(":")[1], 16) == server_port
                    and int(remote.split(":")[1], 16) == client_port and inode):
                return inode
    return 0


def holds_inode(pid: int, inode: int) -> bool:
    """Whether process ``pid`` has a descriptor on socket ``inode``."""
    target = f"socket:[{inode}]"
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


def settle_fds(pid: int, at_most: int, timeout: float) -> tuple[int, float]:
    """Wait until ``pid`` has at most ``at_most`` descriptors. :returns: (count, seconds)."""
    started = time.monotonic()
    while True:
        count = fd_count(pid)
        waited = time.monotonic() - started
        if count <= at_most or waited > timeout:
            return count, waited
        time.sleep(0.1)


# -- sockets -----------------------------------------------------------------------------

def connect(port: int, rcvbuf: int | None = None, timeout: float = 10) -> socket.socket:
    """A loopback TCP connection; ``rcvbuf`` (bytes) is set before connecting, so the window
    the server sees is small from the start."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    return sock


def reset(sock: socket.socket) -> None:
    """Abort the connection: the peer gets an RST."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def fin(sock: socket.socket) -> None:
    """Close the write side (a FIN), then the socket."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    sock.close()


def http_request(sock: socket.socket, target: str, headers: list[tuple[str, str]] = ()
                 ) -> h11.Connection:
    """Send ``GET target`` with the token; :returns: the h11 connection to read the answer."""
    conn = h11.Connection(h11.CLIENT)
    host = f"127.0.0.1:{sock.getpeername()[1]}"
    request = h11.Request(method="GET", target=target,
                          headers=[("Host", host), AUTH, *headers])
    sock.sendall(conn.send(request) + conn.send(h11.EndOfMessage()))
    return conn


# -- SSE ---------------------------------------------------------------------------------

@dataclass
class SseFrame:
    event: str  # "message" when the frame names none
    id: int | None
    data: str


class SseStream:
    """``GET /api/sessions/<id>/stream`` (or ``path``) on its own socket.

    :meth:`read` returns the frames completed by the next bytes; :attr:`partial` tells whether
    bytes of an unfinished frame are held (a cut now is mid-frame); :attr:`ended` is set at EOF.
    """

    def __init__(self, port: int, path: str, last_event_id: int | None = None,
                 rcvbuf: int | None = None, timeout: float = 10) -> None:
        self.sock = connect(port, rcvbuf, timeout)
        headers = [("Accept", "text/event-stream")]
        if last_event_id is not None:
            headers.append(("Last-Event-ID", str(last_event_id)))
        self.http = http_request(self.sock, path, headers)
        self.status: int | None = None
        self.buffer = b""
        self.ended = False

    @property
    def partial(self) -> bool:
        return bool(self.buffer.strip(b"\n"))

    def read(self, size: int = 65536) -> list[SseFrame]:
        """Receive up to ``size`` bytes and return the frames they complete.

        :raises TimeoutError: nothing arrived within the socket's timeout.
        """
        try:
            data = self.sock.recv(size)
        except ConnectionResetError:
            data = b""
        self.http.receive_data(data)
        frames = []
        while True:
            try:
                event = self.http.next_event()
            except h11.RemoteProtocolError:  # EOF inside a chunk: the server cut the stream
                self.ended = True
                break
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Response):
                self.status = event.status_code
            elif isinstance(event, h11.Data):
                self.buffer += bytes(event.data)
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                self.ended = True
                break
        if not data:
            self.ended = True
        while b"\n\n" in self.buffer:
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            frame = parse_sse(block)
            if frame is not None:
                frames.append(frame)
        return frames

    def close(self) -> None:
        self.sock.close()


def parse_sse(block: bytes) -> SseFrame | None:
    """One SSE block (without its blank line); None for a comment-only or ``retry:`` block."""
    event, event_id, data = "message", None, []
    for line in block.decode().split("\n"):
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            event = value
        elif field == "id":
            event_id = int(value)
        elif field == "data":
            data.append(value)
    if not data:
        return None
    return SseFrame(event, event_id, "\n".join(data))


# -- WebSocket ---------------------------------------------------------------------------

class WsStream:
    """A JSON-RPC WebSocket (``/api/ws``) on its own socket, through wsproto.

    :meth:`read` returns the JSON messages completed by the next bytes; :attr:`partial` tells
    whether part of a message (or of a frame header) is held.
    """

    def __init__(self, port: int, timeout: float = 10) -> None:
        self.sock = connect(port, None, timeout)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(
            host=f"127.0.0.1:{port}", target="/api/ws",
            extra_headers=[(AUTH[0].encode(), AUTH[1].encode())])))
        self.accepted = False
        self.text = ""
        self.fed = 0  # bytes fed since the last complete message
        self.ended = False
        self._ids = 0

    @property
    def partial(self) -> bool:
        return bool(self.text) or self.fed > 0

    def send(self, method: str, params: dict[str, Any]) -> int:
        self._ids += 1
        frame = {"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params}
        self.sock.sendall(self.ws.send(Message(data=json.dumps(frame))))
        return self._ids

    def read(self, size: int = 65536) -> list[dict[str, Any]]:
        try:
            data = self.sock.recv(size)
        except ConnectionResetError:
            data = b""
        if not data:
            self.ended = True
            self.ws.receive_data(None)
        else:
            self.ws.receive_data(data)
            self.fed += len(data)
        out = []
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.accepted = True
                self.fed = 0
            elif isinstance(event, RejectConnection):
                raise AssertionError(f"WebSocket refused: {event.status_code}")
            elif isinstance(event, TextMessage):
                self.text += event.data
                if event.message_finished:
                    out.append(json.loads(self.text))
                    self.text, self.fed = "", 0
            elif isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.ended = True
        return out

    def close(self) -> None:
        self.sock.close()


# -- long-poll ---------------------------------------------------------------------------

class PollRequest:
    """One ``GET`` on its own socket; :meth:`read` until :attr:`done`, then :attr:`json`."""

    def __init__(self, port: int, target: str, timeout: float = 70) -> None:
        self.sock = connect(port, None, timeout)
        self.http = http_request(self.sock, target)
        self.status: int | None = None
        self.body = b""
        self.done = False

    @property
    def partial(self) -> bool:
        return self.status is not None and not self.done

    def read(self, size: int = 65536) -> None:
        data = self.sock.recv(size)
        self.http.receive_data(data)
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Response):
                self.status = event.status_code
            elif isinstance(event, h11.Data):
                self.body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.done = True
                break
        if not data and not self.done:
            raise ConnectionError("the server closed the connection mid-answer")

    def json(self) -> Any:
        return json.loads(self.body)

    def close(self) -> None:
        self.sock.close()
