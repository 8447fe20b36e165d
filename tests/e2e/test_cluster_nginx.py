"""The cluster behind nginx (issue 14: "a round-robin proxy with no affinity that the test owns
(a small gevent TCP proxy; nginx too where it is installed)"): two scenarios of
tests/e2e/test_cluster.py, run again with Debian's nginx in front of both hosts instead of the
test's TCP proxy.

nginx here is the test's own (tests/e2e/nginx.py runs it: its own config, pid file and logs in
a temporary directory, never the system service), plain HTTP on a free loopback port, with an
``upstream`` of both hosts' ports (default round robin, no affinity, upstream keepalive),
``proxy_buffering off`` and the WebSocket upgrade headers. Unlike the TCP proxy, nginx
balances each request, not each connection.

nginx cannot cut its connections on demand as the TCP proxy's ``sever()`` does; instead
:meth:`NginxFront.sever` reloads it (SIGHUP to the master this test started, which is what
``nginx -s reload`` sends): the old worker stops accepting and, after
``worker_shutdown_timeout`` (200 ms), closes every connection it still holds, streams,
WebSockets and long-polls alike. The six-clients scenario reloads it every 300 ms.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from tests.e2e import test_cluster as scenarios
from tests.e2e.cluster import Cluster
from tests.e2e.live import free_port
from tests.e2e.nginx import check_config, main_config, nginx_binary
from tests.support import Tally

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.nginx,
              pytest.mark.timeout(180)]

#: How long an old nginx worker keeps its connections after a reload before closing them.
SHUTDOWN_TIMEOUT = "200ms"


def cluster_site(directory: Path, listen_port: int, upstream_ports: list[int]) -> str:
    """The nginx site in front of the cluster: every host in one upstream, round robin."""
    servers = "".join(f"    server 127.0.0.1:{port};\n" for port in upstream_ports)
    return (
        "map $http_upgrade $connection_upgrade {\n"
        "    default upgrade;\n"
        "    ''      '';\n"
        "}\n"
        "upstream tether_cluster {\n"
        f"{servers}"
        # As deploy/nginx.conf: idle connections to the hosts reused, closed before gunicorn's
        # own keepalive (5 s) closes them.
        "    keepalive 16;\n"
        "    keepalive_timeout 4s;\n"
        "}\n"
        "server {\n"
        f"    listen 127.0.0.1:{listen_port};\n"
        f"    access_log {directory}/access.log;\n"
        "    proxy_http_version 1.1;\n"
        # The Host the client sent, port included: Tether sees the same host (and names the
        # login cookie after the same port) as behind the TCP proxy.
        "    proxy_set_header Host $http_host;\n"
        "    proxy_set_header Upgrade $http_upgrade;\n"
        "    proxy_set_header Connection $connection_upgrade;\n"
        "    proxy_buffering off;\n"
        "    proxy_read_timeout 3600s;\n"
        "    location / {\n"
        "        proxy_pass http://tether_cluster;\n"
        "    }\n"
        "}\n")


class NginxFront:
    """nginx in front of ``upstream_ports``, with the interface of
    :class:`~tests.e2e.rrproxy.RoundRobinProxy` that the scenarios use: :attr:`url`,
    :meth:`start`, :meth:`stop`, and :meth:`sever` (a reload)."""

    def __init__(self, directory: Path, upstream_ports: list[int]) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.site = directory / "cluster.conf"
        self.site.write_text(cluster_site(directory, self.port, upstream_ports))
        self.config = directory / "nginx.conf"
        # worker_shutdown_timeout is a main-context directive: first, before main_config's.
        self.config.write_text(f"worker_shutdown_timeout {SHUTDOWN_TIMEOUT};\n"
                               + main_config(directory, self.site))
        self.error_log = directory / "error.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.reloads = 0

    def __enter__(self) -> NginxFront:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> NginxFront:
        check_config(self.config, self.directory)
        self.process = subprocess.Popen(
            [nginx_binary(), "-c", str(self.config), "-p", f"{self.directory}/",
             "-e", str(self.error_log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.error_log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not listen within 10 s")

    def stop(self) -> None:
        """SIGTERM to the master it started (fast shutdown: open connections are cut)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def sever(self) -> int:
        """Reload (SIGHUP, as ``nginx -s reload``): new workers take new connections, the old
        one closes its own within ``worker_shutdown_timeout``. :returns: 0 (nginx does not
        say how many it held)."""
        assert self.process is not None and self.process.poll() is None, "nginx is not running"
        self.process.send_signal(signal.SIGHUP)
        self.reloads += 1
        return 0


class NginxCluster(Cluster):
    """:class:`~tests.e2e.cluster.Cluster` with nginx as its front (:attr:`proxy`) instead of
    the TCP proxy."""

    def start(self) -> NginxCluster:
        nginx_binary()  # skip (or, in CI, fail) before starting anything
        super().start()
        assert self.proxy is not None
        self.proxy.stop()
        self.proxy = NginxFront(self.workdir / "nginx",  # type: ignore[assignment]
                                [host.port for host in self.hosts.values()]).start()
        return self


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with NginxCluster(tmp_path_factory.mktemp("nginx-cluster")) as cluster:
        yield cluster


def test_six_clients_see_the_same_log_while_nginx_reloads_every_300_ms(
        cluster: Cluster, tally: Tally) -> None:
    """2 SSE, 2 WebSocket and 2 long-poll clients through nginx, 12 turns, nginx reloaded every
    300 ms: each client gets ids 1..n once, identical to the log (test_cluster.py's scenario,
    whose ``sever()`` is here a reload)."""
    scenarios.test_six_clients_see_the_same_log_while_the_proxy_severs_every_300_ms(
        cluster, tally)
    front = cluster.proxy
    assert isinstance(front, NginxFront) and front.reloads >= 10, front
    assert front.process is not None and front.process.poll() is None, "nginx died"


def test_fifty_concurrent_answers_through_nginx_one_wins(cluster: Cluster, tally: Tally) -> None:
    """50 answers at once through nginx: 1 × 200, 49 × 409 ``already_resolved``, served by
    both hosts."""
    scenarios.test_fifty_concurrent_answers_one_wins_the_rest_get_already_resolved(
        cluster, tally)
