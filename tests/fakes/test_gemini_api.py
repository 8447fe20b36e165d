"""FakeGemini answers the Gemini API's streaming route as Gemini CLI expects (PROTOCOLS.md
5.3); no gemini binary needed."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.fakes.gemini_api import (
    Body,
    FakeGemini,
    all_user_texts,
    error_reply,
    last_function_response,
    last_user_text,
    shell_reply,
    text_reply,
    write_file_reply,
)

STREAM = "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"


def post(api: FakeGemini, path: str, body: Body) -> tuple[int, str, str]:
    req = urllib.request.Request(api.base_url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def frames(text: str) -> list[Body]:
    assert text.endswith("\n\n")
    return [json.loads(chunk.removeprefix("data: ")) for chunk in text.strip().split("\n\n")]


def user(*parts: Body) -> Body:
    return {"role": "user", "parts": list(parts)}


def test_text_reply_streams_parts_and_ends_with_stop_and_usage() -> None:
    with FakeGemini(lambda body: text_reply("Hello there", thought="hmm")) as api:
        status, ctype, text = post(api, STREAM, {"contents": [user({"text": "hi"})]})
    assert status == 200 and ctype == "text/event-stream"
    chunks = frames(text)
    parts = [c["candidates"][0]["content"]["parts"][0] for c in chunks]
    assert parts == [{"text": "hmm", "thought": True}, {"text": "Hello"}, {"text": " there"}]
    assert all(c["candidates"][0]["content"]["role"] == "model" for c in chunks)
    assert "finishReason" not in chunks[0]["candidates"][0]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["totalTokenCount"] == 15
    assert api.models == ["gemini-2.5-pro"] and api.paths == [STREAM]


def test_shell_and_write_file_replies_are_function_calls() -> None:
    replies = iter([shell_reply("Running.", "touch x", "make x"),
                    write_file_reply("", "/w/a.txt", "hi\n")])
    with FakeGemini(lambda body: next(replies)) as api:
        first = frames(post(api, STREAM, {})[2])
        second = frames(post(api, STREAM, {})[2])
    assert first[0]["candidates"][0]["content"]["parts"] == [{"text": "Running."}]
    assert first[1]["candidates"][0]["content"]["parts"] == [{"functionCall": {
        "name": "run_shell_command", "args": {"command": "touch x", "description": "make x"}}}]
    assert [c["candidates"][0]["content"]["parts"] for c in second] == [[{"functionCall": {
        "name": "write_file", "args": {"file_path": "/w/a.txt", "content": "hi\n"}}}]]


def test_error_reply_answers_a_json_error() -> None:
    with FakeGemini(lambda body: error_reply(400, "bad")) as api:
        status, ctype, text = post(api, STREAM, {})
    assert status == 400 and ctype == "application/json"
    assert json.loads(text) == {"error": {"code": 400, "message": "bad",
                                          "status": "INVALID_ARGUMENT"}}


def test_generate_content_answers_one_object_and_other_paths_404() -> None:
    with FakeGemini(lambda body: text_reply("ab")) as api:
        status, _, text = post(api, "/v1beta/models/m:generateContent", {})
        missing = post(api, "/v1/other", {})[0]
    assert status == 200
    assert json.loads(text)["candidates"][0]["content"]["parts"] == [{"text": "a"}, {"text": "b"}]
    assert missing == 404 and len(api.requests) == 1


def test_body_helpers() -> None:
    body: dict[str, Any] = {"contents": [
        user({"text": "<session_context>…"}, {"text": "first"}),
        {"role": "model", "parts": [{"functionCall": {"name": "x", "args": {}}}]},
        user({"functionResponse": {"name": "x", "response": {"output": "ok"}}}),
    ]}
    assert all_user_texts(body) == ["<session_context>…", "first"]
    assert last_user_text(body) == "first"
    assert last_function_response(body) == {"name": "x", "response": {"output": "ok"}}
    assert last_function_response({"contents": [user({"text": "t"})]}) is None
    assert last_user_text({}) == ""
