"""The edge on a real gunicorn server: the generated token and its login URL, the refusal to
listen beyond loopback without a token, WebSocket upgrades, the failed-login throttle under
2,000 concurrent guesses, under another site's images and across two workers on Redis, and a
browser logging in through the fragment, following a link from another site, and logging
out."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from playwright.sync_api import expect

from tests.e2e.browser import CHROMIUM_ARGS, WAIT_MS, log_in, new_page, screenshot
from tests.e2e.live import ROOT, LiveServer, free_port
from tests.e2e.wsclient import WsClient
from tests.redis_server import RedisServer
from tests.support import AUTH_HEADERS, TEST_TOKEN

pytestmark = pytest.mark.e2e


def test_a_generated_token_is_printed_once_in_a_login_url(tmp_path: Path) -> None:
    with LiveServer(tmp_path, TETHER_TOKEN="") as server:
        found = re.findall(rf"{re.escape(server.url)}/#token=([\w-]+)", server.log_text())
        assert len(found) == 1, server.log_text()
        token = found[0]
        assert len(token) >= 43 and token != TEST_TOKEN
        assert server.api("GET", "/api/sessions").status_code == 401  # TEST_TOKEN is wrong
        assert requests.get(server.url + "/api/sessions", timeout=10,
                            headers={"Authorization": f"Bearer {token}"}).status_code == 200
        browser_like = requests.Session()
        login = browser_like.get(f"{server.url}/?token={token}", timeout=10)
        assert login.status_code == 200 and login.url == server.url + "/"
        assert browser_like.get(server.url + "/api/sessions", timeout=10).status_code == 200
        server.stop()
        # The access log names paths without their query string: the token is not in it.
        assert server.log_text().count(token) == 1


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_listening_beyond_loopback_without_allowed_hosts_is_refused(tmp_path: Path,
                                                                    host: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.update(TETHER_HOST=host, TETHER_PORT=str(free_port()),
               TETHER_DATA_DIR=str(tmp_path / "data"), TETHER_ALLOW_ROOT="1")
    gunicorn = Path(sys.executable).with_name("gunicorn")
    for argv in ([str(gunicorn), "-c", "gunicorn.conf.py"], [sys.executable, "app.py"]):
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode != 0, argv
        assert "without TETHER_ALLOWED_HOSTS" in done.stderr, (argv, done.stderr[-2000:])
        assert "TETHER_ALLOWED_HOSTS=" in done.stderr  # with this machine's addresses
        assert "Traceback" not in done.stderr, done.stderr[-2000:]


def ws_url(server: LiveServer) -> str:
    return server.url.replace("http://", "ws://") + "/api/ws"


def login_cookie(server: LiveServer) -> str:
    return server.login_cookie()


def handshake_status(server: LiveServer, **options: Any) -> int:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(ws_url(server), timeout=10, **options)
    return int(refused.value.status_code)


def test_websocket_upgrades_need_the_token_and_an_allowed_origin(server: LiveServer) -> None:
    assert handshake_status(server, header=[]) == 401
    assert handshake_status(server, header=["Authorization: Bearer wrong-token-wrong"]) == 401
    cookie = login_cookie(server)
    # A page on another site cannot hijack the browser's login (CSWSH).
    assert handshake_status(server, cookie=cookie, origin="http://evil.example") == 403
    assert handshake_status(server, cookie=cookie, suppress_origin=True) == 403
    browser = WsClient(server.url, header=[], cookie=cookie, origin=server.url)
    assert browser.call("session.list")["sessions"] == []
    browser.close()
    # A program with the bearer token needs no Origin.
    program = WsClient(server.url, origin="http://anything.example")
    assert program.ready["version"]
    program.close()


def test_streams_and_polls_need_the_token(server: LiveServer) -> None:
    sid = server.create_session()["id"]
    for path in (f"/api/sessions/{sid}/stream", "/api/inbox/stream",
                 f"/api/sessions/{sid}/events?wait=5", "/api/inbox?wait=5"):
        response = requests.get(server.url + path, timeout=10)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "unauthorized"
        ok = requests.get(server.url + path, headers=AUTH_HEADERS, timeout=10, stream=True)
        assert ok.status_code == 200, path
        ok.close()


def test_a_rebinding_host_reaches_nothing_on_a_real_server(server: LiveServer) -> None:
    # A page on another site whose DNS name now points at 127.0.0.1: its requests name that
    # host. Every route kind refuses it, with the token and without; the WebSocket handshake
    # too.
    sid = server.create_session()["id"]
    evil = {"Host": f"rebind.evil.example:{server.port}"}
    for headers in (evil, {**evil, **AUTH_HEADERS},
                    {**evil, "Cookie": server.login_cookie(),
                     "Origin": f"http://rebind.evil.example:{server.port}"}):
        for method, path in (("GET", "/"), ("POST", "/login"), ("GET", "/api/sessions"),
                             ("POST", f"/api/sessions/{sid}/prompt"),
                             ("GET", f"/api/sessions/{sid}/stream"),
                             ("GET", f"/api/sessions/{sid}/events?wait=5"),
                             ("GET", "/api/inbox/stream")):
            response = requests.request(method, server.url + path, headers=headers, timeout=10,
                                        json={"text": "hi"} if method == "POST" else None)
            assert response.status_code == 403, (method, path, headers)
            assert response.json()["error"]["code"] == "host_not_allowed"
        assert handshake_status(server, header=[f"{k}: {v}" for k, v in headers.items()
                                                if k != "Host"],
                                host=evil["Host"]) == 403
    assert server.events(sid)["events"] == []  # nothing reached the session


@pytest.mark.browser
def test_a_person_logs_in_with_the_form_and_is_sent_back_to_it_when_signed_out(
        browser: Any, server: LiveServer) -> None:
    page = new_page(browser)
    try:
        page.goto(server.url + "/")
        expect(page.get_by_role("heading", name="Tether")).to_be_visible()
        page.get_by_label("Token").fill("not-the-token-at-all")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_contain_text("not this server")
        page.get_by_label("Token").fill(TEST_TOKEN)
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#conn")).to_have_text("Connected · SSE")
        assert page.url == server.url + "/"
        screenshot(page, "logged-in")
        # The server forgets this browser (a new token after a restart; here, the cookie
        # goes): the next request gets 401 and the page shows the login form again.
        page.context.clear_cookies()
        page.locator("#empty-new").click()
        expect(page.get_by_label("Token")).to_be_visible()
        screenshot(page, "signed-out")
        assert page.js_errors == []
    finally:
        page.context.close()


def test_concurrent_guesses_get_exactly_the_limit_while_the_right_token_always_works(
        server: LiveServer) -> None:
    # 2,000 wrong tokens at once from one address: exactly MAX_FAILURES 401s, then 429s; the
    # right token, interleaved among them, is accepted every time.
    from blueprints.throttle import MAX_FAILURES

    def get(header: str) -> int:
        return requests.get(server.url + "/api/sessions", timeout=30,
                            headers={"Authorization": header}).status_code

    calls = []
    for n in range(2000):
        calls.append(f"Bearer wrong-guess-{n:04d}-xxxxxxxx")
        if n % 20 == 0:
            calls.append(f"Bearer {TEST_TOKEN}")
    with ThreadPoolExecutor(max_workers=64) as pool:
        statuses = list(pool.map(get, calls))
    wrong = [s for c, s in zip(calls, statuses, strict=True) if TEST_TOKEN not in c]
    right = [s for c, s in zip(calls, statuses, strict=True) if TEST_TOKEN in c]
    assert wrong.count(401) == MAX_FAILURES
    assert wrong.count(429) == 2000 - MAX_FAILURES
    assert right == [200] * 100


def pinned_to_each_worker(server: LiveServer, workers: int,
                          timeout: float = 30) -> dict[str, requests.Session]:
    """One keep-alive connection per worker of ``server`` (``TETHER_DEBUG_WORKER=1``), by
    worker id: a connection stays with the worker that accepted it. Every connection is used
    again on each try, so that none idles past gunicorn's keepalive meanwhile."""
    pinned: dict[str, requests.Session] = {}
    deadline = time.monotonic() + timeout
    while len(pinned) < workers:
        assert time.monotonic() < deadline, f"only {sorted(pinned)} answered"
        for wid, session in pinned.items():
            assert session.get(server.url + "/healthz", timeout=10
                               ).headers["X-Tether-Worker"] == wid
        session = requests.Session()
        wid = session.get(server.url + "/healthz", timeout=10).headers["X-Tether-Worker"]
        if wid in pinned:
            session.close()
        else:
            pinned[wid] = session
    return pinned


def test_two_workers_on_redis_count_failures_against_one_budget(
        tmp_path: Path, redis_server: RedisServer, redis_prefix: str) -> None:
    # With the Redis store every worker counts an address's failures in Redis: failing on two
    # workers, in turn, spends one budget, and then both refuse (a budget per worker would
    # have let each take MAX_FAILURES). The right token is accepted by both all the same.
    from blueprints.throttle import MAX_FAILURES

    with LiveServer(tmp_path, TETHER_STORE="redis", TETHER_REDIS_URL=redis_server.url,
                    TETHER_REDIS_PREFIX=redis_prefix, TETHER_DEBUG_WORKER=1,
                    WEB_CONCURRENCY=2) as server:
        pinned = pinned_to_each_worker(server, 2)
        try:
            def guess(wid: str, header: str) -> int:
                response = pinned[wid].get(server.url + "/api/sessions", timeout=10,
                                           headers={"Authorization": header})
                assert response.headers["X-Tether-Worker"] == wid
                return response.status_code

            a, b = sorted(pinned)
            turns = [a, b] * (MAX_FAILURES // 2) + [a] * (MAX_FAILURES % 2)
            assert [guess(wid, f"Bearer wrong-guess-{n}") for n, wid in enumerate(turns)
                    ] == [401] * MAX_FAILURES
            for wid in (a, b):
                refused = pinned[wid].get(server.url + "/api/sessions", timeout=10,
                                          headers={"Authorization": "Bearer wrong-again"})
                assert refused.status_code == 429, wid
                assert refused.headers["X-Tether-Worker"] == wid
                assert refused.json()["error"]["code"] == "too_many_requests"
                assert 1 <= int(refused.headers["Retry-After"]) <= 60
                assert guess(wid, f"Bearer {TEST_TOKEN}") == 200
            with redis_server.client() as client:
                assert client.llen(f"{redis_prefix}:throttle:127.0.0.1") == MAX_FAILURES
        finally:
            for session in pinned.values():
                session.close()


#: Another site, served by Playwright's router (nothing leaves the machine).
EVIL = "http://evil.example"


def evil_page(context: Any, html: str) -> Any:
    context.route(f"{EVIL}/**", lambda route: route.fulfill(
        status=200, content_type="text/html", body=html))
    page = context.new_page()
    page.goto(EVIL + "/")
    return page


@pytest.mark.browser
def test_another_sites_images_cannot_lock_the_operator_out(browser: Any,
                                                           server: LiveServer) -> None:
    page = new_page(browser, server)
    try:
        images = "".join(f'<img src="{server.url}/?token=x{n}">' for n in range(50))
        evil = evil_page(page.context, f"<html><body>{images}</body></html>")
        evil.wait_for_load_state("load")
        evil.close()
        # Not one of them counted: a fresh browser from the same address can still fail.
        assert requests.get(server.url + "/api/sessions", timeout=10, headers={
            "Authorization": "Bearer wrong-once"}).status_code == 401
        page.reload()
        expect(page.locator("#conn")).to_have_text("Connected · SSE")
        page.locator("#empty-new").click()
        expect(page.locator("#dock")).to_be_visible()
        assert page.js_errors == []
    finally:
        page.context.close()


@pytest.mark.browser
def test_the_fragment_login_leaves_no_token_behind_and_logout_ends_it(
        browser: Any, tmp_path: Path, server: LiveServer) -> None:
    # A persistent profile, so that Chromium's own history database can be read afterwards.
    from tests.e2e.browser import CHROMIUM

    profile = tmp_path / "profile"
    requested: list[str] = []
    if True:  # noqa: SIM108 (one block, as the other browser tests' `with`)
        context = browser.browser_type.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=20_000,
            viewport={"width": 1280, "height": 800})
        context.set_default_timeout(WAIT_MS)
        context.on("request", lambda r: requested.append(r.url))
        page = context.pages[0] if context.pages else context.new_page()
        log_in(page, server)
        expect(page.locator("#conn")).to_have_text("Connected · SSE")
        assert page.evaluate("location.href") == server.url + "/"
        # A link from another site opens the page logged in (SameSite=Lax).
        evil = evil_page(context, f'<a id="go" href="{server.url}/">Tether</a>')
        evil.click("#go")
        evil.wait_for_url(server.url + "/")
        expect(evil.locator("#conn")).to_have_text("Connected · SSE")
        evil.close()
        cookie = next(c for c in context.cookies() if c["name"] == f"tether-{server.port}")
        assert cookie["sameSite"] == "Lax" and cookie["httpOnly"]
        # Logging out ends the login, for a copy of the cookie too.
        page.locator("#settings summary").click()  # a desktop window: the drawer is open
        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_label("Token")).to_be_visible()
        expect(page.get_by_role("status")).to_have_text(
            "You logged out. This browser's login has ended.")
        assert page.evaluate("location.href") == server.url + "/"
        copy = requests.get(server.url + "/api/sessions", timeout=10,
                            cookies={cookie["name"]: cookie["value"]})
        assert copy.status_code == 401
        screenshot(page, "logged-out")
        context.close()
    assert requested and not [url for url in requested if TEST_TOKEN in url]
    history = profile / "Default" / "History"
    assert history.exists()
    # Chromium records the navigation before the page can replace its address: that row is
    # kept hidden (urls.hidden = 1: not in chrome://history, nor in the address bar's
    # suggestions). No entry anyone sees holds the token.
    with sqlite3.connect(history) as db:
        visible = [row[0] for row in db.execute("SELECT url FROM urls WHERE hidden = 0")]
    assert server.url + "/" in visible
    assert not [url for url in visible if TEST_TOKEN in url], visible
    server.stop()
    # The log holds the login URL printed at start, and no request with the token in it.
    lines = [line for line in server.log_path.read_text().splitlines() if TEST_TOKEN in line]
    assert len(lines) == 1 and "#token=" in lines[0], lines


@pytest.mark.browser
def test_a_refused_write_is_said_in_words(browser: Any, tmp_path: Path) -> None:
    # A proxy that forwards https for a page the browser loaded over http (a misconfigured
    # proxy): the origin check refuses every write. The page must say so, whatever view is
    # open, not leave a button that does nothing.
    with LiveServer(tmp_path, TETHER_TRUSTED_PROXIES="127.0.0.1") as server:
        page = new_page(browser, server)
        try:
            page.route("**/api/sessions", lambda route: route.continue_(headers={
                **route.request.headers, "x-forwarded-proto": "https"}))
            page.locator("#empty-new").click()
            banner = page.locator("#refused-banner")
            expect(banner).to_be_visible()
            expect(banner).to_contain_text("another site (403)")
            expect(banner).to_contain_text("X-Forwarded-Proto")
            screenshot(page, "refused-write")
            banner.get_by_role("button", name="Dismiss").click()
            expect(banner).to_be_hidden()
        finally:
            page.context.close()
