"""This worker's identity in a cluster of Tether workers (``TETHER_STORE=redis``).

A worker id is ``<TETHER_HOST_ID>:<pid>:<6 hex digits>``: the host and process make it
readable (and let gunicorn's master find its own dead workers, :func:`ids_of_process`),
the random part makes it new on every start, so an id is never reused even when a pid is.
"""

from __future__ import annotations

import os
import secrets
import threading

_lock = threading.Lock()
_ids: dict[tuple[str, int], str] = {}


def worker_id(host_id: str) -> str:
    """This process's worker id on host ``host_id`` (the same for every call in one process;
    a forked child gets its own)."""
    key = (host_id, os.getpid())
    with _lock:
        wid = _ids.get(key)
        if wid is None:
            wid = _ids[key] = f"{host_id}:{key[1]}:{secrets.token_hex(3)}"
        return wid


def host_of(wid: str) -> str:
    """The ``TETHER_HOST_ID`` part of worker id ``wid``."""
    return wid.rsplit(":", 2)[0]


def renamed(wid: str) -> str:
    """A fresh id for the same process (a worker that was declared dead registers again
    under a new id: the old one's sessions were taken over)."""
    host_id, pid, _ = wid.rsplit(":", 2)
    fresh = f"{host_id}:{pid}:{secrets.token_hex(3)}"
    with _lock:
        _ids[(host_id, int(pid))] = fresh
    return fresh


def ids_of_process(wids: list[str], host_id: str, pid: int) -> list[str]:
    """Those of ``wids`` that process ``pid`` on ``host_id`` registered."""
    prefix = f"{host_id}:{pid}:"
    return [wid for wid in wids if wid.startswith(prefix)]

