"""Request bodies in-process: what ``json_body`` and ``validate`` refuse that JSON allows, a
streamed (chunked) body over the limit, and the body deadline's answer. The full table of
malformed inputs against a real server, and a body trickled past the deadline, are
tests/e2e/test_hostile.py."""

from __future__ import annotations

import io
from typing import Any

import gevent.event
import pytest
from flask import Flask
from flask.testing import FlaskClient

from blueprints import bodies
from blueprints.api import prompt_body_limit
from blueprints.bodies import CloseWhenAsked, Prompt, validate
from tether.config import Settings
from tether.errors import BadRequest

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def sid(client: FlaskClient) -> str:
    return client.post("/api/sessions").get_json()["id"]


@pytest.mark.parametrize("path, body", [
    ("/prompt", b'{"text": "a\\ud800b"}'),
    ("/prompt", b'{"text": "\\udfff"}'),
    ("", b'{"title": "\\ud83d"}'),
    ("/clarify/r1", b'{"answers": {"\\ud800": "a"}}'),
])
def test_a_lone_surrogate_is_a_bad_request(client: FlaskClient, sid: str, path: str,
                                           body: bytes) -> None:
    # Valid JSON, but no Unicode text: it could not be sent to an agent or echoed as UTF-8.
    method = client.patch if path == "" else client.post
    response = method(f"/api/sessions/{sid}{path}", data=body, headers=JSON)
    assert response.status_code == 400
    assert "lone surrogate" in response.get_json()["error"]["message"]
    assert client.get(f"/api/sessions/{sid}").get_json()["turn"] == 0


def test_a_surrogate_pair_is_fine(client: FlaskClient, sid: str) -> None:
    response = client.patch(f"/api/sessions/{sid}", data=b'{"title": "\\ud83d\\ude00"}',
                            headers=JSON)
    assert response.status_code == 200 and response.get_json()["title"] == "\U0001f600"


def test_validate_refuses_lone_surrogates_in_params_too() -> None:
    with pytest.raises(BadRequest, match="params: a string holds a lone surrogate"):
        validate(Prompt, {"text": "ok", "extra": ["\ud800"]}, "params")


def test_duplicate_keys_the_last_wins(client: FlaskClient, sid: str) -> None:
    response = client.patch(f"/api/sessions/{sid}", data=b'{"title": "a", "title": "b"}',
                            headers=JSON)
    assert response.get_json()["title"] == "b"
    refused = client.post(f"/api/sessions/{sid}/prompt", data=b'{"text": "hi", "text": 5}',
                          headers=JSON)
    assert refused.status_code == 400


def streamed(client: FlaskClient, sid: str, body: bytes) -> tuple[int, str]:
    """POST ``body`` with no Content-Length, as a server that de-chunks it hands it over."""
    response = client.post(f"/api/sessions/{sid}/prompt", input_stream=io.BytesIO(body),
                           headers=JSON, environ_overrides={"wsgi.input_terminated": True})
    return response.status_code, response.get_json()["error"]["code"] if \
        response.status_code >= 400 else ""


def test_a_streamed_body_over_the_limit_is_413_not_cut_short(client: FlaskClient,
                                                              sid: str) -> None:
    limit = prompt_body_limit(client.application.extensions["tether"].settings)
    # Cut at the limit this would be valid JSON; it must not be parsed as such.
    body = b'{"text": "hi"}' + b" " * (limit - 14) + b"garbage"
    assert streamed(client, sid, body) == (413, "payload_too_large")
    assert streamed(client, sid, b'{"text": 5}') == (400, "bad_request")


# -- the body deadline (TETHER_BODY_TIMEOUT) -------------------------------------------------

class StalledBody(io.BytesIO):
    """A 100-byte body whose client sends none of it: a read parks on gevent's hub, as a read
    from a monkey-patched socket does, until the deadline's gevent.Timeout ends it."""

    def __init__(self) -> None:
        super().__init__(b" " * 100)

    def read(self, size: int | None = -1) -> bytes:
        gevent.event.Event().wait()  # never set
        raise AssertionError("a stalled read returned")

    read1 = readline = read

    def readinto(self, buffer: Any) -> int:
        return len(self.read())


def test_the_body_timeout_setting() -> None:
    assert Settings.from_env().body_timeout_seconds == 10.0
    assert Settings.from_env({"TETHER_BODY_TIMEOUT": "2.5"}).body_timeout_seconds == 2.5
    for bad in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(ValueError, match="TETHER_BODY_TIMEOUT"):
            Settings.from_env({"TETHER_BODY_TIMEOUT": bad})


@pytest.mark.parametrize("method, path", [
    ("POST", "/api/sessions"), ("PATCH", "/api/sessions/{sid}"),
    ("POST", "/api/sessions/{sid}/prompt"), ("POST", "/api/sessions/{sid}/approvals/r1"),
    ("POST", "/api/sessions/{sid}/clarify/r1"), ("POST", "/login")])
def test_a_body_past_the_deadline_is_408_and_closes_the_connection(
        make_app: Any, monkeypatch: pytest.MonkeyPatch, method: str, path: str) -> None:
    # Reads are cooperative under gevent only; here the stalled read is, so it is enforced.
    monkeypatch.setattr(bodies, "_reads_cooperate", lambda: True)
    app: Flask = make_app(TETHER_BODY_TIMEOUT=0.05)
    client = app.test_client()
    sid = client.post("/api/sessions").get_json()["id"]
    content_type = "application/x-www-form-urlencoded" if path == "/login" else \
        "application/json"
    response = client.open(path.format(sid=sid), method=method, input_stream=StalledBody(),
                           content_type=content_type)
    assert response.status_code == 408
    assert response.headers["Connection"] == "close"
    error = response.get_json()["error"]
    assert error["code"] == "request_timeout"
    assert "0.05 s" in error["message"] and "TETHER_BODY_TIMEOUT" in error["message"]
    # Nothing else was lost: the session is as it was, and the next request is served.
    assert client.get(f"/api/sessions/{sid}").get_json()["turn"] == 0
    assert client.post(f"/api/sessions/{sid}/prompt", json={"text": "hi"}).status_code == 202


def test_without_cooperative_reads_the_deadline_is_not_enforced(make_app: Any) -> None:
    # The Flask test client: no monkey-patching, bodies in memory; a body is read as before.
    assert not bodies._reads_cooperate()
    client = make_app(TETHER_BODY_TIMEOUT=0.001).test_client()
    sid = client.post("/api/sessions", json={"title": "t"}).get_json()["id"]
    assert client.post(f"/api/sessions/{sid}/prompt", json={"text": "hi"}).status_code == 202


class GunicornLikeResponse:
    """What gunicorn hands an app as ``start_response``: a bound method of its response."""

    def __init__(self) -> None:
        self.closing = False
        self.headers: list[tuple[str, str]] = []

    def force_close(self) -> None:
        self.closing = True

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> None:
        self.headers = headers


@pytest.mark.parametrize("headers, closing", [
    ([("Content-Type", "application/json"), ("Connection", "close")], True),
    ([("connection", " Close ")], True),
    ([("Content-Type", "application/json")], False),
    ([("Connection", "keep-alive")], False),
])
def test_close_when_asked_forces_gunicorn_to_close(headers: list[tuple[str, str]],
                                                   closing: bool) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("408 REQUEST TIMEOUT", headers)
        return [b"{}"]

    server = GunicornLikeResponse()
    assert CloseWhenAsked(app)({}, server.start_response) == [b"{}"]
    assert server.closing is closing
    assert server.headers == headers  # passed on untouched


def test_close_when_asked_leaves_other_servers_alone() -> None:
    # A plain function (pywsgi, werkzeug: they read the header themselves) has no __self__.
    seen = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("408 REQUEST TIMEOUT", [("Connection", "close")])
        return []

    CloseWhenAsked(app)({}, lambda status, headers, *exc: seen.append((status, headers)))
    assert seen == [("408 REQUEST TIMEOUT", [("Connection", "close")])]
