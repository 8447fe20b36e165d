"""Tether's errors: small classes that carry a stable ``code`` and a human ``message``.

Transports map ``code`` to an HTTP status or a JSON-RPC error code (``blueprints/errors.py``);
the domain never knows about either.
"""

from __future__ import annotations


class TetherError(Exception):
    """Base class. ``code`` is the machine-readable name of DESIGN.md section 4."""

    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(TetherError):
    """The request is malformed: a bad cursor, a missing or wrong-typed field."""

    code = "bad_request"


class PathNotAllowed(TetherError):
    """A folder a session may not be opened in, or listed: outside every project root
    (``TETHER_PROJECT_ROOTS``, none set, ``..`` or a symbolic link leading out), a NUL byte,
    not absolute, unreadable (:mod:`tether.projects`)."""

    code = "path_not_allowed"


class NotADirectory(TetherError):
    """A folder inside a project root that is not one: missing (or removed since), or a
    file (:mod:`tether.projects`)."""

    code = "not_a_directory"


class NotFound(TetherError):
    """An unknown session, request id or agent."""

    code = "not_found"


class SessionBusy(TetherError):
    """A prompt arrived while a turn is running (DESIGN.md rule 5: never queued silently)."""

    code = "session_busy"


class QueueFull(TetherError):
    """A prompt was to be queued on a session whose queue holds its most prompts already."""

    code = "queue_full"


class ConversationOpen(TetherError):
    """A session already continues that saved conversation (two agent processes would write
    one transcript): open that session instead. ``session_id`` names it."""

    code = "conversation_open"

    def __init__(self, message: str, session_id: str) -> None:
        super().__init__(message)
        self.session_id = session_id


class AgentUnavailable(TetherError):
    """The agent cannot run on this server (its CLI is missing, a ``TETHER_AGENT_SERVERS``
    entry is bad); the message says which setting to fix."""

    code = "agent_unavailable"


class AlreadyResolved(TetherError):
    """An answer arrived for an approval or question that another answer already settled."""

    code = "already_resolved"


class AutoApproveDisabled(TetherError):
    """A session's auto-approve was to be switched on, and ``TETHER_ALLOW_AUTO_APPROVE=0``
    forbids it on this server."""

    code = "auto_approve_disabled"


class ModeNotAllowed(TetherError):
    """A permission mode in which tools run without asking a person (``bypassPermissions``,
    ``auto``) was asked for, and the server was not started with ``TETHER_ALLOW_BYPASS=1``."""

    code = "mode_not_allowed"


class TooManySessions(TetherError):
    """A new session would exceed ``TETHER_MAX_SESSIONS``; delete one first."""

    code = "too_many_sessions"


class PayloadTooLarge(TetherError):
    """A request body or prompt is over its documented limit."""

    code = "payload_too_large"


class RequestTimeout(TetherError):
    """A request body did not arrive whole within ``TETHER_BODY_TIMEOUT`` seconds (a client
    that trickles it, or stalls mid-body)."""

    code = "request_timeout"


class UnsupportedMediaType(TetherError):
    """A body that is not ``application/json``."""

    code = "unsupported_media_type"


class ShuttingDown(TetherError):
    """The server is stopping: no new turn or session starts (issue 4, "SIGTERM drains");
    retry once it is back."""

    code = "shutting_down"


class StoreUnavailable(TetherError):
    """The shared store (Redis) does not answer: nothing was changed, or the change may have
    landed (a write whose reply was lost); retry once it is back."""

    code = "store_unavailable"


class Fenced(RuntimeError):
    """This worker no longer owns the session (another took it over while this one was
    stalled or cut off from Redis): it must write nothing more for it and stop its agent."""


class GitFailed(TetherError):
    """git could not answer about a session's folder: it failed (a base commit that a
    history rewrite removed, a damaged repository) or ran out of time (:mod:`tether.changes`)."""

    code = "git_failed"


class EndpointNotAllowed(TetherError):
    """A push subscription names an endpoint Tether will not post to: not ``https://`` on a
    DNS name (or loopback with ``TETHER_PUSH_ALLOW_LOOPBACK``)."""

    code = "endpoint_not_allowed"
