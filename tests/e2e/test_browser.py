"""The browser UI, end to end: real gunicorn server, real headless Chromium (Playwright).

Chromium is Debian's (/usr/bin/chromium), never a downloaded one. Each test saves a screenshot
of its final state into test-artifacts/. ``UPDATE_DOCS_SCREENSHOT=1`` also refreshes
docs/screenshot-desktop.png and docs/screenshot-phone.png (the README pictures) from
``test_docs_screenshot``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import new_page, screenshot
from tests.e2e.live import ROOT, LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.browser]



def wait_for_event(server: LiveServer, session_id: str, kind: str, after: int = 0,
                   timeout: float = 15) -> dict[str, Any]:
    """Long-poll the API (whole-second waits) until an event of ``kind`` after ``after``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = server.events(session_id, after, wait=2)
        for event in page["events"]:
            if event["kind"] == kind:
                return event
        after = page["last_event_id"]
    raise AssertionError(f"no {kind} event within {timeout} s")


# ---------------------------------------------------------------- UI steps


def start_session(page: Any, server: LiveServer, query: str = "") -> str:
    """Open the UI (``query``: e.g. ``?transport=ws``) and start a `local` session through the
    drawer; returns its id."""
    page.goto(server.url + "/" + query)
    menu = page.get_by_role("button", name="Open the session list")
    narrow = menu.is_visible()
    if narrow:
        menu.click()
    page.locator("#agent-select").select_option("local")
    page.locator("#new-session-btn").click()
    expect(page).to_have_url(re.compile(r"#s=[0-9a-f]+$"))
    if narrow:
        expect(page.locator("#drawer")).to_be_hidden()
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    return page.url.rsplit("#s=", 1)[1]


def send(page: Any, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")


def pending_card(page: Any) -> Any:
    """The one card awaiting an answer, located by its request id (it stays put when answered)."""
    pending = page.locator('.card[data-state="pending"]')
    expect(pending).to_have_count(1)
    return page.locator(f'.card[data-request-id="{pending.get_attribute("data-request-id")}"]')


def wait_turn_finished(page: Any, turns: int = 1) -> None:
    expect(page.locator('[data-kind="turn_end"]')).to_have_count(turns)
    expect(page.locator("#turn-status")).to_be_hidden()
    expect(page.get_by_role("button", name="Stop the running turn")).to_be_hidden()


def event_ids(page: Any) -> list[int]:
    return [int(i) for i in page.eval_on_selector_all(
        "[data-event-id]", "nodes => nodes.map(n => n.dataset.eventId)")]


def assert_rendered_once(page: Any) -> list[int]:
    ids = event_ids(page)
    assert ids, "nothing rendered"
    assert len(ids) == len(set(ids)), f"an event was rendered twice: {sorted(ids)}"
    return ids


def assert_phone_friendly(page: Any) -> None:
    """Tap targets of 44 px, a 16 px composer, no sideways scrolling at 390 px. A radio button's
    target is its whole label."""
    small = page.evaluate("""() => [...document.querySelectorAll(
        'button, .session-item, select, textarea, input, a[href]')]
      .filter(n => n.offsetParent !== null && !n.classList.contains('skip-link'))
      .map(n => [n.id || n.className || n.tagName,
                 (n.matches('input[type=radio], input[type=checkbox]') && n.closest('label')
                  || n).getBoundingClientRect()])
      .filter(([, r]) => r.width > 0 && (r.height < 44 || r.width < 44))
      .map(([name, r]) => `${name} ${Math.round(r.width)}x${Math.round(r.height)}`)""")
    assert not small, f"tap targets under 44 px: {small}"
    size = page.eval_on_selector("#prompt", "n => getComputedStyle(n).fontSize")
    assert size == "16px"
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px"


def echo_hello_flow(page: Any, server: LiveServer, query: str = "") -> str:
    session_id = start_session(page, server, query)
    send(page, "$ echo hello")
    card = pending_card(page)
    expect(card).to_contain_text("Allow Bash?")
    expect(page.locator('[data-kind="tool_use"] .tool-input')).to_have_text("$ echo hello")
    expect(page.locator("#turn-status")).to_contain_text("Waiting for your answer")
    assert_phone_friendly(page)
    card.get_by_role("button", name="Allow", exact=True).click()
    expect(page.locator(".tool-output").filter(has_text="hello")).to_have_count(1)
    expect(card).to_have_attribute("data-state", "allowed")
    expect(card.locator(".card-outcome")).to_contain_text("Allowed by you")
    wait_turn_finished(page)
    expect(page.locator('[data-kind="text"]')).to_have_text("echo hello finished with exit code 0.")
    expect(page.locator('[data-kind="result"]')).to_contain_text("Done")
    return session_id


def check_reload(page: Any, server: LiveServer, session_id: str, transport: str) -> None:
    """A reload replays the whole session: the same events, each rendered once."""
    before = assert_rendered_once(page)
    page.reload()
    expect(page.locator("#conn")).to_have_text(f"Connected · {transport}")
    wait_turn_finished(page)
    after = assert_rendered_once(page)
    assert after == before
    assert max(after) == server.events(session_id)["last_event_id"]
    expect(page.locator(".tool-output").filter(has_text="hello")).to_have_count(1)
    expect(page.locator(".msg-user")).to_have_count(1)
    expect(page.locator(".msg-agent")).to_have_count(1)
    expect(page.locator(".streaming")).to_have_count(0)
    expect(page.locator(".card")).to_have_count(1)
    expect(page.locator(".card-outcome")).to_contain_text("Allowed by you")


# ---------------------------------------------------------------- tests


def serve_with_strict_csp(page: Any, server: LiveServer) -> None:
    """Check that the server sends its strict CSP (no inline script or style), and record
    any violation of it in window.cspViolations."""
    csp = server.api("GET", "/").headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    page.add_init_script("""window.cspViolations = [];
        document.addEventListener('securitypolicyviolation',
            e => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));""")


def test_approve_over_sse_and_reload(page: Any, server: LiveServer) -> None:
    serve_with_strict_csp(page, server)
    session_id = echo_hello_flow(page, server)
    assert page.evaluate("window.cspViolations") == []
    expect(page.locator("#conn")).to_have_text("Connected · SSE")
    expect(page.locator("#conn")).to_have_attribute("role", "status")
    screenshot(page, "approve-sse")
    check_reload(page, server, session_id, "SSE")
    screenshot(page, "approve-sse-reloaded")
    assert page.evaluate("window.cspViolations") == []
    page.get_by_role("button", name="Open the session list").click()
    expect(page.locator(".session-item[aria-current=true]")).to_be_visible()
    expect(page.locator("#drawer")).to_be_in_viewport(ratio=1)  # slid in all the way
    assert_phone_friendly(page)
    screenshot(page, "drawer")
    page.keyboard.press("Escape")
    expect(page.locator("#drawer")).to_be_hidden()
    # Another tab (its own client label) sees the same transcript and who answered.
    other = page.context.new_page()
    other.goto(page.url)
    wait_turn_finished(other)
    assert assert_rendered_once(other) == event_ids(page)
    by_first_tab = re.compile(r"Allowed by Chrome · tab \w{4}$")
    expect(other.locator(".card-outcome")).to_have_text(by_first_tab)
    other.close()
    assert not page.js_errors


def test_long_poll_without_event_source(browser: Any, server: LiveServer) -> None:
    page = new_page(browser, server, no_event_source=True)
    try:
        session_id = echo_hello_flow(page, server)
        expect(page.locator("#conn")).to_have_text("Connected · long-poll")
        check_reload(page, server, session_id, "long-poll")
        screenshot(page, "long-poll")
        assert not page.js_errors
    finally:
        page.context.close()


def test_falls_back_to_long_poll_when_sse_keeps_failing(page: Any, server: LiveServer) -> None:
    page.route("**/api/sessions/*/stream*", lambda route: route.abort())
    start_session(page, server)  # connected at last, over long-poll
    expect(page.locator("#conn")).to_have_text("Connected · long-poll")
    send(page, "hello")
    expect(page.locator('[data-kind="text"]')).to_contain_text("I am Tether's local agent")
    wait_turn_finished(page)
    assert_rendered_once(page)
    screenshot(page, "sse-fallback")


def test_resumes_after_a_network_drop_without_duplicates(page: Any, server: LiveServer) -> None:
    session_id = start_session(page, server)
    send(page, "$ echo before")
    pending_card(page).get_by_role("button", name="Allow", exact=True).click()
    wait_turn_finished(page)
    seen = max(event_ids(page))
    page.context.set_offline(True)
    expect(page.locator("#conn")).to_have_text("Offline · SSE")
    # The next turn runs while this browser is away.
    server.api("POST", f"/api/sessions/{session_id}/prompt", json={"text": "$ echo while-away"})
    card = wait_for_event(server, session_id, "approval_request", after=seen)
    server.api("POST", f"/api/sessions/{session_id}/approvals/{card['request_id']}",
               json={"decision": "allow", "client": "Pixel · tab 9"})
    wait_for_event(server, session_id, "turn_end", after=card["id"])
    assert max(event_ids(page)) == seen  # nothing reached the page while it was offline
    page.context.set_offline(False)
    expect(page.locator("#conn")).to_have_text("Connected · SSE")
    wait_turn_finished(page, turns=2)
    expect(page.locator(".tool-output").filter(has_text="while-away")).to_have_count(1)
    expect(page.locator(".card-outcome").last).to_have_text("Allowed by Pixel · tab 9")
    ids = assert_rendered_once(page)
    assert max(ids) == server.events(session_id)["last_event_id"]
    screenshot(page, "network-drop")
    assert not page.js_errors


def test_deny_with_message(page: Any, server: LiveServer) -> None:
    session_id = start_session(page, server)
    send(page, "$ touch denied.txt")
    card = pending_card(page)
    card.get_by_label(re.compile("Message with your answer")).fill("not in this workspace")
    card.get_by_role("button", name="Deny").click()
    expect(card).to_have_attribute("data-state", "denied")
    expect(card.locator(".card-outcome")).to_have_text(
        "Denied by you: not in this workspace")
    wait_turn_finished(page)
    # The agent was told (its tool result); the card's outcome says it, once.
    expect(page.locator(".tool-output")).to_have_count(0)
    expect(page.locator('[data-kind="text"]')).to_have_text(
        "I did not run touch denied.txt: it was denied.")
    workspace = server.workdir / "data" / "sessions" / session_id
    assert workspace.is_dir()
    assert not (workspace / "denied.txt").exists()
    screenshot(page, "deny")
    assert not page.js_errors


def test_clarify_option(page: Any, server: LiveServer) -> None:
    start_session(page, server)
    send(page, "ask Which db? pg | sqlite")
    card = pending_card(page)
    expect(card.locator(".card-title")).to_have_text("Which db?")
    expect(card.get_by_label("Your own answer to: Which db?")).to_be_visible()
    card.get_by_role("button", name="sqlite").click()
    expect(page.locator('[data-kind="text"]')).to_have_text("You answered: sqlite")
    expect(card).to_have_attribute("data-state", "answered")
    expect(card.locator(".card-outcome")).to_contain_text("Which db? → sqlite")
    wait_turn_finished(page)
    # The free-text answer instead of an option.
    send(page, "ask Which cache? redis | memcached")
    card = pending_card(page)
    card.get_by_label("Your own answer to: Which cache?").fill("none for now")
    card.get_by_role("button", name="Answer").click()
    expect(page.locator('[data-kind="text"]').last).to_have_text("You answered: none for now")
    expect(card.locator(".card-outcome")).to_contain_text("Which cache? → none for now")
    wait_turn_finished(page, turns=2)
    assert_rendered_once(page)
    screenshot(page, "clarify")
    assert not page.js_errors


def test_approval_answered_by_another_client(page: Any, server: LiveServer) -> None:
    session_id = start_session(page, server)
    send(page, "$ echo other")
    card = pending_card(page)
    request_id = card.get_attribute("data-request-id")
    answer = server.api("POST", f"/api/sessions/{session_id}/approvals/{request_id}",
                        json={"decision": "allow", "client": "Pixel · tab 9"})
    assert answer.status_code == 200
    expect(card).to_have_attribute("data-state", "allowed")
    expect(card.locator(".card-outcome")).to_have_text("Allowed by Pixel · tab 9")
    expect(card.get_by_role("button", name="Allow", exact=True)).to_have_count(0)
    wait_turn_finished(page)

    # A click that loses the race: another client answers while our POST is on its way.
    send(page, "$ echo race")
    card = pending_card(page)
    request_id = card.get_attribute("data-request-id")

    def other_client_first(route: Any) -> None:
        server.api("POST", f"/api/sessions/{session_id}/approvals/{request_id}",
                   json={"decision": "deny", "message": "too late", "client": "Pixel · tab 9"})
        route.continue_()

    page.route("**/approvals/**", other_client_first)
    with page.expect_response("**/approvals/**") as response:
        card.get_by_role("button", name="Allow", exact=True).click()
    assert response.value.status == 409
    expect(card).to_have_attribute("data-state", "denied")
    expect(card.locator(".card-outcome")).to_have_text("Denied by Pixel · tab 9: too late")
    wait_turn_finished(page, turns=2)
    page.unroute("**/approvals/**")

    # A 409 whose resolved event has not arrived yet: the card says so at once.
    send(page, "$ echo conflict")
    card = pending_card(page)
    request_id = card.get_attribute("data-request-id")
    page.route("**/approvals/**", lambda route: route.fulfill(status=409, json={"error": {
        "code": "already_resolved", "message": "already resolved"}}))
    card.get_by_role("button", name="Deny").click()
    expect(card).to_have_attribute("data-state", "elsewhere")
    expect(card.locator(".card-outcome")).to_have_text("Already answered elsewhere")
    expect(card.get_by_role("button", name="Allow", exact=True)).to_have_count(0)
    server.api("POST", f"/api/sessions/{session_id}/approvals/{request_id}",
               json={"decision": "allow", "client": "Pixel · tab 9"})
    expect(card.locator(".card-outcome")).to_have_text("Allowed by Pixel · tab 9")
    wait_turn_finished(page, turns=3)
    assert_rendered_once(page)
    screenshot(page, "answered-elsewhere")
    assert not page.js_errors


def test_stop_a_running_command(page: Any, server: LiveServer) -> None:
    start_session(page, server)
    send(page, "$ sleep 30")
    pending_card(page).get_by_role("button", name="Allow", exact=True).click()
    expect(page.locator("#turn-status-text")).to_have_text("Working…")
    page.get_by_role("button", name="Stop the running turn").click()
    expect(page.locator('[data-kind="turn_end"]')).to_have_text("Stopped by you")
    wait_turn_finished(page)
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    assert_rendered_once(page)
    screenshot(page, "stopped")
    assert not page.js_errors


def test_triage_preset(page: Any, server: LiveServer) -> None:
    start_session(page, server)
    page.get_by_role("button", name="triage").click()
    for _ in range(4):
        card = pending_card(page)
        card.get_by_role("button", name="Allow", exact=True).click()
        expect(card).to_have_attribute("data-state", "allowed")
    expect(page.locator('[data-kind="text"]')).to_contain_text("Triage: ran 4 of 4 commands.")
    wait_turn_finished(page)
    expect(page.locator('[data-kind="tool_use"]')).to_have_count(4)
    expect(page.locator(".tool-output")).to_have_count(4)
    assert_rendered_once(page)
    screenshot(page, "triage")
    assert not page.js_errors


def test_docs_screenshot(browser: Any, server: LiveServer) -> None:
    """A session mid-way: a prompt, streamed text, a tool call with output, a pending card."""
    older = server.create_session(agent="local", title="Disk check on the build box")
    server.api("POST", f"/api/sessions/{older['id']}/prompt", json={"text": "disk"})
    page = new_page(browser, server, viewport={"width": 1200, "height": 800},
                    color_scheme="light")
    try:
        session_id = start_session(page, server)
        send(page, "$ python3 --version")
        pending_card(page).get_by_role("button", name="Allow", exact=True).click()
        wait_turn_finished(page)
        send(page, "$ git init -q && git status --short")
        pending_card(page)
        expect(page.locator("#conn")).to_have_text("Connected · SSE")
        shots = {"desktop": screenshot(page, "docs-screenshot-desktop")}
        phone = new_page(browser, server, color_scheme="light")  # the same session, a phone
        try:
            phone.goto(f"{server.url}/#s={session_id}")
            expect(pending_card(phone)).to_be_visible()
            expect(phone.locator("#conn")).to_have_text("Connected · SSE")
            shots["phone"] = screenshot(phone, "docs-screenshot-phone")
            assert not phone.js_errors
        finally:
            phone.context.close()
        if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
            for layout, path in shots.items():
                shutil.copyfile(path, ROOT / "docs" / f"screenshot-{layout}.png")
        server.api("POST", f"/api/sessions/{session_id}/cancel")
        assert not page.js_errors
    finally:
        page.context.close()
