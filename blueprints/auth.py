"""The edge: the Host allow-list, the token, browser logins and the failed-login throttle
(README "Security").

Every request but ``/healthz`` must name an allowed host: ``TETHER_ALLOWED_HOSTS``, by default
the loopback names (Jupyter Server's ``check_host``), so that a page on another site cannot
reach a server on this machine through a DNS name of its own (DNS rebinding): 403
``host_not_allowed``, before anything else is looked at.

Every API route, stream, poll and the WebSocket then require the server's token, as Jupyter
Server does: ``Authorization: Bearer <token>`` from programs, or in a browser a login cookie
(:mod:`blueprints.logins`) that the login page trades the token for. The login URL carries the
token in its fragment (``/#token=…``), which browsers never send: the page posts it to
``/login`` and drops it from the address bar and the history. ``/?token=…`` still works for
old links. Open without the token: ``/healthz``, static files, the login form, and the
service worker with its offline page (:mod:`blueprints.shell`).

- Tokens are compared in constant time (:func:`hmac.compare_digest`).
- Only failures are throttled (:mod:`blueprints.throttle`), never a right credential: per
  process with the memory and sqlite stores, in Redis (one budget for every worker and host)
  with the Redis store. A token
  is checked only where its failures are counted: in ``Authorization``, and in ``?token=`` or
  the login form on a top-level navigation (``Sec-Fetch-Dest: document``, or no ``Sec-Fetch-*``
  header at all, as from older browsers and scripts). A ``?token=`` on an image, script or
  frame request is not checked at all, so another site's page can neither guess through the
  operator's browser nor spend their failures. A stale login cookie is not a guess: it gets
  the login page with the reason, uncounted.
- Requests authenticated by cookie that change state (any method but GET, HEAD, OPTIONS), and
  every cookie-authenticated WebSocket upgrade, must come from an allowed origin: the server's
  own (its host having passed the allow-list) or one in ``TETHER_ALLOWED_ORIGINS``. ``Origin``
  is read first, then ``Referer``; with neither, the request is refused (403). This stops
  cross-site request forgery and cross-site WebSocket hijacking, which ``SameSite=Lax`` alone
  does not; a bearer token cannot be sent by another site, so it needs no check.
- No CORS headers are ever sent, so another origin's scripts cannot read any response.
"""

from __future__ import annotations

import hmac
import logging
import math
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Flask, Response, current_app, g, redirect, render_template, request

from blueprints.bodies import read_deadline
from blueprints.errors import error_response
from blueprints.logins import Logins, Verdict
from blueprints.throttle import FailureThrottle, Throttle
from tether.config import host_allowed
from tether.errors import StoreUnavailable

logger = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

#: Endpoints open without the token.
OPEN_ENDPOINTS = frozenset({"static", "api.healthz", "auth.login", "shell.service_worker",
                            "shell.offline"})
#: Endpoints open to any ``Host``: a health check names whatever address it probes.
ANY_HOST_ENDPOINTS = frozenset({"api.healthz"})
#: Methods that never change state: exempt from the origin check.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Method = Literal["bearer", "cookie"]

@dataclass(frozen=True)
class Auth:
    """What the edge checks against.

    :param token: the server's token, at least 16 characters.
    :param logins: issues and checks the login cookies.
    :param allowed_hosts: host names (``.example.com`` for it and every subdomain; ``*``
        for any), lower case, without port.
    :param allowed_origins: more origins whose pages may write with the login cookie.
    :param throttle: counts the failures (:mod:`blueprints.throttle`): in this process, or
        in Redis with the Redis store.
    """

    token: str
    logins: Logins
    allowed_hosts: tuple[str, ...] = ("*",)
    allowed_origins: frozenset[str] = frozenset()
    throttle: Throttle = field(default_factory=FailureThrottle)

    def token_matches(self, given: str) -> bool:
        """Constant-time comparison of ``given`` with the token."""
        return hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                                   self.token.encode("utf-8"))


def init_app(app: Flask, auth: Auth) -> None:
    """Install the edge's checks on every request of ``app``."""
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
    """This server's origin as the browser sees it (``https://host:port``; from a trusted
    proxy, as it forwarded it)."""
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


def is_navigation() -> bool:
    """True for a top-level navigation: ``Sec-Fetch-Dest: document``, or no ``Sec-Fetch-*``
    header at all (browsers before 2020, scripts). Fetch Metadata, W3C Working Draft."""
    dest = request.headers.get("Sec-Fetch-Dest")
    if dest is not None:
        return dest.strip().lower() == "document"
    return not any(name.lower().startswith("sec-fetch-") for name in request.headers.keys())


def _client_address() -> str:
    return request.remote_addr or "unknown"


def _is_page() -> bool:
    return request.endpoint == "ui.index"


def _login_page(message: str | None, status: int, forget_cookie: bool = False) -> Response:
    response = Response(render_template("login.html", message=message), status=status,
                        mimetype="text/html")
    if forget_cookie:
        response.delete_cookie(cookie_name(), path="/")
    return response


def _failed(message: str, page: bool) -> Response | tuple[Response, int]:
    """Count a wrong token from this address: 401, or 429 past the limit (uncounted). While
    the Redis store does not answer, the failure is counted in this worker and the API says
    503 ``store_unavailable``; the page and the login form, which need nothing from Redis,
    answer as always (:class:`blueprints.throttle.RedisFailureThrottle` says why)."""
    address = _client_address()
    try:
        retry = current_auth().throttle.fail(address)
    except StoreUnavailable as exc:
        logger.warning("authentication failed from %s (counted in this worker: the store "
                       "does not answer)", address)
        if page:
            return _login_page(message, 401)
        return error_response(exc.code, exc.message)
    logger.warning("authentication failed from %s%s", address, " (throttled)" if retry else "")
    if retry:
        seconds = math.ceil(retry)
        text = (f"Too many failed logins from your address: try again in {seconds} s. "
                "A browser that is logged in is not affected.")
        if page:
            response = _login_page(text, 429)
        else:
            response, _ = error_response("too_many_requests", text)
        response.headers["Retry-After"] = str(seconds)
        return response, 429
    if page:
        return _login_page(message, 401)
    return _unauthorized(message)


def _unauthorized(reason: str | None = None) -> tuple[Response, int]:
    response, status = error_response(
        "unauthorized",
        (reason + " " if reason else "") + "This server needs its token: send "
        "'Authorization: Bearer <token>', or open the login URL the server printed at start.")
    response.headers["WWW-Authenticate"] = 'Bearer realm="tether"'
    return response, status


def _log_in(target: str) -> Response:
    """Redirect to ``target`` with a new login cookie (303: the next request is a GET)."""
    auth = current_auth()
    response = redirect(target, code=303)
    # Lax, not Strict: a link from chat or mail opens the page logged in. Writes stay guarded
    # by the origin check, which Lax alone would not do for top-level POSTs.
    response.set_cookie(cookie_name(), auth.logins.issue(),
                        max_age=int(auth.logins.max_age_seconds), httponly=True,
                        samesite="Lax", secure=request.is_secure, path="/")
    return response


def _page_without_token() -> str:
    """The page's URL with ``token`` dropped from the query, so it leaves the address bar."""
    query = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
    return "/?" + urlencode(query) if query else "/"


@bp.before_app_request
def guard() -> Response | tuple[Response, int] | None:
    """The edge, in order: the host, then the credential, then the origin of a write."""
    if request.endpoint in ANY_HOST_ENDPOINTS:
        return None
    auth = current_auth()
    if not host_allowed(request.host, auth.allowed_hosts):
        return error_response(
            "host_not_allowed",
            f"this server does not answer to the host {request.host!r}: add it to "
            "TETHER_ALLOWED_HOSTS if it is this server's name")
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    return _require_token(auth)


def _require_token(auth: Auth) -> Response | tuple[Response, int] | None:
    stale: Verdict | None = None
    method: Method | None = None
    header = request.headers.get("Authorization")
    cookie = request.cookies.get(cookie_name())
    if header is not None:
        scheme, _, credentials = header.strip().partition(" ")
        if not (scheme.lower() == "bearer" and auth.token_matches(credentials.strip())):
            return _failed("The token in the Authorization header is not this server's.",
                           page=_is_page())
        method = "bearer"
    elif cookie is not None:
        login = auth.logins.check(cookie)
        if login.verdict is Verdict.VALID:
            method = "cookie"
            g.login_id = login.login_id
        else:
            stale = login.verdict
    given_in_url = request.args.get("token") if _is_page() and is_navigation() else None
    if given_in_url is not None:
        if method is not None:
            return redirect(_page_without_token(), code=303)  # just clean the address bar
        if auth.token_matches(given_in_url):
            return _log_in(_page_without_token())
        return _failed("That token is not this server's.", page=True)
    if method is None:
        if _is_page():
            return _login_page(stale.reason if stale else None, 401,
                               forget_cookie=stale is not None)
        return _unauthorized(stale.reason if stale else None)
    if method == "cookie" and (request.method not in SAFE_METHODS or _is_websocket_upgrade()):
        if not origin_allowed():
            return error_response(
                "forbidden",
                f"cross-origin request refused: Origin must be {own_origin()} or one of "
                "TETHER_ALLOWED_ORIGINS")
    return None


@bp.after_app_request
def no_store(response: Response) -> Response:
    """Nothing but the static files may be kept by a browser or a proxy cache: every other
    response carries session data, a login, or an error about one."""
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
    return response


def _is_websocket_upgrade() -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


@bp.post("/login")
def login() -> Response | tuple[Response, int]:
    """The login form's target: ``token`` in a form body, posted by a navigation (the form,
    or the page's script for a ``/#token=`` URL). Success: 303 to ``/`` with a new login
    cookie. Wrong token: 401 and the form again; 429 past the failure limit. From anything
    but a navigation the token is not checked (401)."""
    # No origin check: with Referrer-Policy no-referrer a browser sends "Origin: null" on a
    # form post, and a forged login could only log a browser in with this server's token.
    with read_deadline():  # open to anyone: a trickled form must not hold a connection
        token = request.form.get("token", "").strip()
    if not token:
        return _login_page("Enter the token.", 400)
    if not is_navigation():
        return _login_page("Log in from the login page.", 401)
    if current_auth().token_matches(token):
        return _log_in("/")
    return _failed("That token is not this server's.", page=True)


@bp.post("/logout")
def logout() -> Response:
    """End this browser's login: its cookie is revoked (refused from now on, a copy of it
    too) and deleted. 204. With a bearer token there is no login to end: 204 all the same."""
    login_id = g.get("login_id")
    if login_id:
        current_auth().logins.revoke(login_id)
    response = Response(status=204)
    response.delete_cookie(cookie_name(), path="/")
    return response
