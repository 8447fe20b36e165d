"""A small synchronous JSON-RPC 2.0 client over WebSocket (websocket-client), for tests.

``call`` sends a request and reads frames until its reply, keeping the notifications that
arrive meanwhile in order; ``notification`` and ``events_until`` read those.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import deque
from typing import Any

import websocket

from tests.support import AUTH_HEADERS


class RpcFailure(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error['code']}: {error['message']}")
        self.code = error["code"]
        self.message = error["message"]
        self.data = error.get("data")


class WsClient:
    def __init__(self, base_url: str, timeout: float = 15, **options: Any) -> None:
        url = base_url.replace("http://", "ws://", 1) + "/api/ws"
        options.setdefault("header", [f"{k}: {v}" for k, v in AUTH_HEADERS.items()])
        self.socket = websocket.create_connection(url, timeout=timeout, **options)
        self.timeout = timeout
        self.notifications: deque[dict[str, Any]] = deque()
        self._ids = itertools.count(1)
        self.ready = self.notification("gateway.ready")

    def close(self) -> None:
        try:
            self.socket.close(timeout=1)
        except (OSError, websocket.WebSocketException):
            pass  # the server closed it first
        finally:
            self.socket.shutdown()  # releases the OS socket whatever happened

    def __enter__(self) -> WsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, frame: str) -> None:
        self.socket.send(frame)

    def recv(self, timeout: float | None = None) -> Any:
        """The next frame, parsed."""
        self.socket.settimeout(timeout if timeout is not None else self.timeout)
        return json.loads(self.socket.recv())

    def close_code(self, timeout: float = 10) -> int:
        """Read frames until the server's close frame; its status code (RFC 6455, 7.4)."""
        self.socket.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            opcode, data = self.socket.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return int.from_bytes(data[:2], "big")
        raise AssertionError("the server did not close the socket")

    def call(self, method: str, **params: Any) -> Any:
        """:raises RpcFailure: the server answered with an error."""
        request_id = next(self._ids)
        self.socket.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method,
                                     "params": params}))
        reply = self.reply(request_id)
        if "error" in reply:
            raise RpcFailure(reply["error"])
        return reply["result"]

    def reply(self, request_id: Any) -> dict[str, Any]:
        """Read until the reply to ``request_id``; notifications are kept."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            message = self.recv()
            if isinstance(message, dict) and "method" in message and "id" not in message:
                self.notifications.append(message)
                continue
            if isinstance(message, list) or message.get("id") == request_id:
                return message
            raise AssertionError(f"unexpected reply {message}")
        raise AssertionError(f"no reply to {request_id}")

    def notification(self, method: str | None = None, timeout: float | None = None,
                     skip: tuple[str, ...] = ("ping",)) -> dict[str, Any]:
        """The next notification (of ``method``, when given), as its params with ``"method"``
        added. Notifications of other methods stay queued, in order; ``skip`` ones (pings)
        are dropped."""
        for message in list(self.notifications):
            if method is None or message["method"] == method:
                self.notifications.remove(message)
                return {"method": message["method"], **(message.get("params") or {})}
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            message = self.recv(max(deadline - time.monotonic(), 0.01))
            if "method" not in message:
                raise AssertionError(f"a reply nobody waits for: {message}")
            if message["method"] in skip and method not in skip:
                continue
            if method is None or message["method"] == method:
                return {"method": message["method"], **(message.get("params") or {})}
            self.notifications.append(message)
        raise AssertionError(f"no {method or 'notification'} within the timeout")

    def events_until(self, session_id: str, kind: str, timeout: float = 30) -> list[dict]:
        """Events of ``session_id`` up to and including the first of ``kind``."""
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            note = self.notification("event", timeout=max(deadline - time.monotonic(), 0.01))
            if note["session_id"] != session_id:
                continue
            events.append(note["event"])
            if note["event"]["kind"] == kind:
                return events
        raise AssertionError(f"no {kind} event within {timeout} s")
