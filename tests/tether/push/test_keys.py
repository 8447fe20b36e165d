"""The VAPID key pair: made once and kept 0600, or given; its public key's form."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.push.keys import (
    KEY_FILE,
    VapidKeys,
    load_keys,
    new_private_key,
    private_key_from,
    unb64,
)


def test_made_at_the_first_start_and_kept(tmp_path: Path) -> None:
    first = load_keys(tmp_path, None, None)
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert load_keys(tmp_path, None, None).public_key == first.public_key
    assert first.subject == "mailto:tether@localhost"


def test_given_key_wins_over_the_kept_one(tmp_path: Path) -> None:
    load_keys(tmp_path, None, None)
    given = new_private_key()
    keys = load_keys(tmp_path, given, "https://tether.example")
    assert keys.raw() == given and keys.subject == "https://tether.example"
    assert keys.public_key == VapidKeys(private_key_from(given)).public_key


def test_public_key_is_the_uncompressed_point() -> None:
    raw = unb64(VapidKeys(private_key_from(new_private_key())).public_key)
    assert len(raw) == 65 and raw[0] == 4


@pytest.mark.parametrize("text", ["", "AAAA", "not base64!", new_private_key() + "AAAA"])
def test_bad_keys_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        private_key_from(text)


def test_claims_are_fresh_per_push() -> None:
    keys = VapidKeys(private_key_from(new_private_key()), "mailto:a@b.example")
    one = keys.claims()
    one["aud"] = "https://x.example"
    assert keys.claims() == {"sub": "mailto:a@b.example"}
