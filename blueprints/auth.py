"""Authentication and the browser's guard rails (README "Security").

Every API route, stream, poll and the WebSocket require the server's token, as Jupyter Server
does: ``Authorization: Bearer <token>`` from programs, or, in a browser, a cookie the login URL
(``/?token=…``) or the login form trades the token for. Open without it: ``/healthz``, static
files, and the login form itself.

- Tokens are compared in constant time (:func:`hmac.compare_digest`). The cookie holds an HMAC
  of the token, not the token, and is HttpOnly, SameSite=Strict, and Secure over HTTPS.
- Requests authenticated by cookie that change state (any method but GET, HEAD, OPTIONS), and
  every cookie-authenticated WebSocket upgrade, must come from an allowed origin: the server's
  own, or one in ``TETHER_ALLOWED_ORIGINS``. ``Origin`` is read first, then ``Referer``; with
  neither, the request is refused (403). This stops cross-site request forgery and cross-site
  WebSocket hijacking; a bearer token cannot be sent by another site, so it needs no check.
- Failed attempts (a wrong token in any form) from one address are counted; past
  :data:`MAX_FAILURES` in :data:`FAILURE_WINDOW_SECONDS`, every request from that address that
  carries a credential gets 429 with ``Retry-After``, unchecked, until the window moves on
  (checking would tell a guesser which guess is right). ``limits`` counts, in memory. Behind a
  proxy, set ``TETHER_TRUSTED_PROXIES`` so that the address is the client's, not the proxy's.
- No CORS headers are ever sent, so another origin's scripts cannot read any response.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Flask, Response, current_app, redirect, render_template, request
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from blueprints.bodies import read_deadline
from blueprints.errors import error_response

logger = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

#: Failed attempts one address may make per :data:`FAILURE_WINDOW_SECONDS` before 429.
MAX_FAILURES = 10
#: The failure-counting window, in seconds (a moving window).
FAILURE_WINDOW_SECONDS = 60
#: How long the browser keeps the login cookie, in seconds (30 days).
COOKIE_MAX_AGE_SECONDS = 30 * 24 * 3600
#: Endpoints open without the token.
OPEN_ENDPOINTS = frozenset({"static", "api.healthz", "auth.login"})
#: Methods that never change state: exempt from the origin check.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Method = Literal["bearer", "cookie"]


@dataclass(frozen=True)
class Auth:
    """The server's token and what is derived from it. ``token`` is at least 16 characters."""

    token: str
    allowed_origins: frozenset[str]
    limiter: MovingWindowRateLimiter
    failures: RateLimitItemPerMinute

    @classmethod
    def create(cls, token: str, allowed_origins: tuple[str, ...] = ()) -> Auth:
        return cls(token, frozenset(allowed_origins), MovingWindowRateLimiter(MemoryStorage()),
                   RateLimitItemPerMinute(MAX_FAILURES))

    def token_matches(self, given: str) -> bool:
        """Constant-time comparison of ``given`` with the token."""
        return hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                                   self.token.encode("utf-8"))

    @property
    def cookie_value(self) -> str:
        """What the login cookie holds: an HMAC-SHA256 of the token (hex), never the token."""
        return hmac.new(self.token.encode("utf-8"), b"tether login cookie v1",
                        hashlib.sha256).hexdigest()

    def cookie_matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                                   self.cookie_value.encode("ascii"))

    def blocked_for(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 when it is not blocked."""
        if self.limiter.test(self.failures, address):
            return 0.0
        stats = self.limiter.get_window_stats(self.failures, address)
        return max(stats.reset_time - time.time(), 1.0)

    def record_failure(self, address: str) -> None:
        self.limiter.hit(self.failures, address)
        logger.warning("authentication failed from %s", address)


def init_app(app: Flask, auth: Auth) -> None:
    """Install the token check on every request of ``app``."""
    app.extensions["tether_auth"] = auth
    app.register_blueprint(bp)


def current_auth() -> Auth:
    return current_app.extensions["tether_auth"]  # type: ignore[no-any-return]


def cookie_name() -> str:
    """``tether-<port>``: browsers share cookies across ports, so two servers on one host
    (8000 and 8001) must not overwrite each other's login (Jupyter names its cookie the same
    way)."""
    port = urlsplit(f"//{request.host}").port if request.host else None
    return f"tether-{port or (443 if request.is_secure else 80)}"


def own_origin() -> str:
    """This server's origin as the browser sees it (``https://host:port``; with
    ``TETHER_TRUSTED_PROXIES``, as the proxy forwarded it)."""
    return f"{request.scheme}://{request.host}".lower()


def origin_allowed() -> bool:
    """True when ``Origin`` (else the origin of ``Referer``) is this server's own or one in
    ``TETHER_ALLOWED_ORIGINS``. Neither header: False."""
    origin = request.headers.get("Origin")
    if origin is None:
        referer = request.headers.get("Referer")
        if not referer:
            return False
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    origin = origin.strip().rstrip("/").lower()
    return origin == own_origin() or origin in current_auth().allowed_origins


def authenticate() -> Method | None | Literal[False]:
    """How this request proved it holds the token: ``"bearer"``, ``"cookie"``; None when it
    presented nothing; False when what it presented is wrong.

    An ``Authorization`` header, when present, decides alone.
    """
    auth = current_auth()
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() == "bearer" and auth.token_matches(credentials.strip()):
            return "bearer"
        return False
    cookie = request.cookies.get(cookie_name())
    if cookie is not None:
        return "cookie" if auth.cookie_matches(cookie) else False
    return None


def _client_address() -> str:
    return request.remote_addr or "unknown"


def _too_many(retry_after: float) -> tuple[Response, int]:
    response, status = error_response(
        "too_many_requests",
        f"too many failed logins from this address; try again in {math.ceil(retry_after)} s")
    response.headers["Retry-After"] = str(math.ceil(retry_after))
    return response, status


def _is_page() -> bool:
    return request.endpoint == "ui.index"


def _login_page(message: str | None, status: int) -> Response:
    response = Response(render_template("login.html", message=message), status=status,
                        mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


def _unauthorized() -> Response | tuple[Response, int]:
    if _is_page():
        return _login_page(None, 401)
    response, status = error_response(
        "unauthorized",
        "this server needs its token: send 'Authorization: Bearer <token>', or open the "
        "login URL the server printed at start")
    response.headers["WWW-Authenticate"] = 'Bearer realm="tether"'
    return response, status


def _log_in(target: str) -> Response:
    """Redirect to ``target`` with the login cookie set (303: the next request is a GET)."""
    response = redirect(target, code=303)
    response.set_cookie(cookie_name(), current_auth().cookie_value,
                        max_age=COOKIE_MAX_AGE_SECONDS, httponly=True, samesite="Strict",
                        secure=request.is_secure, path="/")
    response.headers["Cache-Control"] = "no-store"
    return response


def _page_without_token() -> str:
    """The page's URL with ``token`` dropped from the query, so it leaves the address bar."""
    query = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
    return "/?" + urlencode(query) if query else "/"


@bp.before_app_request
def require_token() -> Response | tuple[Response, int] | None:
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    auth = current_auth()
    address = _client_address()
    given_in_url = request.args.get("token") if _is_page() else None
    presented = (given_in_url is not None or "Authorization" in request.headers
                 or cookie_name() in request.cookies)
    if presented:
        # A blocked address has nothing checked, right or wrong: otherwise a guesser would
        # still learn which guess is right.
        blocked = auth.blocked_for(address)
        if blocked:
            return _too_many(blocked)
    method = authenticate()
    if given_in_url is not None:
        if method not in (None, False):
            return redirect(_page_without_token(), code=303)  # just clean the address bar
        if auth.token_matches(given_in_url):
            return _log_in(_page_without_token())
        auth.record_failure(address)
        return _login_page("That token is not this server's.", 401)
    if method is None:
        return _unauthorized()
    if method is False:
        auth.record_failure(address)
        return _unauthorized()
    if method == "cookie" and (request.method not in SAFE_METHODS or _is_websocket_upgrade()):
        if not origin_allowed():
            return error_response(
                "forbidden",
                f"cross-origin request refused: Origin must be {own_origin()} or one of "
                "TETHER_ALLOWED_ORIGINS")
    return None


def _is_websocket_upgrade() -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


@bp.post("/login")
def login() -> Response | tuple[Response, int]:
    """The login form's target: ``token`` in a form body. Success: 303 to ``/`` with the
    cookie set. Wrong token: 401 and the form again; 429 past the failure limit."""
    # No origin check: with Referrer-Policy no-referrer a browser sends "Origin: null" on a
    # form post, and a forged login could only log a browser in with this server's token.
    auth = current_auth()
    address = _client_address()
    blocked = auth.blocked_for(address)
    if blocked:
        return _too_many(blocked)
    with read_deadline():  # open to anyone: a trickled form must not hold a connection
        token = request.form.get("token", "")
    if token and auth.token_matches(token.strip()):
        return _log_in("/")
    auth.record_failure(address)
    return _login_page("That token is not this server's." if token else "Enter the token.",
                       401)
