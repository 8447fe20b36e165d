"""Fan-out: one agent's events to many clients, on Tether and on three peers, in one sitting.

Tether runs as ``make run`` does (gunicorn, one gevent worker; tests/e2e/live.py LiveServer)
on a free loopback port, pinned to core 0 with the agent processes it starts. Events go
through the real path: the ``local`` agent's ``bench <count> <bytes> <rate>`` command writes
stream-json ``text_delta`` lines stamped with its send time (tether/agents/local.py), Tether
translates and appends them to the session's log, and the clients read them over SSE,
WebSocket or long-poll. The peers (bench/peers/: naive Flask + gevent, sse-starlette on
uvicorn, Node.js ``http``) generate the same events in-process on ``POST /publish`` and serve
SSE only. The load client (bench/loadclient.py) is a separate process pinned to core 1.

    .venv/bin/python -m bench.fanout --quick              # about a minute
    .venv/bin/python -m bench.fanout                      # N 3,100,1000: about five minutes
    .venv/bin/python -m bench.fanout --full               # the issue's whole matrix (hours)
    .venv/bin/python -m bench.fanout --clients 1000 --rates 10 --transports sse --peers node
    .venv/bin/python -m bench.fanout --mix                # 100 sessions x 3 clients x 20/s
    .venv/bin/python -m bench.fanout --replay             # a late client, 100,000 events
    .venv/bin/python -m bench.fanout --huge --sizes 200 --rates 10   # adds 5,000 and 10,000
    .venv/bin/python -m bench.fanout --quick --store redis --workers 2   # Tether on Redis

``--store redis`` runs Tether on a private ``redis-server`` with ``--workers`` gunicorn workers
(bench/cluster.py's ClusterTarget: clients spread evenly over the workers, nothing pinned),
and the one-worker memory store on the same loads as its baseline (``mem-1w``, in the ratio
table beside the peers, same transport); ``--replay`` then replays from Redis too, to a
client on a worker that does not own the session.

Figures per case (bench/README.md says more): latency from the agent's write to the client's
receipt (p50, p90, p99, max, ms), delivered events/s summed over clients, events lost,
duplicated, out of order and id errors (all must be 0), server CPU seconds and microseconds per
delivered event (the gunicorn worker or the peer process, from /proc/<pid>/stat), server RSS
per attached connection (KB, /proc/<pid>/status VmRSS after attaching minus before), and the
client's busy fraction (CPU / wall: near 1 the client is the bottleneck). On Tether, its own
figures from ``GET /metrics`` (bench/scrape.py) as deltas over the delivery: events delivered
(checked against what the clients read and N x the events the log gained), events appended,
writes and the append-to-write latency histogram's p50 and p99, and the clients gauge while
attached and after the teardown (``srv`` OK or MISMATCH). Then Tether's figures as ratios to
each peer's, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, astuple, dataclass
from pathlib import Path
from typing import Any

import requests

from bench.scrape import (
    Samples,
    check_delivered,
    connected,
    delta,
    latency,
    scrape,
    settle_clients,
)
from tests.e2e.live import ROOT, LiveServer, free_port
from tests.support import AUTH_HEADERS, TEST_TOKEN

PEERS = ("naive_flask", "starlette", "node")
#: With ``--store redis``: the one-worker memory-store Tether run on the same loads, the
#: baseline of the cluster's rows (bench/cluster.py names it alike).
BASELINE = "mem-1w"
TRANSPORTS = ("sse", "ws", "poll")
SERVER_CPU, CLIENT_CPU = 0, 1
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Case:
    """One load: ``sessions`` sessions (channels), ``clients`` clients on each, ``events``
    deltas of ``size`` characters per session at ``rate`` per second (0: a burst)."""

    target: str  # "tether" or a peer
    transport: str
    clients: int
    size: int
    rate: float
    events: int
    sessions: int = 1
    label: str = "fan-out"

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.label, self.sessions, self.clients, self.size, self.rate, self.events)


# -- /proc --------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` (proc(5), fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def server_pids(target: Any) -> list[int]:
    """The processes whose CPU and memory a row counts: a target's ``pids`` (every worker of
    a cluster, bench/cluster.py), else its one ``pid``."""
    return list(getattr(target, "pids", None) or [target.pid])


def server_cpu(target: Any) -> float:
    """CPU seconds of every process of ``target`` (:func:`server_pids`)."""
    return sum(cpu_seconds(pid) for pid in server_pids(target))


def server_rss(target: Any) -> int:
    """VmRSS (KB) of every process of ``target`` (:func:`server_pids`)."""
    return sum(rss_kb(pid) for pid in server_pids(target))


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


@contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Run the block (and every process it starts) on ``cpu`` only."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# -- servers ------------------------------------------------------------------------------

class TetherTarget:
    """Tether under gunicorn; sessions driven by the ``local`` agent's ``bench`` command."""

    name = "tether"
    is_tether = True

    def __init__(self, workdir: Path, cpu: int | None, store: str = "memory",
                 connections: int = 10000, shared_writer: bool = True,
                 gc_freeze: bool = True) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        env: dict[str, Any] = {"TETHER_STORE": store, "TETHER_MAX_SESSIONS": 1000,
                               "TETHER_SHARED_WRITER": int(shared_writer),
                               "TETHER_GC_FREEZE": int(gc_freeze)}
        if connections + 1000 > 10000:  # gunicorn.conf.py's worker_connections
            env["GUNICORN_CMD_ARGS"] = f"--worker-connections {connections + 1000}"
        self.server = LiveServer(workdir, **env)
        self.cpu, self.port, self.http = cpu, self.server.port, requests.Session()
        self.http.headers.update(AUTH_HEADERS)

    def __enter__(self) -> TetherTarget:
        with pinned(self.cpu):
            self.server.start()
        assert self.server.process is not None
        deadline = time.monotonic() + 10
        while not (workers := children(self.server.process.pid)):
            if time.monotonic() > deadline:
                raise RuntimeError("no gunicorn worker")
            time.sleep(0.1)
        self.pid = workers[0]
        return self

    def __exit__(self, *exc: Any) -> None:
        self.http.close()
        if exc and exc[0] is not None and not issubclass(exc[0], KeyboardInterrupt):
            log = self.server.log_path.read_text(errors="replace").splitlines()
            print("gunicorn's log, less its GET lines:\n" + "\n".join(
                line for line in log if '"GET ' not in line)[-6000:], file=sys.stderr)
        self.server.__exit__(*exc)

    def _wait_turn_end(self, sid: str, after: int, timeout: float) -> int:
        """Long-poll until a ``turn_end`` after ``after``; returns the last event id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            page = self.http.get(f"{self.server.url}/api/sessions/{sid}/events",
                                 params={"after": after, "wait": 5, "limit": 1000},
                                 timeout=20).json()
            after = page["last_event_id"]
            if any(e["kind"] == "turn_end" for e in page["events"]):
                return after
        raise RuntimeError(f"no turn_end in session {sid} within {timeout} s")

    def place(self, session: str | None, clients: int, index: int = 0) -> dict[str, Any]:
        """Where ``clients`` clients of ``session`` (the ``index``-th of a case) connect: more
        fields of their load-client target. One worker: nothing to add. A cluster
        (bench/cluster.py) names a port and the workers they must land on."""
        return {}

    def settle(self, transport: str, baseline: int, timeout: float) -> tuple[int, float]:
        """Scrape until the clients gauge is back to ``baseline`` (bench/scrape.py)."""
        return settle_clients(self.http, self.server.url, transport, baseline, timeout)

    def setup(self, case: Case) -> list[dict[str, Any]]:
        """Create the sessions, start each agent with a short turn, and return the targets
        (one per session, its clients attaching after that turn)."""
        sids = []
        for _ in range(case.sessions):
            sid = self.http.post(f"{self.server.url}/api/sessions", json={},
                                 timeout=10).json()["id"]
            self.http.post(f"{self.server.url}/api/sessions/{sid}/prompt",
                           json={"text": "hello"}, timeout=10).raise_for_status()
            sids.append(sid)
        targets = []
        for i, sid in enumerate(sids):
            after = self._wait_turn_end(sid, 0, 120)
            path = {"sse": f"/api/sessions/{sid}/stream?after={after}",
                    "poll": f"/api/sessions/{sid}/events", "ws": "/api/ws"}[case.transport]
            targets.append({"path": path, "session": sid, "after": after,
                            "clients": case.clients, **self.place(sid, case.clients, i)})
        return targets

    def inject(self, case: Case, targets: list[dict[str, Any]]) -> None:
        text = f"bench {case.events} {case.size} {case.rate:g}"
        for target in targets:
            self.http.post(f"{self.server.url}/api/sessions/{target['session']}/prompt",
                           json={"text": text}, timeout=10).raise_for_status()

    def scrape(self) -> Samples:
        """``GET /metrics``, parsed (bench/scrape.py)."""
        return scrape(self.http, self.server.url)

    def last_event_id(self, sid: str) -> int:
        """The session's last event id (``GET /api/sessions/<id>``: delivers no event)."""
        answer = self.http.get(f"{self.server.url}/api/sessions/{sid}", timeout=10)
        answer.raise_for_status()
        return answer.json()["last_event_id"]

    def teardown(self, targets: list[dict[str, Any]]) -> None:
        for target in targets:
            try:
                self.http.delete(f"{self.server.url}/api/sessions/{target['session']}",
                                 timeout=30).raise_for_status()
            except requests.RequestException as exc:
                print(f"warning: deleting session {target['session']}: {exc}", file=sys.stderr)

    def fill(self, events: int, timeout: float) -> tuple[str, int, float]:
        """A session with ``events`` stored bench deltas; (id, last event id, seconds)."""
        sid = self.http.post(f"{self.server.url}/api/sessions", json={}, timeout=10).json()["id"]
        started = time.monotonic()
        self.http.post(f"{self.server.url}/api/sessions/{sid}/prompt",
                       json={"text": f"bench {events} 200 0"}, timeout=10).raise_for_status()
        last = self._wait_turn_end(sid, 0, timeout)
        return sid, last, time.monotonic() - started


class PeerTarget:
    """A peer from bench/peers/, SSE only; events generated in-process on ``POST /publish``."""

    def __init__(self, name: str, cpu: int | None) -> None:
        self.name, self.cpu, self.port = name, cpu, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cwd = ROOT
        self.process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        if self.name == "node":
            return ["node", str(ROOT / "bench/peers/node_sse.js"), str(self.port)]
        module = {"naive_flask": "naive_flask", "starlette": "starlette_sse"}[self.name]
        return [sys.executable, "-m", f"bench.peers.{module}", str(self.port)]

    def __enter__(self) -> PeerTarget:
        with pinned(self.cpu):
            self.process = subprocess.Popen(self.argv(), cwd=self.cwd, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.process.stderr.read()[-2000:]!r}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    self.pid = self.process.pid
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"{self.name} did not start")

    def __exit__(self, *exc: Any) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()

    def setup(self, case: Case) -> list[dict[str, Any]]:
        channel = f"c{time.monotonic_ns()}"
        return [{"path": f"/stream?channel={channel}-{i}", "session": f"{channel}-{i}",
                 "after": 0, "clients": case.clients} for i in range(case.sessions)]

    def inject(self, case: Case, targets: list[dict[str, Any]]) -> None:
        for target in targets:
            requests.post(f"{self.url}/publish", timeout=10, params={
                "channel": target["session"], "count": case.events, "bytes": case.size,
                "rate": case.rate}).raise_for_status()

    def teardown(self, targets: list[dict[str, Any]]) -> None:
        pass


# -- the load client ----------------------------------------------------------------------

class LoadClient:
    """bench/loadclient.py as a subprocess: config in, ``ready``, ``go``, result out."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "bench.loadclient"], cwd=ROOT,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        start_new_session=True)
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._write(json.dumps(cfg))

    def _write(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def next(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"the load client said nothing in {timeout:.0f} s") from None
        if line is None:
            raise RuntimeError("the load client exited")
        return line

    def go(self) -> None:
        self._write("go")

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


@contextmanager
def profiled(pid: int, out: Path | None, cpu: int | None) -> Iterator[None]:
    """py-spy samples ``pid`` (250 Hz, non-blocking) during the block; raw collapsed stacks
    go to ``out``. py-spy runs on the client's core."""
    spy = None
    if out is not None:
        with pinned(cpu):
            spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record",
                                    "--pid", str(pid), "--rate", "250", "--nonblocking",
                                    "--format", "raw", "--output", str(out)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # attached
    try:
        yield
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(5)


def hot_functions(raw: Path, top: int = 8) -> list[tuple[str, float]]:
    """The functions most samples were in (self time), as (function, share of samples)."""
    counts: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        leaf = re.sub(r":\d+\)$", ")", stack.rsplit(";", 1)[-1])  # per function, not line
        counts[leaf] = counts.get(leaf, 0) + int(n)
    total = sum(counts.values()) or 1
    return [(f, c / total) for f, c in sorted(counts.items(), key=lambda x: -x[1])[:top]]


def run_case(target: TetherTarget | PeerTarget, case: Case, client_cpu: int | None,
             rss_settle: float, profile: Path | None = None) -> dict[str, Any]:
    """One case on one target; a row of figures. With ``profile`` (a directory), Tether's
    worker is sampled by py-spy during the delivery and the hottest functions printed.

    On Tether, ``GET /metrics`` is scraped before the clients connect, once they are attached
    (before the injection), after the last client's last event (each client waits for the
    turn's ``turn_end``, so it has read every event the server handed it) and after the
    teardown; :func:`server_figures` makes the row's ``server`` object of them."""
    total = case.clients * case.sessions
    timeout = 60 + (case.events / case.rate if case.rate else 0) + total * case.events / 20_000
    targets = target.setup(case)
    # Not isinstance: run as ``python -m bench.fanout`` this module is __main__, and a
    # cluster target (bench/cluster.py) subclasses bench.fanout's TetherTarget, not ours.
    tether = target if getattr(target, "is_tether", False) else None
    client = None
    scrapes: list[Samples] = []
    try:
        rss0 = server_rss(target)
        if tether is not None:
            scrapes.append(tether.scrape())
        client = LoadClient({"transport": case.transport, "port": target.port,
                             "token": TEST_TOKEN if tether is not None else None,
                             "targets": targets, "events": case.events, "timeout": timeout,
                             "cpu": client_cpu, "until_turn_end": tether is not None})
        first = client.next(timeout + 30)
        if "result" in first:  # not every client attached
            out_row = row(case, target, first["result"], 0, rss0, rss0, 0.0)
        else:
            time.sleep(rss_settle)
            out = None
            if profile is not None and tether is not None:
                out = profile / (f"{case.label}-{case.transport}-{total}-{case.size}-"
                                 f"{case.rate:g}.txt")
            with profiled(target.pid, out, client_cpu):
                if tether is not None:
                    scrapes.append(tether.scrape())
                rss1, cpu0 = server_rss(target), server_cpu(target)
                target.inject(case, targets)
                client.go()
                result = client.next(timeout + 30)["result"]
                cpu = server_cpu(target) - cpu0
                if tether is not None:
                    scrapes.append(tether.scrape())
            if out is not None and out.exists():
                print(f"profile {out.name}: " + ", ".join(
                    f"{f} {share:.0%}" for f, share in hot_functions(out)), file=sys.stderr)
            out_row = row(case, target, result, first["ready"], rss0, rss1, cpu)
            if tether is not None:
                # Each session's log now ends with the turn's turn_end (the clients waited
                # for it); a session GET delivers nothing, so it does not move the counters.
                logged = [tether.last_event_id(t["session"]) - t["after"] for t in targets]
    finally:
        if client is not None:
            client.close()
        target.teardown(targets)
    if tether is not None and len(scrapes) == 3:
        after = tether.settle(case.transport, connected(scrapes[0], case.transport), 10)
        out_row["server"] = server_figures(case, scrapes, after, logged, result)
    return out_row


def server_figures(case: Case, scrapes: list[Samples], after: tuple[int, float],
                   logged: list[int], result: dict[str, Any]) -> dict[str, Any]:
    """The ``server`` object of a Tether row, from ``/metrics`` scraped before the clients
    connect, once attached, and after the last event (``scrapes``), the clients gauge after
    the teardown (``after``: value, seconds it took), the events each session's log gained
    (``logged``) and the load client's result; ``problems`` lists every check that failed."""
    base, attached, end = scrapes
    n = case.clients * case.sessions
    appended = round(delta(attached, end, "tether_events_appended_total"))
    check = check_delivered(attached, end, case.transport, result["ids"])
    figures = {
        "delivered": check["delivered"],
        "client_ids": check["client_ids"],  # every event id the clients read, summed
        "client_non_bench": result["ids"] - result["received"],
        "expected": case.clients * sum(logged),  # every client, every event after its cursor
        "appended": appended, "logged": sum(logged),
        "latency": latency(attached, end, case.transport),
        "clients_baseline": connected(base, case.transport),
        "clients_attached": connected(attached, case.transport),
        "clients_after": after[0], "clients_settle_s": after[1]}
    lat = figures["latency"]
    figures["events_per_write"] = round(figures["delivered"] / lat["writes"], 2) \
        if lat["writes"] else None
    problems = []
    if not check["ok"]:
        problems.append(f"delivered {figures['delivered']} != client ids "
                        f"{figures['client_ids']}")
    if figures["delivered"] != figures["expected"]:
        problems.append(f"delivered {figures['delivered']} != N x logged "
                        f"{figures['expected']}")
    if appended != figures["logged"]:
        problems.append(f"appended {appended} != logged {figures['logged']}")
    if figures["clients_attached"] - figures["clients_baseline"] != n:
        problems.append(f"clients {figures['clients_attached']} attached "
                        f"(baseline {figures['clients_baseline']}), not +{n}")
    if figures["clients_after"] != figures["clients_baseline"]:
        problems.append(f"clients {figures['clients_after']} after teardown, not "
                        f"{figures['clients_baseline']}")
    return {**figures, "ok": not problems, "problems": problems}


def row(case: Case, target: Any, result: dict[str, Any], ready_s: float, rss0: int, rss1: int,
        cpu: float) -> dict[str, Any]:
    total = case.clients * case.sessions
    return {**asdict(case), "target": target.name, "total_clients": total,
            "attach_s": ready_s, "latency_ms": result["latency_ms"],
            "delivered": result["rate"],
            "offered": total * case.rate or None, "lost": result["lost"],
            "duplicated": result["duplicated"], "out_of_order": result["out_of_order"],
            "id_errors": result["id_errors"], "reconnects": result.get("reconnects", 0),
            "server_cpu_s": round(cpu, 3),
            "cpu_us_per_delivery": round(cpu / result["unique"] * 1e6, 2)
            if result["unique"] else None,
            "rss_before_kb": rss0, "rss_after_kb": rss1,
            "rss_kb_per_conn": round((rss1 - rss0) / total, 1),
            "client_busy": result["busy"], "errors": result["errors"],
            "workers": result.get("workers") or None, "server": None}


# -- the sitting --------------------------------------------------------------------------

def matrix(args: argparse.Namespace) -> list[Case]:
    cases = []
    for clients in args.clients:
        for size in args.sizes:
            for rate in args.rates:
                events = args.events if not rate else max(1, min(
                    args.events, int(rate * args.paced_seconds)))
                for transport in args.transports:
                    cases.append(Case("tether", transport, clients, size, rate, events))
                for peer in args.peers:
                    cases.append(Case(peer, "sse", clients, size, rate, events))
    if args.mix:
        events = int(20 * args.mix_seconds)
        for transport in args.transports:
            cases.append(Case("tether", transport, 3, 200, 20, events, 100, "mix"))
        for peer in args.peers:
            cases.append(Case(peer, "sse", 3, 200, 20, events, 100, "mix"))
    return cases


def alternate(cases: list[Case], rounds: int) -> list[Case]:
    """Every case ``rounds`` times; within a load, Tether and the peers take turns, the order
    reversed every round, so drift on a shared machine hits them alike."""
    groups: dict[tuple[Any, ...], list[Case]] = {}
    for case in cases:
        groups.setdefault(case.key, []).append(case)
    out = []
    for group in groups.values():
        for r in range(rounds):
            out.extend(group if r % 2 == 0 else group[::-1])
    return out


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tether / peer, per load: delivered/s (higher is better), p99 and CPU per delivery
    (lower is better). With several rounds, the median of each side."""
    groups: dict[tuple[Any, ...], dict[tuple[str, str], list[dict[str, Any]]]] = {}
    for r in rows:
        key = (r["label"], r["sessions"], r["clients"], r["size"], r["rate"], r["events"])
        groups.setdefault(key, {}).setdefault((r["target"], r["transport"]), []).append(r)
    out = []

    def med(items: list[dict[str, Any]], field: str) -> float | None:
        values = [(i[field] if field != "p99" else i["latency_ms"]["p99"]) for i in items]
        values = [v for v in values if v]
        return statistics.median(values) if values else None

    for key, sides in groups.items():
        for (name, transport), mine in sides.items():
            if name != "tether":
                continue
            for (peer, theirs_transport), theirs in sides.items():
                if peer == "tether" or (peer == BASELINE and theirs_transport != transport):
                    continue
                entry = {"label": key[0], "sessions": key[1], "clients": key[2],
                         "size": key[3], "rate": key[4], "tether": transport, "peer": peer}
                for field in ("delivered", "p99", "cpu_us_per_delivery"):
                    a, b = med(mine, field), med(theirs, field)
                    entry[field] = round(a / b, 2) if a and b else None
                out.append(entry)
    return out


def verdicts(rows: list[dict[str, Any]], replays: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 5's targets, judged on this sitting's Tether rows (medians over rounds); a target
    whose load was not in the run is left out. Each: ``{"target", "case", "value", "unit",
    "met"}``.

    The burst target ("at least 50,000 events delivered per second per core ..., at least 2x
    the naive Flask + gevent peer and at least 1x the sse-starlette peer") is judged per core:
    deliveries per second of server CPU (1 / CPU per delivery), Tether's against the peer's.
    Deliveries per wall second are printed beside it: when the load client is busy
    (``CLIENT-BOUND``), they measure the client, not the servers.

    Long-poll rows of the mix, the wide fan-out and the burst are listed for reference,
    ``met`` None: issue 5 gives long-poll targets of its own (requests/s, a waiting poll's
    answer: bench/longpoll.py judges them), and a transport that spends one HTTP request per
    answer cannot fan out as a stream does. Typical use is judged on every transport."""
    out: list[dict[str, Any]] = []
    tether = [r for r in rows if r["target"] == "tether"]

    def pick(label: str, clients: int | None, rate: int | None,
             transport: str | None = None) -> dict[str, list[dict[str, Any]]]:
        by: dict[str, list[dict[str, Any]]] = {}
        for r in tether:
            if r["label"] == label and (clients is None or r["total_clients"] == clients) \
                    and (rate is None or r["rate"] == rate) \
                    and (transport is None or r["transport"] == transport):
                by.setdefault(r["transport"], []).append(r)
        return by

    def quantile(items: list[dict[str, Any]], q: str = "p99") -> float:
        return statistics.median(i["latency_ms"][q] for i in items)

    def add(target: str, case: str, value: float, unit: str, met: bool,
            reference: bool = False) -> None:
        out.append({"target": target, "case": case, "value": value, "unit": unit,
                    "met": None if reference else met})

    for transport, items in pick("fan-out", 3, 100).items():
        add("typical p50 <= 2 ms", f"3 x 100/s {transport}", quantile(items, "p50"), "ms",
            quantile(items, "p50") <= 2)
        add("typical p99 <= 10 ms", f"3 x 100/s {transport}", quantile(items), "ms",
            quantile(items) <= 10)
    for transport, items in pick("mix", None, None).items():
        add("mix p99 <= 50 ms", f"100 x 3 x 20/s {transport}", quantile(items), "ms",
            quantile(items) <= 50, transport == "poll")
    for transport, items in pick("fan-out", 1000, 10).items():
        add("wide p99 <= 100 ms", f"1000 x 10/s {transport}", quantile(items), "ms",
            quantile(items) <= 100, transport == "poll")
    for transport, items in pick("fan-out", 1000, 0).items():
        cost = statistics.median(i["cpu_us_per_delivery"] or float("inf") for i in items)
        wall = statistics.median(i["delivered"] for i in items)
        add(">= 50,000 deliveries/CPU-s", f"burst 1000 {transport}", 1e6 / cost, "/s",
            1e6 / cost >= 50_000, transport == "poll")
        for peer, times in (("naive_flask", 2.0), ("starlette", 1.0)):
            theirs = [r for r in rows if r["target"] == peer and r["label"] == "fan-out"
                      and r["total_clients"] == 1000 and r["rate"] == 0]
            if not theirs:
                continue
            peer_cost = statistics.median(i["cpu_us_per_delivery"] or float("inf")
                                          for i in theirs)
            peer_wall = statistics.median(i["delivered"] for i in theirs)
            add(f">= {times:g}x {peer} per core", f"burst 1000 {transport} "
                f"(wall {wall / peer_wall:.2f}x)", peer_cost / cost, "x",
                peer_cost / cost >= times, transport == "poll")
    for transport, items in pick("fan-out", 10000, None, "sse").items():
        kb = statistics.median(i["rss_kb_per_conn"] for i in items)
        add("idle SSE < 20 KB/conn", f"10000 {transport}", kb, "KB", kb < 20)
    for r in replays:
        if "todo" not in r and r.get("caught_up_s") is not None:
            limit = 1.0 if r["store"] == "memory" else 2.0
            add(f"replay {r['store']} < {limit:g} s", f"100k {r['transport']}",
                r["caught_up_s"], "s",
                r["caught_up_s"] < limit and not (r["id_errors"] or r["duplicated"]))
    if tether:
        bad = sum(r["lost"] + r["duplicated"] + r["out_of_order"] + r["id_errors"]
                  for r in tether)
        mismatched = sum(1 for r in tether if r.get("server") and not r["server"]["ok"])
        add("zero loss, dup, reorder", f"{len(tether)} Tether rows", bad + mismatched,
            "errors", bad + mismatched == 0)
    return out


def print_verdicts(table: list[dict[str, Any]]) -> None:
    if not table:
        return
    verdict = {True: "met", False: "MISSED", None: "(long-poll: for reference)"}
    print("\nissue 5 targets (Tether, this sitting):")
    for v in table:
        value = f"{v['value']:,.0f}" if v["unit"] == "/s" else f"{v['value']:,.2f}"
        print(f"  {v['target']:<30} {v['case']:<32} {value:>10} {v['unit']:<7}"
              f"{verdict[v['met']]}")


def late_client(target: Any, sid: str, last: int, transport: str, events: int,
                cpu: int | None) -> dict[str, Any]:
    """One client attaching at id 0 to session ``sid`` of ``target`` (its last id ``last``)
    on ``transport``: the load client's result (``ready_s`` is the time to ``caught-up``)."""
    path = {"sse": f"/api/sessions/{sid}/stream", "ws": "/api/ws",
            "poll": f"/api/sessions/{sid}/events"}[transport]
    client = LoadClient({"transport": transport, "port": target.port, "token": TEST_TOKEN,
                         "events": events,
                         "targets": [{"path": path, "session": sid, "after": 0, "clients": 1,
                                      **target.place(sid, 1)}],
                         "timeout": 120, "cpu": cpu, "replay_last_id": last})
    try:
        return client.next(150)["result"]
    finally:
        client.close()


def replay(args: argparse.Namespace, workdir: Path, client_cpu: int | None,
           server_cpu: int | None) -> list[dict[str, Any]]:
    """A late client attaching to a session of ``--replay-events`` stored events."""
    out: list[dict[str, Any]] = []
    for store in ("memory", "sqlite") + (("redis",) if args.store == "redis" else ()):
        try:
            if store == "redis":  # the late client on a worker that does not own the session
                from bench.cluster import ClusterTarget

                server = ClusterTarget(workdir / "replay-redis", args.redis_url,
                                       "fanout-replay", args.workers).__enter__()
                server.clients_on = "other"
            else:
                server = TetherTarget(workdir / f"replay-{store}", server_cpu, store).__enter__()
        except RuntimeError as exc:
            out.append({"store": store, "todo": f"TODO: TETHER_STORE={store} did not start "
                                                f"({str(exc)[:200]}); replay not measured"})
            continue
        try:
            sid, last, fill_s = server.fill(args.replay_events, 900)
            for transport in args.transports:
                result = late_client(server, sid, last, transport, args.replay_events,
                                     client_cpu)
                out.append({"store": store, "transport": transport, "events": last,
                            "fill_s": round(fill_s, 2), "caught_up_s": result["ready_s"],
                            "received": result["unique"], "id_errors": result["id_errors"],
                            "duplicated": result["duplicated"],
                            "client_busy": result["busy"], "errors": result["errors"]})
        finally:
            server.__exit__(None, None, None)
    return out


# -- output -------------------------------------------------------------------------------

def ms(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def client_ceiling(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best Node.js burst to 100 or more clients: what this client can measure at most
    (when the client was busy there), or at least (when Node.js was the limit)."""
    node = [r for r in rows if r["target"] == "node" and not r["rate"]
            and r["total_clients"] >= 100 and r["label"] == "fan-out"]
    return max(node, key=lambda r: r["delivered"]) if node else None


def print_rows(rows: list[dict[str, Any]], ceiling: dict[str, Any] | None) -> None:
    head = (f"{'load':<8}{'target':<12}{'tr':<5}{'N':>6}{'B':>6}{'rate':>6}{'K':>6}"
            f"{'p50':>8}{'p90':>8}{'p99':>8}{'max':>9}{'deliv/s':>10}{'l/d/o/i':>12}"
            f"{'cpu s':>7}{'us/ev':>7}{'KB/conn':>8}{'cli':>6}{'sp99':>7}{'srv':>9}  flags")
    print(head)
    print("-" * len(head))
    for r in rows:
        lat = r["latency_ms"]
        rate = "burst" if not r["rate"] else f"{r['rate']:g}"
        bad = f"{r['lost']}/{r['duplicated']}/{r['out_of_order']}/{r['id_errors']}"
        flags = []
        if r["client_busy"] >= 0.9:
            flags.append("CLIENT-BOUND")
        elif ceiling and ceiling["client_busy"] >= 0.8 and r["target"] != "node" \
                and r["delivered"] >= 0.8 * ceiling["delivered"]:
            flags.append("near client ceiling")
        if r["lost"] or r["duplicated"] or r["out_of_order"] or r["id_errors"]:
            flags.append("DELIVERY ERRORS")
        if r["reconnects"]:
            flags.append(f"{r['reconnects']} reconnects (server closed stuck sockets)")
        if r["errors"]:
            flags.append(r["errors"][0][:60])
        server = r.get("server")
        srv, sp99 = "-", "-"
        if server is not None:
            srv = "OK" if server["ok"] else "MISMATCH"
            flags.extend(f"srv: {p}" for p in server["problems"])
            if server["latency"]["p99_ms"] is not None:
                sp99 = ms(server["latency"]["p99_ms"])
        print(f"{r['label']:<8}{r['target']:<12}{r['transport']:<5}{r['total_clients']:>6}"
              f"{r['size']:>6}{rate:>6}{r['events']:>6}{ms(lat['p50']):>8}{ms(lat['p90']):>8}"
              f"{ms(lat['p99']):>8}{ms(lat['max']):>9}{r['delivered']:>10.0f}{bad:>12}"
              f"{r['server_cpu_s']:>7.2f}{r['cpu_us_per_delivery'] or 0:>7.1f}"
              f"{r['rss_kb_per_conn']:>8.1f}{r['client_busy']:>6.2f}{sp99:>7}{srv:>9}  "
              f"{' '.join(flags)}")


def interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# -- what every bench script's sitting shares (bench/longpoll.py, reconnect.py, agent_path.py)

def cores(no_pin: bool) -> tuple[int | None, int | None]:
    """(server core, client core): 0 and 1 on a machine with two or more cores, else None."""
    if len(os.sched_getaffinity(0)) >= 2 and not no_pin:
        return SERVER_CPU, CLIENT_CPU
    return None, None


def raise_nofile() -> int:
    """Raise ``RLIMIT_NOFILE`` to its hard limit (inherited by every server and client this
    process starts); returns that limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def stop_on_signals() -> None:
    """SIGTERM stops everything as Ctrl-C does (KeyboardInterrupt), even when SIGINT was
    ignored by whoever started us."""
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def machine(pinned: bool) -> dict[str, Any]:
    """The machine and its load, for a bench's JSON line."""
    return {"cpus": os.cpu_count(), "pinned": pinned, "load": os.getloadavg(),
            "python": platform.python_version(), "kernel": platform.release(),
            "node": subprocess.run(["node", "--version"], capture_output=True,
                                   text=True).stdout.strip() if shutil.which("node") else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])

    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    def names(allowed: tuple[str, ...]) -> Any:
        def parse(text: str) -> list[str]:
            got = [x for x in text.split(",") if x]
            if set(got) - set(allowed):
                raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}")
            return got
        return parse

    parser.add_argument("--transports", type=names(TRANSPORTS), default=list(TRANSPORTS))
    parser.add_argument("--peers", type=names(PEERS), default=list(PEERS),
                        help="peers run on SSE alongside Tether ('' for none)")
    parser.add_argument("--clients", type=ints, default=[3, 100, 1000],
                        help="N, comma-separated ('' for none)")
    parser.add_argument("--sizes", type=ints, default=[200], help="delta bytes, e.g. 200,2000")
    parser.add_argument("--rates", type=ints, default=[0, 10, 100],
                        help="events/s per session, 0 = burst, e.g. 0,10,100,200")
    parser.add_argument("--events", type=int, default=2000, help="K per case (burst)")
    parser.add_argument("--paced-seconds", type=float, default=3.0,
                        help="a paced case sends min(K, rate x this) events")
    parser.add_argument("--rounds", type=int, default=1, help="alternating repeats")
    parser.add_argument("--huge", action="store_true", help="add N = 5,000 and 10,000")
    parser.add_argument("--mix", action="store_true",
                        help="100 sessions x 3 clients x 20 events/s")
    parser.add_argument("--mix-seconds", type=float, default=10.0)
    parser.add_argument("--replay", action="store_true",
                        help="time to caught-up for a late client, memory and sqlite stores")
    parser.add_argument("--replay-events", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true",
                        help="N 3,100; burst and 100/s: about a minute")
    parser.add_argument("--full", action="store_true",
                        help="N 3,100,1000; 200 and 2000 B; burst, 10, 100, 200/s; K 2000 "
                             "paced too; --mix and --replay")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client")
    parser.add_argument("--store", choices=("memory", "redis"), default="memory",
                        help="redis: Tether on a private redis-server with --workers workers "
                             "(nothing pinned), the one-worker memory store on the same loads "
                             f"as its baseline ({BASELINE}), and the replay on Redis too")
    parser.add_argument("--workers", type=int, default=2,
                        help="with --store redis: gunicorn workers (clients spread evenly)")
    parser.add_argument("--own-writers", action="store_true",
                        help="TETHER_SHARED_WRITER=0: every stream writes its own live tail "
                             "(the baseline of the shared writer, blueprints/fanout.py)")
    parser.add_argument("--no-gc-freeze", action="store_true",
                        help="TETHER_GC_FREEZE=0: the worker's collector scans everything "
                             "(the baseline of gc.freeze in gunicorn.conf.py)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample Tether's worker with py-spy in every case; raw stacks "
                             "to DIR, the hottest functions printed (figures then include "
                             "py-spy's cost on the client's core)")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.rates = [3, 100], [0, 100]
    if args.full:
        args.clients = sorted(set(args.clients) | {3, 100, 1000})
        args.sizes, args.rates = [200, 2000], [0, 10, 100, 200]
        args.paced_seconds, args.mix, args.replay = float("inf"), True, True
    if args.huge:
        args.clients = sorted(set(args.clients) | {5000, 10000})
    if not (0 < args.events <= 1_000_000 and 0 < args.rounds <= 10
            and all(0 < n <= 10000 for n in args.clients)
            and all(32 <= b <= 65536 for b in args.sizes)
            and all(0 <= r <= 100_000 for r in args.rates)):
        parser.error("events 1..1000000, rounds 1..10, clients 1..10000, sizes 32..65536, "
                     "rates 0..100000")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    if "node" in args.peers and shutil.which("node") is None:
        print("node is not installed: skipping the Node.js peer")
        args.peers.remove("node")

    if not 1 <= args.workers <= 8:
        parser.error("workers 1..8")
    # Several workers need every core: with --store redis nothing is pinned.
    server_cpu, client_cpu = cores(args.no_pin or args.store == "redis")
    hard = raise_nofile()
    most = max([n for n in args.clients] + [300 if args.mix else 0])
    if most + 500 > hard:  # per process: the server and the client each hold N sockets
        parser.error(f"the open-file limit ({hard}) is too low for {most} clients")
    stop_on_signals()

    info = machine(server_cpu is not None)
    print(f"machine: {info['cpus']} CPUs, load average {info['load'][0]:.2f} at start, "
          f"server on core {server_cpu}, client on core {client_cpu}")
    cases = matrix(args)
    if args.store == "redis":
        cases += [Case(BASELINE, *astuple(c)[1:]) for c in cases if c.target == "tether"]
    cases = alternate(cases, args.rounds)
    rows: list[dict[str, Any]] = []
    replays: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tether-bench-fanout-") as tmp, ExitStack() as stack:
        targets: dict[str, Any] = {}
        if args.store == "redis":
            from bench.cluster import ClusterTarget, private_redis

            args.redis_url = stack.enter_context(private_redis(Path(tmp) / "redis")).url
        if cases and args.store == "redis":
            targets["tether"] = stack.enter_context(ClusterTarget(
                Path(tmp) / "cluster", args.redis_url, "fanout", args.workers,
                connections=most))
            targets[BASELINE] = stack.enter_context(TetherTarget(
                Path(tmp) / "tether", server_cpu, connections=most,
                shared_writer=not args.own_writers, gc_freeze=not args.no_gc_freeze))
            targets[BASELINE].name = BASELINE
        elif cases:
            targets["tether"] = stack.enter_context(TetherTarget(
                Path(tmp) / "tether", server_cpu, connections=most,
                shared_writer=not args.own_writers, gc_freeze=not args.no_gc_freeze))
        if cases:
            for peer in args.peers:
                targets[peer] = stack.enter_context(PeerTarget(peer, server_cpu))
        for i, case in enumerate(cases, 1):
            print(f"[{i}/{len(cases)}] {case.label} {case.target} {case.transport} "
                  f"N={case.clients * case.sessions} B={case.size} rate={case.rate:g} "
                  f"K={case.events}", file=sys.stderr, flush=True)
            settle = 0.5 if case.transport == "poll" else 0.2
            rows.append(run_case(targets[case.target], case, client_cpu, settle,
                                 args.profile))
        if args.replay:
            replays = replay(args, Path(tmp), client_cpu, server_cpu)
    ceiling = client_ceiling(rows)
    print()
    print_rows(rows, ceiling)
    print("\nlatency ms: agent write (Tether) or in-process generation (peers) to client "
          "receipt; l/d/o/i: lost/duplicated/out-of-order/id errors (must be 0/0/0/0); "
          "us/ev: server CPU per delivered event; cli: client busy fraction; sp99: Tether's "
          "own p99 ms, append to write of each write's oldest event (/metrics histogram); "
          "srv: /metrics deliveries, appends and clients agree with the client and the log")
    if ceiling:
        bound = ceiling["client_busy"] >= 0.8
        print(f"client ceiling: {ceiling['delivered']:,.0f} deliveries/s from the Node.js peer "
              f"(burst, N={ceiling['total_clients']}, client {ceiling['client_busy']:.0%} busy): "
              + ("the client's own limit; rows near it may be client-bound" if bound else
                 "Node.js was the limit, the client's ceiling is higher"))
    table = ratios(rows)
    if table:
        print(f"\n{'load':<8}{'N':>6}{'B':>6}{'rate':>6}  {'tether':<7}{'vs peer':<13}"
              f"{'deliv/s':>9}{'p99':>8}{'us/ev':>8}   (Tether / peer)")
        for e in table:
            rate = "burst" if not e["rate"] else f"{e['rate']:g}"
            fmt = [f"{e[f]:.2f}" if e[f] is not None else "-"
                   for f in ("delivered", "p99", "cpu_us_per_delivery")]
            print(f"{e['label']:<8}{e['clients'] * e['sessions']:>6}{e['size']:>6}{rate:>6}  "
                  f"{e['tether']:<7}{e['peer']:<13}{fmt[0]:>9}{fmt[1]:>8}{fmt[2]:>8}")
    if replays:
        print(f"\n{'replay':<8}{'store':<8}{'tr':<6}{'events':>8}{'caught-up s':>13}"
              f"{'ids ok':>8}{'cli':>6}")
        for r in replays:
            if "todo" in r:
                print(f"replay  {r['store']:<8}{r['todo']}")
                continue
            ok = r["received"] == args.replay_events and not r["id_errors"]
            print(f"replay  {r['store']:<8}{r['transport']:<6}{r['events']:>8}"
                  f"{r['caught_up_s'] or float('nan'):>13.3f}{'yes' if ok else 'NO':>8}"
                  f"{r['client_busy']:>6.2f}")
    judged = verdicts(rows, replays)
    print_verdicts(judged)
    print(json.dumps({"bench": "fanout", "machine": info,
                      "ceiling": ceiling and ceiling["delivered"], "cases": rows,
                      "ratios": table, "replay": replays, "verdicts": judged}))


def run(main: Callable[[], None]) -> None:
    """Run a bench's ``main``; on Ctrl-C or SIGTERM (:func:`stop_on_signals`) say that
    everything it started is stopped (its context managers did that) and exit 130."""
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: every server and client this run started is stopped",
              file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run(main)
