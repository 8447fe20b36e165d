"""The loopback HTTP server the fake model APIs share: standard library only, loopback only.

:class:`FakeModelApi` serves a *script* (request body -> reply) on a free ``127.0.0.1`` port
from a daemon thread, inside ``with``. It records every request's path (``api.paths``), the
body of every request the script answers (``api.requests``) and what the script raised
(``api.errors``; the client then gets the fake's HTTP 400, never a 5xx, which the CLIs retry).
A reply's ``delay_seconds`` ends at once when the ``with`` block exits (``api.closing``).

A subclass (``anthropic_api.FakeAnthropic``, ``openai_api.FakeOpenAI``,
``gemini_api.FakeGemini``) gives only its API: :meth:`FakeModelApi.post` routes a POST and
answers through the :class:`Exchange` (``send_json`` or ``send_sse``); ``error_reply`` builds
its error replies and ``not_found_kind`` names its 404. Any GET is a 404.
"""

from __future__ import annotations

import json
import threading
import typing as t
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Body = dict[str, t.Any]
#: One SSE frame: ``(event name or None, data)``; None writes the ``data:`` line alone.
Frame = tuple[str | None, Body]


class ScriptedReply(t.Protocol):
    """What every fake's ``Reply`` has."""

    @property
    def status(self) -> int: ...
    @property
    def error(self) -> Body | None: ...
    @property
    def delay_seconds(self) -> float: ...


R = t.TypeVar("R", bound=ScriptedReply)


class FakeModelApi(t.Generic[R]):
    """Serve ``script`` on a free ``127.0.0.1`` port from a daemon thread, inside ``with``."""

    #: The error ``kind`` of a 404 (each API names it its own way).
    not_found_kind = "not_found"

    def __init__(self, script: Callable[[Body], R]) -> None:
        self.script = script
        self.requests: list[Body] = []  # bodies the script answered, in arrival order
        self.paths: list[str] = []  # path and query of every request, in arrival order
        self.errors: list[Exception] = []  # what the script raised
        self.closing = threading.Event()  # set on exit: ends every delay at once
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(  # a short poll keeps __exit__ fast
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> t.Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def answer(self, body: Body) -> R:
        """Record ``body`` and run the script on it; a raising script answers HTTP 400."""
        self.requests.append(body)  # list.append is atomic; handlers run in threads
        try:
            return self.script(body)
        except Exception as e:
            self.errors.append(e)
            return self.error_reply(400, f"fake script raised {e!r}")

    # -- what a subclass gives --------------------------------------------------------------

    @staticmethod
    def error_reply(status: int, message: str, kind: str = "") -> t.Any:
        """The fake's own ``error_reply`` (a subclass sets ``error_reply =
        staticmethod(error_reply)``); called without ``kind`` for a raising script."""
        raise NotImplementedError

    def seen(self, method: str, path: str) -> str:
        """What ``api.paths`` records of a request: its path and query."""
        return path

    def post(self, http: Exchange, path: str, raw: bytes) -> None:
        """Answer a POST to ``path`` (no query) whose body is ``raw``; unknown: a 404."""
        http.send_not_found()


class Exchange(BaseHTTPRequestHandler):  # HTTP/1.0: one request per connection
    """One request to a :class:`FakeModelApi`, with the ways to answer it."""

    api: FakeModelApi[t.Any]

    def log_message(self, format: str, *args: t.Any) -> None:
        pass  # keep test output quiet

    def do_GET(self) -> None:
        self.api.paths.append(self.api.seen("GET", self.path))
        self.send_not_found()

    def do_POST(self) -> None:
        self.api.paths.append(self.api.seen("POST", self.path))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.api.post(self, self.path.split("?", 1)[0], raw)

    def send_not_found(self) -> None:
        reply = self.api.error_reply(404, f"no route {self.path}", self.api.not_found_kind)
        self.send_json(404, reply.error)

    def send_json(self, status: int, payload: t.Any, delay_seconds: float = 0.0) -> None:
        """Answer one JSON body, after ``delay_seconds`` (cut short when the server closes)."""
        self.api.closing.wait(delay_seconds)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_sse(self, frames: Iterable[Frame], delay_seconds: float = 0.0) -> None:
        """Answer ``text/event-stream``: each frame an ``event:`` line (unless its name is
        None) and a ``data:`` line, then a blank line; hold the stream open ``delay_seconds``
        after the first frame (cut short when the server closes)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        try:
            for i, (name, data) in enumerate(frames):
                event = f"event: {name}\n" if name is not None else ""
                self.wfile.write(f"{event}data: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()
                if i == 0:
                    self.api.closing.wait(delay_seconds)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (an interrupt or a cancel): normal flow


def _handler_for(api: FakeModelApi[t.Any]) -> type[Exchange]:
    return type("Handler", (Exchange,), {"api": api})
