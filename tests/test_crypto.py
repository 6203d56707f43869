"""Secrets at rest: Fernet from any key string, rotation with MultiFernet."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollhouse.crypto import SecretBox, require_box
from tollhouse.errors import ConfigError, ValidationFailed


@given(st.text())
def test_what_is_encrypted_decrypts_to_itself(plaintext):
    box = SecretBox(["correct horse battery staple"])
    token = box.encrypt(plaintext)
    assert len(plaintext) < 8 or plaintext not in token  # short strings occur by chance
    assert box.decrypt(token) == plaintext


def test_rotation_keeps_old_secrets_readable_and_moves_them_to_the_new_key():
    old = SecretBox.from_setting("old-key")
    assert old is not None
    token = old.encrypt("smtp-password")
    both = SecretBox.from_setting("new-key, old-key")  # newest first
    assert both is not None
    assert both.decrypt(token) == "smtp-password"  # old keys decrypt
    rotated = both.rotate(token)
    new_only = SecretBox.from_setting("new-key")
    assert new_only is not None
    assert new_only.decrypt(rotated) == "smtp-password"  # the new key encrypted it
    with pytest.raises(ConfigError, match="secrets rotate"):
        new_only.decrypt(token)  # the old token needs the old key


def test_no_key_means_no_box_and_a_clear_400_when_a_secret_is_stored():
    assert SecretBox.from_setting(None) is None
    assert SecretBox.from_setting("  ") is None
    with pytest.raises(ValidationFailed, match="TOLLHOUSE_SECRET_KEY"):
        require_box(None)


def test_a_tampered_token_is_refused():
    box = SecretBox(["k"])
    token = box.encrypt("secret")
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(ConfigError):
        box.decrypt(tampered)
