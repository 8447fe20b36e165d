"""Model and permission mode in the browser (issue 18 item 2), phone and desktop: the header
shows both, Plan mode on and back off in one tap, a plan approved from its card (rendered
Markdown, "Approve plan" / "Keep planning"), the picker, a change made elsewhere shown live,
and the new-session options. Screenshots in test-artifacts/."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import new_page, screenshot
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

DESKTOP = {"width": 1280, "height": 860}


def plan_round_trip(page: Any, server: LiveServer, name: str) -> str:
    session_id = start_session(page, server)
    plan = page.get_by_role("button", name="Plan", exact=True)
    chip = page.get_by_role("button", name="Model and permission mode")
    expect(plan).to_have_attribute("aria-pressed", "false")
    expect(chip).to_contain_text("Local (no model)")
    expect(chip).to_contain_text("Ask first")
    # One tap on, one tap off: each a PATCH, each a line in the transcript.
    with page.expect_response(lambda r: r.request.method == "PATCH") as response:
        plan.click()
    assert response.value.request.post_data_json["permission_mode"] == "plan"
    expect(plan).to_have_attribute("aria-pressed", "true")
    expect(chip).to_contain_text("Plan")
    expect(page.locator(".notice").filter(has_text="Permission mode: Plan")).to_have_count(1)
    plan.click()
    expect(plan).to_have_attribute("aria-pressed", "false")
    assert server.api("GET", f"/api/sessions/{session_id}").json()["permission_mode"] == \
        "default"
    plan.click()
    expect(plan).to_have_attribute("aria-pressed", "true")

    # In Plan mode the agent presents its work as a plan, rendered as Markdown.
    send(page, "$ echo planned")
    card = pending_card(page)
    expect(card).to_contain_text("Approve this plan?")
    expect(card.locator(".plan-body h2")).to_have_text("Plan")
    expect(card.locator(".plan-body code")).to_have_text("echo planned")
    expect(card.get_by_role("button", name="Keep planning")).to_be_visible()
    assert_phone_friendly(page)
    screenshot(page, f"plan-card-{name}")
    card.get_by_role("button", name="Approve plan").click()
    expect(card).to_have_attribute("data-state", "allowed")
    expect(card.locator(".card-outcome")).to_have_text("Plan approved by you")
    # The agent left Plan mode by itself: the header follows, and says who changed it.
    expect(plan).to_have_attribute("aria-pressed", "false")
    expect(page.locator(".notice").filter(has_text="changed by the agent")).to_have_count(1)
    command = pending_card(page)
    command.get_by_role("button", name="Allow", exact=True).click()
    wait_turn_finished(page)
    expect(page.locator(".tool-output")).to_contain_text("planned")
    assert_rendered_once(page)
    screenshot(page, f"plan-approved-{name}")
    return session_id


def test_plan_mode_on_a_phone(page: Any, server: LiveServer) -> None:
    plan_round_trip(page, server, "phone")
    assert not page.js_errors


def test_plan_mode_on_a_desktop(browser: Any, server: LiveServer) -> None:
    page = new_page(browser, server, viewport=DESKTOP)
    try:
        plan_round_trip(page, server, "desktop")
        assert not page.js_errors
    finally:
        page.context.close()


def test_keep_planning_and_the_picker(page: Any, server: LiveServer) -> None:
    session_id = start_session(page, server)
    chip = page.get_by_role("button", name="Model and permission mode")
    chip.click()
    panel = page.locator("#mode-panel")
    expect(panel).to_be_visible()
    modes = panel.get_by_label("Permission mode")
    # Without TETHER_ALLOW_BYPASS the modes that ask nobody are not offered.
    options = modes.locator("option").all_text_contents()
    assert "Plan" in options and "Bypass permissions" not in options
    screenshot(page, "mode-picker-phone")
    with page.expect_response(lambda r: r.request.method == "PATCH"):
        modes.select_option("plan")
    expect(chip).to_contain_text("Plan")
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    send(page, "plan Do **this** first")
    card = pending_card(page)
    expect(card.locator(".plan-body strong")).to_have_text("this")
    card.get_by_label("What should change in the plan").fill("Add a test")
    card.get_by_role("button", name="Keep planning").click()
    expect(card).to_have_attribute("data-state", "denied")
    expect(card.locator(".card-outcome")).to_contain_text("Add a test")
    wait_turn_finished(page)
    expect(page.get_by_role("button", name="Plan", exact=True)).to_have_attribute(
        "aria-pressed", "true")
    # A change made by another client shows here live.
    server.api("PATCH", f"/api/sessions/{session_id}",
               json={"permission_mode": "acceptEdits", "client": "phone 2"})
    expect(chip).to_contain_text("Accept edits")
    expect(page.locator(".notice").filter(has_text="changed by phone 2")).to_have_count(1)
    assert not page.js_errors


def test_a_new_session_with_a_mode(page: Any, server: LiveServer) -> None:
    page.goto(server.url + "/")
    page.get_by_role("button", name="Open the session list").click()
    page.locator("#agent-select").select_option("local")
    page.locator("#new-options summary").click()
    page.locator("#new-mode").select_option("plan")
    screenshot(page, "new-session-options-phone")
    with page.expect_response(lambda r: r.request.method == "POST"
                              and r.url.endswith("/api/sessions")) as response:
        page.locator("#new-session-btn").click()
    assert response.value.request.post_data_json["permission_mode"] == "plan"
    expect(page.get_by_role("button", name="Plan", exact=True)).to_have_attribute(
        "aria-pressed", "true")
    assert not page.js_errors
