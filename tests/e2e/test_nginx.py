"""Tether behind Debian's nginx with the shipped site file (deploy/nginx.conf), over TLS on a
port other than 443: every transport, the login cookie and the origin check, the redirect to
HTTPS, the default server, the access logs, and the UI in Chromium.

One nginx and one Tether serve the module; the keepalive test runs a second nginx with a
short read timeout in front of the same Tether. How the shipped file becomes the test's is in
tests/e2e/nginx.py.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import websocket
from playwright.sync_api import expect

from app import create_app
from blueprints.api import prompt_body_limit
from tests.e2e.browser import log_in as log_in_page
from tests.e2e.browser import new_page, screenshot
from tests.e2e.live import LiveServer
from tests.e2e.nginx import (
    SERVER_NAME,
    SITE,
    Nginx,
    check_config,
    main_config,
    make_certificate,
    nginx_binary,
    with_paths,
)
from tests.e2e.test_browser import pending_card, send, start_session, wait_turn_finished
from tests.e2e.wsclient import WsClient
from tests.support import AUTH_HEADERS, TEST_TOKEN

pytestmark = [pytest.mark.e2e, pytest.mark.nginx]

#: The environment Tether runs with behind the test's nginx, beyond LiveServer's own: nginx on
#: this host is the one trusted proxy, and the site's name the one allowed host.
TETHER_BEHIND_NGINX = {"TETHER_TRUSTED_PROXIES": "127.0.0.1", "TETHER_ALLOWED_HOSTS": SERVER_NAME}

#: Seconds between keepalives on an idle stream (TETHER_KEEPALIVE), for the whole module.
KEEPALIVE_SECONDS = 1
#: The longest long-poll, in seconds (blueprints/poll.py MAX_WAIT_SECONDS).
MAX_WAIT_SECONDS = 50


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tether(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    nginx_binary()  # skip (or, in CI, fail) before starting anything
    with LiveServer(tmp_path_factory.mktemp("tether"), TETHER_KEEPALIVE=KEEPALIVE_SECONDS,
                    **TETHER_BEHIND_NGINX) as server:
        yield server


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, tether: LiveServer,
         certificate: tuple[Path, Path]) -> Iterator[Nginx]:
    with Nginx(tmp_path_factory.mktemp("nginx"), tether.port, *certificate) as nginx:
        yield nginx


def client(edge: Nginx) -> requests.Session:
    """A requests session that trusts the test's certificate (and only it: with the
    environment trusted, REQUESTS_CA_BUNDLE would win over ``verify``)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(edge.cert)
    return session


def api(edge: Nginx, method: str, path: str, **kwargs: Any) -> requests.Response:
    """A bearer-token request through nginx."""
    kwargs.setdefault("timeout", 10)
    kwargs["headers"] = {**AUTH_HEADERS, **kwargs.get("headers", {})}
    return requests.request(method, edge.url + path, verify=str(edge.cert), **kwargs)


def log_in(edge: Nginx) -> tuple[requests.Session, requests.Response]:
    """Open the login URL (``/?token=``) through nginx; the session then holds the cookie."""
    session = client(edge)
    response = session.get(f"{edge.url}/?token={TEST_TOKEN}", allow_redirects=False,
                           timeout=10)
    assert response.status_code == 303, response.text
    return session, response


def sse_frames(response: requests.Response) -> Iterator[tuple[float, str, str]]:
    """``(arrival, event, data)`` for each frame of an SSE response as its bytes arrive;
    ``arrival`` is Unix time in seconds (the clock of the events' ``ts``). Comment-only and
    ``retry:`` frames are skipped."""
    buffer = b""
    for chunk in response.iter_content(chunk_size=None):
        arrival = time.time()
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            event, data = None, []
            for line in block.decode().split("\n"):
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
            if event is not None or data:
                yield arrival, event or "message", "\n".join(data)


def open_stream(edge: Nginx, session_id: str) -> tuple[requests.Response,
                                                        Iterator[tuple[float, str, str]]]:
    """A session's SSE stream through nginx, read up to its ``caught-up``."""
    response = api(edge, "GET", f"/api/sessions/{session_id}/stream", stream=True,
                   timeout=(5, 30))
    assert response.status_code == 200
    frames = sse_frames(response)
    for _, event, _ in frames:
        if event == "caught-up":
            return response, frames
    raise AssertionError("the stream ended before caught-up")


def submit(edge: Nginx, session_id: str, text: str) -> None:
    """Start a turn, waiting out the end of the previous one (409 session_busy)."""
    deadline = time.monotonic() + 10
    while True:
        response = api(edge, "POST", f"/api/sessions/{session_id}/prompt", json={"text": text})
        if response.status_code != 409 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert response.status_code == 202, response.text


def new_session(edge: Nginx) -> str:
    response = api(edge, "POST", "/api/sessions", json={"agent": "local"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# ---------------------------------------------------------------- the shipped file


def test_shipped_site_passes_nginx_t(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    """The file as shipped, with only its certificate and log paths pointed at the test's
    (ports 80 and 443, both IPv6 listens, tether.example), is valid nginx."""
    site = tmp_path / "tether.conf"
    site.write_text(with_paths(SITE.read_text(), tmp_path, *certificate))
    config = tmp_path / "nginx.conf"
    config.write_text(main_config(tmp_path, site))
    assert "test is successful" in check_config(config, tmp_path)


def test_rendered_site_passes_nginx_t(edge: Nginx) -> None:
    assert "test is successful" in edge.check_output


def test_body_limits_are_tethers(edge: Nginx) -> None:
    """Each ``client_max_body_size`` is Tether's body limit, in bytes: every route's
    (2 x TETHER_MAX_PROMPT_BYTES + 64 KiB) and the prompt's (with its images: see
    blueprints/api.py prompt_body_limit). A body of exactly the limit reaches Tether (its
    JSON answer), one byte more is refused by nginx (its HTML 413)."""
    app = create_app({"TETHER_TOKEN": TEST_TOKEN})
    limit = app.config["MAX_CONTENT_LENGTH"]
    prompt_limit = prompt_body_limit(app.extensions["tether"].settings)
    app.extensions["tether"].shutdown()
    shipped = [int(k) * 1024 for k in re.findall(r"^\s*client_max_body_size (\d+)k;",
                                                 SITE.read_text(), re.MULTILINE)]
    assert shipped == [limit, prompt_limit] and limit == 576 * 1024
    sid = new_session(edge)
    for path, top in [(f"/api/sessions/{sid}/approvals/none", limit),
                      (f"/api/sessions/{sid}/prompt", prompt_limit)]:
        for size, from_tether in [(top, True), (top + 1, False)]:
            body = b'{"text": "' + b"x" * (size - 12) + b'"}'
            assert len(body) == size
            answer = api(edge, "POST", path, data=body,
                         headers={"Content-Type": "application/json"})
            is_json = answer.headers["Content-Type"].startswith("application/json")
            assert is_json is from_tether, (path, size, answer.headers["Content-Type"])
            # Tether refuses it too (a prompt over TETHER_MAX_PROMPT_BYTES, or no such
            # field), but in words: JSON, never nginx's page.
            assert answer.status_code in ((400, 413) if from_tether else (413,))


# ---------------------------------------------------------------- transports


def test_sse_event_reaches_the_client_within_100_ms_of_its_append(edge: Nginx) -> None:
    """Median over three turns' events of (arrival at the client - the event's ``ts``, the
    moment of its append), in seconds: under 0.1 through nginx."""
    sid = new_session(edge)
    response, frames = open_stream(edge, sid)
    delays: list[float] = []
    try:
        for _ in range(3):
            submit(edge, sid, "hello")
            for arrival, event, data in frames:
                if event != "message":
                    continue
                payload = json.loads(data)
                delays.append(arrival - payload["ts"])
                if payload["kind"] == "turn_end":
                    break
            else:
                raise AssertionError("the stream ended before turn_end")
    finally:
        response.close()
    assert len(delays) >= 9
    assert statistics.median(delays) < 0.1, sorted(delays)


def test_idle_stream_outlives_the_read_timeout_on_keepalives(
        tmp_path: Path, tether: LiveServer, certificate: tuple[Path, Path]) -> None:
    """Behind ``proxy_read_timeout 3s`` with a keepalive every second, an SSE stream and a
    WebSocket idle for 6 s both stay open and still deliver; a 5 s long-poll, silent
    meanwhile, is cut off with nginx's 504 (so the 3 s timeout is in force)."""
    with Nginx(tmp_path, tether.port, *certificate, read_timeout="3s") as short:
        sid = new_session(short)
        cookie_less = {"header": [f"Authorization: {AUTH_HEADERS['Authorization']}"],
                       "sslopt": {"ca_certs": str(short.cert)}}
        with WsClient(short.url.replace("https://", "wss://"), **cookie_less) as ws:
            last = api(short, "GET", f"/api/sessions/{sid}/events").json()["last_event_id"]
            started = time.monotonic()
            cut = api(short, "GET", f"/api/sessions/{sid}/events",
                      params={"after": last, "wait": 5}, timeout=15)
            assert cut.status_code == 504 and 2.5 < time.monotonic() - started < 4.5
            response, frames = open_stream(short, sid)
            try:
                idle_since, pings = time.monotonic(), 0
                for _, event, _ in frames:
                    if event == "ping":
                        pings += 1
                    if time.monotonic() - idle_since >= 6:
                        break
                assert pings >= 4, pings
                submit(short, sid, "hello")
                after_idle = next((json.loads(data) for _, event, data in frames
                                   if event == "message"), None)
                assert after_idle is not None, "the stream ended after the idle period"
            finally:
                response.close()
            assert time.monotonic() - started > 6
            assert "ts" in ws.call("ping")  # the idle WebSocket answers too


def test_long_polls_at_their_maximum_wait_answer_200(edge: Nginx) -> None:
    """A session long-poll and an inbox long-poll, each held the full 50 s (nothing happens
    meanwhile), are answered by Tether with 200, not cut off by nginx."""
    sid = new_session(edge)
    last = api(edge, "GET", f"/api/sessions/{sid}/events").json()["last_event_id"]
    revision = api(edge, "GET", "/api/inbox").json()["revision"]
    results: dict[str, tuple[int, float]] = {}

    def poll(name: str, path: str, params: dict[str, Any]) -> None:
        started = time.monotonic()
        response = api(edge, "GET", path, params={**params, "wait": MAX_WAIT_SECONDS},
                       timeout=MAX_WAIT_SECONDS + 20)
        results[name] = (response.status_code, time.monotonic() - started)

    threads = [threading.Thread(target=poll, args=("events", f"/api/sessions/{sid}/events",
                                                   {"after": last})),
               threading.Thread(target=poll, args=("inbox", "/api/inbox", {"after": revision}))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(MAX_WAIT_SECONDS + 30)
    for name in ("events", "inbox"):
        status, held = results[name]
        assert status == 200, (name, status)
        assert MAX_WAIT_SECONDS - 1 < held < MAX_WAIT_SECONDS + 5, (name, held)


def test_websocket_json_rpc_with_the_login_cookie(edge: Nginx) -> None:
    """The WebSocket upgrade passes nginx with the login cookie and the https:// origin, and
    JSON-RPC runs a turn over it; without the cookie it is 401, from another origin 403."""
    _, login = log_in(edge)
    cookie = f"Cookie: {edge.cookie_name}={login.cookies[edge.cookie_name]}"
    url = edge.url.replace("https://", "wss://")
    tls = {"ca_certs": str(edge.cert)}
    # websocket-client sends its own Origin (http://…) unless given one.
    with WsClient(url, header=[cookie], origin=edge.url, sslopt=tls) as ws:
        sid = ws.call("session.create", agent="local")["id"]
        ws.call("session.attach", session_id=sid)
        ws.call("prompt.submit", session_id=sid, text="hello")
        events = ws.events_until(sid, "turn_end")
        assert [e["id"] for e in events] == list(range(events[0]["id"], events[-1]["id"] + 1))
    for header, origin, status in [([], edge.url, 401), ([cookie], "https://evil.example", 403)]:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url + "/api/ws", header=header, origin=origin,
                                        sslopt=tls, timeout=10)
        assert refused.value.status_code == status


# ---------------------------------------------------------------- the browser's guard rails


def test_login_cookie_is_secure_and_named_for_the_tls_port(edge: Nginx) -> None:
    _, login = log_in(edge)
    assert login.headers["Location"] == "/"
    name, _, attributes = login.headers["Set-Cookie"].partition(";")
    assert name.startswith(f"{edge.cookie_name}=")
    flags = {a.strip().split("=")[0].lower() for a in attributes.split(";")}
    assert {"secure", "httponly", "samesite"} <= flags, login.headers["Set-Cookie"]


def test_cookie_post_from_the_https_origin_is_accepted(edge: Nginx) -> None:
    """Tether compares Origin with https://<host>:<port> as the browser sees it (from
    X-Forwarded-Proto, -Host and -Port): that origin may POST, the http:// one and the one
    without the port may not."""
    session, _ = log_in(edge)
    accepted = session.post(f"{edge.url}/api/sessions", json={}, headers={"Origin": edge.url},
                            timeout=10)
    assert accepted.status_code == 201, accepted.text
    for origin in (f"http://{SERVER_NAME}:{edge.https_port}", f"https://{SERVER_NAME}"):
        refused = session.post(f"{edge.url}/api/sessions", json={},
                               headers={"Origin": origin}, timeout=10)
        assert refused.status_code == 403, origin


def test_http_redirects_to_https(edge: Nginx) -> None:
    response = requests.get(f"http://127.0.0.1:{edge.http_port}/some/path?after=3",
                            headers={"Host": SERVER_NAME}, allow_redirects=False, timeout=10)
    assert response.status_code == 301
    assert response.headers["Location"] == f"https://{SERVER_NAME}/some/path?after=3"


def unanswered(sock: socket.socket, host: str) -> bool:
    """True when a GET for ``host`` on ``sock`` is closed without a byte of answer."""
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return sock.recv(4096) == b""


def test_default_server_refuses_unknown_hosts(edge: Nginx) -> None:
    """Another host name, or none, gets no answer: plain HTTP and TLS connections are closed
    without one, and a TLS handshake for another name (or without SNI) is refused."""
    with socket.create_connection(("127.0.0.1", edge.http_port), timeout=10) as sock:
        assert unanswered(sock, "evil.example")
    trusted = ssl.create_default_context(cafile=str(edge.cert))
    with socket.create_connection(("127.0.0.1", edge.https_port), timeout=10) as raw:
        with trusted.wrap_socket(raw, server_hostname=SERVER_NAME) as sock:
            assert unanswered(sock, "evil.example")
    anyone = ssl.create_default_context()
    anyone.check_hostname, anyone.verify_mode = False, ssl.CERT_NONE
    for sni in ("evil.example", None):
        with socket.create_connection(("127.0.0.1", edge.https_port), timeout=10) as raw:
            with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME|HANDSHAKE_FAILURE"):
                anyone.wrap_socket(raw, server_hostname=sni)


def test_access_logs_hold_no_token(edge: Nginx, tether: LiveServer) -> None:
    """After a login by ``/?token=``, neither nginx's logs nor gunicorn's hold the token; both
    logged the request, without its query string."""
    session, _ = log_in(edge)
    assert session.get(edge.url + "/", timeout=10).status_code == 200
    time.sleep(0.2)  # nginx writes its line when the request ends
    nginx_log = edge.access_log.read_text()
    assert '"GET / HTTP/1.1" 303 ' in nginx_log
    assert '"GET / HTTP/1.1" 303 ' in tether.log_path.read_text()
    for log in [edge.access_log, edge.error_log, edge.directory / "http-access.log"]:
        if log.exists():
            assert TEST_TOKEN not in log.read_text(), log
    # Tether's own log holds the token once: the login URL it printed at start.
    lines = [line for line in tether.log_path.read_text().splitlines() if TEST_TOKEN in line]
    assert len(lines) == 1 and "/#token=" in lines[0], lines


# ---------------------------------------------------------------- the UI


@pytest.mark.browser
@pytest.mark.parametrize("transport, query, shown", [("sse", "", "SSE"),
                                                     ("ws", "?transport=ws", "WebSocket"),
                                                     ("poll", "?transport=poll", "long-poll")])
def test_ui_creates_a_session_and_answers_an_approval(browser: Any, edge: Nginx,
                                                      transport: str, query: str,
                                                      shown: str) -> None:
    """Chromium logs in through nginx with the printed login URL (``/#token=``), starts a
    local session, runs ``$ uname -a`` after Allow, and sees its output, on the transport
    asked for (a WebSocket refused by the proxy would fall back to SSE silently)."""
    page = new_page(browser, ignore_https_errors=True)
    try:
        log_in_page(page, SimpleNamespace(url=edge.url,
                                          login_url=f"{edge.url}/#token={TEST_TOKEN}"))
        cookie = {c["name"]: c for c in page.context.cookies()}[edge.cookie_name]
        assert cookie["secure"] and cookie["httpOnly"]
        start_session(page, SimpleNamespace(url=edge.url), query)
        expect(page.locator("#conn")).to_have_text(f"Connected · {shown}")
        send(page, "$ uname -a")
        card = pending_card(page)
        expect(card).to_contain_text("Allow Bash?")
        card.get_by_role("button", name="Allow", exact=True).click()
        expect(page.locator(".tool-output").filter(has_text="Linux")).to_have_count(1)
        expect(card).to_have_attribute("data-state", "allowed")
        wait_turn_finished(page)
        expect(page.locator("#conn")).to_have_text(f"Connected · {shown}")
        screenshot(page, f"nginx-{transport}")
        assert not page.js_errors
    finally:
        page.context.close()


# ---------------------------------------------------------------- a proxy that buffers streams

#: Records, from before any page script runs, every state the connection pill and the offline
#: banner are in: ``window.__seen`` is a list of ``[pill text, banner shown]``, one per change.
WATCH_CONNECTION = """
window.__seen = [];
new MutationObserver(() => {
  const pill = document.getElementById("conn-text");
  const banner = document.getElementById("away-banner");
  if (!pill) return;
  const now = [pill.textContent, Boolean(banner && !banner.hidden)];
  const last = window.__seen[window.__seen.length - 1];
  if (!last || last[0] !== now[0] || last[1] !== now[1]) window.__seen.push(now);
}).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
"""


@pytest.fixture(scope="module")
def buffering_edge(tmp_path_factory: pytest.TempPathFactory, tether: LiveServer,
                   certificate: tuple[Path, Path]) -> Iterator[Nginx]:
    with Nginx(tmp_path_factory.mktemp("buffering-nginx"), tether.port, *certificate,
               buffering=True) as nginx:
        yield nginx


def test_a_buffering_proxy_holds_the_stream_silent(buffering_edge: Nginx) -> None:
    """The setup the next test relies on: through this nginx an SSE stream says nothing, not
    even its status line (nginx holds the whole response), and no error either, while a
    long-poll answers at once."""
    session_id = new_session(buffering_edge)
    with pytest.raises(requests.exceptions.ReadTimeout):
        response = api(buffering_edge, "GET", f"/api/sessions/{session_id}/stream",
                       stream=True, timeout=(5, 3))
        next(response.iter_content(chunk_size=None))
    page = api(buffering_edge, "GET", f"/api/sessions/{session_id}/events", params={"after": 0})
    assert page.status_code == 200 and "events" in page.json()


@pytest.mark.browser
def test_behind_a_buffering_proxy_the_page_moves_to_long_poll_and_never_says_offline(
        browser: Any, buffering_edge: Nginx) -> None:
    """Issue 20, item 4: the page does not wait for a stream that never delivers. Its SSE
    stream has not caught up 5 s after opening, so it moves to long-poll (said in the pill
    within 10 s), a turn's output shows within 5 s of Allow, the offline banner never shows,
    and a reload starts on long-poll, never trying SSE again that day."""
    page = new_page(browser, ignore_https_errors=True)
    page.context.add_init_script(WATCH_CONNECTION)
    try:
        log_in_page(page, SimpleNamespace(url=buffering_edge.url,
                                          login_url=f"{buffering_edge.url}/#token={TEST_TOKEN}"))
        opened = time.monotonic()
        start_session(page, SimpleNamespace(url=buffering_edge.url))
        expect(page.locator("#conn-text")).to_have_text("Connected · long-poll")
        assert time.monotonic() - opened < 10, "long-poll came later than 10 s"
        send(page, "$ echo hi")
        card = pending_card(page)
        expect(card).to_contain_text("Allow Bash?")
        card.get_by_role("button", name="Allow", exact=True).click()
        allowed = time.monotonic()
        expect(page.locator(".tool-output").filter(has_text="hi")).to_have_count(1)
        assert time.monotonic() - allowed < 5, "the output came later than 5 s after Allow"
        wait_turn_finished(page)
        seen = page.evaluate("window.__seen")
        assert not [state for state in seen if state[1]], f"the offline banner showed: {seen}"
        kept = page.evaluate("JSON.parse(localStorage.getItem('tether-transport-fallback'))")
        assert kept["sse"]["to"] == "poll"
        assert 23 * 3600_000 < kept["sse"]["until"] - page.evaluate("Date.now()") <= 24 * 3600_000
        screenshot(page, "nginx-buffering")

        page.reload()
        expect(page.locator("#conn-text")).to_have_text("Connected · long-poll")
        seen = page.evaluate("window.__seen")
        assert all("SSE" not in state[0] for state in seen), f"SSE was tried again: {seen}"
        assert not [state for state in seen if state[1]], f"the offline banner showed: {seen}"
        wait_turn_finished(page)  # the reload replayed the turn, once
        expect(page.locator(".tool-output").filter(has_text="hi")).to_have_count(1)
        assert not page.js_errors
    finally:
        page.context.close()


@pytest.mark.browser
def test_a_remembered_fallback_is_probed_and_left_when_the_stream_delivers(
        browser: Any, edge: Nginx) -> None:
    """A page that fell back to long-poll yesterday behind a buffering proxy, now behind one
    that streams: it starts on long-poll, its quiet background probe finds SSE delivering,
    and it moves back to SSE and forgets the fallback."""
    page = new_page(browser, ignore_https_errors=True)
    page.context.add_init_script(
        "localStorage.setItem('tether-transport-fallback', JSON.stringify("
        "{sse: {to: 'poll', until: Date.now() + 3600000}}))")
    try:
        log_in_page(page, SimpleNamespace(url=edge.url,
                                          login_url=f"{edge.url}/#token={TEST_TOKEN}"))
        expect(page.locator("#conn-text")).to_have_text("Connected · long-poll")
        page.evaluate("""() => {  // probe now, not in Conn.PROBE_MS
            const conn = Link.conn;
            clearTimeout(conn.probeTimer);
            conn.probeTimer = null;
            conn.probe();
        }""")
        expect(page.locator("#conn-text")).to_have_text("Connected · SSE")
        assert page.evaluate("localStorage.getItem('tether-transport-fallback')") is None
        assert not page.js_errors
    finally:
        page.context.close()
