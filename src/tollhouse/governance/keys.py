"""Virtual keys: generated at random, shown once, stored only as a SHA-256 hash.

A key is ``th-`` followed by 40 URL-safe random characters (240 bits), so a hash
lookup needs no salt or slow KDF: there is nothing to guess. The hint kept beside the
hash (``th-AbCd…wXyZ``) lets people tell keys apart in lists without revealing them.
Reading the key a request presents is admission's (``tollhouse.admission.access``).
"""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "th-"


def generate_key() -> tuple[str, str, str]:
    """A new key as ``(value, hash, hint)``; only the hash and hint are stored."""
    value = PREFIX + secrets.token_urlsafe(30)
    return value, hash_key(value), hint(value)


def hash_key(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def hint(value: str) -> str:
    return f"{value[:7]}…{value[-4:]}"
