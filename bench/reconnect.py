"""Reconnect storm: many clients come back at once, each some events behind (issue 5).

Issue 5's target: "Reconnect storm: 1,000 clients reconnecting within 1 s, each 100 events
behind, all caught up within 5 s." Tether runs as bench/fanout.py's TetherTarget runs it
(gunicorn, one gevent worker, on core 0), once per store (``--stores``). A session is filled
with ``--fill`` events by the ``local`` agent's ``bench`` command (fanout.py ``fill``); a
warm-up storm of 50 clients per transport runs first (not reported); then
the load client (bench/loadclient.py, core 1) opens ``--clients`` connections spread evenly
over ``--spread`` seconds, each with the cursor ``last - behind``:

- ``sse``: ``GET /api/sessions/<id>/stream`` with ``Last-Event-ID: <cursor>``, as a browser's
  EventSource reconnects; caught up at ``event: caught-up``;
- ``ws``: ``/api/ws``, then ``session.attach {session_id, after: <cursor>}``; caught up at the
  ``caught_up`` notification;
- ``poll``: ``GET /api/sessions/<id>/events?after=<cursor>&wait=0&limit=1000``; caught up at
  the answer whose ``last_event_id`` is the log's last.

Nothing is appended during a storm. Every client must get exactly the ``behind`` ids after
its cursor, in order, once each. The baseline, in the same sitting, is the same storm with
``behind`` = 0 (connect, authenticate, attach and be told "caught up", with nothing to
replay): the ratio shows what the replay itself adds.

    .venv/bin/python -m bench.reconnect                     # about a minute
    .venv/bin/python -m bench.reconnect --clients 2000 --behind 0,100,1000 --stores memory
    .venv/bin/python -m bench.reconnect --transports sse --profile /tmp/prof

Figures per storm: time to caught-up per client (its own connect to its caught-up: p50, p90,
p99, max ms), ``all s`` (the first client's connect to the last client's caught-up: the
target's figure), the connects' own span, event ids received against expected, clients
short, ids lost and duplicated and id errors (all must be 0), the worker's CPU seconds (and
ms per client) and the client's busy fraction; ``x base``: p50 over the p50 of the same
storm 0 behind (what the replay adds per client). Then the target lines, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.fanout import (
    LoadClient,
    TetherTarget,
    cores,
    cpu_seconds,
    hot_functions,
    machine,
    profiled,
    raise_nofile,
    run,
    stop_on_signals,
)
from bench.scrape import check_delivered
from tests.e2e.rawclients import fd_count, settle_fds
from tests.support import TEST_TOKEN

TRANSPORTS = ("sse", "ws", "poll")
STORES = ("memory", "sqlite")
#: Issue 5: every client caught up within this many seconds of the storm's start.
TARGET_S = 5.0


def storm(server: TetherTarget, sid: str, last: int, fill: int, transport: str, clients: int,
          behind: int, spread: float, client_cpu: int | None,
          profile: Path | None) -> dict[str, Any]:
    """One storm: ``clients`` connections over ``spread`` s, each ``behind`` events back."""
    path = {"sse": f"/api/sessions/{sid}/stream", "ws": "/api/ws",
            "poll": f"/api/sessions/{sid}/events"}[transport]
    after = last - behind
    fds = fd_count(server.pid)
    before = server.scrape()
    out = profile / f"storm-{transport}-{clients}-{behind}.txt" if profile is not None else None
    with profiled(server.pid, out, client_cpu):
        cpu0 = cpu_seconds(server.pid)
        client = LoadClient({
            "transport": transport, "port": server.port, "token": TEST_TOKEN,
            "events": fill,  # the bench deltas' sequence numbers run 0 .. fill - 1
            "targets": [{"path": path, "session": sid, "after": after, "clients": clients}],
            "timeout": 120, "cpu": client_cpu, "replay_last_id": last,
            "connect_spread": spread, "connecting": clients, "resume_header": True})
        try:
            result = client.next(180)["result"]
            cpu = cpu_seconds(server.pid) - cpu0
        finally:
            client.close()
    if out is not None and out.exists():
        print(f"profile {out.name}: " + ", ".join(
            f"{f} {share:.0%}" for f, share in hot_functions(out)), file=sys.stderr)
    # Nothing is appended during a storm: what the server handed is what the clients read.
    check = check_delivered(before, server.scrape(), transport, result["ids"])
    # The worker closes its side of every connection before the next storm starts.
    left, waited = settle_fds(server.pid, fds + 20, 30)
    expected = clients * behind
    exact = (result["ready"] == clients and result["ids"] == expected
             and not (result["short"] or result["lost_ids"] or result["dup_ids"]
                      or result["id_errors"] or result["errors"]))
    return {"transport": transport, "clients": clients, "behind": behind, "after": after,
            "last_id": last, "spread_s": spread, "caught_up": result["ready"],
            "all_s": result["span_s"], "connect_span_s": result["connect_span_s"],
            "attach_ms": result["attach_ms"], "ids": result["ids"], "expected_ids": expected,
            "short": result["short"], "lost_ids": result["lost_ids"],
            "dup_ids": result["dup_ids"], "id_errors": result["id_errors"], "exact": exact,
            "reconnects": result["reconnects"], "server_cpu_s": round(cpu, 3),
            "client_busy": result["busy_all"], "errors": result["errors"],
            "fds_after": left, "fds_settle_s": round(waited, 2),
            "server_delivered": check["delivered"], "server_ok": check["ok"]}


def print_rows(rows: list[dict[str, Any]]) -> None:
    head = (f"{'store':<8}{'tr':<6}{'N':>6}{'behind':>7}{'p50':>8}{'p90':>8}{'p99':>8}"
            f"{'max':>8}{'all s':>8}{'x base':>7}{'conn s':>7}{'ids':>9}{'s/l/d/i':>10}"
            f"{'cpu s':>7}{'ms/cl':>7}{'cli':>6}  flags")
    print(head)
    print("-" * len(head))
    base = {(r["store"], r["transport"], r["clients"]): r["attach_ms"]["p50"]
            for r in rows if r["behind"] == 0 and r["attach_ms"]["p50"]}
    for r in rows:
        lat = r["attach_ms"]
        b = base.get((r["store"], r["transport"], r["clients"]))
        ratio = f"{lat['p50'] / b:.2f}" if b and r["behind"] else "-"
        bad = f"{r['short']}/{r['lost_ids']}/{r['dup_ids']}/{r['id_errors']}"
        flags = []
        if not r["exact"]:
            flags.append(f"NOT EXACT: {r['caught_up']} of {r['clients']} caught up, "
                         f"{r['ids']} of {r['expected_ids']} ids")
        if not r["server_ok"]:
            flags.append(f"srv MISMATCH: delivered {r['server_delivered']} != ids {r['ids']}")
        if r["client_busy"] >= 0.9:
            flags.append("CLIENT-BOUND")
        if r["reconnects"]:
            flags.append(f"{r['reconnects']} reconnects")
        if r["errors"]:
            flags.append(r["errors"][0][:60])
        all_s = f"{r['all_s']:.3f}" if r["all_s"] is not None else "-"
        conn_s = f"{r['connect_span_s']:.2f}" if r["connect_span_s"] is not None else "-"
        print(f"{r['store']:<8}{r['transport']:<6}{r['clients']:>6}{r['behind']:>7}"
              f"{lat['p50']:>8.1f}{lat['p90']:>8.1f}{lat['p99']:>8.1f}{lat['max']:>8.1f}"
              f"{all_s:>8}{ratio:>7}{conn_s:>7}{r['ids']:>9}{bad:>10}"
              f"{r['server_cpu_s']:>7.2f}{r['server_cpu_s'] * 1000 / r['clients']:>7.2f}"
              f"{r['client_busy']:>6.2f}  {' '.join(flags)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])

    def listed(allowed: tuple[str, ...]) -> Any:
        def parse(text: str) -> list[str]:
            got = [x for x in text.split(",") if x]
            if not got or set(got) - set(allowed):
                raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}")
            return got
        return parse

    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    parser.add_argument("--clients", type=int, default=1000, help="connections per storm")
    parser.add_argument("--behind", type=ints, default=[0, 100],
                        help="events each client is behind; 0 is the baseline")
    parser.add_argument("--spread", type=float, default=1.0,
                        help="seconds over which the clients connect, evenly")
    parser.add_argument("--fill", type=int, default=1000, help="events in the session")
    parser.add_argument("--transports", type=listed(TRANSPORTS), default=list(TRANSPORTS))
    parser.add_argument("--stores", type=listed(STORES), default=list(STORES))
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample the worker with py-spy in every storm; raw stacks to DIR")
    args = parser.parse_args()
    if not (0 < args.clients <= 10000 and 0 <= args.spread <= 60 and args.behind
            and all(0 <= b < args.fill for b in args.behind) and args.fill <= 1_000_000):
        parser.error("clients 1..10000, spread 0..60 s, behind 0..fill-1, fill up to 1000000")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    server_cpu, client_cpu = cores(args.no_pin)
    hard = raise_nofile()
    if args.clients + 500 > hard:
        parser.error(f"the open-file limit ({hard}) is too low for {args.clients} clients")
    stop_on_signals()
    info = machine(server_cpu is not None)
    print(f"machine: {info['cpus']} CPUs, load average {info['load'][0]:.2f} at start, "
          f"server on core {server_cpu}, client on core {client_cpu}")

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tether-bench-reconnect-") as tmp:
        for store in args.stores:
            with TetherTarget(Path(tmp) / store, server_cpu, store,
                              connections=args.clients) as server:
                sid, last, fill_s = server.fill(args.fill, 300)
                time.sleep(0.5)
                for transport in args.transports:
                    # Not reported: the first connections of a transport pay for code paths
                    # used the first time (imports, caches), not for the storm.
                    storm(server, sid, last, args.fill, transport, min(50, args.clients),
                          max(args.behind), 0.1, client_cpu, None)
                    for behind in args.behind:
                        print(f"[{store}] {transport} N={args.clients} behind={behind}",
                              file=sys.stderr, flush=True)
                        row = storm(server, sid, last, args.fill, transport, args.clients,
                                    behind, args.spread, client_cpu, args.profile)
                        rows.append({"store": store, "fill_s": round(fill_s, 2), **row})

    print(f"\nReconnect storm: {args.clients} clients connecting over {args.spread:g} s; "
          "ms from each client's connect to its caught-up")
    print_rows(rows)
    print("s/l/d/i: clients short / ids lost / ids duplicated / id errors (must be 0/0/0/0); "
          "x base: p50 over the same storm's 0 behind")
    verdicts = []
    for r in rows:
        if r["behind"]:
            ok = r["exact"] and r["all_s"] is not None and r["all_s"] <= TARGET_S
            verdicts.append({"store": r["store"], "transport": r["transport"],
                             "clients": r["clients"], "behind": r["behind"],
                             "all_s": r["all_s"], "connect_span_s": r["connect_span_s"],
                             "exact": r["exact"], "met": ok})
    print(f"\nissue 5 target: {args.clients} clients within {args.spread:g} s, all caught up "
          f"within {TARGET_S:g} s, exactly:")
    for v in verdicts:
        all_s = f"{v['all_s']:.3f} s" if v["all_s"] is not None else "never"
        print(f"  {v['store']:<7}{v['transport']:<5}{v['behind']:>5} behind  all caught up "
              f"in {all_s:<10} (connects over {v['connect_span_s']} s)  "
              f"{'exact' if v['exact'] else 'NOT EXACT'}  {'met' if v['met'] else 'MISSED'}")
    print(json.dumps({"bench": "reconnect", "machine": info, "target_s": TARGET_S,
                      "rows": rows, "verdicts": verdicts}))


if __name__ == "__main__":
    run(main)
