"""SSE framing, property-based: anything framed by :mod:`tether.sse` parses back exactly.

What round-trips (WHATWG HTML, "Server-sent events", 9.2.6 "Interpreting an event stream"):

- **data**: the parser splits the stream into lines on CRLF, CR and LF, and joins the values of
  an event's ``data:`` lines with LF. :func:`tether.sse.frame` splits its data on those same
  three line endings, one ``data:`` line per piece. So the data a client sees is the UTF-8
  decoding of the framed bytes with *every line ending normalized to LF* (``"a\\r\\nb\\rc"``
  comes back as ``"a\\nb\\nc"``); everything else (a BOM inside the data, U+2028/2029, C0/C1
  controls, NUL, a leading space, a colon) comes back unchanged. Bytes that are not UTF-8
  (how a lone surrogate would travel, encoded with ``surrogatepass``) come back as U+FFFD, per
  the spec's "UTF-8 decode", which Python's ``errors="replace"`` implements to the letter
  (maximal subparts).
- **id**: ``str(event_id)`` with CR, LF and NUL removed, as the event's ``lastEventId``; it
  persists for the following events that carry no ``id:`` line (spec: the "last event ID
  buffer" is never reset by a dispatch).
- **event name**: the name with CR, LF and NUL removed; an empty one reads as ``message``.
- ``retry(ms)`` sets the reconnection time; ``comment()`` changes nothing.

Two parsers read the bytes: sseclient-py (a real client library) and :class:`SpecParser`, a
small line-for-line transcription of the WHATWG algorithm, because sseclient-py deviates from
the spec in ways that do not matter for Tether's own frames but would hide bugs if it were the
only judge:

1. It decodes strictly (``bytes.decode("utf-8")``): bytes that are not UTF-8 raise
   ``UnicodeDecodeError`` where the spec substitutes U+FFFD. It is only fed valid UTF-8 here.
2. It does not strip a BOM at the start of the stream: the first field name becomes
   ``"\\ufeffid"`` and is ignored.
3. It finds the end of an event by ``endswith((b"\\r\\r", b"\\n\\n", b"\\r\\n\\r\\n"))``, so a blank
   line after mixed line endings (``b"data: a\\n\\r\\n"``, ``b"data: a\\n\\r"``) does not end
   the event.
4. It dispatches an event the stream ended in the middle of; the spec discards it.
5. Its ``Event.id`` is only the id of that event's own ``id:`` line (None otherwise), not the
   persistent ``lastEventId``.

(All five checked against sseclient-py 1.9.0.) Tether's frames never hit 2, 3 or 4 (they hold
only LF line endings, start with a field name and always end with a blank line), so both
parsers must agree on them exactly, ids compared as in 5. :func:`tether.sse.frame` never
writes a CR, so "a chunk boundary between CR and LF" is exercised on the reference parser's
own spec cases, cut at every place.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sseclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether import sse
from tether.events import make_event

SETTINGS = settings(deadline=None, max_examples=300,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LONG = settings(deadline=None, max_examples=20,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- a spec-exact reference parser -----------------------------------------------------------

_EOL = re.compile(r"[\r\n]")


@dataclass
class SpecEvent:
    type: str
    data: str
    last_event_id: str


@dataclass
class SpecParser:
    """WHATWG HTML 9.2.6, fed bytes in arbitrary chunks.

    The stream is decoded with "UTF-8 decode" (a leading BOM stripped, errors replaced), then
    split into lines on CRLF, LF or CR: a CR ends its line at once, and an LF right after it
    (possibly in the next chunk) is swallowed.
    """

    events: list[SpecEvent] = field(default_factory=list)
    reconnection_time: int | None = None
    last_event_id: str = ""
    _data: str = ""
    _type: str = ""
    _line: str = ""
    _skip_lf: bool = False

    def __post_init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")

    def feed(self, chunk: bytes) -> None:
        self._text(self._decoder.decode(chunk))

    def end(self) -> list[SpecEvent]:
        self._text(self._decoder.decode(b"", final=True))
        # End of stream: a pending line and a pending (undispatched) event are discarded.
        return self.events

    def _text(self, text: str) -> None:
        pos = 0
        if self._skip_lf and text:
            self._skip_lf = False
            if text[0] == "\n":
                pos = 1
        while True:
            match = _EOL.search(text, pos)
            if match is None:
                self._line += text[pos:]
                return
            self._process_line(self._line + text[pos:match.start()])
            self._line = ""
            pos = match.end()
            if match.group() == "\r":
                if pos == len(text):
                    self._skip_lf = True  # the LF of a CRLF may come in the next chunk
                    return
                if text[pos] == "\n":
                    pos += 1

    def _process_line(self, line: str) -> None:
        if line == "":
            self._dispatch()
            return
        if line.startswith(":"):
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._type = value
        elif name == "data":
            self._data += value + "\n"
        elif name == "id":
            if "\x00" not in value:
                self.last_event_id = value
        elif name == "retry":
            if value and all(c in "0123456789" for c in value):
                self.reconnection_time = int(value)

    def _dispatch(self) -> None:
        if self._data == "":
            self._type = ""
            return
        data = self._data[:-1] if self._data.endswith("\n") else self._data
        self.events.append(SpecEvent(self._type or "message", data, self.last_event_id))
        self._data = ""
        self._type = ""


def spec_parse(chunks: Iterable[bytes]) -> SpecParser:
    parser = SpecParser()
    for chunk in chunks:
        parser.feed(chunk)
    parser.end()
    return parser


def sseclient_parse(chunks: Iterable[bytes]) -> list[sseclient.Event]:
    return list(sseclient.SSEClient(iter(list(chunks))).events())


def split_at(blob: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(blob)})
    bounds = [0, *points, len(blob)]
    return [blob[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


# The reference parser itself, against hand-written spec cases (so its verdicts can be trusted).

@pytest.mark.parametrize("stream, expected", [
    (b"data: a\r\ndata: b\r\n\r\n", [("message", "a\nb", "")]),
    (b"data: a\rdata: b\r\r", [("message", "a\nb", "")]),
    (b"data: a\n\r\n", [("message", "a", "")]),            # mixed endings (sseclient: 3)
    (b"data: a\n\r", [("message", "a", "")]),              # lone CR blank line (sseclient: 3)
    (b"\xef\xbb\xbfid: 7\ndata: x\n\n", [("message", "x", "7")]),   # BOM (sseclient: 2)
    (b"data:x\n\nid: 9\n\ndata:y\n\n", [("message", "x", ""), ("message", "y", "9")]),
    (b"data:  two spaces\n\n", [("message", " two spaces", "")]),
    (b"data\n\n", [("message", "", "")]),
    (b"data:\ndata:\n\n", [("message", "\n", "")]),
    (b"event: e\n\ndata: x\n\n", [("message", "x", "")]),  # no data: type reset, nothing fired
    (b"id: 1\x002\ndata: x\n\n", [("message", "x", "")]),  # an id with NUL is ignored
    (b": comment\nretry: x\ndata: x\n\n", [("message", "x", "")]),
    (b"data: cut", []),                                    # unterminated (sseclient: 4)
    (b"data: \xed\xa0\x80\n\n", [("message", "\ufffd\ufffd\ufffd", "")]),  # not UTF-8
])
def test_reference_parser_follows_the_spec(stream: bytes,
                                           expected: list[tuple[str, str, str]]) -> None:
    # Every way of cutting the stream in two or three gives the same result.
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            events = spec_parse([stream[:i], stream[i:j], stream[j:]]).events
            assert [(e.type, e.data, e.last_event_id) for e in events] == expected, (i, j)


def test_reference_parser_reads_retry() -> None:
    parser = spec_parse([b"retry: 2500\n\nretry: -1\n\nretry: 1.5\n\n"])
    assert parser.reconnection_time == 2500 and parser.events == []


# -- strategies ------------------------------------------------------------------------------

#: Characters and pieces the framing must not trip over.
SPECIALS = ["\n", "\r", "\r\n", "\n\r", "\r\r", "\n\n", "\ufeff", "\u2028", "\u2029", "\x00",
            "\x85", "\x0b", "\x0c", "\x1c", "\x1e", "\x7f", "\x80", "\x9f", " ", ":", "data: ",
            "id: ", "é", "€", "😀", "\U0010ffff"]
C0_C1 = st.characters(min_codepoint=0, max_codepoint=0x9F)
SURROGATES = st.characters(categories=["Cs"])


def text_from(*pieces: st.SearchStrategy[str], max_size: int = 60) -> st.SearchStrategy[str]:
    return st.lists(st.one_of(st.sampled_from(SPECIALS), *pieces),
                    max_size=max_size).map("".join)


#: Any text a str can hold: specials, controls, any code point, lone surrogates.
ANY_TEXT = text_from(C0_C1, st.characters(), SURROGATES, st.text(max_size=10))
#: Text that UTF-8 can encode (no lone surrogates).
UTF8_TEXT = text_from(C0_C1, st.characters(codec="utf-8"), st.text(max_size=10))
#: Very long lines: a short unit repeated up to 100 KB (characters).
LONG_TEXT = st.builds(lambda unit, n: (unit * n)[:100_000],
                      UTF8_TEXT.filter(bool), st.integers(1_000, 100_000))


def to_bytes(text: str) -> bytes:
    """Text as the UTF-8 a producer would send; a lone surrogate as ``surrogatepass`` bytes."""
    return text.encode("utf-8", "surrogatepass")


def expected_data(data: bytes) -> str:
    """What the spec hands to the page: decoded with replacement, line endings as LF."""
    return re.sub(r"\r\n|\r|\n", "\n", data.decode("utf-8", "replace"))


def join_pairs(value: object) -> object:
    """What JSON (and JavaScript) makes of a str: a high surrogate code point followed by a
    low one is a surrogate *pair*, so ``"\\ud800\\udc00"`` reads back as U+10000. Lone
    surrogates stay as they are."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if isinstance(value, list):
        return [join_pairs(v) for v in value]
    if isinstance(value, dict):
        return {join_pairs(k): join_pairs(v) for k, v in value.items()}
    return value


def clean(value: str) -> str:
    return re.sub(r"[\r\n\x00]", "", value)


@dataclass
class Item:
    """One thing written to a stream: an event, a retry or a comment."""

    kind: str
    data: bytes = b""
    event_id: int | str | None = None
    name: str | None = None
    text: str = ""
    ms: int = 0

    def framed(self) -> bytes:
        if self.kind == "event":
            return sse.frame(self.data, self.event_id, self.name)
        if self.kind == "retry":
            return sse.retry(self.ms)
        return sse.comment(self.text)


EVENT_IDS = st.one_of(st.none(), st.integers(0, 10**18), UTF8_TEXT)
EVENT_NAMES = st.one_of(st.none(), UTF8_TEXT)
EVENT_ITEMS = st.builds(Item, st.just("event"), ANY_TEXT.map(to_bytes), EVENT_IDS, EVENT_NAMES)
STREAM_ITEMS = st.lists(st.one_of(
    EVENT_ITEMS,
    st.builds(Item, st.just("retry"), ms=st.integers(0, 10**9)),
    st.builds(Item, st.just("comment"), text=UTF8_TEXT),
), min_size=1, max_size=8)


def expected_events(items: list[Item]) -> list[tuple[str, str, str]]:
    out, last_id = [], ""
    for item in items:
        if item.kind != "event":
            continue
        if item.event_id is not None:
            last_id = clean(str(item.event_id))
        out.append((clean(item.name or "") or "message", expected_data(item.data),
                    last_id))
    return out


def cut_points(blob: bytes) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, len(blob)), max_size=20)


def check_both_parsers(items: list[Item], chunks: list[bytes]) -> None:
    want = expected_events(items)
    got = spec_parse(chunks).events
    assert [(e.type, e.data, e.last_event_id) for e in got] == want
    blob = b"".join(chunks)
    try:
        blob.decode("utf-8")
    except UnicodeDecodeError:
        return  # sseclient-py decodes strictly (deviation 1): the reference parser judged it
    client = sseclient_parse(chunks)
    assert [(e.event, e.data) for e in client] == [(t, d) for t, d, _ in want]
    own_ids = [None if i.event_id is None else clean(str(i.event_id))
               for i in items if i.kind == "event"]
    assert [e.id for e in client] == own_ids  # deviation 5: only an event's own id line


# -- properties ------------------------------------------------------------------------------

@SETTINGS
@given(item=EVENT_ITEMS, data=st.data())
def test_one_event_round_trips_through_both_parsers(item: Item, data: st.DataObject) -> None:
    blob = item.framed()
    chunks = split_at(blob, data.draw(cut_points(blob)))
    check_both_parsers([item], chunks)


@SETTINGS
@given(items=STREAM_ITEMS, data=st.data())
def test_a_stream_of_events_retries_and_comments_round_trips(items: list[Item],
                                                             data: st.DataObject) -> None:
    blob = b"".join(item.framed() for item in items)
    chunks = split_at(blob, data.draw(cut_points(blob)))
    check_both_parsers(items, chunks)
    retries = [item.ms for item in items if item.kind == "retry"]
    assert spec_parse(chunks).reconnection_time == (retries[-1] if retries else None)


@SETTINGS
@given(items=STREAM_ITEMS, data=st.data())
def test_a_leading_bom_on_the_stream_is_stripped(items: list[Item], data: st.DataObject) -> None:
    # A proxy or a test harness may prefix the stream with a BOM; the spec strips exactly one.
    # Reference parser only: sseclient-py keeps it (deviation 2).
    blob = b"\xef\xbb\xbf" + b"".join(item.framed() for item in items)
    chunks = split_at(blob, data.draw(cut_points(blob)))
    got = spec_parse(chunks).events
    assert [(e.type, e.data, e.last_event_id) for e in got] == expected_events(items)


@SETTINGS
@given(text=UTF8_TEXT, data=st.data())
def test_text_data_keeps_everything_but_line_endings(text: str, data: st.DataObject) -> None:
    blob = sse.frame(text.encode())
    # One data: line per line of the text, and nothing else in the frame can end a line.
    lines = re.split(r"\r\n|\r|\n", text)
    assert blob.count(b"\n") == len(lines) + 1 and b"\r" not in blob
    chunks = split_at(blob, data.draw(cut_points(blob)))
    (event,) = sseclient_parse(chunks)
    assert event.data == "\n".join(lines) == re.sub(r"\r\n|\r|\n", "\n", text)
    (spec_event,) = spec_parse(chunks).events
    assert spec_event.data == event.data


@SETTINGS
@given(raw=st.binary(max_size=300), data=st.data())
def test_arbitrary_bytes_come_back_as_the_spec_decodes_them(raw: bytes,
                                                            data: st.DataObject) -> None:
    item = Item("event", raw, 1)
    blob = item.framed()
    chunks = split_at(blob, data.draw(cut_points(blob)))
    (event,) = spec_parse(chunks).events
    assert event.data == expected_data(raw) and event.last_event_id == "1"


@LONG
@given(text=LONG_TEXT, event_id=EVENT_IDS, name=EVENT_NAMES, data=st.data())
def test_very_long_lines_round_trip(text: str, event_id: int | str | None, name: str | None,
                                    data: st.DataObject) -> None:
    item = Item("event", text.encode(), event_id, name)
    blob = item.framed()
    chunks = split_at(blob, data.draw(st.lists(st.integers(0, len(blob)), max_size=200)))
    check_both_parsers([item], chunks)


@SETTINGS
@given(event_id=st.one_of(st.integers(), UTF8_TEXT), name=UTF8_TEXT)
def test_ids_and_names_stay_on_one_line(event_id: int | str, name: str) -> None:
    blob = sse.frame(b"x", event_id, name)
    lines = blob.split(b"\n")
    assert lines[0] == b"id: " + clean(str(event_id)).encode()
    assert lines[1] == b"event: " + clean(name).encode()
    assert lines[2:] == [b"data: x", b"", b""]
    assert b"\r" not in blob and b"\x00" not in blob


@SETTINGS
@given(value=UTF8_TEXT.map(lambda s: s + "\ud800"))
def test_a_lone_surrogate_in_an_id_or_name_is_refused_not_sent_as_broken_utf8(value: str) -> None:
    # Not representable in UTF-8: frame() raises rather than emit bytes a parser would mangle.
    # (Tether's ids are integers and its event names constants, so this never happens.)
    with pytest.raises(UnicodeEncodeError):
        sse.frame(b"x", value)
    with pytest.raises(UnicodeEncodeError):
        sse.frame(b"x", None, value)


@SETTINGS
@given(text=UTF8_TEXT)
def test_a_comment_is_one_ignored_line(text: str) -> None:
    blob = sse.comment(text)
    assert blob.count(b"\n") == 2 and blob.endswith(b"\n\n") and b"\r" not in blob
    parser = spec_parse([blob, sse.frame(b"after", 3)])
    assert [(e.data, e.last_event_id) for e in parser.events] == [("after", "3")]


@SETTINGS
@given(ms=st.integers(0, 10**12))
def test_retry_sets_the_reconnection_time(ms: int) -> None:
    parser = spec_parse([sse.retry(ms)])
    assert parser.reconnection_time == ms and parser.events == []


# A JSON payload: anything json.dumps writes as standard JSON (no NaN/Infinity).
def _nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | ANY_TEXT, _nested, max_leaves=12)


@SETTINGS
@given(name=st.sampled_from(["caught-up", "reset", "inbox", "ping"]), payload=JSON,
       data=st.data())
def test_named_events_carry_their_json_on_one_data_line(name: str, payload: object,
                                                        data: st.DataObject) -> None:
    blob = sse.named(name, payload)
    assert data_lines(blob) == 1 and blob.isascii()
    chunks = split_at(blob, data.draw(cut_points(blob)))
    (event,) = sseclient_parse(chunks)
    assert event.event == name and json.loads(event.data) == join_pairs(payload)
    (spec_event,) = spec_parse(chunks).events
    assert spec_event.type == name and spec_event.data == event.data


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_named_never_emits_non_json(value: float) -> None:
    # NaN and infinity are not JSON (RFC 8259 section 6); the browser's JSON.parse throws.
    with pytest.raises(ValueError):
        sse.named("inbox", {"input": {"x": value}})


TS = st.floats(0, 4e9, allow_nan=False)


@SETTINGS
@given(text=ANY_TEXT, session_id=ANY_TEXT, event_id=st.integers(1, 10**12), ts=TS,
       data=st.data())
def test_a_tether_event_is_exactly_one_data_line(text: str, session_id: str, event_id: int,
                                                 ts: float, data: st.DataObject) -> None:
    event = make_event(event_id, session_id, ts, "text", {"text": text})
    assert b"\r" not in event.data and b"\n" not in event.data and event.data.isascii()
    blob = sse.event_frame(event.id, event.data)  # the fast path the streams use
    assert blob == sse.frame(event.data, event.id)
    assert blob.count(b"\n") == 3 and data_lines(blob) == 1  # id, data, blank line
    chunks = split_at(blob, data.draw(cut_points(blob)))
    (parsed,) = sseclient_parse(chunks)
    (spec_event,) = spec_parse(chunks).events
    assert parsed.id == spec_event.last_event_id == str(event_id)
    assert parsed.data == spec_event.data == event.data.decode()
    # The text comes back exactly, lone surrogates, CR and LF included: JSON escapes them.
    assert json.loads(parsed.data) == join_pairs({"id": event_id, "session_id": session_id,
                                                  "ts": round(ts, 3), "kind": "text",
                                                  "text": text})


def data_lines(blob: bytes) -> int:
    return sum(line.startswith(b"data:") for line in blob.split(b"\n"))


def chunks_of(blob: bytes, size: int) -> Iterator[bytes]:
    return (blob[i:i + size] for i in range(0, len(blob), size))


def test_many_events_byte_by_byte() -> None:
    # A replay of Tether events fed one byte at a time: every UTF-8 sequence and every line is
    # cut at every possible place.
    events = [make_event(i, "s", 1.0, "text", {"text": f"é€😀\r\n\u2028 {i}"})
              for i in range(1, 51)]
    blob = sse.retry(2000) + b"".join(sse.frame(e.data, e.id) for e in events)
    blob += sse.named("caught-up", {"last_event_id": 50, "epoch": "e"})
    for chunks in (list(chunks_of(blob, 1)), list(chunks_of(blob, 7)), [blob]):
        parsed = sseclient_parse(chunks)
        spec = spec_parse(chunks).events
        assert [e.data for e in parsed] == [e.data for e in spec]
        assert [e.data.encode() for e in parsed[:-1]] == [e.data for e in events]
        assert [e.last_event_id for e in spec] == [*(str(i) for i in range(1, 51)), "50"]
        assert parsed[-1].event == "caught-up" and parsed[-1].id is None
