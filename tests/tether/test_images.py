"""Images in a prompt (issue 18, item 5): what is accepted, what is refused with which error,
how they are kept and how they reach the agent."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from tether.errors import BadRequest, NotFound, PayloadTooLarge, UnsupportedMediaType
from tether.images import (
    MAX_IMAGES,
    ImageRef,
    ImageStore,
    check_all,
    content_blocks,
    decode,
    sniff,
)

FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}


def picture(media_type: str, size: tuple[int, int] = (8, 6)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, FORMATS[media_type])
    return out.getvalue()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize("media_type", sorted(FORMATS))
def test_each_media_type_is_taken_as_itself(media_type: str) -> None:
    raw = picture(media_type)
    assert decode({"media_type": media_type, "data": b64(raw)}, 1 << 20) == (raw, media_type)
    assert sniff(raw) == media_type


def test_bytes_that_are_not_the_image_named_are_415() -> None:
    png = picture("image/png")
    with pytest.raises(UnsupportedMediaType, match="not a image/jpeg image"):
        decode({"media_type": "image/jpeg", "data": b64(png)}, 1 << 20)
    with pytest.raises(UnsupportedMediaType):
        decode({"media_type": "image/png", "data": b64(b"just some text")}, 1 << 20)
    with pytest.raises(UnsupportedMediaType):  # a PNG cut short fails its check
        decode({"media_type": "image/png", "data": b64(png[:40])}, 1 << 20)
    with pytest.raises(UnsupportedMediaType, match="image/svg"):
        decode({"media_type": "image/svg+xml", "data": b64(b"<svg/>")}, 1 << 20)


def test_too_big_is_413_and_not_base64_is_400() -> None:
    raw = picture("image/png", (64, 64))
    with pytest.raises(PayloadTooLarge, match="over TETHER_MAX_IMAGE_BYTES"):
        decode({"media_type": "image/png", "data": b64(raw)}, len(raw) - 1)
    with pytest.raises(PayloadTooLarge):  # refused before decoding
        decode({"media_type": "image/png", "data": "A" * 10_000}, 100)
    with pytest.raises(BadRequest, match="not base64"):
        decode({"media_type": "image/png", "data": "not base64!"}, 1 << 20)
    with pytest.raises(BadRequest):
        decode({"media_type": "image/png", "data": 5}, 1 << 20)


def test_at_most_five_images_and_their_places_are_named() -> None:
    good = {"media_type": "image/png", "data": b64(picture("image/png"))}
    assert len(check_all([good] * MAX_IMAGES, 1 << 20)) == MAX_IMAGES
    with pytest.raises(BadRequest, match="at most 5"):
        check_all([good] * (MAX_IMAGES + 1), 1 << 20)
    with pytest.raises(UnsupportedMediaType, match="image 2"):
        check_all([good, {"media_type": "image/gif", "data": good["data"]}], 1 << 20)
    assert check_all(None, 1) == []


def test_kept_images_are_named_by_their_content_and_private(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    raw = picture("image/gif")
    ref = store.save("s1", raw, "image/gif")
    assert ref == store.save("s1", raw, "image/gif")  # the same bytes: one file
    assert store.load("s1", ref.sha256) == raw
    assert (tmp_path / "images" / "s1" / ref.sha256).stat().st_mode & 0o777 == 0o600
    assert ImageRef.from_dict(ref.as_dict()) == ref
    with pytest.raises(NotFound):
        store.load("s2", ref.sha256)  # another session's
    with pytest.raises(NotFound):
        store.load("s1", "../../etc/passwd")
    with pytest.raises(ValueError):
        ImageRef.from_dict({"sha256": "../x", "media_type": "image/gif", "bytes": 1})
    store.remove("s1")
    with pytest.raises(NotFound):
        store.load("s1", ref.sha256)


def test_the_agent_gets_image_blocks_before_the_text(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    raw = picture("image/webp")
    ref = store.save("s1", raw, "image/webp")
    assert content_blocks(store, "s1", "hi", []) == "hi"
    blocks = content_blocks(store, "s1", "what is this?", [ref])
    assert blocks == [{"type": "image", "source": {"type": "base64", "media_type": "image/webp",
                                                   "data": b64(raw)}},
                      {"type": "text", "text": "what is this?"}]
    gone = ImageRef("0" * 64, "image/png", 3)
    assert content_blocks(store, "s1", "still here", [gone]) == "still here"
