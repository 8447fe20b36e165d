"""Agent write to log append with many agents at once, and no client at all.

The many-sessions mix (bench/fanout.py ``--mix``: 100 sessions x 3 clients x 20 events/s) has
a tail that the server's own figure (append to write, ``sp99``) does not show. This bench runs
the same agents under the same gunicorn worker, pinned alike (worker and agents on core 0),
with no client attached, and reads back each ``text_delta``: its stamp (the ``local`` agent's
``time.time()`` right before the write) against its ``ts`` (the append's time, rounded to the
millisecond by tether/events.py). So it measures the pipe, the worker's reading of 100 pipes
and the translation, while 100 interpreters share the worker's core.

    .venv/bin/python -m bench.append_lag                       # 100 agents x 20/s x 200 events
    .venv/bin/python -m bench.append_lag --agents 1 --rate 20  # one agent alone: the floor

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from bench.fanout import TetherTarget, cores, machine, run, stop_on_signals
from bench.loadclient import spread_ms


def lags(target: TetherTarget, agents: int, rate: float, events: int) -> list[float]:
    """Start ``agents`` sessions, run one ``bench`` turn on each at once, and return every
    event's stamp-to-append lag, in seconds."""
    url, http = target.server.url, target.http
    sids = []
    for _ in range(agents):
        sid = http.post(f"{url}/api/sessions", json={}, timeout=10).json()["id"]
        http.post(f"{url}/api/sessions/{sid}/prompt", json={"text": "hello"},
                  timeout=10).raise_for_status()
        sids.append(sid)
    after = {sid: target._wait_turn_end(sid, 0, 120) for sid in sids}  # every agent is up
    for sid in sids:
        http.post(f"{url}/api/sessions/{sid}/prompt",
                  json={"text": f"bench {events} 200 {rate:g}"}, timeout=10).raise_for_status()
    lags: list[float] = []
    for sid in sids:
        target._wait_turn_end(sid, after[sid], 300)
        cursor = after[sid]
        while True:
            page = http.get(f"{url}/api/sessions/{sid}/events",
                            params={"after": cursor, "limit": 1000}, timeout=20).json()
            for event in page["events"]:
                if event["kind"] == "text_delta":
                    stamp = float(event["text"].split()[1])
                    lags.append(event["ts"] - stamp)
            if not page["events"]:
                break
            cursor = page["events"][-1]["id"]
    return lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100, help="sessions, one agent each")
    parser.add_argument("--rate", type=float, default=20, help="events/s per agent")
    parser.add_argument("--events", type=int, default=200, help="events per agent")
    parser.add_argument("--no-gc-freeze", action="store_true",
                        help="TETHER_GC_FREEZE=0 (the baseline of gc.freeze)")
    args = parser.parse_args()
    stop_on_signals()
    server_cpu, _ = cores(no_pin=False)
    with tempfile.TemporaryDirectory(prefix="tether-bench-lag-") as tmp, \
            TetherTarget(Path(tmp) / "tether", server_cpu,
                         gc_freeze=not args.no_gc_freeze) as target:
        found = lags(target, args.agents, args.rate, args.events)
    spread: dict[str, Any] = spread_ms(found)
    print(f"agent write -> append, {args.agents} agents x {args.rate:g}/s x {args.events}, "
          f"no client, gc.freeze {'off' if args.no_gc_freeze else 'on'} "
          "(ms; ts is rounded to 1 ms)")
    print(f"{'events':>8} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}")
    print(f"{len(found):>8} {spread['p50']:>8.2f} {spread['p90']:>8.2f} {spread['p99']:>8.2f} "
          f"{spread['max']:>8.2f}")
    print(json.dumps({"bench": "append_lag", "machine": machine(server_cpu is not None),
                      "agents": args.agents, "rate": args.rate, "events": args.events,
                      "gc_freeze": not args.no_gc_freeze,
                      "lag_ms": spread}))


if __name__ == "__main__":
    run(main)
