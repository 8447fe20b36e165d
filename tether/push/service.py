"""Web Push for one session registry: the keys, the subscriptions, the dispatcher.

Built by the app factory (``app.create_app``) after the registry; the blueprint
(``blueprints/push.py``) calls :meth:`PushService.subscribe` and :meth:`unsubscribe`.
"""

from __future__ import annotations

from typing import Any

from tether.errors import NotFound
from tether.push.dispatch import Post, PushDispatcher, Sender, webpush_post
from tether.push.keys import VapidKeys, load_keys
from tether.push.subscriptions import (
    Claims,
    FileSubscriptions,
    MemoryClaims,
    MemorySubscriptions,
    RedisClaims,
    RedisSubscriptions,
    Subscription,
    Subscriptions,
    check_endpoint,
    check_subscription,
)
from tether.sessions import SessionRegistry
from tether.stores.redis import RedisStore


class PushService:
    """:param post: does the HTTP POST (tests give their own); by default pywebpush."""

    def __init__(self, registry: SessionRegistry, keys: VapidKeys,
                 subscriptions: Subscriptions, claims: Claims, allow_loopback: bool = False,
                 post: Post | None = None, backoff_seconds: float = 1.0) -> None:
        self.registry = registry
        self.keys = keys
        self.subscriptions = subscriptions
        self.allow_loopback = allow_loopback
        self.sender = Sender(post or webpush_post(keys), subscriptions, backoff_seconds)
        self.dispatcher = PushDispatcher(registry.inbox, subscriptions, claims, self.sender,
                                         self._still_pending, self._title_of)
        registry.turn_listeners.append(self.dispatcher.turn_ended)

    def start(self) -> PushService:
        self.dispatcher.start()
        return self

    def subscribe(self, body: dict[str, Any]) -> Subscription:
        """Keep (or replace) the subscription of a ``PushSubscription.toJSON()`` body.

        :raises tether.errors.EndpointNotAllowed: see
            :func:`tether.push.subscriptions.check_endpoint`.
        :raises tether.errors.BadRequest: bad keys or events.
        """
        subscription = check_subscription(body, self.allow_loopback)
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, endpoint: str) -> None:
        """Forget the subscription of ``endpoint``.

        :raises NotFound: no such subscription.
        """
        if not self.subscriptions.remove(endpoint):
            raise NotFound("no push subscription for this endpoint")

    def _still_pending(self, session_id: str, request_id: str) -> bool:
        try:
            pending = self.registry.get(session_id).prompts.pending()
        except NotFound:
            return False
        return any(r.request_id == request_id for r in pending)

    def _title_of(self, session_id: str) -> str:
        try:
            return str(getattr(self.registry.get(session_id), "title", "") or "Tether")
        except NotFound:
            return "Tether"


def for_registry(registry: SessionRegistry, **options: Any) -> PushService:
    """The push service for ``registry``'s settings and store: subscriptions and claims in
    Redis with the Redis store, in a data-dir file (sqlite) or memory otherwise."""
    settings = registry.settings
    store = registry.store
    given = settings.vapid_private_key
    key = given.get_secret_value() if given else None
    if key is None and isinstance(store, RedisStore):
        # Every host of the cluster signs with one key, the one a browser subscribed with:
        # the first worker's (its data dir's) is kept in Redis for the others.
        shared = f"{store.prefix}:push:vapid"
        store.client.set(shared, load_keys(settings.data_dir, None, None).raw(), nx=True)
        key = store.client.get(shared).decode()
    keys = load_keys(settings.data_dir, key, settings.vapid_subject)
    subscriptions: Subscriptions
    claims: Claims
    if isinstance(store, RedisStore):
        worker = getattr(registry, "worker_id", settings.host_id)
        subscriptions = RedisSubscriptions(store.client, store.prefix)
        claims = RedisClaims(store.client, store.prefix, worker)
    elif settings.store == "sqlite":
        subscriptions, claims = FileSubscriptions(settings.data_dir), MemoryClaims()
    else:
        subscriptions, claims = MemorySubscriptions(), MemoryClaims()
    return PushService(registry, keys, subscriptions, claims, settings.push_allow_loopback,
                       **options)


__all__ = ["PushService", "for_registry", "check_endpoint"]
