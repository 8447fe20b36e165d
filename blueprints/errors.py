"""Every error as JSON: ``{"error": {"code": "...", "message": "..."}}`` (DESIGN.md section 4).

:data:`HTTP_STATUS` is the one table from a Tether error code to an HTTP status;
:data:`JSONRPC_CODE` the one table to a JSON-RPC 2.0 error code (docs/protocol.md).
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from tether.errors import StoreUnavailable, TetherError

logger = logging.getLogger(__name__)

bp = Blueprint("errors", __name__)

HTTP_STATUS = {
    "bad_request": 400,
    "path_not_allowed": 400,
    "not_a_directory": 400,
    "mode_not_allowed": 400,
    "agent_unavailable": 400,
    "endpoint_not_allowed": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "auto_approve_disabled": 403,
    "host_not_allowed": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "session_busy": 409,
    "queue_full": 409,
    "already_resolved": 409,
    "too_many_sessions": 409,
    "conversation_open": 409,
    "payload_too_large": 413,
    "git_failed": 422,
    "unsupported_media_type": 415,
    "too_many_requests": 429,
    "request_header_fields_too_large": 431,
    "internal_error": 500,
    "shutting_down": 503,
    "store_unavailable": 503,
}

#: JSON-RPC 2.0 error codes (specification section 5.1) and Tether's own (-32001 to -32013).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

JSONRPC_CODE = {
    "bad_request": INVALID_PARAMS,
    "path_not_allowed": INVALID_PARAMS,
    "not_a_directory": INVALID_PARAMS,
    "endpoint_not_allowed": INVALID_PARAMS,
    "payload_too_large": INVALID_PARAMS,
    "unsupported_media_type": INVALID_PARAMS,
    "not_found": -32001,
    "session_busy": -32002,
    "already_resolved": -32003,
    "unauthorized": -32004,
    "forbidden": -32004,
    "too_many_sessions": -32005,
    "internal_error": INTERNAL_ERROR,
    "shutting_down": -32006,
    "auto_approve_disabled": -32007,
    "queue_full": -32008,
    "store_unavailable": -32009,
    "git_failed": -32010,
    "mode_not_allowed": -32011,
    "conversation_open": -32012,
    "agent_unavailable": -32013,
}

_CODE_FOR_STATUS = {status: code for code, status in HTTP_STATUS.items()
                    if code not in ("path_not_allowed", "not_a_directory", "mode_not_allowed",
                                    "session_busy",
                                    "queue_full", "already_resolved", "too_many_sessions",
                                    "auto_approve_disabled", "host_not_allowed",
                                    "git_failed", "conversation_open", "agent_unavailable")}


#: Codes whose answer closes the connection (``Connection: close``): the request's body was
#: not read to its end, so what follows on the connection is no request.
CLOSES_CONNECTION = frozenset({"request_timeout"})


def error_response(code: str, message: str, status: int | None = None) -> tuple[Response, int]:
    response = jsonify(error={"code": code, "message": message})
    if code in CLOSES_CONNECTION:
        response.headers["Connection"] = "close"  # gunicorn: blueprints.bodies.CloseWhenAsked
    return response, status or HTTP_STATUS[code]


#: Seconds a browser is told to wait (``Retry-After``) while the store does not answer.
STORE_RETRY_SECONDS = 5


@bp.app_errorhandler(TetherError)
def tether_error(error: TetherError) -> tuple[Response, int]:
    if isinstance(error, StoreUnavailable) and request.endpoint == "ui.index":
        return store_unavailable_page(), 503
    return error_response(error.code, error.message)


def store_unavailable_page() -> Response:
    """The page (``/``) asked for while the Redis store does not answer (a logged-in
    browser's cookie is checked against it): Tether's offline page saying so, which asks the
    API until the store answers and then reloads, never a JSON body in the browser window."""
    response = Response(render_template("offline.html", unavailable=True,
                                        check_url="/api/sessions"), mimetype="text/html")
    response.headers["Retry-After"] = str(STORE_RETRY_SECONDS)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.app_errorhandler(HTTPException)
def http_error(error: HTTPException) -> tuple[Response, int]:
    status = error.code or 500
    code = _CODE_FOR_STATUS.get(status, "bad_request" if status < 500 else "internal_error")
    return error_response(code, error.description or error.name, status)


@bp.app_errorhandler(Exception)
def unexpected_error(error: Exception) -> tuple[Response, int]:
    # A bug: log it with its traceback, answer without one.
    logger.exception("unhandled error", exc_info=error)
    return error_response("internal_error", "internal server error")
