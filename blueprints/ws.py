"""WebSocket transport: ``GET /api/ws``, JSON-RPC 2.0 over flask-sock (docs/protocol.md).

One :class:`Connection` per socket, with two loops:

- the **reader** (the request's own greenlet) receives frames, runs their requests and queues
  the replies;
- the **sender** (a thread, a greenlet once gevent has patched) is the only writer: it sends
  queued replies first, then whatever the :class:`~tether.feed.Feed` has collected for the
  attached sessions and the inbox, and a ``ping`` notification when nothing went out for
  ``TETHER_KEEPALIVE`` seconds.

Delivery is by cursor (DESIGN.md rule 2): a client that stops reading blocks its sender on
the socket and the events wait in the log, so the server's memory does not grow. A write that
cannot finish within :data:`SEND_TIMEOUT_SECONDS` closes the socket, and so does a peer that
stops acknowledging for that long (half-open: Linux ``TCP_USER_TIMEOUT``); the client resumes
with ``session.attach {after}``. Closing a socket detaches it and changes nothing else: turns keep
running (DESIGN.md rule 4).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from flask import Blueprint, request
from flask_sock import Sock
from pydantic import Field
from simple_websocket import ConnectionClosed
from wsproto.events import TextMessage

from blueprints import current_core, jsonrpc
from blueprints.bodies import (
    ApprovalAnswer,
    Body,
    ClarifyAnswer,
    CreateSession,
    Prompt,
    UpdateSession,
    validate,
)
from blueprints.fanout import FANOUT, DirectSocket, Member, direct_socket
from blueprints.sendguard import REAPER, SEND_TIMEOUT_SECONDS, Watch, set_user_timeout
from tether.events import Event
from tether.feed import Delivery, Feed
from tether.sessions import Session, SessionRegistry

logger = logging.getLogger(__name__)

bp = Blueprint("ws", __name__)
sock = Sock()

try:
    VERSION = version("tether")
except PackageNotFoundError:  # run from a checkout that was never installed
    VERSION = "0+unknown"

# SEND_TIMEOUT_SECONDS (10 s, blueprints.sendguard): a write that takes longer closes the socket.
#: How often (seconds) the reader wakes to check the sender is not stuck.
WATCHDOG_SECONDS = SEND_TIMEOUT_SECONDS / 2
#: Replies waiting for the sender; a client that pipelines more without reading waits.
OUTBOX_SIZE = 64
#: Largest frame accepted, in bytes; a bigger one closes the socket with 1009.
MAX_MESSAGE_BYTES = 1 << 20
#: Bytes per write: a wake-up's frames are joined up to this size (one frame may exceed it),
#: so a blocked write holds one chunk, not a batch of events.
CHUNK_BYTES = 16 * 1024


# -- params ------------------------------------------------------------------------------

class NoParams(Body):
    pass


class SessionRef(Body):
    session_id: str = Field(max_length=200)


class AttachParams(SessionRef):
    after: int | None = Field(None, ge=0, le=10**18)
    epoch: str | None = Field(None, max_length=100)


class UpdateParams(SessionRef, UpdateSession):
    pass


class SubmitParams(SessionRef, Prompt):
    pass


class QueueRef(SessionRef):
    n: int = Field(ge=1, le=10**9)
    queue_id: str | None = Field(None, max_length=200)


class ApprovalParams(SessionRef, ApprovalAnswer):
    request_id: str = Field(max_length=200)


class ClarifyParams(SessionRef, ClarifyAnswer):
    request_id: str = Field(max_length=200)


# -- the socket --------------------------------------------------------------------------

class _WholeSends:
    """The connection's socket, with every ``send`` a ``sendall`` under one lock.

    simple-websocket 1.1.0 writes frames with ``sock.send``, which may write only part of a
    large frame (miguelgrinberg/simple-websocket#45); its reader thread also writes (pong,
    close). This proxy makes each write whole and serializes them, and tells how long the
    current write has been blocked (:meth:`stuck_for`, seconds) for the send timeout.

    The session's shared writer (blueprints.fanout) writes to the OS socket directly while
    nothing goes through here (:meth:`busy`); the rest of a write the socket took only in part
    is :meth:`hold`-en, and goes out ahead of the next write.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._lock = threading.Lock()
        self._since: float | None = None
        self._rest = b""

    def send(self, data: bytes, *flags: int) -> int:
        with self._lock:
            self._since = time.monotonic()
            rest, self._rest = self._rest, b""
            try:
                self._raw.sendall(rest + data if rest else data, *flags)
            finally:
                self._since = None
        return len(data)

    def busy(self) -> bool:
        """Whether a write is under way."""
        return self._lock.locked()

    def hold(self, rest: bytes) -> None:
        """Write ``rest`` (the tail of a frame) before whatever is sent next."""
        self._rest += rest

    def flush(self) -> None:
        """Write what :meth:`hold` holds, if anything."""
        if self._rest:
            self.send(b"")

    def stuck_for(self) -> float:
        since = self._since
        return 0.0 if since is None else time.monotonic() - since

    def abort(self) -> None:
        """Shut the socket down both ways: a blocked write fails, the reader stops."""
        try:
            self._raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def _nothing() -> None:
    pass


def text_frame(payload: bytes) -> bytes:
    """A whole, unmasked text message as a server sends it (RFC 6455 section 5.2: FIN and
    opcode 0x1, then the length in 7, 7+16 or 7+64 bits). For connections without extensions,
    where the bytes of a message are the same for every client."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


@functools.lru_cache(maxsize=4096)
def _event_message(head: bytes, data: bytes) -> bytes:
    """The ``event`` notification of one event, framed: built once per event, not once per
    client (``data`` is the event's own bytes object, whose hash Python keeps)."""
    return text_frame(head + data + b"}}")


@functools.lru_cache(maxsize=1024)
def _event_head(session_id: str | None) -> bytes:
    """The start of an ``event`` notification for a session (once per session, not per
    client per wake-up, so that :func:`_event_message`'s key is the same object)."""
    return ('{"jsonrpc":"2.0","method":"event","params":{"session_id":'
            + jsonrpc.dumps(session_id) + ',"event":').encode("ascii")


@functools.lru_cache(maxsize=1024)
def _event_framer(session_id: str) -> Callable[[Event], bytes]:
    """A session's events as uncompressed messages, for its shared writer: one function per
    session, so that the writer frames each event once for all its WebSockets."""
    head = _event_head(session_id)

    def frame(event: Event) -> bytes:
        return _event_message(head, event.data)

    return frame


@sock.route("/api/ws", bp=bp)
def websocket(ws: Any) -> None:
    core = current_core()
    label = f"ws {request.remote_addr or 'client'}"
    # simple-websocket accepts permessage-deflate only when the client offers it.
    offered = request.headers.get("Sec-WebSocket-Extensions", "")
    compressed = "permessage-deflate" in offered.lower()
    # A compressed connection's messages are its own: no shared writer for it.
    direct = (direct_socket(request.environ)
              if core.settings.shared_writer and not compressed else None)
    if direct is not None:  # after the upgrade the socket carries frames, not HTTP chunks
        direct = dataclasses.replace(direct, chunked=False)
    Connection(ws, core, label, compressed=compressed, direct=direct).run()


class Connection:
    """One client socket: its feed, its reader and its sender.

    :param compressed: whether the client offered permessage-deflate (RFC 7692), so that the
        connection may compress: its messages are framed by its own wsproto state. Without
        it, an event's message is framed once and the same bytes go to every client.
    :param direct: the socket for the sessions' shared writers (blueprints.fanout), which
        then write the live tail of every attached session that has caught up.
    """

    def __init__(self, ws: Any, core: SessionRegistry, label: str,
                 compressed: bool = True, direct: DirectSocket | None = None) -> None:
        self.ws = ws
        self.core = core
        self.label = label
        self.compressed = compressed
        self.direct = direct
        # A half-open peer never acknowledges our pings: the kernel aborts the connection
        # after SEND_TIMEOUT_SECONDS (Linux), and the reader, blocked in recv, sees it at once.
        set_user_timeout(ws.sock, SEND_TIMEOUT_SECONDS)
        self.socket = _WholeSends(ws.sock)
        ws.sock = self.socket
        self.feed = Feed(core.epoch)
        self.outbox: queue.Queue[str] = queue.Queue(OUTBOX_SIZE)
        self.closed = threading.Event()
        self._deferred: list[Callable[[], None]] = []
        self._inbox_wanted = False
        self._methods: dict[str, tuple[type[Body], Callable[[Any], Any]]] = {
            "session.create": (CreateSession, self.session_create),
            "session.list": (NoParams, self.session_list),
            "session.get": (SessionRef, self.session_get),
            "session.update": (UpdateParams, self.session_update),
            "session.delete": (SessionRef, self.session_delete),
            "session.attach": (AttachParams, self.session_attach),
            "session.detach": (SessionRef, self.session_detach),
            "prompt.submit": (SubmitParams, self.prompt_submit),
            "queue.send": (QueueRef, self.queue_send),
            "queue.remove": (QueueRef, self.queue_remove),
            "turn.cancel": (SessionRef, self.turn_cancel),
            "approval.respond": (ApprovalParams, self.approval_respond),
            "clarify.respond": (ClarifyParams, self.clarify_respond),
            "inbox.subscribe": (NoParams, self.inbox_subscribe),
            "inbox.unsubscribe": (NoParams, self.inbox_unsubscribe),
            "ping": (NoParams, self.ping),
        }

    # -- loops ---------------------------------------------------------------------------

    def run(self) -> None:
        """The reader loop; returns when the socket closes."""
        settings = self.core.settings
        # The inbox's close tells this socket the server is stopping.
        self.feed.subscribe_inbox(self.core.inbox, snapshots=False)
        self.ws.send(jsonrpc.notification("gateway.ready", {
            "version": VERSION, "epoch": self.core.epoch,
            "keepalive_seconds": settings.keepalive_seconds}))
        sender = threading.Thread(target=self._sender, name="tether-ws-sender", daemon=True)
        sender.start()
        self.core.metrics.clients.labels("websocket").inc()
        try:
            while not self.closed.is_set():
                frame = self.ws.receive(timeout=WATCHDOG_SECONDS)
                if frame is None:
                    if self.socket.stuck_for() > SEND_TIMEOUT_SECONDS:
                        logger.info("closing a WebSocket: a write took over %gs",
                                    SEND_TIMEOUT_SECONDS)
                        break
                    continue
                self._deferred.clear()
                reply = jsonrpc.handle(frame, self.call)
                if reply is not None:
                    self.outbox.put(reply, timeout=SEND_TIMEOUT_SECONDS)
                    self.feed.wake()
                for action in self._deferred:
                    action()
        except (ConnectionClosed, queue.Full):
            pass
        finally:
            self.core.metrics.clients.labels("websocket").dec()
            self.closed.set()
            if self.socket.stuck_for() > 0:
                self.socket.abort()
            self.feed.close()
            sender.join(SEND_TIMEOUT_SECONDS)

    def _sender(self) -> None:
        keepalive = self.core.settings.keepalive_seconds
        # The reaper's keepalive clock wakes the feed (tick) when nothing went out for
        # `keepalive` seconds, so that the wait needs no timer of its own (sendguard.Reaper).
        clock = REAPER.watch(None, _nothing, on_idle=self.feed.tick, idle_seconds=keepalive)
        lent: list[tuple[str, Member]] = []
        try:
            while not self.closed.is_set():
                if self.direct is not None:
                    lent = self._lend(self.direct, clock)
                self.feed.wait(None)
                if lent:
                    # Back from the shared writers before anything else is written.
                    self._reclaim(lent)
                    lent = []
                sent = False
                while not self.outbox.empty():
                    self.ws.send(self.outbox.get_nowait())
                    sent = True
                deliveries = self.feed.collect()
                self.core.metrics.delivering_all("websocket", deliveries)
                stopping = any(d.kind == "detached" and d.session_id is None
                               for d in deliveries)
                if self._send_all(self._messages(deliveries)):
                    sent = True
                if stopping:
                    self.ws.close(1001, "the server is stopping")
                    return
                # The clock has every write, the shared writers' too.
                if sent:
                    clock.wrote()
                elif time.monotonic() - clock.last_write >= keepalive * 0.9:  # (a coarse clock)
                    self.ws.send(jsonrpc.notification("ping", {"ts": round(time.time(), 3)}))
                    clock.wrote()
        except (ConnectionClosed, OSError):
            pass
        finally:
            for _, member in lent:
                FANOUT.leave(member)
            REAPER.forget(clock)
            self.closed.set()
            self.socket.abort()  # wakes the reader: this socket is done

    def _lend(self, direct: DirectSocket, clock: Watch) -> list[tuple[str, Member]]:
        """Hand every attached session that has caught up to its shared writer."""
        lent = []
        for session_id in self.feed.attached:
            handed = self.feed.lend(session_id)
            if handed is None:
                continue
            log, cursor = handed
            member = Member(direct, cursor, _event_framer(session_id), self.feed.tick,
                            transport="websocket", watch=clock, metrics=self.core.metrics,
                            busy=self.socket.busy, hold=self.socket.hold)
            FANOUT.join(log, member)
            lent.append((session_id, member))
        return lent

    def _reclaim(self, lent: list[tuple[str, Member]]) -> None:
        """Take the sessions back from their writers, then write what a partial write left.

        :raises ConnectionClosed: a writer found the socket failed.
        """
        failed = False
        for session_id, member in lent:
            cursor, _ = FANOUT.leave(member)
            self.feed.reclaim(session_id, cursor)
            failed = failed or member.failed
        if failed:
            raise ConnectionClosed()
        self.socket.flush()

    def _messages(self, deliveries: Iterable[Delivery]) -> Iterator[bytes]:
        """The framed messages of a wake-up's deliveries, in order (the server-stopping
        ``detached`` has none: the close frame follows)."""
        ws = self.ws
        for delivery in deliveries:
            if delivery.kind == "detached" and delivery.session_id is None:
                continue
            if delivery.kind == "events" and not self.compressed:
                head = _event_head(delivery.session_id)
                for event in delivery.events:
                    yield _event_message(head, event.data)
                continue
            for text in _frames(delivery, self.feed.epoch):
                if self.compressed:  # the connection's own framing and compression state
                    yield ws.ws.send(TextMessage(data=text))
                else:
                    yield text_frame(text.encode("utf-8"))

    def _send_all(self, messages: Iterable[bytes]) -> bool:
        """Write framed ``messages`` in as few writes as :data:`CHUNK_BYTES` allows: one per
        wake-up, usually, not one per event. :returns: whether anything was written.

        :raises ConnectionClosed: the socket is closed.
        """
        ws = self.ws
        if not ws.connected:
            raise ConnectionClosed(ws.close_reason, ws.close_message)
        chunk: list[bytes] = []
        size = 0
        wrote = False
        for data in messages:
            chunk.append(data)
            size += len(data)
            if size >= CHUNK_BYTES:
                self.socket.send(b"".join(chunk))
                chunk, size, wrote = [], 0, True
        if chunk:
            self.socket.send(b"".join(chunk))
            wrote = True
        return wrote

    def call(self, method: str, params: dict[str, Any]) -> Any:
        """The JSON-RPC handler: validate ``params`` for ``method`` and run it."""
        entry = self._methods.get(method)
        if entry is None:
            raise jsonrpc.method_not_found(method)
        model, function = entry
        return function(validate(model, params, "params"))

    # -- methods -------------------------------------------------------------------------

    def _session(self, params: SessionRef) -> Session:
        return self.core.get(params.session_id)

    def session_create(self, params: CreateSession) -> dict[str, Any]:
        return self.core.create(agent=params.agent, title=params.title, cwd=params.cwd,
                                model=params.model, permission_mode=params.permission_mode,
                                by=params.client or self.label,
                                resume=params.resume).to_dict()

    def session_list(self, params: NoParams) -> dict[str, Any]:
        return {"sessions": self.core.summaries(), "epoch": self.core.epoch}

    def session_get(self, params: SessionRef) -> dict[str, Any]:
        return self._session(params).to_dict()

    def session_update(self, params: UpdateParams) -> dict[str, Any]:
        session = self._session(params)
        session.update(title=params.title, auto_approve=params.auto_approve,
                       model=params.model, permission_mode=params.permission_mode,
                       by=params.client or self.label)
        return session.to_dict()

    def session_delete(self, params: SessionRef) -> dict[str, Any]:
        self.core.delete(params.session_id)
        return {"deleted": True}

    def session_attach(self, params: AttachParams) -> dict[str, Any]:
        session = self._session(params)
        info = self.feed.attach(session.log, params.after or 0, params.epoch, paused=True)
        # Replay only once the reply is queued: the reply goes out first.
        self._deferred.append(lambda: self.feed.start(session.id))
        return info

    def session_detach(self, params: SessionRef) -> dict[str, Any]:
        return {"detached": self.feed.detach(params.session_id)}

    def prompt_submit(self, params: SubmitParams) -> dict[str, Any]:
        return self._session(params).prompt(params.text, queue=params.queue)

    def queue_send(self, params: QueueRef) -> dict[str, Any]:
        return {"turn": self._session(params).send_queued(params.n, params.queue_id)}

    def queue_remove(self, params: QueueRef) -> dict[str, Any]:
        self._session(params).remove_queued(params.n, params.queue_id)
        return {"removed": True}

    def turn_cancel(self, params: SessionRef) -> dict[str, Any]:
        return {"cancelled": self._session(params).cancel()}

    def approval_respond(self, params: ApprovalParams) -> dict[str, Any]:
        request_ = self._session(params).prompts.answer_approval(
            params.request_id, params.decision, by=params.client or self.label,
            message=params.message, updated_input=params.updated_input,
            updated_permissions=params.updated_permissions, option_id=params.option_id)
        return {"request_id": request_.request_id, "resolved": True,
                "decision": params.decision}

    def clarify_respond(self, params: ClarifyParams) -> dict[str, Any]:
        request_ = self._session(params).prompts.answer_clarify(
            params.request_id, params.answers, by=params.client or self.label)
        return {"request_id": request_.request_id, "resolved": True, "answers": params.answers}

    def inbox_subscribe(self, params: NoParams) -> dict[str, Any]:
        self._inbox_wanted = True
        snapshot = self.core.inbox.snapshot()
        # Notifications start after the reply, from the revision the reply carries.
        self._deferred.append(lambda: self.feed.subscribe_inbox(
            self.core.inbox, snapshots=True, seen=snapshot["revision"]))
        return snapshot

    def inbox_unsubscribe(self, params: NoParams) -> dict[str, Any]:
        was, self._inbox_wanted = self._inbox_wanted, False
        self.feed.subscribe_inbox(self.core.inbox, snapshots=False)
        return {"unsubscribed": was}

    def ping(self, params: NoParams) -> dict[str, Any]:
        return {"ts": round(time.time(), 3)}


def _frames(delivery: Delivery, epoch: str) -> list[str]:
    """The notifications for one delivery. An event's JSON was encoded once, at append; it is
    spliced in as is (it is ASCII)."""
    sid = delivery.session_id
    if delivery.kind == "events":
        head = ('{"jsonrpc":"2.0","method":"event","params":{"session_id":'
                + jsonrpc.dumps(sid) + ',"event":')
        return [head + e.data.decode("ascii") + "}}" for e in delivery.events]
    if delivery.kind == "caught_up":
        return [jsonrpc.notification("caught_up", {
            "session_id": sid, "last_event_id": delivery.last_event_id, "epoch": epoch})]
    if delivery.kind == "reset":
        return [jsonrpc.notification("reset", {
            "session_id": sid, "epoch": epoch, "last_event_id": delivery.last_event_id})]
    if delivery.kind == "detached":
        return [jsonrpc.notification("detached", {"session_id": sid, "reason": "ended"})]
    return [jsonrpc.notification("inbox", delivery.snapshot)]
