"""Cursor, wait and limit parsing, property-based.

The contract (DESIGN.md, "SSE framing"; docs/protocol.md):

- ``parse_cursor`` accepts exactly the ASCII strings matching ``^(0|[1-9][0-9]{0,17})$``,
  returning ``int(s)``; it refuses everything else, including what Python's ``int()`` takes
  (``" 7 "``, ``"+7"``, ``"1_000"``, ``"٣"``), with a :class:`BadRequest` naming the parameter.
- ``parse_seconds`` accepts ASCII ``D{1,6}`` or ``D{1,6}.D{1,12}`` and clamps to its maximum
  (so 10**5 seconds is clamped; 10**6, seven digits, is refused); no sign, exponent, NaN or inf.
- ``parse_limit`` accepts a cursor-shaped integer of at least 1 and clamps to its maximum.

Each parser is checked against an oracle written without regular expressions.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tether.cursor import parse_cursor, parse_flag, parse_limit, parse_seconds
from tether.errors import BadRequest

SETTINGS = settings(deadline=None, max_examples=400)
ASCII_DIGITS = "0123456789"

#: Strings near the boundary: digits (ASCII and not), signs, spaces, separators, controls.
TRICKY = st.lists(st.sampled_from([
    *ASCII_DIGITS, "0", "00", "1", "9" * 18, "1" + "0" * 17, "-", "+", " ", "\t", "_", ".", "e",
    "E", "x", "0x", "\x00", "\r", "\n", "\r\n", "\u0663", "\uff11", "\u0967", "\u00b2",
    "\U0001d7ce", "\u2007", "\ufeff", "NaN", "inf", "Infinity",
]), max_size=8).map("".join)
CURSOR_LIKE = st.from_regex(r"\A(?:0|[1-9][0-9]{0,17})\Z", fullmatch=True)
#: Decimal digits of every script (Nd), mixed with ASCII ones: int() takes them all.
ANY_DIGITS = st.text(st.one_of(st.sampled_from(ASCII_DIGITS), st.characters(categories=["Nd"])),
                     min_size=1, max_size=20)
ANY = st.one_of(st.text(), TRICKY, ANY_DIGITS, CURSOR_LIKE, CURSOR_LIKE.map(lambda s: s + "\n"),
                CURSOR_LIKE.map(lambda s: " " + s), st.integers().map(str))
NAMES = st.sampled_from(["after", "Last-Event-ID", "inbox", "limit", "wait"])


def is_cursor(value: str) -> bool:
    """The oracle: ``^(0|[1-9][0-9]{0,17})$`` over ASCII, spelled out."""
    if not 1 <= len(value) <= 18 or any(c not in ASCII_DIGITS for c in value):
        return False
    return value == "0" or value[0] != "0"


def is_seconds(value: str) -> bool:
    whole, dot, fraction = value.partition(".")
    if not 1 <= len(whole) <= 6 or any(c not in ASCII_DIGITS for c in whole):
        return False
    return not dot or (1 <= len(fraction) <= 12 and all(c in ASCII_DIGITS for c in fraction))


def refused(call, name: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadRequest) as info:
        call()
    assert name in info.value.message and info.value.code == "bad_request"


# -- parse_cursor ----------------------------------------------------------------------------

@SETTINGS
@given(value=ANY, name=NAMES)
@example(value="\u0663", name="after")
@example(value="1\u0663", name="after")
@example(value="\uff11", name="after")
@example(value="+7", name="after")
@example(value=" 7 ", name="after")
@example(value="1_000", name="after")
@example(value="0x10", name="after")
@example(value="1e3", name="after")
@example(value="", name="after")
@example(value="7\x00", name="after")
@example(value="7\r", name="after")
@example(value="7\n", name="after")
@example(value="07", name="after")
@example(value="-0", name="after")
@example(value="1" * 10_000, name="after")
@example(value="9" * 18, name="after")
@example(value="1" + "0" * 18, name="after")
def test_parse_cursor_accepts_exactly_plain_ascii_decimals(value: str, name: str) -> None:
    if is_cursor(value):
        assert parse_cursor(value, name) == int(value)
    else:
        refused(lambda: parse_cursor(value, name), name)


@SETTINGS
@given(n=st.integers(0, 10**18 - 1))
@example(n=0)
@example(n=10**18 - 1)
def test_every_cursor_round_trips_through_str(n: int) -> None:
    assert parse_cursor(str(n), "after") == n


@SETTINGS
@given(n=st.one_of(st.integers(max_value=-1), st.integers(min_value=10**18)))
@example(n=-1)
@example(n=10**18)
@example(n=10**23)
def test_out_of_range_cursors_are_refused(n: int) -> None:
    refused(lambda: parse_cursor(str(n), "Last-Event-ID"), "Last-Event-ID")


def test_absent_cursor_is_none() -> None:
    assert parse_cursor(None, "after") is None


# -- parse_seconds ---------------------------------------------------------------------------

MAXIMA = st.sampled_from([0.5, 1.0, 30.0, 60.0, 3600.0])
SECONDS_LIKE = st.from_regex(r"\A[0-9]{1,6}(?:\.[0-9]{1,12})?\Z", fullmatch=True)
FLOAT_TEXT = st.floats(allow_nan=True, allow_infinity=True).map(repr)


@SETTINGS
@given(value=st.one_of(ANY, SECONDS_LIKE, FLOAT_TEXT), maximum=MAXIMA)
@example(value="-5", maximum=60.0)
@example(value="NaN", maximum=60.0)
@example(value="nan", maximum=60.0)
@example(value="inf", maximum=60.0)
@example(value="-inf", maximum=60.0)
@example(value="1e309", maximum=60.0)
@example(value="1e3", maximum=60.0)
@example(value="100000", maximum=60.0)
@example(value="1000000", maximum=60.0)
@example(value="0.000000000001", maximum=60.0)
@example(value="1.", maximum=60.0)
@example(value=".5", maximum=60.0)
@example(value=" 1", maximum=60.0)
@example(value="\u0663", maximum=60.0)
def test_parse_seconds_accepts_plain_decimals_and_clamps(value: str, maximum: float) -> None:
    if value == "":
        assert parse_seconds(value, "wait", 7.0, maximum) == 7.0
    elif is_seconds(value):
        got = parse_seconds(value, "wait", 7.0, maximum)
        assert got == min(float(value), maximum)
        assert math.isfinite(got) and 0 <= got <= maximum
    else:
        refused(lambda: parse_seconds(value, "wait", 7.0, maximum), "wait")


@SETTINGS
@given(whole=st.integers(0, 999_999), maximum=MAXIMA)
def test_large_waits_are_clamped_to_the_maximum(whole: int, maximum: float) -> None:
    assert parse_seconds(str(whole), "wait", 0.0, maximum) == min(float(whole), maximum)
    assert parse_seconds(str(10**5), "wait", 0.0, maximum) == maximum


def test_absent_seconds_use_the_default() -> None:
    assert parse_seconds(None, "wait", 5.0, 60.0) == 5.0


# -- parse_limit -----------------------------------------------------------------------------

@SETTINGS
@given(value=ANY, maximum=st.integers(1, 10_000))
@example(value="0", maximum=1000)
@example(value="-5", maximum=1000)
@example(value="NaN", maximum=1000)
@example(value="inf", maximum=1000)
@example(value="1e309", maximum=1000)
@example(value="100000", maximum=1000)
@example(value="1" + "0" * 23, maximum=1000)
def test_parse_limit_accepts_positive_integers_and_clamps(value: str, maximum: int) -> None:
    if value == "":
        assert parse_limit(value, "limit", 42, maximum) == 42
    elif is_cursor(value) and int(value) >= 1:
        got = parse_limit(value, "limit", 42, maximum)
        assert got == min(int(value), maximum) and 1 <= got <= maximum
    else:
        refused(lambda: parse_limit(value, "limit", 42, maximum), "limit")


@SETTINGS
@given(n=st.integers(1, 10**18 - 1), maximum=st.integers(1, 10_000))
def test_every_positive_limit_is_clamped(n: int, maximum: int) -> None:
    assert parse_limit(str(n), "limit", 1, maximum) == min(n, maximum)


# -- parse_flag ------------------------------------------------------------------------------

@SETTINGS
@given(value=st.one_of(st.none(), st.text(max_size=6),
                       st.sampled_from(["", "0", "1", "true", "false", "True", "TRUE", "yes",
                                        " 1", "1 ", "\u0661"])))
def test_parse_flag_accepts_exactly_four_spellings(value: str | None) -> None:
    if value in (None, "", "0", "false"):
        assert parse_flag(value, "inbox") is False
    elif value in ("1", "true"):
        assert parse_flag(value, "inbox") is True
    else:
        refused(lambda: parse_flag(value, "inbox"), "inbox")
