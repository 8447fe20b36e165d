"""Several workers on Redis (issue 14's Benchmark): what the cluster costs, against one worker
on the memory store measured in the same sitting.

Everything runs on this machine, on free loopback ports: a private ``redis-server`` (a free
port, a temporary directory, AOF on: tests/redis_server.py; the Redis on 6379 is never
touched), the baseline (``make run``'s gunicorn, one gevent worker, ``TETHER_STORE=memory``:
bench/fanout.py's TetherTarget) and the cluster (:class:`ClusterTarget`: ``TETHER_STORE=redis``,
``WEB_CONCURRENCY`` workers per gunicorn master, ``TETHER_DEBUG_WORKER=1``; a second master
with another ``TETHER_HOST_ID`` on another port, same Redis, prefix and data dir, is "host
B"). Events go through the real path, as in bench/fanout.py: the ``local`` agent's ``bench``
command, the owner worker's runner, its writes to Redis (one Redis Function call per burst:
tether/cluster/owner_log.py), and every other worker's wake reader. Nothing is pinned: the
second worker needs the second core (the baseline runs unpinned too, so that the two are
measured alike). The load client is bench/loadclient.py; a
client lands on the worker a case asks for by asking ``GET /healthz`` on its keep-alive
connection first (``X-Tether-Worker``) and trying again until it is on one of them.

    .venv/bin/python -m bench.cluster                     # every figure: about 11 minutes
    .venv/bin/python -m bench.cluster --parts hop,kill    # some of them
    .venv/bin/python -m bench.cluster --parts mix --hosts 1   # no host B

Figures (bench/README.md says more), each with the baseline and the ratio:

1. ``hop``: 1 session -> 3 clients at 100 events/s, clients on a non-owner worker (and, for
   reference, on the owner): p50 and p99 over the baseline's (targets +0.5 ms, +2 ms).
2. ``mix``: 100 sessions x 3 clients x 20 events/s over 2 workers, and over 2 hosts x 2
   workers: p99 <= 50 ms, nothing lost.
3. ``wide``: 1 session -> 2,000 clients over 2 workers at 10 events/s: p99 <= 100 ms.
4. ``poll``: long-poll requests/s with 2 workers against 1 (>= 1.7x), and 1,000 pollers at 10
   events/s over 2 workers: p99 <= 500 ms.
5. ``store``: appends per worker sustained (>= 5,000 events/s: RedisStore's append in this
   process, and the real runner filling a log), and the replay of 100,000 events from Redis
   to ``caught-up`` on a non-owner worker (< 2 s).
6. ``kill``: kill -9 of the owner worker mid-turn -> ``turn_end`` ``interrupted`` seen by a
   client on another worker (<= 2 s); kill -9 of host B (its master's process group and its
   agents) -> seen on host A (<= TETHER_LEASE_SECONDS + 1 s). Baseline: a Stop on one worker.
7. ``list``: ``GET /api/sessions`` of ``--list-sessions`` sessions (300), p50 over the
   cluster's workers against the baseline's (a reference, no target).
8. ``conns``: Redis connections per worker (``CLIENT LIST`` on the private Redis, each
   connection's pid found through /proc/net/tcp and /proc/<pid>/fd), sampled during every
   cluster case: at most 1 blocking reader + 64 pooled, however many clients.

Prints each part's rows, then the figures against their targets (``met`` or ``MISSED``),
then one JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests

from bench.fanout import (
    Case,
    TetherTarget,
    children,
    late_client,
    machine,
    print_rows,
    raise_nofile,
    run,
    run_case,
    stop_on_signals,
)
from bench.scrape import Samples, connected, parse
from tests.e2e.live import LiveServer
from tests.support import AUTH_HEADERS

PARTS = ("hop", "mix", "wide", "poll", "store", "kill", "list", "conns")
#: SCALE-OUT.md section 11 and issue 14's Benchmark.
TARGETS = {"hop_p50_ms": 0.5, "hop_p99_ms": 2.0, "mix_p99_ms": 50.0, "wide_p99_ms": 100.0,
           "poll_ratio": 1.7, "pollers_p99_ms": 500.0, "appends_per_s": 5000.0,
           "replay_s": 2.0, "worker_kill_s": 2.0, "host_kill_extra_s": 1.0,
           "redis_conns": 1 + 64}
#: The baseline's name in the rows.
BASELINE = "mem-1w"
#: Gauges every worker reports for the whole cluster (the largest is kept, not the sum).
CLUSTER_WIDE = ("tether_sessions", "tether_events_appended", "tether_pending_prompts")
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


# -- the private Redis ----------------------------------------------------------------------

@contextmanager
def private_redis(directory: Path) -> Iterator[Any]:
    """A ``redis-server`` of our own (tests/redis_server.py: a free loopback port, data in
    ``directory``, AOF on), stopped on the way out. Never the one on 6379.

    :raises RuntimeError: no redis-server binary, or it did not start.
    """
    if not os.access(REDIS_SERVER, os.X_OK):
        raise RuntimeError(f"{REDIS_SERVER} is missing: the Redis benches need Debian's "
                           "redis-server (apt-get install redis-server)")
    from tests.redis_server import RedisServer

    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- workers --------------------------------------------------------------------------------

@dataclass
class Worker:
    wid: str  # <host id>:<pid>:<hex> (tether/workers.py)
    pid: int
    port: int
    host: str


class WorkerHTTP:
    """Keep-alive connections to one gunicorn master's port, each held by a known worker
    (``X-Tether-Worker`` of a ``GET /healthz`` on it), so that a request goes to the worker
    asked for. A connection the server closed (keep-alive ends after 5 s) is replaced."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conns: dict[str, http.client.HTTPConnection] = {}

    def _probe(self) -> tuple[str, http.client.HTTPConnection]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("GET", "/healthz")
        answer = conn.getresponse()
        answer.read()
        worker = answer.getheader("X-Tether-Worker")
        if worker is None:
            conn.close()
            raise RuntimeError("no X-Tether-Worker header: TETHER_DEBUG_WORKER=1 is needed")
        return worker, conn

    def discover(self, count: int, tries: int = 400) -> list[str]:
        """Worker ids answering on this port until ``count`` distinct ones were seen."""
        for _ in range(tries):
            if len(self.conns) >= count:
                break
            worker, conn = self._probe()
            if worker in self.conns:
                conn.close()
            else:
                self.conns[worker] = conn
        if len(self.conns) < count:
            raise RuntimeError(f"only {len(self.conns)} of {count} workers answered on port "
                               f"{self.port} in {tries} connections")
        return sorted(self.conns)

    def connection(self, wid: str, tries: int = 400) -> http.client.HTTPConnection:
        """A connection held by worker ``wid``. A busy worker is slow to accept while the
        other takes every connection: past 20 misses, each try waits 50 ms first."""
        conn = self.conns.get(wid)
        if conn is not None:
            return conn
        for attempt in range(tries):
            if attempt >= 20:
                time.sleep(0.05)
            worker, conn = self._probe()
            if worker == wid:
                self.conns[wid] = conn
                return conn
            conn.close()
        raise RuntimeError(f"no connection landed on worker {wid} in {tries} tries")

    def request(self, wid: str, method: str, path: str, body: Any = None,
                timeout: float = 60) -> tuple[int, bytes]:
        """One request on worker ``wid``; (status, body)."""
        for attempt in range(3):
            conn = self.connection(wid)
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            try:
                headers = dict(AUTH_HEADERS)
                data = None
                if body is not None:
                    data = json.dumps(body).encode()
                    headers["Content-Type"] = "application/json"
                conn.request(method, path, body=data, headers=headers)
                answer = conn.getresponse()
                payload = answer.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self.conns.pop(wid, None)
                if attempt == 2:
                    raise
                continue
            worker = answer.getheader("X-Tether-Worker")
            if worker != wid:
                raise RuntimeError(f"asked worker {wid}, answered by {worker}")
            return answer.status, payload
        raise AssertionError("unreachable")

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()


@dataclass
class Host:
    name: str
    server: LiveServer
    http: WorkerHTTP
    count: int
    workers: list[Worker] = field(default_factory=list)


class ClusterTarget(TetherTarget):
    """Tether with ``TETHER_STORE=redis``: one or more gunicorn masters (hosts), each with
    ``workers`` gevent workers, one Redis, one prefix, one data dir.

    Placement (bench/fanout.py calls :meth:`setup` and :meth:`place`): session ``i`` of a case
    is claimed by ``owner_order[i % len]`` (its first prompt is posted on that worker, which
    claims a free session: tether/cluster/sessions.py); its clients land by
    :attr:`clients_on`: ``other`` (workers other than the owner), ``owner``, or ``any`` (every
    worker of host ``i % hosts``), spread evenly.
    """

    name = "tether"

    def __init__(self, workdir: Path, redis_url: str, prefix: str, workers: int = 2,
                 connections: int = 10000, lease: float | None = None,
                 host_names: str = "host") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.host_names = host_names
        self.workdir, self.redis_url, self.prefix = workdir, redis_url, prefix
        self.data = workdir / "data"
        self.first_workers, self.connections, self.lease = workers, connections, lease
        self.hosts: list[Host] = []
        self.cpu = None
        self.http = requests.Session()
        self.http.headers.update(AUTH_HEADERS)
        self.clients_on = "any"
        self.owner_order: list[Worker] | None = None
        self.owners: dict[str, str] = {}  # session id -> owner worker id
        self.problems: list[str] = []
        self.redis = redis.Redis.from_url(redis_url)

    # -- hosts
    def __enter__(self) -> ClusterTarget:
        try:
            self.add_host(self.first_workers)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.server = self.hosts[0].server
        self.port = self.server.port
        self.pid = self.pids[0]
        return self

    def __exit__(self, *exc: Any) -> None:
        self.http.close()
        for host in reversed(list(self.hosts)):
            self.stop_host(host, exc)
        self.redis.close()

    def add_host(self, workers: int) -> Host:
        """Start another gunicorn master ("host-a", "host-b" ...) on the same Redis, prefix and
        data dir, and find its workers."""
        name = f"{self.host_names}-{'abcdefgh'[len(self.hosts)]}"
        hostdir = self.workdir / name
        hostdir.mkdir(parents=True, exist_ok=True)
        env: dict[str, Any] = {
            "TETHER_STORE": "redis", "TETHER_REDIS_URL": self.redis_url,
            "TETHER_REDIS_PREFIX": self.prefix, "TETHER_DEBUG_WORKER": 1,
            "TETHER_HOST_ID": name, "WEB_CONCURRENCY": workers,
            "TETHER_DATA_DIR": str(self.data), "TETHER_MAX_SESSIONS": 1000}
        if self.lease is not None:
            env["TETHER_LEASE_SECONDS"] = self.lease
        if self.connections + 1000 > 10000:
            env["GUNICORN_CMD_ARGS"] = f"--worker-connections {self.connections + 1000}"
        server = LiveServer(hostdir, **env)
        server.start()
        host = Host(name, server, WorkerHTTP(server.port), workers)
        self.hosts.append(host)
        self.refresh(host)
        return host

    def refresh(self, host: Host, timeout: float = 60) -> None:
        """(Again) find the host's workers: after a start, or after one was killed and
        gunicorn started another."""
        assert host.server.process is not None
        master = host.server.process.pid
        deadline = time.monotonic() + timeout
        while len(pids := children(master)) < host.count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{host.name}: {len(pids)} of {host.count} workers")
            time.sleep(0.1)
        host.http.close()
        while True:
            try:
                wids = host.http.discover(host.count)
                break
            except (OSError, http.client.HTTPException, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        host.workers = [Worker(wid, int(wid.rsplit(":", 2)[1]), host.server.port, host.name)
                        for wid in wids]
        missing = {w.pid for w in host.workers} - set(children(master))
        if missing:
            raise RuntimeError(f"{host.name}: workers {missing} are not the master's")

    def stop_host(self, host: Host, exc: Any = (None, None, None)) -> None:
        """SIGTERM the host's master (a graceful stop), then make sure no agent it started
        outlives it (killed by PID if one does)."""
        host.http.close()
        agents = [pid for w in host.workers for pid in children(w.pid)]
        host.server.stop()
        host.server._log.close()
        if host in self.hosts:
            self.hosts.remove(host)
        left = wait_gone(agents, 10)
        for pid in left:
            kill_pid(pid)
        if left:
            print(f"warning: {host.name}: agents {left} outlived their worker; killed",
                  file=sys.stderr)

    @property
    def workers(self) -> list[Worker]:
        return [w for host in self.hosts for w in host.workers]

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def worker(self, wid: str) -> Worker:
        return next(w for w in self.workers if w.wid == wid)

    def on(self, worker: Worker, method: str, path: str, body: Any = None,
           timeout: float = 60) -> tuple[int, bytes]:
        """One request answered by ``worker``."""
        host = next(h for h in self.hosts if h.name == worker.host)
        return host.http.request(worker.wid, method, path, body, timeout)

    # -- sessions
    def owner_for(self, index: int) -> Worker:
        order = self.owner_order or self.workers
        return order[index % len(order)]

    def create_owned(self, owner: Worker, text: str = "hello") -> str:
        """A session whose first prompt, ``text``, is posted on ``owner``: the worker that
        takes the prompt of a free session claims it."""
        answer = self.http.post(f"{self.server.url}/api/sessions", json={}, timeout=30)
        answer.raise_for_status()
        sid = answer.json()["id"]
        status, body = self.on(owner, "POST", f"/api/sessions/{sid}/prompt", {"text": text})
        if status != 202:
            raise RuntimeError(f"prompt on {owner.wid}: {status} {body[:200]!r}")
        self.owners[sid] = owner.wid
        return sid

    def check_owner(self, sid: str) -> None:
        """The session's ``owner`` field in Redis is the worker it was claimed on."""
        raw = self.redis.hget(f"{self.prefix}:{{{sid}}}:rec", "owner")
        owner = raw.decode() if raw else None
        if owner != self.owners.get(sid):
            self.problems.append(f"session {sid[:8]}: owner {owner}, not "
                                 f"{self.owners.get(sid)}")

    def setup(self, case: Case) -> list[dict[str, Any]]:
        sids = [self.create_owned(self.owner_for(i)) for i in range(case.sessions)]
        targets = []
        for i, sid in enumerate(sids):
            after = self._wait_turn_end(sid, 0, 120)
            self.check_owner(sid)
            path = {"sse": f"/api/sessions/{sid}/stream?after={after}",
                    "poll": f"/api/sessions/{sid}/events", "ws": "/api/ws"}[case.transport]
            targets.append({"path": path, "session": sid, "after": after,
                            "clients": case.clients, **self.place(sid, case.clients, i)})
        return targets

    def place(self, session: str | None, clients: int, index: int = 0) -> dict[str, Any]:
        owner = self.owners.get(session) if session else None
        if self.clients_on == "owner" and owner:
            pool = [self.worker(owner)]
        elif self.clients_on == "other" and owner and len(self.workers) > 1:
            others = [w for w in self.workers if w.wid != owner]
            hosts = list(dict.fromkeys(w.host for w in others))
            pool = [w for w in others if w.host == hosts[index % len(hosts)]]
        else:
            pool = self.hosts[index % len(self.hosts)].workers
        return {"port": pool[0].port, "land": {"quota": spread(clients, pool, index)}}

    def fill(self, events: int, timeout: float) -> tuple[str, int, float]:
        started = time.monotonic()
        sid = self.create_owned(self.owner_for(0), f"bench {events} 200 0")
        last = self._wait_turn_end(sid, 0, timeout)
        return sid, last, time.monotonic() - started

    def teardown(self, targets: list[dict[str, Any]]) -> None:
        super().teardown(targets)
        for target in targets:
            self.owners.pop(target["session"], None)

    # -- figures
    def scrape(self) -> Samples:
        """Every host's ``/metrics``, summed (the cluster-wide gauges: the largest). One
        worker of each host answers for all of that host's workers (prometheus-client's
        multiprocess directory, gunicorn.conf.py), so a scrape per worker would count each
        host as many times as it has workers."""
        total: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for host in self.hosts:
            worker = host.workers[0]
            status, body = self.on(worker, "GET", "/metrics")
            if status != 200:
                raise RuntimeError(f"/metrics on {worker.wid}: {status}")
            for key, value in parse(body.decode()).items():
                if key[0].startswith(CLUSTER_WIDE):
                    total[key] = max(total.get(key, value), value)
                else:
                    total[key] = total.get(key, 0.0) + value
        return total

    def settle(self, transport: str, baseline: int, timeout: float) -> tuple[int, float]:
        started = time.monotonic()
        while True:
            now = connected(self.scrape(), transport)
            waited = time.monotonic() - started
            if now == baseline or waited >= timeout:
                return now, round(waited, 2)
            time.sleep(0.1)


def spread(clients: int, pool: list[Worker], offset: int = 0) -> dict[str, int]:
    """``clients`` over ``pool`` as evenly as can be, the odd ones starting at ``offset``."""
    base, extra = divmod(clients, len(pool))
    quota = {}
    for j in range(len(pool)):
        worker = pool[(offset + j) % len(pool)]
        quota[worker.wid] = base + (1 if j < extra else 0)
    return {wid: n for wid, n in quota.items() if n}


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` runs (zombies count as gone); the ones left."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in pids if alive(pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# -- Redis connections ----------------------------------------------------------------------

class RedisConnections:
    """Who holds the private Redis's connections: ``CLIENT LIST`` gives each connection's
    address; /proc/net/tcp gives that socket's inode, /proc/<pid>/fd the process holding it.
    :meth:`sampling` samples every 0.25 s during a block and keeps each worker's largest
    count (``pooled``) and its blocked connections (``XREAD``: the wake reader)."""

    def __init__(self, url: str, port: int) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5)
        self.port = port
        self.own = int(self.client.client_id())

    def sample(self, pids: dict[int, str]) -> dict[str, dict[str, int]]:
        entries = [e for e in self.client.client_list() if int(e["id"]) != self.own]
        inodes = self._inodes()
        holder: dict[str, int] = {}
        for pid in pids:
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    holder[link[8:-1]] = pid
        out: dict[str, dict[str, int]] = {}
        for entry in entries:
            port = int(entry["addr"].rsplit(":", 1)[1])
            pid = holder.get(inodes.get(port, ""))
            name = pids.get(pid, "other") if pid else "other"
            counts = out.setdefault(name, {"conns": 0, "blocked": 0})
            counts["conns"] += 1
            if "b" in entry.get("flags", "") or entry.get("cmd") in ("xread", "xreadgroup"):
                counts["blocked"] += 1
        return out

    def _inodes(self) -> dict[int, str]:
        """Local port -> socket inode of every loopback connection to the Redis port."""
        found: dict[int, str] = {}
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            parts = line.split()
            local, remote, inode = parts[1], parts[2], parts[9]
            if int(remote.split(":")[1], 16) == self.port:
                found[int(local.split(":")[1], 16)] = inode
        return found

    @contextmanager
    def sampling(self, clusters: list[ClusterTarget], out: dict[str, Any]) -> Iterator[None]:
        """Sample during the block; ``out`` gets ``by_worker`` ({worker id: {"conns",
        "blocked"}} at most, every worker of ``clusters``; ``bench`` is this process, ``other``
        a connection no known process holds), ``max_per_worker`` and ``samples``."""
        stop = threading.Event()
        most: dict[str, dict[str, int]] = {}
        samples = [0]

        def loop() -> None:
            while True:
                try:
                    pids = {os.getpid(): "bench"}
                    for cluster in clusters:
                        pids.update({w.pid: w.wid for w in cluster.workers})
                        for host in cluster.hosts:
                            if host.server.process is not None:
                                pids[host.server.process.pid] = f"{host.name} master"
                    for name, counts in self.sample(pids).items():
                        seen = most.setdefault(name, {"conns": 0, "blocked": 0})
                        for k, v in counts.items():
                            seen[k] = max(seen[k], v)
                    samples[0] += 1
                except (redis.RedisError, OSError, ValueError, StopIteration):
                    pass
                if stop.wait(0.25):
                    return

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(10)
            workers = {k: v for k, v in most.items()
                       if "master" not in k and k not in ("other", "bench")}
            out.update({"by_worker": most, "samples": samples[0],
                        "max_per_worker": max((v["conns"] for v in workers.values()),
                                              default=0)})

    def close(self) -> None:
        self.client.close()


# -- the sitting ----------------------------------------------------------------------------

class Sitting:
    """The servers of one run and what they measured."""

    def __init__(self, args: argparse.Namespace, stack: ExitStack, tmp: Path) -> None:
        self.args, self.stack, self.tmp = args, stack, tmp
        self.redis = stack.enter_context(private_redis(tmp / "redis"))
        most = max(args.wide_clients, args.pollers, 300)
        self.baseline = stack.enter_context(TetherTarget(tmp / "memory", None, "memory",
                                                         connections=most))
        self.baseline.name = BASELINE
        self.cluster = stack.enter_context(ClusterTarget(
            tmp / "cluster", self.redis.url, "bench", args.workers, connections=most))
        self.clusters = [self.cluster]
        self.conns = RedisConnections(self.redis.url, self.redis.port)
        stack.callback(self.conns.close)
        # Before any load: what an idle worker holds.
        self.idle: dict[str, Any] = {}
        with self.conns.sampling(self.clusters, self.idle):
            time.sleep(1.0)
        self.rows: list[dict[str, Any]] = []
        self.figures: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {}

    def case(self, target: TetherTarget, case: Case, label: str,
             clients_on: str | None = None) -> dict[str, Any]:
        """One bench/fanout.py case; on the cluster, with its Redis connections sampled."""
        print(f"[{case.label}] {label} {case.transport} N={case.clients * case.sessions} "
              f"rate={case.rate:g} K={case.events}", file=sys.stderr, flush=True)
        settle = 0.5 if case.transport == "poll" else 0.2
        redis_conns: dict[str, Any] = {}
        if isinstance(target, ClusterTarget):
            target.clients_on = clients_on or "any"
            target.name = label
            target.problems = []
            with self.conns.sampling(self.clusters, redis_conns):
                row = run_case(target, case, None, settle)
            row["owner_problems"] = target.problems
            row["redis_conns"] = redis_conns
        else:
            row = run_case(target, case, None, settle)
        row["setup"] = label
        row["load_average"] = round(os.getloadavg()[0], 2)
        self.rows.append(row)
        return row

    def figure(self, figure: str, case: str, value: float | None, unit: str,
               baseline: float | None, target: str, met: bool | None,
               ratio: float | None = None) -> None:
        if ratio is None and value is not None and baseline:
            ratio = value / baseline
        self.figures.append({"figure": figure, "case": case, "value": value, "unit": unit,
                             "baseline": baseline, "ratio": ratio, "target": target,
                             "met": met})


def clean(row: dict[str, Any]) -> bool:
    """Every event once, in order, and the servers' counts agree."""
    server = row.get("server")
    return not (row["lost"] or row["duplicated"] or row["out_of_order"] or row["id_errors"]
                or row["errors"] or (server is not None and not server["ok"])
                or row.get("owner_problems"))


def part_hop(s: Sitting) -> None:
    """Figure 1: the Redis hop, 1 session -> 3 clients at 100 events/s."""
    args = s.args
    s.cluster.owner_order = [s.cluster.workers[0]]
    for transport in args.transports:
        case = Case("tether", transport, 3, 200, 100, args.hop_events, 1, "hop")
        base = s.case(s.baseline, case, BASELINE)
        other = s.case(s.cluster, case, f"rds-{args.workers}w-oth", "other")
        owner = s.case(s.cluster, case, f"rds-{args.workers}w-own", "owner")
        for q, limit in (("p50", TARGETS["hop_p50_ms"]), ("p99", TARGETS["hop_p99_ms"])):
            b, o = base["latency_ms"][q], other["latency_ms"][q]
            s.figure("1 hop", f"3 x 100/s {transport}, non-owner, {q} over base", o - b, "ms",
                     b, f"<= +{limit:g} ms", o - b <= limit and clean(other), o / b if b else None)
        b, o = base["latency_ms"]["p50"], owner["latency_ms"]["p50"]
        s.figure("1 hop", f"3 x 100/s {transport}, owner, p50 over base", o - b, "ms", b,
                 "<= +0.2 ms (SCALE-OUT 11)", o - b <= 0.2 and clean(owner),
                 o / b if b else None)
    s.cluster.owner_order = None


def part_mix(s: Sitting) -> None:
    """Figure 2: 100 sessions x 3 clients x 20 events/s."""
    args = s.args
    events = int(20 * args.mix_seconds)
    case_for = {t: Case("tether", t, 3, 200, 20, events, 100, "mix") for t in args.mix_transports}
    for transport, case in case_for.items():
        base = s.case(s.baseline, case, BASELINE)
        one = s.case(s.cluster, case, f"rds-{args.workers}w-any", "any")
        for row, where in ((one, f"1 host x {args.workers} workers"),):
            p99 = row["latency_ms"]["p99"]
            s.figure("2 mix", f"100 x 3 x 20/s {transport}, {where}", p99, "ms",
                     base["latency_ms"]["p99"], f"p99 <= {TARGETS['mix_p99_ms']:g} ms, 0 lost",
                     p99 <= TARGETS["mix_p99_ms"] and clean(row))
    if args.hosts < 2:
        return
    host_b = s.cluster.add_host(args.workers)
    try:
        for transport, case in case_for.items():
            base = [r for r in s.rows if r["label"] == "mix" and r["setup"] == BASELINE
                    and r["transport"] == transport][-1]
            row = s.case(s.cluster, case, f"rds-2x{args.workers}-any", "any")
            p99 = row["latency_ms"]["p99"]
            s.figure("2 mix", f"100 x 3 x 20/s {transport}, 2 hosts x {args.workers} workers",
                     p99, "ms", base["latency_ms"]["p99"],
                     f"p99 <= {TARGETS['mix_p99_ms']:g} ms, 0 lost",
                     p99 <= TARGETS["mix_p99_ms"] and clean(row))
    finally:
        s.cluster.stop_host(host_b)


def part_wide(s: Sitting) -> None:
    """Figure 3: 1 session -> 2,000 clients at 10 events/s, over 2 workers."""
    args = s.args
    for transport in args.wide_transports:
        case = Case("tether", transport, args.wide_clients, 200, 10, args.wide_events, 1,
                    "wide")
        base = s.case(s.baseline, case, BASELINE)
        s.cluster.owner_order = [s.cluster.workers[0]]
        row = s.case(s.cluster, case, f"rds-{args.workers}w-any", "any")
        s.cluster.owner_order = None
        p99 = row["latency_ms"]["p99"]
        s.figure("3 wide", f"1 x {args.wide_clients} x 10/s {transport}, {args.workers} "
                 "workers", p99, "ms", base["latency_ms"]["p99"],
                 f"p99 <= {TARGETS['wide_p99_ms']:g} ms", p99 <= TARGETS["wide_p99_ms"]
                 and clean(row))


def part_poll(s: Sitting) -> None:
    """Figure 4: long-poll requests/s, 2 workers against 1; 1,000 pollers at 10/s."""
    from bench.longpoll import request_rate

    args = s.args
    one = s.stack.enter_context(ClusterTarget(s.tmp / "cluster-1w", s.redis.url, "bench1w", 1,
                                              connections=max(args.poll_conns, 1000),
                                              host_names="solo"))
    s.clusters.append(one)
    servers = [(BASELINE, s.baseline), ("rds-1w", one), (f"rds-{args.workers}w", s.cluster)]
    rates: dict[tuple[str, str], list[float]] = {}
    s.extra["poll_rate"] = []
    paths = {}
    for name, server in servers:
        sid, last, _ = server.fill(1000, 300)
        paths[name] = {"healthz": "/healthz",
                       "poll-empty": f"/api/sessions/{sid}/events?after={last}&wait=0",
                       "poll-1": f"/api/sessions/{sid}/events?after={last - 1}&wait=0"}
    for r in range(args.rounds):
        order = servers if r % 2 == 0 else servers[::-1]
        for route in ("healthz", "poll-empty", "poll-1"):
            for name, server in order:
                print(f"[poll rate] {name} {route} conns={args.poll_conns}", file=sys.stderr,
                      flush=True)
                if isinstance(server, ClusterTarget):
                    server.clients_on = "any"
                row = request_rate(server, route, paths[name][route], args.poll_conns,
                                   args.poll_seconds, None, None)
                row["setup"] = name
                s.extra["poll_rate"].append(row)
                rates.setdefault((name, route), []).append(row["rps"])
    for route in ("poll-empty", "poll-1", "healthz"):
        med = {name: statistics.median(rates[(name, route)]) for name, _ in servers}
        two, single, base = med[f"rds-{args.workers}w"], med["rds-1w"], med[BASELINE]
        ok = all(r["server_ok"] and not r["bad_status"] for r in s.extra["poll_rate"]
                 if r["route"] == route)
        s.figure("4 poll", f"{route} req/s, {args.workers} workers / 1 (redis)", two, "req/s",
                 single, f">= {TARGETS['poll_ratio']:g}x",
                 two / single >= TARGETS["poll_ratio"] and ok if route != "healthz" else None)
        s.figure("4 poll", f"{route} req/s, {args.workers} workers / memory 1 worker", two,
                 "req/s", base, "(reference)", None)
    case = Case("tether", "poll", args.pollers, 200, 10, args.poller_events, 1, "pollers")
    base = s.case(s.baseline, case, BASELINE)
    s.cluster.owner_order = [s.cluster.workers[0]]
    row = s.case(s.cluster, case, f"rds-{args.workers}w-any", "any")
    s.cluster.owner_order = None
    p99 = row["latency_ms"]["p99"]
    s.figure("4 poll", f"{args.pollers} pollers x 10/s, {args.workers} workers", p99, "ms",
             base["latency_ms"]["p99"], f"p99 <= {TARGETS['pollers_p99_ms']:g} ms",
             p99 <= TARGETS["pollers_p99_ms"] and clean(row))


def owner_log_rate(make: Callable[[], Any], events: int) -> float:
    """Appends per second through :class:`tether.cluster.owner_log.OwnerLog` (the owner
    runner's writer) into one fresh log, flushed at the end."""
    from bench.store import PAYLOAD
    from tether.cluster.owner_log import OwnerLog

    store = make()
    log = store.create_log("owner-log")
    store.client.hset(store.key("owner-log", "rec"), "fence", "1")
    writer = OwnerLog(log, "1")
    started = time.perf_counter()
    for _ in range(events):
        writer.append("text_delta", PAYLOAD)
    writer.flush()
    seconds = time.perf_counter() - started
    store.close()
    return events / seconds


def part_store(s: Sitting) -> None:
    """Figure 5: appends per worker, and the replay of 100,000 events from Redis."""
    from bench import store as store_bench
    from tether.stores.memory import MemoryStore
    from tether.stores.redis import RedisStore

    args = s.args
    n = args.append_events
    counter = iter(range(1_000_000))

    def fresh_redis() -> RedisStore:
        return RedisStore(s.redis.url, prefix=f"bench-store-{next(counter)}")

    print(f"[store] appends in this process: {n} to one log, then to 100 logs by 10 threads",
          file=sys.stderr, flush=True)
    inproc = {"memory": store_bench.append_rate(MemoryStore, n, 1),
              "redis": store_bench.append_rate(fresh_redis, n, 1),
              "redis owner log": owner_log_rate(fresh_redis, n),
              "memory 100 logs": store_bench.append_rate_many(MemoryStore, n, 100, 10),
              "redis 100 logs": store_bench.append_rate_many(fresh_redis, n, 100, 10)}
    prefix = f"bench-store-{next(counter)}"
    first = RedisStore(s.redis.url, prefix=prefix)

    def reopen() -> RedisStore:
        first.close()
        return RedisStore(s.redis.url, prefix=prefix)

    print(f"[store] replay of {args.replay_events} events in this process",
          file=sys.stderr, flush=True)
    memory = MemoryStore()
    replay_memory, memory = store_bench.replay_seconds(memory, lambda: memory,
                                                       args.replay_events, 1)
    memory.close()
    replay_redis, reopened = store_bench.replay_seconds(first, reopen, args.replay_events, 1)
    reopened.close()
    s.extra["store"] = {"append_per_s": {k: round(v) for k, v in inproc.items()},
                        "replay_s": {"memory": round(replay_memory, 4),
                                     "redis": round(replay_redis, 4)}}
    # One append() call is one round trip: the floor a single caller can reach, shown for
    # reference. A worker's runner writes through OwnerLog, which commits bursts.
    for what in ("", " 100 logs"):
        value, base = inproc["redis" + what], inproc["memory" + what]
        s.figure("5 appends", "RedisStore.append in process, one call each, "
                 + ("100 logs by 10 threads" if what else "one log"), value,
                 "ev/s", base, "reference", None)
    value = inproc["redis owner log"]
    s.figure("5 appends", "OwnerLog (the owner's writer) in process, one log", value, "ev/s",
             inproc["memory"], f">= {TARGETS['appends_per_s']:,.0f}/s",
             value >= TARGETS["appends_per_s"])
    s.figure("5 replay", f"read_after(0) of {args.replay_events:,} in process", replay_redis,
             "s", replay_memory, f"< {TARGETS['replay_s']:g} s",
             replay_redis < TARGETS["replay_s"])

    # The real worker: a burst filled by the runner, then a late client on another worker.
    s.cluster.owner_order = [s.cluster.workers[0]]
    s.cluster.clients_on = "other"
    fills: dict[str, tuple[str, int, float]] = {}
    for name, target in ((BASELINE, s.baseline), (f"rds-{args.workers}w", s.cluster)):
        print(f"[store] {name}: fill {args.replay_events} events", file=sys.stderr, flush=True)
        fills[name] = target.fill(args.replay_events, 900)
        s.extra.setdefault("fill", {})[name] = {"events": fills[name][1],
                                                "seconds": round(fills[name][2], 2)}
    rate = {name: f[1] / f[2] for name, f in fills.items()}
    s.figure("5 appends", "runner burst into one log, in the worker (fill)",
             rate[f"rds-{args.workers}w"], "ev/s", rate[BASELINE],
             f">= {TARGETS['appends_per_s']:,.0f}/s",
             rate[f"rds-{args.workers}w"] >= TARGETS["appends_per_s"])
    if args.append_sessions > 1:
        many = {}
        for name, target in ((BASELINE, s.baseline), (f"rds-{args.workers}w", s.cluster)):
            print(f"[store] {name}: {args.append_sessions} sessions x "
                  f"{args.append_session_events} events at once", file=sys.stderr, flush=True)
            many[name] = concurrent_fill(target, args.append_sessions,
                                         args.append_session_events)
        s.extra["concurrent_fill"] = many
        name = f"rds-{args.workers}w"
        s.figure("5 appends", f"runner bursts, {args.append_sessions} sessions on one worker",
                 many[name]["per_s"], "ev/s", many[BASELINE]["per_s"],
                 f">= {TARGETS['appends_per_s']:,.0f}/s",
                 many[name]["per_s"] >= TARGETS["appends_per_s"])
    replays = []
    for transport in args.transports:
        for name, target in ((BASELINE, s.baseline), (f"rds-{args.workers}w", s.cluster)):
            sid, last, _ = fills[name]
            print(f"[store] {name}: replay {transport}", file=sys.stderr, flush=True)
            result = late_client(target, sid, last, transport, args.replay_events, None)
            replays.append({"setup": name, "transport": transport, "events": last,
                            "caught_up_s": result["ready_s"], "received": result["unique"],
                            "ids": result["ids"], "id_errors": result["id_errors"],
                            "duplicated": result["duplicated"], "short": result.get("short"),
                            "workers": result.get("workers"), "errors": result["errors"]})
        base, mine = replays[-2], replays[-1]
        ok = (mine["caught_up_s"] is not None and not mine["id_errors"]
              and not mine["short"] and mine["received"] == args.replay_events)
        s.figure("5 replay", f"{args.replay_events:,} events to caught-up, {transport}, "
                 "non-owner worker", mine["caught_up_s"], "s", base["caught_up_s"],
                 f"< {TARGETS['replay_s']:g} s",
                 ok and mine["caught_up_s"] < TARGETS["replay_s"])
    s.extra["replay"] = replays
    for name, target in ((BASELINE, s.baseline), (f"rds-{args.workers}w", s.cluster)):
        target.teardown([{"session": fills[name][0]}])
    s.cluster.owner_order = None


def concurrent_fill(target: TetherTarget, sessions: int, events: int) -> dict[str, Any]:
    """``sessions`` sessions (on one worker: the cluster's owner_order) each burst ``events``
    deltas at once; events appended per second over all of them, from the first ``user``
    event's ``ts`` to the last ``turn_end``'s (the append times)."""
    sids = []
    for _ in range(sessions):
        if isinstance(target, ClusterTarget):
            sids.append(target.create_owned(target.owner_for(0)))
        else:
            sid = target.http.post(f"{target.server.url}/api/sessions", json={},
                                   timeout=30).json()["id"]
            target.http.post(f"{target.server.url}/api/sessions/{sid}/prompt",
                             json={"text": "hello"}, timeout=30).raise_for_status()
            sids.append(sid)
    afters = [target._wait_turn_end(sid, 0, 120) for sid in sids]
    for sid in sids:
        target.http.post(f"{target.server.url}/api/sessions/{sid}/prompt",
                         json={"text": f"bench {events} 200 0"}, timeout=30).raise_for_status()
    lasts = [target._wait_turn_end(sid, after, 600)
             for sid, after in zip(sids, afters, strict=True)]
    first, end = math.inf, 0.0
    for sid, after, last in zip(sids, afters, lasts, strict=True):
        head = target.http.get(f"{target.server.url}/api/sessions/{sid}/events",
                               params={"after": after, "limit": 1}, timeout=30).json()
        tail = target.http.get(f"{target.server.url}/api/sessions/{sid}/events",
                               params={"after": last - 1, "limit": 1}, timeout=30).json()
        first = min(first, head["events"][0]["ts"])
        end = max(end, tail["events"][0]["ts"])
    total = sum(last - after for last, after in zip(lasts, afters, strict=True))
    target.teardown([{"session": sid} for sid in sids])
    return {"sessions": sessions, "events": total, "seconds": round(end - first, 3),
            "per_s": round(total / (end - first)) if end > first else 0}


# -- kills ----------------------------------------------------------------------------------

class Watcher(threading.Thread):
    """Long-polls a session's events on one worker (its own keep-alive connection) until a
    ``turn_end``; records when it arrived (time.monotonic()) and its reason, and when the
    first event after ``after`` arrived (the turn is under way)."""

    def __init__(self, port: int, worker: str, sid: str, after: int, timeout: float) -> None:
        super().__init__(daemon=True)
        self.http = WorkerHTTP(port)
        self.worker, self.sid, self.after, self.timeout = worker, sid, after, timeout
        self.started = threading.Event()
        self.seen_at: float | None = None
        self.reason: str | None = None
        self.events = 0
        self.error: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        after = self.after
        try:
            while time.monotonic() < deadline:
                status, body = self.http.request(
                    self.worker, "GET",
                    f"/api/sessions/{self.sid}/events?after={after}&wait=5&limit=1000",
                    timeout=30)
                now = time.monotonic()
                if status != 200:
                    self.error = f"poll answered {status}"
                    return
                page = json.loads(body)
                after = page["last_event_id"]
                self.events += len(page["events"])
                if page["events"]:
                    self.started.set()
                for event in page["events"]:
                    if event["kind"] == "turn_end":
                        self.seen_at, self.reason = now, event.get("reason")
                        return
            self.error = f"no turn_end within {self.timeout:.0f} s"
        except Exception as exc:  # reported with the figure
            self.error = repr(exc)
        finally:
            self.started.set()
            self.http.close()


def long_turn(target: TetherTarget, sid: str) -> int:
    """Start a turn that streams for minutes (``bench``, 100 events/s); the cursor before it."""
    after = target.last_event_id(sid)
    target.http.post(f"{target.server.url}/api/sessions/{sid}/prompt",
                     json={"text": "bench 100000 200 100"}, timeout=30).raise_for_status()
    return after


def part_kill(s: Sitting) -> None:
    """Figure 6: kill -9 of the owner worker, and of a whole host, mid-turn."""
    args = s.args
    out: dict[str, Any] = {"stop": [], "worker": [], "host": []}
    s.extra["kill"] = out
    # Baseline: a Stop on the memory store's one worker.
    for _ in range(args.kills):
        base = s.baseline
        sid = base.http.post(f"{base.server.url}/api/sessions", json={}, timeout=30).json()["id"]
        base.http.post(f"{base.server.url}/api/sessions/{sid}/prompt", json={"text": "hello"},
                       timeout=30).raise_for_status()
        base._wait_turn_end(sid, 0, 120)
        after = long_turn(base, sid)
        watcher = _PlainWatcher(base, sid, after, 30)  # one worker: nowhere to land
        watcher.start()
        watcher.started.wait(30)
        t0 = time.monotonic()
        base.http.post(f"{base.server.url}/api/sessions/{sid}/cancel", timeout=30)
        watcher.join(40)
        out["stop"].append({"seconds": None if watcher.seen_at is None
                            else round(watcher.seen_at - t0, 3),
                            "reason": watcher.reason, "error": watcher.error})
        base.teardown([{"session": sid}])
    stops = [r["seconds"] for r in out["stop"] if r["seconds"] is not None]
    base_s = statistics.median(stops) if stops else None

    # kill -9 of the owner worker: a client on another worker of the same host.
    host = s.cluster.hosts[0]
    for trial in range(args.kills):
        print(f"[kill] worker, trial {trial + 1}", file=sys.stderr, flush=True)
        victim, survivor = host.workers[trial % len(host.workers)], None
        survivor = next(w for w in host.workers if w.wid != victim.wid)
        out["worker"].append(kill_trial(s.cluster, victim, survivor, lambda v=victim: (
            os.kill(v.pid, signal.SIGKILL), [v.pid]), host))
        s.cluster.refresh(host)
    times = [r["seconds"] for r in out["worker"]]
    worst = max((t for t in times if t is not None), default=None)
    ok = all(r["seconds"] is not None and r["reason"] == "interrupted" for r in out["worker"])
    s.figure("6 kill", f"kill -9 owner worker -> turn_end, worst of {len(times)}", worst, "s",
             base_s, f"<= {TARGETS['worker_kill_s']:g} s",
             ok and worst is not None and worst <= TARGETS["worker_kill_s"])

    if args.hosts < 2:
        return
    lease = float(s.cluster.lease or 10)  # LiveServer passes no TETHER_ setting of ours
    for trial in range(args.host_kills):
        print(f"[kill] host, trial {trial + 1}", file=sys.stderr, flush=True)
        host_b = s.cluster.add_host(args.workers)
        victim, survivor = host_b.workers[0], host.workers[0]

        def kill_host(b: Host = host_b) -> tuple[Any, list[int]]:
            assert b.server.process is not None
            agents = [pid for w in b.workers for pid in children(w.pid)]
            os.killpg(b.server.process.pid, signal.SIGKILL)
            for pid in agents:  # the host's agents die with it
                kill_pid(pid)
            return None, agents + [w.pid for w in b.workers]

        try:
            out["host"].append(kill_trial(s.cluster, victim, survivor, kill_host, host_b))
        finally:
            s.cluster.stop_host(host_b)
    times = [r["seconds"] for r in out["host"]]
    worst = max((t for t in times if t is not None), default=None)
    ok = all(r["seconds"] is not None and r["reason"] == "interrupted" for r in out["host"])
    s.figure("6 kill", f"kill -9 host B -> turn_end on host A, worst of {len(times)}", worst,
             "s", base_s, f"<= lease + {TARGETS['host_kill_extra_s']:g} = "
             f"{lease + TARGETS['host_kill_extra_s']:g} s",
             ok and worst is not None and worst <= lease + TARGETS["host_kill_extra_s"])


class _PlainWatcher(Watcher):
    """A :class:`Watcher` through the one-worker baseline (no worker to land on)."""

    def __init__(self, target: TetherTarget, sid: str, after: int, timeout: float) -> None:
        super().__init__(target.port, "", sid, after, timeout)
        self.target = target

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        after = self.after
        http_ = requests.Session()
        http_.headers.update(AUTH_HEADERS)
        try:
            while time.monotonic() < deadline:
                page = http_.get(f"{self.target.server.url}/api/sessions/{self.sid}/events",
                                 params={"after": after, "wait": 5, "limit": 1000},
                                 timeout=30).json()
                now = time.monotonic()
                after = page["last_event_id"]
                if page["events"]:
                    self.started.set()
                for event in page["events"]:
                    if event["kind"] == "turn_end":
                        self.seen_at, self.reason = now, event.get("reason")
                        return
            self.error = f"no turn_end within {self.timeout:.0f} s"
        except Exception as exc:
            self.error = repr(exc)
        finally:
            self.started.set()
            http_.close()


def kill_trial(cluster: ClusterTarget, victim: Worker, survivor: Worker, kill: Any,
               host: Host) -> dict[str, Any]:
    """A session claimed by ``victim``, a long turn, a client long-polling on ``survivor``;
    ``kill()`` (returns (_, pids killed)); seconds from the kill to the ``turn_end`` the
    client sees, its reason, and whether the session's agent is gone."""
    sid = cluster.create_owned(victim)
    cluster._wait_turn_end(sid, 0, 120)
    cluster.check_owner(sid)
    agents = children(victim.pid)
    after = long_turn(cluster, sid)
    watcher = Watcher(survivor.port, survivor.wid, sid, after, 60)
    watcher.start()
    watcher.started.wait(30)
    time.sleep(0.5)  # mid-turn: deltas are flowing
    agents = children(victim.pid) or agents
    t0 = time.monotonic()
    kill()
    watcher.join(70)
    gone = wait_gone(agents, 10)
    for pid in gone:
        kill_pid(pid)
    result = {"victim": victim.wid, "client_on": survivor.wid,
              "seconds": None if watcher.seen_at is None else round(watcher.seen_at - t0, 3),
              "reason": watcher.reason, "error": watcher.error,
              "events_before_kill": watcher.events,
              "agents_left_after_10s": len(gone)}
    try:
        cluster.teardown([{"session": sid}])
    except Exception as exc:  # reported; the next trial goes on
        result["teardown"] = repr(exc)
    return result


# -- conns ----------------------------------------------------------------------------------

def part_list(s: Sitting) -> None:
    """Figure 7: the session list (``GET /api/sessions``) with ``--list-sessions`` sessions,
    each server topped up to that many (earlier parts made some), on fresh connections (on
    the cluster, the kernel spreads them over the workers)."""
    want, requests_each = s.args.list_sessions, 20
    p50s: dict[str, float] = {}
    for name, target in ((BASELINE, s.baseline), (f"rds-{s.args.workers}w", s.cluster)):
        print(f"[list] {name} {want} sessions", file=sys.stderr, flush=True)
        base = f"http://127.0.0.1:{target.port}"
        with requests.Session() as http:
            http.headers.update(AUTH_HEADERS)
            have = len(http.get(f"{base}/api/sessions", timeout=60).json()["sessions"])
            for i in range(max(0, want - have)):
                made = http.post(f"{base}/api/sessions", json={"title": f"list {i}"},
                                 timeout=60)
                made.raise_for_status()
        times, counts = [], set()
        for _ in range(requests_each):
            start = time.perf_counter()
            answer = requests.get(f"{base}/api/sessions", headers=AUTH_HEADERS, timeout=60)
            times.append((time.perf_counter() - start) * 1000)
            answer.raise_for_status()
            counts.add(len(answer.json()["sessions"]))
        p50s[name] = statistics.median(times)
        s.extra.setdefault("list", []).append({"setup": name, "sessions": sorted(counts),
                                               "p50_ms": round(p50s[name], 2),
                                               "max_ms": round(max(times), 2)})
    s.figure("7 list", f"GET /api/sessions, {want} sessions, p50", p50s[f"rds-{s.args.workers}w"],
             "ms", p50s[BASELINE], "reference", None)


def part_conns(s: Sitting) -> None:
    """Figure 8: the largest count per worker in every cluster case, against an idle worker
    (sampled at the start of the sitting). A pool never closes a connection it opened, so a
    case's count includes what earlier cases opened."""
    idle = s.idle
    after: dict[str, Any] = {}
    with s.conns.sampling(s.clusters, after):
        time.sleep(1.0)
    s.extra["redis_conns_idle"] = idle
    s.extra["redis_conns_end"] = after
    cases = [r for r in s.rows if r.get("redis_conns")]
    if not any(r["total_clients"] >= 1000 for r in cases):
        case = Case("tether", "sse", 1000, 200, 10, 30, 1, "conns")
        s.cluster.owner_order = [s.cluster.workers[0]]
        s.case(s.cluster, case, f"rds-{s.args.workers}w-any", "any")
        s.cluster.owner_order = None
        cases = [r for r in s.rows if r.get("redis_conns")]
    for r in cases:
        conns = r["redis_conns"]
        value = conns.get("max_per_worker", 0)
        s.figure("8 conns", f"{r['label']} {r['setup']} {r['transport']} N="
                 f"{r['total_clients']}: per worker, most", value, "conns",
                 idle.get("max_per_worker"), "<= 1 + 64, bounded",
                 value <= TARGETS["redis_conns"])


# -- output ---------------------------------------------------------------------------------

def print_figures(figures: list[dict[str, Any]]) -> None:
    verdict = {True: "met", False: "MISSED", None: "-"}
    head = (f"{'figure':<10}{'case':<58}{'value':>10} {'unit':<6}{'baseline':>10}"
            f"{'ratio':>8}  {'target':<26}verdict")
    print(head)
    print("-" * len(head))
    for f in figures:
        def num(x: float | None) -> str:
            if x is None:
                return "-"
            return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.2f}"
        ratio = "-" if f["ratio"] is None else f"{f['ratio']:.2f}"
        print(f"{f['figure']:<10}{f['case'][:57]:<58}{num(f['value']):>10} {f['unit']:<6}"
              f"{num(f['baseline']):>10}{ratio:>8}  {f['target'][:25]:<26}"
              f"{verdict[f['met']]}")


def print_cluster_rows(rows: list[dict[str, Any]]) -> None:
    """bench/fanout.py's table, the setup in the target column; then where clients landed
    and the Redis connections per worker."""
    print_rows([{**r, "target": r["setup"]} for r in rows], None)
    landed = [r for r in rows if r.get("workers")]
    if landed:
        print("\nclients per worker, Redis connections per worker (most seen; blocked):")
        for r in landed:
            conns = r.get("redis_conns", {}).get("by_worker", {})
            where = ", ".join(f"{w.split(':')[0]}:{w.split(':')[1]} {n}"
                              for w, n in sorted(r["workers"].items()))
            redis_text = ", ".join(f"{k.split(':')[0]}:{k.split(':')[1] if ':' in k else ''} "
                                   f"{v['conns']}/{v['blocked']}"
                                   for k, v in sorted(conns.items()))
            print(f"  {r['label']:<8}{r['setup']:<13}{r['transport']:<5}"
                  f"N={r['total_clients']:<5} clients: {where}; redis: {redis_text}"
                  + (f"; OWNER: {r['owner_problems']}" if r.get("owner_problems") else ""))


def print_extra(s: Sitting) -> None:
    if "poll_rate" in s.extra:
        print("\nLong-poll request rate (one request in flight per connection):")
        print(f"{'setup':<10}{'route':<12}{'conns':>6}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
              f"{'cpu s':>7}{'us/req':>8}{'cli':>6}  clients per worker")
        for r in s.extra["poll_rate"]:
            lat = r["latency_ms"]
            print(f"{r['setup']:<10}{r['route']:<12}{r['conns']:>6}{r['rps']:>9.0f}"
                  f"{lat.get('p50', 0):>8.2f}{lat.get('p99', 0):>8.2f}{r['server_cpu_s']:>7.2f}"
                  f"{r['cpu_us_per_request'] or 0:>8.1f}{r['client_busy']:>6.2f}  "
                  f"{r.get('workers') or ''}"
                  + ("" if r["server_ok"] and not r["bad_status"] else "  SERVER MISMATCH"))
    if "store" in s.extra:
        st = s.extra["store"]
        print("\nIn-process appends/s and replay s:", json.dumps(st))
        print("Runner fills:", json.dumps(s.extra.get("fill")),
              json.dumps(s.extra.get("concurrent_fill")))
    if "replay" in s.extra:
        print(f"\n{'replay':<8}{'setup':<10}{'tr':<6}{'events':>8}{'caught-up s':>13}"
              f"{'ids ok':>8}  worker")
        for r in s.extra["replay"]:
            ok = not (r["id_errors"] or r["short"] or r["duplicated"])
            print(f"replay  {r['setup']:<10}{r['transport']:<6}{r['events']:>8}"
                  f"{r['caught_up_s'] or float('nan'):>13.3f}{'yes' if ok else 'NO':>8}  "
                  f"{r.get('workers') or ''}")
    for key, title in (("redis_conns_idle", "idle, at the start"),
                       ("redis_conns_end", "at the end")):
        if key in s.extra:
            print(f"Redis connections {title} (most seen; blocked): "
                  + ", ".join(f"{k} {v['conns']}/{v['blocked']}"
                              for k, v in sorted(s.extra[key]["by_worker"].items())))
    if "kill" in s.extra:
        print("\nKills (seconds from the signal to the turn_end a client on another worker "
              "sees):")
        for kind, trials in s.extra["kill"].items():
            for t in trials:
                print(f"  {kind:<7}{t.get('seconds')!s:>8} s  reason {t.get('reason')}  "
                      + " ".join(f"{k}={v}" for k, v in t.items()
                                 if k not in ("seconds", "reason") and v is not None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])

    def names(allowed: tuple[str, ...]) -> Any:
        def parse_names(text: str) -> list[str]:
            got = [x for x in text.split(",") if x]
            if set(got) - set(allowed):
                raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}")
            return got
        return parse_names

    transports = ("sse", "ws", "poll")
    parser.add_argument("--parts", type=names(PARTS), default=list(PARTS))
    parser.add_argument("--workers", type=int, default=2, help="workers per gunicorn master")
    parser.add_argument("--hosts", type=int, default=2,
                        help="2: host B joins for the mix and the host kill; 1: never")
    parser.add_argument("--transports", type=names(transports), default=["sse", "ws", "poll"],
                        help="the hop and the replay")
    parser.add_argument("--mix-transports", type=names(transports), default=["sse", "ws"])
    parser.add_argument("--wide-transports", type=names(transports), default=["sse", "ws"])
    parser.add_argument("--hop-events", type=int, default=1000, help="at 100/s")
    parser.add_argument("--mix-seconds", type=float, default=10.0)
    parser.add_argument("--wide-clients", type=int, default=2000)
    parser.add_argument("--wide-events", type=int, default=50, help="at 10/s")
    parser.add_argument("--poll-conns", type=int, default=100)
    parser.add_argument("--poll-seconds", type=float, default=5.0)
    parser.add_argument("--pollers", type=int, default=1000)
    parser.add_argument("--poller-events", type=int, default=50, help="at 10/s")
    parser.add_argument("--rounds", type=int, default=1, help="request-rate rounds")
    parser.add_argument("--append-events", type=int, default=50_000)
    parser.add_argument("--append-sessions", type=int, default=10)
    parser.add_argument("--append-session-events", type=int, default=10_000)
    parser.add_argument("--replay-events", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=3, help="worker kills (and Stops)")
    parser.add_argument("--list-sessions", type=int, default=300,
                        help="sessions listed by the list part")
    parser.add_argument("--host-kills", type=int, default=1)
    args = parser.parse_args()
    if not (1 <= args.workers <= 8 and 1 <= args.hosts <= 2 and 1 <= args.kills <= 10
            and 0 <= args.host_kills <= 5 and 1 <= args.rounds <= 10
            and 1 <= args.wide_clients <= 10000 and 1 <= args.pollers <= 10000):
        parser.error("workers 1..8, hosts 1..2, kills 1..10, host-kills 0..5, rounds 1..10, "
                     "clients 1..10000")
    if args.workers < 2:
        parser.error("the cluster needs 2 workers or more")
    hard = raise_nofile()
    most = max(args.wide_clients, args.pollers)
    if most * 2 + 1000 > hard:  # client and server each hold N sockets, plus the probes
        parser.error(f"the open-file limit ({hard}) is too low for {most} clients")
    stop_on_signals()
    info = machine(False)
    print(f"machine: {info['cpus']} CPUs, load average {info['load'][0]:.2f} at start, "
          "nothing pinned")
    with tempfile.TemporaryDirectory(prefix="tether-bench-cluster-") as tmp, \
            ExitStack() as stack:
        s = Sitting(args, stack, Path(tmp))
        print(f"redis-server {s.redis.port}, baseline {BASELINE} on port {s.baseline.port}, "
              f"cluster host-a on port {s.cluster.port}: {len(s.cluster.workers)} workers",
              file=sys.stderr, flush=True)
        stopped: KeyboardInterrupt | None = None
        failed: list[dict[str, str]] = []
        try:
            for part in PARTS:
                if part not in args.parts:
                    continue
                try:
                    {"hop": part_hop, "mix": part_mix, "wide": part_wide, "poll": part_poll,
                     "store": part_store, "kill": part_kill, "list": part_list,
                     "conns": part_conns}[part](s)
                except Exception as exc:  # the other parts still run; reported at the end
                    traceback.print_exc()
                    failed.append({"part": part, "error": repr(exc)[:500]})
                    s.cluster.owner_order = None
        except KeyboardInterrupt as exc:  # print what was measured, after the cleanup
            stopped = exc
        info["load_end"] = os.getloadavg()
    print()
    if s.rows:
        print_cluster_rows(s.rows)
    print_extra(s)
    print(f"\nFigures against the baseline ({BASELINE}: one worker, memory store, this "
          "sitting); ratio = value / baseline")
    print_figures(s.figures)
    print(json.dumps({"bench": "cluster", "machine": info, "args": vars(args),
                      "targets": TARGETS, "figures": s.figures, "rows": s.rows,
                      "interrupted": stopped is not None, "failed": failed, **s.extra},
                     default=str))
    for failure in failed:
        print(f"part {failure['part']} failed: {failure['error']}", file=sys.stderr)
    if stopped is not None:
        print("interrupted: the figures above are the parts measured so far",
              file=sys.stderr)
        raise stopped
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    run(main)
