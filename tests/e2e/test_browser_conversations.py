"""Conversations started elsewhere (issue 18, item 4) in a real browser at phone size: the
folder picker lists the conversations the real Claude Code CLI saved in a folder, "Continue"
opens a session on one, its earlier exchange shows as read-only history, and a new prompt
goes on from it. The CLI runs against the fake Messages API, as in test_claude_conversations."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import new_page, screenshot
from tests.e2e.live import LiveServer, claude_bin, fake_api_env
from tests.e2e.test_claude_conversations import FIRST, script
from tests.fakes.anthropic_api import FakeAnthropic, all_user_texts

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.claude,
              pytest.mark.timeout(180)]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[dict[str, Any]]:
    root = (tmp_path / "projects").resolve()
    folder = root / "my_app"
    (folder / "src").mkdir(parents=True)
    (root / "other").mkdir()
    home = tmp_path / "home"
    home.mkdir()
    with FakeAnthropic(script) as api:
        env = fake_api_env(api.base_url, home)
        for args in ([FIRST], ["run echo please", "--allowedTools", "Bash(echo *)"]):
            done = subprocess.run([claude_bin(), "-p", *args], cwd=folder,
                                  env={**env, "PATH": os.environ.get("PATH", "")},
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=60, check=False)
            assert done.returncode == 0, done.stderr
        with LiveServer(tmp_path, TETHER_AGENT="claude", TETHER_CLAUDE_BIN=claude_bin(),
                        TETHER_PROJECT_ROOTS=str(root), TETHER_AGENT_IDLE_TIMEOUT=0,
                        **env) as server:
            yield {"server": server, "api": api, "root": root, "folder": folder}


def open_folder(page: Any, root: Path, name: str) -> Any:
    menu = page.get_by_role("button", name="Open the session list")
    if menu.is_visible() and menu.get_attribute("aria-expanded") != "true":
        menu.click()
    page.locator("#agent-select").select_option("claude")
    page.locator("#new-session-btn").click()
    dialog = page.get_by_role("dialog", name="Open a session in…")
    expect(dialog).to_be_visible()
    # Typing a folder's absolute path goes there (once the first listing is in: it clears
    # the filter when it arrives).
    expect(dialog.locator(".picker-row").first).to_be_visible()
    dialog.locator("#picker-filter").fill(str(root / name))
    dialog.locator("#picker-filter").press("Enter")
    expect(dialog.locator("#picker-path")).to_have_text(str(root / name))
    return dialog


def test_continue_a_terminal_conversation_from_the_picker(browser: Any,
                                                          setup: dict[str, Any]) -> None:
    server: LiveServer = setup["server"]
    page = new_page(browser, server)
    try:
        page.goto(server.url + "/")
        dialog = open_folder(page, setup["root"], "my_app")
        rows = dialog.locator(".picker-conv-row")
        expect(dialog.locator(".picker-heading").first).to_have_text("Continue a conversation")
        expect(rows).to_have_count(2)
        expect(rows.first.locator(".picker-name")).to_have_text("run echo please")
        expect(rows.nth(1).locator(".picker-name")).to_have_text(FIRST)
        expect(rows.first.locator(".picker-sub")).to_contain_text("3 messages")
        expect(dialog.locator(".picker-heading").nth(1)).to_have_text("Folders")
        screenshot(page, "conversations-picker-phone")

        rows.first.get_by_role("button", name="Continue").click()
        expect(dialog).to_be_hidden()
        transcript = page.locator("#transcript")
        expect(transcript.locator(".history-rule").first).to_have_text(
            "Earlier in this conversation")
        history = transcript.locator(".history")
        expect(history).to_have_count(4)
        expect(history.nth(0)).to_have_text("run echo please")
        expect(history.nth(0)).to_have_class(re.compile(r"\bmsg-user\b"))
        expect(history.nth(2).locator(".tool-summary")).to_have_text("echo from-the-terminal")
        expect(history.nth(3)).to_contain_text("Tool said: from-the-terminal")
        expect(page.locator("#intro")).to_be_hidden()
        screenshot(page, "conversations-history-phone")

        page.locator("#prompt").fill("And now?")
        page.locator("#send-btn").click()
        expect(transcript.locator(".history-end")).to_have_text("Continued here")
        expect(transcript.locator(".msg-agent:not(.history)").last).to_contain_text(
            "Noted: And now?")
        assert "run echo please" in all_user_texts(setup["api"].requests[-1])
        screenshot(page, "conversations-continued-phone")
        assert not page.js_errors
    finally:
        page.context.close()


def test_the_picker_and_history_are_accessible(browser: Any, setup: dict[str, Any]) -> None:
    from tests.e2e.test_browser_ui import AXE, axe_violations

    if not AXE.exists():
        pytest.skip(f"{AXE} is missing: run `make axe-core` (make test installs it)")
    server: LiveServer = setup["server"]
    page = new_page(browser, server, bypass_csp=True)
    try:
        page.goto(server.url + "/")
        dialog = open_folder(page, setup["root"], "my_app")
        expect(dialog.locator(".picker-conv-row")).to_have_count(2)
        picker = axe_violations(page)
        dialog.locator(".picker-conv-row").nth(1).get_by_role("button", name="Continue").click()
        expect(page.locator("#transcript .history")).to_have_count(2)
        shown = axe_violations(page)
        assert not picker and not shown, f"accessibility violations: {picker} {shown}"
        # The conversation this session continues: "Open" goes back to it, not a second one.
        sid = page.evaluate("Sessions.currentId")
        dialog = open_folder(page, setup["root"], "my_app")
        row = dialog.locator(".picker-conv-row").nth(1)
        expect(row.locator(".picker-pick")).to_have_text("Open")
        expect(dialog.locator(".picker-conv-row").first.locator(".picker-pick")).to_have_text(
            "Continue")
        row.locator(".picker-pick").click()
        expect(dialog).to_be_hidden()
        assert page.evaluate("Sessions.currentId") == sid
        assert len(server.api("GET", "/api/sessions").json()["sessions"]) == 1
        # A folder with none: no conversation heading, just its folders.
        dialog = open_folder(page, setup["root"], "other")
        expect(dialog.locator(".picker-conv-row")).to_have_count(0)
        assert not page.js_errors
    finally:
        page.context.close()
