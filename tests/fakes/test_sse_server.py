"""What the three fake model APIs share (tests/fakes/sse_server.py), for each of them: a
delay holds the stream open after the first frame and ends when the ``with`` block exits, and
a raising script answers HTTP 400 and is kept in ``api.errors``."""

from __future__ import annotations

import time
import typing as t
from dataclasses import dataclass

import pytest

from . import anthropic_api, gemini_api, openai_api
from .sse_client import post, stream
from .sse_server import Body, FakeModelApi


@dataclass(frozen=True)
class Api:
    fake: type[FakeModelApi[t.Any]]
    text_reply: t.Callable[..., t.Any]
    path: str
    body: Body
    first: bytes  # how the stream's first line starts
    last: bytes  # what only the last frame holds


APIS = {
    "anthropic": Api(anthropic_api.FakeAnthropic, anthropic_api.text_reply, "/v1/messages",
                     {"model": "claude-test", "stream": True, "messages": []},
                     b"event: message_start", b"message_stop"),
    "openai": Api(openai_api.FakeOpenAI, openai_api.text_reply, "/v1/responses",
                  {"model": "fake-model", "stream": True, "input": []},
                  b"event: response.created", b"response.completed"),
    "gemini": Api(gemini_api.FakeGemini, gemini_api.text_reply,
                  "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", {},
                  b"data: {", b"finishReason"),
}


@pytest.fixture(params=list(APIS))
def api(request: pytest.FixtureRequest) -> Api:
    return APIS[request.param]


def test_delay_holds_the_stream_open_after_the_first_frame(api: Api) -> None:
    with api.fake(lambda b: api.text_reply("late", delay_seconds=0.5)) as fake:
        t0 = time.monotonic()
        with stream(fake, api.path, api.body) as resp:
            lines = resp.iter_lines(chunk_size=1)  # a line as soon as it ends
            assert next(lines).startswith(api.first) and time.monotonic() - t0 < 0.4
            rest = b"\n".join(lines)
    assert api.last in rest and time.monotonic() - t0 >= 0.5


def test_closing_the_server_cuts_a_delay_short(api: Api) -> None:
    with api.fake(lambda b: api.text_reply("never", delay_seconds=60)) as fake:
        resp = stream(fake, api.path, api.body)
        lines = resp.iter_lines(chunk_size=1)  # a line as soon as it ends
        assert next(lines).startswith(api.first)
    t0 = time.monotonic()
    with resp:
        assert api.last in b"".join(lines)
    assert time.monotonic() - t0 < 5


def test_a_raising_script_answers_400_and_is_kept(api: Api) -> None:
    with api.fake(lambda b: 1 / 0) as fake:
        resp = post(fake, api.path, api.body)
    assert resp.status_code == 400 and "ZeroDivisionError" in resp.json()["error"]["message"]
    assert isinstance(fake.errors[0], ZeroDivisionError) and fake.requests == [api.body]
