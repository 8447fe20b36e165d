"""A push service of our own on a free ``127.0.0.1`` port: standard library, cryptography and
http_ece only.

It plays both ends a real one stands between: it makes each device's key pair and auth secret
as a browser would (:meth:`FakePushService.subscribe` gives the ``PushSubscription.toJSON()``
body), and it checks every POST as a push service and the device would together:

- ``Authorization: vapid t=<JWT>, k=<key>`` (RFC 8292): an ES256 JWT whose signature verifies
  against ``k``, ``k`` the server's key (``GET /api/push``'s, when the test says it), ``aud``
  the endpoint's origin, ``exp`` in the future and within 24 hours, ``sub`` a ``mailto:`` or
  ``https:`` URL;
- ``Content-Encoding: aes128gcm`` and a body that decrypts (RFC 8291) with the device's
  private key and auth secret to a JSON payload;
- ``TTL`` present (RFC 8030), ``Urgency`` and ``Topic`` as RFC 8030 allows.

Anything wrong is recorded in :attr:`errors` (and answered 400); a test asserts it is empty.
A test may script a device's answers: ``service.answers["phone"] = [429, 201]``.

    with FakePushService() as service:
        body = service.subscribe("phone")          # POST it to /api/push/subscriptions
        ...
        service.wait_for(1)                        # the pushes received so far
        service.pushes[0].payload["type"]          # "approval_request"
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def browser_subscription(endpoint: str) -> dict[str, Any]:
    """A ``PushSubscription.toJSON()`` for ``endpoint`` with keys made as a browser makes
    them (for a subscription nothing will be delivered to)."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return {"endpoint": endpoint, "expirationTime": None,
            "keys": {"p256dh": b64(public), "auth": b64(os.urandom(16))}}


@dataclass
class Device:
    name: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes


@dataclass
class Received:
    device: str
    headers: dict[str, str]
    payload: dict[str, Any]
    jwt: dict[str, Any]
    at: float = field(default_factory=time.time)


class FakePushService:
    """:param vapid_public_key: the key every push must be signed with (URL-safe base64);
        None: any key whose signature verifies."""

    def __init__(self, vapid_public_key: str | None = None) -> None:
        self.vapid_public_key = vapid_public_key
        self.devices: dict[str, Device] = {}
        self.pushes: list[Received] = []
        #: Every POST, also the refused ones: (device, status answered).
        self.posts: list[tuple[str, int]] = []
        self.errors: list[str] = []
        #: Scripted answers per device, used up one per POST; then 201.
        self.answers: dict[str, list[int]] = {}
        self._lock = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakePushService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def subscribe(self, name: str, events: list[str] | None = None) -> dict[str, Any]:
        """A new device ``name``: its key pair and auth secret, made as a browser makes them;
        the body of ``POST /api/push/subscriptions``."""
        key = ec.generate_private_key(ec.SECP256R1())
        device = Device(name, key, os.urandom(16))
        self.devices[name] = device
        public = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        body: dict[str, Any] = {"endpoint": self.endpoint(name), "expirationTime": None,
                                "keys": {"p256dh": b64(public), "auth": b64(device.auth)}}
        if events is not None:
            body["events"] = events
        return body

    def endpoint(self, name: str) -> str:
        return f"{self.origin}/push/{name}"

    def received(self, device: str | None = None, type: str | None = None) -> list[Received]:
        with self._lock:
            return [p for p in self.pushes if (device is None or p.device == device)
                    and (type is None or p.payload.get("type") == type)]

    def wait_for(self, count: int, timeout: float = 10.0, device: str | None = None,
                 type: str | None = None) -> list[Received]:
        """Block until at least ``count`` pushes (of ``device``, of ``type``) arrived.

        :raises AssertionError: not within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.received(device, type)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.received(device, type))} pushes of "
                                         f"{count} (errors: {self.errors})")
                self._lock.wait(left)
            return self.received(device, type)

    def wait_posts(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.posts) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.posts)} posts of {count}")
                self._lock.wait(left)

    # -- the checks ------------------------------------------------------------------------

    def check_vapid(self, authorization: str) -> dict[str, Any]:
        match = re.fullmatch(r"vapid t=([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+),\s*"
                             r"k=([A-Za-z0-9_-]+)", authorization)
        if match is None:
            raise ValueError(f"Authorization is not 'vapid t=…, k=…': {authorization[:40]!r}")
        token, key = match.groups()
        if self.vapid_public_key is not None and key != self.vapid_public_key:
            raise ValueError("k is not the server's VAPID key")
        head, claims, signature = token.split(".")
        header = json.loads(unb64(head))
        if header.get("alg") != "ES256":
            raise ValueError(f"JWT alg {header.get('alg')!r}, not ES256")
        raw = unb64(signature)
        if len(raw) != 64:
            raise ValueError("an ES256 signature is 64 bytes (r || s)")
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                   int.from_bytes(raw[32:], "big"))
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64(key))
        try:
            public.verify(der, f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise ValueError("the JWT's signature does not verify against k") from None
        body = json.loads(unb64(claims))
        if body.get("aud") != self.origin:
            raise ValueError(f"aud {body.get('aud')!r} is not {self.origin!r}")
        exp = body.get("exp")
        if not isinstance(exp, int) or not time.time() < exp <= time.time() + 86400:
            raise ValueError(f"exp {exp!r} is not within the next 24 hours")
        if not re.match(r"^(mailto:|https:)", str(body.get("sub", ""))):
            raise ValueError(f"sub {body.get('sub')!r} is not a mailto: or https: URL")
        return dict(body)

    def _receive(self, name: str, headers: dict[str, str], data: bytes) -> int:
        device = self.devices.get(name)
        if device is None:
            return 404
        jwt = self.check_vapid(headers.get("authorization", ""))
        if headers.get("content-encoding") != "aes128gcm":
            raise ValueError(f"Content-Encoding {headers.get('content-encoding')!r}")
        ttl = headers.get("ttl", "")
        if not ttl.isdigit():
            raise ValueError(f"TTL {ttl!r} is not a number of seconds")
        if headers.get("urgency", "normal") not in ("very-low", "low", "normal", "high"):
            raise ValueError(f"Urgency {headers.get('urgency')!r}")
        topic = headers.get("topic")
        if topic is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", topic):
            raise ValueError(f"Topic {topic!r} is not at most 32 URL-safe base64 characters")
        plain = http_ece.decrypt(data, private_key=device.private_key,
                                 auth_secret=device.auth, version="aes128gcm")
        payload = json.loads(plain)
        with self._lock:
            scripted = self.answers.get(name)
            status = scripted.pop(0) if scripted else 201
            if status < 300:
                self.pushes.append(Received(name, headers, payload, jwt))
        return status

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                name = self.path.removeprefix("/push/")
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    status = service._receive(name, headers, data)
                except Exception as exc:
                    with service._lock:
                        service.errors.append(f"{name}: {exc}")
                    status = 400
                with service._lock:
                    service.posts.append((name, status))
                    service._lock.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
