"""The browser UI: one page; everything else is static files and the JSON API."""

from __future__ import annotations

from flask import Blueprint, render_template

from blueprints import current_core

bp = Blueprint("ui", __name__)


@bp.get("/")
def index() -> str:
    core = current_core()
    # TETHER_ALLOW_AUTO_APPROVE=0: the switch is not offered (the server would refuse it).
    return render_template("index.html", default_agent=core.settings.agent,
                           keepalive_seconds=core.settings.keepalive_seconds,
                           allow_auto_approve=core.settings.allow_auto_approve,
                           max_image_bytes=core.settings.max_image_bytes)
