"""Tests for the fake Messages API itself (no claude binary needed)."""

from __future__ import annotations

import contextlib
import json
import typing as t

import pytest
import requests

from .anthropic_api import (
    Body,
    FakeAnthropic,
    Reply,
    Script,
    all_user_texts,
    ask_reply,
    error_reply,
    first_user_text,
    last_tool_result,
    text_reply,
    tool_reply,
    tool_result_text,
)
from .sse_client import TIMEOUT, post, sse

Serve = t.Callable[[Script], FakeAnthropic]
REMINDER = {"type": "text", "text": "<system-reminder>\nbe nice\n</system-reminder>\n"}


def body(*messages: Body, stream: bool = True) -> Body:
    return {"model": "claude-test", "max_tokens": 100, "stream": stream, "messages": list(messages)}


@pytest.fixture
def serve() -> t.Iterator[t.Callable[[Script], FakeAnthropic]]:
    """Start fakes that all stop when the test ends."""
    with contextlib.ExitStack() as stack:
        yield lambda script: stack.enter_context(FakeAnthropic(script))


def test_text_reply_streams_the_messages_api_frames(serve: Serve) -> None:
    api = serve(lambda b: text_reply("Hello"))
    resp = post(api, "/v1/messages?beta=true", body({"role": "user", "content": "hi"}))
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    frames = sse(resp)
    assert [name for name, _ in frames] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in frames)
    message = frames[0][1]["message"]
    assert message["model"] == "claude-test" and message["content"] == []
    assert message["usage"]["cache_read_input_tokens"] == 0
    assert frames[1][1]["content_block"] == {"type": "text", "text": ""}
    assert frames[2][1]["delta"] == {"type": "text_delta", "text": "Hello"}
    assert frames[4][1]["delta"]["stop_reason"] == "end_turn"


def test_tool_reply_splits_input_json_over_two_deltas(serve: Serve) -> None:
    tool_input = {"command": "touch x", "description": "make x"}
    api = serve(lambda b: tool_reply("I'll run it.", "Bash", tool_input, tool_id="toolu_1"))
    frames = sse(post(api, "/v1/messages", body({"role": "user", "content": "go"})))
    starts = [d for n, d in frames if n == "content_block_start"]
    assert [s["index"] for s in starts] == [0, 1]
    tool_start = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}
    assert starts[1]["content_block"] == tool_start
    parts = [d["delta"]["partial_json"] for n, d in frames
             if n == "content_block_delta" and d["index"] == 1]
    assert len(parts) == 2 and json.loads("".join(parts)) == tool_input
    assert frames[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_stream_false_answers_one_json_message(serve: Serve) -> None:
    api = serve(lambda b: ask_reply([{"question": "Which?", "header": "Pick", "multiSelect": False,
                                        "options": [{"label": "A", "description": "a"},
                                                    {"label": "B", "description": "b"}]}]))
    resp = post(api, "/v1/messages", body({"role": "user", "content": "ask"}, stream=False))
    message = resp.json()
    assert message["type"] == "message" and message["stop_reason"] == "tool_use"
    [block] = message["content"]
    assert block["name"] == "AskUserQuestion"
    assert block["input"]["questions"][0]["question"] == "Which?"


def test_requests_are_recorded_and_helpers_read_them(serve: Serve) -> None:
    seen: list[tuple[str, Body | None, list[str]]] = []

    def script(b: Body) -> Reply:
        seen.append((first_user_text(b), last_tool_result(b), all_user_texts(b)))
        return text_reply("ok")

    api = serve(script)
    done = [{"type": "text", "text": "done"}]
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": done}
    sent = body({"role": "user", "content": [REMINDER, {"type": "text", "text": "first"}]},
                {"role": "system", "content": "env"},
                {"role": "assistant", "content": [{"type": "text", "text": "hmm"}]},
                {"role": "user", "content": [result]},
                {"role": "system", "content": "The user sent a new message while you were working"})
    post(api, "/v1/messages?beta=true", sent)
    post(api, "/v1/messages", body({"role": "user", "content": "plain"}))
    assert api.requests == [sent, body({"role": "user", "content": "plain"})]
    assert api.paths == ["/v1/messages?beta=true", "/v1/messages"]
    assert seen[0] == ("first", result, ["first"])
    assert seen[1] == ("plain", None, ["plain"])
    assert tool_result_text(result) == "done"


def test_error_reply_answers_a_json_error(serve: Serve) -> None:
    api = serve(lambda b: error_reply(400, "bad thing"))
    resp = post(api, "/v1/messages", body())
    assert resp.status_code == 400
    error = {"type": "invalid_request_error", "message": "bad thing"}
    assert resp.json() == {"type": "error", "error": error}


def test_count_tokens_and_unknown_paths(serve: Serve) -> None:
    api = serve(lambda b: text_reply("unused"))
    resp = post(api, "/v1/messages/count_tokens", body({"role": "user", "content": "hi"}))
    assert resp.status_code == 200 and resp.json()["input_tokens"] > 0
    assert post(api, "/v1/complete", {}).status_code == 404
    with requests.get(api.base_url + "/v1/models", timeout=TIMEOUT) as resp:
        assert resp.status_code == 404 and resp.json()["error"]["type"] == "not_found_error"
    assert api.requests == []
