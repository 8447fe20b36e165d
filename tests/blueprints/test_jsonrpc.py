"""JSON-RPC 2.0 envelopes: jsonrpc.handle() with a plain handler, every error path."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from blueprints import jsonrpc
from blueprints.errors import JSONRPC_CODE
from tether.errors import (
    AlreadyResolved,
    BadRequest,
    NotFound,
    PayloadTooLarge,
    SessionBusy,
    TetherError,
    UnsupportedMediaType,
)


class Unauthorized(TetherError):
    code = "unauthorized"


class Forbidden(TetherError):
    code = "forbidden"


class Strange(TetherError):
    code = "not_in_any_table"


class Recorder:
    """A handler with a few methods; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, method: str, params: dict[str, Any]) -> Any:
        self.calls.append((method, params))
        if method == "echo":
            return params
        if method == "ping":
            return {"pong": True}
        if method == "none":
            return None
        if method == "raise":
            raise params_error(params)
        if method == "boom":
            raise ValueError("secret detail /etc/passwd")
        raise jsonrpc.method_not_found(method)


ERRORS: dict[str, Exception] = {
    "not_found": NotFound("no session 'x'"),
    "session_busy": SessionBusy("turn 1 is still running"),
    "already_resolved": AlreadyResolved("approval r is already resolved"),
    "unauthorized": Unauthorized("who are you"),
    "forbidden": Forbidden("not you"),
    "bad_request": BadRequest("params.text: Field required"),
    "payload_too_large": PayloadTooLarge("too big"),
    "unsupported_media_type": UnsupportedMediaType("nope"),
    "base": TetherError("plain"),
    "strange": Strange("odd"),
    "rpc": jsonrpc.RpcError(-32000, "custom, no tether code"),
}


def params_error(params: dict[str, Any]) -> Exception:
    return ERRORS[params["which"]]


@pytest.fixture
def handler() -> Recorder:
    return Recorder()


def call(frame: Any, handler: Recorder) -> Any:
    """handle() a frame (a value is JSON-encoded first); the decoded reply, or None."""
    text = frame if isinstance(frame, (str, bytes)) else json.dumps(frame)
    reply = jsonrpc.handle(text, handler)
    return None if reply is None else json.loads(reply)


def request(method: str, request_id: Any = 1, **extra: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, **extra}


def notice(method: str, **extra: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, **extra}


def assert_error(reply: Any, request_id: Any, code: int, tether_code: str | None,
                 needle: str = "") -> None:
    assert set(reply) == {"jsonrpc", "id", "error"}
    assert reply["jsonrpc"] == "2.0" and reply["id"] == request_id
    assert reply["error"]["code"] == code
    assert isinstance(reply["error"]["message"], str) and needle in reply["error"]["message"]
    if tether_code is None:
        assert "data" not in reply["error"]
    else:
        assert reply["error"]["data"] == {"code": tether_code}


# -- success ---------------------------------------------------------------------------------

@pytest.mark.parametrize("request_id", [1, 0, -7, 2**53 + 1, "abc", "", None])
def test_a_request_gets_its_result_with_its_id(handler: Recorder, request_id: Any) -> None:
    reply = call(request("echo", request_id, params={"a": [1, "é"]}), handler)
    assert reply == {"jsonrpc": "2.0", "id": request_id, "result": {"a": [1, "é"]}}
    assert handler.calls == [("echo", {"a": [1, "é"]})]


def test_reply_is_compact_utf8_json(handler: Recorder) -> None:
    raw = jsonrpc.handle(json.dumps(request("echo", params={"t": "é"})), handler)
    assert raw == '{"jsonrpc":"2.0","id":1,"result":{"t":"é"}}'


@pytest.mark.parametrize("extra", [{}, {"params": None}, {"params": {}}])
def test_missing_or_null_params_are_an_empty_object(handler: Recorder,
                                                    extra: dict[str, Any]) -> None:
    assert call(request("echo", **extra), handler)["result"] == {}
    assert handler.calls == [("echo", {})]


def test_a_null_result_is_still_a_result(handler: Recorder) -> None:
    assert call(request("none"), handler) == {"jsonrpc": "2.0", "id": 1, "result": None}


def test_a_notification_runs_and_gets_no_reply(handler: Recorder) -> None:
    assert call(notice("echo", params={"x": 1}), handler) is None
    assert handler.calls == [("echo", {"x": 1})]


def test_an_explicit_null_id_is_a_request_not_a_notification(handler: Recorder) -> None:
    assert call(request("ping", None), handler) == {"jsonrpc": "2.0", "id": None,
                                                    "result": {"pong": True}}


# -- -32700 parse error ----------------------------------------------------------------------

@pytest.mark.parametrize("frame", ["{", "", "   ", "not json", '{"jsonrpc": "2.0",}', "NaN",
                                   '{"jsonrpc":"2.0","id":1,"method":"echo","params":'
                                   '{"x":Infinity}}', "[" * 100_000])
def test_a_frame_that_is_not_json_is_a_parse_error_with_a_null_id(handler: Recorder,
                                                                  frame: str) -> None:
    reply = call(frame, handler)
    assert_error(reply, None, -32700, "bad_request", "parse error")
    assert handler.calls == []


# -- -32600 invalid request ------------------------------------------------------------------

def test_a_binary_frame_is_an_invalid_request(handler: Recorder) -> None:
    reply = call(json.dumps(request("ping")).encode(), handler)
    assert_error(reply, None, -32600, "bad_request", "text frames")
    assert handler.calls == []


@pytest.mark.parametrize("frame", ["5", '"text"', "null", "true", "3.5"])
def test_a_request_that_is_not_an_object_is_invalid(handler: Recorder, frame: str) -> None:
    assert_error(call(frame, handler), None, -32600, "bad_request", "JSON object")
    assert handler.calls == []


@pytest.mark.parametrize("jsonrpc_value", ["absent", "1.0", 2.0, 2, None, "2.0 "])
def test_jsonrpc_missing_or_wrong_is_invalid_and_echoes_a_valid_id(
        handler: Recorder, jsonrpc_value: Any) -> None:
    frame = request("ping", 9)
    if jsonrpc_value == "absent":
        del frame["jsonrpc"]
    else:
        frame["jsonrpc"] = jsonrpc_value
    assert_error(call(frame, handler), 9, -32600, "bad_request", "jsonrpc")
    assert handler.calls == []


@pytest.mark.parametrize("bad_id", [True, False, 1.5, 1.0, {"a": 1}, [1], 1e400])
def test_an_id_of_the_wrong_type_is_invalid_with_a_null_id(handler: Recorder,
                                                           bad_id: Any) -> None:
    frame = json.dumps(request("ping", 0)).replace('"id": 0', '"id": ' + _json(bad_id))
    assert_error(call(frame, handler), None, -32600, "bad_request", "id must be")
    assert handler.calls == []


def _json(value: Any) -> str:
    return "1e400" if value == 1e400 else json.dumps(value)


@pytest.mark.parametrize("method", ["absent", "", None, 5, ["echo"], {"m": 1}])
def test_method_missing_empty_or_not_a_string_is_invalid(handler: Recorder,
                                                         method: Any) -> None:
    frame = request("x", "id-1")
    if method == "absent":
        del frame["method"]
    else:
        frame["method"] = method
    assert_error(call(frame, handler), "id-1", -32600, "bad_request", "method")
    assert handler.calls == []


def test_an_invalid_request_without_an_id_still_gets_an_error(handler: Recorder) -> None:
    # Specification section 5: the id could not be detected, so it is null; not silence.
    assert_error(call({"method": "ping"}, handler), None, -32600, "bad_request")
    assert_error(call({"jsonrpc": "2.0"}, handler), None, -32600, "bad_request")


def test_an_empty_batch_is_one_invalid_request(handler: Recorder) -> None:
    reply = call("[]", handler)
    assert isinstance(reply, dict)
    assert_error(reply, None, -32600, "bad_request", "empty batch")


def test_a_batch_over_the_maximum_is_one_invalid_request(handler: Recorder) -> None:
    assert jsonrpc.MAX_BATCH == 100
    frame = [request("ping", i) for i in range(jsonrpc.MAX_BATCH + 1)]
    reply = call(frame, handler)
    assert isinstance(reply, dict)
    assert_error(reply, None, -32600, "bad_request", "at most 100")
    assert handler.calls == []


def test_a_batch_of_exactly_the_maximum_is_run(handler: Recorder) -> None:
    frame = [request("ping", i) for i in range(jsonrpc.MAX_BATCH)]
    reply = call(frame, handler)
    assert [r["id"] for r in reply] == list(range(jsonrpc.MAX_BATCH))
    assert len(handler.calls) == jsonrpc.MAX_BATCH


# -- -32601 method not found -----------------------------------------------------------------

def test_an_unknown_method_is_method_not_found(handler: Recorder) -> None:
    reply = call(request("session.nope", "a"), handler)
    assert_error(reply, "a", -32601, "method_not_found", "session.nope")


def test_method_not_found_message_is_bounded() -> None:
    error = jsonrpc.method_not_found("m" * 10_000)
    assert error.code == -32601 and len(error.message) < 200


# -- -32602 invalid params -------------------------------------------------------------------

@pytest.mark.parametrize("params", [[1, 2], [], "text", 5, True])
def test_params_that_are_not_an_object_are_invalid_params(handler: Recorder,
                                                          params: Any) -> None:
    reply = call(request("echo", 3, params=params), handler)
    assert_error(reply, 3, -32602, "bad_request", "params must be an object")
    assert handler.calls == []


# -- -32603 internal error -------------------------------------------------------------------

def test_an_unexpected_exception_is_logged_and_answered_without_details(
        handler: Recorder, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="blueprints.jsonrpc"):
        raw = jsonrpc.handle(json.dumps(request("boom", 4)), handler)
    assert raw is not None
    assert_error(json.loads(raw), 4, -32603, "internal_error", "internal error")
    assert "Traceback" not in raw and "secret detail" not in raw and "ValueError" not in raw
    records = [r for r in caplog.records if r.name == "blueprints.jsonrpc"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR and "boom" in records[0].getMessage()
    assert records[0].exc_info is not None and records[0].exc_info[0] is ValueError
    assert "secret detail" in caplog.text and "Traceback" in caplog.text


def test_an_unexpected_exception_in_a_notification_is_logged_but_not_answered(
        handler: Recorder, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="blueprints.jsonrpc"):
        assert call(notice("boom"), handler) is None
    assert any(r.exc_info for r in caplog.records if r.name == "blueprints.jsonrpc")


@pytest.mark.parametrize("value", [float("nan"), object()])
def test_a_result_that_cannot_be_encoded_is_an_internal_error(value: Any) -> None:
    reply = jsonrpc.handle(json.dumps(request("x", 1)), lambda method, params: value)
    assert reply is not None
    assert_error(json.loads(reply), 1, -32603, "internal_error")


# -- Tether errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("which, code", [
    ("not_found", -32001), ("session_busy", -32002), ("already_resolved", -32003),
    ("unauthorized", -32004), ("forbidden", -32004), ("bad_request", -32602),
    ("payload_too_large", -32602), ("unsupported_media_type", -32602),
])
def test_tether_errors_map_through_the_table(handler: Recorder, which: str, code: int) -> None:
    assert JSONRPC_CODE[which] == code
    reply = call(request("raise", "r", params={"which": which}), handler)
    assert_error(reply, "r", code, which, ERRORS[which].message)  # type: ignore[attr-defined]


def test_tether_error_codes_not_in_the_table_are_internal(handler: Recorder) -> None:
    assert_error(call(request("raise", 1, params={"which": "strange"}), handler), 1, -32603,
                 "not_in_any_table", "odd")
    assert_error(call(request("raise", 2, params={"which": "base"}), handler), 2, -32603,
                 "internal_error", "plain")


def test_rpc_error_without_a_tether_code_has_no_data(handler: Recorder) -> None:
    reply = call(request("raise", 1, params={"which": "rpc"}), handler)
    assert_error(reply, 1, -32000, None, "custom")


def test_tether_errors_are_not_logged_as_failures(handler: Recorder,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="blueprints.jsonrpc"):
        call(request("raise", 1, params={"which": "not_found"}), handler)
    assert not [r for r in caplog.records if r.name == "blueprints.jsonrpc"]


# -- notifications never get a reply ---------------------------------------------------------

@pytest.mark.parametrize("frame", [
    notice("session.nope"),
    notice("echo", params=[1]),
    notice("raise", params={"which": "not_found"}),
    notice("raise", params={"which": "rpc"}),
])
def test_notifications_get_no_reply_even_on_error(handler: Recorder, frame: Any) -> None:
    assert call(frame, handler) is None


# -- batches ---------------------------------------------------------------------------------

def test_a_batch_gets_its_replies_in_order_without_the_notifications(handler: Recorder) -> None:
    frame = [
        request("echo", 1, params={"n": 1}),
        notice("echo", params={"n": "silent"}),
        {"jsonrpc": "1.0", "id": 2, "method": "echo"},
        request("missing", 3),
        5,
        request("raise", "four", params={"which": "session_busy"}),
        notice("boom"),
        request("echo", 6, params=[1]),
        request("boom", 7),
        {"jsonrpc": "2.0", "id": True, "method": "echo"},
        [request("echo", 8)],
        request("ping", 9),
    ]
    replies = call(frame, handler)
    assert isinstance(replies, list)
    summary = [(r["id"], r["error"]["code"] if "error" in r else r["result"]) for r in replies]
    assert summary == [(1, {"n": 1}), (2, -32600), (3, -32601), (None, -32600),
                       ("four", -32002), (6, -32602), (7, -32603), (None, -32600),
                       (None, -32600), (9, {"pong": True})]
    assert [m for m, _ in handler.calls] == ["echo", "echo", "missing", "raise", "boom",
                                             "boom", "ping"]


def test_a_batch_of_only_notifications_gets_no_reply(handler: Recorder) -> None:
    frame = [notice("echo", params={"n": 1}), notice("missing"), notice("boom"),
             notice("echo", params=[1])]
    assert jsonrpc.handle(json.dumps(frame), handler) is None
    assert [m for m, _ in handler.calls] == ["echo", "missing", "boom"]


def test_a_batch_of_one_is_still_an_array(handler: Recorder) -> None:
    assert call([request("ping", 1)], handler) == [{"jsonrpc": "2.0", "id": 1,
                                                    "result": {"pong": True}}]


def test_a_batch_of_invalid_members_gets_one_error_each(handler: Recorder) -> None:
    replies = call([1, 2, 3], handler)
    assert len(replies) == 3
    for reply in replies:
        assert_error(reply, None, -32600, "bad_request")


# -- the encoders ----------------------------------------------------------------------------

def test_notification_and_error_encoders() -> None:
    assert jsonrpc.notification("inbox", {"revision": 1}) == (
        '{"jsonrpc":"2.0","method":"inbox","params":{"revision":1}}')
    error = jsonrpc.RpcError.from_tether(NotFound("gone"))
    assert (error.code, error.message, error.tether_code) == (-32001, "gone", "not_found")
    assert json.loads(jsonrpc.error(5, error)) == {
        "jsonrpc": "2.0", "id": 5,
        "error": {"code": -32001, "message": "gone", "data": {"code": "not_found"}}}
