"""The cluster harness itself (tests/e2e/rrproxy.py, tests/e2e/cluster.py), on what works with
or without the cluster core (issue 14): the proxy balances and cuts connections, both hosts
start on one Redis and answer through it, new connections reach several worker processes, and
the reconnecting clients resume exactly through severed connections (on one backend, where
one process holds the session). The cluster scenarios themselves are in test_cluster.py.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.e2e.cluster import HOSTS, WORKER_HEADER, Cluster, pid_of
from tests.e2e.rawclients import PollRequest
from tests.e2e.rrproxy import RoundRobinProxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


# -- the proxy, over plain TCP backends ---------------------------------------------------

class NameServer:
    """A TCP backend that sends its name to each connection, then echoes what it gets."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.sendall(self.name)
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        # shutdown first: a thread blocked in accept keeps a closed listener listening.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()


class Clients:
    """Connections through the proxy, all closed at the end."""

    def __init__(self, proxy: RoundRobinProxy) -> None:
        self.proxy = proxy
        self.socks: list[socket.socket] = []

    def hello(self) -> tuple[socket.socket, bytes]:
        """A connection through the proxy, and the name of the backend that took it (b"" when
        the proxy closed it at once)."""
        sock = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=5)
        self.socks.append(sock)
        try:
            return sock, sock.recv(1)
        except ConnectionResetError:
            return sock, b""

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


def ended(sock: socket.socket) -> bool:
    """Whether the peer ended the connection (EOF or reset) within the socket's timeout."""
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_the_proxy_round_robins_skips_failed_backends_and_severs() -> None:
    a, b = NameServer(b"A"), NameServer(b"B")
    proxy = RoundRobinProxy([a.port, b.port])
    clients = Clients(proxy)
    hello = clients.hello
    try:
        with proxy:
            socks, names = zip(*(hello() for _ in range(6)), strict=True)
            assert b"".join(names) in (b"ABABAB", b"BABABA")
            # Bytes go both ways, and a connection stays on its backend.
            socks[0].sendall(b"ping")
            assert socks[0].recv(4) == b"ping"
            assert len(proxy.live()) == 6

            assert proxy.sever() == 6
            assert all(ended(sock) for sock in socks)
            deadline = time.monotonic() + 5
            while proxy.live() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proxy.live() == []

            proxy.fail(b.port)
            assert {hello()[1] for _ in range(4)} == {b"A"}
            proxy.restore(b.port)
            kept = [hello() for _ in range(4)]
            assert sorted(name for _, name in kept) == [b"A", b"A", b"B", b"B"]
            # One backend's connections only.
            assert proxy.sever(b.port) == 2
            assert [ended(sock) for sock, name in kept if name == b"B"] == [True, True]
            for sock, name in kept:
                if name == b"A":
                    sock.sendall(b"still")
                    assert sock.recv(5) == b"still"

            # A backend that refuses connections is skipped, as a balancer does.
            b.close()
            assert {hello()[1] for _ in range(4)} == {b"A"}
            assert proxy.served[("127.0.0.1", b.port)] == 5
            a.close()
            assert hello()[1] == b""
            deadline = time.monotonic() + 5
            while proxy.refused == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proxy.refused == 1
        # Stopped: nothing listens any more.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    finally:
        clients.close()
        a.close()
        b.close()


# -- the cluster ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


def test_both_hosts_start_on_one_redis_and_answer_through_the_proxy(cluster: Cluster) -> None:
    assert set(cluster.hosts) == set(HOSTS)
    for host in cluster.hosts.values():
        assert host.running and host.worker_pids(), host.log_text()
        assert requests.get(host.url + "/healthz", timeout=5).json() == {"status": "ok"}
    # Separate process groups (a host is killed by its group) and one shared data dir.
    groups = {os.getpgid(host.process.pid) for host in cluster.hosts.values()}
    assert len(groups) == len(cluster.hosts)
    assert len({host.env["TETHER_DATA_DIR"] for host in cluster.hosts.values()}) == 1
    assert len({host.env["TETHER_HOST_ID"] for host in cluster.hosts.values()}) == 2

    assert cluster.proxy is not None
    before = dict(cluster.proxy.served)
    for _ in range(6):
        response = requests.get(cluster.url + "/healthz", timeout=5)
        assert response.status_code == 200 and response.json() == {"status": "ok"}
    grown = {port: cluster.proxy.served[("127.0.0.1", port)] - before.get(("127.0.0.1", port), 0)
             for port in (host.port for host in cluster.hosts.values())}
    assert sorted(grown.values()) == [3, 3], grown
    # The API answers through the proxy too, with the cluster's token.
    listing = cluster.api("GET", "/api/sessions")
    assert listing.status_code == 200 and listing.json()["epoch"]


def test_new_connections_through_the_proxy_reach_several_worker_processes(
        cluster: Cluster) -> None:
    assert cluster.proxy is not None
    workers = {pid: name for name, host in cluster.hosts.items() for pid in host.worker_pids()}
    served: list[int | None] = []
    for _ in range(12):
        request = PollRequest(cluster.proxy.port, "/healthz", timeout=10)
        try:
            while not request.done:
                request.read()
            assert request.status == 200
            # Found from /proc: which worker holds the backend end of this very connection.
            served.append(cluster.serving_pid(request.sock.getsockname()[1]))
        finally:
            request.close()
    assert None not in served and set(served) <= set(workers), (served, workers)
    assert len(set(served)) >= 2
    assert {workers[pid] for pid in served} == set(HOSTS)


def test_the_worker_header_names_the_process_that_served(cluster: Cluster) -> None:
    response = requests.get(cluster.url + "/healthz", timeout=5)
    if WORKER_HEADER not in response.headers:
        pytest.skip(f"no {WORKER_HEADER} header yet (TETHER_DEBUG_WORKER=1): the cluster "
                    "core adds it")
    seen = set()
    for _ in range(12):
        response = requests.get(cluster.url + "/healthz", timeout=5)
        wid = response.headers[WORKER_HEADER]
        host_id, pid, suffix = wid.rsplit(":", 2)
        assert host_id in cluster.hosts and re.fullmatch(r"[0-9a-f]+", suffix), wid
        assert int(pid) in cluster.hosts[host_id].worker_pids(), wid
        assert pid_of(wid) == int(pid)
        seen.add(wid)
    assert len(seen) >= 2 and len({w.split(":")[0] for w in seen}) == 2, seen
