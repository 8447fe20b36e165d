"""What both stand-in agents share: the wire, the ``bench`` prompt and its stamped texts."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

OUT = sys.stdout.buffer


def write(message: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed at once (as the CLIs do)."""
    OUT.write(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
    OUT.flush()


def requests() -> Iterator[dict[str, Any]]:
    """The JSON objects on stdin, one a line, until it closes (a bad line is skipped)."""
    for line in sys.stdin.buffer:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict):
            yield message


def bench(text: str, delta: Callable[[str], dict[str, Any]]) -> tuple[int, str]:
    """Run the prompt ``text``: ``bench <count> <bytes> <rate>`` writes ``count`` messages
    ``delta(text)``, each text ``"<seq> <time.time()> "`` (taken right before the write)
    padded with ``x`` to ``bytes`` characters, ``rate`` a second on a fixed schedule (0: as
    fast as possible), as the local agent's ``bench`` command does (tether/agents/local.py).
    Anything else gets one short delta. Returns (deltas written, the message's text: a
    one-line summary for a bench, so a big run does not end in one huge event)."""
    args = text.split()
    try:
        count, size, rate = int(args[1]), int(args[2]), float(args[3])
        ok = len(args) == 4 and args[0] == "bench" and count > 0 and size > 0 and rate >= 0
    except (IndexError, ValueError):
        ok = False
    if not ok:
        write(delta("ok: say `bench <count> <bytes> <rate>`"))
        return 1, "ok"
    started = time.monotonic()
    for seq in range(count):
        wait = started + seq / rate - time.monotonic() if rate else 0
        if wait > 0:
            time.sleep(wait)
        head = f"{seq} {time.time():.6f} "
        write(delta(head + "x" * (size - len(head))))
    return count, f"bench: sent {count} of {count} text deltas of {size} characters."
