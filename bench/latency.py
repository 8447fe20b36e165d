"""Delivery latency on a live server: how long after an event is appended a client has it.

Starts gunicorn (one gevent worker, as ``make run``) on a free loopback port, runs ``--turns``
turns of the ``local`` agent (help text streamed word by word, ``--word-delay`` apart), and
measures, for every event, client receipt time minus the event's ``ts`` (its append time on
the server, same clock) on an SSE, a WebSocket and a long-poll client attached at once. The
baseline, measured in the same sitting, is the round trip of ``GET /healthz``.

    .venv/bin/python -m bench.latency [--turns 20] [--word-delay 0.01]

Prints a table, then one JSON line of figures (milliseconds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
import sseclient

from tests.e2e.live import LiveServer
from tests.e2e.wsclient import WsClient
from tests.support import AUTH_HEADERS


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"n": len(ordered), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99),
            "max": ordered[-1], "mean": statistics.fmean(ordered)}


def sse_client(server: LiveServer, sid: str, turns: int, out: list[float],
               ready: threading.Event) -> None:
    response = requests.get(f"{server.url}/api/sessions/{sid}/stream", stream=True,
                            headers=AUTH_HEADERS, timeout=(5, 60))
    ends = 0
    for event in sseclient.SSEClient(response).events():
        if event.event == "caught-up":
            ready.set()
            continue
        if event.event != "message":
            continue
        now = time.time()
        data = json.loads(event.data)
        out.append((now - data["ts"]) * 1000)
        if data["kind"] == "turn_end":
            ends += 1
            if ends == turns:
                break
    response.close()


def ws_client(client: WsClient, sid: str, turns: int, out: list[float]) -> None:
    ends = 0
    while ends < turns:
        note = client.notification("event", timeout=60)
        now = time.time()
        out.append((now - note["event"]["ts"]) * 1000)
        ends += note["event"]["kind"] == "turn_end"
    client.close()


def poll_client(server: LiveServer, sid: str, turns: int, out: list[float]) -> None:
    after, ends = 0, 0
    while ends < turns:
        page = server.events(sid, after=after, wait=30)
        now = time.time()
        for event in page["events"]:
            out.append((now - event["ts"]) * 1000)
            ends += event["kind"] == "turn_end"
        after = page["last_event_id"]


def run(turns: int, word_delay: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, \
            LiveServer(Path(tmp), TETHER_LOCAL_WORD_DELAY=word_delay) as server:
        session = requests.Session()
        session.headers.update(AUTH_HEADERS)  # every API call needs the token (issue 4)
        baseline = []
        for _ in range(200):
            started = time.perf_counter()
            session.get(server.url + "/healthz", timeout=5).raise_for_status()
            baseline.append((time.perf_counter() - started) * 1000)
        sid = server.create_session()["id"]
        sse_ms: list[float] = []
        poll_ms: list[float] = []
        ws_ms: list[float] = []
        ready = threading.Event()
        ws = WsClient(server.url, timeout=60)
        ws.call("session.attach", session_id=sid)
        ws.notification("caught_up")
        threads = [threading.Thread(target=sse_client, args=(server, sid, turns, sse_ms, ready)),
                   threading.Thread(target=ws_client, args=(ws, sid, turns, ws_ms)),
                   threading.Thread(target=poll_client, args=(server, sid, turns, poll_ms))]
        for thread in threads:
            thread.start()
        ready.wait(10)
        for _ in range(turns):
            cursor = server.api("GET", f"/api/sessions/{sid}").json()["last_event_id"]
            session.post(f"{server.url}/api/sessions/{sid}/prompt", json={"text": "hello"},
                         timeout=5).raise_for_status()
            server.wait_for_event(sid, "turn_end", after=cursor)
        for thread in threads:
            thread.join(60)
    return {"baseline_healthz_rtt": percentiles(baseline), "sse": percentiles(sse_ms),
            "websocket": percentiles(ws_ms), "long_poll": percentiles(poll_ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--word-delay", type=float, default=0.01)
    args = parser.parse_args()
    figures = run(args.turns, args.word_delay)
    base = figures["baseline_healthz_rtt"]["p50"]
    print(f"{'path':<22}{'n':>7}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'p50/baseline':>14}")
    for name, row in figures.items():
        print(f"{name:<22}{row['n']:>7}{row['p50']:>9.2f}{row['p90']:>9.2f}{row['p99']:>9.2f}"
              f"{row['max']:>9.2f}{row['p50'] / base:>14.2f}")
    print(json.dumps({"bench": "latency", "turns": args.turns, **figures}))


if __name__ == "__main__":
    main()
