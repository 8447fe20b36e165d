"""Parsing of client-supplied numbers: event cursors, waits and limits.

Python's ``int()`` accepts ``" 7 "``, ``"+7"``, ``"1_000"`` and ``"٣"`` (Arabic-Indic three);
a cursor must be a plain ASCII decimal integer (DESIGN.md, SSE framing), so it is matched
against a regular expression first.
"""

from __future__ import annotations

import re

from tether.errors import BadRequest

_INTEGER = re.compile(r"(?:0|[1-9][0-9]{0,17})", re.ASCII)
_DECIMAL = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,12})?", re.ASCII)


def parse_cursor(value: str | None, name: str) -> int | None:
    """An event id cursor: None when absent, else an integer 0 <= n < 10**18.

    :raises BadRequest: anything but a plain ASCII decimal integer, naming ``name``.
    """
    if value is None:
        return None
    if not _INTEGER.fullmatch(value):
        raise BadRequest(f"{name} must be a non-negative decimal integer event id")
    return int(value)


def parse_seconds(value: str | None, name: str, default: float, maximum: float) -> float:
    """A duration in seconds (``0``, ``2``, ``0.5``), clamped to ``maximum``.

    :raises BadRequest: a negative, non-decimal, NaN or infinite value, naming ``name``.
    """
    if value is None or value == "":
        return default
    if not _DECIMAL.fullmatch(value):
        raise BadRequest(f"{name} must be a non-negative number of seconds (at most {maximum:g})")
    return min(float(value), maximum)


def parse_limit(value: str | None, name: str, default: int, maximum: int) -> int:
    """A positive count, clamped to ``maximum``.

    :raises BadRequest: anything but a plain decimal integer of at least 1.
    """
    if value is None or value == "":
        return default
    if not _INTEGER.fullmatch(value) or int(value) < 1:
        raise BadRequest(f"{name} must be a positive integer (at most {maximum})")
    return min(int(value), maximum)


def parse_flag(value: str | None, name: str) -> bool:
    """A boolean query parameter: ``1``/``true`` or ``0``/``false`` (absent or empty: false).

    :raises BadRequest: anything else, naming ``name``.
    """
    if value is None or value in ("", "0", "false"):
        return False
    if value in ("1", "true"):
        return True
    raise BadRequest(f"{name} must be 1, true, 0 or false")
