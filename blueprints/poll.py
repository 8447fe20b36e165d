"""Long-poll and poll: ``GET /api/sessions/<id>/events?after=&wait=&limit=``.

``wait`` = 0 (the default) answers at once; ``wait`` > 0 holds the request until one event
exists after ``after`` (within a wake-up, not a poll interval) or ``wait`` seconds pass, then
answers with an empty list. ``wait`` is clamped to :data:`MAX_WAIT_SECONDS`, ``limit`` to
:data:`MAX_LIMIT`. A cursor beyond the end of the log answers from the start with
``"reset": true``.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, request

from blueprints import current_core
from tether.cursor import parse_cursor, parse_limit, parse_seconds

bp = Blueprint("poll", __name__)

MAX_WAIT_SECONDS = 60.0
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000


@bp.get("/api/sessions/<session_id>/events")
def events(session_id: str) -> Response:
    core = current_core()
    session = core.get(session_id)
    after = parse_cursor(request.args.get("after"), "after") or 0
    wait = parse_seconds(request.args.get("wait"), "wait", 0.0, MAX_WAIT_SECONDS)
    limit = parse_limit(request.args.get("limit"), "limit", DEFAULT_LIMIT, MAX_LIMIT)
    log = session.log
    reset = after > log.last_id
    if reset:
        after = 0
    elif wait > 0:
        log.wait_for(after, wait)
    batch = log.read_after(after, limit)
    # The events' bytes were encoded once, at append; only the frame is built here.
    tail = {"last_event_id": batch[-1].id if batch else after, "turn_active": session.turn_active,
            "epoch": core.epoch, "reset": reset}
    body = (b'{"events":[' + b",".join(e.data for e in batch) + b"],"
            + json.dumps(tail, separators=(",", ":")).encode()[1:])
    return Response(body, mimetype="application/json", headers={"Cache-Control": "no-store"})
