"""Images in a prompt (issue 18, item 5): checked, kept beside the session, sent to the agent.

A prompt may carry up to :data:`MAX_IMAGES` images, each ``{"media_type", "data"}`` with
``data`` in base64 (RFC 4648 section 4). Each is decoded strictly, held to
``TETHER_MAX_IMAGE_BYTES`` (decoded), and parsed with Pillow to be the image its media type
says (a PNG's bytes said to be a JPEG, or no image at all, is refused), never trusted from the
client. A kept image is a file ``<TETHER_DATA_DIR>/images/<session id>/<sha256>`` (mode
0600), named by its content, so the log's ``user`` event carries only a reference
(:class:`ImageRef`: ``{"sha256", "media_type", "bytes"}``), never megabytes of base64; the
turn reads the files back and hands them to Claude Code as ``image`` content blocks of the
user message (the Messages API's base64 image source; PROTOCOLS.md 1.2). Across hosts the data
directory is shared, so every worker finds them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from tether.errors import BadRequest, NotFound, PayloadTooLarge, UnsupportedMediaType

#: Images in one prompt, at most.
MAX_IMAGES = 5
#: The media types the Messages API takes, and the format Pillow must find for each.
MEDIA_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF",
               "image/webp": "WEBP"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A kept image: its SHA-256 (hex), media type and size in bytes."""

    sha256: str
    media_type: str
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "media_type": self.media_type, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, held: Mapping[str, Any]) -> ImageRef:
        """:raises ValueError: not an image reference."""
        sha, media_type, size = held.get("sha256"), held.get("media_type"), held.get("bytes")
        if not isinstance(sha, str) or not _SHA256.match(sha) or media_type not in MEDIA_TYPES \
                or not isinstance(size, int) or isinstance(size, bool):
            raise ValueError(f"not an image reference: {dict(held)!r:.200}")
        return cls(sha, str(media_type), size)


def decode(image: Mapping[str, Any], max_bytes: int, index: int = 1) -> tuple[bytes, str]:
    """One image of a prompt, checked: its bytes and media type.

    :param index: its place in the prompt (1 is the first), for the error messages.
    :raises UnsupportedMediaType: another media type, or bytes that are not that image (415).
    :raises PayloadTooLarge: over ``max_bytes`` decoded (413).
    :raises BadRequest: ``data`` is not base64.
    """
    media_type = image.get("media_type")
    if media_type not in MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"image {index}: media_type {str(media_type)[:40]!r} is not one of "
            f"{', '.join(MEDIA_TYPES)}")
    data = image.get("data")
    if not isinstance(data, str):
        raise BadRequest(f"image {index}: data must be a base64 string")
    if len(data) > 4 * (max_bytes // 3 + 1) + 4:  # its decoded size, before decoding it
        raise PayloadTooLarge(f"image {index} is over TETHER_MAX_IMAGE_BYTES "
                              f"({max_bytes:,} bytes decoded)")
    try:
        raw = binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"image {index}: data is not base64 (RFC 4648 section 4)") from None
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"image {index} is {len(raw):,} bytes, over "
                              f"TETHER_MAX_IMAGE_BYTES ({max_bytes:,})")
    expected = MEDIA_TYPES[str(media_type)]
    try:
        with Image.open(io.BytesIO(raw), formats=[expected]) as picture:
            picture.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError):
        raise UnsupportedMediaType(f"image {index}: its bytes are not a {media_type} "
                                   "image") from None
    return raw, str(media_type)


def check_all(images: Sequence[Mapping[str, Any]] | None,
              max_bytes: int) -> list[tuple[bytes, str]]:
    """Every image of a prompt, checked (:func:`decode`), in order.

    :raises BadRequest: more than :data:`MAX_IMAGES`.
    """
    images = images or []
    if len(images) > MAX_IMAGES:
        raise BadRequest(f"a prompt carries at most {MAX_IMAGES} images, not {len(images)}")
    return [decode(image, max_bytes, n) for n, image in enumerate(images, 1)]


class ImageStore:
    """The images of every session, under ``<data dir>/images/<session id>/``."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "images"

    def save(self, session_id: str, raw: bytes, media_type: str) -> ImageRef:
        """Keep ``raw`` (checked by :func:`decode`) for ``session_id``; the same bytes twice
        are one file."""
        sha = hashlib.sha256(raw).hexdigest()
        folder = self.root / session_id
        target = folder / sha
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            handle, temporary = tempfile.mkstemp(dir=folder, prefix=".part-")
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(raw)
                os.chmod(temporary, 0o600)
                os.replace(temporary, target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        return ImageRef(sha, media_type, len(raw))

    def load(self, session_id: str, sha256: str) -> bytes:
        """A kept image's bytes.

        :raises NotFound: no such image of that session.
        """
        if not _SHA256.match(sha256):
            raise NotFound(f"no image {sha256[:70]!r}")
        try:
            return (self.root / session_id / sha256).read_bytes()
        except OSError:
            raise NotFound(f"no image {sha256[:70]!r} in this session") from None

    def remove(self, session_id: str) -> None:
        """Forget a deleted session's images."""
        shutil.rmtree(self.root / session_id, ignore_errors=True)


def sniff(raw: bytes) -> str:
    """The media type of a kept image's bytes (they were checked when kept)."""
    if raw.startswith(b"\x89PNG"):
        return "image/png"
    if raw.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if raw.startswith(b"GIF8"):
        return "image/gif"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def content_blocks(store: ImageStore, session_id: str, text: str,
                   refs: Iterable[ImageRef]) -> list[dict[str, Any]] | str:
    """A user message's ``content`` for the agent: the text alone when there is no image,
    else the images as base64 ``image`` blocks followed by the text (Messages API content
    blocks; an image that went missing is left out, the text says nothing of it)."""
    blocks: list[dict[str, Any]] = []
    for ref in refs:
        try:
            raw = store.load(session_id, ref.sha256)
        except NotFound:
            continue
        blocks.append({"type": "image", "source": {
            "type": "base64", "media_type": ref.media_type,
            "data": base64.b64encode(raw).decode("ascii")}})
    if not blocks:
        return text
    return [*blocks, {"type": "text", "text": text}]
