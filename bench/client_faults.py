"""Client faults: what clients that never read cost the server, and the clients that do read.

Two runs in one sitting, each on a fresh server started as ``make run`` does (gunicorn, one
gevent worker; tests/e2e/live.py LiveServer):

- **baseline**: ``--readers`` SSE clients read one session as fast as they can while the
  ``local`` agent's ``bench <events> 64 <rate>`` command (tether/agents/local.py) appends
  ``--events`` events to it;
- **stalled**: the same, plus ``--stalled`` SSE clients on the same session that never read
  (a 4 KiB receive buffer, never a ``recv``), connected before the turn starts.

Figures per run: the readers' delivery time (prompt sent to the last event received, s) and
rate (events/s), latency (receipt minus the event's ``ts``, its append time on the server, same
clock: p50, p99, max ms), the turn's duration on the server (first to last event ``ts``, s), the
worker's CPU seconds (/proc/<pid>/stat) and RSS (/proc/<pid>/status: ``VmRSS`` before the turn,
``VmHWM`` peak, growth MiB), and how many stalled streams the server had closed (send timeout,
blueprints/sendguard.py) when the turn ended. Then the stalled run as ratios to the baseline:
the issue's bound is delivery time x1.2 and RSS growth +64 MiB (issue 4, client faults).

    .venv/bin/python -m bench.client_faults                       # 100,000 events, 500 stalled
    .venv/bin/python -m bench.client_faults --events 20000 --rate 2000   # paced

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.e2e.live import LiveServer
from tests.e2e.rawclients import SseStream, fd_count, memory_kib, worker_pid

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def read_all(port: int, sid: str, last_id: list[int], out: dict[str, Any],
             ready: threading.Event) -> None:
    """One reading SSE client: every event until ``turn_end``; receipt latency per event."""
    stream = SseStream(port, f"/api/sessions/{sid}/stream", timeout=300)
    latencies: list[float] = []
    count = 0
    try:
        while True:
            frames = stream.read()
            now = time.time()
            for frame in frames:
                if frame.event == "caught-up":
                    ready.set()
                elif frame.event == "message":
                    data = json.loads(frame.data)
                    count += 1
                    latencies.append((now - data["ts"]) * 1000)
                    if data["kind"] == "turn_end":
                        out.update(done=time.monotonic(), count=count, latencies=latencies,
                                   last_id=data["id"])
                        return
            if stream.ended:
                out.update(error="stream ended early", count=count)
                return
    finally:
        stream.close()


def run(events: int, rate: float, readers: int, stalled: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, LiveServer(Path(tmp)) as server:
        worker = worker_pid(server.process.pid)
        sid = server.create_session()["id"]
        hold = [SseStream(server.port, f"/api/sessions/{sid}/stream", rcvbuf=4096)
                for _ in range(stalled)]
        results: list[dict[str, Any]] = [{} for _ in range(readers)]
        ready = [threading.Event() for _ in range(readers)]
        threads = [threading.Thread(target=read_all,
                                    args=(server.port, sid, [], results[i], ready[i]))
                   for i in range(readers)]
        for thread in threads:
            thread.start()
        for event in ready:
            event.wait(30)
        time.sleep(1)  # every stream attached and idle
        fds_before = fd_count(worker)
        rss_before = memory_kib(worker)
        cpu_before = cpu_seconds(worker)
        started = time.monotonic()
        server.api("POST", f"/api/sessions/{sid}/prompt",
                   json={"text": f"bench {events} 64 {rate:g}"}).raise_for_status()
        for thread in threads:
            thread.join(600)
        cpu = cpu_seconds(worker) - cpu_before
        peak = memory_kib(worker, "VmHWM")
        closed = fds_before - fd_count(worker)
        page = server.events(sid, 0)["events"]
        first_ts = page[0]["ts"]
        last = server.api("GET", f"/api/sessions/{sid}/events",
                          params={"after": results[0].get("last_id", 1) - 1}).json()
        turn_s = last["events"][-1]["ts"] - first_ts
        for sock in hold:
            sock.close()
    bad = [r for r in results if "error" in r or "done" not in r]
    if bad:
        raise RuntimeError(f"a reader failed: {bad[0].get('error', 'timeout')}")
    latencies = sorted(x for r in results for x in r["latencies"])
    delivery = statistics.fmean(r["done"] - started for r in results)
    return {
        "readers": readers, "stalled": stalled, "events": results[0]["count"],
        "delivery_s": round(delivery, 3),
        "rate_per_s": round(results[0]["count"] / delivery),
        "latency_ms": {"p50": round(latencies[len(latencies) // 2], 2),
                       "p99": round(latencies[int(len(latencies) * 0.99)], 2),
                       "max": round(latencies[-1], 2)},
        "turn_s": round(turn_s, 3), "worker_cpu_s": round(cpu, 2),
        "rss_before_mib": round(rss_before / 1024, 1), "rss_peak_mib": round(peak / 1024, 1),
        "rss_growth_mib": round((peak - rss_before) / 1024, 1),
        "stalled_closed_by_server": max(closed, 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=0, help="events/s (0: a burst)")
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--stalled", type=int, default=500)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    baseline = run(args.events, args.rate, args.readers, 0)
    stalled = run(args.events, args.rate, args.readers, args.stalled)
    print(f"{'run':<10}{'events':>8}{'deliv s':>9}{'ev/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'turn s':>8}{'cpu s':>7}{'RSS MiB':>9}{'+MiB':>7}{'closed':>8}")
    for name, row in (("baseline", baseline), ("stalled", stalled)):
        print(f"{name:<10}{row['events']:>8}{row['delivery_s']:>9.2f}{row['rate_per_s']:>9}"
              f"{row['latency_ms']['p50']:>9.1f}{row['latency_ms']['p99']:>9.1f}"
              f"{row['turn_s']:>8.2f}{row['worker_cpu_s']:>7.1f}{row['rss_before_mib']:>9.1f}"
              f"{row['rss_growth_mib']:>7.1f}{row['stalled_closed_by_server']:>8}")
    ratios = {
        "delivery_time": round(stalled["delivery_s"] / baseline["delivery_s"], 2),
        "latency_p50": round(stalled["latency_ms"]["p50"] / baseline["latency_ms"]["p50"], 2),
        "worker_cpu": round(stalled["worker_cpu_s"] / baseline["worker_cpu_s"], 2),
        "rss_growth_extra_mib": round(stalled["rss_growth_mib"] - baseline["rss_growth_mib"], 1),
    }
    print(f"stalled / baseline: delivery time x{ratios['delivery_time']} (bound x1.2), "
          f"p50 latency x{ratios['latency_p50']}, worker CPU x{ratios['worker_cpu']}, "
          f"RSS growth {ratios['rss_growth_extra_mib']:+} MiB (bound +64)")
    print(json.dumps({"bench": "client_faults", "events": args.events, "rate": args.rate,
                      "baseline": baseline, "stalled": stalled, "ratios": ratios}))


if __name__ == "__main__":
    main()
