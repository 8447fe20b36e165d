"""Half-open peers, for real: run inside a private network namespace (``unshare --net``, root),
where ``tc`` may drop packets on the namespace's own loopback without touching anyone else's.

    unshare --net -- .venv/bin/python -m tests.e2e.halfopen

Starts a live server (``TETHER_KEEPALIVE`` 2 s), attaches one SSE stream and one WebSocket,
then drops every packet the two clients send (an htb class whose leaf is a pfifo of limit 0,
chosen by a u32 filter on the client's port: the namespace's kernel has no netem and no
``action drop``). From the server's side that is a peer that vanished without closing: its
keepalive pings are never acknowledged. Prints one JSON line: ``keepalive`` (s), and for
``sse`` and ``ws`` the seconds from the clients' last acknowledgement (the moment the filter
went in; the streams were idle, so everything was acknowledged) until the worker no longer
held the connection's descriptor, or None after 60 s; ``ended``: the same for the stream's
server-side work, seen as the ``tether_clients`` gauge of its transport (``GET /metrics``)
dropping back, which the SSE generator's and the WebSocket reader's ``finally`` do; and
``clients``: that gauge before the clients attached, while attached, and at the end. Or
``{"skip": reason}`` when the namespace cannot drop packets.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.live import LiveServer
from tests.e2e.rawclients import SseStream, WsStream, holds_inode, server_inode, worker_pid

KEEPALIVE = 2
#: The ``transport`` label of ``tether_clients`` for each client.
TRANSPORT = {"sse": "sse", "ws": "websocket"}


def sh(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, shell=True, capture_output=True, text=True)


def drop_from(ports: list[int]) -> str | None:
    """Drop every packet whose source port is one of ``ports``; the error, or None."""
    commands = ["tc qdisc add dev lo root handle 1: htb default 10",
                "tc class add dev lo parent 1: classid 1:10 htb rate 10gbit",
                "tc class add dev lo parent 1: classid 1:20 htb rate 10gbit",
                "tc qdisc add dev lo parent 1:20 handle 20: pfifo limit 0"]
    commands += [f"tc filter add dev lo parent 1: protocol ip u32 match ip sport {port} 0xffff "
                 "flowid 1:20" for port in ports]
    for command in commands:
        done = sh(command)
        if done.returncode != 0:
            return f"{command}: {done.stderr.strip()}"
    return None


def clients_gauge(server: LiveServer) -> dict[str, int]:
    """``tether_clients`` by client name (``sse``, ``ws``), from ``GET /metrics``."""
    response = server.api("GET", "/metrics")
    response.raise_for_status()
    by_transport = {sample.labels["transport"]: sample.value
                    for family in text_string_to_metric_families(response.text)
                    if family.name == "tether_clients" for sample in family.samples}
    return {name: int(by_transport[label]) for name, label in TRANSPORT.items()}


def main() -> None:
    if sh("ip link set lo up").returncode != 0:
        print(json.dumps({"skip": "cannot bring up lo in the namespace"}))
        return
    with tempfile.TemporaryDirectory() as tmp, \
            LiveServer(Path(tmp), TETHER_KEEPALIVE=KEEPALIVE) as server:
        worker = worker_pid(server.process.pid)
        sid = server.create_session()["id"]
        baseline = clients_gauge(server)
        sse = SseStream(server.port, f"/api/sessions/{sid}/stream")
        while not any(f.event == "caught-up" for f in sse.read()):
            pass
        ws = WsStream(server.port)
        while not any(m.get("method") == "gateway.ready" for m in ws.read()):
            pass
        ws.send("session.attach", {"session_id": sid})
        while not any(m.get("method") == "caught_up" for m in ws.read()):
            pass
        clients = {"sse": sse.sock.getsockname()[1], "ws": ws.sock.getsockname()[1]}
        inodes = {name: server_inode(server.port, port) for name, port in clients.items()}
        assert all(holds_inode(worker, inode) for inode in inodes.values()), inodes
        attached = clients_gauge(server)
        error = drop_from(list(clients.values()))
        if error:
            print(json.dumps({"skip": f"tc cannot drop packets here: {error}"}))
            return
        cut = time.monotonic()
        reaped: dict[str, float | None] = dict.fromkeys(inodes)
        ended: dict[str, float | None] = dict.fromkeys(inodes)
        while time.monotonic() - cut < 60 and None in (*reaped.values(), *ended.values()):
            gauge = clients_gauge(server)  # a new connection: its packets are not dropped
            for name, inode in inodes.items():
                if reaped[name] is None and not holds_inode(worker, inode):
                    reaped[name] = round(time.monotonic() - cut, 2)
                if ended[name] is None and gauge[name] <= baseline[name]:
                    ended[name] = round(time.monotonic() - cut, 2)
            time.sleep(0.1)
        after = clients_gauge(server)
        print(json.dumps({"keepalive": KEEPALIVE, **reaped, "ended": ended,
                          "clients": {name: [baseline[name], attached[name], after[name]]
                                      for name in inodes}}), flush=True)
        sh("tc qdisc del dev lo root")
        sse.close()
        ws.close()


if __name__ == "__main__":
    main()
