"""Secrets at rest: channel secrets, webhook URLs and SMTP passwords, encrypted with Fernet.

``TOLLHOUSE_SECRET_KEY`` holds one or more keys separated by commas, newest first. Each
is a high-entropy string of at least 32 characters (``openssl rand -base64 32``); the
Fernet key is derived from it with HKDF-SHA256 under a fixed context label. The length
rule is also what catches a comma inside a key, which would silently split it in two.
The first key encrypts; every key decrypts (``MultiFernet``), which is how keys rotate:
put the new key first, run ``tollhouse secrets rotate`` to re-encrypt what is stored,
then drop the old key.

Before HKDF, the Fernet key was a bare SHA-256 of the key string. Tokens made that way
still decrypt (each key is also tried under the old derivation, decrypt-only), and
``secrets rotate`` re-encrypts them under the new one. A key shorter than 32 characters
from such an install can only decrypt: list it after a new key as ``legacy:<key>``.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tollhouse.errors import ConfigError, SecretUnreadable, ValidationFailed

MIN_KEY_LENGTH = 32
LEGACY_PREFIX = "legacy:"
# Fixed context label: a key string used elsewhere derives a different key here. No
# salt: the keys are high-entropy (the length rule), which is what HKDF-Extract needs.
_CONTEXT = b"tollhouse secret box v2"
_FIX = (
    "generate a key with `openssl rand -base64 32`; keys are separated by commas, newest "
    "first, so a key must not contain a comma"
)


def _fernet(material: str) -> Fernet:
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_CONTEXT)
    return Fernet(base64.urlsafe_b64encode(kdf.derive(material.encode("utf-8"))))


def _legacy_fernet(material: str) -> Fernet:
    """The old derivation (bare SHA-256), for decrypting what it encrypted."""
    digest = hashlib.sha256(material.encode("utf-8")).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


class SecretBox:
    """Encrypts with the newest key, decrypts with any."""

    def __init__(self, keys: list[str]) -> None:
        keys = [k.strip() for k in keys if k.strip()]
        if not keys:
            raise ConfigError("no secret key given")
        current: list[str] = []
        legacy: list[str] = []
        for number, key in enumerate(keys, 1):
            if key.startswith(LEGACY_PREFIX):
                if number == 1:
                    raise ConfigError(
                        "TOLLHOUSE_SECRET_KEY: the first key encrypts, so it cannot be a "
                        f"decrypt-only {LEGACY_PREFIX} key; put a new key first ({_FIX})"
                    )
                legacy.append(key.removeprefix(LEGACY_PREFIX))
            elif len(key) < MIN_KEY_LENGTH:
                # Never the key itself in the message: it ends up in logs.
                raise ConfigError(
                    f"TOLLHOUSE_SECRET_KEY: key {number} of {len(keys)} has {len(key)} "
                    f"characters; each key must be at least {MIN_KEY_LENGTH} characters "
                    f"long: {_FIX}. A short key of an older install can still decrypt "
                    f"when listed after a new key as {LEGACY_PREFIX}<key>; then run "
                    "`tollhouse secrets rotate`"
                )
            else:
                current.append(key)
        fernets = [_fernet(k) for k in current]
        fernets += [_legacy_fernet(k) for k in [*current, *legacy]]
        self._multi = MultiFernet(fernets)

    @classmethod
    def from_setting(cls, value: str | None) -> SecretBox | None:
        """The box for ``TOLLHOUSE_SECRET_KEY`` (comma-separated keys), or ``None``."""
        if value is None or not value.strip():
            return None
        return cls(value.split(","))

    def encrypt(self, plaintext: str) -> str:
        return self._multi.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._multi.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError):
            raise SecretUnreadable(
                "a stored secret cannot be decrypted with TOLLHOUSE_SECRET_KEY: was the key "
                "that encrypted it removed before `tollhouse secrets rotate`? Put that key "
                "back (after the first), or store the secret again"
            ) from None

    def rotate(self, token: str) -> str:
        """``token`` re-encrypted with the newest key (unchanged plaintext)."""
        try:
            return self._multi.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, ValueError):
            raise SecretUnreadable(
                "a stored secret cannot be decrypted by any configured key"
            ) from None


def require_box(box: SecretBox | None) -> SecretBox:
    """The box, or a 400 telling the operator what to set."""
    if box is None:
        raise ValidationFailed(
            "storing a secret needs TOLLHOUSE_SECRET_KEY (a random string of 32 characters or "
            "more, e.g. from `openssl rand -base64 32`): secrets "
            "are encrypted at rest",
            param="secret",
        )
    return box
