"""The browser UI: one page; everything else is static files and the JSON API.

``/?client=basic`` serves the basic client (ES5, long-poll; README, Browsers) to any
browser: the modern page hands over to it when the browser lacks what it needs."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from blueprints import current_core
from blueprints.shell import MODERN_SCRIPTS
from tether.agents.modes import UNATTENDED_MODES

bp = Blueprint("ui", __name__)


@bp.get("/")
def index() -> str:
    core = current_core()
    if request.args.get("client") == "basic":
        return render_template("basic.html", default_agent=core.settings.agent)
    # TETHER_ALLOW_AUTO_APPROVE=0: the switch is not offered (the server would refuse it).
    return render_template("index.html", default_agent=core.settings.agent,
                           keepalive_seconds=core.settings.keepalive_seconds,
                           allow_auto_approve=core.settings.allow_auto_approve,
                           max_image_bytes=core.settings.max_image_bytes,
                           # Modes that ask nobody are offered only where the server allows
                           # them (TETHER_ALLOW_BYPASS).
                           allow_bypass=core.settings.allow_bypass,
                           # One list for the page and the service worker that keeps them.
                           modern_scripts=MODERN_SCRIPTS,
                           # Every agent's (Gemini's yolo, Codex's full-access …): the page
                           # holds no list of its own.
                           unattended_modes=" ".join(sorted(UNATTENDED_MODES)))
