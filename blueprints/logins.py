"""Browser logins: signed, expiring, revocable cookies (README "Security").

A browser that proved it holds the token gets a cookie holding a random login id and its issue
time, signed (itsdangerous, HMAC-SHA1 over a SHA-512-derived key, the library's default) with
a key derived from both ``TETHER_SECRET_KEY`` and the token. So:

- it expires ``TETHER_SESSION_DAYS`` after it was issued (the signature covers the time);
- ``POST /logout`` revokes its id: the id is kept, until the cookie would have expired, in
  ``<data dir>/revoked-logins.json`` (mode 0600), or with the Redis store in Redis, where
  every worker of every host sees it (:class:`RedisRevocations`), so a copy of the cookie is
  refused too;
- changing the token or the secret key changes the signing key, which ends every login.

The cookie never holds the token or anything from which it could be recovered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import redis
from cachetools import LRUCache
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from tether.cluster.errors import available
from tether.datadir import private_file

logger = logging.getLogger(__name__)

#: The revocation list's file name in the data dir.
REVOKED_FILE = "revoked-logins.json"
#: Cookies whose signature was verified, remembered at once (about 200 bytes each).
VERIFIED_CACHE = 4096


class Verdict(Enum):
    """What a login cookie turned out to be."""

    VALID = "valid"
    EXPIRED = "expired"  # signed by this server, older than the login lifetime
    INVALID = "invalid"  # not signed with today's key: the token or secret key changed
    REVOKED = "revoked"  # ended by POST /logout

    @property
    def reason(self) -> str:
        """Why the browser must log in again, in words for the login page and the 401."""
        return {
            Verdict.VALID: "",
            Verdict.EXPIRED: "Your login expired: log in again.",
            Verdict.INVALID: "This server's token or secret key changed since you logged in, "
                             "which ends every login: log in with its current token.",
            Verdict.REVOKED: "This login was ended (logged out): log in again.",
        }[self]


@dataclass(frozen=True)
class Login:
    verdict: Verdict
    login_id: str | None = None


class RedisRevocations:
    """Revoked login ids in Redis, shared by every worker of every host: one key per id,
    ``<prefix>:revoked:<login id>``, that expires when the cookie would have.

    :param client: a redis-py client (the Redis store's).
    :raises tether.errors.StoreUnavailable: (from :meth:`revoked` and :meth:`revoke`)
        Redis does not answer; a login is neither accepted nor refused unchecked.
    """

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    @available
    def revoked(self, login_id: str) -> bool:
        return bool(self._client.exists(f"{self._prefix}:revoked:{login_id}"))

    @available
    def revoke(self, login_id: str, seconds: float) -> None:
        self._client.set(f"{self._prefix}:revoked:{login_id}", 1,
                         px=max(int(seconds * 1000), 1))


class Logins:
    """Issues and checks login cookies.

    :param token: the server's token.
    :param secret_key: ``TETHER_SECRET_KEY``, or the key kept in the data dir.
    :param max_age_seconds: a login's lifetime, in seconds.
    :param revoked_path: where revoked ids are kept; None keeps them in memory only.
    :param shared: keeps revoked ids instead (several workers: :class:`RedisRevocations`).
    """

    def __init__(self, token: str, secret_key: str, max_age_seconds: float,
                 revoked_path: Path | None = None,
                 shared: RedisRevocations | None = None) -> None:
        key = hmac.new(secret_key.encode(), token.encode(), hashlib.sha256).digest()
        self._serializer = URLSafeTimedSerializer(key, salt="tether login v2")
        self.max_age_seconds = max_age_seconds
        self._shared = shared
        self._revoked_path = revoked_path if shared is None else None
        self._lock = threading.Lock()
        self._revoked: dict[str, float] = self._load()  # login id -> when its cookie expires
        # cookie value -> (login id, when it expires), for signatures already verified
        self._verified: LRUCache[str, tuple[str, float]] = LRUCache(VERIFIED_CACHE)

    def issue(self) -> str:
        """A new login cookie's value (a fresh 128-bit id, signed with the issue time)."""
        return self._serializer.dumps(secrets.token_hex(16))

    def check(self, value: str) -> Login:
        """What ``value`` is: valid, expired, invalid or revoked (with its id when signed).

        A verified signature is remembered (:data:`VERIFIED_CACHE` cookies, least recently
        used first out), so a browser's every poll costs a lookup, not an HMAC (27 us to
        about 2 us); expiry and revocation are checked every time.
        """
        with self._lock:
            known = self._verified.get(value)
        if known is None:
            try:
                login_id, issued = self._serializer.loads(
                    value, max_age=self.max_age_seconds, return_timestamp=True)
            except SignatureExpired as exc:
                payload = exc.payload if isinstance(exc.payload, str) else None
                return Login(Verdict.EXPIRED, payload)
            except BadSignature:
                return Login(Verdict.INVALID)
            if not isinstance(login_id, str):
                return Login(Verdict.INVALID)
            known = (login_id, issued.timestamp() + self.max_age_seconds)
            with self._lock:
                self._verified[value] = known
        login_id, expires_at = known
        if time.time() > expires_at:
            return Login(Verdict.EXPIRED, login_id)
        if self._shared is not None:
            if self._shared.revoked(login_id):
                return Login(Verdict.REVOKED, login_id)
            return Login(Verdict.VALID, login_id)
        with self._lock:
            if login_id in self._revoked:
                return Login(Verdict.REVOKED, login_id)
        return Login(Verdict.VALID, login_id)

    def revoke(self, login_id: str) -> None:
        """End the login ``login_id``: its cookie is refused from now on, everywhere."""
        if self._shared is not None:
            self._shared.revoke(login_id, self.max_age_seconds)
            return
        with self._lock:
            now = time.time()
            self._revoked = {i: t for i, t in self._revoked.items() if t > now}
            self._revoked[login_id] = now + self.max_age_seconds
            self._save()

    def _load(self) -> dict[str, float]:
        if self._revoked_path is None:
            return {}
        try:
            data = json.loads(self._revoked_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("%s is unreadable (%s): no login is revoked", self._revoked_path, exc)
            return {}
        now = time.time()
        return {str(i): float(t) for i, t in data.items() if float(t) > now}

    def _save(self) -> None:
        if self._revoked_path is not None:
            private_file(self._revoked_path, json.dumps(self._revoked).encode())
