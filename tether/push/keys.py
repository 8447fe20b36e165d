"""The server's VAPID key pair (RFC 8292): its public key is the ``applicationServerKey``
browsers subscribe with, its private key signs every push.

The private key is ``TETHER_VAPID_PRIVATE_KEY`` (the raw 32-byte P-256 scalar in URL-safe
base64, as VAPID key generators print it), else the one kept in ``<data dir>/vapid.key``
(made at the first start, mode 0600, in the same form). A browser's subscription belongs to
one public key: a new key means every device subscribes again.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import Vapid

from tether.datadir import read_or_create

#: The key's file in the data dir, when ``TETHER_VAPID_PRIVATE_KEY`` is not set.
KEY_FILE = "vapid.key"
#: The contact the push services may write to, when ``TETHER_VAPID_SUBJECT`` is not set.
DEFAULT_SUBJECT = "mailto:tether@localhost"


def b64(data: bytes) -> str:
    """URL-safe base64 without padding (RFC 7515 appendix C)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    """The bytes of URL-safe base64, padded or not.

    :raises ValueError: not base64.
    """
    text = text.strip()
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("not URL-safe base64") from exc


def new_private_key() -> str:
    """A new P-256 private key: its raw 32-byte scalar in URL-safe base64."""
    key = ec.generate_private_key(ec.SECP256R1())
    return b64(key.private_numbers().private_value.to_bytes(32, "big"))


def private_key_from(text: str) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key of its raw 32-byte scalar in URL-safe base64.

    :raises ValueError: not 32 bytes of URL-safe base64, or not a valid scalar.
    """
    raw = unb64(text)
    if len(raw) != 32:
        raise ValueError(f"a VAPID private key is 32 bytes in URL-safe base64; this is "
                         f"{len(raw)} bytes")
    return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())


@dataclass(frozen=True)
class VapidKeys:
    """The key pair and the subject (``mailto:`` or ``https:``) the JWTs carry in ``sub``."""

    private_key: ec.EllipticCurvePrivateKey
    subject: str = DEFAULT_SUBJECT

    @property
    def public_key(self) -> str:
        """The uncompressed public point (65 bytes, ``04 || X || Y``) in URL-safe base64:
        ``GET /api/push``'s ``vapid_public_key``."""
        return b64(self.private_key.public_key().public_bytes(Encoding.X962,
                                                              PublicFormat.UncompressedPoint))

    def raw(self) -> str:
        """The private key as it is kept: its 32-byte scalar in URL-safe base64."""
        return b64(self.private_key.private_numbers().private_value.to_bytes(32, "big"))

    def vapid(self) -> Vapid:
        """A py-vapid signer for pywebpush (``vapid t=<JWT>, k=<public key>``)."""
        return Vapid(private_key=self.private_key)

    def claims(self) -> dict[str, str | int]:
        """Fresh claims for one push; pywebpush fills in ``aud`` (the endpoint's origin) and
        ``exp`` (12 hours on), and changes the dict it is given, so one per push."""
        return {"sub": self.subject}


def load_keys(data_dir: Path, private_key: str | None, subject: str | None) -> VapidKeys:
    """The server's keys: ``private_key`` when given, else the data dir's, made if missing.

    :raises ValueError: the key given, or the kept one, is not a P-256 key.
    """
    text = private_key or read_or_create(data_dir / KEY_FILE, new_private_key)
    return VapidKeys(private_key_from(text), subject or DEFAULT_SUBJECT)
