"""Request bodies in-process: what ``json_body`` and ``validate`` refuse that JSON allows, and
a streamed (chunked) body over the limit. The full table of malformed inputs against a real
server is tests/e2e/test_hostile.py."""

from __future__ import annotations

import io

import pytest
from flask.testing import FlaskClient

from blueprints.bodies import Prompt, validate
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
    limit = client.application.config["MAX_CONTENT_LENGTH"]
    # Cut at the limit this would be valid JSON; it must not be parsed as such.
    body = b'{"text": "hi"}' + b" " * (limit - 14) + b"garbage"
    assert streamed(client, sid, body) == (413, "payload_too_large")
    assert streamed(client, sid, b'{"text": 5}') == (400, "bad_request")
