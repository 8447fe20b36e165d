"""Issue 18's "done means", as a person would do it, in one run: the real Claude Code CLI
(against the fake Messages API) has saved a conversation in a git repository under
``TETHER_PROJECT_ROOTS``; on a phone the person continues it from the folder picker, switches
to Plan mode and approves the plan, lets it edit in accept-edits mode (no approval asked),
sends a screenshot of the bug, reviews the diff in the Changes panel; a desktop tab shows the
same session. Screenshots in test-artifacts/own-code-*.png."""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.e2e.browser import new_page, screenshot
from tests.e2e.live import LiveServer, claude_bin, claude_settings, fake_api_env
from tests.e2e.test_browser import pending_card, send, wait_turn_finished
from tests.fakes.anthropic_api import (
    FakeAnthropic,
    Reply,
    all_user_texts,
    last_tool_result,
    text_reply,
    tool_reply,
    tool_result_text,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.claude,
              pytest.mark.timeout(240)]

PLAN = "# Fix the off-by-one\n\n1. Change `range(n)` to `range(n + 1)` in **bug.py**"
DESKTOP = {"width": 1280, "height": 860}


def script(body: dict[str, Any]) -> Reply:
    """The fake model, on the newest tagged prompt: ``[remember]`` (the terminal),
    ``[plan]``, ``[fix] <path>`` (a Write), ``[look]`` (it says whether it got an image)."""
    result = last_tool_result(body)
    if result is not None:
        return text_reply("Tool said: " + tool_result_text(result)[:80])
    # Claude Code 2.1.328 follows an image with a text block of its own, "[Image: source:
    # <a copy under /tmp>]": not a prompt.
    prompt = next((t for t in reversed(all_user_texts(body))
                   if t.startswith("[") and not t.startswith("[Image")), "")
    if prompt.startswith("[plan]"):
        return tool_reply("Here is my plan.", "ExitPlanMode", {"plan": PLAN})
    if prompt.startswith("[fix] "):
        return tool_reply("Fixing it.", "Write", {"file_path": prompt[6:].strip(),
                                                  "content": "for i in range(n + 1):\n"
                                                             "    print(i)\n"})
    if prompt.startswith("[look]"):
        last = body["messages"][-1]["content"]
        images = [b for b in last if isinstance(b, dict) and b.get("type") == "image"] \
            if isinstance(last, list) else []
        return text_reply(f"I see {len(images)} screenshot(s) of the bug.")
    return text_reply("Noted: " + prompt)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[dict[str, Any]]:
    root = (tmp_path / "src").resolve()
    repo = root / "app"
    repo.mkdir(parents=True)
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "me@example.com"],
                 ["config", "user.name", "Me"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    (repo / "bug.py").write_text("for i in range(n):\n    print(i)\n")
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", "start"], check=True)
    home = tmp_path / "home"
    home.mkdir()
    with FakeAnthropic(script) as api:
        # At the desk: a conversation started in the terminal, in the repository.
        done = subprocess.run([claude_bin(), "-p", "[remember] the loop in bug.py is off"],
                              cwd=repo, env={**fake_api_env(api.base_url, home),
                                             "PATH": os.environ.get("PATH", "")},
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        with LiveServer(tmp_path, **claude_settings(api.base_url, home,
                                                    TETHER_PROJECT_ROOTS=str(root),
                                                    TETHER_AGENT_IDLE_TIMEOUT=120)) as server:
            yield {"server": server, "api": api, "root": root, "repo": repo,
                   "tmp": tmp_path}


def test_a_phone_continues_plans_edits_shows_a_screenshot_and_reviews_the_diff(
        browser: Any, setup: dict[str, Any]) -> None:
    server: LiveServer = setup["server"]
    repo: Path = setup["repo"]
    phone = new_page(browser, server)
    desk = None
    try:
        phone.goto(server.url + "/")
        # The folder picker: into the repository, where the terminal's conversation waits.
        phone.get_by_role("button", name="Open the session list").click()
        phone.locator("#agent-select").select_option("claude")
        phone.locator("#new-session-btn").click()
        dialog = phone.get_by_role("dialog", name="Open a session in…")
        expect(dialog.locator(".picker-row").first).to_be_visible()
        dialog.locator("#picker-filter").fill(str(repo))
        dialog.locator("#picker-filter").press("Enter")
        conversations = dialog.locator(".picker-conv-row")
        expect(conversations).to_have_count(1)
        expect(conversations.first).to_contain_text("the loop in bug.py is off")
        conversations.first.get_by_role("button", name="Continue").click()
        expect(dialog).to_be_hidden()
        expect(phone.locator(".history").first).to_contain_text("the loop in bug.py is off")
        sid = phone.url.rsplit("#s=", 1)[1]

        # Plan mode, one tap; the plan as Markdown; approved.
        plan = phone.get_by_role("button", name="Plan", exact=True)
        plan.click()
        expect(plan).to_have_attribute("aria-pressed", "true")
        send(phone, "[plan] how would you fix it?")
        card = pending_card(phone)
        expect(card.locator(".plan-body h1, .plan-body h2").first).to_contain_text(
            "Fix the off-by-one")
        screenshot(phone, "own-code-plan")
        card.get_by_role("button", name="Approve plan").click()
        expect(card).to_have_attribute("data-state", "allowed")
        expect(plan).to_have_attribute("aria-pressed", "false")  # Claude left Plan mode
        wait_turn_finished(phone)

        # Accept-edits mode: the edit runs with nobody asked.
        phone.get_by_role("button", name="Model and permission mode").click()
        with phone.expect_response(lambda r: r.request.method == "PATCH"):
            phone.locator("#mode-panel").get_by_label("Permission mode").select_option(
                "acceptEdits")
        phone.keyboard.press("Escape")
        send(phone, f"[fix] {repo / 'bug.py'}")
        wait_turn_finished(phone)
        assert "range(n + 1)" in (repo / "bug.py").read_text()
        kinds = [e["kind"] for e in server.events(sid, 0)["events"]]
        assert kinds.count("approval_request") == 1  # the plan's only

        # A screenshot of the bug, from the phone.
        shot = setup["tmp"] / "bug.png"
        picture = io.BytesIO()
        Image.new("RGB", (90, 160), (240, 240, 240)).save(picture, "PNG")
        shot.write_bytes(picture.getvalue())
        phone.locator("#attach-input").set_input_files(str(shot))
        expect(phone.locator("#attachments img")).to_have_count(1)
        send(phone, "[look] this is what I see")
        expect(phone.locator(".msg-agent").last).to_contain_text("I see 1 screenshot(s)")

        # The diff, in the Changes panel.
        phone.get_by_role("button", name="Changes: the files the agent changed").click()
        panel = phone.get_by_role("dialog", name="Changes")
        row = panel.locator(".change-summary").filter(has_text="bug.py")
        expect(row).to_contain_text("+1")
        row.click()
        expect(panel.locator(".code-add .code-text")).to_contain_text(
            ["+for i in range(n + 1):"])
        screenshot(phone, "own-code-changes")
        panel.get_by_role("button", name="Close the changes").click()

        # The same session in a desktop tab: history, the approved plan, the image, the fix.
        desk = new_page(browser, server, viewport=DESKTOP)
        desk.goto(f"{server.url}/#s={sid}")
        expect(desk.locator(".history").first).to_contain_text("the loop in bug.py is off")
        expect(desk.locator('.card[data-state="allowed"]')).to_have_count(1)
        expect(desk.locator(".msg-user .bubble-images img")).to_have_count(1)
        expect(desk.locator(".msg-agent").last).to_contain_text("I see 1 screenshot(s)")
        screenshot(desk, "own-code-desktop")
        assert not phone.js_errors and not desk.js_errors
    finally:
        phone.context.close()
        if desk is not None:
            desk.context.close()
