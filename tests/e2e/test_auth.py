"""Authentication on a real gunicorn server: the generated token and its login URL, the refusal
to listen beyond loopback without a token, WebSocket upgrades, and a browser logging in."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from playwright.sync_api import expect

from tests.e2e.browser import new_page, screenshot
from tests.e2e.live import ROOT, LiveServer, free_port
from tests.e2e.wsclient import WsClient
from tests.support import AUTH_HEADERS, TEST_TOKEN

pytestmark = pytest.mark.e2e


def test_a_generated_token_is_printed_once_in_a_login_url(tmp_path: Path) -> None:
    with LiveServer(tmp_path, TETHER_TOKEN="") as server:
        found = re.findall(rf"{re.escape(server.url)}/\?token=([\w-]+)", server.log_text())
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
def test_listening_beyond_loopback_without_a_token_is_refused(tmp_path: Path,
                                                              host: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.update(TETHER_HOST=host, TETHER_PORT=str(free_port()),
               TETHER_DATA_DIR=str(tmp_path / "data"), TETHER_ALLOW_ROOT="1")
    gunicorn = Path(sys.executable).with_name("gunicorn")
    for argv in ([str(gunicorn), "-c", "gunicorn.conf.py"], [sys.executable, "app.py"]):
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode != 0, argv
        assert "without TETHER_TOKEN" in done.stderr, (argv, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, done.stderr[-2000:]


def ws_url(server: LiveServer) -> str:
    return server.url.replace("http://", "ws://") + "/api/ws"


def login_cookie(server: LiveServer) -> str:
    session = requests.Session()
    session.get(server.login_url, timeout=10).raise_for_status()
    return f"tether-{server.port}={session.cookies[f'tether-{server.port}']}"


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
