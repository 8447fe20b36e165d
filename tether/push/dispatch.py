"""Which request is pushed to whom, once; and the sender that posts off the request path.

Where pushes come from: the inbox (:mod:`tether.inbox`), which every worker already follows
for its inbox streams. :class:`PushDispatcher` waits on the inbox's revision and compares
each snapshot with the last: a request that appeared is pushed to every subscription that
wants ``prompts``; one that disappeared (answered, timed out, cancelled, its session gone)
gets one ``resolved`` push on the devices that got the request.

Exactly once: with ``TETHER_STORE=redis`` every worker of every host sees the same inbox, so
each push of a request to a subscription is first *claimed* (:class:`~tether.push.
subscriptions.RedisClaims`: ``SET NX`` on ``<prefix>:push:claim:req:<request id>:<endpoint
hash>``, kept past the request's lifetime); only the worker that won the claim posts it, and
the same worker posts its ``resolved`` (it saw the request too, and its own ordered sender
knows whether the request's push went out). With memory or sqlite there is one process and
the claims are in memory. A request answered before its push went out gets none: a queued
push is dropped when its request leaves the inbox, and the sender asks whether the request
still waits just before posting.

:class:`Sender` posts from one thread of its own, never from a request: 201 is delivered,
404/410 deletes the subscription (the device unsubscribed), 429 and 5xx (or no answer) are
retried with exponential backoff (``Retry-After`` honoured), at most :data:`ATTEMPTS` times;
any other answer is given up and logged.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tether.inbox import Inbox
from tether.push.keys import VapidKeys, b64
from tether.push.subscriptions import Claims, Subscription, Subscriptions

logger = logging.getLogger(__name__)

#: Seconds between snapshots when the inbox does not change (a missed wake-up costs this).
WATCH_SECONDS = 30.0
#: TTL of a request's push that waits forever (``TETHER_PROMPT_TIMEOUT=0``), in seconds.
FOREVER_TTL_SECONDS = 86400
#: TTL of a ``resolved`` push and of a ``turn_end`` push, in seconds.
RESOLVED_TTL_SECONDS = 86400
TURN_END_TTL_SECONDS = 3600
#: How long a claim outlives its request, in seconds (a worker that starts late must still
#: find it).
CLAIM_MARGIN_SECONDS = 3600
#: Posts per push at most (the first and its retries).
ATTEMPTS = 5
#: Longest title and body of a notification, in characters (the command: 200).
MAX_TITLE_CHARS = 100
MAX_BODY_CHARS = 200

#: ``post(push) -> (status, retry_after)``: the push service's HTTP status (None: no
#: answer) and its ``Retry-After`` in seconds, if any.
Post = Callable[["Push"], tuple[int | None, float | None]]


def topic(name: str) -> str:
    """RFC 8030 ``Topic``: URL-safe base64, at most 32 characters; a hash of ``name``, so
    that a newer push of the same request replaces an undelivered older one."""
    return b64(hashlib.sha256(name.encode()).digest())[:32]


def shorten(text: str, limit: int) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def request_payload(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The push of an inbox entry: no token, nothing secret; the command shortened."""
    approval = entry["kind"] == "approval"
    session = shorten(entry.get("session_title") or "Tether", MAX_TITLE_CHARS - 20)
    return {
        "type": "approval_request" if approval else "clarify_request",
        "session_id": entry["session_id"],
        "request_id": entry["request_id"],
        "title": f"{'Approval needed' if approval else 'Question'}: {session}",
        "body": shorten(entry.get("summary") or "", MAX_BODY_CHARS),
        "url": f"/#s={entry['session_id']}",
    }


@dataclass(eq=False)
class Push:
    """One payload for one subscription, and where it stands."""

    subscription: Subscription
    payload: dict[str, Any]
    ttl: int
    urgency: str
    topic: str
    #: Asked just before posting: False drops the push (its request was answered).
    still_wanted: Callable[[], bool] | None = None
    attempts: int = 0
    #: queued, sending, delivered, failed, dropped
    state: str = "queued"
    #: Posted once this push is delivered (its request was resolved while it was sending).
    then: Push | None = None
    data: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        self.data = json.dumps(self.payload, separators=(",", ":")).encode()


class Sender:
    """Posts pushes from one daemon thread, in order of due time, with bounded retries.

    :param post: does one HTTP POST (:func:`webpush_post`).
    :param subscriptions: where a subscription gone for good (404, 410) is deleted.
    :param backoff_seconds: the first retry's delay; each next one doubles, up to
        ``max_backoff_seconds``.
    """

    def __init__(self, post: Post, subscriptions: Subscriptions, backoff_seconds: float = 1.0,
                 max_backoff_seconds: float = 60.0, attempts: int = ATTEMPTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._post = post
        self._subscriptions = subscriptions
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._attempts = attempts
        self._clock = clock
        self._due: list[tuple[float, int, Push]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._sending = False
        #: Pushes posted and answered 2xx, for figures and tests.
        self.delivered = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="push-sender", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def submit(self, push: Push, delay: float = 0.0) -> None:
        with self._cond:
            heapq.heappush(self._due, (self._clock() + delay, next(self._order), push))
            self._cond.notify_all()

    def resolve(self, push: Push, resolved: Push) -> None:
        """``push``'s request is settled: drop it if it has not gone out, else post
        ``resolved`` once it is delivered."""
        with self._cond:
            if push.state == "queued":
                push.state = "dropped"
            elif push.state == "sending":
                push.then = resolved
            elif push.state == "delivered":
                self.submit(resolved)

    def idle(self) -> bool:
        """Nothing queued or being sent (tests)."""
        with self._cond:
            return not self._due and not self._sending

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (not self._due or self._due[0][0] > self._clock()):
                    wait = self._due[0][0] - self._clock() if self._due else None
                    self._cond.wait(wait)
                if self._stopping:
                    return
                _, _, push = heapq.heappop(self._due)
                if push.state == "dropped":
                    continue
                push.state = "sending"
                self._sending = True
            try:
                self._send(push)
            except Exception:  # one bad push never stops the sender
                logger.exception("push to %s failed", push.subscription.key)
                with self._cond:
                    push.state = "failed"
            finally:
                with self._cond:
                    self._sending = False

    def _send(self, push: Push) -> None:
        if push.still_wanted is not None and push.attempts == 0 and not push.still_wanted():
            with self._cond:
                push.state = "dropped"
            return
        push.attempts += 1
        status, retry_after = self._post(push)
        if status is not None and 200 <= status < 300:
            with self._cond:
                push.state = "delivered"
                self.delivered += 1
                if push.then is not None:
                    self.submit(push.then)
            return
        if status in (404, 410):
            logger.info("push subscription %s is gone (%s): deleted", push.subscription.key,
                        status)
            self._subscriptions.remove(push.subscription.endpoint)
        elif (status is None or status == 429 or status >= 500) \
                and push.attempts < self._attempts:
            delay = min(self._backoff * 2 ** (push.attempts - 1), self._max_backoff)
            if retry_after is not None:
                delay = min(max(delay, retry_after), self._max_backoff)
            logger.info("push to %s: %s; retry %s in %.1f s", push.subscription.key,
                        status or "no answer", push.attempts, delay)
            with self._cond:
                if push.then is not None:  # resolved meanwhile: no use retrying it
                    push.state = "dropped"
                    return
                push.state = "queued"
            self.submit(push, delay)
            return
        else:
            logger.warning("push to %s given up: %s after %s attempts", push.subscription.key,
                           status or "no answer", push.attempts)
        with self._cond:
            push.state = "failed"


class PushDispatcher:
    """Turns the inbox's changes and ended turns into pushes (see the module's docstring).

    :param still_pending: ``(session_id, request_id) -> bool``, asked before a request's
        push is posted.
    :param title_of: a session's title, for ``turn_end`` pushes.
    """

    def __init__(self, inbox: Inbox, subscriptions: Subscriptions, claims: Claims,
                 sender: Sender, still_pending: Callable[[str, str], bool],
                 title_of: Callable[[str], str] = lambda session_id: "Tether",
                 clock: Callable[[], float] = time.time) -> None:
        self._inbox = inbox
        self._subscriptions = subscriptions
        self._claims = claims
        self._sender = sender
        self._still_pending = still_pending
        self._title_of = title_of
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._pushed: dict[str, list[Push]] = {}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._sender.start()
        self._thread = threading.Thread(target=self._watch, name="push-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        revision = -1
        while not self._inbox.closed:
            try:
                self._inbox.wait_for(revision, WATCH_SECONDS)
                if self._inbox.closed:
                    break
                snapshot = self._inbox.snapshot()
                revision = snapshot["revision"]
                self.check(snapshot["entries"])
            except Exception:  # a store that does not answer: try again shortly
                logger.exception("push: the inbox could not be read")
                time.sleep(1.0)
        self._sender.stop()

    def check(self, entries: list[dict[str, Any]]) -> None:
        """Push the requests that appeared since the last call; resolve those gone."""
        with self._lock:
            current = {e["request_id"]: e for e in entries}
            new = [e for rid, e in current.items() if rid not in self._seen]
            gone = [rid for rid in self._seen if rid not in current]
            self._seen = set(current)
            for entry in new:
                self._request(entry)
            for rid in gone:
                self._resolved(rid)

    def _request(self, entry: Mapping[str, Any]) -> None:
        sid, rid = entry["session_id"], entry["request_id"]
        expires = entry.get("expires_at")
        ttl = (math.floor(expires - self._clock()) if expires is not None
               else FOREVER_TTL_SECONDS)
        if ttl < 1:
            return  # it times out before anyone could answer
        payload = request_payload(entry)
        for subscription in self._subscriptions.all():
            if "prompts" not in subscription.events:
                continue
            if not self._claims.claim(f"req:{rid}:{subscription.key}",
                                      ttl + CLAIM_MARGIN_SECONDS):
                continue  # another worker pushes this one
            push = Push(subscription, payload, ttl, "high", topic(rid),
                        still_wanted=lambda sid=sid, rid=rid: self._still_pending(sid, rid))
            self._pushed.setdefault(rid, []).append(push)
            self._sender.submit(push)

    def _resolved(self, rid: str) -> None:
        for push in self._pushed.pop(rid, []):
            resolved = Push(push.subscription,
                            {"type": "resolved", "session_id": push.payload["session_id"],
                             "request_id": rid},
                            RESOLVED_TTL_SECONDS, "normal", push.topic)
            self._sender.resolve(push, resolved)

    def turn_ended(self, session_id: str, turn: int, reason: str) -> None:
        """A turn this process ran ended: one push to each subscription that asked for
        ``turn_end``."""
        subscriptions = [s for s in self._subscriptions.all() if "turn_end" in s.events]
        if not subscriptions:
            return
        title = shorten(self._title_of(session_id), MAX_TITLE_CHARS)
        payload = {"type": "turn_end", "session_id": session_id, "turn": turn,
                   "reason": reason, "title": title,
                   "body": "Turn finished" if reason == "completed" else f"Turn ended: {reason}",
                   "url": f"/#s={session_id}"}
        for subscription in subscriptions:
            if self._claims.claim(f"turn:{session_id}:{turn}:{subscription.key}",
                                  TURN_END_TTL_SECONDS):
                self._sender.submit(Push(subscription, payload, TURN_END_TTL_SECONDS,
                                         "normal", topic(f"turn:{session_id}")))


def webpush_post(keys: VapidKeys, timeout_seconds: float = 10.0) -> Post:
    """A :data:`Post` through pywebpush: VAPID-signed (``vapid t=…, k=…``), the payload
    encrypted aes128gcm for the subscription's keys, ``TTL``, ``Urgency`` and ``Topic``."""
    import requests
    from pywebpush import WebPushException, webpush

    vapid = keys.vapid()
    session = requests.Session()  # keep-alive to each push service; one sender thread

    def post(push: Push) -> tuple[int | None, float | None]:
        try:
            response = webpush(push.subscription.info(), push.data.decode(),
                               vapid_private_key=vapid, vapid_claims=keys.claims(),
                               ttl=push.ttl, timeout=timeout_seconds,
                               headers={"Urgency": push.urgency, "Topic": push.topic},
                               requests_session=session)
            return response.status_code, None  # type: ignore[union-attr]
        except WebPushException as exc:
            if exc.response is None:
                return None, None
            return exc.response.status_code, _retry_after(exc.response.headers)
        except requests.RequestException as exc:
            logger.info("push to %s: %r", push.subscription.key, exc)
            return None, None

    return post


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None
