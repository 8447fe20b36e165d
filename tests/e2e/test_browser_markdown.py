"""Agent Markdown in the browser: nothing the agent wrote disappears (issue 17, item 1).

A coding agent's prose is full of ``List<String>``, ``make <target>`` and tag names. As
Markdown these are raw HTML, which the sanitizer used to drop without a trace. Here the real
vendored marked and DOMPurify render them through the page's own ``Markdown.render``, in
headless Chromium: a corpus of known cases, and a property test over random text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from playwright.sync_api import expect

from tests.e2e.browser import new_page, screenshot
from tests.e2e.live import LiveServer
from tests.e2e.test_browser import start_session

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

#: Renders Markdown with the page's Markdown.render into a detached element; returns its
#: HTML, its text (without the copy buttons the renderer adds to code blocks) and the names
#: of the elements in it.
RENDER = """(source) => {
  const box = document.createElement("div");
  Markdown.render(box, source);
  const copy = box.cloneNode(true);
  copy.querySelectorAll(".copy-btn").forEach((b) => b.remove());
  return {html: box.innerHTML, text: copy.textContent,
          tags: [...box.querySelectorAll("*")].map((n) => n.tagName.toLowerCase())};
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("markdown")) as live:
        yield live


@pytest.fixture(scope="module")
def md_page(browser: Any, server: LiveServer) -> Iterator[Any]:
    page = new_page(browser, server)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.dialogs = dialogs
    page.wait_for_function("() => typeof Markdown === 'object' && Markdown.ready === true")
    yield page
    page.context.close()


def render(page: Any, source: str) -> dict[str, Any]:
    return dict(page.evaluate(RENDER, source))


# ---------------------------------------------------------------- the corpus

#: (Markdown source, text that must be shown, elements that must be there)
CORPUS = [
    ("Use a `Map` or a List<String> here.", "Use a Map or a List<String> here.", ["code"]),
    ("Then run make <target> again.", "Then run make <target> again.", []),
    ("Usage: /model <name>", "Usage: /model <name>", []),
    ("<div>hi</div>", "<div>hi</div>", []),
    ("Render <Foo bar={1} /> in the page.", "Render <Foo bar={1} /> in the page.", []),
    ("<!-- note -->", "<!-- note -->", []),
    ("before <!-- note --> after", "before <!-- note --> after", []),
    ("<script>alert(1)</script>", "<script>alert(1)</script>", []),
    ("<img src=x onerror=alert(2)>", "<img src=x onerror=alert(2)>", []),
    ("if a < b > c then", "if a < b > c then", []),
    ("#include <stdio.h> and <std::vector>", "#include <stdio.h> and <std::vector>", []),
    ("**bold** and <i>not italic</i>", "bold and <i>not italic</i>", ["strong"]),
    ("<details>\n**inside**\n</details>", "<details>", ["strong"]),
    ("Write &amp; for & and &#60; for <", "Write &amp; for & and &#60; for <", []),
    ("`<b>` is bold", "<b> is bold", ["code"]),
    ("```html\n<div class=\"x\">hi</div>\n<script>x()</script>\n```",
     '<div class="x">hi</div>\n<script>x()</script>', ["pre", "code"]),
    ("- item `<T>`\n\n  ```\n  <tag/>\n  ```\n- second <T>", "<tag/>", ["li", "code", "pre"]),
]


@pytest.mark.parametrize(("source", "shown", "elements"), CORPUS,
                         ids=[c[0][:30] for c in CORPUS])
def test_angle_brackets_in_agent_text_are_shown_as_written(
        md_page: Any, source: str, shown: str, elements: list[str]) -> None:
    out = render(md_page, source)
    assert shown in out["text"], out
    for name in elements:
        assert name in out["tags"], out
    # Only Markdown's own elements: none of the agent's tags became an element.
    assert set(out["tags"]) <= {"p", "strong", "em", "code", "pre", "ul", "ol", "li", "a",
                                "div", "button", "br", "hr", "h1", "h2", "h3", "blockquote"}
    assert "div" not in out["tags"] or "pre" in out["tags"]  # only the code block's wrapper
    assert not md_page.dialogs


def test_nested_code_in_a_list_is_code(md_page: Any) -> None:
    out = render(md_page, "- item `<T>`\n\n  ```\n  <tag/>\n  ```\n- second <T>")
    html = out["html"]
    assert "<code>&lt;T&gt;</code>" in html
    assert "<li>" in html and "second &lt;T&gt;" in html
    assert re.search(r"<pre><code>&lt;tag/&gt;\n</code></pre>", html), html


def test_autolinks_still_link(md_page: Any) -> None:
    out = render(md_page, "See <https://example.com/a?b=1> or <ops@example.com>.")
    links = md_page.evaluate("""(source) => {
      const box = document.createElement("div");
      Markdown.render(box, source);
      return [...box.querySelectorAll("a")].map((a) => [a.getAttribute("href"), a.textContent,
                                                       a.getAttribute("rel")]);
    }""", "See <https://example.com/a?b=1> or <ops@example.com>.")
    assert links == [["https://example.com/a?b=1", "https://example.com/a?b=1",
                      "noopener noreferrer nofollow"],
                     ["mailto:ops@example.com", "ops@example.com", "noopener noreferrer nofollow"]]
    assert out["text"].strip() == "See https://example.com/a?b=1 or ops@example.com."


def test_script_in_agent_text_is_shown_never_run(page: Any, server: LiveServer) -> None:
    """Through the transcript of an open session, as an agent's reply arrives: shown as text,
    no script or image element, no dialog."""
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    start_session(page, server)
    page.evaluate("""() => {
      Transcript.apply({id: Transcript.lastId + 1, kind: "text",
        text: "Try <script>alert(1)</script> or <img src=x onerror=alert(2)>"
              + " <svg onload=alert(3)> <a href='javascript:alert(4)'>x</a>"});
    }""")
    reply = page.locator('[data-kind="text"]').last
    text = reply.text_content()
    assert "<script>alert(1)</script>" in text and "<img src=x onerror=alert(2)>" in text
    assert "<svg onload=alert(3)>" in text and "<a href='javascript:alert(4)'>x</a>" in text
    assert reply.locator("script, img, svg, a, [onerror], [onload]").count() == 0
    page.wait_for_timeout(300)  # an onerror or onload would have fired by now
    assert not dialogs
    assert not page.js_errors


def test_screenshot_of_agent_text_with_angle_brackets(page: Any, server: LiveServer) -> None:
    start_session(page, server)
    page.evaluate("""() => Transcript.apply({id: Transcript.lastId + 1, kind: "text",
      text: "Return a `List<String>`: run make <target>, then\\n\\n"
            + "Usage: /model <name>\\n\\n<Foo bar={1} /> renders <!-- note --> as text; "
            + "docs at <https://example.com>.\\n\\n```tsx\\n<App title=\\"x\\" />\\n```"})""")
    reply = page.locator('[data-kind="text"]').last
    assert "make <target>" in reply.text_content()
    expect(reply.locator("code").first).to_have_text("List<String>")
    screenshot(page, "markdown-angle-brackets")
    assert not page.js_errors


# ---------------------------------------------------------------- the property

#: Pieces of agent prose: words, HTML and JSX fragments, entities, autolinks, and some
#: Markdown (emphasis, code, headings, lists, quotes, fences). No `[`, `(` or `|`: links,
#: images and tables rightly turn their URL into an attribute.
FRAGMENTS = ["<", ">", "/", "&", '"', "'", "=", "<div>", "</div>", "<b>", "</b>", "<T>",
             "<Foo bar={1} />", "<!--", "-->", "<!-- note -->", "<script>", "</script>",
             "List<String>", "make <target>", "<name>", "<https://example.com/a>",
             "<ops@example.com>", "<std::vector>", "&amp;", "&lt;", "&#60;", "&nbsp;",
             "<?php ?>", "<![CDATA[x]]>", "<br/>", "<a href='x'>", "</a>", "a < b > c",
             " ", "\n", "\n\n", "`", "```\n", "\n```\n", "*", "**", "_", "# ", "- ", "1. ",
             "> ", "    ", "\\", "word", "make", "Usage:", "."]
PIECES = st.one_of(st.sampled_from(FRAGMENTS),
                   st.text(alphabet="abcxyzABC019 <>/&;'\"=.:-", min_size=1, max_size=6))
SOURCES = st.lists(PIECES, max_size=24).map("".join)

#: Characters that are Markdown syntax wherever they are (emphasis, code, headings, escapes).
SYNTAX_CHARS = re.compile(r"[*_`#~\\|\s]")
#: Block markers at a line's start: quotes, list bullets and numbers (repeated: `> - > x`).
#: A quote's `>` needs no space after it; a bullet or a number does.
LINE_MARKERS = re.compile(r"^[ \t]*(?:(?:>|(?:[-+*]|\d{1,9}[.)])(?=[ \t]|$))[ \t]*)*",
                          re.MULTILINE)
#: Whole lines that are syntax: fences (with their info string), setext underlines, rules.
SYNTAX_LINES = re.compile(r"^[ \t]*(?:`{3,}.*|~{3,}.*|=+[ \t]*|(?:[-*_][ \t]*)+)$", re.MULTILINE)
#: Autolinks: their brackets are syntax (the URL is shown, as a link).
AUTOLINK = re.compile(r"<((?:https?|ftp|mailto):[^\s<>]*|[^\s<>@]+@[^\s<>]+)>")


def kept_characters(source: str) -> str:
    """The characters of ``source`` that must appear in the rendered text, in order: all but
    the Markdown syntax above. ``<``, ``>``, ``&``, quotes, ``=``, ``/`` and letters always
    count (but an autolink's brackets)."""
    text = SYNTAX_LINES.sub("", source)
    text = LINE_MARKERS.sub("", text)
    text = AUTOLINK.sub(r"\1", text)
    return SYNTAX_CHARS.sub("", text)


def is_subsequence(needle: str, haystack: str) -> bool:
    it = iter(haystack)
    return all(char in it for char in needle)


def test_kept_characters_keeps_angle_brackets_and_drops_syntax() -> None:
    assert kept_characters("> - **make <target>** & `x`") == "make<target>&x"
    assert kept_characters("See <https://e.com>\n```js\ncode\n```") == "Seehttps://e.comcode"


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(source=SOURCES)
def test_every_character_the_agent_wrote_is_shown(md_page: Any, source: str) -> None:
    out = render(md_page, source)
    shown = SYNTAX_CHARS.sub("", out["text"])
    kept = kept_characters(source)
    assert is_subsequence(kept, shown), (
        f"characters lost: source {source!r} rendered {out['text']!r} ({out['html']!r})")
    assert not {"script", "img", "svg", "iframe"} & set(out["tags"]), out
