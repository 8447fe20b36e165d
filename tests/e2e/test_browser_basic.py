"""The basic client (README, Browsers; issue 20 item 1) in Chromium with what it must do
without deleted before any page script runs: the core loop over XMLHttpRequest long-poll, on
a phone and on a desktop. Also the modern page's hand-over and its ``<noscript>``."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import new_page, screenshot
from tests.e2e.live import LiveServer
from tests.e2e.test_browser import (
    assert_phone_friendly,
    assert_rendered_once,
    serve_with_strict_csp,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

#: What a legacy browser lacks, gone before the page's first script (Playwright's init script).
STRIP = """
for (const name of ["EventSource", "WebSocket", "fetch", "Promise", "BroadcastChannel",
                    "Notification"]) delete window[name];
delete Navigator.prototype.locks;
delete Navigator.prototype.serviceWorker;
"""
DESKTOP = {"width": 1280, "height": 900}


def open_basic(browser: Any, server: LiveServer, viewport: dict[str, int]) -> Any:
    page = new_page(browser, server, viewport=viewport)  # logged in on the modern page first
    page.context.add_init_script(STRIP)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.requests = requests
    page.goto(server.url + "/?client=basic")
    gone = page.evaluate("""[typeof EventSource, typeof WebSocket, typeof fetch, typeof Promise,
        typeof BroadcastChannel, typeof Notification, typeof navigator.locks,
        typeof navigator.serviceWorker]""")
    assert gone == ["undefined"] * 8
    return page


def send(page: Any, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    page.get_by_role("button", name="Send").click()
    expect(box).to_have_value("")


def pending_card(page: Any) -> Any:
    pending = page.locator('.card[data-state="pending"]')
    expect(pending).to_have_count(1)
    return page.locator(f'.card[data-request-id="{pending.get_attribute("data-request-id")}"]')


def turns_ended(page: Any, n: int) -> None:
    expect(page.locator('[data-kind="turn_end"]')).to_have_count(n)
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()


@pytest.mark.parametrize("viewport", [None, DESKTOP], ids=["phone", "desktop"])
def test_basic_client_core_loop(browser: Any, server: LiveServer,
                                viewport: dict[str, int] | None) -> None:
    name = "phone" if viewport is None else "desktop"
    page = open_basic(browser, server, viewport or {"width": 390, "height": 844})
    try:
        page.locator("#agent").select_option("local")
        page.get_by_role("button", name="New session").click()
        expect(page).to_have_url(re.compile(r"\?client=basic#s=[0-9a-f]+$"))
        session_id = page.url.rsplit("#s=", 1)[1]
        expect(page.locator("#conn")).to_have_text("Connected (long-poll)")

        # A shell command, approved.
        send(page, "$ echo hi")
        card = pending_card(page)
        expect(card).to_contain_text("Allow Bash?")
        expect(page.locator('[data-kind="tool_use"] .tool-input')).to_have_text("$ echo hi")
        expect(page.locator("#inbox-btn")).to_have_text("Inbox: 1")
        if viewport is None:
            assert_phone_friendly(page)
        screenshot(page, f"basic-{name}-approval")
        card.get_by_role("button", name="Allow").click()
        expect(card).to_have_attribute("data-state", "allowed")
        expect(card.locator(".outcome")).to_have_text("Allowed by you")
        expect(page.locator(".tool-output")).to_have_text("hi [exit code 0]")
        turns_ended(page, 1)
        expect(page.locator("#inbox-btn")).to_have_text("Inbox: 0")
        expect(page.locator('[data-kind="text"]')).to_have_text(
            "Agent: `echo hi` finished with exit code 0.")

        # triage: three allowed, one denied with a message.
        send(page, "triage")
        for n in range(4):
            card = pending_card(page)
            if n < 3:
                card.get_by_role("button", name="Allow").click()
                expect(card).to_have_attribute("data-state", "allowed")
            else:
                card.get_by_label(re.compile("Message with your answer")).fill("not this one")
                card.get_by_role("button", name="Deny").click()
                expect(card).to_have_attribute("data-state", "denied")
                expect(card.locator(".outcome")).to_have_text("Denied by you: not this one")
        turns_ended(page, 2)
        expect(page.locator('[data-kind="text"]').last).to_contain_text(
            "Triage: ran 3 of 4 commands.")

        # Questions: an option, then an answer of one's own.
        send(page, "ask Which db? pg | sqlite")
        card = pending_card(page)
        expect(page.locator("#inbox-btn")).to_have_text("Inbox: 1")
        card.get_by_label("sqlite").check()
        screenshot(page, f"basic-{name}-clarify")
        card.get_by_role("button", name="Answer").click()
        expect(card).to_have_attribute("data-state", "answered")
        expect(card.locator(".outcome")).to_have_text("Answered by you: Which db? → sqlite")
        turns_ended(page, 3)
        send(page, "ask Which cache? redis | memcached")
        card = pending_card(page)
        card.get_by_label(re.compile("Your own answer")).fill("none at all")
        card.get_by_role("button", name="Answer").click()
        expect(card.locator(".outcome")).to_have_text("Answered by you: Which cache? → none at all")
        turns_ended(page, 4)

        # Stop a running command.
        send(page, "$ sleep 30")
        pending_card(page).get_by_role("button", name="Allow").click()
        stop = page.get_by_role("button", name="Stop")
        expect(stop).to_be_enabled()
        expect(page.locator("#state")).to_have_text("Working… ·")
        stop.click()
        expect(page.locator('[data-kind="turn_end"]').last).to_have_text("Stopped by you")
        turns_ended(page, 5)
        screenshot(page, f"basic-{name}-stopped")

        # A reload replays the log: the same events, each shown once.
        before = assert_rendered_once(page)
        page.reload()
        expect(page.locator("#conn")).to_have_text("Connected (long-poll)")
        turns_ended(page, 5)
        after = assert_rendered_once(page)
        assert after == before
        assert max(after) == server.events(session_id)["last_event_id"]
        expect(page.locator(".card")).to_have_count(8)
        expect(page.locator(".tool-output").first).to_have_text("hi [exit code 0]")
        expect(page.locator(".tool-output")).to_have_count(8)
        expect(page.locator("#session-list a")).to_have_text(["$ echo hi"])  # folded away
        page.get_by_text("Sessions", exact=True).click()
        expect(page.get_by_role("link", name="$ echo hi")).to_be_visible()
        screenshot(page, f"basic-{name}-reloaded")

        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page scrolls sideways by {overflow} px"
        # Long-poll only: never a stream or a socket, and nothing from the modern client.
        assert not [u for u in page.requests if "/stream" in u or "/api/ws" in u or "/js/" in u]
        assert not page.js_errors
    finally:
        page.context.close()


def test_modern_page_hands_over_without_fetch(browser: Any, server: LiveServer) -> None:
    page = new_page(browser, server)
    try:
        serve_with_strict_csp(page, server)
        page.context.add_init_script("delete window.fetch")
        page.goto(server.url + "/")
        expect(page).to_have_url(server.url + "/?client=basic&why=fetch")
        expect(page.locator("#why")).to_contain_text("lacks what the full client needs (fetch)")
        expect(page.locator("#conn")).to_have_text("Connected (long-poll)")
        expect(page.get_by_role("button", name="New session")).to_be_enabled()
        assert page.evaluate("window.cspViolations") == []
        assert not page.js_errors
    finally:
        page.context.close()


def test_modern_page_hands_over_when_a_script_is_too_new(browser: Any,
                                                         server: LiveServer) -> None:
    """A browser with modules and everything boot.js checks can still meet syntax it cannot
    parse: the SyntaxError hands over too, not a dead page."""
    # Without the service worker: once the login's page has installed it, it fetches the
    # page's scripts itself, past Playwright's routes (failed once in CI: the real app.js).
    page = new_page(browser, server, service_workers="block")
    try:
        page.route("**/static/js/app.js", lambda route: route.fulfill(
            body="class { newer syntax than this browser parses", content_type="text/javascript"))
        page.goto(server.url + "/")
        expect(page).to_have_url(server.url + "/?client=basic&why=syntax")
        expect(page.locator("#conn")).to_have_text("Connected (long-poll)")
    finally:
        page.context.close()


def test_modern_page_still_loads_the_modern_client(page: Any, server: LiveServer) -> None:
    page.goto(server.url + "/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    assert page.url == server.url + "/"
    assert page.evaluate("typeof Link.init") == "function"


def test_noscript_says_what_the_page_needs(server: LiveServer) -> None:
    # Read from the HTML: Chromium with scripts turned off by Playwright (an emulation) still
    # parses <noscript> as if they were on, so a browser cannot show it here.
    for path in ("/", "/?client=basic"):
        html = server.api("GET", path).text
        needs = r"<noscript>\s*<p class=\"(noscript|note)\">Tether needs JavaScript"
        assert re.search(needs, html), path
    # The modern page's inert shell is hidden then, by a style sheet only <noscript> loads.
    html = server.api("GET", "/").text
    sheet = re.search(r'<noscript><link rel="stylesheet" href="([^"]+)"></noscript>', html)
    assert sheet and "noscript.css" in sheet[1]
    css = server.api("GET", sheet[1]).text
    assert re.search(r"\.app\b[^{]*\{\s*display:\s*none", css)


def test_basic_client_replays_on_reset_and_new_epoch(browser: Any, server: LiveServer) -> None:
    """docs/protocol.md: a `reset` answer replays the log from the start; a new epoch means the
    ids restarted, so the client drops what it shows and reads the log again. Either way each
    event is shown once. The server's answers are rewritten in flight to say so."""
    page = open_basic(browser, server, DESKTOP)
    try:
        session_id = server.create_session(agent="local")["id"]
        server.api("POST", f"/api/sessions/{session_id}/prompt", json={"text": "help"})
        server.wait_for_event(session_id, "turn_end")
        page.goto(f"{server.url}/?client=basic#s={session_id}")
        turns_ended(page, 1)
        before = assert_rendered_once(page)
        log = server.events(session_id)

        def answer_once(body: dict[str, Any]) -> int:
            """Answer the next long-poll with ``body``; returns the cursor of the one after."""
            page.route("**/events?*", lambda route: route.fulfill(json=body), times=1)
            seen = len(page.requests)
            # A rename changes the inbox, which ends the long-poll in flight.
            server.api("PATCH", f"/api/sessions/{session_id}", json={"title": "poke"})
            for _ in range(150):
                polls = [u for u in page.requests[seen:] if "/events?" in u]
                if len(polls) >= 2:
                    return int(re.search(r"after=(\d+)", polls[1]).group(1))
                page.wait_for_timeout(100)
            raise AssertionError(f"no long-poll after the rewritten answer: {polls}")

        # A reset: the log from the start (here its first two events): what was shown goes,
        # and the next long-poll asks for what follows them.
        assert answer_once({**log, "events": log["events"][:2], "last_event_id": 2,
                            "reset": True}) == 2
        expect(page.locator("[data-event-id]")).to_have_count(len(before))
        assert assert_rendered_once(page) == before
        # A new epoch: the ids restarted, so the next long-poll reads from the start.
        assert answer_once({**log, "events": [], "epoch": "another"}) == 0
        expect(page.locator("#conn")).to_have_text("Connected (long-poll)")
        server.api("POST", f"/api/sessions/{session_id}/prompt", json={"text": "help"})
        turns_ended(page, 2)
        after = assert_rendered_once(page)
        assert after[:len(before)] == before
        assert max(after) == server.events(session_id)["last_event_id"]
        assert not page.js_errors
    finally:
        page.context.close()
