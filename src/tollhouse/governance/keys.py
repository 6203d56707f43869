"""Virtual keys: generated at random, shown once, stored only as a SHA-256 hash.

A key is ``th-`` followed by 40 URL-safe random characters (240 bits), so a hash
lookup needs no salt or slow KDF: there is nothing to guess. The hint kept beside the
hash (``th-AbCd…wXyZ``) lets people tell keys apart in lists without revealing them.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping

PREFIX = "th-"


def generate_key() -> tuple[str, str, str]:
    """A new key as ``(value, hash, hint)``; only the hash and hint are stored."""
    value = PREFIX + secrets.token_urlsafe(30)
    return value, hash_key(value), hint(value)


def hash_key(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def hint(value: str) -> str:
    return f"{value[:7]}…{value[-4:]}"


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The virtual key a request carries, or ``None``.

    Bifrost's ``x-bf-vk`` is always a virtual key. ``Authorization: Bearer`` and
    ``x-api-key`` (the Anthropic SDK's header) count only when they hold a ``th-`` key:
    SDKs insist on sending *some* API key, and with anonymous access allowed a
    placeholder such as ``sk-anything`` must not be mistaken for a wrong virtual key
    (Bifrost does the same with its ``sk-bf-`` prefix).
    """
    value = headers.get("x-bf-vk")
    if value is not None:
        return value.strip()
    value = headers.get("x-api-key")
    if value and value.strip().startswith(PREFIX):
        return value.strip()
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token.startswith(PREFIX):
            return token
    return None
