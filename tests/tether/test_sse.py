"""SSE framing, byte for byte (WHATWG HTML 9.2)."""

from __future__ import annotations

import pytest

from tether import sse


def test_frame_with_id() -> None:
    assert sse.frame(b'{"a":1}', 7) == b'id: 7\ndata: {"a":1}\n\n'


@pytest.mark.parametrize("data, expected", [
    (b"a\nb", b"data: a\ndata: b\n\n"),
    (b"a\rb", b"data: a\ndata: b\n\n"),
    (b"a\r\nb", b"data: a\ndata: b\n\n"),
    (b"", b"data: \n\n"),
    (b"a\n", b"data: a\ndata: \n\n"),
])
def test_data_is_split_on_every_line_ending(data: bytes, expected: bytes) -> None:
    assert sse.frame(data) == expected


def test_named_event_and_unsafe_names() -> None:
    assert sse.named("caught-up", {"last_event_id": 3}) == (
        b'event: caught-up\ndata: {"last_event_id":3}\n\n')
    assert sse.frame(b"x", "1\r\n2\x00", "a\nb") == b"id: 12\nevent: ab\ndata: x\n\n"


def test_retry_and_comment() -> None:
    assert sse.retry(2000) == b"retry: 2000\n\n"
    assert sse.comment("keepalive") == b": keepalive\n\n"
