"""The folder picker (issue 18, item 1) in a real browser at phone size: recent folders first,
type-ahead, going into a folder, opening a session there, the warning for a folder another
session is running in, and the folder in the header and the session list."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import new_page, screenshot
from tests.e2e.live import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "projects"
    (root / "alpha" / ".git").mkdir(parents=True)
    (root / "alpha" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "beta").mkdir()
    (root / "gamma" / "inner").mkdir(parents=True)
    return root.resolve()


@pytest.fixture
def server(tmp_path: Path, root: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path, TETHER_PROJECT_ROOTS=str(root)) as live:
        yield live


@pytest.fixture
def page(browser: Any, server: LiveServer) -> Iterator[Any]:
    page = new_page(browser, server)
    yield page
    page.context.close()


def open_picker(page: Any) -> Any:
    menu = page.get_by_role("button", name="Open the session list")
    if menu.is_visible() and menu.get_attribute("aria-expanded") != "true":
        menu.click()
    page.locator("#agent-select").select_option("local")
    page.locator("#new-session-btn").click()
    dialog = page.get_by_role("dialog", name="Open a session in…")
    expect(dialog).to_be_visible()
    return dialog


def test_pick_a_folder_open_a_session_there_and_see_it(page: Any, server: LiveServer,
                                                       root: Path) -> None:
    # A session already at work in beta: waiting for an approval, so "running" there.
    busy = server.api("POST", "/api/sessions", json={"cwd": str(root / "beta"),
                                                     "title": "Busy one"}).json()
    server.api("POST", f"/api/sessions/{busy['id']}/prompt", json={"text": "$ true"})
    deadline = time.monotonic() + 10
    while server.api("GET", f"/api/sessions/{busy['id']}").json()["state"] != "waiting":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    page.goto(server.url + "/")

    dialog = open_picker(page)
    rows = dialog.locator(".picker-row")
    # Recent first (beta, with its running badge), then the root.
    expect(dialog.locator(".picker-heading").first).to_have_text("Recent")
    expect(rows.first).to_contain_text("beta")
    expect(rows.first.locator(".picker-busy")).to_have_text("running")
    expect(rows.nth(1).locator(".picker-name")).to_have_text("projects")
    expect(rows.nth(1).locator(".picker-sub")).to_have_text(str(root))

    # Into the root, then type-ahead.
    rows.nth(1).locator(".picker-go").click()
    expect(dialog.locator("#picker-path")).to_have_text(str(root))
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("⎇ main")  # alpha is a git work tree on main
    dialog.get_by_label("Filter folders").fill("gam")
    expect(rows).to_have_count(1)
    dialog.get_by_label("Filter folders").press("Enter")  # the one match: go into it
    expect(dialog.locator("#picker-path")).to_have_text(str(root / "gamma"))
    expect(rows).to_have_count(1)
    expect(dialog.locator("#picker-warn")).to_be_hidden()
    screenshot(page, "folder-picker-phone")
    with page.expect_response(lambda r: r.request.method == "POST"
                              and r.url.endswith("/api/sessions")) as response:
        dialog.get_by_role("button", name="Open session here").click()
    sent = response.value.request.post_data_json
    assert {k: sent[k] for k in ("agent", "cwd")} == {"agent": "local",
                                                     "cwd": str(root / "gamma")}
    assert set(sent) <= {"agent", "cwd", "client"}  # the tab's label, for the mode events
    expect(page).to_have_url(re.compile(r"#s=[0-9a-f]+$"))
    sid = page.url.rsplit("#s=", 1)[1]
    assert server.api("GET", f"/api/sessions/{sid}").json()["cwd"] == str(root / "gamma")
    expect(dialog).to_be_hidden()
    expect(page.locator("#meta-cwd")).to_have_text("gamma")
    expect(page.locator("#meta-cwd")).to_be_visible()
    screenshot(page, "folder-in-header-phone")
    page.get_by_role("button", name="Open the session list").click()
    expect(page.locator(".session-item[aria-current=true] .session-sub")).to_contain_text(
        "gamma · local")

    # The busy folder: going into it warns; one tap on a recent folder's Open starts there.
    dialog = open_picker(page)
    expect(rows.first).to_contain_text("gamma")  # the newest session's folder comes first
    expect(rows.filter(has_text="beta").first.locator(".picker-busy")).to_be_visible()
    screenshot(page, "folder-picker-recent-phone")
    rows.filter(has_text="beta").first.locator(".picker-go").click()
    expect(dialog.locator("#picker-warn")).to_contain_text(
        "Another session is already running in this folder: Busy one")
    screenshot(page, "folder-picker-busy-phone")
    dialog.locator("#picker-up").click()  # to the root
    expect(dialog.locator("#picker-path")).to_have_text(str(root))
    dialog.locator("#picker-up").click()  # to the top: recent folders and the roots
    expect(dialog.locator(".picker-heading").first).to_have_text("Recent")
    recent_gamma = rows.filter(has_text="gamma").first
    recent_gamma.get_by_role("button", name="Open a session in gamma").click()
    expect(dialog).to_be_hidden()
    # The new session is shown (the header said gamma already: the first one's folder).
    expect(page).not_to_have_url(re.compile(f"#s={sid}$"))
    expect(page.locator("#meta-cwd")).to_have_text("gamma")
    sessions = server.api("GET", "/api/sessions").json()["sessions"]
    assert [s["cwd"] for s in sessions] == [str(root / "gamma")] * 2 + [str(root / "beta")]
    assert not page.js_errors


def test_without_roots_new_session_just_creates(browser: Any, tmp_path: Path) -> None:
    with LiveServer(tmp_path) as server:
        page = new_page(browser, server)
        try:
            page.goto(server.url + "/")
            page.get_by_role("button", name="Open the session list").click()
            page.locator("#new-session-btn").click()
            expect(page).to_have_url(re.compile(r"#s=[0-9a-f]+$"))
            expect(page.get_by_role("dialog", name="Open a session in…")).to_be_hidden()
            expect(page.locator("#meta-cwd")).to_have_text("")
            assert not page.js_errors
        finally:
            page.context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_picker_is_accessible(browser: Any, server: LiveServer, root: Path,
                                  scheme: str) -> None:
    from tests.e2e.test_browser_ui import AXE, axe_violations

    if not AXE.exists():
        pytest.skip(f"{AXE} is missing: run `make axe-core` (make test installs it)")
    server.create_session(cwd=str(root / "alpha"))  # a recent folder
    page = new_page(browser, server, color_scheme=scheme, bypass_csp=True)
    try:
        page.goto(server.url + "/")
        dialog = open_picker(page)
        expect(dialog.locator(".picker-heading").first).to_have_text("Recent")
        top = axe_violations(page)
        dialog.locator(".picker-row").nth(1).locator(".picker-go").click()
        expect(dialog.locator("#picker-path")).to_have_text(str(root))
        inside = axe_violations(page)
        screenshot(page, f"a11y-{scheme}-folder-picker")
        assert not top and not inside, f"accessibility violations: {top} {inside}"
        assert not page.js_errors
    finally:
        page.context.close()
