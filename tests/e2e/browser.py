"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium driven by Playwright,
never a downloaded browser. Pages get a phone viewport by default and bounded waits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.e2e.live import ROOT, LiveServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts"
PHONE = {"width": 390, "height": 844}
WAIT_MS = 15_000  # every Playwright wait is bounded by this

expect.set_options(timeout=WAIT_MS)


def new_page(browser: Any, server: LiveServer | None = None, viewport: dict[str, int] = PHONE,
             no_event_source: bool = False, **options: Any) -> Any:
    """A page in a new browser context; logged in to ``server`` through its login URL (as a
    person opening the URL the server printed), so the context holds the login cookie."""
    mobile = viewport["width"] < 600
    context = browser.new_context(viewport=viewport, is_mobile=mobile, has_touch=mobile,
                                  device_scale_factor=2 if mobile else 1, **options)
    context.set_default_timeout(WAIT_MS)
    context.set_default_navigation_timeout(WAIT_MS)
    if no_event_source:
        context.add_init_script("delete window.EventSource")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    if server is not None:
        log_in(page, server)
    return page


def log_in(page: Any, server: LiveServer) -> None:
    """Open the login URL (``/#token=…``): the login page posts the token to ``/login``, which
    sets the cookie and sends the page to ``/``."""
    page.goto(server.login_url)
    page.wait_for_url(server.url + "/")
    page.locator("#app").wait_for(state="attached")


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
