"""The fan-out load client: many SSE, WebSocket or long-poll clients in one asyncio process.

Run by bench/fanout.py as a subprocess pinned to its own core (``--cpu``), so that the server
under test and the client do not share a core. It reads one JSON config line on stdin,
connects every client (raw sockets, asyncio protocols, uvloop when installed), prints
``{"ready": …}`` once every client is attached (SSE ``caught-up``, WebSocket ``caught_up``, a
long-poll's first answer), waits for ``go`` on stdin (the orchestrator has started the
injection), and prints one JSON line of results when every client has its ``events`` bench
deltas or ``timeout`` seconds passed. Minimal parsing: HTTP chunked decoding, WebSocket
framing, and two regular expressions over whole buffers (event ids; the bench stamp
``"text":"<seq> <send time> `` that ``tether.agents.local``'s ``bench`` command and the peers
in bench/peers/ write).

Config (JSON): ``{"transport": "sse"|"ws"|"poll", "port": int, "token": str|null,
"targets": [{"path": str, "session": str, "after": int, "clients": int}], "events": int,
"timeout": float, "cpu": int|null, "replay_last_id": int|null, "connect_spread": float,
"connecting": int, "resume_header": bool, "until_turn_end": bool}``. For ``sse`` a target's
``path`` is the stream URL; for ``ws`` it is ignored (``/api/ws`` and ``session.attach
{session, after}``); for ``poll`` it is the events URL without query (``after``, ``wait``,
``limit`` are added).
``replay_last_id``: a replay run, where a client is ready when it has read up to that event
id, and is done then. ``connect_spread`` (seconds, default 0): client i starts connecting
``i / clients x connect_spread`` after the start, evenly (a reconnect storm); ``connecting``
(default 256): handshakes in flight at most; ``resume_header``: an SSE client sends its cursor
as ``Last-Event-ID`` from its first request, as a browser's automatic reconnect does.
``until_turn_end`` (Tether): a client is done only once it has its ``events`` deltas *and* the
turn's ``turn_end`` event, the last of the turn, so that it has read every event the server
handed its connection (bench/fanout.py checks that count against Tether's ``/metrics``).

Several workers (``TETHER_STORE=redis``, bench/cluster.py): a target may name its own
``port`` (another host) and a ``land`` rule, ``{"quota": {<worker id>: clients}}``: each of
the target's connections first asks ``GET /healthz`` and reads ``X-Tether-Worker``
(``TETHER_DEBUG_WORKER=1``); a connection on a worker whose quota for this target is full is
closed and another opened (at most :data:`MAX_PROBES` per connection), else the client's own
request follows on the same keep-alive connection (the WebSocket upgrade too). A client that
reconnects lands on the worker it had. The result then has ``workers`` (clients per worker)
and ``probes`` (connections opened to land them).

``"transport": "get"`` is a request loop instead (:func:`run_requests`): each of a target's
``clients`` keep-alive connections sends ``GET <path>``, reads the whole answer
(``Content-Length``) and sends the next, one request in flight per connection; ``ready``
once every connection has had one answer, then ``duration`` seconds (after ``go``) are
measured: requests/s answered, latency per request (send to last byte), answers per
connection (min, median, max: how fairly the server served them), non-200 answers, bytes,
events per answer (``{"id":`` envelopes counted), ids (the same count over every answer,
those before ``go`` and in flight at its time included: what the server delivered), client CPU.

Results (one JSON line): clients, done (clients that got every event), received (bench deltas,
summed over clients), expected, lost, duplicated, out_of_order, id_errors (a Tether or peer
event id that is not the previous one plus one), reconnects (a client whose connection
the server closed reconnects and resumes from its cursor, as a browser does), latency ms
(p50, p90, p99, max: receipt time minus the stamp, over every delta of every client; 10 us
buckets), rate (deltas delivered per
second summed over clients: received / (last receipt - first stamp)), client cpu_s and busy
(client CPU seconds / wall seconds between ``go`` and the end; near 1.0 the client, not the
server, is the bottleneck), busy_all (the same from the start: connecting included), ready_s
(from start to every client attached), errors; and per client attachment: attach_ms (p50,
p99, max over attached clients: from the client's own connect to its ``caught-up`` /
``caught_up`` / first answer), span_s (first connect to last attachment), connect_span_s
(first connect to last connect), ids (event ids received, summed), and for a replay run
``short`` (clients that did not reach ``replay_last_id``), ``lost_ids`` (ids short of it,
summed) and ``dup_ids`` (ids received beyond the ones between the client's cursor and its
last id, summed).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import resource
import sys
import time
from typing import Any

ID_SSE = re.compile(rb"(?m)^id: (\d+)\r?$")
ID_JSON = re.compile(rb'\{"id":(\d+),')
STAMP = re.compile(rb'"text":"(\d+) (\d+\.\d+) ')
LAST_ID = re.compile(rb'"last_event_id":(\d+)')
TURN_END = b'"kind":"turn_end"'
CONNECTING = 256  # clients connecting at once (handshakes in flight)
MAX_RECONNECTS = 20  # per client
MAX_PROBES = 400  # connections opened per client to land on a worker of its quota
WORKER = re.compile(rb"(?im)^x-tether-worker: *([^\r\n]+)")
CONTENT_LENGTH = re.compile(rb"(?i)content-length: *(\d+)")


class Stats:
    """Everything the clients measure, summed over clients (one process, one loop)."""

    def __init__(self, clients: int, events: int) -> None:
        self.clients, self.events = clients, events
        self.hist: dict[int, int] = {}
        self.max_lat = 0.0
        self.first_stamp = float("inf")
        self.last_recv = 0.0
        self.received = self.dup = self.ooo = self.id_errors = self.reconnects = 0
        self.ready = self.done = 0
        self.errors: list[str] = []
        # Landing (several workers): (id(target), worker) -> clients, worker -> clients
        self.landed: dict[tuple[int, str], int] = {}
        self.workers: dict[str, int] = {}
        self.probes = 0
        self.all_ready = asyncio.get_running_loop().create_future()
        self.all_done = asyncio.get_running_loop().create_future()

    def error(self, text: str) -> None:
        if len(self.errors) < 10:
            self.errors.append(text)

    def land(self, target: dict[str, Any], worker: str | None, previous: str | None) -> bool:
        """Whether a connection on ``worker`` serves a client of ``target`` (its ``land``
        quota); a client that had ``previous`` keeps it. Counted when taken."""
        if previous is not None:
            return worker == previous
        key = (id(target), worker or "")
        if self.landed.get(key, 0) >= target["land"]["quota"].get(worker, 0):
            return False
        self.landed[key] = self.landed.get(key, 0) + 1
        self.workers[worker or ""] = self.workers.get(worker or "", 0) + 1
        return True

    def mark_ready(self) -> None:
        self.ready += 1
        if self.ready == self.clients and not self.all_ready.done():
            self.all_ready.set_result(time.monotonic())

    def mark_done(self) -> None:
        self.done += 1
        if self.done == self.clients and not self.all_done.done():
            self.all_done.set_result(time.monotonic())

    def percentiles(self) -> dict[str, float]:
        total = sum(self.hist.values())
        out = {"n": total}
        if not total:
            return out | {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
        keys = sorted(self.hist)
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            rank, seen = q * total, 0
            for key in keys:
                seen += self.hist[key]
                if seen >= rank:
                    out[name] = round(key / 100, 2)  # 10 us buckets -> ms
                    break
        out["max"] = round(self.max_lat * 1000, 2)
        return out


class Client(asyncio.Protocol):
    """One client: connection, HTTP/WebSocket framing, and the exact-delivery checks."""

    def __init__(self, stats: Stats, cfg: dict[str, Any], target: dict[str, Any]) -> None:
        self.stats, self.cfg, self.target = stats, cfg, target
        self.k = cfg["events"]
        self.seen = bytearray(self.k)
        self.unique = 0
        self.max_seq = -1
        self.last_id = target["after"]
        self.is_ready = self.is_done = False
        self.head = True  # still reading the HTTP response head
        self.buf = b""
        self.lost = asyncio.get_running_loop().create_future()
        self.attached = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.reconnects, self.stopping, self.resumed = 0, False, False
        # until_turn_end: done only once the turn's turn_end has arrived too
        self.ended = not cfg.get("until_turn_end")
        self.ids = 0  # event ids received
        self.t_connect = self.t_ready = 0.0  # time.monotonic()
        self.worker: str | None = None  # the worker it landed on (a ``land`` rule)

    # -- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send_request()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.is_done and self.is_ready and not self.stopping \
                and self.reconnects < MAX_RECONNECTS:
            # What a browser does: reconnect and resume from the cursor (SSE Last-Event-ID,
            # session.attach {after}, ?after=). A server closes a socket that cannot take a
            # write for 10 s (DESIGN.md), which happens when it is far behind.
            self.reconnects += 1
            self.stats.reconnects += 1
            asyncio.ensure_future(self.reconnect())
            return
        if not self.is_done and not self.stopping:
            self.stats.error(f"connection lost: {exc!r}")
        if not self.lost.done():
            self.lost.set_result(None)

    async def reconnect(self) -> None:
        self.head, self.buf, self.resumed = True, b"", True
        try:
            await connect_to(asyncio.get_running_loop(), self, self.cfg, self.target,
                             self.stats)
        except OSError as exc:
            self.stats.error(f"reconnect: {exc!r}")
            if not self.lost.done():
                self.lost.set_result(None)

    def finish(self) -> None:
        if not self.is_done:
            self.is_done = True
            self.stats.mark_done()

    def ready(self) -> None:
        if not self.is_ready:
            self.is_ready = True
            self.t_ready = time.monotonic()
            self.stats.mark_ready()
            self.attached.set_result(None)

    def auth(self) -> bytes:
        token = self.cfg.get("token")
        return f"Authorization: Bearer {token}\r\n".encode() if token else b""

    # -- the checks, over one buffer of complete events received at `now`
    def account(self, data: bytes, id_re: re.Pattern[bytes], now: float) -> None:
        last = self.last_id
        ids = id_re.findall(data)
        self.ids += len(ids)
        for raw in ids:
            event_id = int(raw)
            if event_id != last + 1:
                self.stats.id_errors += 1
            if event_id > last:
                last = event_id
        self.last_id = last
        if not self.ended and TURN_END in data:
            self.ended = True
        stamps = STAMP.findall(data)
        if not stamps:
            if self.ended and self.unique >= self.k:
                self.finish()
            return
        st, seen, k = self.stats, self.seen, self.k
        hist, max_seq = st.hist, self.max_seq
        for seq_raw, stamp_raw in stamps:
            seq, stamp = int(seq_raw), float(stamp_raw)
            lat = now - stamp
            if lat < 0:
                lat = 0.0
            bucket = int(lat * 100_000)
            hist[bucket] = hist.get(bucket, 0) + 1
            if lat > st.max_lat:
                st.max_lat = lat
            if stamp < st.first_stamp:
                st.first_stamp = stamp
            if seq >= k:
                st.id_errors += 1
                continue
            if seen[seq]:
                st.dup += 1
                continue
            if seq < max_seq:
                st.ooo += 1
            else:
                max_seq = seq
            seen[seq] = 1
            self.unique += 1
        self.max_seq = max_seq
        st.received += len(stamps)
        st.last_recv = now
        if self.unique >= k and self.ended:
            self.finish()


class SseClient(Client):
    def send_request(self) -> None:
        path = self.target["path"]
        resume = (f"Last-Event-ID: {self.last_id}\r\n".encode()
                  if self.resumed or self.cfg.get("resume_header") else b"")
        self.transport.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             f"Accept: text/event-stream\r\n".encode() + self.auth() + resume
                             + b"\r\n")
        self.chunked, self.left, self.skip = False, 0, 0
        self.raw = b""

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self.head:
            self.raw += data
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data, self.raw = self.raw[:end].lower(), self.raw[end + 4:], b""
            self.head = False
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                self.stats.error(f"stream answered {head[:80]!r}")
                self.transport.close()
                return
            self.chunked = b"transfer-encoding: chunked" in head
        payload = self.dechunk(data) if self.chunked else data
        buf = self.buf + payload if self.buf else payload
        cut = buf.rfind(b"\n") + 1
        if not cut:
            self.buf = buf
            return
        lines, self.buf = buf[:cut], buf[cut:]
        if not self.is_ready and b"event: caught-up" in lines:
            self.ready()
            if self.cfg.get("replay_last_id") is not None:
                self.finish()
        self.account(lines, ID_SSE, now)

    def dechunk(self, data: bytes) -> bytes:
        """HTTP/1.1 chunked transfer coding (RFC 9112, 7.1), incrementally."""
        buf = self.raw + data if self.raw else data
        out, i, n = [], 0, len(buf)
        while i < n:
            if self.left:
                take = min(self.left, n - i)
                out.append(buf[i:i + take])
                i += take
                self.left -= take
                if not self.left:
                    self.skip = 2
            elif self.skip:
                take = min(self.skip, n - i)
                i += take
                self.skip -= take
            else:
                j = buf.find(b"\r\n", i)
                if j < 0:
                    break
                size = int(buf[i:j].split(b";", 1)[0], 16)
                i = j + 2
                if size == 0:
                    i = n
                    break
                self.left = size
        self.raw = buf[i:]
        return b"".join(out)


class WsClient(Client):
    """RFC 6455: the opening handshake, masked client frames, unmasked server frames."""

    def send_request(self) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(f"GET /api/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                             f"Sec-WebSocket-Version: 13\r\n".encode() + self.auth() + b"\r\n")
        self.fragments: list[bytes] = []

    def send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126
                                         else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
        keys = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")
        self.transport.write(head + mask + masked)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buf + data if self.buf else data
        if self.head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if b" 101 " not in buf[:end].split(b"\r\n", 1)[0]:
                self.stats.error(f"upgrade answered {buf[:80]!r}")
                self.transport.close()
                return
            self.head, buf = False, buf[end + 4:]
            attach = {"jsonrpc": "2.0", "id": 1, "method": "session.attach",
                      "params": {"session_id": self.target["session"],
                                 "after": self.last_id}}
            self.send_frame(1, json.dumps(attach).encode())
        messages, i, n = [], 0, len(buf)
        while n - i >= 2:
            b0, b1 = buf[i], buf[i + 1] & 0x7F
            start = i + 2
            if b1 == 126:
                if n - i < 4:
                    break
                b1, start = int.from_bytes(buf[i + 2:i + 4], "big"), i + 4
            elif b1 == 127:
                if n - i < 10:
                    break
                b1, start = int.from_bytes(buf[i + 2:i + 10], "big"), i + 10
            if n - start < b1:
                break
            payload, i, opcode = buf[start:start + b1], start + b1, b0 & 0x0F
            if opcode in (0, 1, 2):
                self.fragments.append(payload)
                if b0 & 0x80:
                    messages.append(b"".join(self.fragments))
                    self.fragments = []
            elif opcode == 9:
                self.send_frame(10, payload)
            elif opcode == 8:
                self.stats.error(f"server closed the socket: {payload[:2].hex()}")
        self.buf = buf[i:]
        if not messages:
            return
        data = b"\n".join(messages)
        if not self.is_ready and b'"method":"caught_up"' in data:
            self.ready()
            if self.cfg.get("replay_last_id") is not None:
                self.account(data, ID_JSON, now)
                self.finish()
                return
        self.account(data, ID_JSON, now)


class PollClient(Client):
    """Long-poll: one keep-alive connection, one request at a time, cursor from each answer."""

    def send_request(self) -> None:
        replay = self.cfg.get("replay_last_id") is not None
        wait = 0 if (replay or not self.is_ready) else 30
        path = f"{self.target['path']}?after={self.last_id}&wait={wait}&limit=1000"
        self.transport.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
                             + self.auth() + b"\r\n")
        self.head, self.length = True, 0

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buf + data if self.buf else data
        while True:
            if self.head:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = buf[:end].lower()
                if b" 200 " not in head.split(b"\r\n", 1)[0]:
                    self.stats.error(f"poll answered {head[:80]!r}")
                    self.transport.close()
                    return
                match = re.search(rb"content-length: *(\d+)", head)
                self.length, self.head, buf = int(match.group(1)) if match else 0, False, \
                    buf[end + 4:]
            if len(buf) < self.length:
                break
            body, buf = buf[:self.length], buf[self.length:]
            self.answer(body, now)
            if self.is_done:
                break
            self.send_request()
        self.buf = buf

    def answer(self, body: bytes, now: float) -> None:
        last = LAST_ID.findall(body)
        self.account(body, ID_JSON, now)
        if last:
            self.last_id = max(self.last_id, int(last[-1]))
        target = self.cfg.get("replay_last_id")
        if target is not None:
            if self.last_id >= target:
                self.ready()
                self.finish()
        else:
            self.ready()


KINDS = {"sse": SseClient, "ws": WsClient, "poll": PollClient}




class Probe(asyncio.Protocol):
    """``GET /healthz`` on a fresh keep-alive connection: which worker holds it
    (``X-Tether-Worker``; None without the header)."""

    def __init__(self) -> None:
        self.buf = b""
        self.worker: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.worker.done():
            return
        head = self.buf[:end]
        length = CONTENT_LENGTH.search(head)
        if len(self.buf) < end + 4 + (int(length.group(1)) if length else 0):
            return
        worker = WORKER.search(head)
        self.worker.set_result(worker.group(1).decode().strip() if worker else None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.worker.done():
            self.worker.set_exception(ConnectionResetError(f"probe connection lost: {exc!r}"))


async def connect_to(loop: asyncio.AbstractEventLoop, client: Any, cfg: dict[str, Any],
                     target: dict[str, Any], stats: Stats) -> None:
    """Connect ``client`` to its target's port; with a ``land`` rule, on a worker of its
    quota (module docstring), the probe's connection handed over to the client.

    :raises OSError: no connection, or none landed in :data:`MAX_PROBES` tries.
    """
    port = target.get("port", cfg["port"])
    if not target.get("land"):
        await loop.create_connection(lambda: client, "127.0.0.1", port)
        return
    for _ in range(MAX_PROBES):
        transport, probe = await loop.create_connection(Probe, "127.0.0.1", port)
        stats.probes += 1
        try:
            worker = await asyncio.wait_for(probe.worker, 30)
        except (OSError, TimeoutError):
            transport.close()
            continue
        if stats.land(target, worker, client.worker):
            client.worker = worker
            transport.set_protocol(client)
            client.connection_made(transport)
            return
        transport.close()
    raise OSError(f"no connection landed on {target['land']} in {MAX_PROBES} tries")


async def _open(loop: asyncio.AbstractEventLoop, client: Any, cfg: dict[str, Any],
                stats: Stats) -> None:
    """Connect ``client`` and wait until it is attached or lost (the caller holds the gate,
    so handshakes in flight are bounded)."""
    try:
        await connect_to(loop, client, cfg, client.target, stats)
    except OSError as exc:
        stats.error(f"connect: {exc!r}")
        return
    await asyncio.wait([client.attached, client.lost],
                       return_when=asyncio.FIRST_COMPLETED, timeout=cfg["timeout"])

async def _stop(clients: list[Any], connecting: list[asyncio.Task[Any]]) -> None:
    """Close every client's connection and cancel the connects still under way."""
    for client in clients:
        client.stopping = True
        if client.transport is not None:
            client.transport.close()
    for task in connecting:
        task.cancel()
    await asyncio.sleep(0)

async def run(cfg: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    total = sum(t["clients"] for t in cfg["targets"])
    stats = Stats(total, cfg["events"])
    kind = KINDS[cfg["transport"]]
    gate = asyncio.Semaphore(cfg.get("connecting") or CONNECTING)
    spread = cfg.get("connect_spread") or 0.0
    clients: list[Client] = []
    started, cpu_start = time.monotonic(), _cpu()

    async def connect(target: dict[str, Any], i: int) -> None:
        if spread:
            await asyncio.sleep(started + i * spread / total - time.monotonic())
        async with gate:
            client = kind(stats, cfg, target)
            clients.append(client)
            client.t_connect = time.monotonic()
            await _open(loop, client, cfg, stats)

    connecting = [asyncio.ensure_future(connect(t, i)) for i, t in enumerate(
        t for t in cfg["targets"] for _ in range(t["clients"]))]
    try:
        ready_at = await asyncio.wait_for(asyncio.shield(stats.all_ready), cfg["timeout"])
    except TimeoutError:
        ready_at = None
    result: dict[str, Any] = {"clients": total, "ready": stats.ready,
                              "ready_s": round(ready_at - started, 4) if ready_at else None}
    replay = cfg.get("replay_last_id") is not None
    if ready_at is not None and not replay:
        print(json.dumps({"ready": result["ready_s"]}), flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() != "go":
            stats.error("no go from the orchestrator")
    go = time.monotonic()
    cpu0 = _cpu()
    if ready_at is not None and not replay:
        try:
            await asyncio.wait_for(asyncio.shield(stats.all_done), cfg["timeout"])
        except TimeoutError:
            stats.error(f"{total - stats.done} clients still missing events at the timeout")
    end = time.monotonic()
    cpu = _cpu() - cpu0
    await _stop(clients, connecting)
    expected = total * cfg["events"]
    unique = sum(c.unique for c in clients)
    window = stats.last_recv - stats.first_stamp
    result.update({
        "done": stats.done, "received": stats.received, "unique": unique, "expected": expected,
        "lost": expected - unique, "duplicated": stats.dup, "out_of_order": stats.ooo,
        "id_errors": stats.id_errors, "reconnects": stats.reconnects,
        "workers": stats.workers, "probes": stats.probes,
        "latency_ms": stats.percentiles(),
        "rate": round(unique / window, 1) if window > 0 else 0.0,
        "window_s": round(window, 4) if window > 0 else 0.0,
        "cpu_s": round(cpu, 3), "busy": round(cpu / (end - go), 3) if end > go else 0.0,
        "busy_all": round((_cpu() - cpu_start) / (time.monotonic() - started), 3),
        "errors": stats.errors})
    result.update(attachment(clients, cfg.get("replay_last_id")))
    return result


def spread_ms(values: list[float]) -> dict[str, float]:
    """p50, p90, p99 and max of ``values`` (seconds), in ms; n is how many."""
    if not values:
        return {"n": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"n": len(ordered), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99),
            "max": round(ordered[-1] * 1000, 2)}


def attachment(clients: list[Client], target: int | None) -> dict[str, Any]:
    """Per-client attach times and id counts (the module docstring's second list)."""
    attached = [c for c in clients if c.is_ready]
    out: dict[str, Any] = {
        "attach_ms": spread_ms([c.t_ready - c.t_connect for c in attached]),
        "span_s": round(max(c.t_ready for c in attached)
                        - min(c.t_connect for c in clients), 4) if attached else None,
        "connect_span_s": round(max(c.t_connect for c in clients)
                                - min(c.t_connect for c in clients), 4) if clients else None,
        "ids": sum(c.ids for c in clients)}
    if target is not None:
        out.update({
            "short": sum(c.last_id < target for c in clients),
            "lost_ids": sum(max(0, target - c.last_id) for c in clients),
            "dup_ids": sum(max(0, c.ids - (c.last_id - c.target["after"])) for c in clients)})
    return out


class GetClient(asyncio.Protocol):
    """A keep-alive request loop (``"transport": "get"``): one request in flight."""

    def __init__(self, stats: Stats, cfg: dict[str, Any], target: dict[str, Any],
                 loop_state: dict[str, Any]) -> None:
        self.stats, self.cfg, self.state, self.target = stats, cfg, loop_state, target
        self.worker: str | None = None  # the worker it landed on (a ``land`` rule)
        token = cfg.get("token")
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.request = f"GET {target['path']} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode()
        self.transport: asyncio.Transport | None = None
        self.buf, self.head, self.length, self.sent = b"", True, 0, 0.0
        self.is_ready = self.stopping = False
        self.attached = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()
        self.answers = self.bytes = self.events = self.bad = self.reconnects = 0
        self.ids = 0  # events in every answer, the unmeasured ones included

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        self.buf, self.head = b"", True
        self.sent = time.perf_counter()
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stopping:
            return
        if self.reconnects < MAX_RECONNECTS:  # the server closed a keep-alive connection
            self.reconnects += 1
            self.stats.reconnects += 1
            asyncio.ensure_future(self.reconnect())
            return
        self.stats.error(f"connection lost: {exc!r}")
        if not self.lost.done():
            self.lost.set_result(None)

    async def reconnect(self) -> None:
        try:
            await connect_to(asyncio.get_running_loop(), self, self.cfg, self.target,
                             self.stats)
        except OSError as exc:
            self.stats.error(f"reconnect: {exc!r}")
            if not self.lost.done():
                self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if self.head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            head = buf[:end].lower()
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                self.bad += 1
                self.stats.error(f"answered {head[:80]!r}")
            match = re.search(rb"content-length: *(\d+)", head)
            self.length, self.head, buf = int(match.group(1)) if match else 0, False, \
                buf[end + 4:]
        if len(buf) < self.length:
            self.buf = buf
            return
        if len(buf) > self.length:
            self.stats.error("more bytes than one answer (pipelining is not used)")
        now = time.perf_counter()
        state = self.state
        events = buf.count(b'{"id":')
        self.ids += events
        if state["measuring"] and self.sent >= state["t0"]:
            lat = now - self.sent
            bucket = int(lat * 100_000)
            self.stats.hist[bucket] = self.stats.hist.get(bucket, 0) + 1
            if lat > self.stats.max_lat:
                self.stats.max_lat = lat
            self.answers += 1
            self.bytes += self.length
            self.events += events
        if not self.is_ready:
            self.is_ready = True
            self.stats.mark_ready()
            self.attached.set_result(None)
        if now < state["t_end"] and not self.stopping:
            self.send()
        else:
            self.stopping = True
            self.stats.mark_done()


async def run_requests(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``get`` request loop (module docstring); one JSON-able result."""
    loop = asyncio.get_running_loop()
    total = sum(t["clients"] for t in cfg["targets"])
    stats = Stats(total, 0)
    state = {"measuring": False, "t0": float("inf"), "t_end": float("inf")}
    gate = asyncio.Semaphore(cfg.get("connecting") or CONNECTING)
    clients: list[GetClient] = []
    started = time.monotonic()

    async def connect(target: dict[str, Any]) -> None:
        async with gate:
            client = GetClient(stats, cfg, target, state)
            clients.append(client)
            await _open(loop, client, cfg, stats)

    connecting = [asyncio.ensure_future(connect(t)) for t in cfg["targets"]
                  for _ in range(t["clients"])]
    try:
        ready_at = await asyncio.wait_for(asyncio.shield(stats.all_ready), cfg["timeout"])
    except TimeoutError:
        ready_at = None
    result: dict[str, Any] = {"clients": total, "ready": stats.ready,
                              "ready_s": round(ready_at - started, 4) if ready_at else None}
    t0 = t1 = time.perf_counter()
    cpu = 0.0
    if ready_at is not None:  # every connection loops from its first answer on
        print(json.dumps({"ready": result["ready_s"]}), flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() != "go":
            stats.error("no go from the orchestrator")
        cpu0 = _cpu()
        t0 = time.perf_counter()
        state.update(measuring=True, t0=t0, t_end=t0 + cfg["duration"])
        try:
            await asyncio.wait_for(asyncio.shield(stats.all_done),
                                   cfg["duration"] + cfg["timeout"])
        except TimeoutError:
            stats.error(f"{total - stats.done} connections still waiting at the timeout")
        t1 = time.perf_counter()
        cpu = _cpu() - cpu0
    await _stop(clients, connecting)
    answers = sum(c.answers for c in clients)
    per_conn = sorted(c.answers for c in clients)
    window = t1 - t0
    result.update({
        "requests": answers, "window_s": round(window, 4),
        "rate": round(answers / window, 1) if window > 0 else 0.0,
        "latency_ms": stats.percentiles(), "bad_status": sum(c.bad for c in clients),
        "answers_per_conn": {"min": min(per_conn), "p50": per_conn[len(per_conn) // 2],
                             "max": max(per_conn)} if per_conn else None,
        "bytes_per_answer": round(sum(c.bytes for c in clients) / answers) if answers else 0,
        "events_per_answer": round(sum(c.events for c in clients) / answers, 2)
        if answers else 0.0, "ids": sum(c.ids for c in clients),
        "reconnects": stats.reconnects, "workers": stats.workers, "probes": stats.probes,
        "cpu_s": round(cpu, 3), "busy": round(cpu / window, 3) if window > 0 else 0.0,
        "errors": stats.errors})
    return result


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    cfg = json.loads(sys.stdin.readline())
    if cfg.get("cpu") is not None:
        os.sched_setaffinity(0, {cfg["cpu"]})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    work = run_requests(cfg) if cfg["transport"] == "get" else run(cfg)
    print(json.dumps({"result": runner(work)}), flush=True)


if __name__ == "__main__":
    main()
