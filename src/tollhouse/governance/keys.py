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
    """The virtual key a request carries: ``Authorization: Bearer``, ``x-api-key``
    (the Anthropic SDK's header) or Bifrost's ``x-bf-vk``; ``None`` when absent."""
    for name in ("x-bf-vk", "x-api-key"):
        value = headers.get(name)
        if value and value.strip():
            return value.strip()
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None
