"""A round-robin TCP proxy for the cluster tests (tests/e2e/cluster.py): a load balancer with no
affinity, which the test owns and can break.

``RoundRobinProxy([port_a, port_b])`` listens on a free loopback port; each accepted connection
goes to the next backend in turn (skipping those taken out with :meth:`fail`, and those that
refuse the connection, as nginx's ``proxy_next_upstream error`` does), and stays on it: the
proxy reads no HTTP, so a keep-alive connection keeps its backend, and a new connection may land
anywhere. :meth:`sever` cuts every live connection at once (or one backend's), as a balancer
restart or a flaky network would: both peers see the connection end (FIN, then RST for what is
still unread).

Threads, like the other helpers here (the test process is not monkey-patched by gevent): one
accept loop, and two pump threads per connection, one per direction.
"""

from __future__ import annotations

import itertools
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType

Backend = tuple[str, int]


def _backend(spec: int | Backend) -> Backend:
    return ("127.0.0.1", spec) if isinstance(spec, int) else (spec[0], int(spec[1]))


@dataclass(eq=False)
class Link:
    """One proxied connection: the client's socket and the backend's."""

    backend: Backend
    client: socket.socket
    upstream: socket.socket
    #: The client's port as the proxy sees it (its peer), and the proxy's own port towards the
    #: backend: which backend worker holds the other end is found from it (/proc/net/tcp).
    client_port: int = 0
    upstream_port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pumps_done: int = 0
    cut: bool = False

    def sever(self) -> None:
        """End both sides now; the pump threads wake up, and the last one closes the sockets."""
        with self._lock:
            if self.cut:
                return
            self.cut = True
        for sock in (self.client, self.upstream):
            try:
                # Linger 0: the close after the pumps stop sends an RST rather than lingering.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class RoundRobinProxy:
    """``with RoundRobinProxy([8001, 8002]) as proxy: proxy.url``; or :meth:`start` / :meth:`stop`.

    :attr:`served` counts the connections given to each backend; :attr:`refused` those that got
    no backend (every one failed or refusing: the client's connection is closed at once).
    """

    def __init__(self, backends: list[int | Backend], host: str = "127.0.0.1") -> None:
        self.backends: list[Backend] = [_backend(b) for b in backends]
        if not self.backends:
            raise ValueError("a proxy needs at least one backend")
        self.host = host
        self.port = 0
        self.url = ""
        self.served: Counter[Backend] = Counter()
        self.refused = 0
        self._failed: set[Backend] = set()
        self._next = itertools.count()
        self._links: set[Link] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._acceptor: threading.Thread | None = None
        self._pumps: set[threading.Thread] = set()

    # -- life --------------------------------------------------------------------------------

    def __enter__(self) -> RoundRobinProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> RoundRobinProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(512)
        # The accept loop wakes up this often to see whether it should stop (closing a socket
        # does not wake a thread blocked in accept on Linux).
        listener.settimeout(0.2)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"
        self._stopping.clear()
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"rrproxy-{self.port}",
                                          daemon=True)
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut every connection, and wait for the threads."""
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(5)
            self._acceptor = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.sever()
        with self._lock:
            pumps = list(self._pumps)
        for pump in pumps:
            pump.join(5)

    # -- faults ------------------------------------------------------------------------------

    def sever(self, backend: int | Backend | None = None) -> int:
        """Cut every live connection (or only those to ``backend``); :returns: how many."""
        wanted = None if backend is None else _backend(backend)
        with self._lock:
            links = [link for link in self._links if wanted is None or link.backend == wanted]
        for link in links:
            link.sever()
        return len(links)

    def fail(self, backend: int | Backend) -> None:
        """Take ``backend`` out of the rotation: new connections skip it. Its live connections
        are left as they are (:meth:`sever` them too to cut them)."""
        backend = _backend(backend)
        if backend not in self.backends:
            raise ValueError(f"{backend} is not a backend of this proxy")
        with self._lock:
            self._failed.add(backend)

    def restore(self, backend: int | Backend) -> None:
        """Put ``backend`` back into the rotation."""
        with self._lock:
            self._failed.discard(_backend(backend))

    # -- what it did -------------------------------------------------------------------------

    def live(self) -> list[Link]:
        """The connections open now."""
        with self._lock:
            return [link for link in self._links if not link.cut]

    def link_of(self, client_port: int) -> Link | None:
        """The open connection whose client is on local port ``client_port``."""
        with self._lock:
            return next((link for link in self._links
                         if link.client_port == client_port and not link.cut), None)

    # -- the work ----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._connect(client)

    def _candidates(self) -> list[Backend]:
        """The backends to try for the next connection, in order: the next one in turn first,
        then the others, failed ones left out."""
        with self._lock:
            start = next(self._next) % len(self.backends)
            ordered = self.backends[start:] + self.backends[:start]
            return [b for b in ordered if b not in self._failed]

    def _connect(self, client: socket.socket) -> None:
        for backend in self._candidates():
            try:
                upstream = socket.create_connection(backend, timeout=2)
            except OSError:
                continue  # refused (a dead backend): the next one, as a balancer would
            upstream.settimeout(None)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = Link(backend, client, upstream, client_port=client.getpeername()[1],
                        upstream_port=upstream.getsockname()[1])
            with self._lock:
                self.served[backend] += 1
                self._links.add(link)
                pumps = [threading.Thread(target=self._pump, args=(link, src, dst), daemon=True,
                                          name=f"rrproxy-{self.port}-pump")
                         for src, dst in ((client, upstream), (upstream, client))]
                self._pumps.update(pumps)
            for pump in pumps:
                pump.start()
            return
        with self._lock:
            self.refused += 1
        client.close()

    def _pump(self, link: Link, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
            # A clean end of one direction (a FIN): pass it on, keep the other direction going
            # until it ends too (HTTP's keep-alive close, a half-closed client).
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            link.sever()  # a reset on either side ends both
        with link._lock:
            link._pumps_done += 1
            last = link._pumps_done == 2
        if last:
            link.client.close()
            link.upstream.close()
            with self._lock:
                self._links.discard(link)
                self._pumps.discard(threading.current_thread())
        else:
            with self._lock:
                self._pumps.discard(threading.current_thread())
