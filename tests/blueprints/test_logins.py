"""Login cookies with several workers: a logout on one is a logout on all (Redis)."""

from __future__ import annotations

import redis

from blueprints.logins import Logins, RedisRevocations, Verdict
from tests.redis_server import RedisServer

TOKEN = "a-token-of-sixteen-or-more"
KEY = "a-secret-key-of-sixteen-or-more"


def test_a_logout_on_one_worker_ends_the_login_on_every_worker(
        redis_server: RedisServer, redis_prefix: str) -> None:
    with redis.Redis.from_url(redis_server.url) as client:
        one = Logins(TOKEN, KEY, 3600, shared=RedisRevocations(client, redis_prefix))
        other = Logins(TOKEN, KEY, 3600, shared=RedisRevocations(client, redis_prefix))
        cookie = one.issue()
        login = other.check(cookie)
        assert login.verdict is Verdict.VALID and login.login_id
        one.revoke(login.login_id)
        assert other.check(cookie).verdict is Verdict.REVOKED
        assert one.check(one.issue()).verdict is Verdict.VALID  # others are untouched
        ttl = client.pttl(f"{redis_prefix}:revoked:{login.login_id}")
        assert 3_590_000 < ttl <= 3_600_000  # kept until the cookie would have expired
