"""Request bodies: JSON only, validated by pydantic models that name the offending field."""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from flask import request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from werkzeug.exceptions import HTTPException

from tether.errors import BadRequest, UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)

#: Longest client label (``by`` in resolved events), in characters.
MAX_CLIENT_CHARS = 100


class Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class CreateSession(Body):
    agent: str | None = None
    title: str | None = None


class UpdateSession(Body):
    title: str | None = None
    auto_approve: bool | None = None


class Prompt(Body):
    text: str


class ApprovalAnswer(Body):
    decision: Literal["allow", "deny"]
    message: str | None = Field(None, max_length=10_000)
    client: str | None = Field(None, max_length=MAX_CLIENT_CHARS)
    updated_input: dict[str, Any] | None = None
    updated_permissions: list[dict[str, Any]] | None = None


class ClarifyAnswer(Body):
    answers: dict[str, str]
    client: str | None = Field(None, max_length=MAX_CLIENT_CHARS)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_body(model: type[M], *, optional: bool = False) -> M:
    """The request body parsed as ``model``.

    :param optional: an empty body counts as ``{}`` (whatever its content type).
    :raises UnsupportedMediaType: a non-empty body that is not ``application/json``.
    :raises BadRequest: invalid JSON, not an object, or a missing / wrong-typed field (named),
        or a body that cannot be read (a malformed chunked encoding).
    :raises werkzeug.exceptions.RequestEntityTooLarge: over ``MAX_CONTENT_LENGTH`` (413).
    """
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
        # The WSGI server's body reader failed on the client's framing (gunicorn raises its
        # own InvalidChunkSize, ChunkMissingTerminator …; a client may vanish mid-body).
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
