"""Secrets at rest: channel secrets and SMTP passwords, encrypted with Fernet.

``TOLLHOUSE_SECRET_KEY`` holds one or more keys separated by commas, newest first. Each
may be any string: the Fernet key is derived from it (SHA-256, then URL-safe base64), so
an operator can use a password manager's output as is. The first key encrypts; every key
decrypts (``MultiFernet``), which is how keys rotate: put the new key first, run
``tollhouse secrets rotate`` to re-encrypt what is stored, then drop the old key.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from tollhouse.errors import ConfigError, ValidationFailed


def _fernet(material: str) -> Fernet:
    digest = hashlib.sha256(material.encode("utf-8")).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


class SecretBox:
    """Encrypts with the newest key, decrypts with any."""

    def __init__(self, keys: list[str]) -> None:
        keys = [k.strip() for k in keys if k.strip()]
        if not keys:
            raise ConfigError("no secret key given")
        self._multi = MultiFernet([_fernet(k) for k in keys])

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
            raise ConfigError(
                "a stored secret cannot be decrypted with TOLLHOUSE_SECRET_KEY: was the key "
                "that encrypted it removed before `tollhouse secrets rotate`?"
            ) from None

    def rotate(self, token: str) -> str:
        """``token`` re-encrypted with the newest key (unchanged plaintext)."""
        try:
            return self._multi.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, ValueError):
            raise ConfigError("a stored secret cannot be decrypted by any configured key") from None


def require_box(box: SecretBox | None) -> SecretBox:
    """The box, or a 400 telling the operator what to set."""
    if box is None:
        raise ValidationFailed(
            "storing a secret needs TOLLHOUSE_SECRET_KEY (any long random string): secrets "
            "are encrypted at rest",
            param="secret",
        )
    return box
