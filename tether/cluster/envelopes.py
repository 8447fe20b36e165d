"""Event bytes for the Redis Functions, built exactly as :func:`tether.events.make_event`
builds them, so that an event appended by a function is byte for byte what any other store
would hold (DESIGN.md rule 3). The functions put ``{"id":N`` in front; where a number only
the function knows goes into the event (a turn number, a queue position), it is written
between a head and a tail (:func:`template`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tether.events import make_event

_ID0 = b'{"id":0'
#: Stands for the number a function fills in; never a real turn or position.
HOLE = 9_007_199_254_740_991


def rest(session_id: str, ts: float, kind: str, payload: Mapping[str, Any]) -> bytes:
    """The envelope after ``{"id":N``: ``,"session_id":…,"ts":…,"kind":…,…payload}``.

    :raises ValueError: as :func:`~tether.events.make_event` (unknown kind, NaN …).
    """
    return make_event(0, session_id, ts, kind, payload).data[len(_ID0):]


def template(session_id: str, ts: float, kind: str,
             payload: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """:func:`rest` split where :data:`HOLE` stands in ``payload``: ``(head, tail)``, so
    that ``head + b"7" + tail`` is the event with 7 there. The hole must come before any
    free text in the payload's order (its first occurrence is the one split at).
    """
    head, found, tail = rest(session_id, ts, kind, payload).partition(b"%d" % HOLE)
    if not found:
        raise ValueError("the payload has no HOLE")
    return head, tail
