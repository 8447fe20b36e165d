"""The shared-state functions under random interleavings of three fake workers (Hypothesis
state machine on a private Redis): ids without gaps, one ``turn_end`` per turn, one
``*_resolved`` per request, and no write with a stale fence."""

from __future__ import annotations

import json
import secrets
import uuid
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.redis_server import RedisServer
from tether.cluster.envelopes import HOLE, rest, template
from tether.cluster.membership import Membership
from tether.config import Settings
from tether.errors import Fenced
from tether.prompts import Resolution, describe, resolved_payload
from tether.stores.redis import RedisStore, Refused

WORKERS = 3


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    with RedisServer(tmp_path_factory.mktemp("redis-properties")) as server:
        yield server.url


def test_shared_state_functions_keep_their_invariants(redis_url: str, tmp_path: Path) -> None:
    class Cluster(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.prefix = f"p{secrets.token_hex(6)}"
            self.settings = Settings.from_env({
                "data_dir": tmp_path, "TETHER_STORE": "redis", "TETHER_REDIS_URL": redis_url,
                "TETHER_REDIS_PREFIX": self.prefix, "TETHER_LEASE_SECONDS": 60,
                "TETHER_HEARTBEAT_SECONDS": 1})
            self.store = RedisStore(redis_url, self.prefix)
            self.sid = secrets.token_hex(16)
            self.store.call("create", self.sid, "1.0", 10, "agent", "local", "title", "t")
            self.log = self.store.open_log(self.sid)
            self.wids = [f"h:{n}:0" for n in range(WORKERS)]
            for wid in self.wids:
                self.store.client.set(f"{self.prefix}:w:{wid}", 1)
                self.store.client.sadd(f"{self.prefix}:workers", wid)
            #: What each worker believes: its fence as the owner ("" if none), its turn.
            self.fence = ["" for _ in self.wids]
            self.turn = [0 for _ in self.wids]
            self.requests: list[str] = []

        def teardown(self) -> None:
            self.store.close()

        def _rec(self, name: str) -> str:
            value = self.store.client.hget(self.store.key(self.sid, "rec"), name)
            return "" if value is None else value.decode()

        def _membership(self, w: int) -> Membership:
            return Membership(self.store, self.settings, lambda: None, self.wids[w])

        @rule(w=st.integers(0, WORKERS - 1))
        def prompt(self, w: int) -> None:
            head, tail = template(self.sid, 1.0, "user", {"turn": HOLE, "text": "hi"})
            try:
                reply = self.store.call("begin_turn", self.sid, self.wids[w], "", head, tail)
            except Refused as exc:
                assert exc.code == "BUSY"
                return
            if reply[0] == b"takeover":
                self._membership(w).take_over(self.sid, reply[1].decode())
                return
            if reply[2].decode() == self.wids[w]:
                self.fence[w], self.turn[w] = str(int(reply[3])), int(reply[1])

        @rule(w=st.integers(0, WORKERS - 1))
        def agent_writes(self, w: int) -> None:
            fence = self.fence[w]
            if not fence:
                return
            current = self._rec("fence")
            try:
                self.log.append("text", {"text": f"from {w}"}, fence=fence)
            except Fenced:
                event("a stale write was refused")
                assert fence != current
                self.fence[w] = ""
            else:
                assert fence == current, "a write with a stale fence was accepted"

        @rule(w=st.integers(0, WORKERS - 1), size=st.integers(1, 5))
        def agent_bursts(self, w: int, size: int) -> None:
            fence = self.fence[w]
            if not fence:
                return
            current = self._rec("fence")
            before = self.log.sync(10**9)
            drafts = [self.log.draft("text_delta", {"text": f"{w}.{i}"}) for i in range(size)]
            try:
                written = self.log.append_many(drafts, fence=fence)
            except Fenced:
                event("a stale burst was refused")
                assert fence != current
                self.fence[w] = ""
                assert self.log.sync(10**9) == before, "part of a refused burst was written"
            else:
                assert fence == current, "a burst with a stale fence was accepted"
                ids = [e.id for e in written]
                assert ids == list(range(ids[0], ids[0] + size))

        @rule(w=st.integers(0, WORKERS - 1))
        def agent_asks(self, w: int) -> None:
            fence = self.fence[w]
            if not fence:
                return
            rid = uuid.uuid4().hex
            key = f"k{len(self.requests) % 2}"  # some identical requests: never stacked
            pending = json.dumps({"kind": "approval", "fields": {}, "key": key,
                                  "created_at": 1.0, "expires_at": None})
            auto = Resolution("allow", "auto", by="auto-approve")
            try:
                got, created, _ = self.store.call(
                    "open_prompt", self.sid, fence, rid, "approval", key, pending,
                    rest(self.sid, 1.0, "approval_request", {"request_id": rid}),
                    rest(self.sid, 1.0, "approval_resolved",
                         resolved_payload(rid, "approval", auto)), describe(auto), 1)
            except Fenced:
                self.fence[w] = ""
                return
            if int(created):
                self.requests.append(got.decode())

        @precondition(lambda self: self.requests)
        @rule(data=st.data())
        def someone_answers(self, data: st.DataObject) -> None:
            rid = data.draw(st.sampled_from(self.requests))
            answer = Resolution("allow", "user", by="x")
            try:
                self.store.call("settle", self.sid, rid, "approval",
                                rest(self.sid, 1.0, "approval_resolved",
                                     resolved_payload(rid, "approval", answer)),
                                describe(answer))
            except Refused as exc:
                assert exc.code == "NOT_FOUND"

        @rule(w=st.integers(0, WORKERS - 1))
        def someone_stops(self, w: int) -> None:
            reply = self.store.call("request_cancel", self.sid)
            if isinstance(reply, list):
                self._membership(w).take_over(self.sid, reply[1].decode())

        @rule(w=st.integers(0, WORKERS - 1))
        def turn_ends(self, w: int) -> None:
            fence, turn = self.fence[w], self.turn[w]
            if not fence or not turn:
                return
            end = rest(self.sid, 1.0, "turn_end", {"turn": turn, "reason": "completed"})
            try:
                self.store.call("end_turn", self.sid, fence, turn, end)
            except Fenced:
                self.fence[w] = ""
            self.turn[w] = 0

        @rule(w=st.integers(0, WORKERS - 1))
        def worker_dies(self, w: int) -> None:
            self.store.client.delete(f"{self.prefix}:w:{self.wids[w]}")
            self.wids[w] = f"h:{w}:{secrets.token_hex(2)}"  # it comes back as a new worker
            self.store.client.set(f"{self.prefix}:w:{self.wids[w]}", 1)
            # Its old self keeps believing it owns the session (a stalled worker).

        @rule(w=st.integers(0, WORKERS - 1))
        def reaper_runs(self, w: int) -> None:
            self.store.client.delete(f"{self.prefix}:reaper")
            if self._membership(w).reap():
                event("a dead worker's session was taken over")

        @rule(w=st.integers(0, WORKERS - 1), dead=st.integers(0, WORKERS - 1))
        def reaper_reads(self, w: int, dead: int) -> None:
            # A reaper reads a session now and commits its takeover later: what happens in
            # between must make the commit retry, never end a turn twice.
            owner = self._rec("owner")
            if owner:
                self.prepared = self._membership(w).takeover_args(self.sid, owner)

        @precondition(lambda self: getattr(self, "prepared", None))
        @rule(w=st.integers(0, WORKERS - 1))
        def reaper_commits(self, w: int) -> None:
            reply = self._membership(w).commit_takeover(self.sid, self.prepared)
            assert reply in ("OK", "RETRY", "GONE")
            self.prepared = None

        @invariant()
        def the_log_is_whole(self) -> None:
            self.log.sync(10**9)
            events = self.log.read_after(0)
            assert [e.id for e in events] == list(range(1, len(events) + 1))
            ends = Counter(e.payload["turn"] for e in events if e.kind == "turn_end")
            assert all(count == 1 for count in ends.values()), ends
            users = [e.payload["turn"] for e in events if e.kind == "user"]
            assert users == list(range(1, len(users) + 1))
            active = int(self._rec("turn_active") or 0)
            assert set(ends) == set(users) - ({active} if active else set())
            resolved = Counter(e.payload["request_id"] for e in events
                               if e.kind == "approval_resolved")
            assert all(count == 1 for count in resolved.values()), resolved
            opened = {e.payload["request_id"] for e in events if e.kind == "approval_request"}
            assert set(resolved) <= opened

    Cluster.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                         deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
    Cluster.TestCase().runTest()


def test_a_takeover_read_before_the_stalled_owner_wrote_retries(redis_url: str,
                                                                tmp_path: Path) -> None:
    prefix = f"p{secrets.token_hex(6)}"
    config = Settings.from_env({"data_dir": tmp_path, "TETHER_STORE": "redis",
                                "TETHER_REDIS_URL": redis_url, "TETHER_REDIS_PREFIX": prefix})
    store = RedisStore(redis_url, prefix)
    try:
        sid = secrets.token_hex(16)
        store.call("create", sid, "1.0", 10, "agent", "local", "title", "t")
        store.client.set(f"{prefix}:w:stalled", 1)
        head, tail = template(sid, 1.0, "user", {"turn": HOLE, "text": "hi"})
        _, turn, owner, fence, _ = store.call("begin_turn", sid, "stalled", "", head, tail)
        store.client.delete(f"{prefix}:w:stalled")  # its lease ran out
        reaper = Membership(store, config, lambda: None, "reaper")
        args = reaper.takeover_args(sid, "stalled")
        # The stalled owner wakes before the takeover commits, and ends its turn.
        store.call("end_turn", sid, str(fence), turn,
                   rest(sid, 1.0, "turn_end", {"turn": turn, "reason": "completed"}))
        assert reaper.commit_takeover(sid, args) == "RETRY"
        assert reaper.take_over(sid, "stalled") == 1  # read again: nothing left to end
        log = store.open_log(sid)
        log.sync(10**9)
        assert [e.kind for e in log.read_after(0)] == ["user", "turn_end"]
        with pytest.raises(Fenced):  # and the stalled owner is fenced from now on
            log.append("text", {"text": "late"}, fence=str(fence))
    finally:
        store.close()
