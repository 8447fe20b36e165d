"""The cluster tests' shared fixture: two workers of one cluster, in one process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisServer
from tests.tether.cluster.test_registry import Workers, settings_for, worker


@pytest.fixture
def workers(tmp_path: Path, redis_server: RedisServer, redis_prefix: str) -> Iterator[Workers]:
    """Two workers (``host:1:0``, ``host:2:0``) on the test's own key prefix."""
    settings = settings_for(tmp_path, redis_server, redis_prefix)
    a, b = worker(settings, "1"), worker(settings, "2")
    yield a, b
    for registry in (a, b):
        registry.shutdown()
