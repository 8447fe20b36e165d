"""The edge: the host allow-list, the token, the login cookie and logout, the origin check,
the failed-login throttle, forwarded headers and security headers (blueprints/auth.py,
README "Security")."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from blueprints.auth import OPEN_ENDPOINTS
from blueprints.throttle import MAX_FAILURES, RedisFailureThrottle
from tests.redis_server import RedisServer
from tests.support import TEST_TOKEN
from tether.config import Settings, check_binding

NO_AUTH = {"Authorization": ""}  # AuthClient sends the bearer token unless told otherwise


def anonymous(app: Flask, address: str = "127.0.0.1", **kwargs: Any) -> FlaskClient:
    """A client with no credentials (a browser that never logged in)."""
    client = FlaskClient(app, **kwargs)
    client.environ_base["REMOTE_ADDR"] = address
    return client


def logged_in(app: Flask, address: str = "127.0.0.1", token: str = TEST_TOKEN) -> FlaskClient:
    """A browser that opened the login URL: it holds the cookie, no Authorization header."""
    client = anonymous(app, address)
    response = client.get(f"/?token={token}")
    assert response.status_code == 303
    return client


def protected_routes(app: Flask) -> list[tuple[str, str]]:
    """(method, path) of every route that needs the token, with placeholders filled in."""
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in OPEN_ENDPOINTS:
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: f"x-{m.group(1)}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            routes.append((method, path))
    return routes


@pytest.fixture
def app(request: pytest.FixtureRequest, make_app: Any) -> Flask:
    """The app on the memory store, or on the one a test asks with :data:`BOTH_STORES`."""
    if getattr(request, "param", "memory") == "memory":
        return make_app()
    app = make_app(TETHER_STORE="redis",
                   TETHER_REDIS_URL=request.getfixturevalue("redis_server").url,
                   TETHER_REDIS_PREFIX=request.getfixturevalue("redis_prefix"))
    assert isinstance(app.extensions["tether_auth"].throttle, RedisFailureThrottle)
    return app


#: The test runs on the memory store (failures counted in this process) and on the Redis
#: store (counted in the test's private Redis, under its own prefix).
BOTH_STORES = pytest.mark.parametrize("app", ["memory", "redis"], indirect=True)


# ---------------------------------------------------------------- who needs the token


def test_every_route_but_health_static_and_login_needs_the_token(app: Flask) -> None:
    routes = protected_routes(app)
    assert ("GET", "/api/ws") in routes and ("GET", "/") in routes
    assert len(routes) >= 18
    client = anonymous(app)
    for method, path in routes:
        response = client.open(path, method=method, json={} if method != "GET" else None)
        assert response.status_code == 401, (method, path)
        if path != "/":
            assert response.json["error"]["code"] == "unauthorized", (method, path)
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="tether"'


def test_health_and_static_files_stay_open(app: Flask) -> None:
    client = anonymous(app)
    assert client.get("/healthz").status_code == 200
    for path in ("/static/style.css", "/static/js/core.js"):
        response = client.get(path)
        assert response.status_code == 200
        response.close()


@pytest.mark.parametrize("header", [
    f"Bearer {TEST_TOKEN}x", f"Bearer {TEST_TOKEN[:-1]}", f"Basic {TEST_TOKEN}", TEST_TOKEN,
    "Bearer", "", f"Bearer  {TEST_TOKEN} extra", "Bearer \udcff",
])
def test_a_wrong_authorization_header_is_401(app: Flask, header: str) -> None:
    response = anonymous(app).get("/api/sessions", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("header", [f"Bearer {TEST_TOKEN}", f"bearer {TEST_TOKEN}",
                                    f"  Bearer   {TEST_TOKEN}  "])
def test_the_bearer_token_is_accepted(app: Flask, header: str) -> None:
    assert anonymous(app).get("/api/sessions",
                              headers={"Authorization": header}).status_code == 200


def test_an_authorization_header_decides_alone(app: Flask) -> None:
    # A wrong header next to a good cookie is a failure, not a fallback.
    client = logged_in(app)
    assert client.get("/api/sessions").status_code == 200
    assert client.get("/api/sessions",
                      headers={"Authorization": "Bearer nope-nope-nope"}).status_code == 401


# ---------------------------------------------------------------- the page and the cookie


def test_the_page_without_a_cookie_is_a_login_form(app: Flask) -> None:
    response = anonymous(app).get("/")
    assert response.status_code == 401
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert 'action="/login"' in html and 'name="token"' in html
    # One script, from this origin (the fragment login); nothing inline.
    assert re.findall(r"<script[^>]*>", html) == [
        '<script src="/static/js/login.js" defer>']


def test_the_login_url_trades_the_token_for_a_cookie_and_drops_it_from_the_address(
        app: Flask) -> None:
    client = anonymous(app)
    response = client.get(f"/?token={TEST_TOKEN}&transport=ws")
    assert response.status_code == 303
    assert response.headers["Location"] == "/?transport=ws"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("tether-80=")
    assert TEST_TOKEN not in cookie  # a signed login id, not the token
    # Lax: a link from chat or mail opens the page logged in (writes are origin-checked).
    for flag in ("HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=2592000"):
        assert flag in cookie
    assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    assert client.get("/").status_code == 200
    assert client.get("/api/sessions").status_code == 200
    # Already logged in: a login URL only cleans the address bar.
    again = client.get(f"/?token={TEST_TOKEN}")
    assert again.status_code == 303 and "Set-Cookie" not in again.headers


def test_over_https_the_cookie_is_secure(make_app: Any) -> None:
    client = anonymous(make_app(TETHER_ALLOWED_HOSTS="tether.example"))
    response = client.get(f"/?token={TEST_TOKEN}", base_url="https://tether.example")
    assert response.status_code == 303
    assert "Secure" in response.headers["Set-Cookie"]
    assert response.headers["Set-Cookie"].startswith("tether-443=")


def test_a_wrong_login_url_shows_the_form_with_a_message(app: Flask) -> None:
    response = anonymous(app).get("/?token=not-the-token-at-all")
    assert response.status_code == 401
    assert "not this server" in response.get_data(as_text=True)
    assert "Set-Cookie" not in response.headers


def test_the_login_form(app: Flask) -> None:
    client = anonymous(app)
    wrong = client.post("/login", data={"token": "not-the-token-at-all"})
    assert wrong.status_code == 401 and "not this server" in wrong.get_data(as_text=True)
    empty = client.post("/login", data={})
    assert empty.status_code == 400
    right = client.post("/login", data={"token": TEST_TOKEN})
    assert right.status_code == 303 and right.headers["Location"] == "/"
    assert client.get("/api/sessions").status_code == 200


def test_a_cookie_for_another_token_or_port_is_refused(make_app: Any) -> None:
    other = make_app(TETHER_TOKEN="another-token-0123456789")
    mine = make_app()
    client = logged_in(other, token="another-token-0123456789")
    cookie = client.get_cookie("tether-80")
    assert cookie is not None
    stranger = anonymous(mine)
    stranger.set_cookie("tether-80", cookie.value)
    assert stranger.get("/api/sessions").status_code == 401
    # The same value under another port's name is simply not this server's cookie.
    elsewhere = anonymous(mine)
    elsewhere.set_cookie("tether-8001", logged_in(mine).get_cookie("tether-80").value)
    assert elsewhere.get("/api/sessions").status_code == 401


# ---------------------------------------------------------------- origins


@pytest.mark.parametrize("headers, status", [
    ({}, 403),
    ({"Origin": "http://localhost"}, 201),
    ({"Origin": "http://LOCALHOST"}, 201),
    ({"Referer": "http://localhost/#s=abc"}, 201),
    ({"Origin": "http://evil.example"}, 403),
    ({"Origin": "null"}, 403),
    ({"Origin": "http://localhost.evil.example"}, 403),
    ({"Origin": "https://localhost"}, 403),
    ({"Referer": "http://evil.example/http://localhost"}, 403),
    ({"Origin": "http://evil.example", "Referer": "http://localhost/"}, 403),
    ({"Origin": "http://127.0.0.1"}, 403),  # an allowed host, but not this page's origin
])
def test_state_changes_by_cookie_need_an_allowed_origin(app: Flask, headers: dict[str, str],
                                                        status: int) -> None:
    response = logged_in(app).post("/api/sessions", json={}, headers=headers)
    assert response.status_code == status, response.json
    if status == 403:
        assert response.json["error"]["code"] == "forbidden"


def test_every_unsafe_method_is_origin_checked(app: Flask, core: Any) -> None:
    session = core.create()
    client = logged_in(app)
    evil = {"Origin": "http://evil.example"}
    path = f"/api/sessions/{session.id}"
    for method, url, body in [("PATCH", path, {"title": "x"}), ("DELETE", path, None),
                              ("POST", path + "/prompt", {"text": "hi"}),
                              ("POST", path + "/cancel", None),
                              ("POST", path + "/approvals/r1", {"decision": "allow"}),
                              ("POST", path + "/clarify/r1", {"answers": {}})]:
        assert client.open(url, method=method, json=body, headers=evil).status_code == 403
    assert session.turn == 0 and core.get(session.id).title != "x"


def test_reads_by_cookie_need_no_origin_and_get_no_cors_headers(app: Flask) -> None:
    client = logged_in(app)
    response = client.get("/api/sessions", headers={"Origin": "http://evil.example"})
    assert response.status_code == 200
    assert not any(h.lower().startswith("access-control-") for h in response.headers.keys())
    preflight = client.options("/api/sessions", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_the_bearer_token_needs_no_origin(app: Flask) -> None:
    # Another site cannot make a browser send the header, so there is nothing to forge.
    response = app.test_client().post("/api/sessions", json={},
                                      headers={"Origin": "http://evil.example"})
    assert response.status_code == 201


def test_allowed_origins_extend_the_servers_own(make_app: Any) -> None:
    app = make_app(TETHER_ALLOWED_ORIGINS="https://tether.example, http://phone.lan:8000/")
    client = logged_in(app)
    for origin, status in [("https://tether.example", 201), ("http://phone.lan:8000", 201),
                           ("http://phone.lan:8001", 403), ("http://localhost", 201)]:
        response = client.post("/api/sessions", json={}, headers={"Origin": origin})
        assert response.status_code == status, origin


def test_websocket_upgrades_by_cookie_check_the_origin(app: Flask) -> None:
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    client = logged_in(app)
    refused = client.get("/api/ws", headers={**upgrade, "Origin": "http://evil.example"})
    assert refused.status_code == 403
    assert anonymous(app).get("/api/ws", headers=upgrade).status_code == 401


# ---------------------------------------------------------------- the failed-login throttle


@BOTH_STORES
def test_repeated_failures_from_one_address_are_throttled(app: Flask) -> None:
    guesser = anonymous(app, "10.0.0.7")
    for _ in range(MAX_FAILURES):
        assert guesser.get("/api/sessions",
                           headers={"Authorization": "Bearer wrong-guess"}).status_code == 401
    limited = guesser.get("/api/sessions", headers={"Authorization": "Bearer wrong-guess"})
    assert limited.status_code == 429
    assert limited.json["error"]["code"] == "too_many_requests"
    assert "try again in" in limited.json["error"]["message"]
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # The page gets the same refusal in HTML, saying when to retry.
    page = guesser.get("/?token=wrong-guess-again")
    assert page.status_code == 429 and page.mimetype == "text/html"
    assert "try again in" in page.get_data(as_text=True)
    assert 1 <= int(page.headers["Retry-After"]) <= 60
    assert guesser.post("/login", data={"token": "wrong"}).status_code == 429
    # Other addresses are not affected; requests without credentials are not counted.
    assert anonymous(app, "10.0.0.8").get(
        "/api/sessions", headers={"Authorization": "Bearer wrong-guess"}).status_code == 401
    assert anonymous(app, "10.0.0.9").get("/healthz").status_code == 200


@BOTH_STORES
def test_the_right_credential_is_accepted_from_a_throttled_address(app: Flask) -> None:
    # Nobody can lock the operator out by failing from their address (code-server's rule).
    operator = logged_in(app, "10.0.0.11")
    guesser = anonymous(app, "10.0.0.11")
    for _ in range(MAX_FAILURES + 5):
        guesser.get("/api/sessions", headers={"Authorization": "Bearer wrong-guess"})
    assert guesser.get("/api/sessions",
                       headers={"Authorization": "Bearer wrong-guess"}).status_code == 429
    assert operator.get("/api/sessions").status_code == 200
    assert operator.get("/").status_code == 200
    assert guesser.get("/api/sessions",
                       headers={"Authorization": f"Bearer {TEST_TOKEN}"}).status_code == 200
    assert anonymous(app, "10.0.0.11").get(f"/?token={TEST_TOKEN}").status_code == 303
    assert anonymous(app, "10.0.0.11").post("/login", data={"token": TEST_TOKEN}
                                            ).status_code == 303


@BOTH_STORES
@pytest.mark.parametrize("dest", ["image", "script", "iframe", "style", "empty"])
def test_a_login_url_from_an_image_or_script_is_neither_checked_nor_counted(
        app: Flask, dest: str) -> None:
    # Another site's <img src="http://127.0.0.1:8000/?token=x"> makes the operator's browser
    # send it: it must not spend their failures, nor log in, nor tell right from wrong.
    browser = anonymous(app, "10.0.0.12")
    fetch = {"Sec-Fetch-Dest": dest, "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Site": "cross-site"}
    for _ in range(MAX_FAILURES * 3):
        assert browser.get("/?token=x", headers=fetch).status_code == 401
    right = browser.get(f"/?token={TEST_TOKEN}", headers=fetch)
    assert right.status_code == 401 and "Set-Cookie" not in right.headers
    assert browser.post("/login", data={"token": TEST_TOKEN}, headers=fetch).status_code == 401
    assert app.extensions["tether_auth"].throttle.blocked_for("10.0.0.12") == 0
    navigation = {"Sec-Fetch-Dest": "document", "Sec-Fetch-Mode": "navigate"}
    assert browser.get("/?token=x", headers=navigation).status_code == 401
    assert browser.get(f"/?token={TEST_TOKEN}", headers=navigation).status_code == 303


@BOTH_STORES
def test_missing_credentials_and_stale_cookies_are_not_failures(app: Flask) -> None:
    client = anonymous(app, "10.0.0.10")
    client.set_cookie("tether-80", "an-old-cookie-from-another-token")
    for _ in range(MAX_FAILURES * 2):
        assert client.get("/api/sessions").status_code == 401
    client.delete_cookie("tether-80")
    for _ in range(MAX_FAILURES * 2):
        assert client.get("/api/sessions").status_code == 401
    assert app.extensions["tether_auth"].throttle.blocked_for("10.0.0.10") == 0


def test_with_redis_away_a_wrong_token_is_503_on_the_api_and_the_form_on_the_page(
        make_app: Any, tmp_path: Any) -> None:
    # The throttle cannot reach Redis: each failure is counted in this worker instead
    # (blueprints/throttle.py says why), never a 500. The API says what every API route says
    # then; the page and the login form, which need nothing from Redis, answer as always.
    with RedisServer(tmp_path / "redis") as server:  # its own: it is stopped
        app = make_app(TETHER_STORE="redis", TETHER_REDIS_URL=server.url,
                       TETHER_REDIS_PREFIX="away")
        guesser = anonymous(app, "10.0.0.13")
        server.stop()
        api = guesser.get("/api/sessions", headers={"Authorization": "Bearer wrong-guess"})
        assert api.status_code == 503
        assert api.json["error"]["code"] == "store_unavailable"
        page = guesser.get("/?token=wrong-guess")
        assert page.status_code == 401 and page.mimetype == "text/html"
        assert "not this server" in page.get_data(as_text=True)
        form = guesser.post("/login", data={"token": "wrong-guess"})
        assert form.status_code == 401 and "not this server" in form.get_data(as_text=True)
        # The right token logs in all the same.
        assert anonymous(app, "10.0.0.13").post("/login", data={"token": TEST_TOKEN}
                                                ).status_code == 303
        # This worker's own budget still holds: past it, 429 as always.
        for _ in range(MAX_FAILURES - 3):
            guesser.get("/api/sessions", headers={"Authorization": "Bearer wrong-guess"})
        limited = guesser.get("/api/sessions", headers={"Authorization": "Bearer wrong-guess"})
        assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
        assert guesser.get("/?token=wrong-guess").status_code == 429
        # Redis back: failures are counted in it again, from an empty count.
        server.start()
        assert guesser.get("/api/sessions",
                           headers={"Authorization": "Bearer wrong-guess"}).status_code == 401
        with server.client() as client:
            assert client.llen("away:throttle:10.0.0.13") == 1
        app.extensions["tether"].shutdown()  # while its Redis is there (twice is safe)


# ---------------------------------------------------------------- headers, proxies, ids


def test_the_page_carries_the_security_headers(app: Flask) -> None:
    for response in (logged_in(app).get("/"), anonymous(app).get("/")):
        csp = response.headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["script-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert directives["object-src"] == "'none'"
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Frame-Options"] == "DENY"
    assert "Strict-Transport-Security" not in anonymous(app).get("/").headers
    assert "Strict-Transport-Security" in anonymous(app).get(
        "/", base_url="https://tether.example").headers


def test_forwarded_headers_are_ignored_without_trusted_proxies(make_app: Any) -> None:
    app = make_app(TETHER_ALLOWED_HOSTS="localhost,tether.example")
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "tether.example",
                 "X-Forwarded-For": "10.9.9.9", "X-Forwarded-Port": "443"}
    response = anonymous(app).get(f"/?token={TEST_TOKEN}", headers=forwarded)
    assert "Secure" not in response.headers["Set-Cookie"]
    # The origin is still the server's own, not the one the headers claim.
    client = logged_in(app)
    assert client.post("/api/sessions", json={}, headers={
        **forwarded, "Origin": "https://tether.example"}).status_code == 403
    # A guesser cannot spread its failures over forged addresses.
    guesser = anonymous(app, "10.0.0.20")
    for n in range(MAX_FAILURES + 1):
        last = guesser.get("/api/sessions", headers={
            "Authorization": "Bearer wrong-guess", "X-Forwarded-For": f"10.1.1.{n}"})
    assert last.status_code == 429


def test_forwarded_headers_from_a_peer_outside_the_trusted_proxies_are_ignored(
        make_app: Any) -> None:
    # The proxy is 10.0.0.1; a client reaching gunicorn's port directly forges nothing.
    app = make_app(TETHER_TRUSTED_PROXIES="10.0.0.1", TETHER_ALLOWED_HOSTS="*")
    direct = anonymous(app, "10.0.0.66")
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.1.1.1",
              "X-Forwarded-Host": "tether.example", "X-Forwarded-Port": "443"}
    response = direct.get(f"/?token={TEST_TOKEN}", headers=forged)
    assert response.headers["Set-Cookie"].startswith("tether-80=")
    assert "Secure" not in response.headers["Set-Cookie"]
    for n in range(MAX_FAILURES):
        assert direct.get("/api/sessions", headers={
            **forged, "X-Forwarded-For": f"10.2.2.{n}",
            "Authorization": "Bearer wrong-guess"}).status_code == 401
    assert direct.get("/api/sessions", headers={
        **forged, "X-Forwarded-For": "10.3.3.3",
        "Authorization": "Bearer wrong-guess"}).status_code == 429


def test_forwarded_headers_are_honoured_from_trusted_proxies(make_app: Any) -> None:
    app = make_app(TETHER_TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8",
                   TETHER_ALLOWED_HOSTS="tether.example")
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "tether.example",
                 "X-Forwarded-For": "192.0.2.9"}
    client = anonymous(app)
    response = client.get(f"/?token={TEST_TOKEN}", headers=forwarded)
    assert "Secure" in response.headers["Set-Cookie"]
    assert response.headers["Set-Cookie"].startswith("tether-443=")
    cookie = client.get_cookie("tether-443", domain="localhost")
    assert cookie is not None
    proxied = anonymous(app)
    proxied.set_cookie("tether-443", cookie.value)
    assert proxied.post("/api/sessions", json={}, headers={
        **forwarded, "Origin": "https://tether.example"}).status_code == 201
    # A TLS port other than 443 reaches the origin check through X-Forwarded-Port.
    on_8443 = {**forwarded, "X-Forwarded-Port": "8443"}
    proxied.set_cookie("tether-8443", cookie.value)
    assert proxied.post("/api/sessions", json={}, headers={
        **on_8443, "Origin": "https://tether.example:8443"}).status_code == 201
    # Each client behind the proxy is counted by its own address.
    for n in range(MAX_FAILURES + 1):
        last = anonymous(app).get("/api/sessions", headers={
            **forwarded, "Authorization": "Bearer wrong-guess",
            "X-Forwarded-For": f"192.0.2.{n}"})
    assert last.status_code == 401
    # ... and a client naming itself in the header is still counted by the address the
    # proxy appended (the rightmost untrusted hop).
    for n in range(MAX_FAILURES + 1):
        last = anonymous(app).get("/api/sessions", headers={
            **forwarded, "Authorization": "Bearer wrong-guess",
            "X-Forwarded-For": f"198.51.100.{n}, 192.0.2.200, 10.1.1.1"})
    assert last.status_code == 429


# ---------------------------------------------------------------- the host allow-list


def route_kinds(app: Flask, core: Any) -> list[tuple[str, str]]:
    """One request of every kind: page, login, logout, API read and write, SSE, long-poll,
    inbox, WebSocket handshake, static file, metrics."""
    session = core.create()
    base = f"/api/sessions/{session.id}"
    return [("GET", "/"), ("POST", "/login"), ("POST", "/logout"), ("GET", "/api/sessions"),
            ("POST", "/api/sessions"), ("GET", base + "/stream"), ("GET", base + "/events"),
            ("GET", "/api/inbox"), ("GET", "/api/ws"), ("GET", "/static/style.css"),
            ("GET", "/metrics"), ("GET", "/api/openapi.json")]


@pytest.mark.parametrize("credentials", ["bearer", "cookie", "none"])
def test_a_host_not_allowed_is_refused_on_every_route(app: Flask, core: Any,
                                                      credentials: str) -> None:
    client = {"bearer": app.test_client(), "cookie": logged_in(app),
              "none": anonymous(app)}[credentials]
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    for host in ("evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "bad host"):
        for method, path in route_kinds(app, core):
            headers = {"Host": host, "Origin": f"http://{host}",
                       **(upgrade if path == "/api/ws" else {})}
            response = client.open(path, method=method, headers=headers,
                                   data={"token": TEST_TOKEN} if path == "/login" else None)
            assert response.status_code == 403, (host, method, path)
            assert response.json["error"]["code"] == "host_not_allowed", (host, path)
            response.close()
    assert client.get("/healthz", headers={"Host": "evil.example"}).status_code == 200


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:8000",
                                  "[::1]:8000", "LOCALHOST", "localhost.", "127.0.0.2:80"])
def test_the_loopback_names_are_allowed_by_default(make_app: Any, host: str) -> None:
    app = make_app(TETHER_HOST="127.0.0.2")
    assert app.test_client().get("/api/sessions", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("allowed, host, ok", [
    ("tether.example", "tether.example:8443", True),
    ("tether.example", "www.tether.example", False),
    (".tether.example", "www.tether.example", True),
    (".tether.example", "tether.example", True),
    (".tether.example", "eviltether.example", False),
    ("tether.example", "localhost", False),
    ("*", "anything.example", True),
    ("192.168.1.20", "192.168.1.20:8000", True),
])
def test_allowed_hosts(make_app: Any, allowed: str, host: str, ok: bool) -> None:
    app = make_app(TETHER_ALLOWED_HOSTS=allowed)
    status = app.test_client().get("/api/sessions", headers={"Host": host}).status_code
    assert status == (200 if ok else 403)


def test_the_host_from_a_trusted_proxy_is_the_forwarded_one(make_app: Any) -> None:
    app = make_app(TETHER_TRUSTED_PROXIES="127.0.0.1", TETHER_ALLOWED_HOSTS="tether.example")
    client = app.test_client()
    assert client.get("/api/sessions", headers={
        "Host": "127.0.0.1:8000", "X-Forwarded-Host": "tether.example"}).status_code == 200
    assert client.get("/api/sessions", headers={
        "Host": "tether.example", "X-Forwarded-Host": "evil.example"}).status_code == 403


# ---------------------------------------------------------------- logins: expiry, logout, keys


def test_logout_ends_the_login_and_every_copy_of_its_cookie(app: Flask) -> None:
    browser = logged_in(app)
    copy = anonymous(app)
    copy.set_cookie("tether-80", browser.get_cookie("tether-80").value)
    other = logged_in(app)
    assert copy.get("/api/sessions").status_code == 200
    # Logout is a write: the origin check applies.
    assert browser.post("/logout", headers={"Origin": "http://evil.example"}).status_code == 403
    response = browser.post("/logout", headers={"Origin": "http://localhost"})
    assert response.status_code == 204
    assert "tether-80=;" in response.headers["Set-Cookie"]  # deleted
    assert browser.get("/api/sessions").status_code == 401
    refused = copy.get("/api/sessions")
    assert refused.status_code == 401 and "logged out" in refused.json["error"]["message"]
    page = copy.get("/")
    assert page.status_code == 401 and "logged out" in page.get_data(as_text=True)
    assert other.get("/api/sessions").status_code == 200  # one browser, not all of them


def test_a_logout_is_kept_across_a_restart(make_app: Any) -> None:
    first = make_app()
    browser = logged_in(first)
    cookie = browser.get_cookie("tether-80").value
    kept = logged_in(first).get_cookie("tether-80").value
    browser.post("/logout", headers={"Origin": "http://localhost"})
    second = make_app()  # same data dir: same secret key, same revocations
    for value, status in ((cookie, 401), (kept, 200)):
        client = anonymous(second)
        client.set_cookie("tether-80", value)
        assert client.get("/api/sessions").status_code == status


def test_a_login_expires(make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(TETHER_SESSION_DAYS=1)
    browser = logged_in(app)
    assert "Max-Age=86400" in anonymous(app).get(f"/?token={TEST_TOKEN}").headers["Set-Cookie"]
    assert browser.get("/api/sessions").status_code == 200
    import time as real_time

    later = real_time.time() + 86400 + 60
    monkeypatch.setattr("itsdangerous.timed.time.time", lambda: later)
    response = browser.get("/api/sessions")
    assert response.status_code == 401 and "expired" in response.json["error"]["message"]
    page = browser.get("/")
    assert page.status_code == 401 and "expired" in page.get_data(as_text=True)


@pytest.mark.parametrize("change", ["TETHER_TOKEN", "TETHER_SECRET_KEY"])
def test_changing_the_token_or_the_secret_key_ends_every_login(make_app: Any,
                                                               change: str) -> None:
    before = {"TETHER_SECRET_KEY": "the-first-secret-key-0123"}
    cookie = logged_in(make_app(**before)).get_cookie("tether-80").value
    same = anonymous(make_app(**before))
    same.set_cookie("tether-80", cookie)
    assert same.get("/api/sessions").status_code == 200
    new_token = "a-new-token-0123456789abcdef"
    after = {**before, change: "the-second-secret-key-456" if change == "TETHER_SECRET_KEY"
             else new_token}
    changed = make_app(**after)
    client = anonymous(changed)
    client.set_cookie("tether-80", cookie)
    response = client.get("/api/sessions")
    assert response.status_code == 401 and "changed" in response.json["error"]["message"]
    page = client.get("/")
    assert "changed" in page.get_data(as_text=True)
    assert "tether-80=;" in page.headers["Set-Cookie"]  # the stale cookie is dropped


def test_the_secret_key_is_kept_in_the_data_dir(make_app: Any, tmp_path: Any) -> None:
    cookie = logged_in(make_app()).get_cookie("tether-80").value
    key = tmp_path / "data" / "secret.key"
    assert key.stat().st_mode & 0o777 == 0o600
    client = anonymous(make_app())
    client.set_cookie("tether-80", cookie)
    assert client.get("/api/sessions").status_code == 200


def test_a_cookie_of_the_old_format_is_a_changed_login(app: Flask) -> None:
    client = anonymous(app)
    client.set_cookie("tether-80", "0" * 64)  # the HMAC the cookie held before
    assert client.get("/").status_code == 401


# ---------------------------------------------------------------- caching


def test_every_response_but_static_files_is_no_store(app: Flask, core: Any) -> None:
    session = core.create()
    client = logged_in(app)
    for path in ("/", "/api/sessions", f"/api/sessions/{session.id}",
                 f"/api/sessions/{session.id}/events", "/api/inbox", "/api/agents",
                 f"/api/sessions/{session.id}/transcript.jsonl", "/api/sessions/nope",
                 f"/api/sessions/{session.id}/stream", "/metrics"):
        response = client.get(path)
        assert response.headers["Cache-Control"] == "no-store", path
        response.close()
    assert anonymous(app).get("/").headers["Cache-Control"] == "no-store"
    static = client.get("/static/style.css")
    assert static.headers.get("Cache-Control") != "no-store"
    static.close()


def test_session_ids_are_unguessable(app: Flask) -> None:
    client = app.test_client()
    ids = {client.post("/api/sessions", json={}).json["id"] for _ in range(20)}
    assert len(ids) == 20
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)  # 128 random bits


# ---------------------------------------------------------------- settings


def test_a_generated_token_is_long_random_and_kept_in_the_data_dir(
        make_app: Any, tmp_path: Any) -> None:
    first = make_app(TETHER_TOKEN=None).extensions["tether_auth"].token
    kept = tmp_path / "data" / "token"
    assert kept.read_text().strip() == first
    assert kept.stat().st_mode & 0o777 == 0o600
    assert len(first) >= 43  # 32 random bytes, URL-safe base64
    # The next start (same data dir) keeps it: nobody is logged out by a restart.
    assert make_app(TETHER_TOKEN=None).extensions["tether_auth"].token == first
    # TETHER_TOKEN wins over the kept one.
    assert make_app().extensions["tether_auth"].token == TEST_TOKEN
    elsewhere = make_app(TETHER_TOKEN=None, TETHER_DATA_DIR=tmp_path / "other")
    assert elsewhere.extensions["tether_auth"].token != first


@pytest.mark.parametrize("token", ["short", "x" * 15, "sixteen chars\n!!"])
def test_a_weak_token_is_refused_at_start(token: str) -> None:
    with pytest.raises(ValueError, match="TETHER_TOKEN"):
        Settings.from_env({"TETHER_TOKEN": token})


@pytest.mark.parametrize("host, allowed, refused", [
    ("127.0.0.1", None, False), ("::1", None, False), ("localhost", None, False),
    ("0.0.0.0", None, True), ("::", None, True), ("192.168.1.5", None, True),
    ("tether.example", None, True), ("0.0.0.0", "tether.example", False),
    ("0.0.0.0", "*", False),
])
def test_binding_beyond_loopback_needs_the_allowed_hosts(host: str, allowed: str | None,
                                                         refused: bool) -> None:
    # A token is always there (TETHER_TOKEN, or the one kept in the data dir); the host
    # names are what the operator must choose.
    settings = Settings.from_env({"TETHER_HOST": host, "TETHER_ALLOWED_HOSTS": allowed})
    if refused:
        with pytest.raises(ValueError, match="without TETHER_ALLOWED_HOSTS.*DNS rebinding"):
            check_binding(settings)
    else:
        check_binding(settings)


@pytest.mark.parametrize("value, expected", [
    ("", ()), ("0", ()), ("127.0.0.1", ("127.0.0.1/32",)),
    ("127.0.0.1, 10.0.0.0/8 ,::1", ("127.0.0.1/32", "10.0.0.0/8", "::1/128")),
    ("192.168.1.7/24", ("192.168.1.0/24",)),
])
def test_trusted_proxies_take_addresses_and_networks(value: str, expected: tuple[str]) -> None:
    settings = Settings.from_env({"TETHER_TRUSTED_PROXIES": value})
    assert tuple(str(n) for n in settings.trusted_proxies) == expected


@pytest.mark.parametrize("value, message", [
    ("1", "a count of proxies.*127.0.0.1"), ("2", "no longer takes"),
    ("proxy.example", "not an IP address"), ("10.0.0.0/33", "not an IP address"),
])
def test_the_old_proxy_count_and_names_are_refused(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"TETHER_TRUSTED_PROXIES.*{message}"):
        Settings.from_env({"TETHER_TRUSTED_PROXIES": value})


@pytest.mark.parametrize("value", ["https://tether.example", "tether.example/x", "a b", ""])
def test_a_malformed_allowed_host_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="TETHER_ALLOWED_HOSTS"):
        Settings.from_env({"TETHER_ALLOWED_HOSTS": value})


def test_with_redis_away_a_logged_in_page_is_tethers_503_page_that_retries(
        make_app: Any, tmp_path: Any) -> None:
    # The login cookie's revocation check needs Redis. A person who opens the page then gets
    # Tether's own page saying so, which retries by itself, never a JSON body in the browser
    # window; the API's answer is unchanged.
    with RedisServer(tmp_path / "redis") as server:  # its own: it is stopped
        app = make_app(TETHER_STORE="redis", TETHER_REDIS_URL=server.url,
                       TETHER_REDIS_PREFIX="away-page")
        browser = logged_in(app, "10.0.0.14")
        assert browser.get("/").status_code == 200
        server.stop()
        for query in ("", "?client=basic"):
            page = browser.get("/" + query, headers={"Sec-Fetch-Dest": "document",
                                                     "Sec-Fetch-Mode": "navigate"})
            assert page.status_code == 503 and page.mimetype == "text/html"
            assert page.headers["Retry-After"].isdigit()
            assert page.headers["Cache-Control"] == "no-store"
            text = page.get_data(as_text=True)
            assert "cannot reach its store (Redis)" in text
            assert 'data-check="/api/sessions"' in text  # it asks again by itself
            assert TEST_TOKEN not in text
        api = browser.get("/api/sessions")
        assert api.status_code == 503 and api.json["error"]["code"] == "store_unavailable"
