"""Secrets at rest: Fernet keys derived with HKDF from long key strings, rotation with
MultiFernet, and tokens of the old SHA-256 derivation still readable."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from tollhouse.crypto import SecretBox, require_box
from tollhouse.errors import ConfigError, SecretUnreadable, ValidationFailed

NEW = "new-key-0123456789abcdefghijklmnopqrstuv"
OLD = "old-key-0123456789abcdefghijklmnopqrstuv"


def sha256_fernet(key: str) -> Fernet:
    """The derivation Tollhouse used before: a bare SHA-256 of the key string."""
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


def hkdf_fernet(key: str) -> Fernet:
    """The documented derivation (docs/alerts.md), computed independently."""
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"tollhouse secret box v2")
    return Fernet(base64.urlsafe_b64encode(kdf.derive(key.encode())))


@given(st.text())
def test_what_is_encrypted_decrypts_to_itself(plaintext):
    box = SecretBox(["correct horse battery staple and more"])
    token = box.encrypt(plaintext)
    assert len(plaintext) < 8 or plaintext not in token  # short strings occur by chance
    assert box.decrypt(token) == plaintext


def test_rotation_keeps_old_secrets_readable_and_moves_them_to_the_new_key():
    old = SecretBox.from_setting(OLD)
    assert old is not None
    token = old.encrypt("smtp-password")
    both = SecretBox.from_setting(f"{NEW}, {OLD}")  # newest first
    assert both is not None
    assert both.decrypt(token) == "smtp-password"  # old keys decrypt
    rotated = both.rotate(token)
    new_only = SecretBox.from_setting(NEW)
    assert new_only is not None
    assert new_only.decrypt(rotated) == "smtp-password"  # the new key encrypted it
    with pytest.raises(SecretUnreadable, match="secrets rotate"):
        new_only.decrypt(token)  # the old token needs the old key


def test_no_key_means_no_box_and_a_clear_400_when_a_secret_is_stored():
    assert SecretBox.from_setting(None) is None
    assert SecretBox.from_setting("  ") is None
    with pytest.raises(ValidationFailed, match="TOLLHOUSE_SECRET_KEY"):
        require_box(None)


def test_a_tampered_token_is_refused():
    box = SecretBox([NEW])
    token = box.encrypt("secret")
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(SecretUnreadable):
        box.decrypt(tampered)


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("short", "at least 32 characters"),
        (f"{NEW[:20]},{NEW[20:]}", "comma"),  # one key split in two by a comma in it
        (f"{NEW},tail-of-a-key", "key 2 of 2"),
    ],
)
def test_keys_shorter_than_32_characters_are_refused_with_the_fix(setting, says):
    with pytest.raises(ConfigError, match=says) as refused:
        SecretBox.from_setting(setting)
    assert "openssl rand" in refused.value.message
    assert NEW[:20] not in refused.value.message  # the key itself is never echoed


def test_keys_are_derived_with_hkdf_not_a_bare_hash():
    token = SecretBox([NEW]).encrypt("hook-url")
    assert hkdf_fernet(NEW).decrypt(token.encode()) == b"hook-url"
    with pytest.raises(InvalidToken):
        sha256_fernet(NEW).decrypt(token.encode())


def test_tokens_of_the_old_derivation_decrypt_and_rotate_to_the_new_one():
    legacy = sha256_fernet(NEW).encrypt(b"smtp-password").decode()
    box = SecretBox([NEW])
    assert box.decrypt(legacy) == "smtp-password"  # existing installs keep working
    rotated = box.rotate(legacy)
    assert hkdf_fernet(NEW).decrypt(rotated.encode()) == b"smtp-password"


def test_a_short_old_key_stays_readable_as_a_decrypt_only_legacy_key():
    legacy = sha256_fernet("old").encrypt(b"s").decode()
    box = SecretBox.from_setting(f"{NEW},legacy:old")
    assert box is not None and box.decrypt(legacy) == "s"
    assert hkdf_fernet(NEW).decrypt(box.rotate(legacy).encode()) == b"s"
    with pytest.raises(ConfigError, match="first key"):
        SecretBox.from_setting("legacy:old")
