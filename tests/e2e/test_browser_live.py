"""The browser's live connection, end to end (issue 3): real gunicorn, Debian's Chromium.

- the whole flow on each transport: SSE (default), ``?transport=ws``, and long-poll when
  EventSource is missing; the indicator names the transport;
- a network drop mid-turn (``context.set_offline``) on each transport: the page says the agent
  keeps working, and comes back with no duplicate and no gap (rendered ids against the log);
- the inbox: a request in another session shows as a badge, the list jumps to it, it is
  answered there; a hidden tab raises a notification;
- ten tabs on one Tether: one leader tab holds the only long-lived connection, every tab sees
  an answer given in one of them, the answer's POST completes at once, and another tab takes
  over when the leader closes.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import PHONE, WAIT_MS, log_in, new_page, screenshot
from tests.e2e.live import LiveServer
from tests.e2e.test_browser import (
    assert_rendered_once,
    echo_hello_flow,
    pending_card,
    send,
    start_session,
    wait_for_event,
    wait_turn_finished,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

TRANSPORTS = {
    # name: (query string, EventSource removed, indicator name)
    "sse": ("", False, "SSE"),
    "ws": ("?transport=ws", False, "WebSocket"),
    "poll": ("", True, "long-poll"),
}

# Event kinds that the transcript renders as a node of their own (with data-event-id).
RENDERED = {"user", "text", "thinking", "tool_use", "tool_result", "approval_request",
            "clarify_request", "result", "error", "turn_end"}


def assert_matches_log(page: Any, server: LiveServer, session_id: str) -> None:
    """The page has every event of the log up to its end, each rendered once, none extra."""
    log = server.events(session_id)
    expect(page.locator("#transcript")).to_have_attribute(
        "data-last-event-id", str(log["last_event_id"]))
    rendered = assert_rendered_once(page)
    expected = [e["id"] for e in log["events"] if e["kind"] in RENDERED]
    assert sorted(rendered) == expected, f"rendered {sorted(rendered)}, log {expected}"


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_whole_flow_on_each_transport(browser: Any, server: LiveServer, transport: str) -> None:
    query, no_es, name = TRANSPORTS[transport]
    page = new_page(browser, server, no_event_source=no_es)
    try:
        session_id = echo_hello_flow(page, server, query)
        expect(page.locator("#conn")).to_have_text(f"Connected · {name}")
        expect(page.locator("#conn")).to_have_attribute("data-transport", transport)
        expect(page.locator('[data-kind="result"]')).to_contain_text(re.compile(r"Done · [\d.]+ s"))
        expect(page.locator('[data-kind="result"]')).to_contain_text("tokens")
        expect(page.locator("#state-pill")).to_have_text("idle")
        assert_matches_log(page, server, session_id)
        screenshot(page, f"flow-{transport}")
        assert not page.js_errors
    finally:
        page.context.close()


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_network_drop_mid_turn(browser: Any, server: LiveServer, transport: str) -> None:
    query, no_es, name = TRANSPORTS[transport]
    page = new_page(browser, server, no_event_source=no_es)
    try:
        session_id = start_session(page, server, query)
        send(page, "$ sleep 6; echo slept")
        pending_card(page).get_by_role("button", name="Allow", exact=True).click()
        expect(page.locator("#state-pill")).to_have_text("running")
        seen = int(page.locator("#transcript").get_attribute("data-last-event-id"))
        page.context.set_offline(True)
        # Not a blip: after 3 s the page says so, and that the agent goes on without it.
        expect(page.locator("#conn")).to_have_text(f"Offline · {name}")
        expect(page.locator("#away-banner")).to_contain_text("the agent keeps working")
        screenshot(page, f"offline-{transport}")
        end = wait_for_event(server, session_id, "turn_end", after=seen, timeout=20)
        expect(page.locator('[data-kind="turn_end"]')).to_have_count(0)
        assert int(page.locator("#transcript").get_attribute("data-last-event-id")) < end["id"]
        page.context.set_offline(False)
        expect(page.locator("#conn")).to_have_text(f"Connected · {name}")
        expect(page.locator("#away-banner")).to_be_hidden()
        wait_turn_finished(page)
        expect(page.locator(".tool-output").filter(has_text="slept")).to_have_count(1)
        assert_matches_log(page, server, session_id)
        screenshot(page, f"network-drop-{transport}")
        assert not page.js_errors
    finally:
        page.context.close()


NOTIFICATION_STUB = """
window.__notes = [];
window.__asked = 0;
window.__hidden = false;
Object.defineProperty(document, 'hidden', {get: () => window.__hidden});
Object.defineProperty(document, 'visibilityState',
    {get: () => window.__hidden ? 'hidden' : 'visible'});
window.Notification = class {
  constructor(title, options) { window.__notes.push({title, body: options.body}); }
  static get permission() { return window.__permission || 'default'; }
  static requestPermission() { window.__asked += 1; window.__permission = 'granted';
                               return Promise.resolve('granted'); }
};
"""


def test_inbox_badge_jump_and_notification(browser: Any, server: LiveServer) -> None:
    page = new_page(browser, server)
    page.context.add_init_script(NOTIFICATION_STUB)
    try:
        start_session(page, server)
        expect(page.locator("#inbox-count")).to_be_hidden()
        other = server.create_session(agent="local", title="Build box")
        server.api("POST", f"/api/sessions/{other['id']}/prompt", json={"text": "$ echo from-b"})
        badge = page.locator("#inbox-count")
        expect(badge).to_have_text("1")
        inbox = page.get_by_role("button", name="Inbox: 1 waiting for you")
        expect(inbox).to_be_visible()
        expect(page.locator(".session-item", has_text="Build box")).to_contain_text("1 waiting")
        assert page.evaluate("window.__asked") == 0, "asked for notifications without a click"
        inbox.click()
        panel = page.get_by_role("region", name="Waiting for you")
        expect(panel).to_be_visible()
        item = panel.locator(".inbox-item")
        expect(item).to_have_count(1)
        expect(item).to_contain_text("echo from-b")
        expect(item).to_contain_text("Build box")
        screenshot(page, "inbox-panel")
        # Asked politely, from a click.
        panel.get_by_role("button", name="Notify me").click()
        assert page.evaluate("window.__asked") == 1
        expect(panel.get_by_role("button", name="Notify me")).to_be_hidden()
        item.click()
        expect(page).to_have_url(re.compile(f"#s={other['id']}$"))
        expect(panel).to_be_hidden()
        card = pending_card(page)
        allow = card.get_by_role("button", name="Allow", exact=True)
        expect(allow).to_be_focused()
        allow.click()
        expect(card).to_have_attribute("data-state", "allowed")
        expect(badge).to_be_hidden()
        wait_turn_finished(page)

        # A request that arrives while the tab is hidden raises a notification.
        page.evaluate("window.__hidden = true")
        server.api("POST", f"/api/sessions/{other['id']}/prompt", json={"text": "$ echo hidden"})
        expect(badge).to_have_text("1")
        page.wait_for_function("window.__notes.length === 1", timeout=WAIT_MS)
        note = page.evaluate("window.__notes[0]")
        assert note["title"] == "Approval needed"
        assert "echo hidden" in note["body"] and "Build box" in note["body"]
        page.evaluate("window.__hidden = false")
        pending_card(page).get_by_role("button", name="Deny").click()
        expect(badge).to_be_hidden()
        assert page.evaluate("window.__notes.length") == 1
        assert not page.js_errors
    finally:
        page.context.close()


def long_lived(url: str) -> bool:
    """A request that stays open: an event stream or a long-poll (wait > 0)."""
    if url.endswith("/stream") or "/stream?" in url:
        return True
    match = re.search(r"[?&]wait=([\d.]+)", url)
    return bool(match) and float(match.group(1)) > 0


class ConnectionCounter:
    """Long-lived connections open in a browser context, from Playwright's network events."""

    def __init__(self, context: Any) -> None:
        self.open: dict[int, str] = {}
        self.sockets: dict[int, str] = {}
        self.peak = 0
        context.on("request", self.started)
        context.on("requestfinished", self.ended)
        context.on("requestfailed", self.ended)

    def watch(self, page: Any) -> None:
        page.on("websocket", self.socket)

    def started(self, request: Any) -> None:
        if long_lived(request.url):
            self.open[id(request)] = request.url
            self.peak = max(self.peak, self.count)

    def ended(self, request: Any) -> None:
        self.open.pop(id(request), None)

    def socket(self, ws: Any) -> None:
        self.sockets[id(ws)] = ws.url
        self.peak = max(self.peak, self.count)
        ws.on("close", lambda _ws: self.sockets.pop(id(ws), None))

    @property
    def count(self) -> int:
        return len(self.open) + len(self.sockets)


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_ten_tabs_share_one_connection(browser: Any, server: LiveServer, transport: str) -> None:
    query, _, name = TRANSPORTS[transport]
    context = browser.new_context(viewport=PHONE)
    context.set_default_timeout(WAIT_MS)
    login = context.new_page()  # before the counter: its own page load is not a tab's
    log_in(login, server)
    login.close()
    counter = ConnectionCounter(context)
    session = server.create_session(agent="local", title="Ten tabs")
    try:
        pages = []
        for _ in range(10):
            tab = context.new_page()
            counter.watch(tab)
            tab.goto(f"{server.url}/{query}#s={session['id']}")
            pages.append(tab)
        for tab in pages:
            expect(tab.locator("#conn")).to_have_text(f"Connected · {name}")
        roles = [tab.evaluate("Link.role") for tab in pages]
        assert roles.count("leader") == 1, roles
        server.api("POST", f"/api/sessions/{session['id']}/prompt", json={"text": "$ echo ten"})
        for tab in pages:
            expect(tab.locator('.card[data-state="pending"]')).to_have_count(1)
        assert counter.count <= 2, f"long-lived connections: {counter.open} {counter.sockets}"
        assert counter.count >= 1
        # Answer from a follower: the POST goes out at once, and every tab shows the answer.
        clicker = pages[roles.index("follower")]
        started = time.monotonic()
        with clicker.expect_response("**/approvals/**") as response:
            pending_card(clicker).get_by_role("button", name="Allow", exact=True).click()
        assert response.value.status == 200
        assert time.monotonic() - started < 2.0, "the answer's POST was held up"
        for tab in pages:
            by_other_tab = re.compile(r"Allowed by Chrome · tab \w{4}$")
            expect(tab.locator(".card-outcome")).to_have_text(
                "Allowed by you" if tab is clicker else by_other_tab)
            wait_turn_finished(tab)
        assert counter.peak <= 2, f"peak of long-lived connections: {counter.peak}"
        ids = assert_rendered_once(pages[0])
        for tab in pages[1:]:
            assert assert_rendered_once(tab) == ids

        # The leader closes: another tab takes over from its cursor, and the rest follow.
        leader = pages.pop(roles.index("leader"))
        leader.close()
        server.api("POST", f"/api/sessions/{session['id']}/prompt", json={"text": "$ echo again"})
        for tab in pages:
            expect(tab.locator('.card[data-state="pending"]')).to_have_count(1)
        new_roles = [tab.evaluate("Link.role") for tab in pages]
        assert new_roles.count("leader") == 1, new_roles
        pending_card(pages[0]).get_by_role("button", name="Allow", exact=True).click()
        for tab in pages:
            wait_turn_finished(tab, turns=2)
        assert counter.count <= 2
        ids = assert_rendered_once(pages[0])
        for tab in pages[1:]:
            assert assert_rendered_once(tab) == ids
        screenshot(pages[0], f"ten-tabs-{transport}")
    finally:
        context.close()


def test_tabs_without_web_locks_connect_on_their_own(browser: Any, server: LiveServer) -> None:
    """No Web Locks (or no BroadcastChannel): every tab holds its own connection, and works."""
    page = new_page(browser, server)
    page.context.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'locks', {get: () => undefined})")
    try:
        session_id = echo_hello_flow(page, server)
        other = page.context.new_page()
        other.goto(page.url)
        expect(other.locator("#conn")).to_have_text("Connected · SSE")
        assert [page.evaluate("Link.role"), other.evaluate("Link.role")] == ["solo", "solo"]
        send(other, "$ echo second")
        pending_card(page).get_by_role("button", name="Allow", exact=True).click()
        for tab in (page, other):
            wait_turn_finished(tab, turns=2)
            assert_matches_log(tab, server, session_id)
        assert not page.js_errors
    finally:
        page.context.close()


def test_a_websocket_that_never_delivers_moves_the_page_to_sse(browser: Any,
                                                                server: LiveServer) -> None:
    """A proxy that accepts the WebSocket and then passes nothing (the socket opens, no
    gateway.ready ever comes): within Conn.TRUST_MS (5 s) the page moves to SSE, never says
    offline, remembers the fallback for the origin, and the next visit starts on SSE."""
    page = new_page(browser, server)
    page.route_web_socket(re.compile(r"/api/ws$"), lambda ws: None)  # opens, never answers
    try:
        page.evaluate("localStorage.setItem('tether-transport', 'ws')")
        started = time.monotonic()
        echo_hello_flow(page, server)
        assert time.monotonic() - started < 20
        expect(page.locator("#conn-text")).to_have_text("Connected · SSE")
        expect(page.locator("#away-banner")).to_be_hidden()
        kept = page.evaluate("JSON.parse(localStorage.getItem('tether-transport-fallback'))")
        assert kept["ws"]["to"] == "sse", kept
        page.reload()
        expect(page.locator("#conn-text")).to_have_text("Connected · SSE")
        assert_rendered_once(page)
        assert not page.js_errors
    finally:
        page.context.close()
