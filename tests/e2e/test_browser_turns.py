"""What a newcomer trips on (issue 17, items 3, 7, 8, 10), in a phone-sized Chromium with the
`local` agent: Stop is no failure, sessions are named by their first prompt, prompts typed
while a turn runs are queued on the server, and deleting a session says it removes its
workspace. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import screenshot
from tests.e2e.live import LiveServer
from tests.e2e.test_browser import (
    assert_phone_friendly,
    assert_rendered_once,
    pending_card,
    send,
    start_session,
    wait_turn_finished,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

#: What a failure looks like in the transcript (red): none of it may follow a Stop.
RED = ".notice-error, .result-error, .tool-output.is-error, #transcript [role=alert]"


def assert_stopped_calmly(page: Any) -> None:
    expect(page.locator('[data-kind="turn_end"]')).to_have_text("Stopped by you")
    expect(page.get_by_text("Stopped by you")).to_have_count(1)
    red = page.eval_on_selector_all(RED, "nodes => nodes.map(n => n.outerHTML.slice(0, 300))")
    assert red == [], red
    expect(page.get_by_text(re.compile(r"^Error"))).to_have_count(0)
    expect(page.get_by_text("[Request interrupted", exact=False)).to_have_count(0)
    pill = page.locator("#state-pill")
    expect(pill).to_have_attribute("data-state", "idle")
    expect(pill).to_have_text("idle")


def test_stop_ends_with_one_neutral_line_and_an_idle_session(page: Any,
                                                              server: LiveServer) -> None:
    session_id = start_session(page, server)
    send(page, "$ sleep 30")
    pending_card(page).get_by_role("button", name="Allow", exact=True).click()
    expect(page.locator("#turn-status-text")).to_have_text("Working…")
    stop = page.get_by_role("button", name="Stop the running turn")
    # On a phone the button says Stop in words, next to its square.
    expect(stop).to_be_visible()
    expect(stop.locator("span")).to_be_visible()
    expect(stop).to_have_text("Stop")
    assert stop.locator("svg rect").count() == 1
    assert_phone_friendly(page)
    screenshot(page, "stop-button-phone")
    stop.click()
    wait_turn_finished(page)
    assert_stopped_calmly(page)
    expect(page.locator(".tool-output.is-stopped")).to_have_text("Stopped before it finished")
    assert_rendered_once(page)
    screenshot(page, "stopped-by-you")

    # A reload replays the log: the same calm ending, and the session idle, in the list too.
    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    wait_turn_finished(page)
    assert_stopped_calmly(page)
    assert server.api("GET", f"/api/sessions/{session_id}").json()["state"] == "idle"
    screenshot(page, "stopped-by-you-reloaded")
    assert not page.js_errors


def test_an_agent_that_died_is_still_agent_stopped(page: Any, server: LiveServer) -> None:
    """"agent stopped" stays for what the user did not do: here a turn that ended in error."""
    start_session(page, server)
    page.evaluate("""() => {
        const base = {session_id: Sessions.currentId, ts: Date.now() / 1000};
        Transcript.apply({...base, id: 1, kind: "user", turn: 1, text: "hi"});
        Transcript.apply({...base, id: 2, kind: "error", message: "the agent exited (code 1)"});
        Transcript.apply({...base, id: 3, kind: "turn_end", turn: 1, reason: "error"});
    }""")
    expect(page.locator("#state-pill")).to_have_text("agent stopped")
    expect(page.locator('[data-kind="turn_end"]')).to_have_text("Ended by an error")


def test_the_first_prompt_names_the_session_in_the_header_list_and_inbox(
        page: Any, server: LiveServer) -> None:
    session_id = start_session(page, server)
    expect(page.locator("#session-title")).to_have_text("local session")
    send(page, "$ echo   first   words of a long-winded request about disks and memory")
    card = pending_card(page)
    title = "$ echo first words of a long-winded request about disks…"
    expect(page.locator("#session-title")).to_have_text(title)
    assert server.api("GET", f"/api/sessions/{session_id}").json()["title"] == title
    page.get_by_role("button", name=re.compile("^Inbox")).click()
    expect(page.locator(".inbox-where")).to_contain_text(title)
    screenshot(page, "title-in-inbox")
    page.keyboard.press("Escape")
    card.get_by_role("button", name="Allow", exact=True).click()
    wait_turn_finished(page)
    page.get_by_role("button", name="Open the session list").click()
    expect(page.locator(".session-item[aria-current=true] .session-name")).to_have_text(title)
    screenshot(page, "title-in-list")
    page.get_by_role("button", name="Close the session list").click()
    # A second prompt leaves it.
    send(page, "help")
    wait_turn_finished(page, turns=2)
    expect(page.locator("#session-title")).to_have_text(title)
    assert not page.js_errors


def test_type_ahead_queues_on_the_server_and_sends_after_the_turn(page: Any,
                                                                  server: LiveServer) -> None:
    session_id = start_session(page, server)
    send(page, "$ sleep 3")
    pending_card(page).get_by_role("button", name="Allow", exact=True).click()
    expect(page.locator("#turn-status-text")).to_have_text("Working…")
    queue_button = page.get_by_role("button", name="Queue")
    expect(queue_button).to_be_enabled()
    send(page, "$ echo from the queue")
    send(page, "help")
    items = page.locator("#queue-list .queue-item")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_contain_text("$ echo from the queue")
    expect(items.nth(1)).to_contain_text("help")
    expect(page.get_by_role("button", name=re.compile("^Send queued"))).to_have_count(0)
    queued = server.api("GET", f"/api/sessions/{session_id}").json()["queue"]
    assert [q["text"] for q in queued] == ["$ echo from the queue", "help"]
    assert_phone_friendly(page)
    screenshot(page, "queued-while-running")
    page.get_by_role("button", name="Remove queued message 2").click()
    expect(items).to_have_count(1)

    # The turn completes; the queued prompt goes out by itself as turn 2.
    expect(page.locator(".msg-user")).to_have_count(2)
    expect(page.locator(".msg-user").nth(1)).to_have_text("$ echo from the queue")
    expect(items).to_have_count(0)
    expect(page.locator("#queue-list")).to_be_hidden()
    pending_card(page).get_by_role("button", name="Allow", exact=True).click()
    wait_turn_finished(page, turns=2)
    expect(page.locator(".tool-output").last).to_contain_text("from the queue")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    screenshot(page, "queue-sent")
    assert [e["kind"] for e in server.api(
        "GET", f"/api/sessions/{session_id}/events").json()["events"]].count("user") == 2
    assert_rendered_once(page)
    assert not page.js_errors


def test_a_stopped_turn_keeps_the_queue_until_send_now(page: Any, server: LiveServer) -> None:
    start_session(page, server)
    send(page, "$ sleep 30")
    pending_card(page).get_by_role("button", name="Allow", exact=True).click()
    expect(page.locator("#turn-status-text")).to_have_text("Working…")
    send(page, "help")
    expect(page.locator("#queue-list .queue-item")).to_have_count(1)
    page.get_by_role("button", name="Stop the running turn").click()
    wait_turn_finished(page)
    send_now = page.get_by_role("button", name="Send queued message 1 now")
    expect(send_now).to_be_visible()
    expect(page.locator(".msg-user")).to_have_count(1)
    screenshot(page, "queue-kept-after-stop")
    send_now.click()
    wait_turn_finished(page, turns=2)
    expect(page.locator(".msg-user").nth(1)).to_have_text("help")
    expect(page.locator("#queue-list")).to_be_hidden()
    assert not page.js_errors


def test_delete_says_it_removes_the_workspace_and_does(page: Any, server: LiveServer) -> None:
    session_id = start_session(page, server)
    workspace = server.workdir / "data" / "sessions" / session_id
    assert workspace.is_dir()
    page.get_by_role("button", name="Session actions").click()
    page.get_by_role("button", name="Delete session…").click()
    dialog = page.get_by_role("dialog", name=re.compile("Delete"))
    expect(dialog).to_contain_text("Its transcript and its workspace folder are deleted for good.")
    screenshot(page, "delete-dialog")
    dialog.get_by_role("button", name="Delete").click()
    expect(page.locator("#empty-state")).to_be_visible()
    assert not workspace.exists()
    assert not page.js_errors
