"""Endpoint rules, subscription bodies, and the three places subscriptions are kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fakes.push_service import browser_subscription
from tether.errors import BadRequest, EndpointNotAllowed
from tether.push.subscriptions import (
    MAX_SUBSCRIPTIONS,
    FileSubscriptions,
    MemoryClaims,
    MemorySubscriptions,
    check_endpoint,
    check_subscription,
)


def body(endpoint: str = "https://fcm.googleapis.com/fcm/send/x", **extra: Any) -> dict[str, Any]:
    return {**browser_subscription(endpoint), **extra}


@pytest.mark.parametrize("endpoint", ["https://fcm.googleapis.com/fcm/send/a",
                                      "https://web.push.apple.com/Q", "https://a-b.example:8443/x"])
def test_taken(endpoint: str) -> None:
    assert check_endpoint(endpoint) == endpoint


@pytest.mark.parametrize("endpoint", [
    "https://10.0.0.1/x", "https://[fe80::1]/x", "https://0x7f000001/x", "http://push.example/x",
    "file:///x", "javascript:alert(1)", "data:,x", "https://a:b@push.example/x", "https://-a.example/",
    "https://push/x", "https://localhost/x", "https://a.localhost/x", "https://push.example\n/x",
    "https://push.example/" + "x" * 2000, "https://é.example/x", "//push.example/x",
])
def test_refused(endpoint: str) -> None:
    with pytest.raises(EndpointNotAllowed):
        check_endpoint(endpoint)


def test_loopback_with_the_setting_only() -> None:
    for endpoint in ("http://127.0.0.1:5/p", "http://localhost/p", "https://127.0.0.1/p"):
        assert check_endpoint(endpoint, allow_loopback=True) == endpoint
        with pytest.raises(EndpointNotAllowed):
            check_endpoint(endpoint)
    with pytest.raises(EndpointNotAllowed):
        check_endpoint("http://127.0.0.2/p", allow_loopback=True)


def test_events_default_and_order() -> None:
    assert check_subscription(body()).events == ("prompts",)
    assert check_subscription(body(events=["turn_end", "prompts"])).events == ("prompts",
                                                                               "turn_end")
    with pytest.raises(BadRequest):
        check_subscription(body(events=["everything"]))


def test_keys_are_checked() -> None:
    good = body()
    with pytest.raises(BadRequest, match="p256dh"):
        check_subscription({**good, "keys": {**good["keys"], "p256dh": "B" + "A" * 86}})
    with pytest.raises(BadRequest, match="auth"):
        check_subscription({**good, "keys": {**good["keys"], "auth": "AAAA"}})


def test_kept_in_a_private_file(tmp_path: Path) -> None:
    store = FileSubscriptions(tmp_path)
    subscription = check_subscription(body())
    store.add(subscription)
    assert (tmp_path / "push-subscriptions.json").stat().st_mode & 0o777 == 0o600
    again = FileSubscriptions(tmp_path)
    assert again.all() == [subscription]
    assert again.remove(subscription.endpoint) and not again.remove(subscription.endpoint)
    assert FileSubscriptions(tmp_path).all() == []


def test_subscribing_again_replaces_and_the_oldest_goes_past_the_limit() -> None:
    store = MemorySubscriptions()
    for i in range(MAX_SUBSCRIPTIONS + 1):
        store.add(check_subscription(body(f"https://push.example/{i}")))
    endpoints = [s.endpoint for s in store.all()]
    assert len(endpoints) == MAX_SUBSCRIPTIONS and "https://push.example/0" not in endpoints
    store.add(check_subscription(body("https://push.example/5", events=["prompts", "turn_end"])))
    assert store.get("https://push.example/5").events == ("prompts", "turn_end")
    assert len(store.all()) == MAX_SUBSCRIPTIONS


def test_claims_once_until_they_expire() -> None:
    claims = MemoryClaims()
    assert claims.claim("a", 60) and not claims.claim("a", 60) and claims.claim("b", 60)
    assert claims.claim("c", 0) and claims.claim("c", 0)  # expired at once


def test_redis_claims_once_across_workers(redis_server: Any, redis_prefix: str) -> None:
    import redis

    from tether.push.subscriptions import RedisClaims, RedisSubscriptions

    client = redis.Redis.from_url(redis_server.url)
    one, two = (RedisClaims(client, redis_prefix, w) for w in ("w1", "w2"))
    assert one.claim("req:r:s", 60) and not two.claim("req:r:s", 60)
    assert 0 < client.ttl(f"{redis_prefix}:push:claim:req:r:s") <= 60
    store = RedisSubscriptions(client, redis_prefix)
    subscription = check_subscription(body())
    store.add(subscription)
    assert RedisSubscriptions(client, redis_prefix).all() == [subscription]
    assert store.remove(subscription.endpoint) and store.all() == []
    client.close()
