"""Request bodies: JSON only, validated by pydantic models that name the offending field."""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from flask import request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
    :raises BadRequest: invalid JSON, not an object, or a missing / wrong-typed field (named).
    """
    raw = request.get_data(cache=False)
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
    :raises BadRequest: a missing or wrong-typed field, named (``params.session_id: …``).
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join([what, *(str(p) for p in first["loc"])])
        raise BadRequest(f"{where}: {first['msg']}") from None
