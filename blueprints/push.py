"""Web Push (docs/protocol.md, "Web Push"): the server's VAPID key and devices'
subscriptions.

The pushing itself is the domain's (:mod:`tether.push`); this blueprint only parses. The
service worker that shows the pushes, ``/sw.js``, is :mod:`blueprints.shell`'s: it keeps the
offline shell too.
"""

from __future__ import annotations

from typing import cast

from flask import Blueprint, Response, current_app, jsonify

from blueprints.bodies import PushSubscribe, PushUnsubscribe, json_body
from tether.push.service import PushService

bp = Blueprint("push", __name__)


def current_push() -> PushService:
    return cast(PushService, current_app.extensions["tether_push"])


@bp.get("/api/push")
def push_key() -> Response:
    return jsonify(vapid_public_key=current_push().keys.public_key)


@bp.post("/api/push/subscriptions")
def subscribe() -> tuple[Response, int]:
    body = json_body(PushSubscribe)
    subscription = current_push().subscribe(body.model_dump())
    return jsonify(endpoint=subscription.endpoint, events=list(subscription.events)), 201


@bp.delete("/api/push/subscriptions")
def unsubscribe() -> tuple[str, int]:
    current_push().unsubscribe(json_body(PushUnsubscribe).endpoint)
    return "", 204
