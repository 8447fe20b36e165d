"""A worker's memory over many sessions, with and without dropping idle views (issue 14,
SCALE-OUT.md section 5, "Mirror lifetime").

One gunicorn gevent worker on ``TETHER_STORE=redis`` (a private ``redis-server``: a free
loopback port, a temporary directory, AOF on, as tests/redis_server.py starts it; the Redis on
6379 is never touched). Two rounds, each touching ``--sessions`` new sessions on that worker
(``POST /api/sessions`` then ``GET /api/sessions/<id>/events?after=0`` of each), with a pause
of the idle time and two heartbeats after each round. The same load runs twice:

- ``sweep``: ``TETHER_MIRROR_IDLE_SECONDS=--idle`` (the sweep drops what nobody followed);
- ``keep``: ``TETHER_MIRROR_IDLE_SECONDS=86400`` (never within the run: what a worker did
  before the sweep existed).

Printed per run and step: the worker's VmRSS (/proc/<pid>/status, MB) and its
``tether_session_views`` gauge (/metrics); then the RSS each round added, and the ratio of
the two runs' growth over both rounds (the bounded one over the unbounded one).

    .venv/bin/python -m bench.idle_views                     # 5,000 sessions a round, about 3 min
    .venv/bin/python -m bench.idle_views --sessions 1000     # quicker
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench.cluster import private_redis
from bench.fanout import children, rss_kb
from tests.e2e.live import LiveServer
from tests.support import AUTH_HEADERS

#: A heartbeat of this many seconds runs the sweep (TETHER_HEARTBEAT_SECONDS).
HEARTBEAT = 1.0
#: Concurrent HTTP clients touching sessions.
CLIENTS = 8


def views(http: requests.Session, url: str) -> int:
    text = http.get(f"{url}/metrics", timeout=30).text
    found = re.search(r"^tether_session_views (\S+)$", text, re.MULTILINE)
    return int(float(found.group(1))) if found else -1


def touch(url: str, count: int) -> None:
    """Create ``count`` sessions and read each one's events, over :data:`CLIENTS` clients."""
    def one(_: int) -> None:
        with requests.Session() as http:
            http.headers.update(AUTH_HEADERS)
            created = http.post(f"{url}/api/sessions", json={}, timeout=30)
            created.raise_for_status()
            sid = created.json()["id"]
            http.get(f"{url}/api/sessions/{sid}/events", params={"after": 0},
                     timeout=30).raise_for_status()

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, range(count)))


def run(workdir: Path, sessions: int, idle: float) -> list[dict[str, Any]]:
    """One worker through both rounds: a row per step (``step``, ``rss_mb``, ``views``)."""
    rows: list[dict[str, Any]] = []
    (workdir / "tether").mkdir(parents=True)
    with private_redis(workdir / "redis") as redis_server, LiveServer(
            workdir / "tether", TETHER_STORE="redis", TETHER_REDIS_URL=redis_server.url,
            TETHER_REDIS_PREFIX="bench", TETHER_AGENT="local", WEB_CONCURRENCY=1,
            TETHER_MAX_SESSIONS=2 * sessions + 100, TETHER_HEARTBEAT_SECONDS=HEARTBEAT,
            TETHER_MIRROR_IDLE_SECONDS=idle) as server, requests.Session() as http:
        http.headers.update(AUTH_HEADERS)
        assert server.process is not None
        deadline = time.monotonic() + 10
        while not (pids := children(server.process.pid)):
            if time.monotonic() > deadline:
                raise RuntimeError("no gunicorn worker")
            time.sleep(0.1)
        pid = pids[0]
        wait = idle + 3 * HEARTBEAT if idle < 3600 else 3 * HEARTBEAT

        def row(step: str) -> None:
            rows.append({"step": step, "rss_mb": round(rss_kb(pid) / 1024, 1),
                         "views": views(http, server.url)})
            print(f"  {step:<22} {rows[-1]['rss_mb']:>8.1f} MB {rows[-1]['views']:>7} views",
                  flush=True)

        touch(server.url, 20)  # warm: code paths loaded, pools filled
        time.sleep(wait)
        row("start")
        for n in (1, 2):
            started = time.monotonic()
            touch(server.url, sessions)
            row(f"round {n} touched")
            print(f"    ({sessions} sessions in {time.monotonic() - started:.1f} s)")
            time.sleep(wait)
            row(f"round {n} + idle time")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=5000, help="new sessions per round")
    parser.add_argument("--idle", type=float, default=5.0,
                        help="TETHER_MIRROR_IDLE_SECONDS of the sweep run (seconds)")
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="tether-idle-") as tmp:
        for name, idle in (("sweep", args.idle), ("keep", 86400.0)):
            print(f"{name}: TETHER_MIRROR_IDLE_SECONDS={idle:g}, {args.sessions} sessions "
                  "a round", flush=True)
            results[name] = run(Path(tmp) / name, args.sessions, idle)
    growth = {name: rows[-1]["rss_mb"] - rows[0]["rss_mb"] for name, rows in results.items()}
    second = {name: rows[-1]["rss_mb"] - rows[2]["rss_mb"] for name, rows in results.items()}
    print(f"RSS added over both rounds: sweep {growth['sweep']:.1f} MB, keep "
          f"{growth['keep']:.1f} MB; ratio {growth['sweep'] / max(growth['keep'], 0.1):.2f}")
    print(f"RSS added by the second round alone: sweep {second['sweep']:.1f} MB, keep "
          f"{second['keep']:.1f} MB")
    print(json.dumps({"sessions": args.sessions, "idle_seconds": args.idle, "runs": results,
                      "growth_mb": growth, "second_round_mb": second}))


if __name__ == "__main__":
    main()
