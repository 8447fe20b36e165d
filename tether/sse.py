"""Server-Sent Events framing, pure bytes (WHATWG HTML, "Server-sent events", section 9.2).

Event data is Tether's JSON, which never holds a raw CR or LF (``events.encode`` escapes them),
but :func:`frame` still splits any data on every line ending the spec knows (CRLF, CR, LF), so
no input can end a field early. Ids and event names have CR and LF removed, and an id never
holds NUL (the spec ignores such an id).
"""

from __future__ import annotations

import json
import re
from typing import Any

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_FIELD_UNSAFE = re.compile(r"[\r\n\x00]")


def _clean(value: str) -> bytes:
    return _FIELD_UNSAFE.sub("", value).encode("utf-8")


def _data_lines(data: bytes) -> bytes:
    return b"".join(b"data: " + line + b"\n" for line in _LINE_BREAK.split(data))


def frame(data: bytes, event_id: int | str | None = None, event: str | None = None) -> bytes:
    """One event: optional ``id:`` and ``event:`` lines, ``data:`` lines, a blank line."""
    out = b""
    if event_id is not None:
        out += b"id: " + _clean(str(event_id)) + b"\n"
    if event is not None:
        out += b"event: " + _clean(event) + b"\n"
    return out + _data_lines(data) + b"\n"


def event_frame(event_id: int, data: bytes) -> bytes:
    """One log event: ``id: N``, one ``data:`` line, a blank line.

    The fast path of :func:`frame` for what :func:`tether.events.encode` produced: compact JSON
    with ``ensure_ascii``, which never holds a CR or LF, so there is nothing to split (it runs
    once per event per client: a regex split there was most of a fan-out's time).
    """
    return b"id: %d\ndata: %s\n\n" % (event_id, data)


def named(event: str, payload: Any) -> bytes:
    """A named event (``caught-up``, ``reset``, ``ping``) with a JSON payload and no id.

    :raises ValueError: NaN or infinity in ``payload`` (not JSON; a browser's ``JSON.parse``
        refuses them).
    """
    return frame(json.dumps(payload, separators=(",", ":"), allow_nan=False).encode(),
                 event=event)


def retry(milliseconds: int) -> bytes:
    """The reconnection delay a browser's EventSource should use."""
    return b"retry: " + str(int(milliseconds)).encode() + b"\n\n"


def comment(text: str = "") -> bytes:
    """A comment line: ignored by parsers, keeps proxies from timing the stream out."""
    return b": " + _clean(text) + b"\n\n"
