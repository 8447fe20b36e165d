"""ACP agents in the browser, on a phone: the real Gemini CLI (``gemini --acp`` against
FakeGemini) asks permission and the card shows the tool call's title and kind, with the
agent's own options as its buttons; the scripted ACP agent (tests/fixtures/acp_agent.py,
declared in ``TETHER_AGENT_SERVERS``) shows a plan as a list. Screenshots in
test-artifacts/acp-*.png."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import new_page, screenshot
from tests.e2e.live import LiveServer, gemini_bin
from tests.e2e.test_browser import (
    assert_phone_friendly,
    assert_rendered_once,
    pending_card,
    send,
    wait_turn_finished,
)
from tests.e2e.test_gemini import MODEL, script
from tests.fakes.gemini_api import FakeGemini
from tests.fakes.record_gemini import gemini_env

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.gemini,
              pytest.mark.timeout(240)]

AGENT = Path(__file__).parents[1] / "fixtures" / "acp_agent.py"


@pytest.fixture(scope="module")
def api() -> Iterator[FakeGemini]:
    with FakeGemini(script) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(api: FakeGemini, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("acp-browser")
    home = workdir / "home"
    home.mkdir()
    servers = workdir / "agents.json"
    servers.write_text(json.dumps({"scripted": {
        "command": sys.executable, "args": [str(AGENT), "--state", str(workdir / "state")],
        "env": {"PYTHONUNBUFFERED": "1"}}}))
    with LiveServer(workdir, **gemini_env(api, str(home)), TETHER_AGENT="gemini",
                    TETHER_GEMINI_BIN=gemini_bin(),
                    TETHER_AGENT_SERVERS=str(servers)) as live:
        yield live


@pytest.fixture
def page(browser: Any, server: LiveServer) -> Iterator[Any]:
    page = new_page(browser, server)
    yield page
    page.context.close()


def start(page: Any, server: LiveServer, agent: str, model: str | None = None) -> str:
    """A new session of ``agent`` (``model`` picked under "Model and mode") from the drawer;
    returns its id."""
    page.goto(server.url + "/")
    menu = page.get_by_role("button", name="Open the session list")
    if menu.is_visible():
        menu.click()
    page.locator("#agent-select").select_option(agent)
    if model is not None:
        page.locator("#new-options summary").click()
        page.locator("#new-model").select_option(model)
    page.locator("#new-session-btn").click()
    expect(page).to_have_url(re.compile(r"#s=[0-9a-f]+$"))
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    return str(page.url.rsplit("#s=", 1)[1])


def workspace_of(server: LiveServer, sid: str) -> Path:
    return Path(server.api("GET", f"/api/sessions/{sid}").json()["cwd"])


def test_gemini_asks_and_the_card_offers_its_own_options(page: Any,
                                                          server: LiveServer) -> None:
    sid = start(page, server, "gemini", MODEL)
    assert server.api("GET", f"/api/sessions/{sid}").json()["model"] == MODEL
    send(page, "[bash] make the file")
    card = pending_card(page)
    expect(card.locator(".card-title")).to_have_text("touch created.txt && echo touched")
    block = page.locator(".item.tool").filter(has=card)
    expect(block.locator(".tool-name")).to_have_text("execute")
    # A shell call's title is its command, shown as one; never the call's input as JSON.
    expect(block.locator(".tool-input")).to_have_text("$ touch created.txt && echo touched")
    expect(block).not_to_contain_text('"title"')
    buttons = card.locator(".btn-row").first.get_by_role("button")
    expect(buttons).to_have_text(["Allow for this session", "Allow", "Reject"],
                                 use_inner_text=True)
    assert_phone_friendly(page)
    screenshot(page, "acp-gemini-permission-phone")
    card.get_by_role("button", name="Allow", exact=True).click()
    expect(card).to_have_attribute("data-state", "allowed")
    wait_turn_finished(page)
    assert (workspace_of(server, sid) / "created.txt").exists()
    expect(page.locator(".msg-agent").last).to_contain_text("Tool said:")
    assert_rendered_once(page)
    screenshot(page, "acp-gemini-allowed-phone")

    # A file write: the card shows the change as a diff.
    target = workspace_of(server, sid) / "notes.txt"
    send(page, f"[write {target}] write the notes")
    card = pending_card(page)
    expect(card.locator(".card-title")).to_have_text("Writing to notes.txt")
    expect(page.locator(".item.tool").filter(has=card).locator(".tool-summary")).to_have_text(
        "Writing to notes.txt")
    # The change as a coloured diff, the file named in the workspace, a new file as such.
    diff = card.locator(".card-diff")
    expect(diff.locator(".diff-skip")).to_have_text(
        ["--- /dev/null", "+++ b/notes.txt", "@@ -0,0 +1,2 @@"])
    expect(diff.locator(".diff-add")).to_have_text(["+line one", "+line two"])
    screenshot(page, "acp-gemini-write-phone")
    # The agent's "for this session" option: the outcome says so, in the agent's words.
    card.get_by_role("button", name="Allow for this session", exact=True).click()
    expect(card.locator(".card-outcome")).to_have_text(
        "Allowed by you (Allow for this session)")
    wait_turn_finished(page, 2)
    assert target.read_text() == "line one\nline two\n"
    # Gemini CLI takes "Allow for this session" of an edit as its autoEdit mode, and says
    # so: the header follows, in words.
    chip = page.get_by_role("button", name="Model and permission mode")
    expect(chip).to_contain_text("Auto edit")
    expect(page.locator(".notice").filter(has_text="changed by the agent")).to_have_count(1)
    # The finished call's diff is the one approved: folded, not shown twice.
    done = page.locator(".item.tool").filter(has=card).locator(".tool-output")
    expect(done.locator("details.fold summary")).to_have_text("Changes made (as approved above)")
    expect(done.locator(".diff")).to_be_hidden()
    screenshot(page, "acp-gemini-written-phone")
    # Without TETHER_ALLOW_BYPASS the picker offers no mode that asks nobody (yolo).
    chip.click()
    options = page.locator("#mode-panel").get_by_label("Permission mode").locator("option")
    assert options.all_text_contents() == ["Ask first", "Auto edit", "Plan"]
    screenshot(page, "acp-gemini-modes-phone")
    assert not page.js_errors


def test_the_scripted_agents_plan_and_diff(page: Any, server: LiveServer) -> None:
    sid = start(page, server, "scripted")
    send(page, "[plan] make a plan")
    wait_turn_finished(page)
    plan = page.locator(".item.plan")
    expect(plan).to_have_count(1)
    expect(plan.locator("li")).to_have_text(["Look around", "Make the change"])
    screenshot(page, "acp-scripted-plan-phone")
    send(page, "[tool] write it")
    card = pending_card(page)
    expect(card.get_by_role("button")).to_contain_text(["Allow", "Always", "Reject"])
    block = page.locator(".item.tool").filter(has=card)
    expect(block.locator(".tool-summary")).to_have_text("Write made.txt")
    expect(block.locator("details.fold summary").first).to_contain_text("Input")
    screenshot(page, "acp-scripted-tool-phone")
    card.get_by_role("button", name="Allow", exact=True).click()
    wait_turn_finished(page, 2)
    assert (workspace_of(server, sid) / "made.txt").is_file()
    assert_rendered_once(page)
    screenshot(page, "acp-scripted-done-phone")
    assert not page.js_errors
