"""The browser UI against the Redis cluster (issue 14: "The browser suite (Playwright) runs once
against the two-host setup: a session started through one host, answered from a page on the
other"), with the cluster of tests/e2e/cluster.py (host A: 2 workers, host B: 1, one Redis, the
round-robin proxy) and Debian's Chromium (tests/e2e/browser.py).

- A page on host A's own port (SSE) starts a session and asks for approval; a page on host B's
  own port (WebSocket) sees the request in its inbox, opens it and approves; both pages then
  show the tool's output and the turn's end, each event once. Every response each page got
  names a worker of its own host (``X-Tether-Worker``): what the other host did reached it
  through Redis only.
- A page through the round-robin proxy (SSE, then WebSocket) follows a session over five turns
  while the proxy cuts every connection every 300 ms: it ends with every event of the log,
  each rendered once, and no event was ever rendered twice on the way (a MutationObserver
  counts the nodes that carried each event id, removed ones too), so no reconnection was
  answered with a ``reset`` and a replay either.

Each test saves a screenshot of each page at its end into its tmp dir.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import log_in, new_page
from tests.e2e.cluster import WORKER_HEADER, Cluster, Host, host_of
from tests.e2e.test_browser import (
    assert_rendered_once,
    pending_card,
    send,
    start_session,
    wait_turn_finished,
)
from tests.e2e.test_browser_live import RENDERED, TRANSPORTS
from tests.support import TEST_TOKEN, Tally

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.browser,
              pytest.mark.timeout(180)]

#: Counts, per event id, the distinct nodes that ever carried it (``data-event-id``), from the
#: page's first node on: an event rendered twice, one copy removed again, still counts two. (A
#: node may carry one id, then another: the streamed reply takes its final text event's id.)
RENDER_COUNTER = """
window.__rendered = {};
(() => {
  const carried = new WeakMap();  // node -> the ids it has carried (a node may change id)
  const note = (node) => {
    if (node.nodeType !== 1) return;
    const found = node.matches('[data-event-id]') ? [node] : [];
    found.push(...node.querySelectorAll('[data-event-id]'));
    for (const n of found) {
      const id = n.dataset.eventId;
      if (!carried.has(n)) carried.set(n, new Set());
      if (carried.get(n).has(id)) continue;
      carried.get(n).add(id);
      window.__rendered[id] = (window.__rendered[id] || 0) + 1;
    }
  };
  new MutationObserver((records) => {
    for (const r of records) {
      if (r.type === 'attributes') note(r.target);
      else r.addedNodes.forEach(note);
    }
  }).observe(document, {subtree: true, childList: true, attributes: true,
                        attributeFilter: ['data-event-id']});
})();
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


def proxy_front(cluster: Cluster) -> SimpleNamespace:
    """The proxy as :func:`~tests.e2e.browser.new_page` logs in to a server: its URL and login
    URL (the token in the fragment)."""
    return SimpleNamespace(url=cluster.url, login_url=f"{cluster.url}/#token={TEST_TOKEN}")


def cluster_page(browser: Any, server: Any, transport: str = "sse") -> Any:
    """A logged-in page on ``server`` (a host or the proxy) that records the worker behind
    every response (``page.served_by``) and every node rendered (``window.__rendered``)."""
    page = new_page(browser, no_event_source=TRANSPORTS[transport][1])
    page.context.add_init_script(RENDER_COUNTER)  # before the first page load
    workers: Counter[str] = Counter()
    page.served_by = workers

    def served(response: Any) -> None:
        wid = response.headers.get(WORKER_HEADER.lower())
        if wid:
            workers[wid] += 1

    page.on("response", served)
    page.on("websocket", lambda ws: workers.update(["(websocket)"]))
    # The live connections it opened (a stream or a WebSocket): 1 + its reconnections.
    page.on("request", lambda request: workers.update(
        ["(stream)"] if "/stream" in request.url else []))
    log_in(page, server)
    return page


def open_session(page: Any, server: Any, sid: str, transport: str) -> None:
    page.goto(f"{server.url}/{TRANSPORTS[transport][0]}#s={sid}")
    expect(page.locator("#conn")).to_have_text(f"Connected · {TRANSPORTS[transport][2]}")


def live_connections(page: Any) -> int:
    """How many streams and WebSockets the page has opened so far."""
    return page.served_by["(stream)"] + page.served_by["(websocket)"]


def log_of(host: Host, sid: str) -> list[dict[str, Any]]:
    return host.events(sid)["events"]


def assert_shows_log(page: Any, events: list[dict[str, Any]]) -> list[int]:
    """The page shows every rendered event of ``events`` (the whole log), each once now and
    each rendered once ever. :returns: the ids it shows."""
    expect(page.locator("#transcript")).to_have_attribute(
        "data-last-event-id", str(events[-1]["id"]))
    shown = assert_rendered_once(page)
    expected = [e["id"] for e in events if e["kind"] in RENDERED]
    assert sorted(shown) == expected, f"shown {sorted(shown)}, log {expected}"
    ever = {int(k): v for k, v in page.evaluate("window.__rendered").items()}
    twice = {k: v for k, v in ever.items() if v > 1}
    assert not twice, f"event ids rendered on more than one node over time: {twice}"
    assert set(ever) >= set(expected), f"never rendered: {set(expected) - set(ever)}"
    return sorted(shown)


def shot(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    return path


# -- a session started on host A, answered from a page on host B ------------------------

def test_a_page_on_host_b_answers_what_a_page_on_host_a_started(
        browser: Any, cluster: Cluster, tmp_path: Path, tally: Tally) -> None:
    host_a, host_b = cluster.hosts["hostA"], cluster.hosts["hostB"]
    page_a = cluster_page(browser, host_a)
    # Host B's page on the WebSocket: the two pages follow the session on two transports.
    page_b = cluster_page(browser, host_b, "ws")
    try:
        sid = start_session(page_a, host_a)
        expect(page_a.locator("#conn")).to_have_text("Connected · SSE")
        page_b.goto(f"{host_b.url}/?transport=ws")
        expect(page_b.locator("#conn")).to_have_text("Connected · WebSocket")
        expect(page_b.locator("#inbox-count")).to_be_hidden()

        send(page_a, "$ echo hello")
        card_a = pending_card(page_a)
        expect(card_a).to_contain_text("Allow Bash?")
        expect(page_a.locator('[data-kind="tool_use"] .tool-input')).to_have_text("$ echo hello")
        # The agent runs on host A (the worker that took the first prompt claimed the session):
        # host B's answer has to cross hosts to reach it.
        assert host_of(cluster.owner_of(sid)) == "hostA"

        # Host B's page: the request is in its inbox (live, from host A's worker via Redis).
        expect(page_b.locator("#inbox-count")).to_have_text("1")
        page_b.get_by_role("button", name="Inbox: 1 waiting for you").click()
        panel = page_b.get_by_role("region", name="Waiting for you")
        item = panel.locator(".inbox-item")
        expect(item).to_have_count(1)
        expect(item).to_contain_text("echo hello")
        item.click()
        expect(page_b).to_have_url(re.compile(f"#s={sid}$"))
        card_b = pending_card(page_b)
        expect(card_b).to_contain_text("Allow Bash?")
        allow = card_b.get_by_role("button", name="Allow", exact=True)
        expect(allow).to_be_focused()
        with page_b.expect_response("**/approvals/**") as answered:
            allow.click()
        assert answered.value.status == 200
        assert host_of(answered.value.headers[WORKER_HEADER.lower()]) == "hostB"

        expect(card_b).to_have_attribute("data-state", "allowed")
        expect(card_b.locator(".card-outcome")).to_have_text("Allowed by you")
        expect(card_a).to_have_attribute("data-state", "allowed")
        expect(card_a.locator(".card-outcome")).to_have_text(
            re.compile(r"^Allowed by Chrome · tab \w{4}$"))
        for page in (page_a, page_b):
            expect(page.locator(".tool-output").filter(has_text="hello")).to_have_count(1)
            wait_turn_finished(page)
            expect(page.locator('[data-kind="text"]')).to_have_text(
                "echo hello finished with exit code 0.")
            expect(page.locator('[data-kind="result"]')).to_contain_text("Done")
            expect(page.locator('[data-kind="turn_end"]')).to_have_count(1)
            expect(page.locator("#inbox-count")).to_be_hidden()

        events = log_of(host_a, sid)
        assert log_of(host_b, sid) == events
        assert [e["kind"] for e in events if e["kind"] == "approval_resolved"] == \
            ["approval_resolved"]
        shown_a, shown_b = assert_shows_log(page_a, events), assert_shows_log(page_b, events)
        assert shown_a == shown_b
        tally.add("events checked", len(shown_a) + len(shown_b))
        # Each page spoke to its own host only (the other's events came through Redis).
        for page, host in ((page_a, "hostA"), (page_b, "hostB")):
            hosts = {host_of(w) for w in page.served_by if not w.startswith("(")}
            assert hosts == {host}, (host, dict(page.served_by))
        assert page_b.served_by["(websocket)"] >= 1
        assert not page_a.js_errors and not page_b.js_errors
    finally:
        shot(page_a, tmp_path, "host-a")
        shot(page_b, tmp_path, "host-b")
        page_a.context.close()
        page_b.context.close()


# -- through the round-robin proxy while it cuts every connection -----------------------

@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_a_page_through_the_proxy_shows_every_event_once_while_connections_are_cut(
        browser: Any, cluster: Cluster, tmp_path: Path, tally: Tally, transport: str) -> None:
    assert cluster.proxy is not None
    hosts = list(cluster.hosts.values())
    front = proxy_front(cluster)
    page = cluster_page(browser, front, transport)
    stop = threading.Event()
    severs = 0

    def sever_every_300_ms() -> None:
        nonlocal severs
        while not stop.wait(0.3):
            cluster.proxy.sever()
            severs += 1

    severer = threading.Thread(target=sever_every_300_ms, daemon=True)
    try:
        sid = hosts[0].create_session(agent="local", title=f"cut {transport}")["id"]
        open_session(page, front, sid, transport)
        opened = live_connections(page)
        severer.start()
        # The turns are driven on the hosts straight (the proxy's cuts are for the page): each
        # prompted on one host and answered on the other once the page shows the request; the
        # next one starts once the page shows the turn's end. The bench turns stream text
        # deltas for 2.5 s each, cut in the middle.
        texts = ["$ echo one", "bench 100 48 40", "$ echo three", "bench 100 48 40", "hello"]
        last = 0
        for n, text in enumerate(texts, start=1):
            asker, other = hosts[n % 2], hosts[(n + 1) % 2]
            response = asker.api("POST", f"/api/sessions/{sid}/prompt", json={"text": text})
            assert response.status_code == 202, response.text
            if text.startswith("$"):
                request = other.wait_for_event(sid, "approval_request", after=last)
                card = page.locator(f'.card[data-request-id="{request["request_id"]}"]')
                expect(card).to_have_attribute("data-state", "pending")
                reply = other.api("POST", f"/api/sessions/{sid}/approvals/"
                                  f"{request['request_id']}", json={"decision": "allow"})
                assert reply.status_code == 200, reply.text
                expect(card).to_have_attribute("data-state", "allowed")
            end = other.wait_for_event(sid, "turn_end", after=last)
            assert (end["turn"], end["reason"]) == (n, "completed")
            last = end["id"]
            expect(page.locator('[data-kind="turn_end"]')).to_have_count(n)
    finally:
        stop.set()
        if severer.is_alive():
            severer.join(5)
    try:
        events = log_of(hosts[0], sid)
        assert events[-1]["id"] == last
        wait_turn_finished(page, turns=len(texts))
        expect(page.locator("#conn")).to_have_text(f"Connected · {TRANSPORTS[transport][2]}")
        for word in ("one", "three"):
            expect(page.locator(".tool-output").filter(has_text=word)).to_have_count(1)
        expect(page.locator(".msg-user")).to_have_count(len(texts))
        expect(page.locator(".streaming")).to_have_count(0)
        shown = assert_shows_log(page, events)
        tally.add("events checked", len(shown))
        tally.add("faults injected", severs)
        assert severs >= 10, severs
        reconnects = live_connections(page) - opened
        assert reconnects >= 3, f"the page reconnected {reconnects} times: were its " \
                                f"connections cut? {dict(page.served_by)}"
        tally.add("reconnects", reconnects)
        # The page's requests were spread over both hosts by the proxy.
        hosts_seen = {host_of(w) for w in page.served_by if not w.startswith("(")}
        assert hosts_seen == {"hostA", "hostB"}, dict(page.served_by)
        assert not page.js_errors
    finally:
        shot(page, tmp_path, f"proxy-{transport}")
        page.context.close()


# -- Redis away while a person has the page open ------------------------------------------

def test_a_page_opened_while_redis_is_away_says_so_and_comes_back_by_itself(
        browser: Any, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """Issue 14: a logged-in browser that opens (or reloads) the page while Redis does not
    answer gets Tether's own 503 page saying the store is unavailable, not a JSON body; once
    Redis is back the page reloads itself into the session, which shows its log, each event
    once."""
    with Cluster(tmp_path_factory.mktemp("redis-away")) as cluster:
        front = proxy_front(cluster)
        page = cluster_page(browser, front)
        try:
            sid = start_session(page, front)
            send(page, "$ echo before")
            pending_card(page).get_by_role("button", name="Allow", exact=True).click()
            wait_turn_finished(page)
            cluster.redis.stop()
            page.reload()
            expect(page.get_by_role("heading", name="Tether is unavailable")).to_be_visible()
            expect(page.locator("body")).to_contain_text("cannot reach its store (Redis)")
            shot(page, tmp_path, "redis-away")
            cluster.redis.start()
            expect(page.locator("#conn")).to_have_attribute("data-state", "connected",
                                                           timeout=40_000)
            assert page.url.endswith(f"#s={sid}")
            wait_turn_finished(page)
            expect(page.locator(".tool-output").filter(has_text="before")).to_have_count(1)
            assert_shows_log(page, log_of(next(iter(cluster.hosts.values())), sid))
            shot(page, tmp_path, "redis-back")
            assert not page.js_errors
        finally:
            page.context.close()
