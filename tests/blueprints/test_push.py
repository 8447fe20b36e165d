"""Web Push over HTTP in-process (docs/protocol.md, "Web Push"): the key, subscriptions and
their endpoint rules, and the pushes a fake push service of our own receives, checks (VAPID)
and decrypts as the device would (tests/fakes/push_service.py)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.fakes.push_service import FakePushService
from tests.redis_server import RedisServer
from tests.tether.cluster.test_registry import wait_until
from tether.sessions import SessionRegistry


@pytest.fixture
def service() -> Iterator[FakePushService]:
    with FakePushService() as service:
        yield service


@pytest.fixture
def app(make_app: Any) -> Flask:
    return make_app(TETHER_PUSH_ALLOW_LOOPBACK=1, TETHER_PROMPT_TIMEOUT=60)


def subscribe(client: FlaskClient, service: FakePushService, name: str,
              events: list[str] | None = None) -> None:
    service.vapid_public_key = client.get("/api/push").get_json()["vapid_public_key"]
    response = client.post("/api/push/subscriptions", json=service.subscribe(name, events))
    assert response.status_code == 201, response.get_json()


def open_approval(core: SessionRegistry, sid: str, command: str = "echo hi") -> str:
    request, _ = core.get(sid).prompts.open_approval("Bash", {"command": command}, "toolu")
    return request.request_id


def new_session(client: FlaskClient, title: str = "push test") -> str:
    return client.post("/api/sessions", json={"title": title}).get_json()["id"]


# -- the key and the routes --------------------------------------------------------------


def test_vapid_public_key_is_an_uncompressed_p256_point_kept_in_the_data_dir(
        client: FlaskClient, tmp_path: Path) -> None:
    key = client.get("/api/push").get_json()["vapid_public_key"]
    raw = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
    assert len(raw) == 65 and raw[0] == 4
    kept = tmp_path / "data" / "vapid.key"
    assert kept.stat().st_mode & 0o777 == 0o600


def test_the_key_can_be_given(make_app: Any) -> None:
    from tether.push.keys import VapidKeys, new_private_key, private_key_from

    given = new_private_key()
    app = make_app(TETHER_VAPID_PRIVATE_KEY=given, TETHER_VAPID_SUBJECT="mailto:me@example.com")
    key = app.test_client().get("/api/push").get_json()["vapid_public_key"]
    assert key == VapidKeys(private_key_from(given)).public_key


def test_a_bad_key_stops_the_start(make_app: Any) -> None:
    with pytest.raises(ValueError, match="TETHER_VAPID_PRIVATE_KEY"):
        make_app(TETHER_VAPID_PRIVATE_KEY="not-a-key")
    with pytest.raises(ValueError, match="TETHER_VAPID_SUBJECT"):
        make_app(TETHER_VAPID_SUBJECT="me@example.com")


def test_push_routes_need_the_token(client: FlaskClient, service: FakePushService) -> None:
    none = {"Authorization": ""}
    assert client.get("/api/push", headers=none).status_code == 401
    assert client.post("/api/push/subscriptions", json=service.subscribe("x"),
                       headers=none).status_code == 401


def test_subscribe_and_unsubscribe(client: FlaskClient, service: FakePushService) -> None:
    body = service.subscribe("phone", ["prompts", "turn_end"])
    response = client.post("/api/push/subscriptions", json=body)
    assert response.status_code == 201
    assert response.get_json() == {"endpoint": body["endpoint"],
                                   "events": ["prompts", "turn_end"]}
    gone = client.delete("/api/push/subscriptions", json={"endpoint": body["endpoint"]})
    assert gone.status_code == 204
    again = client.delete("/api/push/subscriptions", json={"endpoint": body["endpoint"]})
    assert again.status_code == 404


@pytest.mark.parametrize("endpoint", [
    "https://fcm.googleapis.com/fcm/send/abc",
    "https://updates.push.services.mozilla.com/wpush/v2/gAAA",
    "https://web.push.apple.com/QGx",
])
def test_https_endpoints_on_dns_names_are_taken(make_app: Any, service: FakePushService,
                                                endpoint: str) -> None:
    client = make_app().test_client()  # without TETHER_PUSH_ALLOW_LOOPBACK
    body = {**service.subscribe("x"), "endpoint": endpoint}
    assert client.post("/api/push/subscriptions", json=body).status_code == 201


@pytest.mark.parametrize("endpoint", [
    "https://203.0.113.7/push", "https://[::1]/push", "https://2130706433/push",
    "http://fcm.googleapis.com/fcm/send/abc", "file:///etc/passwd", "javascript:alert(1)",
    "https://user@fcm.googleapis.com/x", "https://localhost/push", "https://intranet/push",
    "http://127.0.0.1:9/push", "http://localhost:9/push", "ftp://fcm.googleapis.com/x",
    "https://fcm.googleapis.com:99999/x", "", "https://fcm.googleapis.com/a b",
])
def test_other_endpoints_are_refused(make_app: Any, service: FakePushService,
                                     endpoint: str) -> None:
    client = make_app().test_client()
    body = {**service.subscribe("x"), "endpoint": endpoint}
    response = client.post("/api/push/subscriptions", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "endpoint_not_allowed"


def test_loopback_only_with_the_setting(client: FlaskClient, service: FakePushService) -> None:
    body = service.subscribe("x")
    for endpoint in ("http://127.0.0.1:9/push", "http://localhost:9/push"):
        assert client.post("/api/push/subscriptions",
                           json={**body, "endpoint": endpoint}).status_code == 201
    refused = client.post("/api/push/subscriptions",
                          json={**body, "endpoint": "http://10.0.0.1:9/push"})
    assert refused.get_json()["error"]["code"] == "endpoint_not_allowed"


@pytest.mark.parametrize("keys", [{"p256dh": "AAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"},
                                  {"p256dh": None, "auth": "x"}, {}])
def test_bad_keys_are_a_400(client: FlaskClient, service: FakePushService,
                            keys: dict[str, Any]) -> None:
    body = {**service.subscribe("x"), "keys": keys}
    response = client.post("/api/push/subscriptions", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "bad_request"


def test_service_worker_is_served_at_the_root_for_the_whole_site(client: FlaskClient) -> None:
    response = client.get("/sw.js", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.headers["Service-Worker-Allowed"] == "/"
    assert response.mimetype == "text/javascript"
    assert b"addEventListener(\"push\"" in response.data
    page = client.get("/")
    assert "worker-src 'self'" in page.headers["Content-Security-Policy"]


# -- pushes --------------------------------------------------------------------------------


def test_one_push_per_request_per_device_and_resolved(client: FlaskClient, core: SessionRegistry,
                                                      service: FakePushService) -> None:
    subscribe(client, service, "phone")
    subscribe(client, service, "laptop")
    sid = new_session(client, "deploy")
    rid = open_approval(core, sid, "echo " + "x" * 500)
    # Two clients follow the session and the inbox meanwhile: they change nothing.
    for _ in range(2):
        assert client.get("/api/inbox").status_code == 200
        assert client.get(f"/api/sessions/{sid}/events").status_code == 200
    pushes = service.wait_for(2)
    assert sorted(p.device for p in pushes) == ["laptop", "phone"]
    push = pushes[0]
    assert push.payload == {"type": "approval_request", "session_id": sid, "request_id": rid,
                            "title": "Approval needed: deploy", "body": push.payload["body"],
                            "url": f"/#s={sid}"}
    assert push.payload["body"].startswith("Bash: echo xxx") and len(push.payload["body"]) <= 200
    assert push.headers["urgency"] == "high"
    assert 50 <= int(push.headers["ttl"]) <= 60  # the request's remaining time
    assert 1 <= len(push.headers["topic"]) <= 32
    assert TEST_TOKEN_NOT_IN(push)
    answer = client.post(f"/api/sessions/{sid}/approvals/{rid}", json={"decision": "allow"})
    assert answer.status_code == 200
    resolved = service.wait_for(2, type="resolved")
    assert {p.device for p in resolved} == {"laptop", "phone"}
    assert resolved[0].payload == {"type": "resolved", "session_id": sid, "request_id": rid}
    assert resolved[0].headers["topic"] == push.headers["topic"]
    time.sleep(0.5)
    assert len(service.pushes) == 4 and not service.errors


def TEST_TOKEN_NOT_IN(push: Any) -> bool:  # noqa: N802
    from tests.support import TEST_TOKEN

    return TEST_TOKEN not in repr(push.payload) and TEST_TOKEN not in repr(push.headers)


def test_clarify_pushes_its_question(client: FlaskClient, core: SessionRegistry,
                                     service: FakePushService) -> None:
    subscribe(client, service, "phone")
    sid = new_session(client, "ask")
    request, _ = core.get(sid).prompts.open_clarify(
        [{"question": "Which db?", "header": "DB", "options": [{"label": "pg"}]}], None)
    push = service.wait_for(1)[0]
    assert push.payload["type"] == "clarify_request"
    assert push.payload["body"] == "Which db?"
    core.get(sid).prompts.cancel(request.request_id)
    assert service.wait_for(1, type="resolved")[0].payload["request_id"] == request.request_id


def test_no_push_for_a_request_answered_before_it_went_out(
        client: FlaskClient, core: SessionRegistry, service: FakePushService) -> None:
    subscribe(client, service, "slow")
    service.answers["slow"] = [503]  # the first push waits for its retry, a second away
    sid = new_session(client)
    first = open_approval(core, sid, "echo one")
    service.wait_posts(1)
    core.get(sid).prompts.answer_approval(first, "deny")
    time.sleep(2.0)  # past the retry's time
    assert service.received() == [] and service.posts == [("slow", 503)]


def test_404_and_410_delete_the_subscription(client: FlaskClient, core: SessionRegistry,
                                             service: FakePushService) -> None:
    push = client.application.extensions["tether_push"]
    subscribe(client, service, "gone")
    subscribe(client, service, "expired")
    service.answers["gone"], service.answers["expired"] = [404], [410]
    sid = new_session(client)
    open_approval(core, sid)
    service.wait_posts(2)
    wait_until(lambda: push.subscriptions.all() == [])


def test_429_is_retried(client: FlaskClient, core: SessionRegistry,
                        service: FakePushService) -> None:
    subscribe(client, service, "busy")
    service.answers["busy"] = [429, 500]
    sid = new_session(client)
    rid = open_approval(core, sid)
    push = service.wait_for(1, timeout=15)[0]
    assert push.payload["request_id"] == rid
    assert [status for _, status in service.posts] == [429, 500, 201]


def test_turn_end_only_for_devices_that_asked(client: FlaskClient, core: SessionRegistry,
                                              service: FakePushService) -> None:
    subscribe(client, service, "asked", ["prompts", "turn_end"])
    subscribe(client, service, "default")
    sid = new_session(client, "quick")
    assert client.post(f"/api/sessions/{sid}/prompt", json={"text": "hello"}).status_code == 202
    push = service.wait_for(1, type="turn_end")[0]
    assert push.device == "asked"
    assert push.payload == {"type": "turn_end", "session_id": sid, "turn": 1,
                            "reason": "completed", "title": "quick", "body": "Turn finished",
                            "url": f"/#s={sid}"}
    time.sleep(0.3)
    assert service.received("default") == []


def test_a_local_agents_approval_is_pushed(client: FlaskClient, service: FakePushService) -> None:
    subscribe(client, service, "phone")
    sid = new_session(client)
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "$ echo hi"})
    push = service.wait_for(1)[0]
    assert push.payload["type"] == "approval_request"
    assert "echo hi" in push.payload["body"]
    rid = push.payload["request_id"]
    client.post(f"/api/sessions/{sid}/approvals/{rid}", json={"decision": "allow"})
    assert service.wait_for(1, type="resolved")[0].payload["request_id"] == rid


# -- two workers of one cluster ------------------------------------------------------------


def test_two_workers_push_once(make_app: Any, redis_server: RedisServer, redis_prefix: str,
                               service: FakePushService) -> None:
    cluster = {"TETHER_STORE": "redis", "TETHER_REDIS_URL": redis_server.url,
               "TETHER_REDIS_PREFIX": redis_prefix, "TETHER_PUSH_ALLOW_LOOPBACK": 1,
               "TETHER_LEASE_SECONDS": 2, "TETHER_HEARTBEAT_SECONDS": 0.5}
    a = make_app(TETHER_HOST_ID="host-a", **cluster).test_client()
    b = make_app(TETHER_HOST_ID="host-b", **cluster).test_client()
    assert a.get("/api/push").get_json() == b.get("/api/push").get_json()  # one key
    subscribe(a, service, "phone")  # on one worker, known to both
    subscribe(b, service, "laptop")
    sid = new_session(a)
    for client in (a, b):  # both workers follow the session and the inbox
        client.get("/api/inbox")
    b.post(f"/api/sessions/{sid}/prompt", json={"text": "$ echo one"})
    pushes = service.wait_for(2)
    rid = pushes[0].payload["request_id"]
    assert b.post(f"/api/sessions/{sid}/approvals/{rid}",
                  json={"decision": "allow"}).status_code == 200
    service.wait_for(2, type="resolved")
    wait_until(lambda: not a.get(f"/api/sessions/{sid}").get_json()["turn_active"])
    assert a.post(f"/api/sessions/{sid}/prompt",
                  json={"text": "$ echo two"}).status_code == 202
    service.wait_for(4, type="approval_request")
    time.sleep(1.0)  # any duplicate would have come by now
    requests = service.received(type="approval_request")
    assert sorted(p.device for p in requests) == ["laptop", "laptop", "phone", "phone"]
    assert len({(p.device, p.payload["request_id"]) for p in requests}) == 4
    assert len(service.received(type="resolved")) == 2 and not service.errors
