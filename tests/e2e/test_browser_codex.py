"""Codex in the browser, on a phone: the real codex CLI (against FakeOpenAI on loopback) picked
for a new session, its approval card with the command, where it runs and Codex's own options
("Allow", "Allow for this session", "Deny"), a file change shown as a diff, a reason given by
the model. Screenshots in test-artifacts/codex-*.png."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import screenshot
from tests.e2e.live import LiveServer
from tests.e2e.test_browser import assert_phone_friendly, pending_card, send, wait_turn_finished
from tests.e2e.test_codex import codex_settings
from tests.fakes.openai_api import (
    FakeOpenAI,
    Reply,
    all_user_texts,
    command_reply,
    last_function_output,
    text_reply,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.codex,
              pytest.mark.timeout(180)]

BASH = "touch created.txt && echo touched"
PATCH = ("apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: hello.txt\n+hello\n+world\n"
         "*** End Patch\nEOF\n")
REASON = "May I create created.txt outside the sandbox?"


def script(body: dict[str, Any]) -> Reply:
    texts = all_user_texts(body)
    latest = texts[-1] if texts else ""
    output = last_function_output(body)
    if output is not None:
        return text_reply("Tool said: " + (output.strip().splitlines() or [""])[-1])
    if latest.startswith("[bash]"):
        return command_reply("I'll create the file.", BASH)
    if latest.startswith("[patch]"):
        return command_reply("I'll add hello.txt.", PATCH)
    if latest.startswith("[escalate]"):
        return command_reply("", BASH, REASON)
    return text_reply(f"You said: {latest}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with FakeOpenAI(script) as api:
        workdir = tmp_path_factory.mktemp("codex-browser")
        # The server's default agent stays `local`: the person picks codex.
        with LiveServer(workdir, **codex_settings(api, workdir, TETHER_AGENT="local")) as live:
            yield live


def new_codex_session(page: Any, server: LiveServer, mode: str | None = None) -> Path:
    page.goto(server.url + "/")
    page.get_by_role("button", name="Open the session list").click()
    page.locator("#agent-select").select_option("codex")
    if mode is not None:
        page.locator("#new-options summary").click()
        # Codex's modes in words; full-access (nobody asked) only with TETHER_ALLOW_BYPASS.
        expect(page.locator("#new-mode option")).to_have_text(
            ["Ask first", "Sandboxed, ask to leave it", "Read-only"])
        page.locator("#new-mode").select_option(mode)
    with page.expect_response(lambda r: r.request.method == "POST"
                              and r.url.endswith("/api/sessions")) as response:
        page.locator("#new-session-btn").click()
    assert response.value.request.post_data_json["agent"] == "codex"
    expect(page).to_have_url(re.compile(r"#s=[0-9a-f]+$"))
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    sid = page.url.rsplit("#s=", 1)[1]
    return (server.workdir / "data" / "sessions" / sid).resolve()


def test_allow_a_command_from_the_card(page: Any, server: LiveServer) -> None:
    workspace = new_codex_session(page, server)
    send(page, "[bash] create the file")
    card = pending_card(page)
    expect(card).to_contain_text("Allow Bash?")
    expect(page.locator('[data-kind="tool_use"] .tool-input')).to_contain_text(BASH)
    # Where it runs: the session's own folder, in words; the path on hover.
    expect(card.locator(".card-cwd")).to_have_text("in the session's folder")
    expect(card.locator(".card-cwd")).to_have_attribute("title", str(workspace))
    buttons = card.locator(".card-actions button")
    expect(buttons).to_have_text(["Allow", "Allow for this session", "Deny"])
    # Codex answers with its option alone: no message box, no edit-then-allow.
    expect(card.locator(".card-message")).to_have_count(0)
    expect(card.get_by_role("button", name="Edit the command, then allow")).to_have_count(0)
    assert_phone_friendly(page)
    screenshot(page, "codex-approval-phone")
    card.get_by_role("button", name="Allow", exact=True).click()
    expect(card).to_have_attribute("data-state", "allowed")
    expect(card.locator(".card-outcome")).to_have_text("Allowed by you")
    wait_turn_finished(page)
    expect(page.locator('[data-kind="text"]').last).to_have_text("Tool said: touched")
    expect(page.locator(".tool-output").filter(has_text="touched")).to_have_count(1)
    assert (workspace / "created.txt").exists()
    screenshot(page, "codex-allowed-phone")
    assert not page.js_errors


def test_allow_for_this_session_says_so(page: Any, server: LiveServer) -> None:
    workspace = new_codex_session(page, server)
    send(page, "[bash] create the file")
    card = pending_card(page)
    card.get_by_role("button", name="Allow for this session").click()
    expect(card.locator(".card-outcome")).to_have_text("Allowed by you (Allow for this session)")
    wait_turn_finished(page)
    assert (workspace / "created.txt").exists()
    assert not page.js_errors


def test_a_file_change_card_shows_the_diff(page: Any, server: LiveServer) -> None:
    workspace = new_codex_session(page, server)
    send(page, "[patch] add hello.txt")
    card = pending_card(page)
    expect(card).to_contain_text("Allow apply_patch?")
    # The new file, relative to the workspace, its lines added, right above the card.
    block = page.locator('[data-kind="tool_use"]').last
    expect(block.locator(".tool-summary")).to_have_text("new hello.txt")
    expect(block.locator(".diff .diff-add")).to_have_text(["+ hello\n", "+ world\n"])
    expect(card.locator(".card-diff")).to_have_count(0)  # not twice
    assert_phone_friendly(page)
    screenshot(page, "codex-file-change-phone")
    card.get_by_role("button", name="Deny").click()
    expect(card).to_have_attribute("data-state", "denied")
    wait_turn_finished(page)
    assert not (workspace / "hello.txt").exists()
    # The card's "Denied by you" stands for the declined result: the diff is not repeated.
    expect(card.locator(".card-outcome")).to_have_text("Denied by you")
    expect(block.locator(".tool-output")).to_have_count(0)
    expect(block.locator(".card-cwd")).to_have_count(0)  # a change has paths, not a cwd
    screenshot(page, "codex-file-change-denied-phone")
    assert not page.js_errors


def test_the_models_reason_shows_on_the_card(page: Any, server: LiveServer) -> None:
    workspace = new_codex_session(page, server, mode="on-request")
    send(page, "[escalate] create it")
    card = pending_card(page)
    expect(card.locator(".card-desc")).to_have_text(REASON)
    expect(page.get_by_role("button", name="Model and permission mode")).to_contain_text(
        "Sandboxed, ask to leave it")
    screenshot(page, "codex-reason-phone")
    card.get_by_role("button", name="Allow", exact=True).click()
    wait_turn_finished(page)
    assert (workspace / "created.txt").exists()
    assert not page.js_errors
