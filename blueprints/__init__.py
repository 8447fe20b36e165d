"""The transports: thin Flask blueprints over Tether's core (``tether.sessions``).

A view parses its input, makes one core call and encodes the answer. The core lives in
``app.extensions["tether"]``; views reach it through :func:`current_core`.
"""

from __future__ import annotations

from typing import cast

from flask import Flask, current_app

from tether.sessions import SessionRegistry


def current_core() -> SessionRegistry:
    """The app's :class:`SessionRegistry`."""
    return cast(SessionRegistry, current_app.extensions["tether"])


def register_all(app: Flask) -> None:
    """The one list of blueprints."""
    from blueprints import (
        api,
        changes,
        errors,
        metrics,
        openapi,
        poll,
        projects,
        push,
        shell,
        sse,
        ui,
        ws,
    )

    for module in (errors, api, projects, changes, sse, poll, ws, push, shell, openapi,
                   metrics, ui):
        app.register_blueprint(module.bp)
