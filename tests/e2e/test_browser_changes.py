"""The Changes panel (issue 18, item 3) in a real browser, at phone size and on a desktop: a
session in a git repository, the agent's command changing a file while the panel is open,
the panel refreshing by itself, a diff with line numbers that never scrolls the page
sideways, and a file opened read-only."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import new_page, screenshot
from tests.e2e.live import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

LONG = "x = '" + "a-very-long-line-" * 20 + "'"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = (tmp_path / "projects" / "app").resolve()
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "T")
    (repo / "main.py").write_text("".join(f"line {n}\n" for n in range(1, 40)))
    (repo / "old.txt").write_text("old\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "start")
    return repo


@pytest.fixture
def server(tmp_path: Path, repo: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path, TETHER_PROJECT_ROOTS=str(repo.parent)) as live:
        yield live


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_the_panel_follows_the_agents_changes(browser: Any, server: LiveServer, repo: Path,
                                              size: str) -> None:
    viewport = {"width": 390, "height": 844} if size == "phone" else {"width": 1280,
                                                                      "height": 860}
    page = new_page(browser, server, viewport=viewport)
    try:
        session = server.create_session(agent="local", cwd=str(repo))
        # Changed before the panel opens: a line edited, a file gone, a new one with a long line.
        text = (repo / "main.py").read_text().replace("line 20\n", "line twenty\n")
        (repo / "main.py").write_text(text)
        (repo / "old.txt").unlink()
        (repo / "new.py").write_text(LONG + "\n")
        page.goto(f"{server.url}/#s={session['id']}")
        page.get_by_role("button", name="Changes: the files the agent changed").click()
        panel = page.get_by_role("dialog", name="Changes")
        expect(panel).to_be_visible()
        rows = panel.locator(".change-summary")
        expect(rows).to_have_count(3)
        expect(panel.locator("#changes-note")).to_contain_text("3 files changed, against")
        expect(rows.nth(0)).to_contain_text("main.py")
        expect(rows.nth(0)).to_contain_text("+1")
        expect(rows.nth(1)).to_contain_text("new.py")
        expect(rows.nth(2)).to_contain_text("deleted")

        # main.py unfolded: its hunk, numbered as in the file.
        rows.nth(0).click()
        diff = panel.locator(".change").nth(0).locator(".code")
        expect(diff.locator(".code-del")).to_have_count(1)
        removed = diff.locator(".code-del")
        expect(removed.locator(".code-no").first).to_have_text("20")
        expect(removed.locator(".code-text")).to_have_text("-line 20")
        expect(diff.locator(".code-add .code-no").nth(1)).to_have_text("20")

        # new.py: its long line wraps; the page never scrolls sideways.
        rows.nth(1).click()
        expect(panel.locator(".change").nth(1).locator(".code-add")).to_have_count(1)
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], widths
        shot = screenshot(page, f"changes-{size}")
        assert shot.stat().st_size > 0

        # The agent changes a file while the panel is open: it refreshes by itself.
        server.api("POST", f"/api/sessions/{session['id']}/prompt",
                   json={"text": "$ echo added-by-agent > agent.txt"})
        server.api("POST", f"/api/sessions/{session['id']}/approvals/"
                   f"{wait_approval(server, session['id'])}", json={"decision": "allow"})
        expect(rows).to_have_count(4)
        expect(panel.locator(".change-path", has_text="agent.txt")).to_be_visible()
        # main.py stayed unfolded across the refresh.
        expect(panel.locator(".change").nth(1).locator(".code-del")).to_have_count(1)

        # The turn's tokens reached the header (a wide screen) or the session menu (a phone).
        if size == "desktop":
            expect(page.locator("#meta-usage")).to_have_text(re.compile(r"^\d+ in · \d+ out$"))
        else:
            expect(page.locator("#menu-usage")).to_have_text(
                re.compile(r"^So far: \d+ tokens in, \d+ out$"), use_inner_text=False)

        # A file opened read-only, with line numbers.
        panel.locator("#changes-path").fill("main.py")
        panel.get_by_role("button", name="Open", exact=True).click()
        view = panel.locator(".file-view")
        expect(view.locator(".change-path")).to_have_text("main.py")
        expect(view.locator(".code-row")).to_have_count(39)
        expect(view.locator(".code-row").nth(19).locator(".code-text")).to_have_text(
            "line twenty")
        panel.locator("#changes-path").fill("../../etc/passwd")
        panel.get_by_role("button", name="Open", exact=True).click()
        expect(panel.locator(".file-view")).to_contain_text("is not inside the session's folder")
        screenshot(page, f"changes-{size}-file")
        panel.get_by_role("button", name="Close the changes").click()
        expect(panel).to_be_hidden()
    finally:
        page.context.close()


def wait_approval(server: LiveServer, sid: str) -> str:
    import time

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        approvals = server.api("GET", f"/api/sessions/{sid}").json()["pending"]["approvals"]
        if approvals:
            return approvals[0]["request_id"]
        time.sleep(0.05)
    raise AssertionError("no approval")
