"""Tests for the fake Responses API itself (no codex binary needed)."""

from __future__ import annotations

import contextlib
import json
import typing as t

import pytest
import requests

from .openai_api import (
    Body,
    FakeOpenAI,
    Reply,
    Script,
    all_user_texts,
    codex_config_toml,
    command_reply,
    error_reply,
    first_user_text,
    last_function_output,
    patch_reply,
    reasoning_item,
    text_reply,
    tool_names,
)
from .sse_client import TIMEOUT, post, sse

Serve = t.Callable[[Script], FakeOpenAI]
CONTEXT = {"type": "message", "role": "user", "content": [
    {"type": "input_text", "text": "<environment_context>\n</environment_context>"}]}


def user(text: str) -> Body:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def body(*items: Body) -> Body:
    return {"model": "fake-model", "stream": True, "store": False, "input": list(items),
            "tools": [{"type": "function", "name": "exec_command"}, {"type": "web_search"}]}


@pytest.fixture
def serve() -> t.Iterator[Serve]:
    """Start fakes that all stop when the test ends."""
    with contextlib.ExitStack() as stack:
        yield lambda script: stack.enter_context(FakeOpenAI(script))


def test_text_reply_streams_the_responses_api_frames(serve: Serve) -> None:
    api = serve(lambda b: text_reply("Hello"))
    resp = post(api, "/v1/responses", body(user("hi")))
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    frames = sse(resp)
    assert [name for name, _ in frames] == [
        "response.created", "response.output_item.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_item.done", "response.completed"]
    assert all(name == data["type"] for name, data in frames)
    assert frames[0][1]["response"]["model"] == "fake-model"
    assert "".join(d["delta"] for n, d in frames if n.endswith(".delta")) == "Hello"
    item = frames[4][1]["item"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["content"] == [{"type": "output_text", "text": "Hello", "annotations": []}]
    assert frames[2][1]["item_id"] == item["id"] == frames[1][1]["item"]["id"]
    usage = frames[-1][1]["response"]["usage"]
    assert usage["input_tokens_details"]["cached_tokens"] == 4 and usage["output_tokens"] == 14


def test_command_reply_is_an_exec_command_call(serve: Serve) -> None:
    api = serve(lambda b: command_reply("I'll run it.", "touch x", "Create x?", call_id="c1"))
    frames = sse(post(api, "/v1/responses", body(user("go"))))
    done = [d["item"] for n, d in frames if n == "response.output_item.done"]
    assert [i["type"] for i in done] == ["message", "function_call"]
    call = done[1]
    assert call["name"] == "exec_command" and call["call_id"] == "c1"
    assert json.loads(call["arguments"]) == {"cmd": "touch x",
                                             "sandbox_permissions": "require_escalated",
                                             "justification": "Create x?"}
    plain = command_reply("", "ls").items
    assert len(plain) == 1 and json.loads(plain[0]["arguments"]) == {"cmd": "ls"}


def test_other_items_are_sent_done_only(serve: Serve) -> None:
    api = serve(lambda b: Reply([reasoning_item("Think."), *patch_reply("", "*** Begin Patch")
                                 .items]))
    frames = sse(post(api, "/v1/responses", body(user("go"))))
    assert [n for n, _ in frames] == ["response.created", "response.output_item.done",
                                      "response.output_item.done", "response.completed"]
    assert frames[1][1]["item"]["summary"] == [{"type": "summary_text", "text": "Think."}]
    assert frames[2][1]["item"]["type"] == "custom_tool_call"


def test_requests_are_recorded_and_helpers_read_them(serve: Serve) -> None:
    seen: list[tuple[str, list[str], str | None]] = []

    def script(b: Body) -> Reply:
        seen.append((first_user_text(b), all_user_texts(b), last_function_output(b)))
        return text_reply("ok")

    api = serve(script)
    call = {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{}"}
    output = {"type": "function_call_output", "call_id": "c1", "output": "touched\n"}
    developer = {"type": "message", "role": "developer",
                 "content": [{"type": "input_text", "text": "You are Codex"}]}
    first = body(developer, CONTEXT, user("first"), call, output)
    second = body(CONTEXT, user("first"), {"type": "message", "role": "assistant",
                                           "content": [{"type": "output_text", "text": "hm"}]},
                  user("second"))
    post(api, "/v1/responses", first)
    post(api, "/v1/responses", second)
    assert api.requests == [first, second]
    assert api.paths == ["POST /v1/responses", "POST /v1/responses"]
    assert seen == [("first", ["first"], "touched\n"), ("first", ["first", "second"], None)]
    assert tool_names(first) == ["exec_command", "web_search"]


def test_error_reply_answers_a_json_error(serve: Serve) -> None:
    api = serve(lambda b: error_reply(400, "bad thing"))
    resp = post(api, "/v1/responses", body())
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "bad thing"
    assert resp.json()["error"]["type"] == "invalid_request_error"


def test_unknown_paths_are_404(serve: Serve) -> None:
    api = serve(lambda b: text_reply("unused"))
    assert post(api, "/v1/chat/completions", {}).status_code == 404
    with requests.get(api.base_url + "/v1/models", timeout=TIMEOUT) as resp:
        assert resp.status_code == 404 and "error" in resp.json()
    assert api.requests == [] and api.paths == ["POST /v1/chat/completions", "GET /v1/models"]


def test_codex_config_points_at_the_fake() -> None:
    toml = codex_config_toml("http://127.0.0.1:1234")
    assert 'base_url = "http://127.0.0.1:1234/v1"' in toml
    assert 'wire_api = "responses"' in toml and "supports_websockets = false" in toml
    assert 'model = "fake-model"' in toml and "enabled = false" in toml
