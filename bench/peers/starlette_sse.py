"""Peer: an sse-starlette server on uvicorn, one ``asyncio.Queue`` per subscriber.

Not part of Tether: a baseline for bench/fanout.py, same routes and event shape as
bench/peers/naive_flask.py (see its docstring). uvicorn picks uvloop and httptools when they
are installed (the ``bench`` dependency group installs them). sse-starlette frames with CRLF.

    python -m bench.peers.starlette_sse <port>
"""

import asyncio
import json
import sys
import time
from collections import defaultdict

import uvicorn
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

channels: dict[str, list[asyncio.Queue]] = defaultdict(list)
tasks: set[asyncio.Task] = set()


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def stream(request: Request) -> EventSourceResponse:
    subscribers = channels[request.query_params.get("channel", "")]

    async def body():
        queue: asyncio.Queue = asyncio.Queue()
        subscribers.append(queue)
        try:
            yield {"event": "caught-up", "data": "{}"}
            while True:
                yield await queue.get()
        finally:
            subscribers.remove(queue)

    return EventSourceResponse(body(), ping=15)


async def publish(request: Request) -> PlainTextResponse:
    args = request.query_params
    task = asyncio.create_task(generate(channels[args.get("channel", "")], int(args["count"]),
                                        int(args["bytes"]), float(args["rate"])))
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return PlainTextResponse("started", status_code=202)


async def generate(subscribers: list[asyncio.Queue], count: int, size: int,
                   rate: float) -> None:
    started = time.monotonic()
    for seq in range(count):
        if rate:
            await asyncio.sleep(max(0.0, started + seq / rate - time.monotonic()))
        head = f"{seq} {time.time():.6f} "
        data = json.dumps({"id": seq + 1, "ts": round(time.time(), 3), "kind": "text_delta",
                           "text": head + "x" * (size - len(head))},
                          separators=(",", ":"))
        event = {"id": str(seq + 1), "data": data}
        for queue in subscribers:
            queue.put_nowait(event)


app = Starlette(routes=[Route("/healthz", healthz), Route("/stream", stream),
                        Route("/publish", publish, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False, backlog=4096)
