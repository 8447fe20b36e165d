"""Images in a prompt (issue 18, item 5) in a real browser at phone size: attach two
screenshots from the file picker, see their thumbnails, remove one, send, and see the image in
the transcript, loaded from the server; a file that is no image is refused before sending."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.e2e.browser import new_page, screenshot
from tests.e2e.live import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path) as live:
        yield live


def png(tmp_path: Path, name: str, colour: tuple[int, int, int]) -> Path:
    path = tmp_path / name
    out = io.BytesIO()
    Image.new("RGB", (120, 80), colour).save(out, "PNG")
    path.write_bytes(out.getvalue())
    return path


def test_attach_remove_send_and_see_the_image(browser: Any, server: LiveServer,
                                              tmp_path: Path) -> None:
    page = new_page(browser, server)
    try:
        session = server.create_session(agent="local")
        page.goto(f"{server.url}/#s={session['id']}")
        red = png(tmp_path, "red.png", (220, 20, 20))
        blue = png(tmp_path, "blue.png", (20, 20, 220))
        text_file = tmp_path / "notes.txt"
        text_file.write_text("not an image\n")
        page.locator("#attach-input").set_input_files([str(red), str(blue), str(text_file)])
        thumbs = page.locator("#attachments .attachment img")
        expect(thumbs).to_have_count(2)
        page.wait_for_function(  # drawn, not a broken image (the page's CSP allows blob:)
            "() => [...document.querySelectorAll('#attachments img')]"
            ".every((i) => i.complete && i.naturalWidth === 120)")
        expect(page.locator("#composer-error")).to_contain_text("notes.txt is not a PNG")
        screenshot(page, "images-phone-attached")
        page.get_by_role("button", name="Remove image 2 (blue.png)").click()
        expect(thumbs).to_have_count(1)
        page.locator("#prompt").fill("hello, what is red?")
        page.get_by_role("button", name="Send").click()
        expect(page.locator("#attachments")).to_be_hidden()
        shown = page.locator(".msg-user .bubble-images img")
        expect(shown).to_have_count(1)
        page.wait_for_function(
            "() => { const i = document.querySelector('.msg-user .bubble-images img');"
            " return i && i.complete && i.naturalWidth === 120; }")
        events = server.events(session["id"], 0)["events"]
        user = next(e for e in events if e["kind"] == "user")
        assert user["text"] == "hello, what is red?"
        assert [i["media_type"] for i in user["images"]] == ["image/png"]
        assert user["images"][0]["bytes"] == red.stat().st_size
        screenshot(page, "images-phone-sent")
    finally:
        page.context.close()
