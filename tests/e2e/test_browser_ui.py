"""The browser UI's cards, transcript and sessions (issue 3), end to end, plus accessibility.

axe-core comes from npm (``make test`` installs the pinned version into .tools/) and is
served to the page by the test itself; it is never part of the app.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import new_page, screenshot
from tests.e2e.live import ROOT, LiveServer
from tests.e2e.test_browser import (
    assert_phone_friendly,
    assert_rendered_once,
    pending_card,
    send,
    start_session,
    wait_for_event,
    wait_turn_finished,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

AXE = ROOT / ".tools" / "node_modules" / "axe-core" / "axe.min.js"


def test_edit_then_allow_and_allow_for_session(page: Any, server: LiveServer) -> None:
    session_id = start_session(page, server)
    send(page, "$ echo original")
    card = pending_card(page)
    card.get_by_role("button", name="Edit the command, then allow").click()
    editor = card.get_by_label("Command to run")
    expect(editor).to_be_focused()
    expect(editor).to_have_value("echo original")
    assert_phone_friendly(page)
    screenshot(page, "edit-then-allow")
    editor.fill("echo edited")
    with page.expect_request("**/approvals/**") as request:
        card.get_by_role("button", name="Allow edited command").click()
    body = request.value.post_data_json
    assert body["decision"] == "allow"
    assert body["updated_input"]["command"] == "echo edited"
    assert body["updated_input"]["description"]  # the rest of the input is kept
    expect(card).to_have_attribute("data-state", "allowed")
    expect(card.locator(".card-outcome")).to_have_text("Allowed by you (edited: echo edited)")
    wait_turn_finished(page)
    expect(page.locator(".tool-output")).to_contain_text("edited")
    expect(page.locator(".tool-output")).not_to_contain_text("original")

    send(page, "$ echo twice")
    card = pending_card(page)
    request_event = wait_for_event(server, session_id, "approval_request",
                                   after=int(card.get_attribute("data-event-id")) - 1)
    with page.expect_request("**/approvals/**") as request:
        card.get_by_role("button", name="Allow for this session").click()
    body = request.value.post_data_json
    assert body["decision"] == "allow"
    assert body["updated_permissions"] == [
        {**s, "destination": "session"} for s in request_event["permission_suggestions"]
        if s["type"] == "addRules"]
    expect(card).to_have_attribute("data-state", "allowed")
    expect(card.locator(".card-outcome")).to_have_text("Allowed for this session by you")
    wait_turn_finished(page, turns=2)
    # The agent keeps the rule for its session: the same command runs without a card.
    send(page, "$ echo twice")
    wait_turn_finished(page, turns=3)
    expect(page.locator(".tool-output").filter(has_text="twice")).to_have_count(2)
    expect(page.locator('.card[data-kind="approval_request"]')).to_have_count(2)
    assert_rendered_once(page)
    assert not page.js_errors


def test_auto_approve_rename_download_delete(page: Any, server: LiveServer) -> None:
    session_id = start_session(page, server)
    actions = page.get_by_role("button", name="Session actions")
    actions.click()
    toggle = page.get_by_role("switch", name="Auto-approve tool calls")
    expect(toggle).to_have_attribute("aria-checked", "false")
    with page.expect_response(lambda r: r.request.method == "PATCH") as response:
        toggle.click()
    assert response.value.request.post_data_json == {"auto_approve": True}
    banner = page.locator("#auto-banner")
    expect(banner).to_contain_text("Auto-approve is on")
    assert server.api("GET", f"/api/sessions/{session_id}").json()["auto_approve"] is True
    send(page, "$ echo automatic")
    wait_turn_finished(page)
    expect(page.locator(".card-outcome")).to_have_text("Allowed by auto-approve")
    expect(page.locator(".tool-output")).to_contain_text("automatic")
    screenshot(page, "auto-approve")
    banner.get_by_role("button", name="Turn off").click()
    expect(banner).to_be_hidden()
    assert server.api("GET", f"/api/sessions/{session_id}").json()["auto_approve"] is False

    # Rename, through a dialog.
    actions.click()
    page.get_by_role("button", name="Rename…").click()
    dialog = page.get_by_role("dialog", name="Rename session")
    dialog.get_by_label("Title").fill("Nightly build")
    dialog.get_by_role("button", name="Rename").click()
    expect(page.locator("#session-title")).to_have_text("Nightly build")
    assert server.api("GET", f"/api/sessions/{session_id}").json()["title"] == "Nightly build"
    expect(page.locator(".session-item[aria-current=true]")).to_contain_text("Nightly build")

    # Download the transcript as JSON Lines: one event per line, the whole log.
    actions.click()
    link = page.get_by_role("link", name="Download transcript (JSONL)")
    with page.expect_download() as download:
        link.click()
    lines = Path(download.value.path()).read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["kind"] == "turn_end"
    assert any(e["kind"] == "approval_resolved" and e["reason"] == "auto" for e in events)

    # Delete, after a confirmation; cancelling keeps it.
    page.keyboard.press("Escape")
    actions.click()
    page.get_by_role("button", name="Delete session…").click()
    dialog = page.get_by_role("dialog", name=re.compile("Delete"))
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert server.api("GET", f"/api/sessions/{session_id}").status_code == 200
    actions.click()
    page.get_by_role("button", name="Delete session…").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(page.locator("#empty-state")).to_be_visible()
    assert server.api("GET", f"/api/sessions/{session_id}").status_code == 404
    expect(page.locator(".session-item")).to_have_count(0)
    assert not page.js_errors


def test_markdown_is_sanitized_and_code_can_be_copied(page: Any, server: LiveServer) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    start_session(page, server)
    # The local agent repeats the command in its reply: Markdown with HTML in it.
    send(page, "$ true '<img src=x onerror=window.pwned=1>' "
               "'<script>window.pwned=2</script>' **bold**")
    pending_card(page).get_by_role("button", name="Allow", exact=True).click()
    wait_turn_finished(page)
    reply = page.locator('[data-kind="text"]')
    expect(reply).to_contain_text("finished with exit code 0")
    assert page.evaluate("window.pwned") is None
    assert reply.locator("img, script, [onerror]").count() == 0
    # Markdown, rendered: a fenced block with a copy button.
    page.evaluate("""() => Transcript.apply({id: Transcript.lastId + 1, kind: "text",
        text: "Run **this**:\\n\\n```sh\\nmake test\\n```\\n\\n"
              + "<a href='javascript:alert(1)'>x</a>"})""")
    last = page.locator('[data-kind="text"]').last
    expect(last.locator("strong")).to_have_text("this")
    expect(last.locator("pre")).to_have_text("make test")
    assert last.locator("a[href^=javascript]").count() == 0
    last.get_by_role("button", name="Copy code").click()
    expect(last.get_by_role("button", name="Copy code")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "make test"
    assert not page.js_errors


def test_tool_calls_by_kind(page: Any, server: LiveServer) -> None:
    """Edit and Write as diffs, Read as a file name, long output folded (rendered from
    Claude-shaped events; the local agent only runs Bash)."""
    start_session(page, server)
    page.evaluate("""() => {
      let id = Transcript.lastId;
      const apply = (e) => Transcript.apply({id: ++id, ...e});
      apply({kind: "user", text: "refactor", turn: 1, ts: Date.now() / 1000});
      apply({kind: "tool_use", tool_use_id: "t1", name: "Edit",
             input: {file_path: "app.py", old_string: "a = 1\\nb = 2\\nc = 3",
                     new_string: "a = 1\\nb = 20\\nc = 3"}});
      apply({kind: "tool_result", tool_use_id: "t1", content: "ok", is_error: false});
      apply({kind: "tool_use", tool_use_id: "t2", name: "Write",
             input: {file_path: "new.txt", content: "hello\\nworld"}});
      apply({kind: "tool_use", tool_use_id: "t3", name: "Read", input: {file_path: "/etc/hosts"}});
      apply({kind: "tool_result", tool_use_id: "t3", content: "127.0.0.1 localhost",
             is_error: false});
      apply({kind: "tool_use", tool_use_id: "t4", name: "Bash", input: {command: "seq 100"}});
      const lines = Array.from({length: 100}, (_, i) => i + 1).join("\\n");
      apply({kind: "tool_result", tool_use_id: "t4", content: lines, is_error: false});
      apply({kind: "result", is_error: false, duration_ms: 4200, cost_usd: 0.0123,
             session_cost_usd: 0.0456,
             usage: {input_tokens: 1200, output_tokens: 345, cache_read_input_tokens: 800}});
      apply({kind: "turn_end", turn: 1, reason: "completed"});
    }""")
    edit = page.locator('[data-tool-name="Edit"]')
    expect(edit.locator(".diff-del")).to_have_text("- b = 2\n")
    expect(edit.locator(".diff-add")).to_have_text("+ b = 20\n")
    write = page.locator('[data-tool-name="Write"]')
    expect(write.locator(".diff-add")).to_have_count(2)
    read = page.locator('[data-tool-name="Read"]')
    expect(read.locator(".tool-file")).to_have_text("/etc/hosts")
    expect(read.locator("details.fold")).not_to_have_attribute("open", "")
    bash = page.locator('[data-tool-name="Bash"]')
    expect(bash.locator("details.fold summary")).to_have_text("Output · 100 lines")
    expect(page.locator('[data-kind="result"]').last).to_have_text(
        "Done · 4.2 s · $0.0123 this turn · $0.0456 session · 1,200 in / 345 out / 800 cached "
        "tokens")
    screenshot(page, "tool-kinds")
    assert not page.js_errors


def test_cost_is_the_turns_own_with_the_session_beside_it(page: Any, server: LiveServer) -> None:
    """The local agent has no model: its result line shows no cost at all. A Claude result
    shows the turn's cost and the session's sum; an old log's cost_usd (Claude Code's running
    total, no session_cost_usd) is labelled as such (issue 17, item 5)."""
    start_session(page, server)
    send(page, "hello")
    wait_turn_finished(page)
    local = page.locator('[data-kind="result"]').last
    expect(local).to_have_text(re.compile(r"^Done · \d+\.\d s · 0 in / \d+ out tokens$"))
    expect(local).not_to_contain_text("$")
    page.evaluate("""() => {
      let id = Transcript.lastId;
      const apply = (e) => Transcript.apply({id: ++id, ...e});
      apply({kind: "user", text: "two", turn: 2, ts: Date.now() / 1000});
      apply({kind: "result", is_error: false, duration_ms: 1500, cost_usd: 0,
             session_cost_usd: 1.5, usage: {}});
      apply({kind: "turn_end", turn: 2, reason: "completed"});
      apply({kind: "user", text: "old", turn: 3, ts: Date.now() / 1000});
      apply({kind: "result", is_error: false, duration_ms: 1500, cost_usd: 0.0041, usage: {}});
      apply({kind: "turn_end", turn: 3, reason: "completed"});
    }""")
    results = page.locator('[data-kind="result"]')
    expect(results.nth(1)).to_have_text("Done · 1.5 s · $0 this turn · $1.50 session")
    expect(results.nth(2)).to_have_text("Done · 1.5 s · $0.0041 agent's running total")
    assert not page.js_errors


def test_answered_question_is_shown_once(page: Any, server: LiveServer) -> None:
    """The card shows the question and the answer; the CLI's "User has answered your
    questions" tool result is not repeated under it (issue 17, item 11)."""
    session_id = start_session(page, server)
    send(page, "ask Deploy now? yes | no")
    card = pending_card(page)
    card.get_by_role("button", name="yes").click()
    wait_turn_finished(page)
    expect(card.locator(".card-outcome")).to_have_text("Answered by you: Deploy now? → yes")
    events = server.events(session_id)["events"]
    result = next(e for e in events if e["kind"] == "tool_result")
    assert "User has answered your questions" in result["content"]
    expect(page.locator("#transcript")).not_to_contain_text("User has answered")
    expect(page.locator(".tool-output")).to_have_count(0)
    # The card's outcome stands for the tool result: every event is on screen once.
    expect(card.locator(".card-outcome")).to_have_attribute("data-event-id", str(result["id"]))
    ids = assert_rendered_once(page)
    page.reload()
    wait_turn_finished(page)
    assert assert_rendered_once(page) == ids
    expect(page.locator(".tool-output")).to_have_count(0)
    screenshot(page, "answered-once")
    assert not page.js_errors


def test_denial_is_shown_once(page: Any, server: LiveServer) -> None:
    """The denial and its message are on the card, and only there: not again as the tool's
    error output, nor in the agent's reply (issue 17, item 11)."""
    start_session(page, server)
    send(page, "$ uname -a")
    card = pending_card(page)
    card.get_by_label(re.compile("Message with your answer")).fill("not on the build box")
    card.get_by_role("button", name="Deny").click()
    wait_turn_finished(page)
    expect(card.locator(".card-outcome")).to_have_text("Denied by you: not on the build box")
    expect(page.locator(".tool-output")).to_have_count(0)
    transcript = page.locator("#transcript").text_content()
    assert transcript.count("not on the build box") == 1, transcript
    expect(page.locator('[data-kind="text"]')).to_have_text(
        "I did not run uname -a: it was denied.")
    ids = assert_rendered_once(page)
    page.reload()
    wait_turn_finished(page)
    assert assert_rendered_once(page) == ids
    assert page.locator("#transcript").text_content().count("not on the build box") == 1
    screenshot(page, "denied-once")
    assert not page.js_errors


def test_calls_allowed_by_the_agents_own_rules_are_labelled(page: Any,
                                                             server: LiveServer) -> None:
    """Claude-shaped events (the Claude fixtures' tool_result_meta, as the driver passes it
    on): a call Claude Code's own rules allowed is labelled; one a person allowed, one with
    no permission decision, and one whose tool result is only an error are not; a denial by
    its rules says so (issue 17, item 11)."""
    start_session(page, server)
    page.evaluate("""() => {
      let id = Transcript.lastId;
      const apply = (e) => Transcript.apply({id: ++id, ...e});
      apply({kind: "user", text: "build", turn: 1, ts: Date.now() / 1000});
      apply({kind: "tool_use", tool_use_id: "t1", name: "Bash",
             input: {command: "npm test", description: "Run the tests"}});
      apply({kind: "tool_result", tool_use_id: "t1", content: "ok", is_error: false,
             permission: {decision: "accept", source: "config"}});
      apply({kind: "tool_use", tool_use_id: "t2", name: "Bash",
             input: {command: "touch x", description: "Create x"}});
      apply({kind: "approval_request", request_id: "r2", tool_use_id: "t2", tool_name: "Bash",
             input: {command: "touch x", description: "Create x"}});
      apply({kind: "approval_resolved", request_id: "r2", decision: "allow", reason: "user",
             by: "Pixel", message: null, updated_input: null, updated_permissions: null});
      apply({kind: "tool_result", tool_use_id: "t2", content: "", is_error: false,
             permission: {decision: "accept", source: "user_temporary"}});
      apply({kind: "tool_use", tool_use_id: "t3", name: "Read", input: {file_path: "a.txt"}});
      apply({kind: "tool_result", tool_use_id: "t3", content: "text", is_error: false});
      apply({kind: "tool_use", tool_use_id: "t4", name: "Bash", input: {command: "rm -rf /"}});
      apply({kind: "tool_result", tool_use_id: "t4",
             content: "Permission to use Bash has been denied.", is_error: true,
             permission: {decision: "reject", source: "config"}});
      apply({kind: "result", is_error: false, duration_ms: 900, usage: {}});
      apply({kind: "turn_end", turn: 1, reason: "completed"});
    }""")
    def tool(tool_use_id: str) -> Any:
        return page.locator(f'[data-tool-use-id="{tool_use_id}"]')

    expect(tool("t1").locator(".tool-rule")).to_have_text("Allowed by the agent's rules")
    expect(tool("t2").locator(".tool-rule")).to_have_count(0)
    expect(tool("t2").locator(".card-outcome")).to_have_text("Allowed by Pixel")
    expect(tool("t3").locator(".tool-rule")).to_have_count(0)
    expect(tool("t4").locator(".tool-rule")).to_have_text("Denied by the agent's rules")
    expect(tool("t4").locator(".tool-output.is-error")).to_contain_text("has been denied")
    expect(page.locator(".tool-rule")).to_have_count(2)
    assert_phone_friendly(page)
    tool("t1").scroll_into_view_if_needed()
    screenshot(page, "allowed-by-rules")
    assert not page.js_errors


def test_turn_timer_and_state_pill(page: Any, server: LiveServer) -> None:
    start_session(page, server)
    send(page, "$ sleep 3")
    expect(page.locator("#state-pill")).to_have_text("waiting for you")
    pending_card(page).get_by_role("button", name="Allow", exact=True).click()
    expect(page.locator("#state-pill")).to_have_text("running")
    expect(page.locator("#turn-timer")).to_have_text(re.compile(r"^[1-9]\d* s$"))
    wait_turn_finished(page)
    expect(page.locator("#state-pill")).to_have_text("idle")
    expect(page.locator("#turn-timer")).to_have_text("")
    assert not page.js_errors


# ---------------------------------------------------------------- accessibility


def axe_violations(page: Any) -> list[str]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("""async () => {
      const r = await axe.run(document, {resultTypes: ['violations']});
      return r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
        .map(v => `${v.id} (${v.impact}): `
               + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ')
               + ` ${v.nodes[0] && v.nodes[0].failureSummary || ''}`);
    }""")
    return list(result)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_accessibility(browser: Any, server: LiveServer, scheme: str) -> None:
    if not AXE.exists():
        message = f"{AXE} is missing: run `make axe-core` (make test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # axe-core is injected as an inline script, which the page's CSP rightly refuses.
    page = new_page(browser, server, color_scheme=scheme, bypass_csp=True)
    try:
        other = server.create_session(agent="local", title="Build box")
        server.api("POST", f"/api/sessions/{other['id']}/prompt",
                   json={"text": "ask Ship it? yes | no"})
        start_session(page, server)
        send(page, "$ echo checked")
        pending_card(page).get_by_role("button", name="Allow", exact=True).click()
        wait_turn_finished(page)
        send(page, "$ ls")
        pending_card(page)
        expect(page.locator("#inbox-count")).to_have_text("2")
        problems = {"session": axe_violations(page)}
        screenshot(page, f"a11y-{scheme}-session")
        page.get_by_role("button", name=re.compile("^Inbox")).click()
        problems["inbox"] = axe_violations(page)
        screenshot(page, f"a11y-{scheme}-inbox")
        page.keyboard.press("Escape")
        page.get_by_role("button", name="Session actions").click()
        problems["menu"] = axe_violations(page)
        screenshot(page, f"a11y-{scheme}-menu")
        page.keyboard.press("Escape")
        page.get_by_role("button", name="Open the session list").click()
        page.locator("#settings summary").click()
        problems["drawer"] = axe_violations(page)
        screenshot(page, f"a11y-{scheme}-drawer")
        page.keyboard.press("Escape")
        page.goto(f"{server.url}/#s={other['id']}")
        pending_card(page)
        problems["clarify"] = axe_violations(page)
        screenshot(page, f"a11y-{scheme}-clarify")
        bad = {k: v for k, v in problems.items() if v}
        assert not bad, f"serious or critical accessibility violations: {bad}"
        assert not page.js_errors
    finally:
        page.context.close()


def test_keyboard_only(page: Any, server: LiveServer) -> None:
    """Tab to the composer, send with Enter, answer the card with the keyboard."""
    start_session(page, server)
    page.locator("#prompt").focus()
    page.keyboard.type("$ echo keys")
    page.keyboard.press("Enter")
    card = pending_card(page)
    allow = card.get_by_role("button", name="Allow", exact=True)
    allow.focus()
    page.keyboard.press("Enter")
    expect(card).to_have_attribute("data-state", "allowed")
    wait_turn_finished(page)
    # The inbox opens and closes from the keyboard, and focus goes back to its button.
    inbox = page.get_by_role("button", name=re.compile("^Inbox"))
    inbox.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#inbox-panel")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#inbox-panel")).to_be_hidden()
    expect(inbox).to_be_focused()
    assert not page.js_errors


def test_installable_and_phone_ready(page: Any, server: LiveServer) -> None:
    """A web app manifest with 192 and 512 px icons (one maskable), safe-area aware layout."""
    start_session(page, server)
    href = page.locator('link[rel="manifest"]').get_attribute("href")
    manifest = server.api("GET", href)
    assert manifest.status_code == 200
    assert manifest.headers["content-type"].startswith("application/manifest+json")
    data = manifest.json()
    assert data["display"] == "standalone" and data["start_url"] == "/"
    sizes = {(icon["sizes"], icon.get("purpose", "any")) for icon in data["icons"]}
    assert {("192x192", "any"), ("512x512", "any"), ("512x512", "maskable")} <= sizes
    base = href.rsplit("/", 1)[0]
    for icon in data["icons"]:
        got = server.api("GET", f"{base}/{icon['src']}")
        assert got.status_code == 200, icon
        if icon["type"] == "image/png":
            assert got.content[:8] == b"\x89PNG\r\n\x1a\n"
            width = int.from_bytes(got.content[16:20], "big")
            height = int.from_bytes(got.content[20:24], "big")
            assert f"{width}x{height}" == icon["sizes"]
    viewport = page.locator('meta[name="viewport"]').get_attribute("content")
    assert "viewport-fit=cover" in viewport
    heights = page.evaluate("""() => [getComputedStyle(document.querySelector('.main')).height,
                                      String(window.innerHeight) + 'px']""")
    assert heights[0] == heights[1]  # 100dvh: the dock sits at the bottom of the screen
    css = server.api("GET", "/static/style.css").text
    assert "env(safe-area-inset-bottom)" in css and "100dvh" in css
    assert_phone_friendly(page)


def test_transport_setting_is_saved(page: Any, server: LiveServer) -> None:
    session_id = start_session(page, server)
    expect(page.locator("#conn")).to_have_text("Connected · SSE")
    page.get_by_role("button", name="Open the session list").click()
    page.locator("#settings summary").click()
    page.get_by_label("WebSocket").check()
    page.reload()
    expect(page.locator("#conn")).to_have_text("Connected · WebSocket")
    # ?transport= in the URL wins over the setting.
    page.goto(f"{server.url}/?transport=poll#s={session_id}")
    expect(page.locator("#conn")).to_have_text("Connected · long-poll")
    page.goto(f"{server.url}/#s={session_id}")
    expect(page.locator("#conn")).to_have_text("Connected · WebSocket")
    page.get_by_role("button", name="Open the session list").click()
    page.locator("#settings summary").click()
    page.get_by_label("Server-Sent Events (default)").check()
    page.reload()
    expect(page.locator("#conn")).to_have_text("Connected · SSE")
    assert not page.js_errors


def test_card_that_timed_out_is_read_only(browser: Any, tmp_path: Path) -> None:
    with LiveServer(tmp_path, TETHER_PROMPT_TIMEOUT="2") as server:
        page = new_page(browser, server)
        try:
            start_session(page, server)
            send(page, "$ echo too-late")
            card = pending_card(page)
            expect(page.locator("#inbox-count")).to_have_text("1")
            expect(card).to_have_attribute("data-state", "timeout")
            expect(card.locator(".card-outcome")).to_have_text("Timed out: denied")
            expect(card.get_by_role("button")).to_have_count(0)
            expect(page.locator("#inbox-count")).to_be_hidden()
            wait_turn_finished(page)
            screenshot(page, "timed-out")
            assert not page.js_errors
        finally:
            page.context.close()


def test_a_new_session_says_what_its_agent_can_do_until_the_first_prompt(
        page: Any, server: LiveServer) -> None:
    start_session(page, server)
    intro = page.locator("#intro")
    expect(intro).to_be_visible()
    for text in ("$ <command>", "triage · disk · memory · processes", "ask Deploy now? yes | no"):
        expect(intro).to_contain_text(text)
    screenshot(page, "new-session-intro")
    send(page, "hello")
    expect(intro).to_be_hidden()
    page.reload()  # a reload of a session that has had its first prompt shows none
    expect(page.locator("#conn")).to_have_text("Connected · SSE")
    expect(page.locator(".msg-user")).to_have_count(1)
    expect(intro).to_be_hidden()


def test_the_phone_header_keeps_one_line_and_shows_the_model(page: Any,
                                                            server: LiveServer) -> None:
    start_session(page, server)
    topbar = page.locator(".topbar")
    height = topbar.bounding_box()["height"]
    # What a long connection state and a model name do to the line: nothing to its height.
    page.evaluate("""() => {
      document.getElementById('conn-text').textContent =
        'Reconnecting in 30 s, then falling back to long-poll';
      document.getElementById('meta-agent').textContent = 'claude agent · ';
      document.getElementById('meta-model').textContent = 'claude-opus-5-5';
    }""")
    assert topbar.bounding_box()["height"] == height
    expect(page.locator("#meta-model")).to_be_visible()
    expect(page.locator("#meta-agent")).to_be_hidden()  # the phone shows the model alone
    screenshot(page, "phone-header-long-state")


def claude_commands() -> list[dict[str, Any]]:
    """The command list Tether makes of the Claude Code 2.1.328 recording."""
    from tether.agents.commands import CLAUDE_HEADLESS_REFUSED, command_list
    lines = (ROOT / "tests" / "fixtures" / "claude" / "slash.jsonl").read_text().splitlines()
    records = [json.loads(line)["msg"] for line in lines]
    reported = next(m["response"]["response"]["commands"] for m in records
                    if m["type"] == "control_response")
    names = next(m["slash_commands"] for m in records if m.get("subtype") == "init")
    return command_list(reported, names, CLAUDE_HEADLESS_REFUSED)


def test_slash_command_completion(page: Any, server: LiveServer) -> None:
    """Typing `/` lists the agent's commands, filtered as you type; arrows, Tab and Enter
    complete, Escape closes, a tap picks; a command the agent refuses headless is greyed with
    its reason and Send refuses it without a request (issue 17, item 6)."""
    start_session(page, server)
    box = page.get_by_label("Message", exact=True)
    listbox = page.get_by_role("listbox", name="Slash commands")
    box.fill("/")
    expect(listbox).to_contain_text("once it has answered a first message")
    box.press("Escape")
    expect(listbox).to_be_hidden()
    send(page, "hello")
    wait_turn_finished(page)

    box.fill("/")
    options = listbox.get_by_role("option")
    expect(options).to_have_count(6)
    expect(options.first).to_contain_text("/triage")
    box.press_sequentially("p")
    expect(options).to_have_count(2)  # /processes starts with it, /help contains it
    expect(options.nth(0)).to_have_attribute("aria-selected", "true")
    box.press("ArrowDown")
    expect(options.nth(1)).to_have_attribute("aria-selected", "true")
    expect(box).to_have_attribute("aria-activedescendant", "slash-opt-1")
    box.press("ArrowUp")
    box.press("Tab")
    expect(box).to_have_value("/processes ")
    expect(listbox).to_be_hidden()
    expect(box).to_be_focused()

    box.fill("/as")
    expect(options).to_have_count(1)
    expect(options.first).to_contain_text("<question>? <option> | <option>")
    box.fill("/he")
    box.press("Enter")  # completes; a second Enter sends
    expect(box).to_have_value("/help ")
    box.press("Enter")
    expect(box).to_have_value("")
    wait_turn_finished(page, turns=2)
    expect(page.locator('[data-kind="text"]').last).to_contain_text("I am Tether's local agent")

    # Claude Code's commands, as the runner lists them from the real CLI's answers.
    page.evaluate("""(commands) => Transcript.apply({id: Transcript.lastId + 1,
                                                     kind: "commands", commands})""",
                  claude_commands())
    prompts: list[str] = []
    page.on("request", lambda r: prompts.append(r.url) if r.url.endswith("/prompt") else None)
    box.fill("/")
    box.press_sequentially("pl")
    plan = options.filter(has_text="/plan")
    expect(plan).to_have_attribute("aria-disabled", "true")
    expect(plan).to_contain_text("Not available: plan mode is not available headless yet")
    box.fill("/mo")
    expect(options.first).to_contain_text("/model")
    expect(options.first).to_contain_text("<model>")
    box.fill("/co")  # /cost is an alias of /usage; /compact, /config, /context start with it
    expect(options.filter(has_text="/usage")).to_have_count(1)
    box.fill("/")
    box.press_sequentially("l")
    expect(options.filter(has_text="/login")).to_have_attribute("aria-disabled", "true")
    assert_phone_friendly(page)
    screenshot(page, "slash-completion")
    # A tap on a greyed one (aria-disabled: Playwright needs force) fills it in and says why.
    options.filter(has_text="/plan").click(force=True)
    expect(box).to_have_value("/plan")
    expect(page.locator("#composer-error")).to_have_text(
        "/plan is not available: plan mode is not available headless yet.")
    box.press("Enter")
    expect(page.locator("#composer-error")).to_have_text(
        "/plan is not sent: plan mode is not available headless yet.")
    expect(box).to_have_value("/plan")
    screenshot(page, "slash-refused")
    box.fill("/help")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#composer-error")).to_contain_text("/help is not sent")
    assert prompts == []
    assert not page.js_errors


def test_command_output_is_preformatted_and_clear_is_marked(page: Any,
                                                             server: LiveServer) -> None:
    """/cost's columns stay columns (escaped, in a <pre>), and /clear leaves a marker; each
    event on screen once, across a reload (issue 17, item 6)."""
    start_session(page, server)
    send(page, "hello")
    wait_turn_finished(page)
    cost = ("Estimated cost:        $0.0000\nTotal duration (API):  0s\n"
            "Usage:                 0 input, <b>0</b> output")
    page.evaluate("""(cost) => {
      let id = Transcript.lastId;
      const apply = (e) => Transcript.apply({id: ++id, ...e});
      apply({kind: "user", text: "/cost", turn: 2, ts: Date.now() / 1000});
      apply({kind: "text", text: cost, command_output: true});
      apply({kind: "result", is_error: false, duration_ms: 20, usage: {}});
      apply({kind: "turn_end", turn: 2, reason: "completed"});
      apply({kind: "user", text: "/clear", turn: 3, ts: Date.now() / 1000});
      apply({kind: "context_cleared", trigger: "clear"});
      apply({kind: "result", is_error: false, duration_ms: 20, usage: {}});
      apply({kind: "turn_end", turn: 3, reason: "completed"});
    }""", cost)
    pre = page.locator('[data-kind="text"] pre.command-output-text')
    expect(pre).to_have_count(1)
    assert pre.text_content() == cost  # columns, newlines and the angle brackets as sent
    assert pre.evaluate("n => getComputedStyle(n).whiteSpace") == "pre"
    expect(page.locator("#transcript b")).to_have_count(0)
    marker = page.locator('[data-kind="context_cleared"]')
    expect(marker).to_have_text("Context cleared: the agent starts afresh")
    assert_rendered_once(page)
    assert_phone_friendly(page)
    marker.scroll_into_view_if_needed()
    screenshot(page, "slash-output")
    assert not page.js_errors


def test_a_new_session_offers_the_commands_its_agent_listed_before(browser: Any,
                                                                   server: LiveServer) -> None:
    # The agent has answered once, in another session: a new session's composer lists its
    # commands before its own agent has run (GET /api/agents carries them).
    earlier = server.create_session(agent="local")["id"]
    server.api("POST", f"/api/sessions/{earlier}/prompt", json={"text": "hello"})
    server.wait_for_event(earlier, "turn_end")
    local = next(a for a in server.api("GET", "/api/agents").json()["agents"]
                 if a["name"] == "local")
    assert "/triage" in {f"/{c['name']}" for c in local["commands"]}
    page = new_page(browser, server)
    try:
        page.get_by_role("button", name="Open the session list").click()
        page.locator("#new-session-btn").click()
        box = page.get_by_label("Message", exact=True)
        box.fill("/")
        options = page.get_by_role("listbox", name="Slash commands").get_by_role("option")
        expect(options).to_have_count(6)
        expect(options.first).to_contain_text("/triage")
    finally:
        page.context.close()
