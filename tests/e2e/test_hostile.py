"""Hostile and broken input (issue 4): one table of malformed inputs against a real gunicorn
server, on every route, the SSE and poll endpoints, the WebSocket and raw HTTP framing.

Each row is an input, its transport, the documented answer (an HTTP status and error code, a
JSON-RPC error code, a WebSocket close code) and why (docs/protocol.md "Limits"). The rows run
in order against one module-scoped server while a *witness* session keeps a turn in flight
(the local agent streaming its help text word by word, turn after turn). After every row the
server must answer ``/healthz`` and the witness's long-poll must advance; at the end every
event the witness's SSE stream and its WebSocket received is checked exactly (ids 1..N, no
gap, no duplicate) with ``tally.check_exact``.

Three inputs need a server of their own and are tests below the table: 10,000 sessions
created in a loop (``TETHER_MAX_SESSIONS``), 10,000 open streams (gunicorn's
``worker_connections``), and bodies trickled past a short ``TETHER_BODY_TIMEOUT``.
"""

from __future__ import annotations

import json
import resource
import select
import selectors
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import pytest
import requests
import sseclient
import websocket

from tests.e2e.live import STORES, LiveServer, store_settings
from tests.e2e.wsclient import WsClient
from tests.support import AUTH_HEADERS, TEST_TOKEN, Tally

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

#: Seconds between the local agent's words: the witness's turn streams for a few seconds.
WORD_DELAY = 0.05
#: Seconds an approval waits before it expires (the "expired request id" rows).
PROMPT_TIMEOUT = 2
AUTH = f"Authorization: Bearer {TEST_TOKEN}\r\n".encode()


# -- the witness: a turn in flight during the whole table -----------------------------------

class Witness:
    """A session kept busy by a driver thread (one help-text turn after another), read the
    whole time over SSE and over the WebSocket, and long-polled after every row."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.sid = server.create_session(title="witness")["id"]
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.sse_ids: list[int] = []
        self.ws_ids: list[int] = []
        self.turns = 0
        self.polled = 0
        self._ws = WsClient(server.url)
        self._ws.call("session.attach", session_id=self.sid)
        self._sse = requests.get(f"{server.url}/api/sessions/{self.sid}/stream",
                                 headers=AUTH_HEADERS, stream=True, timeout=(10, 120))
        assert self._sse.status_code == 200
        self.threads = [threading.Thread(target=self._guard(f), daemon=True)
                        for f in (self._drive, self._read_sse, self._read_ws)]
        for thread in self.threads:
            thread.start()
        self.wait_advance()  # the first turn is streaming

    def _guard(self, function: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                function()
            except BaseException as exc:  # reported by check() and finish()
                self.errors.append(exc)
        return run

    def _drive(self) -> None:
        after = 0
        while not self.stop.is_set():
            response = self.server.api("POST", f"/api/sessions/{self.sid}/prompt",
                                       json={"text": "hello"}, timeout=120)
            assert response.status_code == 202, response.text
            self.turns += 1
            while True:
                page = self.server.events(self.sid, after, wait=10)
                after = page["last_event_id"]
                if any(e["kind"] == "turn_end" for e in page["events"]):
                    break

    def _read_sse(self) -> None:
        for message in sseclient.SSEClient(self._sse).events():
            if message.event == "message":
                self.sse_ids.append(int(message.id))

    def _read_ws(self) -> None:
        self._ws.socket.settimeout(1)
        while not self.stop.is_set() or not self.ws_ids or self.ws_ids[-1] < self.target:
            try:
                message = json.loads(self._ws.socket.recv())
            except websocket.WebSocketTimeoutException:
                continue
            if message.get("method") == "event":
                self.ws_ids.append(message["params"]["event"]["id"])

    target = 1 << 62  # the last id, once the driver stopped

    def wait_advance(self) -> None:
        """Long-poll the witness until an event newer than the last one seen arrives."""
        page = self.server.events(self.sid, self.polled, wait=30)
        assert page["events"], f"the witness session did not advance past {self.polled} in 30 s"
        self.polled = page["last_event_id"]

    def check(self) -> None:
        """The server answers, and the turn in flight on another session goes on."""
        assert not self.errors, f"a witness thread failed: {self.errors[0]!r}"
        health = requests.get(f"{self.server.url}/healthz", timeout=30)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        self.wait_advance()

    def close(self) -> None:
        """Stop the threads and release the connections (idempotent)."""
        self.stop.set()
        self.target = 0
        self._sse.close()
        self._ws.close()
        for thread in self.threads:
            thread.join(30)

    def finish(self, tally: Tally) -> None:
        """Stop driving, let the last turn end, and check both readers got exactly 1..N."""
        self.stop.set()
        self.threads[0].join(120)
        last = self.server.api("GET", f"/api/sessions/{self.sid}").json()
        assert last["state"] == "idle", last
        self.target = last["last_event_id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
                len(self.sse_ids) < self.target or len(self.ws_ids) < self.target):
            time.sleep(0.1)
        expected = list(range(1, self.target + 1))
        self.target_seen = self.target
        errors = list(self.errors)  # before closing, which ends the readers with errors
        self.close()
        assert not errors, f"a witness thread failed: {errors[0]!r}"
        tally.check_exact(expected, self.sse_ids)
        tally.check_exact(expected, self.ws_ids)
        # The last turn in flight ended normally: its last event is a completed turn_end.
        last_event = self.server.events(self.sid, self.target_seen - 1)["events"][-1]
        assert (last_event["kind"], last_event["reason"]) == ("turn_end", "completed")


# -- the context the rows run in --------------------------------------------------------------

@dataclass
class Ctx:
    server: LiveServer
    idle: str  # a session that stays idle: every prompt sent to it is refused
    quiet: str  # a session with one finished turn (more than 8 events)
    quiet_last: int

    def path(self, template: str) -> str:
        return template.format(idle=self.idle, quiet=self.quiet, unknown="0" * 32)


def outcome(response: requests.Response) -> str:
    """``"404 not_found"`` for a Tether error (checking its shape), else the status."""
    if response.headers.get("Content-Type", "").startswith("application/json") and \
            response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"code", "message"} and error["message"], error
        return f"{response.status_code} {error['code']}"
    return str(response.status_code)


def http(method: str, template: str, **kwargs: Any) -> Callable[[Ctx], str]:
    def run(ctx: Ctx) -> str:
        kwargs.setdefault("timeout", 30)
        return outcome(ctx.server.api(method, ctx.path(template), **kwargs))
    return run


def body(method: str, template: str, data: bytes | str,
         content_type: str | None = "application/json") -> Callable[[Ctx], str]:
    """Send ``data`` as the raw body (no JSON encoding by the client)."""
    headers = {"Content-Type": content_type} if content_type else {}
    raw = data.encode() if isinstance(data, str) else data
    return http(method, template, data=raw, headers=headers)


def first_stream_id(response: requests.Response) -> str:
    """``"200 from N"``: the id of the first replayed event, or ``"200 empty"``."""
    assert response.headers["Content-Type"].startswith("text/event-stream")
    first = "empty"
    for message in sseclient.SSEClient(response).events():
        if message.event == "message" and first == "empty":
            first = str(json.loads(message.data)["id"])
        if message.event == "caught-up":
            break
    response.close()
    return f"200 from {first}"


def sse(query: str, last_event_id: str | None = None) -> Callable[[Ctx], str]:
    def run(ctx: Ctx) -> str:
        headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
        response = ctx.server.api("GET", ctx.path("/api/sessions/{quiet}/stream") + query,
                                  headers=headers, stream=True, timeout=(10, 30))
        return first_stream_id(response) if response.status_code == 200 else outcome(response)
    return run


# -- raw HTTP -----------------------------------------------------------------------------

def raw_request(port: int, data: bytes, *, timeout: float = 30, read_body: bool = False
                ) -> bytes:
    """Send ``data`` (from a second thread, so a server that answers early is heard) and read
    until the server closes or the answer's head is complete; the bytes read."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def send() -> None:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server answered and closed before reading everything: that is fine

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    got = b""
    try:
        while b"\r\n\r\n" not in got or (read_body and not got.rstrip().endswith(b"}")):
            part = sock.recv(65536)
            if not part:
                break
            got += part
    except ConnectionResetError:
        pass
    finally:
        sock.close()
        sender.join(timeout)
    return got


def status_of(head: bytes) -> str:
    if not head.startswith(b"HTTP/1."):
        return f"no answer ({head[:40]!r})"
    return head.split(b" ", 2)[1].decode()


def raw(data: bytes) -> Callable[[Ctx], str]:
    return lambda ctx: status_of(raw_request(ctx.server.port, data))


def stream_head(template: str, extra_headers: bytes) -> Callable[[Ctx], str]:
    """A raw ``GET`` of a stream with extra header bytes; ``"400"``, or ``"200 from N"``."""
    def run(ctx: Ctx) -> str:
        request = (f"GET {ctx.path(template)} HTTP/1.1\r\nHost: localhost\r\n".encode() + AUTH
                   + extra_headers + b"Connection: close\r\n\r\n")
        sock = socket.create_connection(("127.0.0.1", ctx.server.port), timeout=30)
        with sock:
            sock.sendall(request)
            got = b""
            while b"event: caught-up" not in got:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
        status = status_of(got)
        if status != "200":
            return status + json_code(got)
        first = next((line for line in got.split(b"\n") if line.startswith(b"id: ")), b"")
        return f"200 from {first[4:].decode() or 'empty'}"
    return run


def json_code(answer: bytes) -> str:
    """`` not_found`` when ``answer`` (a raw HTTP answer) has a Tether JSON error body."""
    head, _, rest = answer.partition(b"\r\n\r\n")
    if b"application/json" not in head.lower():
        return ""
    error = json.loads(rest).get("error")
    return f" {error['code']}" if error else ""


# -- WebSocket ----------------------------------------------------------------------------

def rpc_reply(ws: WsClient) -> str:
    """The next reply frame, as ``"rpc -32600"``, ``"result"`` or ``"batch [..]"``."""
    while True:
        message = ws.recv()
        if isinstance(message, list):
            return "batch " + ",".join(str(m["error"]["code"]) if "error" in m else "ok"
                                       for m in message)
        if "method" in message and "id" not in message:
            continue  # a notification
        if "error" in message:
            error = message["error"]
            assert isinstance(error["message"], str) and "id" in message
            return f"rpc {error['code']}"
        return "result"


def ws_frame(frame: str | bytes) -> Callable[[Ctx], str]:
    def run(ctx: Ctx) -> str:
        with WsClient(ctx.server.url) as ws:
            if isinstance(frame, bytes):
                ws.socket.send_binary(frame)
            else:
                ws.send_raw(frame)
            return rpc_reply(ws)
    return run


def ws_call(method: str, params: Callable[[Ctx], dict[str, Any]] | dict[str, Any]
            ) -> Callable[[Ctx], str]:
    def run(ctx: Ctx) -> str:
        given = params(ctx) if callable(params) else params
        frame = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": given})
        return ws_frame(frame)(ctx)
    return run


def ws_close(frame: bytes | str, *, opcode: int = websocket.ABNF.OPCODE_TEXT
             ) -> Callable[[Ctx], str]:
    """Send one frame with ``opcode`` (raw bytes, not checked by the client); the close code."""
    def run(ctx: Ctx) -> str:
        ws = WsClient(ctx.server.url, timeout=60)
        payload = frame.encode() if isinstance(frame, str) else frame

        def send() -> None:
            try:
                ws.socket.send_frame(websocket.ABNF(1, 0, 0, 0, opcode, 1, payload))
            except OSError:
                pass  # the server closed before reading it all: the close frame says why

        # From a thread: the server closes mid-frame, and its close frame must be read
        # before the reset that follows its close discards it.
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            ws.socket.settimeout(60)
            while True:  # recv_frame, not recv: no close frame is echoed into a reset socket
                got = ws.socket.recv_frame()
                if got.opcode == websocket.ABNF.OPCODE_CLOSE:
                    return f"close {int.from_bytes(got.data[:2], 'big')}"
        finally:
            sender.join(60)
            ws.socket.shutdown()
    return run


def ws_no_reply(frame: str) -> Callable[[Ctx], str]:
    """Send ``frame``, then a ping with id "probe": the next reply must be the probe's."""
    def run(ctx: Ctx) -> str:
        with WsClient(ctx.server.url) as ws:
            ws.send_raw(frame)
            ws.send_raw('{"jsonrpc": "2.0", "id": "probe", "method": "ping"}')
            while True:
                message = ws.recv()
                if isinstance(message, dict) and "method" in message and "id" not in message:
                    continue
                return "no reply" if message.get("id") == "probe" else f"reply {message}"
    return run


def ws_flood(count: int, frame: str) -> Callable[[Ctx], str]:
    """``count`` frames sent without reading (from a thread), then every reply read."""
    def run(ctx: Ctx) -> str:
        with WsClient(ctx.server.url, timeout=60) as ws:
            frames = [frame.replace("ID", str(i)) for i in range(count)]
            sender = threading.Thread(target=lambda: [ws.send_raw(f) for f in frames])
            sender.start()
            codes: dict[str, int] = {}
            ids = []
            while len(ids) < count:
                message = ws.recv()
                if "method" in message and "id" not in message:
                    continue
                ids.append(message["id"])
                key = str(message["error"]["code"]) if "error" in message else "ok"
                codes[key] = codes.get(key, 0) + 1
            sender.join(60)
            assert ws.call("ping")["ts"] > 0
            if ids[0] is not None:
                assert ids == list(range(count)), "replies out of order"
            return " ".join(f"{n}x{k}" for k, n in sorted(codes.items()))
    return run


def ws_attach_twice(ctx: Ctx) -> str:
    """Two attaches of one session on one socket: the second restarts the replay."""
    with WsClient(ctx.server.url) as ws:
        for request_id in (1, 2):
            ws.send_raw(json.dumps({"jsonrpc": "2.0", "id": request_id,
                                    "method": "session.attach",
                                    "params": {"session_id": ctx.quiet}}))
        seen_second, ids = False, []
        while True:
            message = ws.recv()
            if message.get("id") == 2:
                assert message["result"]["last_event_id"] == ctx.quiet_last
                seen_second = True
            elif seen_second and message.get("method") == "event":
                ids.append(message["params"]["event"]["id"])
            elif seen_second and message.get("method") == "caught_up":
                break
        assert ids == list(range(1, ctx.quiet_last + 1)), ids
        return "replay restarted"


# -- request ids ----------------------------------------------------------------------------

def pending_approval(ctx: Ctx) -> tuple[str, str]:
    """A new session with a pending approval: (session id, request id)."""
    sid = ctx.server.create_session(title="approval")["id"]
    ctx.server.api("POST", f"/api/sessions/{sid}/prompt", json={"text": "$ echo hostile"})
    request = ctx.server.wait_for_event(sid, "approval_request")
    return sid, request["request_id"]


def answer_resolved(transport: str) -> Callable[[Ctx], str]:
    def run(ctx: Ctx) -> str:
        sid, rid = pending_approval(ctx)
        first = ctx.server.api("POST", f"/api/sessions/{sid}/approvals/{rid}",
                               json={"decision": "deny"})
        assert first.status_code == 200
        if transport == "ws":
            return ws_call("approval.respond", {"session_id": sid, "request_id": rid,
                                                "decision": "allow"})(ctx)
        return outcome(ctx.server.api("POST", f"/api/sessions/{sid}/approvals/{rid}",
                                      json={"decision": "allow"}))
    return run


def answer_expired(ctx: Ctx) -> str:
    sid, rid = pending_approval(ctx)
    resolved = ctx.server.wait_for_event(sid, "approval_resolved", timeout=PROMPT_TIMEOUT + 30)
    assert resolved["reason"] == "timeout"
    return outcome(ctx.server.api("POST", f"/api/sessions/{sid}/approvals/{rid}",
                                  json={"decision": "allow"}))


def answer_other_sessions(transport: str) -> Callable[[Ctx], str]:
    def run(ctx: Ctx) -> str:
        sid, rid = pending_approval(ctx)
        try:
            if transport == "ws":
                return ws_call("approval.respond", {"session_id": ctx.idle, "request_id": rid,
                                                    "decision": "allow"})(ctx)
            return outcome(ctx.server.api("POST", f"/api/sessions/{ctx.idle}/approvals/{rid}",
                                          json={"decision": "allow"}))
        finally:
            # Still pending in its own session: the wrong-session answer changed nothing.
            page = ctx.server.api("GET", f"/api/sessions/{sid}").json()
            assert [p["request_id"] for p in page["pending"]["approvals"]] == [rid]
            ctx.server.api("POST", f"/api/sessions/{sid}/approvals/{rid}",
                           json={"decision": "deny"})
    return run


def answer_as_clarify(ctx: Ctx) -> str:
    sid, rid = pending_approval(ctx)
    answer = outcome(ctx.server.api("POST", f"/api/sessions/{sid}/clarify/{rid}",
                                    json={"answers": {"q": "a"}}))
    ctx.server.api("POST", f"/api/sessions/{sid}/approvals/{rid}", json={"decision": "deny"})
    return answer


# -- bodies whose acceptance is the point ---------------------------------------------------

CONTROLS = "a\u2028b\u2029c\x00\x01\x1b\x7f\x85\x9f\r\n\r\u00e9\U0001f600 end"


def controls_on_the_wire(ctx: Ctx) -> str:
    """A prompt full of line separators and C0/C1 controls is accepted, and on the SSE wire
    its event is one ``data:`` line of ASCII (escaped), never split."""
    sid = ctx.server.create_session(title="controls")["id"]
    answer = ctx.server.api("POST", f"/api/sessions/{sid}/prompt", json={"text": CONTROLS})
    assert answer.status_code == 202
    with socket.create_connection(("127.0.0.1", ctx.server.port), timeout=30) as sock:
        # HTTP/1.0: the body comes unchunked, so every byte read is the stream's own.
        sock.sendall(f"GET /api/sessions/{sid}/stream HTTP/1.0\r\nHost: localhost\r\n".encode()
                     + AUTH + b"\r\n")
        got = b""
        while b"event: caught-up" not in got:
            chunk = sock.recv(65536)
            assert chunk, "the stream ended"
            got += chunk
    wire = got.partition(b"\r\n\r\n")[2]
    wire.decode("ascii")  # every byte on the wire is ASCII: the controls are escaped
    assert b"\r" not in wire  # lines end in \n only: a CR in the text is escaped
    user = None
    for block in wire.split(b"\n\n"):
        lines = block.split(b"\n")
        data = [line for line in lines if line.startswith(b"data: ")]
        if any(line.startswith(b"id: ") for line in lines):
            assert len(data) == 1, block  # one event, one data line
            event = json.loads(data[0][6:])
            if event["kind"] == "user":
                user = event
    assert user is not None and user["text"] == CONTROLS
    # The title too: stored and echoed exactly.
    renamed = ctx.server.api("PATCH", f"/api/sessions/{sid}", json={"title": "t\u2028\x85\x01"})
    assert renamed.json()["title"] == "t\u2028\x85\x01"
    return "202 escaped"


def duplicate_keys_last_wins(ctx: Ctx) -> str:
    response = ctx.server.api("PATCH", f"/api/sessions/{ctx.idle}",
                              data=b'{"title": "first", "title": "second"}',
                              headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    return f"200 {response.json()['title']}"


def clamped_limit(ctx: Ctx) -> str:
    page = ctx.server.api("GET", f"/api/sessions/{ctx.quiet}/events",
                          params={"limit": 10**5}).json()
    assert len(page["events"]) == ctx.quiet_last  # fewer than the clamp (1000): all of them
    return "200"


def huge_wait_is_accepted(ctx: Ctx) -> str:
    # Accepted and clamped to 50 s (the clamp itself: tests/blueprints/test_poll.py); events
    # exist after the cursor, so it answers at once.
    page = ctx.server.api("GET", f"/api/sessions/{ctx.quiet}/events",
                          params={"after": 0, "wait": 10**5, "limit": 1}, timeout=90)
    assert [e["id"] for e in page.json()["events"]] == [1]
    return outcome(page)


# -- raw framing rows that need more than one exchange -----------------------------------------

def prompt_head(ctx: Ctx, length: int, extra: bytes = b"") -> bytes:
    return (f"POST /api/sessions/{ctx.idle}/prompt HTTP/1.1\r\nHost: localhost\r\n".encode() + AUTH
            + b"Content-Type: application/json\r\n" + extra
            + f"Content-Length: {length}\r\n\r\n".encode())


def forty_megabytes_refused_early(ctx: Ctx) -> str:
    """413 after the headers: the server answers while 40 MB are still unsent (over the
    prompt route's own limit, 34,715 KiB: it takes images; blueprints/api.py)."""
    size = 40 * 1024 * 1024
    sent = 64 * 1024
    with socket.create_connection(("127.0.0.1", ctx.server.port), timeout=30) as sock:
        sock.sendall(prompt_head(ctx, size) + b'{"text": "' + b"x" * (sent - 10))
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = sock.recv(65536)
            assert chunk, "closed without an answer"
            got += chunk
        # Answered with 64 KiB of 40 MiB sent. The rest is never wanted: the server closes
        # the connection within its keepalive bound (5 s) instead of reading it.
        # The JSON body may come in a later segment than the headers: keep it.
        sock.settimeout(60)
        while chunk := sock.recv(65536):
            got += chunk
    return status_of(got) + json_code(got)


def chunked_prompt(chunks: list[bytes], fresh: bool = False) -> Callable[[Ctx], str]:
    """A prompt body in chunks (no Content-Length), framed as given; to the idle session, or
    to a new one when the prompt is valid (``fresh``)."""
    def run(ctx: Ctx) -> str:
        sid = ctx.server.create_session(title="chunked")["id"] if fresh else ctx.idle
        head = (f"POST /api/sessions/{sid}/prompt HTTP/1.1\r\nHost: localhost\r\n".encode()
                + AUTH + b"Content-Type: application/json\r\n"
                + b"Transfer-Encoding: chunked\r\n\r\n")
        answer = raw_request(ctx.server.port, head + b"".join(chunks), read_body=True)
        return status_of(answer) + json_code(answer)
    return run


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def slowloris(ctx: Ctx) -> str:
    """A request head sent one byte every 0.2 s: cut off (no answer) after gunicorn's
    keepalive (5 s), while other clients are served."""
    sock = socket.create_connection(("127.0.0.1", ctx.server.port), timeout=60)
    started = time.monotonic()
    with sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        closed = False
        for index, byte in enumerate(b"X-Slow: " + b"a" * 2000):
            try:
                sock.send(bytes([byte]))
            except OSError:
                closed = True
                break
            if index == 10:  # mid-trickle, others are served
                assert requests.get(f"{ctx.server.url}/healthz", timeout=30).ok
            time.sleep(0.2)
        if not closed:
            sock.settimeout(5)
            try:
                closed = sock.recv(100) == b""
            except OSError:
                closed = True
    assert closed and time.monotonic() - started < 300
    return "closed, no answer"


def idle_socket(ctx: Ctx) -> str:
    """A connection that never sends a byte is closed after the keepalive (5 s), unanswered:
    idle sockets do not pile up (an open *stream* is held; see the 10,000 streams test)."""
    with socket.create_connection(("127.0.0.1", ctx.server.port), timeout=120) as sock:
        try:
            got = sock.recv(100)
        except ConnectionResetError:
            got = b""
    return "closed, no answer" if got == b"" else f"answered {got[:40]!r}"


def slow_body(ctx: Ctx) -> str:
    """A body trickled one byte at a time, within ``TETHER_BODY_TIMEOUT`` (10 s): others are
    served meanwhile, and it completes normally (past the deadline: the 408 test below)."""
    text = b'{"text": 5}'
    with socket.create_connection(("127.0.0.1", ctx.server.port), timeout=60) as sock:
        sock.sendall(prompt_head(ctx, len(text)))
        for index, byte in enumerate(text):
            sock.send(bytes([byte]))
            if index == 3:
                assert requests.get(f"{ctx.server.url}/healthz", timeout=30).ok
            time.sleep(0.2)
        got = b""
        while b"\r\n\r\n" not in got:
            got += sock.recv(65536)
        while not got.rstrip().endswith(b"}"):
            got += sock.recv(65536)
    return status_of(got) + json_code(got)


# -- the table ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    name: str
    transport: str
    run: Callable[[Ctx], str]
    expect: str
    why: str


BAD_CURSORS = [
    ("abc", "abc"), ("negative", "-1"), ("fraction", "1.5"), ("hex", "0x10"),
    ("exponent", "1e3"), ("plus sign", "+7"), ("spaces", " 7 "),
    ("arabic-indic digit", "\u0663"), ("10^23", "1" + "0" * 23), ("empty", ""),
    ("NUL inside", "1\x002"), ("CR inside", "1\r2"), ("LF inside", "1\n2"),
    ("leading zero", "07"), ("4000 digits", "7" * 4000),
]
NOT_INT = "a cursor is a plain ASCII decimal integer below 10^18 (README, DESIGN.md)"
S, Q, I_ = "/api/sessions/{quiet}", "/api/sessions/{idle}", "/api/sessions/{unknown}"


def rows() -> list[Row]:
    table: list[Row] = []
    add = table.append
    # Cursors: ?after= on the stream and the long-poll.
    for name, value in BAD_CURSORS:
        add(Row(f"sse after {name}", "sse", sse("?" + _q(after=value)), "400 bad_request",
                NOT_INT))
        add(Row(f"poll after {name}", "poll", http("GET", S + "/events", params={"after": value}),
                "400 bad_request", NOT_INT))
    add(Row("sse after 10 KB", "sse", sse("?" + _q(after="7" * 10240)), "414",
            "a 10 KB query is over gunicorn's request line limit (4094 bytes)"))
    add(Row("poll after 10 KB", "poll", http("GET", S + "/events", params={"after": "7" * 10240}),
            "414", "over the request line limit"))
    # Cursors: the Last-Event-ID header, raw (CR, LF, NUL and non-Latin-1 bytes included).
    for name, value in [("abc", b"abc"), ("negative", b"-1"), ("fraction", b"1.5"),
                        ("hex", b"0x10"), ("exponent", b"1e3"), ("plus sign", b"+7"),
                        ("arabic-indic digit", "\u0663".encode()),
                        ("10^23", b"1" + b"0" * 23), ("empty", b""),
                        ("NEL around", b"\x857\x85"), ("leading zero", b"07")]:
        add(Row(f"Last-Event-ID {name}", "sse",
                stream_head(S + "/stream", b"Last-Event-ID: " + value + b"\r\n"),
                "400 bad_request", NOT_INT + "; only spaces and tabs are trimmed from a header"))
    add(Row("Last-Event-ID spaces", "sse", stream_head(S + "/stream", b"Last-Event-ID:  7 \r\n"),
            "200 from 8", "spaces around a header value are not part of it (RFC 9110 5.5)"))
    for name, value in [("NUL inside", b"1\x002"), ("CR inside", b"1\r2")]:
        add(Row(f"Last-Event-ID {name}", "sse",
                stream_head(S + "/stream", b"Last-Event-ID: " + value + b"\r\n"), "400",
                "gunicorn refuses a control character in a header value"))
    add(Row("Last-Event-ID LF inside", "sse",
            stream_head(S + "/stream", b"Last-Event-ID: 1\n2\r\n"), "400",
            "the line after the LF is a header without a colon: gunicorn refuses it"))
    add(Row("Last-Event-ID 10 KB", "sse",
            stream_head(S + "/stream", b"Last-Event-ID: " + b"7" * 10240 + b"\r\n"), "431",
            "a header field over 8190 bytes (gunicorn limit_request_field_size)"))
    add(Row("Last-Event-ID 5 with ?after=2", "sse", sse("?after=2", last_event_id="5"),
            "200 from 6", "Last-Event-ID wins over ?after= (DESIGN.md: the newer cursor)"))
    add(Row("Last-Event-ID 5 with ?after=abc", "sse", sse("?after=abc", last_event_id="5"),
            "400 bad_request", "both cursors are checked, even the one that loses"))
    add(Row("sse after past the end", "sse", sse("?after=99999"), "200 from 1",
            "a cursor past the end is a reset and a full replay, not an error"))
    add(Row("sse inbox=maybe", "sse", sse("?inbox=maybe"), "400 bad_request",
            "a flag is 1, true, 0 or false"))
    add(Row("sse epoch 3000 chars", "sse", sse("?epoch=" + "e" * 3000), "200 from 1",
            "an unknown epoch is a reset and a full replay"))
    # wait and limit.
    for name, value in [("-5", "-5"), ("NaN", "NaN"), ("inf", "inf"), ("1e309", "1e309"),
                        ("7 digits", "1000000"), ("empty fraction", "1.")]:
        add(Row(f"poll wait {name}", "poll", http("GET", S + "/events", params={"wait": value}),
                "400 bad_request", "wait is a plain decimal of at most 6 digits, >= 0"))
    add(Row("poll wait 10^5", "poll", huge_wait_is_accepted, "200",
            "wait is clamped to 50 s (docs/protocol.md Limits)"))
    for name, value in [("-5", "-5"), ("NaN", "NaN"), ("inf", "inf"), ("1e309", "1e309"),
                        ("0", "0")]:
        add(Row(f"poll limit {name}", "poll", http("GET", S + "/events", params={"limit": value}),
                "400 bad_request", "limit is a plain integer >= 1"))
    add(Row("poll limit 10^5", "poll", clamped_limit, "200", "limit is clamped to 1000"))
    add(Row("poll inbox=-1", "poll", http("GET", S + "/events", params={"inbox": "-1"}),
            "400 bad_request", "an inbox revision is a cursor"))
    for name, params in [("after abc", {"after": "abc"}), ("wait NaN", {"wait": "NaN"}),
                         ("wait 1e309", {"wait": "1e309"})]:
        add(Row(f"inbox {name}", "poll", http("GET", "/api/inbox", params=params),
                "400 bad_request", "the inbox long-poll parses like the session one"))
    # Ids: unknown sessions on every route.
    for method, suffix, kwargs in [
            ("GET", "", {}), ("PATCH", "", {"json": {"title": "x"}}), ("DELETE", "", {}),
            ("POST", "/prompt", {"json": {"text": "hi"}}), ("POST", "/cancel", {}),
            ("POST", "/approvals/r1", {"json": {"decision": "allow"}}),
            ("POST", "/clarify/r1", {"json": {"answers": {}}}),
            ("GET", "/stream", {}), ("GET", "/events", {}), ("GET", "/transcript.jsonl", {})]:
        add(Row(f"unknown session {method} {suffix or '/'}", "http",
                http(method, I_ + suffix, **kwargs), "404 not_found",
                "no such session"))
    for method, path in [("GET", "/api/sessions/..%2F.."), ("GET", "/api/sessions/..%2F../events"),
                         ("DELETE", "/api/sessions/..%2F.."),
                         ("GET", "/api/sessions/%2e%2e/transcript.jsonl")]:
        add(Row(f"traversal {method} {path}", "http", http(method, path), "404 not_found",
                "ids are opaque: a decoded slash matches no route, .. no session"))
    add(Row("session id 4000 chars", "http", http("GET", "/api/sessions/" + "a" * 4000),
            "404 not_found", "no such session; under the request line limit"))
    add(Row("session id 1 MB", "raw", raw(b"GET /api/sessions/" + b"a" * 2**20
                                          + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"),
            "414", "over the request line limit (4094 bytes)"))
    # Ids: answers to requests that are not pending here.
    add(Row("approval unknown request id", "http",
            http("POST", Q + "/approvals/nope", json={"decision": "allow"}), "404 not_found",
            "no such request in this session"))
    add(Row("approval request id ..%2F..", "http",
            http("POST", Q + "/approvals/..%2F..", json={"decision": "allow"}), "404 not_found",
            "no route: ids are opaque"))
    add(Row("approval request id 1 MB", "raw",
            lambda ctx: status_of(raw_request(ctx.server.port, (
                f"POST {ctx.path(Q)}/approvals/".encode() + b"r" * 2**20
                + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"))), "414", "over the request line limit"))
    add(Row("approval resolved request id", "http", answer_resolved("http"),
            "409 already_resolved", "the first answer won"))
    add(Row("approval expired request id", "http", answer_expired, "409 already_resolved",
            "it timed out (TETHER_PROMPT_TIMEOUT): the timeout's deny was the answer"))
    add(Row("approval of another session's request", "http", answer_other_sessions("http"),
            "404 not_found", "request ids belong to their session"))
    add(Row("clarify answer to an approval's id", "http", answer_as_clarify, "404 not_found",
            "request ids belong to their kind too"))
    add(Row("ws approval resolved request id", "ws", answer_resolved("ws"), "rpc -32003",
            "already_resolved"))
    add(Row("ws approval of another session's request", "ws", answer_other_sessions("ws"),
            "rpc -32001", "not_found"))
    add(Row("ws approval request id 1 MB", "ws",
            ws_call("approval.respond", lambda ctx: {"session_id": ctx.idle,
                                                     "request_id": "r" * 1_000_000,
                                                     "decision": "allow"}),
            "rpc -32602", "request_id is at most 200 characters"))
    add(Row("ws unknown session", "ws", ws_call("session.attach", {"session_id": "0" * 32}),
            "rpc -32001", "not_found"))
    # Bodies.
    prompt = Q + "/prompt"
    for name, data in [("invalid JSON", '{"text": '), ("null", "null"), ("array", "[]"),
                       ("number", "5"), ("string", '"hi"'), ("text: 5", '{"text": 5}'),
                       ("text missing", "{}"), ("text empty", '{"text": ""}'),
                       ("text blank", '{"text": " \\n\\t "}'),
                       ("text null", '{"text": null}'),
                       ("10^5-deep nesting", '{"text": ' + "[" * 10**5 + "]" * 10**5 + "}"),
                       ("NaN literal", '{"text": NaN}'), ("Infinity literal", '{"text": Infinity}'),
                       ("duplicate key, last invalid", '{"text": "hi", "text": 5}'),
                       ("lone surrogate", '{"text": "a\\ud800b"}'),
                       ("lone low surrogate", '{"text": "\\udfff"}'),
                       ("trailing garbage", '{"text": "hi"} x')]:
        add(Row(f"prompt body {name}", "http", body("POST", prompt, data), "400 bad_request",
                "the body must be a JSON object with a non-empty string text"))
    add(Row("prompt body invalid UTF-8", "http", body("POST", prompt, b'{"text": "\xff\xfe"}'),
            "400 bad_request", "JSON is UTF-8"))
    add(Row("prompt body no content type", "http", body("POST", prompt, '{"text": "hi"}', None),
            "415 unsupported_media_type", "bodies are application/json"))
    add(Row("prompt body text/plain", "http",
            body("POST", prompt, '{"text": "hi"}', "text/plain"),
            "415 unsupported_media_type", "bodies are application/json"))
    add(Row("prompt body form", "http",
            body("POST", prompt, "text=hi", "application/x-www-form-urlencoded"),
            "415 unsupported_media_type", "bodies are application/json"))
    add(Row("create body text/plain", "http", body("POST", "/api/sessions", "{}", "text/plain"),
            "415 unsupported_media_type", "an optional body, once given, is JSON"))
    add(Row("prompt 300 KiB", "http", http("POST", prompt, json={"text": "x" * 300 * 1024}),
            "413 payload_too_large", "over TETHER_MAX_PROMPT_BYTES (256 KiB)"))
    add(Row("prompt 10 MB", "http", http("POST", prompt, json={"text": "x" * 10 * 2**20}),
            "413 payload_too_large", "read whole (the prompt route takes up to 34,715 KiB, "
            "for images), then over TETHER_MAX_PROMPT_BYTES"))
    add(Row("prompt 40 MB, refused after the headers", "raw", forty_megabytes_refused_early,
            "413 payload_too_large", "Content-Length is checked before the body is read"))
    add(Row("prompt 40 MB chunked", "raw",
            chunked_prompt([chunk(b'{"text": "')] + [chunk(b"x" * 65536)] * 640),
            "413 payload_too_large", "a chunked body is cut off at the route's body limit"))
    add(Row("answer 10 MB", "http", http("POST", Q + "/approvals/r1",
                                          json={"decision": "allow", "message": "x" * 10 * 2**20}),
            "413 payload_too_large", "over every other route's body limit "
            "(2 x TETHER_MAX_PROMPT_BYTES + 64 KiB)"))
    add(Row("prompt in chunks, valid", "raw",
            chunked_prompt([chunk(b'{"te'), chunk(b'xt": "hi"}'), b"0\r\n\r\n"], fresh=True),
            "202", "the control: a chunked body under the limit is read whole"))
    add(Row("prompt malformed chunk size", "raw", chunked_prompt([b'{"text": "hi"}\r\n']),
            "400 bad_request", "a body that cannot be read is the client's error, not a 500"))
    add(Row("prompt chunk without its terminator", "raw",
            chunked_prompt([b"5\r\nhelloXX0\r\n\r\n"]), "400 bad_request",
            "a chunk must end with CRLF"))
    add(Row("prompt with controls and U+2028", "sse", controls_on_the_wire, "202 escaped",
            "any text is a prompt; SSE data is escaped JSON, one line per event"))
    for name, path, data in [
            ("approval decision maybe", Q + "/approvals/r1", '{"decision": "maybe"}'),
            ("approval decision missing", Q + "/approvals/r1", "{}"),
            ("approval updated_input list", Q + "/approvals/r1",
             '{"decision": "allow", "updated_input": []}'),
            ("approval message 10001 chars", Q + "/approvals/r1",
             json.dumps({"decision": "deny", "message": "m" * 10001})),
            ("approval client 101 chars", Q + "/approvals/r1",
             json.dumps({"decision": "deny", "client": "c" * 101})),
            ("clarify answers []", Q + "/clarify/r1", '{"answers": []}'),
            ("clarify answer 5", Q + "/clarify/r1", '{"answers": {"q": 5}}'),
            ("clarify lone surrogate key", Q + "/clarify/r1", '{"answers": {"\\ud800": "a"}}'),
            ("patch title 5", Q, '{"title": 5}'), ("patch auto_approve yes", Q,
                                                   '{"auto_approve": "yes"}'),
            ("patch title 201 chars", Q, json.dumps({"title": "t" * 201})),
            ("patch title lone surrogate", Q, '{"title": "\\ud83d"}'),
            ("create agent list", "/api/sessions", '{"agent": ["local"]}'),
            ("create title number", "/api/sessions", '{"title": 7}')]:
        method = "PATCH" if path == Q else "POST"
        add(Row(name, "http", body(method, path, data), "400 bad_request",
                "a wrong-typed, too long or non-Unicode field is named in the message"))
    add(Row("create agent unknown", "http", http("POST", "/api/sessions", json={"agent": "nope"}),
            "404 not_found", "no such agent"))
    add(Row("patch duplicate keys", "http", duplicate_keys_last_wins, "200 second",
            "duplicate keys: the last wins, as in Python's json (documented)"))
    add(Row("PUT a session", "http", http("PUT", Q, json={}), "405 method_not_allowed",
            "no such method on the route"))
    # JSON-RPC frames.
    ping = '{"jsonrpc": "2.0", "id": ID, "method": "ping"}'
    for name, frame, expect in [
            ("not JSON", "{not json", "rpc -32700"),
            ("NaN", '{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": NaN}}',
             "rpc -32700"),
            ("10^5-deep nesting", "[" * 10**5 + "]" * 10**5, "rpc -32700"),
            ("empty batch", "[]", "rpc -32600"),
            ("missing method", '{"jsonrpc": "2.0", "id": 1}', "rpc -32600"),
            ("numeric method", '{"jsonrpc": "2.0", "id": 1, "method": 5}', "rpc -32600"),
            ("jsonrpc 1.0", '{"jsonrpc": "1.0", "id": 1, "method": "ping"}', "rpc -32600"),
            ("no jsonrpc", '{"id": 1, "method": "ping"}', "rpc -32600"),
            ("object id", '{"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}', "rpc -32600"),
            ("float id", '{"jsonrpc": "2.0", "id": 1.5, "method": "ping"}', "rpc -32600"),
            ("boolean id", '{"jsonrpc": "2.0", "id": true, "method": "ping"}', "rpc -32600"),
            ("a number", "42", "rpc -32600"),
            ("unknown method", '{"jsonrpc": "2.0", "id": 1, "method": "session.explode"}',
             "rpc -32601"),
            ("params array", '{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}',
             "rpc -32602"),
            ("duplicate method, last wins",
             '{"jsonrpc": "2.0", "id": 1, "method": "nope", "method": "ping"}', "result"),
            ("batch of 10^4", json.dumps([json.loads(ping.replace("ID", str(i)))
                                          for i in range(10**4)]), "rpc -32600"),
            ("batch of 3 mixed", '[{"jsonrpc": "2.0", "id": 1, "method": "ping"}, 7, '
             '{"jsonrpc": "2.0", "id": 2, "method": "nope"}]', "batch ok,-32600,-32601")]:
        add(Row(f"ws {name}", "ws", ws_frame(frame), expect, "JSON-RPC 2.0 sections 4-6"))
    for name, method, params in [
            ("session.get without session_id", "session.get", {}),
            ("prompt text 5", "prompt.submit", {"session_id": "x", "text": 5}),
            ("decision maybe", "approval.respond",
             {"session_id": "x", "request_id": "r", "decision": "maybe"}),
            ("answers []", "clarify.respond",
             {"session_id": "x", "request_id": "r", "answers": []}),
            ("attach after -1", "session.attach", {"session_id": "x", "after": -1}),
            ("attach after 1.5", "session.attach", {"session_id": "x", "after": 1.5}),
            ("attach after 10^23", "session.attach", {"session_id": "x", "after": 10**23}),
            ("attach after '7'", "session.attach", {"session_id": "x", "after": "7"}),
            ("title lone surrogate", "session.create", {"title": "\ud800"}),
            ("session_id 1 MB", "session.get", {"session_id": "s" * 1_000_000})]:
        add(Row(f"ws {name}", "ws", ws_call(method, params), "rpc -32602",
                "invalid params, named in the message"))
    add(Row("ws prompt 300 KiB", "ws", ws_call("prompt.submit", lambda ctx: {
        "session_id": ctx.idle, "text": "x" * 300 * 1024}), "rpc -32602",
        "payload_too_large maps to invalid params"))
    add(Row("ws binary frame", "ws", ws_frame(ping.replace("ID", "1").encode()), "rpc -32600",
            "JSON-RPC goes in text frames"))
    for name, frame in [("notification ping", '{"jsonrpc": "2.0", "method": "ping"}'),
                        ("notification unknown method", '{"jsonrpc": "2.0", "method": "nope"}'),
                        ("notification bad params",
                         '{"jsonrpc": "2.0", "method": "session.get", "params": {}}'),
                        ("batch of notifications", '[{"jsonrpc": "2.0", "method": "ping"}]')]:
        add(Row(f"ws {name}", "ws", ws_no_reply(frame), "no reply",
                "a notification is never answered, not even with an error"))
    add(Row("ws 16 MiB frame", "ws", ws_close("x" * (16 << 20)), "close 1009",
            "a frame over 1 MiB closes the socket: message too big"))
    add(Row("ws invalid UTF-8 text frame", "ws", ws_close(b'{"a": "\xff"}'), "close 1007",
            "a text frame must be UTF-8 (RFC 6455 8.1)"))
    add(Row("ws flood of 10^4 pings", "ws", ws_flood(10**4, ping), "10000xok",
            "every request answered, in order; a client that pipelines waits, never drops"))
    add(Row("ws flood of 2000 garbage frames", "ws", ws_flood(2000, "{ID"), "2000x-32700",
            "each frame gets its parse error"))
    add(Row("ws attach twice", "ws", ws_attach_twice, "replay restarted",
            "a second attach moves the cursor: the replay restarts from its after"))
    # HTTP framing against gunicorn itself.
    head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
    add(Row("header of 8191 bytes", "raw", raw(head + b"X-Big: " + b"b" * 8191 + b"\r\n\r\n"),
            "431", "limit_request_field_size = 8190"))
    add(Row("header of 8000 bytes", "raw", raw(head + b"X-Big: " + b"b" * 8000 + b"\r\n\r\n"),
            "200", "under the limit: served"))
    add(Row("150 headers", "raw", raw(head + b"".join(b"X-H%d: v\r\n" % i for i in range(150))
                                      + b"\r\n"), "431", "limit_request_fields = 100"))
    add(Row("request line of 4095 bytes", "raw",
            raw(b"GET /healthz?" + b"q" * 4095 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"), "414",
            "limit_request_line = 4094"))
    add(Row("garbage request line", "raw", raw(b"HELLO\r\n\r\n"), "400",
            "not HTTP"))
    add(Row("bad method token", "raw",
            raw(b"G@T /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"), "400", "not a method"))
    add(Row("Content-Length with chunked", "raw",
            raw(b"POST /api/sessions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), "400",
            "both framings at once is a request smuggling attempt (RFC 9112 6.1)"))
    add(Row("slowloris head", "raw", slowloris, "closed, no answer",
            "a request head must arrive within gunicorn's keepalive (5 s)"))
    add(Row("idle socket", "raw", idle_socket, "closed, no answer",
            "a connection that sends nothing is closed after gunicorn's keepalive (5 s)"))
    add(Row("slow body", "raw", slow_body, "400 bad_request",
            "a body trickled within TETHER_BODY_TIMEOUT is read to the end; others are served "
            "meanwhile"))
    return table


def _q(**params: str) -> str:
    return urllib.parse.urlencode(params)


ROWS = rows()


# -- fixtures and the tests ------------------------------------------------------------------

def raise_open_file_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (a server started later
    inherits it); the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("hostile"), TETHER_LOCAL_WORD_DELAY=WORD_DELAY,
                    TETHER_PROMPT_TIMEOUT=PROMPT_TIMEOUT, **store_settings(request)) as live:
        yield live


@pytest.fixture(scope="module")
def ctx(server: LiveServer) -> Ctx:
    idle = server.create_session(title="idle")["id"]
    quiet = server.create_session(title="quiet")["id"]
    server.api("POST", f"/api/sessions/{quiet}/prompt", json={"text": "$ echo quiet"})
    request = server.wait_for_event(quiet, "approval_request")
    server.api("POST", f"/api/sessions/{quiet}/approvals/{request['request_id']}",
               json={"decision": "allow"})
    end = server.wait_for_event(quiet, "turn_end", timeout=60)
    assert end["id"] > 8
    return Ctx(server, idle, quiet, end["id"])


@pytest.fixture(scope="module")
def witness(server: LiveServer, ctx: Ctx) -> Iterator[Witness]:
    witness = Witness(server)
    yield witness
    witness.close()


def test_the_table_is_big_enough() -> None:
    assert len(ROWS) >= 100
    assert len({row.name for row in ROWS}) == len(ROWS), "row names are unique"
    assert {row.transport for row in ROWS} == {"http", "sse", "poll", "ws", "raw"}


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_hostile_input(row: Row, ctx: Ctx, witness: Witness, tally: Tally) -> None:
    tally.add("inputs tried", 1)
    got = row.run(ctx)
    assert got == row.expect, f"{row.transport}: {row.name}: {got!r} ({row.why})"
    witness.check()
    # The idle session stayed idle: no refused prompt started a turn.
    state = ctx.server.api("GET", f"/api/sessions/{ctx.idle}").json()
    assert state["turn"] == 0 and state["state"] == "idle", state


def test_the_turns_in_flight_completed_exactly(witness: Witness, ctx: Ctx,
                                               tally: Tally) -> None:
    witness.finish(tally)
    assert witness.turns >= 1
    # The server still works end to end: a fresh turn on a fresh session.
    sid = ctx.server.create_session()["id"]
    assert ctx.server.api("POST", f"/api/sessions/{sid}/prompt",
                          json={"text": "$ echo after"}).status_code == 202
    request = ctx.server.wait_for_event(sid, "approval_request")
    ctx.server.api("POST", f"/api/sessions/{sid}/approvals/{request['request_id']}",
                   json={"decision": "allow"})
    assert ctx.server.wait_for_event(sid, "turn_end", timeout=60)["reason"] == "completed"


# -- inputs that need a server of their own ---------------------------------------------------

def test_ten_thousand_sessions_then_the_cap(tmp_path: Path, tally: Tally) -> None:
    """10,000 sessions created in a loop under TETHER_MAX_SESSIONS=10000: all 201, the next
    409 too_many_sessions (JSON-RPC -32005), and the server stays healthy."""
    cap = 10_000
    with LiveServer(tmp_path, TETHER_MAX_SESSIONS=cap) as server:
        client = requests.Session()
        client.headers.update(AUTH_HEADERS)
        started = time.monotonic()
        for index in range(cap):
            response = client.post(f"{server.url}/api/sessions", timeout=60)
            assert response.status_code == 201, (index, response.text)
        elapsed = time.monotonic() - started
        print(f"\n10,000 sessions created in {elapsed:.1f} s")
        refused = client.post(f"{server.url}/api/sessions", timeout=60)
        assert outcome(refused) == "409 too_many_sessions"
        with WsClient(server.url) as ws:
            frame = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "session.create"})
            ws.send_raw(frame)
            assert rpc_reply(ws) == "rpc -32005"
        tally.add("inputs tried", cap + 2)
        # Healthy: it answers, lists them all, and a turn runs; deleting one makes room.
        assert client.get(f"{server.url}/healthz", timeout=60).ok
        sessions = client.get(f"{server.url}/api/sessions", timeout=60).json()["sessions"]
        assert len(sessions) == cap
        sid = sessions[0]["id"]
        assert client.post(f"{server.url}/api/sessions/{sid}/prompt", json={"text": "hi"},
                           timeout=60).status_code == 202
        assert server.wait_for_event(sid, "turn_end", timeout=60)["reason"] == "completed"
        assert client.delete(f"{server.url}/api/sessions/{sessions[1]['id']}",
                             timeout=60).status_code == 204
        assert client.post(f"{server.url}/api/sessions", timeout=60).status_code == 201
        assert outcome(client.post(f"{server.url}/api/sessions", timeout=60)) == \
            "409 too_many_sessions"


#: TETHER_BODY_TIMEOUT for the trickled-body test, and the slack allowed on top of it (a
#: shared machine), in seconds; either way well under gunicorn's keepalive (5 s).
BODY_TIMEOUT = 1.0
BODY_SLACK = 2.5
#: Seconds between the trickled bytes.
TRICKLE_SECONDS = 0.2


@pytest.mark.parametrize("framing", ["prompt, Content-Length", "create session, chunked",
                                     "login form, no token"])
def test_a_body_trickled_past_the_deadline_is_408_and_closes(tmp_path: Path, framing: str,
                                                              tally: Tally) -> None:
    """TETHER_BODY_TIMEOUT = 1 s: a body sent one byte every 0.2 s, never finished, gets 408
    ``request_timeout`` with ``Connection: close`` within the deadline (plus slack), and the
    server closes the connection at once instead of reading on. Meanwhile a prompt on another
    connection is served and its turn completes; nothing the trickled request aimed at
    changed, and the server logged no error."""
    with LiveServer(tmp_path, TETHER_BODY_TIMEOUT=BODY_TIMEOUT) as server:
        target = server.create_session(title="target")["id"]
        other = server.create_session(title="other")["id"]
        headers = [("Host", "localhost"), ("Content-Type", "application/json"),
                   ("Authorization", f"Bearer {TEST_TOKEN}")]
        if framing.startswith("prompt"):
            method, path, body = "POST", f"/api/sessions/{target}/prompt", b'{"text": "hi"}'
            headers.append(("Content-Length", "1000"))  # promised, never all sent
        elif framing.startswith("create"):
            method, path, body = "POST", "/api/sessions", b'{"title": "trickled"}'
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            method, path, body = "POST", "/login", b"token=" + TEST_TOKEN.encode()
            headers = [("Host", "localhost"), ("Content-Type", "application/x-www-form-urlencoded"),
                       ("Content-Length", "1000")]
        client = h11.Connection(h11.CLIENT)
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        with sock:
            sock.sendall(client.send(h11.Request(method=method, target=path, headers=headers)))
            started = time.monotonic()
            served_meanwhile = None
            for index, byte in enumerate((body * 100)[:999]):
                sock.sendall(client.send(h11.Data(data=bytes([byte]))))
                if index == 1:  # mid-trickle, another connection is served at once
                    served_meanwhile = server.api("POST", f"/api/sessions/{other}/prompt",
                                                  json={"text": "hello"}).status_code
                if select.select([sock], [], [], TRICKLE_SECONDS)[0]:
                    break  # answered: stop sending
            answered = time.monotonic() - started
            client.receive_data(sock.recv(65536))
            response = client.next_event()
            while response is h11.NEED_DATA:
                client.receive_data(sock.recv(65536))
                response = client.next_event()
            assert isinstance(response, h11.Response), response
            data = b""
            while not isinstance(event := client.next_event(), h11.EndOfMessage):
                if event is h11.NEED_DATA:
                    client.receive_data(sock.recv(65536))
                elif isinstance(event, h11.Data):
                    data += bytes(event.data)
            # Closed right after the answer, not after a keepalive spent reading on.
            sock.settimeout(BODY_SLACK)
            try:
                rest: bytes | None = sock.recv(65536)
            except ConnectionResetError:
                rest = b""
            except TimeoutError:
                rest = None  # still open
            closed = time.monotonic() - started
        print(f"\n{framing}: 408 after {answered:.2f} s, closed after {closed:.2f} s")
        assert response.status_code == 408, (response, data)
        assert (b"connection", b"close") in [(k.lower(), v.lower())
                                             for k, v in response.headers]
        error = json.loads(data)["error"]
        assert error["code"] == "request_timeout", error
        assert "within 1 s" in error["message"] and "TETHER_BODY_TIMEOUT" in error["message"]
        assert BODY_TIMEOUT <= answered <= BODY_TIMEOUT + BODY_SLACK, answered
        assert rest == b"" and closed <= BODY_TIMEOUT + BODY_SLACK, \
            f"the connection was not closed after the answer ({rest!r} after {closed:.1f} s)"
        assert served_meanwhile == 202
        # Nothing else was lost: the other turn completes, the target is untouched, no new
        # session was made, and the server logged no error.
        assert server.wait_for_event(other, "turn_end", timeout=60)["reason"] == "completed"
        assert server.api("GET", f"/api/sessions/{target}").json()["turn"] == 0
        titles = {s["title"] for s in server.api("GET", "/api/sessions").json()["sessions"]}
        assert titles == {"target", "other"}
        assert server.api("GET", "/healthz").ok
        log = server.log_text()
        assert "Traceback" not in log and "Error handling request" not in log, log
        tally.add("inputs tried", 1)


def worker_rss_mib(server: LiveServer) -> float:
    """The gunicorn worker's resident memory, in MiB (Linux /proc)."""
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    worker = children.read_text().split()[0]
    for line in Path(f"/proc/{worker}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_ten_thousand_open_streams_and_clients_beyond(tmp_path: Path, tally: Tally) -> None:
    """worker_connections = 10000 streams open at once; a client beyond that waits in the
    listen backlog (its TCP connect succeeds, nothing is reset or dropped) and is served as
    soon as a connection closes."""
    streams, beyond = 10_000, 50
    limit = raise_open_file_limit(streams + beyond + 1000)
    if limit < streams + beyond + 500:
        pytest.skip(f"the open-file limit is {limit}: 10,000 sockets need more")
    with LiveServer(tmp_path) as server:
        sid = server.create_session()["id"]
        request = (f"GET /api/sessions/{sid}/stream HTTP/1.1\r\nHost: localhost\r\n".encode() + AUTH
                   + b"\r\n")
        selector = selectors.DefaultSelector()
        buffers: dict[socket.socket, bytearray] = {}
        closed: set[socket.socket] = set()
        opened = []
        started = time.monotonic()
        for _ in range(streams + beyond):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
            sock.sendall(request)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            buffers[sock] = bytearray()
            opened.append(sock)
        probe = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        probe.setblocking(False)
        selector.register(probe, selectors.EVENT_READ)
        buffers[probe] = bytearray()

        caught_up: set[socket.socket] = set()  # the streams answered with caught-up

        def answered() -> list[socket.socket]:
            return [s for s in buffers if s in caught_up]

        def pump(until: Callable[[], bool], settle: float) -> None:
            """Read whatever arrives until ``until()``, or until ``settle`` seconds pass with
            no stream answered, closed or the probe answered. Keepalives are not progress:
            10,000 streams bring one every few milliseconds, so a quiet socket never comes."""
            last_progress = time.monotonic()
            while not until() and time.monotonic() - last_progress < settle:
                for key, _ in selector.select(timeout=0.5):
                    sock = key.fileobj
                    try:
                        data = sock.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except ConnectionResetError:
                        data = b""
                    if not data:
                        closed.add(sock)
                        selector.unregister(sock)
                        last_progress = time.monotonic()
                        continue
                    buffers[sock] += data
                    if sock is probe or (sock not in caught_up and b"caught-up" in buffers[sock]):
                        if sock is not probe:
                            caught_up.add(sock)
                        last_progress = time.monotonic()

        pump(lambda: len(caught_up) >= streams, settle=60)
        pump(lambda: False, settle=3)  # anything beyond the pool would have come by now
        held = len(answered())
        rss = worker_rss_mib(server)
        print(f"\n{held:,} streams open after {time.monotonic() - started:.1f} s; "
              f"worker RSS {rss:.0f} MiB")
        assert held == streams, f"{held} streams answered, expected worker_connections"
        assert not closed, f"{len(closed)} connections were closed or reset"
        assert not buffers[probe], "a client beyond worker_connections was answered"
        # Make room: the waiting clients are served, the probe too; none was dropped.
        for sock in answered()[:beyond + 10]:
            selector.unregister(sock)
            sock.close()
            del buffers[sock]
            caught_up.discard(sock)
        pump(lambda: len(caught_up) >= streams + beyond - (beyond + 10)
             and b"\r\n\r\n" in buffers[probe], settle=60)
        assert status_of(bytes(buffers[probe])) == "200"
        assert len(answered()) == streams - 10, "every waiting client was served"
        assert not closed - {probe}
        tally.add("inputs tried", streams + beyond + 1)
        for sock in list(buffers):
            sock.close()
        selector.close()
        assert requests.get(f"{server.url}/healthz", timeout=60).ok
