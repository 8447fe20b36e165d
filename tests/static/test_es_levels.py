"""The ECMAScript level of every script the pages load (README, Browsers), checked with es-check
(npm; ``make test`` installs the pinned version into .tools/, as ``make es-check`` does).

- Classic scripts in the pages (``/``, ``/?client=basic``, the login page, the offline page)
  run in any browser, before any check of what it can do: ES5, syntax and built-ins
  (``--checkFeatures``).
- Module scripts (``type="module"``) run only in browsers with ES modules: the modern floor.
- The modern client's scripts, which ``static/js/boot.js`` (a module) loads once it found
  what they need, listed on its ``data-scripts``: the modern floor too, as classic scripts.
"""

from __future__ import annotations

import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

ROOT = Path(__file__).resolve().parents[2]
ES_CHECK = ROOT / ".tools" / "node_modules" / ".bin" / "es-check"
#: The modern client's floor, as the README states it (Browsers).
MODERN = "es2022"


class Scripts(HTMLParser):
    """The page's <script src> elements as (src, attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script" and attributes.get("src"):
            self.found.append((str(attributes["src"]), attributes))


def static_file(url: str) -> str:
    assert url.startswith("/static/"), url
    path = ROOT / url.removeprefix("/").split("?")[0]
    assert path.is_file(), url
    return str(path.relative_to(ROOT))


def scripts_by_level(client: FlaskClient, anonymous: FlaskClient) -> dict[str, set[str]]:
    """{"es5": classic scripts, "module": module scripts, "modern": what boot.js loads}."""
    levels: dict[str, set[str]] = {"es5": set(), "module": set(), "modern": set()}
    pages = [client.get("/"), client.get("/?client=basic"), anonymous.get("/"),
             anonymous.get("/offline")]
    assert pages[2].status_code == 401 and b'name="token"' in pages[2].data  # the login page
    for page in pages:
        parser = Scripts()
        parser.feed(page.get_data(as_text=True))
        for src, attributes in parser.found:
            if attributes.get("type") == "module":
                levels["module"].add(static_file(src))
                for url in (attributes.get("data-scripts") or "").split():
                    levels["modern"].add(static_file(url))
            else:
                assert ("nomodule" in attributes or "/basic/" in src or "login" in src
                        or "offline" in src), (
                    f"{src}: a classic script runs before the modern client's check")
                levels["es5"].add(static_file(src))
    return levels


def es_check(level: str, files: list[str],
             module: bool = False) -> subprocess.CompletedProcess[str]:
    args = [str(ES_CHECK), level, *files, "--checkFeatures", "--noColor"]
    if module:
        args.append("--module")
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture
def es_check_installed() -> None:
    if not ES_CHECK.exists():
        message = f"{ES_CHECK} is missing: run `make es-check` (make test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.usefixtures("es_check_installed")
def test_every_script_at_its_level(app: Flask, client: FlaskClient) -> None:
    levels = scripts_by_level(client, FlaskClient(app))
    assert {"static/basic/basic.js", "static/js/login.js", "static/js/offline.js"} <= levels["es5"]
    assert levels["module"] == {"static/js/boot.js"}
    assert {"static/js/app.js", "static/vendor/marked/marked.umd.js"} <= levels["modern"]
    for level, files, module in [("es5", levels["es5"], False), (MODERN, levels["module"], True),
                                 (MODERN, levels["modern"], False)]:
        done = es_check(level, sorted(files), module)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.usefixtures("es_check_installed")
def test_es_check_refuses_what_es5_lacks(tmp_path: Path) -> None:
    """The check has teeth: newer syntax, and a newer built-in in ES5 syntax, both fail. (A
    browser API such as fetch is not the language: tests/e2e/test_browser_basic.py deletes
    those in the browser instead.)"""
    for source in ("const x = 1;\n", "var ok = [1].includes(1);\n"):
        script = tmp_path / "new.js"
        script.write_text(source)
        assert es_check("es5", [str(script)]).returncode != 0, source


def test_readme_states_the_modern_floor() -> None:
    readme = (ROOT / "README.md").read_text()
    browsers = readme[readme.index("\n## Browsers"):]
    assert MODERN.upper() in browsers[:browsers.index("\n## ", 1)]
