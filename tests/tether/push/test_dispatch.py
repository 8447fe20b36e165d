"""The dispatcher and the sender with a recording ``post``: once per request and device,
none for a request answered first, resolved after delivery, retries and deletions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.tether.push.test_subscriptions import body
from tether.inbox import Inbox
from tether.push.dispatch import (
    Push,
    PushDispatcher,
    Sender,
    request_payload,
    topic,
)
from tether.push.subscriptions import MemoryClaims, MemorySubscriptions, check_subscription


class Recorder:
    """A ``post`` that answers from a script per endpoint (then 201) and records."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any], int | None]] = []
        self.script: dict[str, list[int | None]] = {}
        self.gate: threading.Event | None = None
        self.lock = threading.Lock()

    def __call__(self, push: Push) -> tuple[int | None, float | None]:
        if self.gate is not None:
            self.gate.wait(5)
        endpoint = push.subscription.endpoint
        with self.lock:
            scripted = self.script.get(endpoint)
            status = scripted.pop(0) if scripted else 201
            self.posts.append((endpoint, push.payload, status))
        return status, None

    def types(self) -> list[str]:
        return [p["type"] for _, p, s in self.posts if s == 201]


def wait(check: Callable[[], Any], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def entry(rid: str = "r1", expires: float | None = None) -> dict[str, Any]:
    return {"session_id": "s1", "session_title": "deploy", "kind": "approval", "request_id": rid,
            "summary": "Bash: " + "x" * 300, "created_at": 1.0, "expires_at": expires}


@pytest.fixture
def world() -> Any:
    class World:
        post = Recorder()
        subscriptions = MemorySubscriptions()
        pending = {"r1", "r2"}
        sender = Sender(post, subscriptions, backoff_seconds=0.01)
        dispatcher = PushDispatcher(Inbox(lambda: [], "e"), subscriptions, MemoryClaims(),
                                    sender, lambda sid, rid: rid in World.pending)

    World.subscriptions.add(check_subscription(body("https://push.example/a")))
    World.subscriptions.add(check_subscription(body("https://push.example/b",
                                                    events=["prompts", "turn_end"])))
    World.sender.start()
    yield World
    World.sender.stop()


def test_payload_is_short_and_has_no_secret() -> None:
    payload = request_payload(entry())
    assert payload["type"] == "approval_request" and payload["url"] == "/#s=s1"
    assert payload["title"] == "Approval needed: deploy" and len(payload["body"]) == 200
    assert len(topic("r1")) == 32 and topic("r1") == topic("r1") != topic("r2")


def test_once_per_request_and_device_then_resolved(world: Any) -> None:
    world.dispatcher.check([entry()])
    world.dispatcher.check([entry()])  # the same snapshot again: nothing new
    wait(lambda: len(world.post.posts) == 2)
    world.dispatcher.check([])
    wait(lambda: world.post.types().count("resolved") == 2)
    time.sleep(0.05)
    assert sorted(world.post.types()) == ["approval_request"] * 2 + ["resolved"] * 2


def test_a_second_worker_pushes_nothing(world: Any) -> None:
    claims = MemoryClaims()
    other = PushDispatcher(Inbox(lambda: [], "e"), world.subscriptions, claims, world.sender,
                           lambda sid, rid: True)
    world.dispatcher._claims = claims  # one claim store: the cluster's
    world.dispatcher.check([entry()])
    other.check([entry()])
    wait(lambda: len(world.post.posts) == 2)  # delivered, so its resolution is pushed too
    other.check([])
    world.dispatcher.check([])
    wait(lambda: len(world.post.posts) == 4)
    time.sleep(0.05)
    assert len(world.post.posts) == 4


def test_none_for_a_request_answered_before_it_went_out(world: Any) -> None:
    world.post.gate = threading.Event()
    world.pending.discard("r1")
    world.dispatcher.check([entry()])
    world.post.gate.set()
    time.sleep(0.1)
    assert world.post.posts == []
    world.dispatcher.check([])  # and no resolved for it either
    time.sleep(0.1)
    assert world.post.posts == []


def test_resolved_while_queued_drops_the_request(world: Any) -> None:
    world.post.gate = threading.Event()
    world.dispatcher.check([entry("r1"), entry("r2")])  # r1 blocks the sender; r2 waits
    time.sleep(0.05)
    world.dispatcher.check([entry("r1")])  # r2 answered meanwhile
    world.post.gate.set()
    wait(lambda: len(world.post.posts) == 2)
    time.sleep(0.05)
    assert {p["request_id"] for _, p, _ in world.post.posts} == {"r1"}


def test_retry_then_delete(world: Any) -> None:
    world.post.script = {"https://push.example/a": [429, 503, None],
                         "https://push.example/b": [410]}
    world.dispatcher.check([entry()])
    wait(lambda: world.post.types() == ["approval_request"])
    assert [s for e, _, s in world.post.posts if e.endswith("/a")] == [429, 503, None, 201]
    assert [s.endpoint for s in world.subscriptions.all()] == ["https://push.example/a"]


def test_retries_are_bounded(world: Any) -> None:
    world.post.script = {"https://push.example/a": [500] * 10}
    world.subscriptions.remove("https://push.example/b")
    world.dispatcher.check([entry()])
    time.sleep(0.8)
    assert len(world.post.posts) == 5


def test_expired_requests_are_not_pushed(world: Any) -> None:
    world.dispatcher.check([entry(expires=time.time() + 0.5)])
    time.sleep(0.1)
    assert world.post.posts == []


def test_turn_end_only_to_devices_that_asked(world: Any) -> None:
    world.dispatcher.turn_ended("s1", 3, "completed")
    world.dispatcher.turn_ended("s1", 3, "completed")  # told twice: pushed once
    wait(lambda: len(world.post.posts) == 1)
    time.sleep(0.05)
    endpoint, payload, _ = world.post.posts[0]
    assert endpoint == "https://push.example/b"
    assert payload["type"] == "turn_end" and payload["turn"] == 3
