"""JSON-RPC 2.0 envelopes (https://www.jsonrpc.org/specification): parse a frame, run its
requests through a handler, encode replies and notifications. No Flask, no sockets.

Batches are supported as section 6 says: an array gets an array of replies (none for
notifications; nothing at all when every member is a notification); an empty array is one
-32600 error. A batch holds at most :data:`MAX_BATCH` requests.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from blueprints.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    JSONRPC_CODE,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
)
from tether.errors import TetherError

logger = logging.getLogger(__name__)

#: Most requests in one batch.
MAX_BATCH = 100

_ABSENT = object()


class RpcError(Exception):
    """An error reply: ``code`` from the specification's table or Tether's -32001..-32004."""

    def __init__(self, code: int, message: str, tether_code: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.tether_code = tether_code

    @classmethod
    def from_tether(cls, error: TetherError) -> RpcError:
        return cls(JSONRPC_CODE.get(error.code, INTERNAL_ERROR), error.message, error.code)


#: ``handler(method, params)``: the result, or raise :class:`RpcError` / ``TetherError``.
Handler = Callable[[str, dict[str, Any]], Any]


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def result(request_id: Any, value: Any) -> str:
    return dumps({"jsonrpc": "2.0", "id": request_id, "result": value})


def error(request_id: Any, exc: RpcError) -> str:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.tether_code:
        body["data"] = {"code": exc.tether_code}
    return dumps({"jsonrpc": "2.0", "id": request_id, "error": body})


def notification(method: str, params: Any) -> str:
    return dumps({"jsonrpc": "2.0", "method": method, "params": params})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def handle(frame: str | bytes, handler: Handler) -> str | None:
    """Run one WebSocket frame's request(s); the reply frame, or None when nothing is owed.

    A binary frame, like any frame that is not a JSON-RPC request, is an invalid request.
    """
    if isinstance(frame, bytes):
        return error(None, RpcError(INVALID_REQUEST, "send JSON-RPC as text frames",
                                    "bad_request"))
    try:
        message = json.loads(frame, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        return error(None, RpcError(PARSE_ERROR, f"parse error: {exc}", "bad_request"))
    if isinstance(message, list):
        if not message:
            return error(None, RpcError(INVALID_REQUEST, "an empty batch", "bad_request"))
        if len(message) > MAX_BATCH:
            return error(None, RpcError(INVALID_REQUEST,
                                        f"a batch holds at most {MAX_BATCH} requests",
                                        "bad_request"))
        replies = [r for r in (_one(m, handler) for m in message) if r is not None]
        return "[" + ",".join(replies) + "]" if replies else None
    return _one(message, handler)


def _one(message: Any, handler: Handler) -> str | None:
    if not isinstance(message, dict):
        return error(None, RpcError(INVALID_REQUEST, "a request must be a JSON object",
                                    "bad_request"))
    request_id = message.get("id", _ABSENT)
    valid_id = request_id is _ABSENT or request_id is None or (
        isinstance(request_id, (str, int)) and not isinstance(request_id, bool))
    reply_id = request_id if valid_id and request_id is not _ABSENT else None
    method = message.get("method")
    params = message.get("params", {})
    problem = None
    if message.get("jsonrpc") != "2.0":
        problem = 'jsonrpc must be "2.0"'
    elif not valid_id:
        problem = "id must be a string, an integer or null"
    elif not isinstance(method, str) or not method:
        problem = "method must be a non-empty string"
    if problem:
        return error(reply_id, RpcError(INVALID_REQUEST, problem, "bad_request"))
    notify = request_id is _ABSENT
    try:
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise RpcError(INVALID_PARAMS, "params must be an object (by-name parameters)",
                           "bad_request")
        reply = result(reply_id, handler(method, params))
    except RpcError as exc:
        return None if notify else error(reply_id, exc)
    except TetherError as exc:
        return None if notify else error(reply_id, RpcError.from_tether(exc))
    except Exception:
        logger.exception("JSON-RPC method %s failed", method[:100])
        return None if notify else error(reply_id, RpcError(INTERNAL_ERROR, "internal error",
                                                            "internal_error"))
    return None if notify else reply


def method_not_found(method: str) -> RpcError:
    return RpcError(METHOD_NOT_FOUND, f"no method {method[:100]!r}", "method_not_found")
