"""What the durable stores cost: append throughput and replay time, memory against SQLite
(and Redis).

Appends ``--events`` events (a streamed word, ``text_delta``, the commonest kind) to one
session's log, in each store, ``--repeats`` times, and keeps the best run; then times
``read_after(0)`` of ``--replay`` events (a client replaying a whole long session), for SQLite
and Redis from a reopened store, so the events come from the file or the server, not from
memory. The baseline is the in-memory store, measured in the same sitting. SQLite runs as
``TETHER_STORE=sqlite`` does: WAL mode, ``synchronous=NORMAL``, one commit per append, in a
temporary directory. ``--store redis`` adds the Redis store (tether/stores/redis.py: one
Redis Function call per append, its wake reader running) on a private ``redis-server`` (a
free loopback port, a temporary directory, AOF on; bench/cluster.py), and the appends spread
over 100 logs by 10 threads, as a worker's greenlets make them for many sessions at once.

    .venv/bin/python -m bench.store [--events 20000] [--replay 100000] [--repeats 3]
    .venv/bin/python -m bench.store --store redis

Prints a table, the ratios, then one JSON line of figures (events per second, seconds).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tether.stores.base import Store
from tether.stores.memory import MemoryStore
from tether.stores.sqlite import DB_NAME, SqliteStore

PAYLOAD = {"text": "word ", "index": 0}


def append_rate(make: Callable[[], Store], events: int, repeats: int) -> float:
    """Best appends per second over ``repeats`` fresh logs of ``events`` events."""
    best = float("inf")
    for run in range(repeats):
        store = make()
        log = store.create_log(f"append-{run}")
        started = time.perf_counter()
        for _ in range(events):
            log.append("text_delta", PAYLOAD)
        best = min(best, time.perf_counter() - started)
        store.close()
    return events / best


def append_rate_many(make: Callable[[], Store], events: int, logs: int,
                     threads: int = 1) -> float:
    """Appends per second of ``events`` events spread over ``logs`` logs of one fresh store
    (one run), by ``threads`` threads, each appending round-robin to its own share of the
    logs: many sessions streaming at once in one process, as a worker's greenlets do."""
    store = make()
    opened = [store.create_log(f"many-{i}") for i in range(logs)]
    shares = [opened[t::threads] for t in range(threads)]

    def work(mine: list[Any], count: int) -> None:
        for i in range(count):
            mine[i % len(mine)].append("text_delta", PAYLOAD)

    workers = [threading.Thread(target=work, args=(shares[t], events // threads))
               for t in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - started
    store.close()
    return events // threads * threads / seconds


def replay_seconds(store: Store, reopen: Callable[[], Store], events: int,
                   repeats: int) -> tuple[float, Store]:
    """Best seconds for ``read_after(0)`` of a log of ``events`` events, read from a store
    that ``reopen`` gives after the first one wrote it."""
    log = store.create_log("replay")
    for _ in range(events):
        log.append("text_delta", PAYLOAD)
    store = reopen()
    best = float("inf")
    for _ in range(repeats):
        log = store.open_log("replay")
        started = time.perf_counter()
        got = log.read_after(0)
        best = min(best, time.perf_counter() - started)
        assert len(got) == events and got[-1].id == events
    return best, store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="appends per run")
    parser.add_argument("--replay", type=int, default=100_000, help="events replayed")
    parser.add_argument("--repeats", type=int, default=3, help="runs; the best is kept")
    parser.add_argument("--store", choices=("sqlite", "redis"), default="sqlite",
                        help="redis: the Redis store too, on a private redis-server")
    args = parser.parse_args()
    if not (0 < args.events <= 1_000_000 and 0 < args.replay <= 1_000_000
            and 0 < args.repeats <= 20):
        parser.error("--events and --replay must be in 1..1000000, --repeats in 1..20")

    with tempfile.TemporaryDirectory(prefix="tether-bench-store-") as tmp:
        root = Path(tmp)
        counter = iter(range(1_000_000))

        def fresh_sqlite() -> SqliteStore:
            return SqliteStore(root / f"append-{next(counter)}" / DB_NAME)

        memory_rate = append_rate(MemoryStore, args.events, args.repeats)
        sqlite_rate = append_rate(fresh_sqlite, args.events, args.repeats)

        memory = MemoryStore()
        memory_replay, memory = replay_seconds(memory, lambda: memory, args.replay,
                                               args.repeats)
        memory.close()
        path = root / "replay" / DB_NAME
        first = SqliteStore(path)

        def reopen() -> SqliteStore:
            first.close()
            return SqliteStore(path)

        sqlite_replay, reopened = replay_seconds(first, reopen, args.replay, args.repeats)
        reopened.close()
        size = path.stat().st_size
        redis_figures = redis_rates(args, root) if args.store == "redis" else None

    figures = {
        "events": args.events, "replay_events": args.replay, "repeats": args.repeats,
        "append_per_s": {"memory": round(memory_rate), "sqlite": round(sqlite_rate)},
        "append_ratio_sqlite_to_memory": round(sqlite_rate / memory_rate, 4),
        "append_us": {"memory": round(1e6 / memory_rate, 2), "sqlite": round(1e6 / sqlite_rate, 2)},
        "replay_s": {"memory": round(memory_replay, 4), "sqlite": round(sqlite_replay, 4)},
        "replay_ratio_sqlite_to_memory": round(sqlite_replay / memory_replay, 2),
        "sqlite_bytes_per_event": round(size / args.replay, 1),
    }
    print(f"{'store':<8} {'append/s':>12} {'µs/append':>10} {'replay ' + str(args.replay):>16}")
    for name in ("memory", "sqlite"):
        print(f"{name:<8} {figures['append_per_s'][name]:>12,} {figures['append_us'][name]:>10}"
              f" {figures['replay_s'][name]:>14.3f} s")
    if redis_figures is not None:
        figures["redis"] = redis_figures
        print(f"{'redis':<8} {redis_figures['append_per_s']:>12,} "
              f"{round(1e6 / redis_figures['append_per_s'], 2):>10}"
              f" {redis_figures['replay_s']:>14.3f} s")
        many = redis_figures["append_many_per_s"]
        print(f"100 logs, 10 threads: memory {many['memory']:,}/s, redis {many['redis']:,}/s")
    print(f"append: sqlite runs at {figures['append_ratio_sqlite_to_memory']:.1%} of memory's "
          f"rate; replay: sqlite takes {figures['replay_ratio_sqlite_to_memory']}x memory's time "
          f"({figures['sqlite_bytes_per_event']} bytes per event on disk)")
    if redis_figures is not None:
        print(f"append: redis runs at {redis_figures['append_per_s'] / memory_rate:.1%} of "
              f"memory's rate; replay: redis takes "
              f"{redis_figures['replay_s'] / memory_replay:.2f}x memory's time")
    print(json.dumps(figures))


def redis_rates(args: argparse.Namespace, root: Path) -> dict[str, object]:
    """The Redis store's figures on a private redis-server: best append rate over
    ``--repeats`` fresh logs, the rate over 100 logs by 10 threads (memory's beside it), and
    the replay from
    a reopened store (nothing in its memory)."""
    from bench.cluster import private_redis
    from tether.stores.redis import RedisStore

    with private_redis(root / "redis") as server:
        counter = iter(range(1_000_000))

        def fresh() -> RedisStore:
            return RedisStore(server.url, prefix=f"bench-store-{next(counter)}")

        rate = append_rate(fresh, args.events, args.repeats)
        many = {"memory": round(append_rate_many(MemoryStore, args.events, 100, 10)),
                "redis": round(append_rate_many(fresh, args.events, 100, 10))}
        prefix = f"bench-store-{next(counter)}"
        first = RedisStore(server.url, prefix=prefix)

        def reopen() -> RedisStore:
            first.close()
            return RedisStore(server.url, prefix=prefix)

        replay, reopened = replay_seconds(first, reopen, args.replay, args.repeats)
        reopened.close()
        used = int(server.client().info("memory")["used_memory"])
    return {"append_per_s": round(rate), "append_many_per_s": many,
            "replay_s": round(replay, 4), "redis_used_memory_bytes": used}


if __name__ == "__main__":
    main()
