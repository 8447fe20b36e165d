"""The store's redis-py connection: its cheap idle check says what redis-py's says (idle,
a reply left unread, a connection the server closed), and a pool of them recovers from a
killed connection as redis-py's own does."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import redis

from tests.redis_server import RedisServer
from tether.stores.redis import _connection_class
from tether.stores.redis_connection import Connection

BOUND = 30


@pytest.fixture
def connection(redis_server: RedisServer) -> Iterator[Connection]:
    pool = redis.ConnectionPool.from_url(redis_server.url, connection_class=Connection,
                                         client_name="test-redis-connection")
    conn = pool.get_connection()
    assert isinstance(conn, Connection)
    yield conn
    pool.disconnect()


def test_an_idle_connection_has_nothing_to_read(connection: Connection) -> None:
    connection.send_command("PING")
    assert connection.read_response() == b"PONG"
    assert connection.can_read(0) is False


def test_a_reply_left_unread_is_seen(connection: Connection) -> None:
    connection.send_packed_command(connection.pack_commands([("PING",), ("PING",)]))
    assert connection.can_read(BOUND) is True  # waits for data (redis-py's own check)
    assert connection.can_read(0) is True  # the poll sees the bytes
    both = b"+PONG\r\n" * 2
    deadline = time.monotonic() + BOUND
    while connection._sock.recv(64, socket.MSG_PEEK) != both:  # both replies arrived
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert connection.read_response() == b"PONG"  # hiredis took both from the socket
    assert connection.can_read(0) is True  # the second is in the parser, not the socket
    assert connection.read_response() == b"PONG"
    assert connection.can_read(0) is False


def test_a_connection_the_server_closed_is_seen_and_the_pool_replaces_it(
        redis_server: RedisServer) -> None:
    pool = redis.BlockingConnectionPool.from_url(redis_server.url, max_connections=1,
                                                 client_name="test-killed",
                                                 **_connection_class(redis_server.url))
    client = redis.Redis(connection_pool=pool)
    try:
        assert client.ping()
        with redis_server.client() as admin:
            ids = [c["id"] for c in admin.client_list() if c["name"] == "test-killed"]
            assert len(ids) == 1
            admin.client_kill_filter(_id=ids[0])
        conn = pool.get_connection()  # ensure_connection: closed, so it reconnects
        try:
            assert conn.can_read(0) is False
        finally:
            pool.release(conn)
        assert client.set("test-redis-connection", "1") and client.delete(
            "test-redis-connection") == 1
    finally:
        pool.disconnect()


def test_plain_tcp_urls_get_the_cheap_check_and_others_keep_redis_pys_classes() -> None:
    assert _connection_class("redis://127.0.0.1:6379/0") == {"connection_class": Connection}
    assert _connection_class("rediss://example:6380/0") == {}
    assert _connection_class("unix:///run/redis.sock") == {}


def test_under_gevent_the_check_uses_the_poll_gevent_saved() -> None:
    """Run in a process of its own, patched as gunicorn's gevent worker patches it."""
    import subprocess
    import sys

    code = ("from gevent import monkey; monkey.patch_all()\n"
            "import select\n"
            "from tether.stores.redis_connection import real_poll\n"
            "assert select.poll is not monkey.get_original('select', 'poll')\n"
            "assert real_poll() is monkey.get_original('select', 'poll')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=BOUND)
    assert done.returncode == 0, done.stderr
