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
    # One pass over the headers: a Mapping lookup of an absent header raises and catches
    # a KeyError inside Starlette's ``Headers.get``, three times per request otherwise.
    bifrost = api_key = authorization = None
    for name, value in headers.items():
        name = name.lower()
        if name == "authorization":
            authorization = value if authorization is None else authorization
        elif name == "x-api-key":
            api_key = value if api_key is None else api_key
        elif name == "x-bf-vk":
            bifrost = value if bifrost is None else bifrost
    if bifrost is not None:
        return bifrost.strip()
    if api_key and api_key.strip().startswith(PREFIX):
        return api_key.strip()
    if authorization:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token.startswith(PREFIX):
            return token
    return None
