"""Push subscriptions: which endpoints may be named, and where subscriptions are kept.

A subscription is the browser's ``PushSubscription.toJSON()`` (``endpoint``, ``keys.p256dh``,
``keys.auth``) and the events the device asked for. The endpoint is where the server will
post, so it is checked (:func:`check_endpoint`): ``https://`` on a DNS name, as push
services are (an IP literal, ``http:``, ``file:``, ``javascript:`` are refused), so that no
client can make the server post to an address of its choosing; loopback only with
``TETHER_PUSH_ALLOW_LOOPBACK`` (tests). A DNS name that resolves to a private address is not
refused: push services are named hosts, and a person with the token can already run
commands on this machine.

Kept per store: :class:`MemorySubscriptions` (``TETHER_STORE=memory``: one process, until it
stops; the page subscribes again when it loads), :class:`FileSubscriptions` (sqlite: a JSON
file in the data dir, mode 0600) and :class:`RedisSubscriptions` (one hash under the prefix,
shared by every worker). Keyed by endpoint: subscribing again replaces.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

from tether.datadir import FILE_MODE
from tether.errors import BadRequest, EndpointNotAllowed
from tether.push.keys import unb64

#: The events a device may ask for: ``prompts`` (approvals and questions, and their
#: ``resolved``) and ``turn_end`` (the per-device "turn finished" option).
EVENTS = ("prompts", "turn_end")
DEFAULT_EVENTS = ("prompts",)
#: Longest endpoint accepted, in characters (push services' are 150-500).
MAX_ENDPOINT_CHARS = 2000
#: Most subscriptions kept; past it the oldest is dropped (a device that subscribes again
#: after clearing its data leaves its old endpoint behind until the push service says 410).
MAX_SUBSCRIPTIONS = 200
#: The subscriptions' file in the data dir (sqlite store).
SUBSCRIPTIONS_FILE = "push-subscriptions.json"

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_LOOPBACK_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Subscription:
    endpoint: str
    p256dh: str
    auth: str
    events: tuple[str, ...] = DEFAULT_EVENTS
    created_at: float = field(default=0.0, compare=False)

    @property
    def key(self) -> str:
        """A short stable name of the endpoint (claims, logs): never the endpoint itself,
        which is a capability to push to the device."""
        return hashlib.sha256(self.endpoint.encode()).hexdigest()[:20]

    def info(self) -> dict[str, Any]:
        """pywebpush's ``subscription_info``."""
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "events": list(self.events)})

    @classmethod
    def from_json(cls, text: str | bytes) -> Subscription:
        raw = json.loads(text)
        return cls(raw["endpoint"], raw["p256dh"], raw["auth"], tuple(raw["events"]),
                   float(raw.get("created_at", 0)))


def check_endpoint(endpoint: str, allow_loopback: bool = False) -> str:
    """``endpoint`` if the server may post to it.

    :raises EndpointNotAllowed: not ``https://`` with a DNS host name (an IP literal,
        another scheme, user info, a single-label name); ``http(s)://127.0.0.1`` and
        ``http(s)://localhost`` pass only with ``allow_loopback``.
    """
    refuse = EndpointNotAllowed("a push endpoint must be an https:// URL on a push service's "
                                "host name")
    if len(endpoint) > MAX_ENDPOINT_CHARS or not endpoint.isascii() or not endpoint.isprintable() \
            or any(c.isspace() for c in endpoint):
        raise refuse
    try:
        parts = urlsplit(endpoint)
        host, _port = parts.hostname, parts.port  # a bad port raises
    except ValueError:
        raise refuse from None
    if not host or parts.username is not None or parts.password is not None or "@" in \
            parts.netloc:
        raise refuse
    if allow_loopback and host in _LOOPBACK_NAMES and parts.scheme in ("http", "https"):
        return endpoint
    if parts.scheme != "https":
        raise refuse
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise refuse  # an IP literal: push services are named hosts
    labels = host.rstrip(".").split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels) \
            or labels[-1].isdigit() or labels[-1] == "localhost":
        raise refuse
    return endpoint


def check_subscription(body: Mapping[str, Any], allow_loopback: bool = False,
                       now: float | None = None) -> Subscription:
    """A :class:`Subscription` of a ``PushSubscription.toJSON()`` body with ``events``.

    :raises EndpointNotAllowed: see :func:`check_endpoint`.
    :raises BadRequest: ``keys.p256dh`` is not a P-256 point (65 bytes, uncompressed),
        ``keys.auth`` not 16 bytes, or ``events`` names something else.
    """
    endpoint = check_endpoint(str(body.get("endpoint") or ""), allow_loopback)
    keys = body.get("keys")
    if not isinstance(keys, Mapping):
        raise BadRequest("keys: the subscription's p256dh and auth are required")
    p256dh, auth = keys.get("p256dh"), keys.get("auth")
    try:
        point = unb64(p256dh) if isinstance(p256dh, str) and len(p256dh) < 200 else b""
        if len(point) != 65:
            raise ValueError
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise BadRequest("keys.p256dh: not an uncompressed P-256 public key in URL-safe "
                         "base64") from None
    try:
        if not isinstance(auth, str) or len(auth) > 100 or len(unb64(auth)) != 16:
            raise ValueError
    except ValueError:
        raise BadRequest("keys.auth: not 16 bytes in URL-safe base64") from None
    events = body.get("events", list(DEFAULT_EVENTS))
    if not isinstance(events, list) or not all(e in EVENTS for e in events):
        raise BadRequest(f"events: a list of {', '.join(EVENTS)}")
    ordered = tuple(e for e in EVENTS if e in events)
    return Subscription(endpoint, p256dh, auth, ordered,
                        round(time.time() if now is None else now, 3))


class Subscriptions(Protocol):
    """Where subscriptions are kept, by endpoint."""

    def add(self, subscription: Subscription) -> None: ...

    def remove(self, endpoint: str) -> bool: ...

    def get(self, endpoint: str) -> Subscription | None: ...

    def all(self) -> list[Subscription]: ...


class MemorySubscriptions:
    """In this process only (``TETHER_STORE=memory``)."""

    def __init__(self, items: Iterable[Subscription] = ()) -> None:
        self._lock = threading.Lock()
        self._items = {s.endpoint: s for s in items}

    def add(self, subscription: Subscription) -> None:
        with self._lock:
            self._items.pop(subscription.endpoint, None)
            self._items[subscription.endpoint] = subscription
            while len(self._items) > MAX_SUBSCRIPTIONS:
                del self._items[next(iter(self._items))]
            self._changed()

    def remove(self, endpoint: str) -> bool:
        with self._lock:
            found = self._items.pop(endpoint, None) is not None
            if found:
                self._changed()
            return found

    def get(self, endpoint: str) -> Subscription | None:
        with self._lock:
            return self._items.get(endpoint)

    def all(self) -> list[Subscription]:
        with self._lock:
            return list(self._items.values())

    def _changed(self) -> None:
        """Under the lock, after every change."""


class FileSubscriptions(MemorySubscriptions):
    """In a JSON file of the data dir (mode 0600), rewritten whole on every change: one
    process (the sqlite store), a handful of devices."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / SUBSCRIPTIONS_FILE
        items: list[Subscription] = []
        if self.path.exists():
            items = [Subscription.from_json(json.dumps(raw))
                     for raw in json.loads(self.path.read_text(encoding="utf-8"))]
        super().__init__(items)

    def _changed(self) -> None:
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump([json.loads(s.to_json()) for s in self._items.values()], out)
        os.replace(temp, self.path)


class RedisSubscriptions:
    """In one Redis hash, ``<prefix>:push:subs`` (endpoint → JSON), for every worker."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._key = f"{prefix}:push:subs"

    def add(self, subscription: Subscription) -> None:
        self._client.hset(self._key, subscription.endpoint, subscription.to_json())
        if self._client.hlen(self._key) > MAX_SUBSCRIPTIONS:
            oldest = min(self.all(), key=lambda s: s.created_at)
            self._client.hdel(self._key, oldest.endpoint)

    def remove(self, endpoint: str) -> bool:
        return bool(self._client.hdel(self._key, endpoint))

    def get(self, endpoint: str) -> Subscription | None:
        raw = self._client.hget(self._key, endpoint)
        return None if raw is None else Subscription.from_json(raw)

    def all(self) -> list[Subscription]:
        return [Subscription.from_json(raw) for raw in self._client.hvals(self._key)]


class Claims(Protocol):
    """Once-only markers: the first :meth:`claim` of a name wins, in the whole cluster."""

    def claim(self, name: str, ttl_seconds: int) -> bool: ...


class MemoryClaims:
    """For one process (memory and sqlite stores)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}

    def claim(self, name: str, ttl_seconds: int) -> bool:
        now = time.monotonic()
        with self._lock:
            if len(self._until) > 10_000:
                self._until = {k: t for k, t in self._until.items() if t > now}
            if self._until.get(name, 0) > now:
                return False
            self._until[name] = now + ttl_seconds
            return True


class RedisClaims:
    """``SET <prefix>:push:claim:<name> <worker> NX EX <ttl>``: one worker of the cluster
    wins each name, whichever saw the request first."""

    def __init__(self, client: Any, prefix: str, worker: str) -> None:
        self._client = client
        self._prefix = f"{prefix}:push:claim:"
        self._worker = worker

    def claim(self, name: str, ttl_seconds: int) -> bool:
        return bool(self._client.set(self._prefix + name, self._worker, nx=True,
                                     ex=max(int(ttl_seconds), 1)))
