"""Drain a host of the cluster before stopping it, so that no turn is interrupted.

``python -m tether.cluster.drain [HOST] [--wait [--timeout S]] [--undo] [--status]``, with
the server's environment (``TETHER_REDIS_URL``, ``TETHER_REDIS_PREFIX``; ``HOST`` defaults to
``TETHER_HOST_ID``, this machine's name).

A drained host's workers claim no session: a prompt they are asked for starts on a live
worker of another host (the ``own`` control of ``begin_turn``, which that worker acts on).
Each session they own is given up as soon as no turn runs in it, so its next turn is
claimed elsewhere and resumes the agent's conversation there. The turns running when the
drain begins run to their end. Workers read the drain at every heartbeat
(``TETHER_HEARTBEAT_SECONDS``). With ``--wait`` this command returns once the host's workers
own no session: then stopping it interrupts nothing. Streams and WebSockets its workers
serve stay open until it stops; clients then reconnect through the balancer, exactly from
their cursors.

Exit status: 0 done (drained, with ``--wait``); 1 not drained within ``--timeout``; 2 bad
arguments or settings, or Redis unreachable.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import redis

from tether.cluster.membership import draining_key
from tether.config import Settings
from tether.workers import host_of

#: Seconds between two looks at the host's sessions with ``--wait``.
WAIT_POLL_SECONDS = 1.0


def owned_by_worker(client: redis.Redis, prefix: str) -> dict[str, int]:
    """``{worker id: sessions it owns}`` for every registered worker, live or dead."""
    wids = sorted(w.decode() for w in client.smembers(f"{prefix}:workers"))
    pipe = client.pipeline(transaction=False)
    for wid in wids:
        pipe.scard(f"{prefix}:w:{wid}:owned")
    return dict(zip(wids, (int(n) for n in pipe.execute()), strict=True))


def owned_by_host(client: redis.Redis, prefix: str, host_id: str) -> int:
    """How many sessions the live and dead workers of ``host_id`` still own."""
    return sum(n for wid, n in owned_by_worker(client, prefix).items()
               if host_of(wid) == host_id)


def hosts(client: redis.Redis, prefix: str) -> dict[str, tuple[int, int, bool]]:
    """Every host with a registered worker, or drained: ``{host: (workers, sessions owned,
    draining)}``."""
    owned = owned_by_worker(client, prefix)
    drained = {h.decode() for h in client.smembers(draining_key(prefix))}
    names = sorted({host_of(w) for w in owned} | drained)
    return {name: (sum(1 for w in owned if host_of(w) == name),
                   sum(n for w, n in owned.items() if host_of(w) == name), name in drained)
            for name in names}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tether.cluster.drain",
        description="Drain a Tether host (TETHER_STORE=redis) so that stopping it interrupts "
                    "no turn.")
    parser.add_argument("host", nargs="?", help="the host's TETHER_HOST_ID (default: this "
                        "machine's, as the server would take it)")
    parser.add_argument("--wait", action="store_true",
                        help="return once the host's workers own no session")
    parser.add_argument("--timeout", type=float, default=0.0, metavar="SECONDS",
                        help="with --wait: give up after this long (exit 1); 0 waits for good")
    parser.add_argument("--undo", action="store_true",
                        help="stop draining the host: its workers claim sessions again")
    parser.add_argument("--status", action="store_true",
                        help="list the hosts, their workers and sessions, and which drain")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if settings.store != "redis":
        print("draining is for a cluster: set TETHER_STORE=redis (and TETHER_REDIS_URL) as "
              "the server has them", file=sys.stderr)
        return 2
    host = options.host or settings.host_id
    prefix = settings.redis_prefix
    client = redis.Redis.from_url(settings.redis_url.get_secret_value(),
                                  socket_timeout=5, socket_connect_timeout=5)
    try:
        return run(client, prefix, host, options)
    except redis.RedisError as exc:
        print(f"the Redis store does not answer (TETHER_REDIS_URL): {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()


def run(client: redis.Redis, prefix: str, host: str, options: argparse.Namespace) -> int:
    if options.status:
        for name, (workers, owned, draining) in hosts(client, prefix).items():
            state = "draining" if draining else "serving"
            print(f"{name}: {state}, {workers} worker(s), {owned} session(s) owned")
        return 0
    if options.undo:
        client.srem(draining_key(prefix), host)
        print(f"{host}: serving (no longer drained)")
        return 0
    client.sadd(draining_key(prefix), host)
    owned = owned_by_host(client, prefix, host)
    print(f"{host}: draining, {owned} session(s) owned")
    if not options.wait:
        return 0
    deadline = time.monotonic() + options.timeout if options.timeout > 0 else None
    while owned:
        if deadline is not None and time.monotonic() > deadline:
            print(f"{host}: still owns {owned} session(s) after {options.timeout:g} s",
                  file=sys.stderr)
            return 1
        time.sleep(WAIT_POLL_SECONDS)
        owned = owned_by_host(client, prefix, host)
    print(f"{host}: drained (owns no session): stopping it interrupts no turn")
    return 0


if __name__ == "__main__":
    sys.exit(main())
