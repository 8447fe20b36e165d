"""The offline shell over HTTP in-process (blueprints/shell.py): what /sw.js is told to keep,
its version, and the offline page. tests/e2e/test_browser_offline.py drives it in Chromium."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from tests.support import TEST_TOKEN


class StaticURLs(HTMLParser):
    """The same-origin files a page loads: stylesheets, icons, the manifest, scripts (and the
    scripts boot.js loads, on its data-scripts), but not the basic client's ``nomodule``
    script, which a browser with service workers never runs."""

    def __init__(self) -> None:
        super().__init__()
        self.found: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "link" and attributes.get("href"):
            self.found.add(str(attributes["href"]))
        if tag == "script" and attributes.get("src") and "nomodule" not in attributes:
            self.found.add(str(attributes["src"]))
            self.found.update((attributes.get("data-scripts") or "").split())


def anonymous(app: Flask) -> FlaskClient:
    return FlaskClient(app)


def served_worker(app: Flask) -> tuple[str, list[str], str]:
    """(version, files, script) of /sw.js, asked as a browser's update check does: no token."""
    response = anonymous(app).get("/sw.js")
    assert response.status_code == 200
    script = response.get_data(as_text=True)
    version = re.search(r'^const SHELL_VERSION = "([0-9a-f]{16})";$', script, re.M)
    files = re.search(r"^const SHELL_FILES = (\[.*\]);$", script, re.M)
    assert version and files, "the version and the files are filled in"
    return version[1], json.loads(files[1]), script


def page_loads(client: FlaskClient, path: str) -> set[str]:
    parser = StaticURLs()
    parser.feed(client.get(path).get_data(as_text=True))
    return parser.found


def test_the_worker_keeps_the_shell_and_nothing_else(app: Flask, client: FlaskClient) -> None:
    _, files, script = served_worker(app)
    assert "__SHELL" not in script
    assert files[0] == "/offline" and "/static/style.css" in files
    assert {"/static/js/boot.js", "/static/js/app.js", "/static/icons/icon-192.png"} <= set(files)
    # Never the page (it needs the login), the API, a stream, the worker itself, a query.
    for url in files:
        assert url == "/offline" or url.startswith("/static/"), url
        assert "?" not in url and "token" not in url, url
    # Each answers without the token (the worker fetches them without credentials).
    for url in files:
        with anonymous(app).get(url) as response:
            assert response.status_code == 200, url
    # What the pages load is kept: offline, the modern page finds all of its files.
    kept = set(files)
    assert page_loads(client, "/") <= kept
    assert page_loads(client, "/offline") <= kept


def test_the_version_follows_the_content(app: Flask, tmp_path: Path) -> None:
    """A release that changes a kept file is a byte-different /sw.js (the browser installs it
    and drops the old cache); one that changes nothing kept is the same /sw.js."""
    static = tmp_path / "static"
    shutil.copytree(Path(app.static_folder or "static"), static)
    app.static_folder = str(static)
    first, _, script = served_worker(app)
    assert served_worker(app)[0] == first
    (static / "basic" / "basic.js").write_text("/* not in the shell */\n", encoding="utf-8")
    assert served_worker(app)[2] == script
    with (static / "js" / "app.js").open("a", encoding="utf-8") as app_js:
        app_js.write("\n/* the next release */\n")
    second, _, new_script = served_worker(app)
    assert second != first and new_script != script
    (static / "icons" / "icon-192.png").write_bytes(b"not the same icon")
    assert served_worker(app)[0] not in {first, second}


def test_the_offline_page_holds_nothing_of_the_login(app: Flask, client: FlaskClient) -> None:
    page = anonymous(app).get("/offline")
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert "Tether is offline" in text and 'id="tether-offline"' in text
    assert TEST_TOKEN not in text and "Set-Cookie" not in page.headers
    assert page.headers["Cache-Control"] == "no-store"  # kept by the worker only
    # Logged in or not, the same page: the worker keeps it from an anonymous fetch.
    assert client.get("/offline").get_data(as_text=True) == text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


def test_the_worker_is_open_and_scoped_to_the_site(app: Flask) -> None:
    response = anonymous(app).get("/sw.js")
    assert response.headers["Service-Worker-Allowed"] == "/"
    assert response.mimetype == "text/javascript"
    assert response.headers["Cache-Control"] == "no-store"
