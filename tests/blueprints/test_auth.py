"""The token, the login cookie, the origin check, rate limiting and security headers
(blueprints/auth.py, README "Security")."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from blueprints.auth import MAX_FAILURES, OPEN_ENDPOINTS
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
    assert "<script" not in html


def test_the_login_url_trades_the_token_for_a_cookie_and_drops_it_from_the_address(
        app: Flask) -> None:
    client = anonymous(app)
    response = client.get(f"/?token={TEST_TOKEN}&transport=ws")
    assert response.status_code == 303
    assert response.headers["Location"] == "/?transport=ws"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("tether-80=")
    assert TEST_TOKEN not in cookie  # an HMAC of the token, not the token
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie
    assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    assert client.get("/").status_code == 200
    assert client.get("/api/sessions").status_code == 200
    # Already logged in: a login URL only cleans the address bar.
    again = client.get(f"/?token={TEST_TOKEN}")
    assert again.status_code == 303 and "Set-Cookie" not in again.headers


def test_over_https_the_cookie_is_secure(app: Flask) -> None:
    client = anonymous(app)
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
    assert empty.status_code == 401
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


# ---------------------------------------------------------------- rate limiting


def test_repeated_failures_from_one_address_are_rate_limited(app: Flask) -> None:
    guesser = anonymous(app, "10.0.0.7")
    for _ in range(MAX_FAILURES):
        assert guesser.get("/api/sessions",
                           headers={"Authorization": "Bearer wrong-guess"}).status_code == 401
    limited = guesser.get("/api/sessions", headers={"Authorization": "Bearer wrong-guess"})
    assert limited.status_code == 429
    assert limited.json["error"]["code"] == "too_many_requests"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # Blocked means unchecked: even the right token gets 429, so guessing teaches nothing.
    right = guesser.get("/api/sessions", headers={"Authorization": f"Bearer {TEST_TOKEN}"})
    assert right.status_code == 429
    assert guesser.get(f"/?token={TEST_TOKEN}").status_code == 429
    assert guesser.post("/login", data={"token": TEST_TOKEN}).status_code == 429
    # Other addresses are not affected; requests without credentials are not counted.
    assert anonymous(app, "10.0.0.8").get(
        "/api/sessions", headers={"Authorization": f"Bearer {TEST_TOKEN}"}).status_code == 200
    assert anonymous(app, "10.0.0.9").get("/healthz").status_code == 200


def test_missing_credentials_are_not_failures(app: Flask) -> None:
    client = anonymous(app, "10.0.0.10")
    for _ in range(MAX_FAILURES * 2):
        assert client.get("/api/sessions").status_code == 401
    assert client.get("/api/sessions",
                      headers={"Authorization": f"Bearer {TEST_TOKEN}"}).status_code == 200


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


def test_forwarded_headers_are_ignored_without_trusted_proxies(app: Flask) -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "tether.example",
                 "X-Forwarded-For": "10.9.9.9"}
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


def test_forwarded_headers_are_honoured_from_trusted_proxies(make_app: Any) -> None:
    app = make_app(TETHER_TRUSTED_PROXIES=1)
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "tether.example",
                 "X-Forwarded-For": "10.9.9.9"}
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
    # Each client behind the proxy is counted by its own address.
    for n in range(MAX_FAILURES + 1):
        last = anonymous(app).get("/api/sessions", headers={
            "Authorization": "Bearer wrong-guess", "X-Forwarded-For": f"10.1.1.{n}"})
    assert last.status_code == 401


def test_session_ids_are_unguessable(app: Flask) -> None:
    client = app.test_client()
    ids = {client.post("/api/sessions", json={}).json["id"] for _ in range(20)}
    assert len(ids) == 20
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)  # 128 random bits


# ---------------------------------------------------------------- settings


def test_a_generated_token_is_long_and_random(make_app: Any) -> None:
    first = make_app(TETHER_TOKEN=None).extensions["tether_auth"].token
    second = make_app(TETHER_TOKEN=None).extensions["tether_auth"].token
    assert first != second
    assert len(first) >= 43  # 32 random bytes, URL-safe base64


@pytest.mark.parametrize("token", ["short", "x" * 15, "sixteen chars\n!!"])
def test_a_weak_token_is_refused_at_start(token: str) -> None:
    with pytest.raises(ValueError, match="TETHER_TOKEN"):
        Settings.from_env({"TETHER_TOKEN": token})


@pytest.mark.parametrize("host, token, refused", [
    ("127.0.0.1", None, False), ("127.0.0.2", None, False), ("::1", None, False),
    ("localhost", None, False), ("0.0.0.0", None, True), ("::", None, True),
    ("192.168.1.5", None, True), ("tether.example", None, True),
    ("0.0.0.0", TEST_TOKEN, False),
])
def test_binding_beyond_loopback_needs_a_token(host: str, token: str | None,
                                               refused: bool) -> None:
    settings = Settings.from_env({"TETHER_HOST": host, "TETHER_TOKEN": token})
    if refused:
        with pytest.raises(ValueError, match="without TETHER_TOKEN"):
            check_binding(settings)
    else:
        check_binding(settings)
