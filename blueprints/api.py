"""The JSON HTTP API (DESIGN.md section 4): sessions, prompts, Stop, answers, agents, health."""

from __future__ import annotations

import re

from flask import Blueprint, Response, jsonify, request

from blueprints import current_core
from blueprints.bodies import (
    ApprovalAnswer,
    ClarifyAnswer,
    CreateSession,
    Prompt,
    UpdateSession,
    json_body,
)
from tether import images
from tether.config import Settings
from tether.errors import BadRequest

bp = Blueprint("api", __name__)


def _client_label(given: str | None) -> str:
    """Who answered, for ``approval_resolved.by``: the client's own label, else its address."""
    return given or f"http {request.remote_addr or 'client'}"


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/api/agents")
def agents() -> Response:
    return jsonify(agents=[{"name": a.name, "available": a.available,
                            "description": a.description,
                            "permission_modes": list(a.permission_modes),
                            "models": list(a.models), "models_source": a.models_source,
                            **({"reason": a.reason} if a.reason else {}),
                            **({"commands": a.commands} if a.commands else {})}
                           for a in current_core().agents.describe()])


@bp.post("/api/sessions")
def create_session() -> tuple[Response, int]:
    body = json_body(CreateSession, optional=True)
    session = current_core().create(agent=body.agent, title=body.title, cwd=body.cwd,
                                    model=body.model, permission_mode=body.permission_mode,
                                    by=_client_label(body.client), resume=body.resume)
    return jsonify(session.to_dict()), 201


@bp.get("/api/sessions")
def list_sessions() -> Response:
    return jsonify(sessions=current_core().summaries(), epoch=current_core().epoch)


@bp.get("/api/sessions/<session_id>")
def get_session(session_id: str) -> Response:
    return jsonify(current_core().get(session_id).to_dict())


@bp.patch("/api/sessions/<session_id>")
def update_session(session_id: str) -> Response:
    session = current_core().get(session_id)
    body = json_body(UpdateSession)
    session.update(title=body.title, auto_approve=body.auto_approve, model=body.model,
                   permission_mode=body.permission_mode, by=_client_label(body.client))
    return jsonify(session.to_dict())


@bp.get("/api/sessions/<session_id>/transcript.jsonl")
def transcript(session_id: str) -> Response:
    """The whole log as JSON Lines (https://jsonlines.org), one event per line, as a download."""
    session = current_core().get(session_id)
    body = b"".join(e.data + b"\n" for e in session.log.read_after(0))
    disposition = f'attachment; filename="tether-{session.id[:12]}.jsonl"'
    return Response(body, mimetype="application/jsonl",
                    headers={"Content-Disposition": disposition, "Cache-Control": "no-store"})


@bp.delete("/api/sessions/<session_id>")
def delete_session(session_id: str) -> tuple[str, int]:
    current_core().delete(session_id)
    return "", 204


@bp.post("/api/sessions/<session_id>/prompt")
def prompt(session_id: str) -> tuple[Response, int]:
    """202 ``{"turn": n}``, or with ``queue`` while a turn runs 202 ``{"queued": n}``.
    With ``images``, each is checked (415 for another type or bytes that are not that image,
    413 over ``TETHER_MAX_IMAGE_BYTES``) and kept before the prompt is taken."""
    core = current_core()
    session = core.get(session_id)
    request.max_content_length = prompt_body_limit(core.settings)
    body = json_body(Prompt)
    checked = images.check_all([i.model_dump() for i in body.images],
                               core.settings.max_image_bytes)
    store = images.ImageStore(core.settings.data_dir)
    refs = [store.save(session.id, raw, media_type) for raw, media_type in checked]
    return jsonify(session.prompt(body.text, queue=body.queue, images=refs)), 202


def prompt_body_limit(settings: Settings) -> int:
    """The largest prompt body, in bytes: the text (JSON may double it), every image in
    base64, and room for the rest, rounded up to a whole KiB (nginx's ``client_max_body_size``
    for this route says the same number: deploy/nginx.conf). Every other body keeps
    ``MAX_CONTENT_LENGTH``. 34,715 KiB with the defaults."""
    image_base64 = 4 * (settings.max_image_bytes // 3 + 1)
    total = 2 * settings.max_prompt_bytes + images.MAX_IMAGES * (image_base64 + 1024) + 64 * 1024
    return -(-total // 1024) * 1024


@bp.get("/api/sessions/<session_id>/images/<sha256>")
def image(session_id: str, sha256: str) -> Response:
    """An image a prompt of the session carried, as its own media type."""
    core = current_core()
    session = core.get(session_id)
    raw = images.ImageStore(core.settings.data_dir).load(session.id, sha256)
    return Response(raw, mimetype=images.sniff(raw))


def _position(n: str) -> int:
    """A queue position from the path: a plain ASCII decimal (1 is the first prompt).

    :raises BadRequest: anything else (``-1``, ``1.0``, ``x``)."""
    if not re.fullmatch(r"[0-9]{1,18}", n):
        raise BadRequest(f"queue position {n[:40]!r} is not a whole number (1 is the first)")
    return int(n)


def _queue_id() -> str | None:
    """``?queue_id=``: the prompt the client means at that position (another one: 404)."""
    return request.args.get("queue_id") or None


@bp.post("/api/sessions/<session_id>/queue/<n>/send")
def send_queued(session_id: str, n: str) -> tuple[Response, int]:
    """Send queued prompt ``n`` now: 202 ``{"turn"}``; 409 ``session_busy`` while a turn
    runs; 404 for no such prompt."""
    session = current_core().get(session_id)
    return jsonify(turn=session.send_queued(_position(n), _queue_id())), 202


@bp.delete("/api/sessions/<session_id>/queue/<n>")
def remove_queued(session_id: str, n: str) -> tuple[str, int]:
    """Remove queued prompt ``n``: 204; 404 for no such prompt."""
    current_core().get(session_id).remove_queued(_position(n), _queue_id())
    return "", 204


@bp.post("/api/sessions/<session_id>/cancel")
def cancel(session_id: str) -> Response:
    return jsonify(cancelled=current_core().get(session_id).cancel())


@bp.post("/api/sessions/<session_id>/approvals/<request_id>")
def answer_approval(session_id: str, request_id: str) -> Response:
    session = current_core().get(session_id)
    body = json_body(ApprovalAnswer)
    request_ = session.prompts.answer_approval(
        request_id, body.decision, by=_client_label(body.client), message=body.message,
        updated_input=body.updated_input, updated_permissions=body.updated_permissions,
        option_id=body.option_id)
    return jsonify(request_id=request_.request_id, resolved=True, decision=body.decision)


@bp.post("/api/sessions/<session_id>/clarify/<request_id>")
def answer_clarify(session_id: str, request_id: str) -> Response:
    session = current_core().get(session_id)
    body = json_body(ClarifyAnswer)
    request_ = session.prompts.answer_clarify(request_id, body.answers,
                                              by=_client_label(body.client))
    return jsonify(request_id=request_.request_id, resolved=True, answers=body.answers)
