"""Long-poll: requests per second, and how soon a waiting poll answers an append (issue 5).

Issue 5's target: "Long-poll: at least 2,000 requests/s; a waiting poll answers within 10 ms
of an append." Tether runs as bench/fanout.py's TetherTarget runs it (gunicorn, one gevent
worker, memory store, on core 0 with the agents it starts); the load client
(bench/loadclient.py) is a separate process on core 1. Two parts, one sitting:

- **Request rate.** ``--conns`` keep-alive connections (one request in flight each) loop
  ``GET`` on one route for ``--seconds`` seconds: ``/api/sessions/<id>/events?after=<last>
  &wait=0`` (nothing new: answered at once), the same with ``after=<last - 1>`` and
  ``after=<last - 100>&limit=100`` (answers that carry 1 and 100 events), against three
  baselines: the ``floor`` (:class:`FloorTarget`: a bare Flask route under the same gunicorn
  gevent worker, none of Tether's stack), Tether's ``GET /healthz`` (its cheapest route: its
  middlewares and headers, no auth) and ``GET /api/sessions/<id>`` (auth, a lookup and a
  small JSON body). The session holds
  ``--fill`` events, written by the ``local`` agent's ``bench`` command (fanout.py ``fill``).
- **Append to answer.** ``--waiters`` clients each hold a long-poll (``wait=30``) on one
  session; the ``local`` agent's ``bench <K> 200 <rate>`` command writes stamped
  ``text_delta`` lines (fanout.py ``run_case``, the real path: pipe, translation, append), and
  each answer's receipt minus the stamp in its events is the latency. SSE clients on the same
  load are the baseline: the poll's extra cost is the difference.

    .venv/bin/python -m bench.longpoll                    # about 80 s
    .venv/bin/python -m bench.longpoll --conns 10,100,200 --seconds 3
    .venv/bin/python -m bench.longpoll --waiters 1,100 --rate 50
    .venv/bin/python -m bench.longpoll --profile /tmp/prof    # py-spy on the worker
    .venv/bin/python -m bench.longpoll --store redis --workers 2  # Tether on Redis

With ``--store redis`` the Tether under test runs on a private ``redis-server`` with
``--workers`` workers (bench/cluster.py's ClusterTarget; each client lands on a worker, spread
evenly; nothing is pinned), and every Tether route and waiting-poll row is measured on the
one-worker memory store too (``mem-1w:`` rows), the baseline of the ``/mem`` column.

Prints two tables (bench/README.md says what every column means), the target lines marked
``met`` or ``MISSED``, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.fanout import (
    BASELINE,
    Case,
    LoadClient,
    PeerTarget,
    TetherTarget,
    children,
    cores,
    hot_functions,
    machine,
    print_rows,
    profiled,
    raise_nofile,
    run,
    run_case,
    server_cpu,
    stop_on_signals,
)
from bench.scrape import check_delivered
from tests.e2e.live import ROOT
from tests.support import TEST_TOKEN

#: Issue 5: long-poll requests answered per second, at least.
TARGET_RPS = 2000
#: Issue 5: a waiting poll answers within this many ms of an append (judged on p99).
TARGET_WAIT_MS = 10.0
BASELINES = ("floor", "healthz", "session")


class FloorTarget(PeerTarget):
    """The framework's floor: bench/peers/naive_flask.py's ``GET /healthz`` (Flask returning
    ``ok``) under the worker Tether runs in (gunicorn, one gevent worker, no access log), with
    none of Tether's own stack (auth, Talisman's headers, the body and stream middlewares).
    Every other row's ``/floor`` column is its rate over this one's, in the same sitting."""

    def __init__(self, cpu: int | None, connections: int) -> None:
        super().__init__("flask_floor", cpu)
        self.connections = connections
        # Not the checkout's top, where gunicorn would read Tether's ./gunicorn.conf.py.
        self.cwd = ROOT / "bench" / "peers"

    def argv(self) -> list[str]:
        return [str(Path(sys.executable).with_name("gunicorn")), "--worker-class", "gevent",
                "--workers", "1", "--bind", f"127.0.0.1:{self.port}", "--worker-connections",
                str(self.connections + 1000), "--pythonpath", str(ROOT),
                "bench.peers.naive_flask:app"]

    def __enter__(self) -> FloorTarget:
        super().__enter__()
        assert self.process is not None
        deadline = time.monotonic() + 10
        while not (workers := children(self.process.pid)):
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("no gunicorn worker for the floor")
            time.sleep(0.1)
        self.pid = workers[0]  # the worker's CPU, as Tether's row counts its worker's
        return self


def routes(sid: str, last: int) -> dict[str, str]:
    """Route name -> path, for a session ``sid`` whose last event id is ``last``."""
    events = f"/api/sessions/{sid}/events"
    return {"healthz": "/healthz",
            "session": f"/api/sessions/{sid}",
            "poll-empty": f"{events}?after={last}&wait=0",
            "poll-1": f"{events}?after={last - 1}&wait=0",
            "poll-100": f"{events}?after={last - 100}&wait=0&limit=100"}


def request_rate(server: TetherTarget | FloorTarget, name: str, path: str, conns: int,
                 seconds: float, client_cpu: int | None,
                 profile: Path | None) -> dict[str, Any]:
    """One route looped on ``conns`` connections for ``seconds``; a row of figures. On Tether
    the events answered are checked against ``/metrics``; the floor has none."""
    tether = getattr(server, "is_tether", False)
    before = server.scrape() if tether else None
    place = server.place(None, conns) if tether else {}
    client = LoadClient({"transport": "get", "port": server.port, "token": TEST_TOKEN,
                         "targets": [{"path": path, "clients": conns, **place}],
                         "duration": seconds,
                         "timeout": 60, "cpu": client_cpu})
    try:
        first = client.next(90)
        if "result" in first:  # not every connection got an answer
            result, cpu = first["result"], 0.0
        else:
            time.sleep(0.2)
            out = profile / f"rate-{name}-{conns}.txt" if profile is not None else None
            with profiled(server.pid, out, client_cpu):
                cpu0 = server_cpu(server)
                client.go()
                result = client.next(seconds + 90)["result"]
                cpu = server_cpu(server) - cpu0
            if out is not None and out.exists():
                print(f"profile {out.name}: " + ", ".join(
                    f"{f} {share:.0%}" for f, share in hot_functions(out)), file=sys.stderr)
    finally:
        client.close()
    # Every answer, those before go included, against the server's count (bench/scrape.py).
    check = (check_delivered(before, server.scrape(), "poll", result.get("ids", 0)) if tether
             else {"delivered": None, "client_ids": result.get("ids", 0), "ok": True})
    return {"route": name, "path": path, "conns": conns, "rps": result.get("rate", 0.0),
            "requests": result.get("requests", 0), "window_s": result.get("window_s"),
            "latency_ms": result.get("latency_ms", {}),
            "answers_per_conn": result.get("answers_per_conn"),
            "events_per_answer": result.get("events_per_answer", 0.0),
            "bytes_per_answer": result.get("bytes_per_answer", 0),
            "bad_status": result.get("bad_status", 0), "reconnects": result.get("reconnects", 0),
            "server_cpu_s": round(cpu, 3),
            "cpu_us_per_request": round(cpu / result["requests"] * 1e6, 1)
            if result.get("requests") else None,
            "client_busy": result.get("busy", 0.0), "errors": result.get("errors", []),
            "workers": result.get("workers") or None,
            "server_delivered": check["delivered"], "client_ids": check["client_ids"],
            "server_ok": check["ok"]}


def baseline(route: str) -> bool:
    """A row that is a baseline, never judged: the floor, Tether's healthz and session
    routes, and (``--store redis``) every row of the one-worker memory store."""
    return route in BASELINES or route.startswith(f"{BASELINE}:")


def print_rate(rows: list[dict[str, Any]]) -> None:
    base = {r["conns"]: r["rps"] for r in rows if r["route"] == "floor" and r["rps"]}
    memory = {(r["route"].split(":", 1)[1], r["conns"]): r["rps"] for r in rows
              if r["route"].startswith(f"{BASELINE}:") and r["rps"]}
    width = max([12] + [len(r["route"]) + 1 for r in rows])
    head = (f"{'route':<{width}}{'conns':>6}{'req/s':>9}{'/floor':>9}{'/mem':>7}{'p50 ms':>8}"
            f"{'p99 ms':>8}{'max ms':>8}{'ev/ans':>7}{'B/ans':>7}{'cpu s':>7}{'us/req':>8}"
            f"{'cli':>6}  target {TARGET_RPS:,}/s")
    print(head)
    print("-" * len(head))
    for r in rows:
        lat = r["latency_ms"]
        ratio = f"{r['rps'] / base[r['conns']]:.2f}" if base.get(r["conns"]) else "-"
        mem = memory.get((r["route"], r["conns"]))
        to_mem = f"{r['rps'] / mem:.2f}" if mem else "-"
        verdict = "-" if baseline(r["route"]) else (
            "met" if r["rps"] >= TARGET_RPS else "MISSED")
        flags = []
        if r["client_busy"] >= 0.9:
            flags.append("CLIENT-BOUND")
        if r["bad_status"] or r["errors"]:
            flags.append(f"{r['bad_status']} non-200; " + "; ".join(r["errors"][:1]))
        if r["reconnects"]:
            flags.append(f"{r['reconnects']} reconnects")
        if not r["server_ok"]:
            flags.append(f"srv MISMATCH: delivered {r['server_delivered']} != client "
                         f"{r['client_ids']}")
        print(f"{r['route']:<{width}}{r['conns']:>6}{r['rps']:>9.0f}{ratio:>9}{to_mem:>7}"
              f"{lat.get('p50', 0):>8.2f}{lat.get('p99', 0):>8.2f}{lat.get('max', 0):>8.1f}"
              f"{r['events_per_answer']:>7.1f}{r['bytes_per_answer']:>7}"
              f"{r['server_cpu_s']:>7.2f}{r['cpu_us_per_request'] or 0:>8.1f}"
              f"{r['client_busy']:>6.2f}  {verdict} {' '.join(flags)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])

    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    parser.add_argument("--conns", type=ints, default=[100],
                        help="keep-alive connections of the request loop, e.g. 10,100,200")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured per route")
    parser.add_argument("--fill", type=int, default=1000, help="events in the polled session")
    parser.add_argument("--waiters", type=ints, default=[1, 10, 100],
                        help="clients holding a long-poll, e.g. 1,10,100 ('' for none)")
    parser.add_argument("--rate", type=float, default=20.0, help="appends/s while they wait")
    parser.add_argument("--latency-seconds", type=float, default=5.0,
                        help="each latency case sends rate x this events")
    parser.add_argument("--no-sse", action="store_true", help="no SSE baseline rows")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the request-rate rows, the order reversed every round")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample the worker with py-spy in every case; raw stacks to DIR")
    parser.add_argument("--store", choices=("memory", "redis"), default="memory",
                        help="redis: Tether on a private redis-server, --workers workers, "
                             f"the memory store's one worker as the baseline ({BASELINE})")
    parser.add_argument("--workers", type=int, default=2, help="with --store redis")
    args = parser.parse_args()
    if not (all(0 < n <= 5000 for n in args.conns + args.waiters) and 0 < args.seconds <= 600
            and 200 <= args.fill <= 1_000_000 and 0 < args.rate <= 1000
            and 0 < args.latency_seconds <= 600 and 0 < args.rounds <= 10):
        parser.error("conns and waiters 1..5000, seconds 0..600, fill 200..1000000, "
                     "rate 0..1000, rounds 1..10")
    if not 1 <= args.workers <= 8:
        parser.error("workers 1..8")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    server_cpu, client_cpu = cores(args.no_pin or args.store == "redis")
    hard = raise_nofile()
    if max(args.conns + args.waiters) + 500 > hard:
        parser.error(f"the open-file limit ({hard}) is too low")
    stop_on_signals()
    info = machine(server_cpu is not None)
    print(f"machine: {info['cpus']} CPUs, load average {info['load'][0]:.2f} at start, "
          f"server on core {server_cpu}, client on core {client_cpu}")

    rate_rows: list[dict[str, Any]] = []
    latency_rows: list[dict[str, Any]] = []
    events = max(1, int(args.rate * args.latency_seconds))
    connections = max(args.conns + args.waiters)
    with tempfile.TemporaryDirectory(prefix="tether-bench-longpoll-") as tmp, \
            ExitStack() as stack:
        memory = stack.enter_context(TetherTarget(Path(tmp) / "tether", server_cpu,
                                                  connections=connections))
        server, compared = memory, []
        if args.store == "redis":
            from bench.cluster import ClusterTarget, private_redis

            url = stack.enter_context(private_redis(Path(tmp) / "redis")).url
            server = stack.enter_context(ClusterTarget(Path(tmp) / "cluster", url, "longpoll",
                                                       args.workers, connections=connections))
            memory.name = BASELINE
            compared = [memory]
        floor = stack.enter_context(FloorTarget(server_cpu, connections))
        sid, last, fill_s = server.fill(args.fill, 300)
        order: list[tuple[str, str, TetherTarget | FloorTarget]] = [("floor", "/healthz", floor)]
        order += [(name, path, server) for name, path in routes(sid, last).items()]
        for other in compared:
            other_sid, other_last, _ = other.fill(args.fill, 300)
            order += [(f"{BASELINE}:{name}", path, other)
                      for name, path in routes(other_sid, other_last).items()]
        for r in range(args.rounds):
            for conns in args.conns:
                for name, path, target in (order if r % 2 == 0 else order[::-1]):
                    print(f"[rate] {name} conns={conns}", file=sys.stderr, flush=True)
                    rate_rows.append(request_rate(target, name, path, conns, args.seconds,
                                                  client_cpu, args.profile))
        transports = ["poll"] + ([] if args.no_sse else ["sse"])
        for n in args.waiters:
            for transport in transports:
                case = Case("tether", transport, n, 200, args.rate, events, 1, "waiting")
                for target in [server] + (compared if transport == "poll" else []):
                    print(f"[latency] {target.name} {transport} N={n} rate={args.rate:g} "
                          f"K={events}", file=sys.stderr, flush=True)
                    latency_rows.append(run_case(target, case, client_cpu,
                                                 0.5 if transport == "poll" else 0.2,
                                                 args.profile))

    print(f"\nRequest rate: {args.seconds:g} s per route, one request in flight per "
          f"connection; session of {last} events")
    print_rate(rate_rows)
    if latency_rows:
        print(f"\nAppend to answer: waiting clients, {args.rate:g} appends/s, {events} events "
              "(ms from the agent's write to the client's receipt)")
        print_rows(latency_rows, None)

    verdicts = []
    for r in rate_rows:
        if not baseline(r["route"]):
            verdicts.append({"target": f">= {TARGET_RPS} requests/s", "case": r["route"],
                             "conns": r["conns"], "value": r["rps"],
                             "met": r["rps"] >= TARGET_RPS})
    for r in latency_rows:
        if r["transport"] == "poll" and r["target"] == "tether":
            p99 = r["latency_ms"]["p99"]
            ok = p99 <= TARGET_WAIT_MS and not (r["lost"] or r["duplicated"] or r["id_errors"])
            verdicts.append({"target": f"waiting poll p99 <= {TARGET_WAIT_MS:g} ms",
                             "case": f"{r['clients']} waiting", "value": p99, "met": ok})
    print("\nissue 5 targets:")
    for v in verdicts:
        unit = "req/s" if "requests" in v["target"] else "ms p99"
        where = f"{v['case']}" + (f", {v['conns']} conns" if "conns" in v else "")
        print(f"  {v['target']:<28} {where:<22} {v['value']:>10,.2f} {unit:<7} "
              f"{'met' if v['met'] else 'MISSED'}")
    print(json.dumps({"bench": "longpoll", "machine": info, "fill_events": last,
                      "fill_s": round(fill_s, 2), "targets": {"rps": TARGET_RPS,
                                                              "wait_ms": TARGET_WAIT_MS},
                      "rate": rate_rows, "latency": latency_rows, "verdicts": verdicts}))


if __name__ == "__main__":
    run(main)
