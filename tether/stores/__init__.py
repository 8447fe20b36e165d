"""Event stores: where session logs and records live. ``memory`` is the default (one process,
nothing survives it); ``sqlite`` keeps everything in ``<TETHER_DATA_DIR>/tether.sqlite3``;
``redis`` keeps everything in the Redis at ``TETHER_REDIS_URL``, shared by every process that
opens it."""

from __future__ import annotations

import time
from collections.abc import Callable

from tether.config import Settings
from tether.stores.base import Store


def open_store(settings: Settings, clock: Callable[[], float] = time.time) -> Store:
    """The store ``TETHER_STORE`` names, under ``TETHER_DATA_DIR`` (or in Redis).

    :raises tether.stores.sqlite.StoreInUse: another server has the SQLite store open.
    :raises redis.exceptions.ConnectionError: ``TETHER_STORE=redis`` and Redis is unreachable.
    """
    if settings.store == "redis":
        from tether.stores.redis import RedisStore

        return RedisStore(settings.redis_url.get_secret_value(), settings.redis_prefix, clock)
    if settings.store == "sqlite":
        from tether.stores.sqlite import DB_NAME, SqliteStore

        return SqliteStore(settings.data_dir / DB_NAME, clock)
    from tether.stores.memory import MemoryStore

    return MemoryStore(clock)
