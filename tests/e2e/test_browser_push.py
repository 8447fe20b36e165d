"""Web Push in Debian's Chromium (issue 20, item 2): the service worker registers at the
root, "Notify me on this device" subscribes from a click and says so, the server's push (as
the fake push service received and decrypted it) delivered to the service worker with the
DevTools Protocol's ``ServiceWorker.deliverPushMessage`` shows a notification with Allow and
Deny, the service worker's Allow resolves the approval, and the ``resolved`` push closes it.

Headless Chromium has no push service of its own (it cannot reach FCM here), so an init
script stands in for ``PushManager.subscribe``: it hands the page a subscription whose
endpoint and keys are the fake push service's (tests/fakes/push_service.py), made as a
browser makes them. Everything after that is real: the page's POST, the server's VAPID
signature and encryption, the service worker's notification and its answer.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import new_page, screenshot
from tests.e2e.live import LiveServer
from tests.e2e.test_browser import send, start_session
from tests.fakes.push_service import FakePushService

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

DESKTOP = {"width": 1280, "height": 800}

STAND_IN = """
(() => {
  const json = %s;
  let current = null;
  const subscription = {endpoint: json.endpoint, options: {applicationServerKey: null},
                        toJSON: () => json,
                        unsubscribe: async () => { current = null; return true; }};
  PushManager.prototype.subscribe = async function (options) {
    subscription.options = options;
    current = subscription;
    return subscription;
  };
  PushManager.prototype.getSubscription = async function () { return current; };
})();
"""

NOTIFICATIONS = """async () => {
  const registration = await navigator.serviceWorker.ready;
  const all = await registration.getNotifications();
  return all.map((n) => ({title: n.title, body: n.body, tag: n.tag, data: n.data,
                          actions: n.actions.map((a) => [a.action, a.title])}));
}"""

ACT = """([requestId, action]) => new Promise((resolve) => {
  navigator.serviceWorker.addEventListener("message", (event) => {
    if (event.data && event.data.type === "notification-action") resolve(event.data.status);
  });
  navigator.serviceWorker.controller.postMessage(
    {type: "notification-action", request_id: requestId, action});
})"""


@pytest.fixture
def service() -> Iterator[FakePushService]:
    with FakePushService() as service:
        yield service


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path, TETHER_PUSH_ALLOW_LOOPBACK=1) as live:
        yield live


def registration_id(cdp: Any, page: Any, url: str) -> str:
    """The service worker registration's id for the DevTools Protocol."""
    found: dict[str, str] = {}

    def updated(params: dict[str, Any]) -> None:
        for registration in params["registrations"]:
            if registration["scopeURL"] == url + "/" and not registration["isDeleted"]:
                found["id"] = registration["registrationId"]

    cdp.on("ServiceWorker.workerRegistrationUpdated", updated)
    cdp.send("ServiceWorker.enable")
    deadline = time.monotonic() + 10
    while "id" not in found and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert "id" in found, "no service worker registration for scope /"
    return found["id"]


def deliver(cdp: Any, server: LiveServer, registration: str, payload: dict[str, Any]) -> None:
    cdp.send("ServiceWorker.deliverPushMessage",
             {"origin": server.url, "registrationId": registration,
              "data": json.dumps(payload)})


def notifications(page: Any) -> list[dict[str, Any]]:
    return page.evaluate(NOTIFICATIONS)


def wait_notifications(page: Any, check: Any, timeout: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        shown = notifications(page)
        if check(shown):
            return shown
        assert time.monotonic() < deadline, f"notifications: {shown}"
        page.wait_for_timeout(100)


def test_push_notification_with_allow_answered_from_the_service_worker(
        browser: Any, server: LiveServer, service: FakePushService) -> None:
    service.vapid_public_key = server.api("GET", "/api/push").json()["vapid_public_key"]
    device = service.subscribe("chromium")
    page = new_page(browser, server, viewport=DESKTOP)
    page.context.grant_permissions(["notifications"], origin=server.url)
    page.context.add_init_script(STAND_IN % json.dumps(device))
    page.reload()
    assert not page.js_errors
    # The service worker registered at the root, on load (no permission asked then).
    cdp = page.context.new_cdp_session(page)
    registration = registration_id(cdp, page, server.url)
    # "Notify me on this device", from a click; the page says the device is subscribed.
    page.locator("#settings summary").click()
    button = page.get_by_role("button", name="Notify me on this device")
    expect(button).to_be_visible()
    button.click()
    expect(page.locator("#push-state")).to_contain_text("This device is subscribed")
    expect(page.get_by_role("button", name="Stop notifying this device")).to_be_visible()
    expect(page.get_by_label("Also when a turn finishes")).not_to_be_checked()
    page.locator("#push-setting").scroll_into_view_if_needed()
    screenshot(page, "push-subscribed")
    # An approval: the server pushes it to the fake push service, which checks and decrypts.
    sid = start_session(page, server)
    send(page, "$ echo hi")
    pushed = service.wait_for(1, type="approval_request")[0].payload
    assert pushed["session_id"] == sid and "echo hi" in pushed["body"]
    # Delivered to the service worker: a notification with Allow and Deny.
    deliver(cdp, server, registration, pushed)
    shown = wait_notifications(page, lambda ns: len(ns) == 1)[0]
    assert shown["title"] == pushed["title"] and "echo hi" in shown["body"]
    assert shown["actions"] == [["allow", "Allow"], ["deny", "Deny"]]
    # The service worker's Allow (what a tap on it runs) answers through the API.
    assert page.evaluate(ACT, [pushed["request_id"], "allow"]) == 200
    resolved = server.wait_for_event(sid, "approval_resolved")
    assert resolved["decision"] == "allow" and resolved["by"] == "notification"
    server.wait_for_event(sid, "turn_end")
    # The resolved push reaches the fake service; delivered, it closes any notification left.
    closing = service.wait_for(1, type="resolved")[0].payload
    assert closing == {"type": "resolved", "session_id": sid,
                       "request_id": pushed["request_id"]}
    deliver(cdp, server, registration, pushed)  # shown again, as on a second device
    wait_notifications(page, lambda ns: len(ns) == 1)
    deliver(cdp, server, registration, closing)
    wait_notifications(page, lambda ns: ns == [])
    assert not service.errors and not page.js_errors
    page.context.close()


def test_answered_elsewhere(browser: Any, server: LiveServer, service: FakePushService) -> None:
    """Deny from a notification of a request already answered: 409, and the notification
    says so."""
    device = service.subscribe("chromium")
    page = new_page(browser, server, viewport=DESKTOP)
    page.context.grant_permissions(["notifications"], origin=server.url)
    page.context.add_init_script(STAND_IN % json.dumps(device))
    page.reload()
    cdp = page.context.new_cdp_session(page)
    registration = registration_id(cdp, page, server.url)
    page.locator("#settings summary").click()
    page.get_by_role("button", name="Notify me on this device").click()
    expect(page.locator("#push-state")).to_contain_text("This device is subscribed")
    sid = start_session(page, server)
    send(page, "$ echo hi")
    pushed = service.wait_for(1, type="approval_request")[0].payload
    answer = server.api("POST", f"/api/sessions/{sid}/approvals/{pushed['request_id']}",
                        json={"decision": "allow"})
    assert answer.status_code == 200
    deliver(cdp, server, registration, pushed)  # late, as a push may be
    wait_notifications(page, lambda ns: len(ns) == 1)
    assert page.evaluate(ACT, [pushed["request_id"], "deny"]) == 409
    shown = wait_notifications(page, lambda ns: ns and ns[0]["title"] == "Answered elsewhere")
    assert shown[0]["actions"] == []
    expect(page).to_have_url(re.compile(rf"#s={sid}$"))
    page.context.close()
