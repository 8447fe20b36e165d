"""``GET /api/openapi.json``: an OpenAPI 3.1 description of the HTTP API (issue 4).

The request bodies come from the pydantic models that parse them (:mod:`blueprints.bodies`,
``model_json_schema``), so the document and the validation cannot disagree; the rest (paths,
query parameters, answers, error statuses) is written out here, after README's API table,
DESIGN.md section 4 and docs/protocol.md. ``tests/blueprints/test_openapi.py`` checks that every
Flask URL rule under ``/api`` is in the document and the other way round, and fuzzes the API
against it with schemathesis.

- Security: every operation needs the token (``Authorization: Bearer <token>``, or the login
  cookie a browser traded it for), including this document: it sits under ``/api`` like the
  rest, and saying what the server can be told to do is no business of a stranger. Only
  ``/healthz`` is open (``security: []``); static files, the page and the login form are not
  API and are not described.
- Server-Sent Events (the two ``/stream`` operations) are ``text/event-stream``; as OpenAPI 3.1
  has it, their ``schema`` describes one event (``{event, data, id?, retry?}``), not the stream.
- The WebSocket (``GET /api/ws``, JSON-RPC 2.0) is a note on its path item and a ``GET``
  that documents the upgrade (101) and ``x-websocket: true``; its methods are in
  docs/protocol.md. An HTTP fuzzer cannot speak it: without an upgrade it answers 400.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic.json_schema import models_json_schema

from blueprints import bodies, poll
from blueprints.auth import cookie_name
from blueprints.errors import HTTP_STATUS
from tether.changes import GIT_TIMEOUT_SECONDS, MAX_DIFF_BYTES, MAX_FILE_BYTES, MAX_FILES
from tether.conversations import MAX_CONVERSATIONS, MAX_SCAN_BYTES
from tether.images import MAX_IMAGES
from tether.projects import MAX_ENTRIES, MAX_PATH_CHARS
from tether.sessions import MAX_QUEUED, MAX_TITLE_CHARS

bp = Blueprint("openapi", __name__)

#: OpenAPI version of the document (https://spec.openapis.org/oas/v3.1.0).
OPENAPI_VERSION = "3.1.0"

#: A cursor (event id, inbox revision) as tether.cursor accepts it: a plain ASCII decimal.
CURSOR_PATTERN = r"^(0|[1-9][0-9]{0,17})$"
#: A duration as tether.cursor.parse_seconds accepts it; empty means the default.
SECONDS_PATTERN = r"^([0-9]{1,6}(\.[0-9]{1,12})?)?$"
#: Session ids (secrets.token_hex(16)) and request ids (uuid4().hex): 32 lowercase hex digits.
ID_PATTERN = r"^[0-9a-f]{32}$"

#: Request body models, in document order.
BODY_MODELS = (bodies.CreateSession, bodies.UpdateSession, bodies.Prompt, bodies.ApprovalAnswer,
               bodies.ClarifyAnswer, bodies.PushSubscribe, bodies.PushUnsubscribe)

#: Error responses: status -> (component name, when).
ERRORS = {
    400: ("BadRequest", "Bad input: invalid JSON, a missing or wrong-typed field (named), or a "
                        "cursor that is not a plain decimal integer; `path_not_allowed`: a "
                        "folder outside every `TETHER_PROJECT_ROOTS` root (or none set, a "
                        "`..` or a symbolic link out, a NUL byte, unreadable); "
                        "`not_a_directory`: a folder inside a root that is missing or a "
                        "file (also for a session whose folder went away since); a `model` "
                        "or `permission_mode` the agent does not offer (the message names "
                        "the allowed ones, as `GET /api/agents` lists them); "
                        "`mode_not_allowed`: a permission mode that runs tools without "
                        "asking (`bypassPermissions`, `auto`) on a server started without "
                        "`TETHER_ALLOW_BYPASS=1`; `endpoint_not_allowed`: a push "
                        "subscription's endpoint that is not `https://` on a DNS name (an IP "
                        "literal, `http:`, `file:` …; loopback only with "
                        "`TETHER_PUSH_ALLOW_LOOPBACK=1`)."),
    401: ("Unauthorized", "No token, or a wrong one (`WWW-Authenticate: Bearer`)."),
    403: ("Forbidden", "`host_not_allowed`: the `Host` is not in `TETHER_ALLOWED_HOSTS` (any "
                       "request); `forbidden`: authenticated by cookie, but `Origin` (or "
                       "`Referer`) is not an allowed origin, a state-changing request from "
                       "another site; `auto_approve_disabled`: the server refuses to switch "
                       "auto-approve on (`TETHER_ALLOW_AUTO_APPROVE=0`)."),
    404: ("NotFound", "No such session, agent, request or queued prompt; a `resume` that is "
                      "not a conversation the agent saved for `cwd`."),
    408: ("RequestTimeout", "`request_timeout`: the body did not arrive whole within "
                            "`TETHER_BODY_TIMEOUT` seconds (default 10); the answer closes "
                            "the connection (`Connection: close`)."),
    409: ("Conflict", "`session_busy` (a turn is running), `queue_full` (the session's queue "
                      f"holds {MAX_QUEUED} prompts), `already_resolved` (another answer, "
                      "a timeout or a cancel got there first), `too_many_sessions` "
                      "(`TETHER_MAX_SESSIONS`) or `conversation_open` (a session continues "
                      "that saved conversation already)."),
    413: ("PayloadTooLarge", "The body, or the prompt in UTF-8, is over its limit "
                            "(`TETHER_MAX_PROMPT_BYTES`), or an image of a prompt over "
                            "`TETHER_MAX_IMAGE_BYTES`."),
    415: ("UnsupportedMediaType", "A body that is not `application/json`; an image of a prompt "
                                  "that is not PNG, JPEG, GIF or WebP, or whose bytes are not "
                                  "the image its `media_type` says."),
    422: ("GitFailed", "`git_failed`: git could not answer about the session's folder (its "
                       "base commit is no longer in the repository, a damaged repository, or "
                       f"more than {GIT_TIMEOUT_SECONDS:g} s)."),
    429: ("TooManyRequests", "Too many failed logins from this address; see `Retry-After`."),
    503: ("ServiceUnavailable", "`shutting_down`: the server is stopping and refuses new "
                                "sessions, prompts and changes; try again once it is back."),
}

_SECURED = (401, 403, 429)
_WITH_BODY = (*_SECURED, 400, 408, 413, 415)


@bp.get("/api/openapi.json")
def openapi() -> Response:
    """The document (JSON, OpenAPI 3.1). Built per request: it is small (about 24 KB) and
    names this server's login cookie, which depends on the port."""
    return jsonify(document(cookie_name()))


def document(cookie: str = "tether-8000") -> dict[str, Any]:
    """The OpenAPI 3.1 document as a dict (JSON-ready).

    :param cookie: the login cookie's name (``tether-<port>``, :func:`blueprints.auth.cookie_name`).
    """
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Tether",
            "version": _version(),
            "summary": "Drive CLI coding agents from a browser: sessions, event logs streamed "
                       "over SSE, long-poll and WebSocket, approvals and questions.",
            "description": (
                "JSON in and out; every error is `{\"error\": {\"code\", \"message\"}}` with a "
                "4xx status (503 `shutting_down` while the server stops). Event logs have "
                "ids 1, 2, 3 … with no gaps; a client is a cursor (`?after=`, "
                "`Last-Event-ID`). The contract: README (HTTP API), DESIGN.md "
                "section 4, docs/protocol.md."),
        },
        "security": [{"bearer": []}, {"cookie": []}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "responses": _error_responses(),
            "parameters": _parameters(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "The server's token: `TETHER_TOKEN`, or the one it "
                                          "generated and printed at start."},
                "cookie": {"type": "apiKey", "in": "cookie", "name": cookie,
                           "description": "The login cookie (`tether-<port>`, HttpOnly, "
                                          "SameSite=Lax, signed, expiring after "
                                          "`TETHER_SESSION_DAYS`, ended by `POST /logout`) that "
                                          "the login page sets. State-changing requests "
                                          "authenticated by it must carry an allowed `Origin` "
                                          "(else 403)."},
            },
        },
    }


def _version() -> str:
    from blueprints.ws import VERSION

    return VERSION


# -- building blocks ----------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/{ERRORS[s][0]}"} for s in sorted(statuses)}


def _error_responses() -> dict[str, Any]:
    responses = {name: _json(_ref("Error"), when) for name, when in ERRORS.values()}
    responses["Unauthorized"]["headers"] = {
        "WWW-Authenticate": {"schema": {"type": "string"}, "required": True,
                             "description": "`Bearer realm=\"tether\"`"}}
    responses["TooManyRequests"]["headers"] = {
        "Retry-After": {"schema": {"type": "string", "pattern": r"^[0-9]+$"}, "required": True,
                        "description": "Seconds until this address may try again."}}
    return responses


def _body(model: type, required: bool = True) -> dict[str, Any]:
    return {"required": required,
            "content": {"application/json": {"schema": _ref(model.__name__)}}}


def _op(summary: str, responses: dict[str, Any], *, errors: tuple[int, ...] = _SECURED,
        params: list[dict[str, Any]] | None = None, body: dict[str, Any] | None = None,
        description: str | None = None, tags: tuple[str, ...] = ()) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": list(tags)}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = body
    op["responses"] = {**responses, **_errors(*errors)}
    return op


def _param(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _file_path(description: str) -> dict[str, Any]:
    return {"name": "path", "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1, "maxLength": 4096}}


def _path_id(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "pattern": ID_PATTERN}}


def _parameters() -> dict[str, Any]:
    cursor = {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}
    return {
        "SessionId": _path_id("session_id", "A session id (32 hex digits); unknown: 404."),
        "RequestId": _path_id("request_id", "An approval or question id (32 hex digits), "
                                            "from `approval_request` / `clarify_request`."),
        "Position": {"name": "n", "in": "path", "required": True,
                     "description": "A queued prompt's position, from 1 (the session's "
                                    "`queue`); a plain decimal, else a 400; no such "
                                    "position: 404.",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 10**18 - 1}},
        "QueueId": _query("queue_id", {"type": "string", "pattern": ID_PATTERN},
                          "The `queue_id` the client saw at that position: when the queue "
                          "changed meanwhile and another prompt is there, 404 (nothing "
                          "done)."),
        "After": _query("after", cursor, "Event id cursor: events after it (0: all). A plain "
                                         "ASCII decimal integer; anything else is a 400. On a "
                                         "stream, `Last-Event-ID` wins and `after` is not "
                                         "read."),
        "Wait": _query("wait", {"type": "string", "pattern": SECONDS_PATTERN},
                       f"Seconds to hold the request (decimal, up to "
                       f"{poll.MAX_WAIT_SECONDS:g}; more is clamped). 0 or absent: answer at "
                       "once."),
    }


def _schemas() -> dict[str, Any]:
    _, top = models_json_schema([(m, "validation") for m in BODY_MODELS],
                                ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    cursor = {"type": "integer", "minimum": 0}
    nullable_number = {"type": ["number", "null"]}
    schemas.update({
        "Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"enum": sorted(HTTP_STATUS)},
                               "message": {"type": "string"}}}},
        },
        "PushKey": {"type": "object", "required": ["vapid_public_key"],
                    "properties": {"vapid_public_key": {
                        "type": "string", "pattern": "^[A-Za-z0-9_-]{87}$",
                        "description": "The uncompressed P-256 point, URL-safe base64."}}},
        "PushSubscribed": {"type": "object", "required": ["endpoint", "events"],
                           "properties": {"endpoint": {"type": "string"},
                                          "events": {"type": "array", "items": {
                                              "enum": ["prompts", "turn_end"]}}}},
        "Health": {"type": "object", "required": ["status"],
                   "properties": {"status": {"const": "ok"}}},
        "Agents": {
            "type": "object", "required": ["agents"],
            "properties": {"agents": {"type": "array", "items": {
                "type": "object", "required": ["name", "available", "description"],
                "properties": {"name": {"type": "string"}, "available": {"type": "boolean"},
                               "reason": {"type": "string", "description": "Why the agent is "
                                          "not available, and what to install or set; only "
                                          "when `available` is false."},
                               "commands": {"type": "array", "items": {"type": "object"},
                                            "description": "The slash commands the agent "
                                            "listed last, in any session (as in a `commands` "
                                            "event); absent until one of its processes ran."},
                               "permission_modes": {
                                   "type": "array", "items": {"type": "string"},
                                   "description": "The permission modes a session of this "
                                   "agent may run in, its default first."},
                               "models": {
                                   "type": "array", "items": {
                                       "type": "object", "required": ["id", "name"],
                                       "properties": {"id": {"type": "string"},
                                                      "name": {"type": "string"},
                                                      "description": {"type": "string"},
                                                      "default": {"const": True}}},
                                   "description": "The models a session may pick; the "
                                   "agent's default has `default: true`."},
                               "models_source": {
                                   "enum": ["agent", "static"],
                                   "description": "`agent`: what its newest process listed "
                                   "(Claude Code's `initialize` answer); `static`: Tether's "
                                   "own list, until one ran."},
                               "description": {"type": "string"}}}}},
        },
        "Pending": {
            "type": "object", "required": ["request_id", "kind", "created_at", "expires_at"],
            "description": "A pending approval (`tool_name`, `input`, `tool_use_id`) or "
                           "question (`questions`, `tool_use_id`).",
            "properties": {"request_id": {"type": "string"},
                           "kind": {"enum": ["approval", "clarify"]},
                           "created_at": {"type": "number"}, "expires_at": nullable_number},
        },
        "Session": {
            "type": "object",
            "required": ["id", "agent", "title", "cwd", "project", "created_at", "state",
                         "turn_active", "turn", "last_event_id", "agent_session_id",
                         "auto_approve", "usage", "queue", "pending"],
            "properties": {
                "id": {"type": "string", "pattern": ID_PATTERN},
                "agent": {"type": "string"},
                "title": {"type": "string", "maxLength": MAX_TITLE_CHARS},
                "cwd": {"type": "string", "description": "The folder the agent works in, "
                        "resolved: a project folder, or its own workspace "
                        "(`<TETHER_DATA_DIR>/sessions/<id>`)."},
                "project": {"type": "boolean", "description": "Opened in a project folder "
                            "(`cwd` given at creation): deleting the session leaves it."},
                "created_at": {"type": "number", "description": "Unix seconds"},
                "state": {"enum": ["idle", "running", "waiting", "ended"]},
                "turn_active": {"type": "boolean"},
                "turn": {"type": "integer", "minimum": 0},
                "last_event_id": cursor,
                "agent_session_id": {"type": ["string", "null"]},
                "auto_approve": {"type": "boolean"},
                "usage": _ref("Usage"),
                "model": {"type": "string", "description": "The model the agent runs with "
                          "(an id of the agent's `models`)."},
                "permission_mode": {"type": "string", "description": "The agent's "
                                    "permission mode (one of its `permission_modes`); the "
                                    "agent may change it itself (an approved plan leaves "
                                    "`plan`)."},
                "queue": {
                    "type": "array", "maxItems": MAX_QUEUED,
                    "description": "Prompts queued while a turn ran, first to be sent first.",
                    "items": {"type": "object", "required": ["n", "queue_id", "text"],
                              "properties": {"n": {"type": "integer", "minimum": 1},
                                             "queue_id": {"type": "string",
                                                          "pattern": ID_PATTERN},
                                             "text": {"type": "string"}}}},
                "pending": {
                    "type": "object", "required": ["approvals", "clarify"],
                    "properties": {"approvals": {"type": "array", "items": _ref("Pending")},
                                   "clarify": {"type": "array", "items": _ref("Pending")}}},
            },
        },
        "Usage": {
            "type": "object", "description": "Tokens and cost, summed over the session's "
            "turns (each `result` event carries its turn's as `usage`, and these totals as "
            "`session_usage`).",
            "required": ["input_tokens", "output_tokens", "cache_read_input_tokens",
                         "cache_creation_input_tokens", "cost_usd"],
            "properties": {
                "input_tokens": {"type": "integer", "minimum": 0},
                "output_tokens": {"type": "integer", "minimum": 0},
                "cache_read_input_tokens": {"type": "integer", "minimum": 0},
                "cache_creation_input_tokens": {"type": "integer", "minimum": 0},
                "cost_usd": {"type": ["number", "null"], "minimum": 0, "description":
                             "Dollars, as the agent reports them; null when it reports none "
                             "(the `local` agent)."}},
        },
        "Folder": {
            "type": "object", "required": ["name", "path", "git"],
            "properties": {"name": {"type": "string"},
                           "path": {"type": "string", "description": "Resolved: where a "
                                    "symbolic link leads."},
                           "git": {"type": "boolean", "description": "Holds `.git` (a "
                                   "directory, or a worktree's file)."},
                           "branch": {"type": "string", "description": "The checked-out "
                                      "branch; absent when not git or `HEAD` is detached."}},
        },
        "Folders": {
            "type": "object", "required": ["path", "parent", "entries", "truncated"],
            "properties": {
                "path": {"type": ["string", "null"], "description": "The folder listed, "
                         "resolved; null: the roots are listed."},
                "parent": {"type": ["string", "null"], "description": "The folder above, "
                           "while still inside a root; null in a root and at the top."},
                "entries": {"type": "array", "items": _ref("Folder"),
                            "maxItems": MAX_ENTRIES},
                "truncated": {"type": "boolean", "description": f"There were more than "
                              f"{MAX_ENTRIES} folders; the first by name are given."}},
        },
        "FileChange": {
            "type": "object", "required": ["path", "status", "additions", "deletions"],
            "properties": {
                "path": {"type": "string", "description": "Relative to the session's folder, "
                         "`/`-separated."},
                "status": {"enum": ["added", "modified", "deleted", "renamed", "binary"]},
                "additions": {"type": "integer", "minimum": 0, "description": "Lines (0 for "
                              "a binary file)."},
                "deletions": {"type": "integer", "minimum": 0},
                "old_path": {"type": "string", "description": "A rename's former path."}},
        },
        "Changes": {
            "type": "object", "required": ["base", "git", "files", "truncated"],
            "properties": {
                "base": {"type": ["string", "null"], "description": "The commit compared "
                         "against: `HEAD` when the session was opened (the empty tree's id "
                         "in a repository without commits); null outside git."},
                "git": {"type": "boolean", "description": "false: the files the agent wrote "
                        "through its tools (Write, Edit, MultiEdit, NotebookEdit)."},
                "files": {"type": "array", "items": _ref("FileChange"),
                          "maxItems": MAX_FILES},
                "truncated": {"type": "boolean", "description": f"More than {MAX_FILES} files "
                              "changed; the first by path are given."}},
        },
        "FileDiff": {
            "type": "object", "required": ["path", "diff", "truncated", "binary"],
            "properties": {
                "path": {"type": "string"},
                "diff": {"type": "string", "description": "Unified diff (git's, or rebuilt "
                         "from the tool calls outside git); undecodable bytes replaced."},
                "truncated": {"type": "boolean", "description": f"Cut at {MAX_DIFF_BYTES:,} "
                              "bytes."},
                "binary": {"type": "boolean"}},
        },
        "FileView": {
            "type": "object", "required": ["path", "size", "binary", "truncated", "text"],
            "properties": {
                "path": {"type": "string"},
                "size": {"type": "integer", "minimum": 0, "description": "Bytes."},
                "binary": {"type": "boolean", "description": "A NUL in its first 8,000 "
                           "bytes; `text` is empty then."},
                "truncated": {"type": "boolean", "description": f"Cut at {MAX_FILE_BYTES:,} "
                              "bytes."},
                "text": {"type": "string"}},
        },
        "Conversation": {
            "type": "object",
            "required": ["id", "title", "updated_at", "messages", "partial", "session_id"],
            "properties": {
                "id": {"type": "string", "description": "The agent's session id (a UUID): "
                       "`resume` in `POST /api/sessions`."},
                "title": {"type": "string", "description": "The name given with `/rename`, "
                          "else the first prompt, shortened."},
                "updated_at": {"type": "number", "description": "The file's modification "
                               "time, Unix seconds."},
                "messages": {"type": "integer", "minimum": 1, "description": "Prompts and "
                             "replies."},
                "partial": {"type": "boolean", "description": f"The file is over "
                            f"{MAX_SCAN_BYTES // 2**20} MiB; `messages` counts its start."},
                "session_id": {"type": ["string", "null"], "description": "The session of "
                               "this server that continues it (open that one: a `resume` "
                               "of it is a 409 `conversation_open`); null: none."}},
        },
        "Conversations": {
            "type": "object", "required": ["path", "agent", "conversations", "truncated"],
            "properties": {
                "path": {"type": "string", "description": "The folder, resolved."},
                "agent": {"type": "string"},
                "conversations": {"type": "array", "items": _ref("Conversation"),
                                  "maxItems": MAX_CONVERSATIONS},
                "truncated": {"type": "boolean", "description": f"More than "
                              f"{MAX_CONVERSATIONS} were saved; the newest are given."}},
        },
        "RecentFolders": {
            "type": "object", "required": ["entries"],
            "properties": {"entries": {"type": "array", "items": _ref("Folder")}},
        },
        "SessionList": {
            "type": "object", "required": ["sessions", "epoch"],
            "properties": {"sessions": {"type": "array", "items": _ref("Session")},
                           "epoch": {"type": "string"}},
        },
        "Turn": {"type": "object", "required": ["turn"],
                 "properties": {"turn": {"type": "integer", "minimum": 1}}},
        "Queued": {"type": "object", "required": ["queued"],
                   "properties": {"queued": {"type": "integer", "minimum": 1,
                                             "maximum": MAX_QUEUED,
                                             "description": "Its position in the queue."}}},
        "Cancelled": {"type": "object", "required": ["cancelled"],
                      "properties": {"cancelled": {"type": "boolean"}}},
        "ApprovalResult": {
            "type": "object", "required": ["request_id", "resolved", "decision"],
            "properties": {"request_id": {"type": "string"}, "resolved": {"const": True},
                           "decision": {"enum": ["allow", "deny"]}},
        },
        "ClarifyResult": {
            "type": "object", "required": ["request_id", "resolved", "answers"],
            "properties": {"request_id": {"type": "string"}, "resolved": {"const": True},
                           "answers": {"type": "object",
                                       "additionalProperties": {"type": "string"}}},
        },
        "Event": {
            "type": "object", "required": ["id", "session_id", "ts", "kind"],
            "description": "One log event: the envelope and its kind's payload (DESIGN.md "
                           "section 3: `user`, `agent_session`, `text_delta`, `text`, "
                           "`thinking`, `tool_use`, `tool_result`, `approval_request`, "
                           "`approval_resolved`, `clarify_request`, `clarify_resolved`, "
                           "`result`, `error`, `turn_end`; docs/protocol.md adds "
                           "`prompt_queued`, `prompt_dequeued`, `commands`, "
                           "`context_cleared`, `mode`, `model`, `history`).",
            "properties": {"id": {"type": "integer", "minimum": 1},
                           "session_id": {"type": "string"},
                           "ts": {"type": "number", "description": "Unix seconds"},
                           "kind": {"type": "string"}},
        },
        "Events": {
            "type": "object",
            "required": ["events", "last_event_id", "turn_active", "epoch", "reset"],
            "properties": {
                "events": {"type": "array", "items": _ref("Event")},
                "last_event_id": cursor, "turn_active": {"type": "boolean"},
                "epoch": {"type": "string"},
                "reset": {"type": "boolean",
                          "description": "The cursor was past the end: the answer starts "
                                         "from the first event."},
                "inbox": _ref("InboxSnapshot"),
            },
        },
        "InboxEntry": {
            "type": "object",
            "required": ["session_id", "session_title", "kind", "request_id", "summary",
                         "created_at", "expires_at", "tool_name", "input", "questions"],
            "properties": {
                "session_id": {"type": "string"}, "session_title": {"type": "string"},
                "kind": {"enum": ["approval", "clarify"]}, "request_id": {"type": "string"},
                "summary": {"type": "string", "maxLength": 200},
                "created_at": {"type": "number"}, "expires_at": nullable_number,
                "tool_name": {"type": ["string", "null"]},
                "input": {"type": ["object", "null"]},
                "questions": {"type": ["array", "null"]},
            },
        },
        "InboxSnapshot": {
            "type": "object", "required": ["revision", "epoch", "entries"],
            "properties": {"revision": cursor, "epoch": {"type": "string"},
                           "entries": {"type": "array", "items": _ref("InboxEntry")}},
        },
        "SseEvent": {
            "description": "One Server-Sent Event. The stream opens with `retry: <ms>`; then "
                           "log events (`message`, with `id:`), `caught-up`, `reset`, `inbox` "
                           "snapshots and `ping` keepalives (after `TETHER_KEEPALIVE` seconds "
                           "of silence).",
            "oneOf": [
                _sse("message", _ref("Event"), with_id=True),
                _sse("caught-up", {"type": "object", "required": ["last_event_id", "epoch"],
                                   "properties": {"last_event_id": cursor,
                                                  "epoch": {"type": "string"}}}),
                _sse("reset", {"type": "object", "required": ["last_event_id", "epoch"],
                               "properties": {"last_event_id": cursor,
                                              "epoch": {"type": "string"}}}),
                _sse("inbox", _ref("InboxSnapshot")),
                _sse("ping", {"type": "object", "required": ["ts"],
                              "properties": {"ts": {"type": "number"}}}),
                _sse("shutdown", {"type": "object", "required": ["reason"],
                                  "properties": {"reason": {"type": "string"}}}),
            ],
        },
    })
    return schemas


def _sse(event: str, data: dict[str, Any], with_id: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "event": {"const": event},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
        "retry": {"type": "integer", "minimum": 0},
    }
    if with_id:
        properties["id"] = {"type": "string", "pattern": r"^[1-9][0-9]*$"}
    return {"type": "object", "required": ["event", "data"], "properties": properties}


def _sse_response(description: str) -> dict[str, Any]:
    return {"200": {
        "description": description,
        "headers": {"Cache-Control": {"schema": {"const": "no-store"}},
                    "X-Accel-Buffering": {"schema": {"const": "no"}}},
        "content": {"text/event-stream": {"schema": _ref("SseEvent")}},
    }}


# -- paths ----------------------------------------------------------------------------------


def _paths() -> dict[str, Any]:
    sid, rid = _param("SessionId"), _param("RequestId")
    sessions, streams, answers = ("sessions",), ("streams",), ("answers",)
    return {
        "/healthz": {"get": {**_op("Liveness", {"200": _json(_ref("Health"), "Up.")},
                                   errors=(), tags=("server",)), "security": []}},
        "/api/openapi.json": {"get": _op(
            "This document", {"200": _json({"type": "object"}, "OpenAPI 3.1, JSON.")},
            tags=("server",))},
        "/metrics": {"get": _op(
            "Prometheus metrics",
            {"200": {"description": "The Prometheus text format (version 0.0.4): clients per "
                                    "transport, events appended and delivered, delivery "
                                    "latency, pending prompts, turns, agent processes.",
                     "content": {"text/plain": {"schema": {"type": "string"}}}}},
            tags=("server",))},
        "/api/agents": {"get": _op(
            "The agents", {"200": _json(_ref("Agents"), "Each agent, and whether it can "
                                                        "start here.")}, tags=("server",))},
        "/api/sessions": {
            "get": _op("All sessions", {"200": _json(_ref("SessionList"), "Every session.")},
                       tags=sessions),
            "post": _op(
                "Create a session",
                {"201": _json(_ref("Session"), "The new, idle session.")},
                errors=(*_WITH_BODY, 404, 409, 503), body=_body(bodies.CreateSession, False),
                description=f"An empty body is `{{}}`: the default agent (`TETHER_AGENT`). "
                            f"An unknown agent is a 404; a title over {MAX_TITLE_CHARS} "
                            "characters a 400; past `TETHER_MAX_SESSIONS` a 409. With "
                            "`cwd` the session is opened in that folder: it must resolve "
                            "(symbolic links and `..` included) to a readable directory "
                            "inside a `TETHER_PROJECT_ROOTS` root, else a 400 "
                            "`path_not_allowed` or `not_a_directory` and no session. "
                            "Without `cwd`, its own empty workspace. `model` and "
                            "`permission_mode` must be among the agent's (`GET "
                            "/api/agents`), else a 400 naming them; `bypassPermissions` and "
                            "`auto` need `TETHER_ALLOW_BYPASS=1` (else 400 "
                            "`mode_not_allowed`). With `resume` (and "
                            "`cwd`) it continues a conversation the agent saved for that "
                            "folder (`GET /api/projects/conversations`): its earlier entries "
                            "come first as `history` events; an id that is not one of them is "
                            "a 404 and no session; `resume` without `cwd`, or for an agent "
                            "that keeps none, a 400.",
                tags=sessions),
        },
        "/api/projects": {"get": _op(
            "A root's folders, or the roots",
            {"200": _json(_ref("Folders"), "The folders, sorted by name.")},
            errors=(*_SECURED, 400),
            params=[_query("path", {"type": "string", "maxLength": MAX_PATH_CHARS},
                           "An absolute folder inside a project root; absent or empty: the "
                           "roots themselves (none when `TETHER_PROJECT_ROOTS` is unset). "
                           "Outside every root, a NUL byte, unreadable: 400 "
                           "`path_not_allowed`; missing or a file: 400 `not_a_directory`."),
                    _query("hidden", {"enum": ["0", "1", "true", "false", ""]},
                           "1: list folders whose name starts with `.` too.")],
            description="Subfolders only; a symbolic link only when it leads to a folder "
                        "inside a root (its `path` is where it leads).",
            tags=("projects",))},
        "/api/projects/conversations": {"get": _op(
            "A folder's saved conversations",
            {"200": _json(_ref("Conversations"), "The conversations, newest first.")},
            errors=(*_SECURED, 400),
            params=[_query("path", {"type": "string", "maxLength": MAX_PATH_CHARS},
                           "An absolute folder inside a project root, checked as for "
                           "`GET /api/projects` (400 `path_not_allowed` / `not_a_directory`; "
                           "absent or empty: 400 `path_not_allowed`)."),
                    _query("agent", {"type": "string", "maxLength": 100},
                           "Whose conversations (default `claude`); an agent that keeps none "
                           "Tether can read: 400, naming those that do.")],
            description="Conversations the agent saved on its own, in a terminal or in "
                        "Tether (Claude Code: `$CLAUDE_CONFIG_DIR` or `$HOME/.claude`, "
                        "`projects/<folder>/<id>.jsonl`); those with no prompt and no reply "
                        "are left out.",
            tags=("projects",))},
        "/api/projects/recent": {"get": _op(
            "Recent folders",
            {"200": _json(_ref("RecentFolders"), "The folders sessions were opened in, "
                                                 "newest session first, each once, while "
                                                 "they are still allowed folders.")},
            tags=("projects",))},
        "/api/sessions/{session_id}": {
            "parameters": [sid],
            "get": _op("One session", {"200": _json(_ref("Session"), "The session.")},
                       errors=(*_SECURED, 404), tags=sessions),
            "patch": _op(
                "Rename; switch auto-approve; change the model or permission mode",
                {"200": _json(_ref("Session"), "The session, changed.")},
                errors=(*_WITH_BODY, 404, 503), body=_body(bodies.UpdateSession),
                description="A field left out (or null) is left as it is. While "
                            "`auto_approve` is on, the server allows every approval of the "
                            "session (`reason: \"auto\"`). `auto_approve: true` on a server "
                            "with `TETHER_ALLOW_AUTO_APPROVE=0` is a 403 "
                            "`auto_approve_disabled`, and nothing changes. A title is "
                            f"stripped; empty or over {MAX_TITLE_CHARS} characters is a 400. "
                            "A `model` or `permission_mode` change, between turns or during "
                            "one, reaches the running agent at once and is a `model` / "
                            "`mode` event naming `client`; values as for creation (400 "
                            "naming the allowed ones; `mode_not_allowed`).",
                tags=sessions),
            "delete": _op("Stop its turn, forget it, remove its workspace",
                          {"204": {"description": "Deleted: its log, its record, its queue, "
                                                  "and its own workspace folder "
                                                  "(`<TETHER_DATA_DIR>/sessions/<id>/`)."}},
                          errors=(*_SECURED, 404, 503), tags=sessions),
        },
        "/api/sessions/{session_id}/changes": {"get": _op(
            "The agent's changes",
            {"200": _json(_ref("Changes"), "The files changed in the session's folder.")},
            errors=(*_SECURED, 400, 404, 422), params=[sid], tags=("changes",),
            description="In a git folder: the working tree (untracked files included, "
                        "ignored ones not) against the commit `HEAD` named when the session "
                        "was opened, commits made since included. Outside git: the files "
                        "the agent wrote through its tools. A folder removed since: 400 "
                        "`not_a_directory`.")},
        "/api/sessions/{session_id}/changes/{path}": {"get": _op(
            "One file's diff",
            {"200": _json(_ref("FileDiff"), "The file's unified diff.")},
            errors=(*_SECURED, 400, 404, 422),
            params=[sid, _file_path("A changed file, relative to the session's folder.")],
            tags=("changes",),
            description="A path that leaves the folder (`..`, a symbolic link out, absolute, "
                        "NUL) is a 400 `path_not_allowed` and nothing is read; a file "
                        "without a change, a 404.")},
        "/api/sessions/{session_id}/files/{path}": {"get": _op(
            "Read a file",
            {"200": _json(_ref("FileView"), "The file, read-only.")},
            errors=(*_SECURED, 400, 404),
            params=[sid, _file_path("Any file in the session's folder.")],
            tags=("changes",),
            description="A path that leaves the folder is a 400 `path_not_allowed`; a folder "
                        "or a device, a 400 `bad_request`; no such file, a 404.")},
        "/api/sessions/{session_id}/transcript.jsonl": {"get": _op(
            "The whole log as JSON Lines",
            {"200": {"description": "One event per line, id order, as a download "
                                    "(`Content-Disposition: attachment`).",
                     "content": {"application/jsonl": {"schema": {"type": "string"}}}}},
            errors=(*_SECURED, 404), params=[sid], tags=sessions)},
        "/api/sessions/{session_id}/prompt": {"post": _op(
            "Start a turn, or queue the prompt",
            {"202": _json({"oneOf": [_ref("Turn"), _ref("Queued")]},
                          "`{turn}`: the turn started, its number; `{queued}`: queued "
                          "(`queue: true` while a turn ran), its position.")},
            errors=(*_WITH_BODY, 404, 409, 503), params=[sid], body=_body(bodies.Prompt),
            description="`text` must not be blank; over `TETHER_MAX_PROMPT_BYTES` (UTF-8) is "
                        "a 413. A running turn: 409 `session_busy`, unless `queue` is true: "
                        "then the prompt is queued (event `prompt_queued`) and sent by itself "
                        "when the turn ends `completed`; a stopped or failed turn leaves the "
                        f"queue. At most {MAX_QUEUED} queued: 409 `queue_full`. With "
                        f"`images` (at most {MAX_IMAGES}, each `{{media_type, data}}`, data in "
                        "base64): another media type than PNG, JPEG, GIF or WebP, or bytes "
                        "that are not that image, is a 415; one over `TETHER_MAX_IMAGE_BYTES` "
                        "decoded (5 MiB by default), a 413. This route's body may be larger "
                        "than any other's (docs/protocol.md, Limits).",
            tags=sessions)},
        "/api/sessions/{session_id}/images/{sha256}": {"get": _op(
            "An image a prompt carried",
            {"200": {"description": "The image's bytes, as its own media type.",
                     "content": {t: {"schema": {"type": "string", "format": "binary"}}
                                 for t in ("image/png", "image/jpeg", "image/gif",
                                           "image/webp")}}},
            errors=(*_SECURED, 404),
            params=[sid, {"name": "sha256", "in": "path", "required": True,
                          "description": "The image's SHA-256, as its `user` event names it.",
                          "schema": {"type": "string", "maxLength": 64}}],
            tags=sessions)},
        "/api/sessions/{session_id}/queue/{n}/send": {"post": _op(
            "Send a queued prompt now",
            {"202": _json(_ref("Turn"), "The turn started with it; its number.")},
            errors=(*_SECURED, 400, 404, 409, 503), params=[sid, _param("Position"),
                                                            _param("QueueId")],
            description="It leaves the queue (event `prompt_dequeued`, `reason: \"sent\"`). "
                        "A running turn: 409 `session_busy` (it stays queued).",
            tags=sessions)},
        "/api/sessions/{session_id}/queue/{n}": {"delete": _op(
            "Remove a queued prompt",
            {"204": {"description": "Removed; the prompts after it moved up."}},
            errors=(*_SECURED, 400, 404, 503), params=[sid, _param("Position"),
                                                       _param("QueueId")],
            description="Event `prompt_dequeued`, `reason: \"removed\"`.",
            tags=sessions)},
        "/api/sessions/{session_id}/cancel": {"post": _op(
            "Stop the running turn",
            {"200": _json(_ref("Cancelled"), "Whether a turn was running.")},
            errors=(*_SECURED, 404), params=[sid], tags=sessions)},
        "/api/sessions/{session_id}/approvals/{request_id}": {"post": _op(
            "Answer an approval",
            {"200": _json(_ref("ApprovalResult"), "Resolved: this answer won.")},
            errors=(*_WITH_BODY, 404, 409), params=[sid, rid], body=_body(bodies.ApprovalAnswer),
            description="First answer wins; later ones get 409 `already_resolved`.",
            tags=answers)},
        "/api/sessions/{session_id}/clarify/{request_id}": {"post": _op(
            "Answer a question",
            {"200": _json(_ref("ClarifyResult"), "Resolved: this answer won.")},
            errors=(*_WITH_BODY, 404, 409), params=[sid, rid], body=_body(bodies.ClarifyAnswer),
            description="`answers` maps question text to the answer; a question that was "
                        "not asked is a 400. First answer wins.",
            tags=answers)},
        "/api/sessions/{session_id}/stream": {"get": _op(
            "The session's events (Server-Sent Events)",
            _sse_response("`retry:`, the replay after the cursor (`id:` lines), "
                          "`event: caught-up`, then the live tail; `event: reset` and a full "
                          "replay when the cursor is past the end or `epoch` is stale."),
            errors=(*_SECURED, 400, 404), tags=streams,
            params=[sid, _param("After"),
                    _query("epoch", {"type": "string"},
                           "The server epoch the cursor belongs to; another one gets "
                           "`event: reset` and a full replay."),
                    _query("inbox", {"enum": ["", "0", "1", "false", "true"]},
                           "`1`: the stream also carries `event: inbox` snapshots (one "
                           "connection per tab)."),
                    {"name": "Last-Event-ID", "in": "header", "required": False,
                     "schema": {"type": "string", "pattern": CURSOR_PATTERN},
                     "description": "The cursor of an EventSource reconnect; wins over "
                                    "`?after=`."}])},
        "/api/sessions/{session_id}/events": {"get": _op(
            "Poll or long-poll the session's events",
            {"200": _json(_ref("Events"), "Events after the cursor (at most `limit`); empty "
                                          "when `wait` passed with none.")},
            errors=(*_SECURED, 400, 404), tags=streams,
            params=[sid, _param("After"), _param("Wait"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 10**18 - 1},
                           f"Most events to answer (default {poll.DEFAULT_LIMIT}; more than "
                           f"{poll.MAX_LIMIT} is clamped)."),
                    _query("inbox", {"type": "integer", "minimum": 0, "maximum": 10**18 - 1},
                           "The inbox revision the client has (0: none): the wait also ends "
                           "on an inbox change, and the answer carries `inbox` when the "
                           "revision differs.")])},
        "/api/inbox": {"get": _op(
            "Every session's pending approvals and questions",
            {"200": _json(_ref("InboxSnapshot"), "The snapshot.")},
            errors=(*_SECURED, 400), tags=streams,
            params=[_query("after", {"type": "integer", "minimum": 0, "maximum": 10**18 - 1},
                           "The revision the client has: with `wait`, answer once it changes."),
                    _param("Wait")])},
        "/api/inbox/stream": {"get": _op(
            "The inbox (Server-Sent Events)",
            _sse_response("`retry:`, then `event: inbox` with a snapshot at once and on every "
                          "change, and `event: ping` keepalives."),
            tags=streams)},
        "/api/push": {"get": _op(
            "The server's VAPID public key",
            {"200": _json(_ref("PushKey"), "The `applicationServerKey` to subscribe with.")},
            tags=("push",))},
        "/api/push/subscriptions": {
            "post": _op(
                "Subscribe this device to Web Push",
                {"201": _json(_ref("PushSubscribed"), "Kept (a second time: replaced).")},
                errors=_WITH_BODY, body=_body(bodies.PushSubscribe), tags=("push",),
                description="The browser's `PushSubscription.toJSON()`, and `events`: "
                            "`prompts` (approvals and questions, the default) and "
                            "`turn_end` (every finished turn). The endpoint must be `https://` "
                            "on a DNS name, else 400 `endpoint_not_allowed`."),
            "delete": _op(
                "Unsubscribe a device",
                {"204": {"description": "Forgotten."}},
                errors=(*_WITH_BODY, 404), body=_body(bodies.PushUnsubscribe), tags=("push",),
                description="404: no subscription for that endpoint."),
        },
        "/api/ws": {
            "description": "WebSocket, JSON-RPC 2.0 (docs/protocol.md): every call above, plus "
                           "attaching several sessions and the inbox on one socket. OpenAPI "
                           "describes only the upgrade; an HTTP fuzzer gets its 400.",
            "get": {**_op(
                "Open the WebSocket",
                {"101": {"description": "Switching protocols; then `gateway.ready`."},
                 "400": {"$ref": "#/components/responses/BadRequest"}},
                errors=(*_SECURED, 403), tags=("websocket",),
                description="A request without `Upgrade: websocket` is a 400. A cookie-"
                            "authenticated upgrade must carry an allowed `Origin` (403)."),
                "x-websocket": True},
        },
    }
