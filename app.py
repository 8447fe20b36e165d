"""Tether's Flask application factory.

``create_app()`` builds the core (sessions, logs, prompt registry) once per app and keeps it in
``app.extensions["tether"]``; nothing runs at import time. ``python app.py`` starts a
development server on gevent; production runs gunicorn with ``gunicorn.conf.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from blueprints import register_all
from blueprints.ws import MAX_MESSAGE_BYTES
from tether.config import Settings
from tether.sessions import SessionRegistry


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app.

    :param config: Flask settings, and ``TETHER_*`` settings that override the environment
        (``{"TETHER_AGENT": "local", "TETHER_DATA_DIR": tmp_path}``).
    :raises ValueError: a ``TETHER_*`` setting is invalid; the message names it.
    """
    config = dict(config or {})
    settings = Settings.from_env({k: v for k, v in config.items() if k.startswith("TETHER_")})
    app = Flask(__name__)
    # A JSON-escaped prompt may be longer than the prompt itself; the prompt limit proper is
    # checked on the decoded text (Session.submit).
    app.config.from_mapping(MAX_CONTENT_LENGTH=2 * settings.max_prompt_bytes + 64 * 1024,
                            SOCK_SERVER_OPTIONS={"max_message_size": MAX_MESSAGE_BYTES})
    app.config.update({k: v for k, v in config.items() if not k.startswith("TETHER_")})
    app.extensions["tether"] = SessionRegistry(settings)
    register_all(app)
    return app


if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

    from gevent.pywsgi import WSGIServer

    _settings = Settings.from_env()
    print(f"Tether (development server) on http://{_settings.host}:{_settings.port}/")
    WSGIServer((_settings.host, _settings.port), create_app()).serve_forever()
