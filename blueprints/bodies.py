"""Request bodies: JSON only, validated by pydantic models that name the offending field, and
read within a deadline (``TETHER_BODY_TIMEOUT``).

gunicorn's gevent worker gives a request's line and headers its ``keepalive`` (5 s) to arrive,
but nothing bounds its body: a client that trickles a body one byte every few seconds would
hold a greenlet and a connection for as long as it likes. :func:`read_deadline` bounds the
whole read with a :class:`gevent.Timeout`; past it the answer is 408 ``request_timeout`` with
``Connection: close`` (the rest of the body is never read, so the connection cannot carry
another request, and the socket's reading half is shut so that the server does not read it
either). :class:`CloseWhenAsked` makes gunicorn honour that header.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import gevent
from flask import request
from gevent import monkey
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from werkzeug.exceptions import HTTPException

from blueprints import current_core
from blueprints.sendguard import stream_socket
from tether.errors import BadRequest, RequestTimeout, UnsupportedMediaType
from tether.images import MAX_IMAGES

M = TypeVar("M", bound=BaseModel)

#: Longest client label (``by`` in resolved events), in characters.
MAX_CLIENT_CHARS = 100


class Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class CreateSession(Body):
    agent: str | None = None
    title: str | None = None
    #: A folder under ``TETHER_PROJECT_ROOTS`` to open the session in; absent: the
    #: session's own empty workspace.
    cwd: str | None = None
    #: One of the agent's ``models`` / ``permission_modes`` (``GET /api/agents``); absent:
    #: its default. Checked against the agent's lists by the core (400 naming them).
    model: str | None = Field(None, max_length=200)
    permission_mode: str | None = Field(None, max_length=100)
    #: Who made the choice, for the ``model`` / ``mode`` events (default: the address).
    client: str | None = Field(None, max_length=MAX_CLIENT_CHARS)
    #: The id of a conversation the agent saved for ``cwd`` on its own
    #: (``GET /api/projects/conversations``): the session continues it.
    resume: str | None = Field(None, max_length=100)


class UpdateSession(Body):
    title: str | None = None
    auto_approve: bool | None = None
    model: str | None = Field(None, max_length=200)
    permission_mode: str | None = Field(None, max_length=100)
    client: str | None = Field(None, max_length=MAX_CLIENT_CHARS)


class ImageIn(Body):
    #: ``image/png``, ``image/jpeg``, ``image/gif`` or ``image/webp`` (another: 415).
    media_type: str = Field(max_length=100)
    #: The image's bytes in base64 (RFC 4648 section 4).
    data: str


class Prompt(Body):
    text: str
    #: While a turn runs: queue the prompt (202 ``{"queued": n}``) instead of 409.
    queue: bool = False
    #: Images sent to the agent with the text (tether/images.py).
    images: list[ImageIn] = Field(default_factory=list, max_length=MAX_IMAGES)


class ApprovalAnswer(Body):
    decision: Literal["allow", "deny"]
    message: str | None = Field(None, max_length=10_000)
    client: str | None = Field(None, max_length=MAX_CLIENT_CHARS)
    updated_input: dict[str, Any] | None = None
    updated_permissions: list[dict[str, Any]] | None = None
    #: The agent's own option picked, one of the request's ``options`` (Codex, ACP agents).
    option_id: str | None = Field(None, min_length=1, max_length=200)


class PushKeys(Body):
    #: The device's P-256 public key, uncompressed, URL-safe base64.
    p256dh: str = Field(max_length=200)
    #: The device's 16-byte auth secret, URL-safe base64.
    auth: str = Field(max_length=100)


class PushSubscribe(Body):
    """The browser's ``PushSubscription.toJSON()``, and the events the device wants."""

    #: The push service's URL for this device: ``https://`` on a DNS name.
    endpoint: str = Field(max_length=2000)
    keys: PushKeys
    #: ``prompts``: approvals and questions (the default); ``turn_end``: every finished turn.
    events: list[Literal["prompts", "turn_end"]] = Field(
        default_factory=lambda: ["prompts"], max_length=2)


class PushUnsubscribe(Body):
    endpoint: str = Field(max_length=2000)


class ClarifyAnswer(Body):
    answers: dict[str, str]
    client: str | None = Field(None, max_length=MAX_CLIENT_CHARS)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _reads_cooperate() -> bool:
    """True when a blocking socket read yields to gevent's hub (gunicorn's gevent worker and
    ``python app.py`` monkey-patch ``socket``), so that a :class:`gevent.Timeout` can end it.
    The Flask test client's bodies are in memory: nothing to bound there."""
    return bool(monkey.is_module_patched("socket"))


@contextmanager
def read_deadline() -> Iterator[None]:
    """Bound the reading of the request body inside the block to ``TETHER_BODY_TIMEOUT``
    seconds in all, counted from the block's start (right after the headers, in the view).

    Enforced where reads are cooperative (:func:`_reads_cooperate`); elsewhere a no-op.

    :raises RequestTimeout: the deadline passed before the block ended (408
        ``request_timeout``; the answer closes the connection: ``blueprints.errors``).
    """
    seconds = current_core().settings.body_timeout_seconds
    if not _reads_cooperate():
        yield
        return
    timer = gevent.Timeout(seconds)
    timer.start()
    try:
        yield
    except gevent.Timeout as exc:
        if exc is not timer:
            raise  # someone else's deadline
        _stop_reading(request.environ)
        raise RequestTimeout(f"the request body did not arrive within {seconds:g} s "
                             "(TETHER_BODY_TIMEOUT)") from None
    finally:
        timer.close()


def _stop_reading(environ: dict[str, Any]) -> None:
    """Shut the reading half of the client's socket: a server that reads the rest of an
    unread body before it answers or closes (gevent's pywsgi does, even when closing) sees
    its end at once instead of waiting on the client."""
    sock = stream_socket(environ)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass  # already gone


def json_body(model: type[M], *, optional: bool = False) -> M:
    """The request body parsed as ``model``, read within :func:`read_deadline`.

    :param optional: an empty body counts as ``{}`` (whatever its content type).
    :raises UnsupportedMediaType: a non-empty body that is not ``application/json``.
    :raises BadRequest: invalid JSON, not an object, or a missing / wrong-typed field (named),
        or a body that cannot be read (a malformed chunked encoding).
    :raises RequestTimeout: the body did not arrive within ``TETHER_BODY_TIMEOUT`` (408).
    :raises werkzeug.exceptions.RequestEntityTooLarge: over ``MAX_CONTENT_LENGTH`` (413).
    """
    with read_deadline():
        try:
            raw = request.get_data(cache=False)
            if raw and request.content_length is None:
                # A chunked body: werkzeug's readall stops at MAX_CONTENT_LENGTH without a word
                # (werkzeug 3.1), so a longer body would be parsed cut short. One more read
                # raises its 413 when the limit was reached.
                request.stream.read(1)
        except HTTPException:
            raise
        except Exception as exc:
            # The WSGI server's body reader failed on the client's framing (gunicorn raises
            # its own InvalidChunkSize, ChunkMissingTerminator …; a client may vanish
            # mid-body). The deadline's gevent.Timeout is a BaseException: not caught here.
            raise BadRequest(f"the body could not be read ({type(exc).__name__})") from None
    if optional and not raw.strip():
        return model.model_validate({})
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("the body must be JSON (Content-Type: application/json)")
    try:
        data = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return validate(model, data, "body")


def validate(model: type[M], data: dict[str, Any], what: str) -> M:
    """``data`` parsed as ``model``.

    :param what: how to name the whole object in an error (``body``, ``params``).
    :raises BadRequest: a missing or wrong-typed field, named (``params.session_id: …``), or
        a string with a lone surrogate (``"\\ud800"`` is valid JSON but no Unicode text: it could
        not be stored, sent to an agent or echoed to another client as UTF-8).
    """
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{what}: a string holds a lone surrogate (not Unicode text)") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join([what, *(str(p) for p in first["loc"])])
        raise BadRequest(f"{where}: {first['msg']}") from None


StartResponse = Callable[..., Any]


class CloseWhenAsked:
    """WSGI middleware: a response with ``Connection: close`` ends its connection, under
    gunicorn too.

    PEP 3333 leaves connection management to the server. gevent's pywsgi and werkzeug's
    server honour an application's ``Connection: close``; gunicorn drops the header (hop by
    hop), answers ``Connection: keep-alive`` and goes on reading the connection (the unread
    rest of the body first, for up to its keepalive) for a next request. Its
    ``start_response`` is a method of its response object, whose ``force_close()`` makes it
    send ``Connection: close`` and close after the response: that is called when present.
    """

    def __init__(self, app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            if any(name.lower() == "connection" and value.strip().lower() == "close"
                   for name, value in headers):
                force_close = getattr(getattr(start_response, "__self__", None),
                                      "force_close", None)
                if callable(force_close):
                    force_close()
            return start_response(status, headers, *exc_info)

        return self.app(environ, start)
