"""A Tether cluster for end-to-end tests (issue 14; /work/shared/SCALE-OUT.md section 10): one
private Redis, two "hosts" sharing it, and a round-robin proxy with no affinity in front.

- Redis: :class:`~tests.redis_server.RedisServer` (a free port, a temporary directory, AOF on);
  never the Redis on 6379, and only this one is ever flushed.
- "host A": a gunicorn master (``gunicorn -c gunicorn.conf.py``, as ``make run`` and
  :class:`~tests.e2e.live.LiveServer` start it) with ``WEB_CONCURRENCY=2``; "host B": another
  with ``WEB_CONCURRENCY=1``. Both run ``TETHER_STORE=redis`` on the same Redis and key prefix,
  the same ``TETHER_DATA_DIR`` and ``HOME`` (the "shared disk"), the same token and secret key,
  distinct ``TETHER_HOST_ID`` s (``hostA``, ``hostB``) and ports, a 3 s lease renewed every
  0.5 s, and ``TETHER_DEBUG_WORKER=1``: every response names the worker that served it,
  ``X-Tether-Worker: <host id>:<pid>:<hex>``. Each master runs in a session of its own, so a
  whole host can be killed by its process group.
- :class:`~tests.e2e.rrproxy.RoundRobinProxy` over the two ports: every new connection may land
  on any worker of either host.

Helpers: :meth:`Cluster.request_on` sends a request on a connection that reached a wanted
worker (the owner of a session, or any other); :meth:`Cluster.kill_worker`,
:meth:`Cluster.kill_host`, :meth:`Cluster.stop_worker` / :meth:`Cluster.cont_worker`,
:meth:`Cluster.restart_redis` and :meth:`Cluster.flush_redis` inject the faults; the
followers (:class:`SseFollower`, :class:`WsFollower`, :class:`PollFollower`) are clients that
keep reconnecting through the proxy and resume from their cursor, recording every event once.

Only processes this harness started are ever signalled: the masters it spawned, workers that
are their children, and agents found as their descendants or working in its data dir.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
import sseclient

from tests.e2e.live import LiveServer
from tests.e2e.rawclients import holds_inode, server_inode
from tests.e2e.rrproxy import RoundRobinProxy
from tests.e2e.wsclient import RpcFailure, WsClient
from tests.redis_server import RedisServer
from tests.support import AUTH_HEADERS

#: The header TETHER_DEBUG_WORKER=1 adds to every response.
WORKER_HEADER = "X-Tether-Worker"
LEASE_SECONDS = 3.0
HEARTBEAT_SECONDS = 0.5
#: The hosts: TETHER_HOST_ID -> WEB_CONCURRENCY.
HOSTS = {"hostA": 2, "hostB": 1}
#: Both hosts sign login cookies with it (README: the same on every host sharing a store).
SECRET_KEY = "cluster-secret-key-0123456789abcdef"

Event = dict[str, Any]
WorkerTest = Callable[[str], bool]


# -- worker ids and processes ------------------------------------------------------------

def worker_of(response: requests.Response) -> str | None:
    """The worker id that served ``response`` (None: the header is missing)."""
    return response.headers.get(WORKER_HEADER)


def host_of(wid: str) -> str:
    return wid.rsplit(":", 2)[0]


def pid_of(wid: str) -> int:
    return int(wid.rsplit(":", 2)[1])


def is_worker(wid: str) -> WorkerTest:
    """A worker test for :meth:`Cluster.request_on`: exactly ``wid``."""
    return lambda other: other == wid


def other_than(*wids: str) -> WorkerTest:
    """Any worker but those."""
    return lambda other: other not in wids


def on_host(host_id: str) -> WorkerTest:
    """Any worker of ``host_id``."""
    return lambda other: host_of(other) == host_id


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (every thread's), from /proc."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(child) for child in f.read().split()]
        except OSError:
            continue
    return found


def descendants(pid: int) -> list[int]:
    out, todo = [], children(pid)
    while todo:
        child = todo.pop()
        out.append(child)
        todo += children(child)
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- the hosts ---------------------------------------------------------------------------

class Host(LiveServer):
    """One gunicorn master of the cluster. The workdir (hence ``data/``, the logs) is the
    cluster's, shared with the other host."""

    def __init__(self, workdir: Path, host_id: str, workers: int, **env: Any) -> None:
        super().__init__(workdir, TETHER_HOST_ID=host_id, WEB_CONCURRENCY=workers, **env)
        self.host_id = host_id
        self.workers_asked = workers

    def start(self) -> Host:
        super().start()
        # gunicorn forks every worker before any of them has loaded the app, so by the time one
        # answers /healthz the others exist (booting). gunicorn.conf.py may run fewer than
        # asked (one, before the cluster core): then the wait runs out and the count stands.
        deadline = time.monotonic() + 1
        while len(self.worker_pids()) < self.workers_asked and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def worker_pids(self) -> list[int]:
        """The master's children: its workers."""
        return sorted(children(self.process.pid)) if self.running else []

    def agent_pids(self, worker: int | None = None) -> list[int]:
        """Processes below this host's workers (or one worker): agents and their tools."""
        workers = self.worker_pids() if worker is None else [worker]
        return [pid for w in workers for pid in descendants(w)]


class Cluster:
    """``with Cluster(tmp_path) as cluster: cluster.url`` (the proxy). ``env`` goes to both
    hosts (``TETHER_LOCAL_WORD_DELAY=0.05`` …)."""

    def __init__(self, workdir: Path, **env: Any) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.home = workdir / "home"
        self.redis = RedisServer(workdir / "redis")
        self.prefix = "tcluster"
        self.env = {
            "TETHER_STORE": "redis", "TETHER_REDIS_URL": self.redis.url,
            "TETHER_REDIS_PREFIX": self.prefix, "HOME": str(self.home),
            "TETHER_SECRET_KEY": SECRET_KEY, "TETHER_LEASE_SECONDS": LEASE_SECONDS,
            "TETHER_HEARTBEAT_SECONDS": HEARTBEAT_SECONDS, "TETHER_DEBUG_WORKER": 1,
            "TETHER_AGENT": "local", "TETHER_KEEPALIVE": 1, **env}
        self.hosts: dict[str, Host] = {}
        self.proxy: RoundRobinProxy | None = None
        #: Agent processes whose worker or host a test killed (they outlive it): reaped at the
        #: end if nothing else did.
        self.orphans: set[int] = set()
        self._stopped: set[int] = set()

    # -- life --------------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> Cluster:
        self.home.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        for host_id, workers in HOSTS.items():
            self.hosts[host_id] = Host(self.workdir, host_id, workers, **self.env).start()
        self.proxy = RoundRobinProxy([host.port for host in self.hosts.values()]).start()
        return self

    def close(self) -> None:
        """Stop the proxy, the hosts (a stopped worker is woken first, so that SIGTERM can
        reach it), every agent left in the data dir, and Redis."""
        if self.proxy is not None:
            self.proxy.stop()
        for pid in list(self._stopped):
            self.cont_worker(pid)
        for host in self.hosts.values():
            if host.process is not None:
                host.stop()
                host._log.close()
        self.reap(self.agent_processes())
        self.redis.stop()

    @property
    def url(self) -> str:
        assert self.proxy is not None
        return self.proxy.url

    def host(self, name_or_wid: str) -> Host:
        return self.hosts[host_of(name_or_wid) if ":" in name_or_wid else name_or_wid]

    def worker_ids_expected(self) -> int:
        """How many workers the hosts run (what gunicorn.conf.py let them start)."""
        return sum(len(host.worker_pids()) for host in self.hosts.values())

    def log_text(self) -> str:
        return "\n".join(f"--- {name} ---\n{host.log_text()}" for name, host in self.hosts.items())

    # -- requests ----------------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request through the proxy, on a new connection (any worker)."""
        kwargs.setdefault("timeout", 10)
        kwargs["headers"] = {**AUTH_HEADERS, **kwargs.get("headers", {})}
        return requests.request(method, self.url + path, **kwargs)

    def request_on(self, wanted: WorkerTest, method: str, path: str, attempts: int = 200,
                   **kwargs: Any) -> requests.Response:
        """Send a request through the proxy on a connection served by a worker that
        ``wanted(worker id)`` accepts: a new connection is probed with ``GET /healthz`` until
        one lands on such a worker, and the request then goes on that same keep-alive
        connection (a request is never sent to test where it lands: a POST must run once).

        :raises AssertionError: no connection reached such a worker, or the header is missing.
        """
        kwargs.setdefault("timeout", 10)
        kwargs["headers"] = {**AUTH_HEADERS, **kwargs.get("headers", {})}
        seen: Counter[str] = Counter()
        for _ in range(attempts):
            with requests.Session() as session:
                try:
                    # Short: a connection parked on a stopped (SIGSTOP) worker is given up.
                    probe = session.get(self.url + "/healthz", timeout=2)
                except requests.RequestException:
                    seen["(no answer)"] += 1
                    continue
                wid = worker_of(probe)
                if wid is None:
                    raise AssertionError(f"/healthz has no {WORKER_HEADER} header "
                                         "(TETHER_DEBUG_WORKER=1)")
                seen[wid] += 1
                if not wanted(wid):
                    continue
                response = session.request(method, self.url + path, **kwargs)
                served = worker_of(response)
                assert served == wid, f"the keep-alive connection moved from {wid} to {served}"
                return response
        raise AssertionError(f"no connection reached a wanted worker in {attempts} tries; "
                             f"served by {dict(seen)}")

    def session(self, sid: str) -> dict[str, Any]:
        response = self.api("GET", f"/api/sessions/{sid}")
        response.raise_for_status()
        return response.json()

    def epoch(self) -> str:
        response = self.api("GET", "/api/sessions")
        response.raise_for_status()
        return str(response.json()["epoch"])

    def log(self, sid: str, via: Host | None = None) -> list[Event]:
        """The session's whole log, page by page, through the proxy (or straight from one
        host)."""
        out: list[Event] = []
        while True:
            path = f"/api/sessions/{sid}/events"
            params = {"after": out[-1]["id"] if out else 0, "limit": 1000}
            response = (via.api("GET", path, params=params) if via is not None
                        else self.api("GET", path, params=params))
            response.raise_for_status()
            page = response.json()["events"]
            if not page:
                return out
            out += page

    def wait_log(self, sid: str, done: Callable[[list[Event]], bool], timeout: float,
                 via: Host | None = None) -> tuple[list[Event], float]:
        """Read the log until ``done(log)``; a read that fails (a dead or stopped worker, Redis
        away) is tried again. :returns: the log and the seconds it took.

        :raises AssertionError: not within ``timeout`` (with the last log read).
        """
        started = time.monotonic()
        events: list[Event] = []
        failures: Counter[str] = Counter()
        while True:
            try:
                events = self.log(sid, via)
            except (requests.RequestException, ValueError) as exc:
                failures[type(exc).__name__] += 1
            else:
                if done(events):
                    return events, time.monotonic() - started
            if time.monotonic() - started > timeout:
                tail = [(e["id"], e["kind"], e.get("reason")) for e in events[-8:]]
                raise AssertionError(f"not within {timeout} s; log tail {tail}; "
                                     f"failed reads {dict(failures)}")
            time.sleep(0.05)

    def worker_id(self, pid: int, attempts: int = 200) -> str:
        """The worker id of worker process ``pid``, from the header of a response it served
        (new connections through the proxy until one lands on it)."""
        for _ in range(attempts):
            try:
                wid = worker_of(requests.get(self.url + "/healthz", timeout=2))
            except requests.RequestException:
                continue
            if wid is None:
                raise AssertionError(f"/healthz has no {WORKER_HEADER} header "
                                     "(TETHER_DEBUG_WORKER=1)")
            if pid_of(wid) == pid:
                return wid
        raise AssertionError(f"no connection reached worker {pid} in {attempts} tries")

    # -- processes ---------------------------------------------------------------------------

    def workspace(self, sid: str) -> Path:
        """The session's workspace on the shared data dir (the agent's working directory)."""
        return (self.data_dir / "sessions" / sid).resolve()

    def owner_pid(self, sid: str) -> int | None:
        """The worker whose descendant is the session's agent (a process working in its
        workspace): the owner, as the processes show it, whatever the core says."""
        workspace = str(self.workspace(sid))
        for host in self.hosts.values():
            for worker in host.worker_pids():
                for pid in descendants(worker):
                    try:
                        if os.readlink(f"/proc/{pid}/cwd") == workspace:
                            return worker
                    except OSError:
                        continue
        return None

    def owner_of(self, sid: str, timeout: float = 10) -> str:
        """The worker id of the worker running the session's agent (it runs one: a turn is
        on); waits up to ``timeout`` for the agent to start."""
        deadline = time.monotonic() + timeout
        while (pid := self.owner_pid(sid)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"no worker runs an agent for {sid}")
            time.sleep(0.05)
        return self.worker_id(pid)

    def processes_in(self, sid: str, marker: str) -> list[int]:
        """Processes working in the session's workspace whose command line contains
        ``marker`` (a tool the agent runs: ``sleep 29.5``)."""
        workspace = str(self.workspace(sid))
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/cwd") != workspace:
                    continue
            except OSError:
                continue
            if marker in self.cmdline(int(entry)):
                found.append(int(entry))
        return found

    @staticmethod
    def cmdline(pid: int) -> str:
        """``pid``'s command line, its arguments joined by spaces ("" once it is gone)."""
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            return ""

    def worker_pid(self, wid: str) -> int:
        """The pid in ``wid``, checked to be a live worker of that host (never signal anything
        else)."""
        host, pid = self.host(wid), pid_of(wid)
        if pid not in host.worker_pids():
            raise AssertionError(f"{wid}: pid {pid} is not a worker of {host.host_id} "
                                 f"(workers {host.worker_pids()})")
        return pid

    def agent_pids_of(self, wid: str) -> list[int]:
        """The agents (and their tools) below worker ``wid``."""
        return self.host(wid).agent_pids(self.worker_pid(wid))

    def kill_worker(self, wid: str) -> list[int]:
        """SIGKILL one worker (its master sees it exit, and forks another). :returns: the
        agent processes it had, which outlive it (kept in :attr:`orphans`)."""
        pid = self.worker_pid(wid)
        agents = self.host(wid).agent_pids(pid)
        self.orphans.update(agents)
        os.kill(pid, signal.SIGKILL)
        return agents

    def kill_host(self, host_id: str) -> list[int]:
        """SIGKILL a whole host: its master and workers, at once (their process group). Agents
        run in sessions of their own and outlive it. :returns: those agents."""
        host = self.hosts[host_id]
        workers, agents = host.worker_pids(), host.agent_pids()
        self.orphans.update(agents)
        host.kill()
        # Until its last worker is gone the host's listening socket still takes connections
        # (then resets them): wait, so that the proxy finds the port refusing, as a dead host's.
        left = self.wait_gone(workers, 10)
        assert left == [], f"{host_id}'s workers {left} outlived SIGKILL"
        return agents

    def stop_worker(self, wid: str) -> int:
        """SIGSTOP one worker (a stalled process: its sockets stay open, it answers nothing)."""
        pid = self.worker_pid(wid)
        os.kill(pid, signal.SIGSTOP)
        self._stopped.add(pid)
        return pid

    def cont_worker(self, wid_or_pid: str | int) -> None:
        pid = wid_or_pid if isinstance(wid_or_pid, int) else pid_of(wid_or_pid)
        if pid in self._stopped:
            self._stopped.discard(pid)
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def agent_processes(self) -> list[int]:
        """Processes working in the cluster's data dir: agents and the tools they run."""
        return next(iter(self.hosts.values())).agent_processes() if self.hosts else []

    def reap(self, pids: Iterable[int]) -> None:
        """SIGKILL those of ``pids`` still working in the data dir (so never a reused pid),
        with their process groups (an agent leads its own)."""
        data = str(self.data_dir.resolve())
        for pid in pids:
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            if cwd != data and not cwd.startswith(data + os.sep):
                continue
            try:
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.orphans.difference_update(pids)

    def wait_gone(self, pids: Iterable[int], timeout: float) -> list[int]:
        """Wait until none of ``pids`` is alive; :returns: those still alive."""
        pids = list(pids)
        deadline = time.monotonic() + timeout
        while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    def serving_pid(self, client_port: int, timeout: float = 5) -> int | None:
        """The worker process holding the backend end of the proxied connection whose client
        is on local port ``client_port`` (/proc, no header needed); None if none does."""
        assert self.proxy is not None
        link = self.proxy.link_of(client_port)
        if link is None:
            return None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            inode = server_inode(link.backend[1], link.upstream_port)
            if inode:
                for host in self.hosts.values():
                    for pid in host.worker_pids():
                        if holds_inode(pid, inode):
                            return pid
            time.sleep(0.05)
        return None

    # -- Redis -------------------------------------------------------------------------------

    def restart_redis(self) -> None:
        """Stop Redis (SIGTERM: it writes its AOF out) and start it again on the same port and
        directory: the data comes back."""
        self.redis.stop()
        self.redis.start()

    def flush_redis(self) -> None:
        """FLUSHALL on the cluster's own Redis: every key gone (a data loss)."""
        with self.redis.client() as client:
            client.flushall()


# -- followers ---------------------------------------------------------------------------

class Follower(threading.Thread):
    """A client of one session that reconnects through the proxy whenever its connection ends
    (severed, a dead worker, an error answer), resuming after the last event it has.

    :attr:`events` holds every event it took, in order; :attr:`workers` counts the workers
    that served its connections; :attr:`resets` the ``reset`` answers (after one, the events
    start again from the replay, as a client that refetches would); :attr:`errors` the reasons
    its connections ended other than by its own choice (the last 50).
    """

    transport = ""

    def __init__(self, url: str, sid: str, name: str = "") -> None:
        super().__init__(name=name or f"{self.transport}-follower", daemon=True)
        self.url, self.sid = url, sid
        self.events: list[Event] = []
        self.workers: Counter[str] = Counter()
        self.connections = 0
        self.resets: list[dict[str, Any]] = []
        self.epochs: set[str] = set()
        self.errors: list[str] = []
        self.target: int | None = None
        self._halt = threading.Event()

    @property
    def last(self) -> int:
        return self.events[-1]["id"] if self.events else 0

    @property
    def ids(self) -> list[int]:
        return [e["id"] for e in self.events]

    @property
    def kinds(self) -> list[tuple[int, str]]:
        return [(e["id"], e["kind"]) for e in self.events]

    def done(self) -> bool:
        return self._halt.is_set() or (self.target is not None and self.last >= self.target)

    def finish(self, target: int, timeout: float) -> bool:
        """Stop once it has event ``target``; :returns: whether it got there in ``timeout``."""
        self.target = target
        self.join(timeout)
        got = not self.is_alive() and self.last >= target
        self._halt.set()
        return got

    def halt(self, timeout: float = 10) -> None:
        self._halt.set()
        self.join(timeout)

    def run(self) -> None:
        while not self.done():
            self.connections += 1
            try:
                self.follow()
            except Exception as exc:  # a cut connection, an error answer: connect again
                self.errors = [*self.errors[-49:], f"{type(exc).__name__}: {exc}"[:300]]
                time.sleep(0.05)

    def follow(self) -> None:
        """One connection: take events until it ends or :meth:`done`."""
        raise NotImplementedError

    def take(self, event: Event) -> None:
        self.events.append(event)

    def served_by(self, wid: str | None) -> None:
        self.workers[wid or "(no header)"] += 1

    def reset(self, marker: dict[str, Any]) -> None:
        self.resets.append(marker)
        self.events = []


class SseFollower(Follower):
    """``GET /stream`` with ``Last-Event-ID`` (requests + sseclient-py, as test_streams.py)."""

    transport = "sse"

    def follow(self) -> None:
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(self.last),
                   **AUTH_HEADERS}
        # Read timeout: keepalives come every second (TETHER_KEEPALIVE=1 in the cluster), so
        # 5 s of silence is a stream parked on a stopped worker.
        with requests.get(f"{self.url}/api/sessions/{self.sid}/stream", headers=headers,
                          stream=True, timeout=(3, 5)) as response:
            self.served_by(worker_of(response))
            if response.status_code != 200:
                raise RuntimeError(f"stream answered {response.status_code}: "
                                   f"{response.text[:200]}")
            for event in sseclient.SSEClient(response).events():
                if event.event == "message":
                    data = json.loads(event.data)
                    assert int(event.id) == data["id"], (event.id, data["id"])
                    self.take(data)
                elif event.event == "caught-up":
                    self.epochs.add(json.loads(event.data)["epoch"])
                elif event.event == "reset":
                    self.reset(json.loads(event.data))
                if self.done():
                    return
        raise ConnectionError("the stream ended")


class WsFollower(Follower):
    """JSON-RPC ``session.attach`` with ``after`` (tests/e2e/wsclient.py)."""

    transport = "ws"

    def follow(self) -> None:
        ws = WsClient(self.url, timeout=5)
        try:
            self.served_by(ws.socket.getheaders().get(WORKER_HEADER.lower()))
            self.epochs.add(ws.ready.get("epoch", ""))
            try:
                ws.call("session.attach", session_id=self.sid, after=self.last)
            except RpcFailure as exc:
                raise RuntimeError(f"session.attach: {exc}") from None
            while not self.done():
                # Pings are skipped; 5 s without a notification is a parked connection.
                note = ws.notification(timeout=5)
                if note["method"] == "event" and note.get("session_id") == self.sid:
                    self.take(note["event"])
                elif note["method"] == "reset":
                    self.reset(note)
                elif note["method"] == "detached":
                    raise ConnectionError(f"detached: {note}")
        finally:
            ws.close()


class PollFollower(Follower):
    """``GET /events?after=&wait=``, each request on a new connection."""

    transport = "poll"

    def follow(self) -> None:
        response = requests.get(f"{self.url}/api/sessions/{self.sid}/events",
                                params={"after": self.last, "wait": 2}, headers=AUTH_HEADERS,
                                timeout=(3, 8))
        self.served_by(worker_of(response))
        if response.status_code != 200:
            raise RuntimeError(f"events answered {response.status_code}: {response.text[:200]}")
        body = response.json()
        self.epochs.add(body["epoch"])
        if body.get("reset"):
            self.reset({"epoch": body["epoch"], "last_event_id": body["last_event_id"]})
        for event in body["events"]:
            self.take(event)


FOLLOWERS: dict[str, type[Follower]] = {
    "sse": SseFollower, "ws": WsFollower, "poll": PollFollower}
