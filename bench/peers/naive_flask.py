"""Peer: a naive Flask + gevent SSE server, one queue per subscriber (the shape of flask-sse).

Not part of Tether: a baseline for bench/fanout.py. Every subscriber gets its own
``gevent.queue.Queue``; publishing puts each frame into every queue, and each subscriber's
greenlet wakes to write it (one write per event). Served by gevent's pywsgi, one process.

    python -m bench.peers.naive_flask <port>

- ``GET /stream?channel=<c>``: SSE; ``event: caught-up`` once subscribed, then
  ``id: <n>`` / ``data: {"id","ts","kind":"text_delta","text"}`` per event.
- ``POST /publish?channel=<c>&count=<n>&bytes=<b>&rate=<r>``: 202; a greenlet generates
  ``count`` events whose ``text`` is ``"<seq> <time.time()> "`` padded with ``x`` to ``bytes``
  characters, ``rate`` per second on a fixed schedule (0: a burst, no yield between events).
- ``GET /healthz``: ``ok``.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402

import gevent  # noqa: E402
from flask import Flask, Response, request  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402
from gevent.queue import Queue  # noqa: E402

app = Flask(__name__)
channels: dict[str, list[Queue]] = defaultdict(list)


@app.get("/healthz")
def healthz() -> str:
    return "ok"


@app.get("/stream")
def stream() -> Response:
    subscribers = channels[request.args.get("channel", "")]

    def body():
        queue: Queue = Queue()
        subscribers.append(queue)
        try:
            yield b"event: caught-up\ndata: {}\n\n"
            while True:
                yield queue.get()
        finally:
            subscribers.remove(queue)

    return Response(body(), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})


@app.post("/publish")
def publish() -> tuple[str, int]:
    args = request.args
    gevent.spawn(generate, channels[args.get("channel", "")], int(args["count"]),
                 int(args["bytes"]), float(args["rate"]))
    return "started", 202


def generate(subscribers: list[Queue], count: int, size: int, rate: float) -> None:
    started = time.monotonic()
    for seq in range(count):
        if rate:
            gevent.sleep(max(0.0, started + seq / rate - time.monotonic()))
        head = f"{seq} {time.time():.6f} "
        data = json.dumps({"id": seq + 1, "ts": round(time.time(), 3), "kind": "text_delta",
                           "text": head + "x" * (size - len(head))},
                          separators=(",", ":"))
        frame = f"id: {seq + 1}\ndata: {data}\n\n".encode()
        for queue in subscribers:
            queue.put(frame)


if __name__ == "__main__":
    WSGIServer(("127.0.0.1", int(sys.argv[1])), app, log=None, backlog=4096).serve_forever()
