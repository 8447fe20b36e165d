"""Cursor, wait and limit parsing: plain ASCII decimals only."""

from __future__ import annotations

import pytest

from tether.cursor import parse_cursor, parse_limit, parse_seconds
from tether.errors import BadRequest


@pytest.mark.parametrize("value, expected", [(None, None), ("0", 0), ("7", 7),
                                             ("123456789", 123456789)])
def test_valid_cursors(value: str | None, expected: int | None) -> None:
    assert parse_cursor(value, "after") == expected


@pytest.mark.parametrize("value", ["", "abc", "-1", "1.5", "0x10", "1e3", "+7", " 7 ", "\u0663",
                                   "07", "1_000", "7\x00", "7\n", "1" * 30, "9" * 10_000])
def test_invalid_cursors_are_bad_requests_naming_the_field(value: str) -> None:
    with pytest.raises(BadRequest, match="Last-Event-ID"):
        parse_cursor(value, "Last-Event-ID")


@pytest.mark.parametrize("value, expected", [(None, 5.0), ("", 5.0), ("0", 0.0), ("2", 2.0),
                                             ("0.5", 0.5), ("100000", 60.0)])
def test_seconds_are_clamped(value: str | None, expected: float) -> None:
    assert parse_seconds(value, "wait", 5.0, 60.0) == expected


@pytest.mark.parametrize("value", ["-5", "NaN", "inf", "1e309", "abc", "1.", ".5"])
def test_invalid_seconds(value: str) -> None:
    with pytest.raises(BadRequest, match="wait"):
        parse_seconds(value, "wait", 0.0, 60.0)


def test_limits() -> None:
    assert parse_limit(None, "limit", 500, 1000) == 500
    assert parse_limit("100000", "limit", 500, 1000) == 1000
    for bad in ("0", "-1", "1.5", "x"):
        with pytest.raises(BadRequest, match="limit"):
            parse_limit(bad, "limit", 500, 1000)
