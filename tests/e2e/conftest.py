"""Fixtures for the browser tests (tests/e2e/test_browser*.py). Modules that need another
kind of server (module-scoped, other settings) define their own ``server``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, new_page
from tests.e2e.live import LiveServer


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        message = (f"{CHROMIUM} is missing: the browser tests need Debian's Chromium "
                   "(apt-get install chromium); they never download a browser.")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                    timeout=20_000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path) as live:
        yield live


@pytest.fixture
def page(browser: Any, server: LiveServer) -> Iterator[Any]:
    # Depends on `server` so that it closes first: an open stream would hold up the server's
    # graceful shutdown.
    page = new_page(browser, server)
    yield page
    page.context.close()
