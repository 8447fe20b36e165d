"""Tether's Flask application factory.

``create_app()`` builds the core (sessions, logs, prompt registry) once per app and keeps it in
``app.extensions["tether"]``; nothing runs at import time. ``python app.py`` starts a
development server on gevent; production runs gunicorn with ``gunicorn.conf.py``.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response
from flask_talisman import Talisman

from blueprints import auth, register_all
from blueprints.bodies import CloseWhenAsked
from blueprints.logins import REVOKED_FILE, Logins, RedisRevocations
from blueprints.proxies import TrustedProxies
from blueprints.sse import ShallowStreams
from blueprints.throttle import FailureThrottle, RedisFailureThrottle, Throttle
from blueprints.ws import MAX_MESSAGE_BYTES
from tether.addresses import login_urls
from tether.cluster.registry import ClusterRegistry
from tether.config import SECRET_SETTINGS, Settings, check_binding, check_user
from tether.datadir import kept_token, read_or_create
from tether.push.service import for_registry as push_service
from tether.sessions import SessionRegistry
from tether.stores.redis import RedisStore
from tether.workers import worker_id

logger = logging.getLogger(__name__)

#: The page's Content-Security-Policy: scripts, styles and connections from this origin only,
#: no inline script or style, never framed. Images may also be ``blob:`` URLs: the thumbnails
#: of images picked for the next prompt, made by the page itself from the files.
CONTENT_SECURITY_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' blob:",
    "connect-src": "'self'",
    "manifest-src": "'self'",
    "worker-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


#: The cookie-signing key's file in the data dir, when TETHER_SECRET_KEY is not set.
SECRET_KEY_FILE = "secret.key"


def generate_token() -> str:
    """A new random token: 32 bytes (256 bits) from :mod:`secrets`, URL-safe base64."""
    return secrets.token_urlsafe(32)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app.

    :param config: Flask settings, and ``TETHER_*`` settings that override the environment
        (``{"TETHER_AGENT": "local", "TETHER_DATA_DIR": tmp_path}``).
    :raises ValueError: a ``TETHER_*`` setting is invalid; the message names it.
    """
    config = dict(config or {})
    settings = Settings.from_env({k: v for k, v in config.items() if k.startswith("TETHER_")})
    # Read once: the secrets leave this process's environment, so that nothing started from
    # it later (agents, a debugger's shell, a crash reporter) finds them there. gunicorn's
    # master keeps its copy and a worker it re-forks gets it again (gunicorn.conf.py).
    for name in SECRET_SETTINGS:
        os.environ.pop(name, None)
    app = Flask(__name__)
    # A JSON-escaped prompt may be longer than the prompt itself; the prompt limit proper is
    # checked on the decoded text (Session.submit).
    app.config.from_mapping(MAX_CONTENT_LENGTH=2 * settings.max_prompt_bytes + 64 * 1024,
                            SOCK_SERVER_OPTIONS={"max_message_size": MAX_MESSAGE_BYTES})
    app.config.update({k: v for k, v in config.items() if not k.startswith("TETHER_")})
    registry = ClusterRegistry if settings.store == "redis" else SessionRegistry
    app.extensions["tether"] = registry(settings)
    # TETHER_TOKEN, else the one kept in the data dir (made at the first start).
    token = (settings.token.get_secret_value() if settings.token
             else kept_token(settings.data_dir))
    secret_key = (settings.secret_key.get_secret_value() if settings.secret_key
                  else read_or_create(settings.data_dir / SECRET_KEY_FILE, generate_token))
    store = app.extensions["tether"].store
    shared = (RedisRevocations(store.client, store.prefix) if isinstance(store, RedisStore)
              else None)
    logins = Logins(token, secret_key, settings.session_days * 86400,
                    revoked_path=settings.data_dir / REVOKED_FILE, shared=shared)
    # Failed logins are counted per process, or with the Redis store in Redis: one budget
    # per address for every worker and host.
    throttle: Throttle = (RedisFailureThrottle(store.client, store.prefix)
                          if isinstance(store, RedisStore) else FailureThrottle())
    auth.init_app(app, auth.Auth(token, logins, allowed_hosts=settings.host_names,
                                 allowed_origins=frozenset(settings.allowed_origins),
                                 throttle=throttle))
    # Headers on every response; HSTS only over HTTPS; HTTP is never redirected (a reverse
    # proxy terminates TLS).
    Talisman(app, force_https=False, content_security_policy=CONTENT_SECURITY_POLICY,
             frame_options="DENY", referrer_policy="no-referrer", session_cookie_secure=False)
    register_all(app)
    # Web Push: the VAPID keys (made at the first start), the subscriptions, and the
    # dispatcher that follows the inbox (tether.push).
    app.extensions["tether_push"] = push_service(app.extensions["tether"]).start()
    if settings.debug_worker:
        _add_worker_header(app, settings.host_id)
    # A 408 for a body that did not arrive in time closes its connection (blueprints.bodies).
    app.wsgi_app = CloseWhenAsked(app.wsgi_app)  # type: ignore[method-assign]
    # X-Forwarded-For/-Proto/-Host/-Port from the proxies in TETHER_TRUSTED_PROXIES; from
    # anyone else they are dropped (gunicorn.conf.py turns off gunicorn's own reading).
    app.wsgi_app = TrustedProxies(app.wsgi_app,  # type: ignore[method-assign]
                                  settings.trusted_proxies)
    # A stream's dispatch runs in a greenlet of its own, so that the connection's greenlet,
    # which serves the stream for hours after it, keeps a shallow stack (issue 5: memory per
    # idle stream; blueprints.sse.ShallowStreams).
    app.wsgi_app = ShallowStreams(app.wsgi_app)  # type: ignore[method-assign]
    return app


def _add_worker_header(app: Flask, host_id: str) -> None:
    """``X-Tether-Worker: <worker id>`` on every response (``TETHER_DEBUG_WORKER=1``), so that
    a test or a person behind a balancer sees which worker answered. Asked per response: the
    id is the answering process's (tether.workers), even where the app was built before a
    fork."""

    @app.after_request
    def worker_header(response: Response) -> Response:
        response.headers["X-Tether-Worker"] = worker_id(host_id)
        return response


if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

    from gevent.pywsgi import WSGIServer

    _settings = Settings.from_env()
    try:
        check_user(_settings)
        check_binding(_settings)
    except ValueError as exc:
        raise SystemExit(f"Tether: {exc}") from None
    _app = create_app()
    _token = _app.extensions["tether_auth"].token
    print("Tether (development server): open one of these URLs to log in:")
    for _url in login_urls(_settings, _settings.port, _token):
        print(f"    {_url}")
    WSGIServer((_settings.host, _settings.port), _app).serve_forever()
