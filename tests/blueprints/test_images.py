"""Images in a prompt over HTTP (issue 18, item 5): kept and referenced by the user event,
served back to the session's clients, refused with 413, 415 or 400, queued with their
prompt, removed with their session."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from PIL import Image

from tests.blueprints.test_api import error_code, wait_pending
from tests.tether.test_images import b64, picture
from tether.sessions import SessionRegistry


@pytest.fixture
def sid(client: FlaskClient) -> str:
    return client.post("/api/sessions", json={}).get_json()["id"]


def user_events(core: SessionRegistry, sid: str) -> list[dict[str, Any]]:
    return [dict(e.payload) for e in core.get(sid).log.read_after(0) if e.kind == "user"]


def test_a_prompt_with_images_refers_to_them_and_serves_them(client: FlaskClient,
                                                             core: SessionRegistry,
                                                             sid: str) -> None:
    png, jpeg = picture("image/png"), picture("image/jpeg")
    answer = client.post(f"/api/sessions/{sid}/prompt", json={
        "text": "look at these", "images": [{"media_type": "image/png", "data": b64(png)},
                                            {"media_type": "image/jpeg", "data": b64(jpeg)}]})
    assert answer.status_code == 202, answer.get_json()
    user = user_events(core, sid)[0]
    assert user["text"] == "look at these"
    refs = user["images"]
    assert [r["media_type"] for r in refs] == ["image/png", "image/jpeg"]
    assert [r["bytes"] for r in refs] == [len(png), len(jpeg)]
    served = client.get(f"/api/sessions/{sid}/images/{refs[1]['sha256']}")
    assert served.status_code == 200 and served.mimetype == "image/jpeg"
    assert served.data == jpeg
    assert "base64" not in str(user)  # the log holds references, not the bytes
    other = client.post("/api/sessions", json={}).get_json()["id"]
    assert client.get(f"/api/sessions/{other}/images/{refs[1]['sha256']}").status_code == 404


def test_refusals(client: FlaskClient, core: SessionRegistry, sid: str) -> None:
    png = b64(picture("image/png"))
    cases = [
        ({"media_type": "image/jpeg", "data": png}, 415, "unsupported_media_type"),
        ({"media_type": "image/bmp", "data": png}, 415, "unsupported_media_type"),
        ({"media_type": "image/png", "data": "%%%"}, 400, "bad_request"),
        ({"media_type": "image/png"}, 400, "bad_request"),
    ]
    for image, status, code in cases:
        answer = client.post(f"/api/sessions/{sid}/prompt", json={"text": "x", "images": [image]})
        assert (answer.status_code, error_code(answer)) == (status, code), image
    six = [{"media_type": "image/png", "data": png}] * 6
    answer = client.post(f"/api/sessions/{sid}/prompt", json={"text": "x", "images": six})
    assert answer.status_code == 400 and "images" in answer.get_json()["error"]["message"]
    assert user_events(core, sid) == []  # no turn began


def test_an_image_over_the_limit_is_413(make_app: Any) -> None:
    raw = picture("image/png", (256, 256))
    client = make_app(TETHER_MAX_IMAGE_BYTES=len(raw) - 1).test_client()
    session = client.post("/api/sessions", json={}).get_json()["id"]
    answer = client.post(f"/api/sessions/{session}/prompt", json={
        "text": "big", "images": [{"media_type": "image/png", "data": b64(raw)}]})
    assert answer.status_code == 413 and error_code(answer) == "payload_too_large"


def test_a_prompt_body_may_be_larger_than_other_bodies(client: FlaskClient, sid: str) -> None:
    noise = io.BytesIO()
    Image.frombytes("RGB", (400, 400), os.urandom(400 * 400 * 3)).save(noise, "PNG")
    images = [{"media_type": "image/png", "data": b64(noise.getvalue())}] * 2
    body = json.dumps({"text": "two screenshots", "images": images}).encode()
    assert len(body) > client.application.config["MAX_CONTENT_LENGTH"]  # every other route's
    answer = client.post(f"/api/sessions/{sid}/prompt", data=body,
                         headers={"Content-Type": "application/json"})
    assert answer.status_code == 202, answer.get_json()
    # Another route keeps its own limit.
    answer = client.patch(f"/api/sessions/{sid}", data=body,
                          headers={"Content-Type": "application/json"})
    assert answer.status_code == 413


def test_queued_prompts_keep_their_images(client: FlaskClient, core: SessionRegistry,
                                          sid: str) -> None:
    client.post(f"/api/sessions/{sid}/prompt", json={"text": "$ true"})
    wait_pending(core, sid)
    gif = picture("image/gif")
    answer = client.post(f"/api/sessions/{sid}/prompt", json={
        "text": "next", "queue": True, "images": [{"media_type": "image/gif", "data": b64(gif)}]})
    assert answer.get_json() == {"queued": 1}
    queue = client.get(f"/api/sessions/{sid}").get_json()["queue"]
    assert queue[0]["images"][0]["media_type"] == "image/gif"
    client.post(f"/api/sessions/{sid}/cancel")
    assert core.get(sid).wait_idle(10)
    client.post(f"/api/sessions/{sid}/queue/1/send?queue_id={queue[0]['queue_id']}")
    deadline = time.monotonic() + 10
    while len(user_events(core, sid)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert user_events(core, sid)[1]["images"] == queue[0]["images"]


def test_deleting_a_session_removes_its_images(client: FlaskClient, core: SessionRegistry,
                                               sid: str) -> None:
    client.post(f"/api/sessions/{sid}/prompt", json={
        "text": "x", "images": [{"media_type": "image/png", "data": b64(picture("image/png"))}]})
    folder = Path(core.settings.data_dir) / "images" / sid
    assert any(folder.iterdir())
    core.get(sid).wait_idle(10)
    assert client.delete(f"/api/sessions/{sid}").status_code == 204
    assert not folder.exists()
